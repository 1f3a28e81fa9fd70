/*
 * test-lora - LoRA adapters on stories260K: PEFT adapters (written by PEFT
 * itself, data/fixtures/lora/) give PEFT's logits; PEFT and GGUF adapter
 * files round-trip; per-slot adapters in one heterogeneous batch give each
 * sequence what it gets alone; stacked adapters equal their cat and the
 * merged model; the lora_seg kernel against a plain reference; bad adapter
 * files are refused with one-line messages naming the file.
 */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/gguf.h"
#include "llmkit/kvcache.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"
#include "llmkit/safetensors.h"
#include "testutil.h"

#define NV 512
#define MAXP 8

static struct llm_model *model;
static const char *model_path;
static char fixture[2048];
static int n_prompts;
static int32_t prompts[MAXP][64];
static int plen[MAXP];
static int n_rows;   /* tokens of all prompts */
static char tmpdir[] = "/tmp/test-lora-XXXXXX";

static void setup(void)
{
	ck_assert_msg(llm_model_load(&model, model_path) == 0, "%s", llm_errmsg());
}

static void teardown(void)
{
	llm_model_free(model);
}

static const char *fx(const char *rel)
{
	static char buf[4][4096];
	static int k;
	char *p = buf[k++ % 4];
	snprintf(p, 4096, "%s/%s", fixture, rel);
	return p;
}

static const char *tmp(const char *rel)
{
	static char buf[4][4096];
	static int k;
	char *p = buf[k++ % 4];
	snprintf(p, 4096, "%s/%s", tmpdir, rel);
	return p;
}

static struct llm_lora *load(const char *path)
{
	struct llm_lora *a;
	ck_assert_msg(llm_lora_load(&a, path, model) == 0, "%s", llm_errmsg());
	return a;
}

static float *read_f32(const char *path, int64_t n)
{
	FILE *f = fopen(path, "rb");
	float *v = malloc(n * sizeof(float));
	ck_assert_msg(f != NULL, "%s missing", path);
	ck_assert_int_eq(fread(v, sizeof(float), n, f), n);
	ck_assert_int_eq(fgetc(f), EOF);
	fclose(f);
	return v;
}

static struct llm_ctx *new_ctx(int threads)
{
	struct llm_ctx_params p;
	struct llm_ctx *c;
	llm_ctx_params_default(&p);
	p.n_threads = threads;
	p.n_ctx = 64;
	p.n_seq_max = 8;
	p.kv_type = LLM_F32;
	ck_assert_msg(llm_ctx_new(&c, model, &p) == 0, "%s", llm_errmsg());
	return c;
}

/* Logits of every prompt position, each prompt alone in one batch, with
 * adapters as[i] scaled by ws[i] applied to every token. */
static float *run_alone(struct llm_model *m, struct llm_lora **as,
                        const float *ws, int n)
{
	struct llm_model *keep = model;
	float *out = malloc(sizeof(float) * NV * n_rows), *o = out;
	struct llm_batch b;

	model = m;
	struct llm_ctx *c = new_ctx(1);
	model = keep;
	for (int i = 0; i < n; i++)
		ck_assert_msg(llm_ctx_add_lora(c, as[i], ws[i]) == 0, "%s", llm_errmsg());
	llm_batch_init(&b, 64);
	for (int k = 0; k < n_prompts; k++) {
		int s = llm_kv_seq_new(llm_ctx_kv(c));
		llm_batch_clear(&b);
		for (int i = 0; i < plen[k]; i++)
			llm_batch_add(&b, prompts[k][i], i, s, true);
		ck_assert_msg(llm_decode(c, &b) == 0, "%s", llm_errmsg());
		for (int i = 0; i < plen[k]; i++, o += NV)
			memcpy(o, llm_ctx_logits(c, i), sizeof(float) * NV);
		llm_kv_seq_free(llm_ctx_kv(c), s);
	}
	llm_batch_free(&b);
	llm_ctx_free(c);
	return out;
}

static double maxdiff(const float *a, const float *b, int64_t n)
{
	double d = 0;
	for (int64_t i = 0; i < n; i++)
		d = fmax(d, fabs((double)a[i] - b[i]));
	return d;
}

/* ---------------------------------------------------------------- PEFT */

/* The HF rebuild of the base (no adapter) gives our logits: the fixture's
 * model conversion is sound, so the adapter checks below mean something. */
START_TEST(base_matches_hf)
{
	float *want = read_f32(fx("base.f32"), (int64_t)n_rows * NV);
	float *got = run_alone(model, NULL, NULL, 0);
	double d = maxdiff(got, want, (int64_t)n_rows * NV);
	ck_assert_msg(d < 1e-4, "base logits differ from HF's by %g", d);
	free(want);
	free(got);
}
END_TEST

/* PEFT's own adapters (different ranks and alphas per matrix; rsLoRA on a
 * subset of layers) give PEFT's logits, and not the base's. */
START_TEST(peft_adapter_matches_peft)
{
	static const char *names[] = { "peft-a", "peft-b" };
	float *base = read_f32(fx("base.f32"), (int64_t)n_rows * NV);
	for (int k = 0; k < 2; k++) {
		char f32[64];
		snprintf(f32, sizeof(f32), "%s.f32", names[k]);
		float *want = read_f32(fx(f32), (int64_t)n_rows * NV);
		struct llm_lora *a = load(fx(names[k]));
		float w = 1;
		float *got = run_alone(model, &a, &w, 1);
		double d = maxdiff(got, want, (int64_t)n_rows * NV);
		ck_assert_msg(d < 1e-4, "%s: logits differ from PEFT's by %g", names[k], d);
		ck_assert_msg(maxdiff(got, base, (int64_t)n_rows * NV) > 1,
		              "%s changes nothing", names[k]);
		free(got);
		free(want);
		llm_lora_free(a);
	}
	free(base);
}
END_TEST

START_TEST(peft_config_read)
{
	struct llm_lora *a = load(fx("peft-a")), *b = load(fx("peft-b"));
	ck_assert_int_eq(a->rank, 4);
	ck_assert_float_eq(a->alpha, 8);
	ck_assert_float_eq(a->scale, 2);
	ck_assert(!a->rslora);
	ck_assert_uint_eq(a->targets, LLM_LORA_ALL);
	ck_assert_int_eq(llm_lora_mat(a, 0, LLM_LORA_DOWN)->rank, 2);
	ck_assert_int_eq(llm_lora_mat(a, 1, LLM_LORA_K)->rank, 3);
	ck_assert_int_eq(llm_lora_mat(a, 2, LLM_LORA_K)->rank, 4);
	ck_assert(b->rslora);
	ck_assert_float_eq_tol(b->scale, 4 / sqrtf(2), 1e-6);
	ck_assert_uint_eq(b->targets, (1u << LLM_LORA_Q) | (1u << LLM_LORA_V));
	ck_assert_ptr_null(llm_lora_mat(b, 1, LLM_LORA_Q)->a);
	ck_assert_ptr_nonnull(llm_lora_mat(b, 2, LLM_LORA_Q)->a);
	ck_assert_float_eq_tol(llm_lora_scale_of(16, 4, true), 8, 1e-6);
	ck_assert_float_eq_tol(llm_lora_scale_of(16, 4, false), 4, 1e-6);
	llm_lora_free(a);
	llm_lora_free(b);
}
END_TEST

/* Effective deltas of two adapters equal (per matrix, scale folded in). */
static void assert_same_deltas(const struct llm_lora *x, const struct llm_lora *y,
                               double tol)
{
	for (int il = 0; il < model->hp.n_layer; il++)
		for (int t = 0; t < LLM_LORA_N; t++) {
			const struct llm_lora_mat *p = llm_lora_mat(x, il, t);
			const struct llm_lora_mat *q = llm_lora_mat(y, il, t);
			ck_assert_int_eq(!p->a, !q->a);
			if (!p->a)
				continue;
			int64_t n = (int64_t)p->n_in * p->n_out;
			float *dp = calloc(n, sizeof(float)), *dq = calloc(n, sizeof(float));
			llm_lora_mat_add_delta(p, x->scale, dp);
			llm_lora_mat_add_delta(q, y->scale, dq);
			double d = maxdiff(dp, dq, n);
			ck_assert_msg(d <= tol, "layer %d %s: deltas differ by %g", il,
			              llm_lora_target_name(t), d);
			free(dp);
			free(dq);
		}
}

/* Written as PEFT and read back: the same matrices, bit for bit. */
START_TEST(peft_round_trip)
{
	struct llm_lora *a = load(fx("peft-a")), *b;
	ck_assert_msg(llm_lora_save_peft(a, model, tmp("rt")) == 0, "%s", llm_errmsg());
	b = load(tmp("rt"));
	ck_assert_int_eq(b->rank, a->rank);
	ck_assert_float_eq(b->scale, a->scale);
	ck_assert_int_eq(b->n_params, a->n_params);
	ck_assert_int_eq(memcmp(a->mem, b->mem, a->n_params * sizeof(float)), 0);
	llm_lora_free(b);
	/* rsLoRA and layer subsets survive too */
	llm_lora_free(a);
	a = load(fx("peft-b"));
	ck_assert_msg(llm_lora_save_peft(a, model, tmp("rt")) == 0, "%s", llm_errmsg());
	b = load(tmp("rt"));
	ck_assert(b->rslora);
	ck_assert_float_eq(b->scale, a->scale);
	ck_assert_int_eq(memcmp(a->mem, b->mem, a->n_params * sizeof(float)), 0);
	llm_lora_free(a);
	llm_lora_free(b);
}
END_TEST

/* Written as a llama.cpp GGUF adapter and read back: the same deltas (the
 * per-matrix ranks fold into B), the same logits; names and metadata as
 * llama.cpp reads them. */
START_TEST(gguf_round_trip)
{
	static const char *names[] = { "peft-a", "peft-b" };
	for (int k = 0; k < 2; k++) {
		struct llm_lora *a = load(fx(names[k])), *b;
		ck_assert_msg(llm_lora_save_gguf(a, model, tmp("a.gguf")) == 0, "%s",
		              llm_errmsg());
		b = load(tmp("a.gguf"));
		assert_same_deltas(a, b, 1e-6);
		float w = 1;
		float *la = run_alone(model, &a, &w, 1), *lb = run_alone(model, &b, &w, 1);
		ck_assert_msg(maxdiff(la, lb, (int64_t)n_rows * NV) < 1e-5, "%s",
		              names[k]);
		free(la);
		free(lb);
		llm_lora_free(a);
		llm_lora_free(b);

		struct llm_gguf *g;
		const char *s;
		float alpha;
		ck_assert_int_eq(llm_gguf_open(&g, tmp("a.gguf")), 0);
		ck_assert_int_eq(llm_gguf_get_str(g, "general.type", &s), 0);
		ck_assert_str_eq(s, "adapter");
		ck_assert_int_eq(llm_gguf_get_str(g, "adapter.type", &s), 0);
		ck_assert_str_eq(s, "lora");
		ck_assert_int_eq(llm_gguf_get_str(g, "general.architecture", &s), 0);
		ck_assert_str_eq(s, "llama");
		ck_assert_int_eq(llm_gguf_get_f32(g, "adapter.lora.alpha", &alpha), 0);
		const struct llm_gguf_tensor *t =
			llm_gguf_find_tensor(g, "blk.2.attn_q.weight.lora_a");
		ck_assert_ptr_nonnull(t);
		ck_assert_int_eq(t->ne[0], 64);                 /* n_in */
		t = llm_gguf_find_tensor(g, "blk.2.attn_q.weight.lora_b");
		ck_assert_ptr_nonnull(t);
		ck_assert_int_eq(t->ne[1], 64);                 /* n_out */
		llm_gguf_free(g);
	}
}
END_TEST

/* ---------------------------------------------------------------- runtime */

/* A heterogeneous batch: every prompt with its own adapter slot (peft-a,
 * peft-b at 0.5, none), tokens in one run per prompt or interleaved as
 * decode steps (a slot's tokens then scatter: one segment over a list of
 * rows), two prompts sharing a slot, and a stacked adapter on every token
 * beside the slots; one and two threads: each sequence's logits equal
 * its own run alone with the same adapters. */
START_TEST(heterogeneous_batch)
{
	struct llm_lora *a = load(fx("peft-a")), *b = load(fx("peft-b"));
	enum { NONE, A, B, AB, NW };
	struct llm_lora *cfg_as[NW][2] = { { 0 }, { a }, { b }, { a, b } };
	float cfg_ws[NW][2] = { { 0 }, { 1 }, { 0.5f }, { 1, 0.5f } };
	int cfg_n[NW] = { 0, 1, 1, 2 };
	/* per layout: the slot of each prompt (-1: none), whether tokens
	 * interleave, whether b at 0.5 is stacked on every token, and the
	 * expected configuration of each prompt */
	static const struct {
		int slot[3];
		bool inter, global_b;
		int want[3];
	} lay[] = {
		{ { 0, 1, -1 }, false, false, { A, B, NONE } },
		{ { 0, 1, -1 }, true, false, { A, B, NONE } },
		{ { 0, 1, 0 }, true, false, { A, B, A } },
		{ { 0, -1, 0 }, true, true, { AB, B, AB } },
	};
	float *want[NW];
	int off[MAXP] = { 0 };

	ck_assert_int_ge(n_prompts, 3);
	for (int k = 0; k < NW; k++)
		want[k] = run_alone(model, cfg_as[k], cfg_ws[k], cfg_n[k]);
	for (int k = 1; k < n_prompts; k++)
		off[k] = off[k - 1] + plen[k - 1];

	for (int threads = 1; threads <= 2; threads++)
		for (size_t L = 0; L < sizeof(lay) / sizeof(lay[0]); L++) {
			struct llm_ctx *c = new_ctx(threads);
			struct llm_batch bt;
			int seq[3], at[3][64];
			ck_assert_int_eq(llm_ctx_set_adapter(c, 0, a, 1), 0);
			ck_assert_int_eq(llm_ctx_set_adapter(c, 1, b, 0.5f), 0);
			if (lay[L].global_b)
				ck_assert_int_eq(llm_ctx_add_lora(c, b, 0.5f), 0);
			for (int k = 0; k < 3; k++)
				seq[k] = llm_kv_seq_new(llm_ctx_kv(c));
			llm_batch_init(&bt, 128);
			for (int i = 0; i < 64 * 3; i++) {
				int k = lay[L].inter ? i % 3 : i / 64, p = lay[L].inter ? i / 3 : i % 64;
				if (p >= plen[k])
					continue;
				at[k][p] = bt.n;
				llm_batch_add(&bt, prompts[k][p], p, seq[k], true);
				bt.adapter[bt.n - 1] = lay[L].slot[k];
			}
			ck_assert_msg(llm_decode(c, &bt) == 0, "%s", llm_errmsg());
			for (int k = 0; k < 3; k++)
				for (int i = 0; i < plen[k]; i++) {
					const float *w = want[lay[L].want[k]] + (int64_t)(off[k] + i) * NV;
					double d = maxdiff(llm_ctx_logits(c, at[k][i]), w, NV);
					ck_assert_msg(d < 1e-4, "threads %d layout %zu prompt %d pos "
					              "%d: %g", threads, L, k, i, d);
				}
			/* an empty slot is refused */
			llm_batch_clear(&bt);
			llm_batch_add(&bt, 5, plen[0], seq[0], true);
			bt.adapter[0] = 2;
			ck_assert_int_eq(llm_decode(c, &bt), LLM_EINVAL);
			llm_batch_free(&bt);
			llm_ctx_free(c);
		}
	for (int k = 0; k < NW; k++)
		free(want[k]);
	llm_lora_free(a);
	llm_lora_free(b);
}
END_TEST

/* Stacked adapters = their cat = the model they are merged into (f32). */
START_TEST(stacked_cat_merged)
{
	struct llm_lora *as[2] = { load(fx("peft-a")), load(fx("peft-b")) }, *c;
	float ws[2] = { 1, -0.7f }, one = 1;
	float *stacked = run_alone(model, as, ws, 2);
	ck_assert_int_eq(llm_lora_cat(&c, as, ws, 2, model), 0);
	ck_assert_int_eq(llm_lora_mat(c, 0, LLM_LORA_Q)->rank, 4 + 2);
	ck_assert_int_eq(llm_lora_mat(c, 1, LLM_LORA_Q)->rank, 4);
	float *cat = run_alone(model, &c, &one, 1);
	ck_assert_msg(maxdiff(stacked, cat, (int64_t)n_rows * NV) < 1e-4, "cat");

	struct llm_model *mm;
	ck_assert_msg(llm_lora_merge_write(model, as, ws, 2, LLM_F32,
	                                   tmp("merged.gguf")) == 0, "%s", llm_errmsg());
	ck_assert_msg(llm_model_load(&mm, tmp("merged.gguf")) == 0, "%s", llm_errmsg());
	float *merged = run_alone(mm, NULL, NULL, 0);
	double d = maxdiff(stacked, merged, (int64_t)n_rows * NV);
	ck_assert_msg(d < 1e-4, "merged differs from stacked by %g", d);
	llm_model_free(mm);

	/* f16 output: close, and every matrix is f16 */
	ck_assert_int_eq(llm_lora_merge_write(model, as, ws, 2, LLM_F16,
	                                      tmp("merged16.gguf")), 0);
	ck_assert_int_eq(llm_model_load(&mm, tmp("merged16.gguf")), 0);
	ck_assert_int_eq(mm->layers[0].wq.type, LLM_F16);
	ck_assert_int_eq(mm->layers[0].attn_norm.type, LLM_F32);
	float *m16 = run_alone(mm, NULL, NULL, 0);
	d = maxdiff(stacked, m16, (int64_t)n_rows * NV);
	ck_assert_msg(d < 0.05, "f16 merge differs from stacked by %g", d);
	llm_model_free(mm);

	free(m16);
	free(merged);
	free(cat);
	free(stacked);
	llm_lora_free(c);
	llm_lora_free(as[0]);
	llm_lora_free(as[1]);
}
END_TEST

/* The kernel against plain double loops: segments of 1..70 tokens (the
 * loop and the BLAS paths), overlapping ones, ranks 1..9, 1 and 2 threads. */
START_TEST(lora_seg_kernel)
{
	enum { N = 160, NI = 48, NO = 40 };
	struct llm_lora_seg segs[12];
	float *x = malloc(sizeof(float) * N * NI), *y = malloc(sizeof(float) * N * NO);
	double *ref = malloc(sizeof(double) * N * NO);
	float *ab[12][2];
	uint64_t s = 99;
	int t0 = 0, ns = 0;
	static const int len[] = { 1, 3, 4, 70, 2, 33, 1, 1, 20 };

#define RND() ((float)((s = s * 6364136223846793005ull + 1442695040888963407ull) >> 40) \
               * 0x1p-24f - 0.5f)
	for (int i = 0; i < N * NI; i++)
		x[i] = RND();
	for (int k = 0; k < 9; k++) {
		int r = 1 + k;
		ab[k][0] = malloc(sizeof(float) * r * NI);
		ab[k][1] = malloc(sizeof(float) * r * NO);
		for (int i = 0; i < r * NI; i++)
			ab[k][0][i] = RND();
		for (int i = 0; i < r * NO; i++)
			ab[k][1][i] = RND();
		segs[ns++] = (struct llm_lora_seg){ t0, len[k], ab[k][0], ab[k][1], r,
		                                    0.5f + k, NULL };
		t0 += len[k] + (k == 2);      /* a gap: row 8 has no adapter */
	}
	/* overlapping: one over all rows (as a stacked adapter) and one more */
	segs[ns++] = (struct llm_lora_seg){ 0, N, ab[3][0], ab[3][1], 4, -1.5f, NULL };
	segs[ns++] = (struct llm_lora_seg){ 5, 50, ab[1][0], ab[1][1], 2, 2.0f, NULL };
	ck_assert_int_le(t0, N);

	for (int threads = 1; threads <= 2; threads++) {
		struct llm_backend *be;
		ck_assert_int_eq(llm_backend_init(&be, "cpu", threads), 0);
		for (int i = 0; i < N * NO; i++)
			ref[i] = y[i] = (float)(i % 7) - 3;
		for (int k = 0; k < ns; k++) {
			const struct llm_lora_seg *g = &segs[k];
			for (int t = g->t0; t < g->t0 + g->n; t++)
				for (int o = 0; o < NO; o++) {
					double acc = 0;
					for (int j = 0; j < g->rank; j++) {
						double xa = 0;
						for (int i = 0; i < NI; i++)
							xa += (double)x[t * NI + i] * g->a[j * NI + i];
						acc += xa * g->b[o * g->rank + j];
					}
					ref[t * NO + o] += g->scale * acc;
				}
		}
		be->ops->lora_seg(be, x, y, NI, NO, segs, ns);
		/* a second call: two segments over scattered rows (gathered
		 * through BLAS, and row by row) beside a contiguous one */
		static const int32_t r1[] = { 150, 3, 77, 9, 100, 155, 158 }, r2[] = { 4, 60 };
		struct llm_lora_seg s2[3] = {
			{ 0, 7, ab[4][0], ab[4][1], 5, 0.75f, r1 },
			{ 20, 10, ab[2][0], ab[2][1], 3, -2.0f, NULL },
			{ 0, 2, ab[8][0], ab[8][1], 9, 1.25f, r2 },
		};
		for (int k = 0; k < 3; k++) {
			const struct llm_lora_seg *g = &s2[k];
			for (int ti = 0; ti < g->n; ti++) {
				int t = g->rows ? g->rows[ti] : g->t0 + ti;
				for (int o = 0; o < NO; o++) {
					double acc = 0;
					for (int j = 0; j < g->rank; j++) {
						double xa = 0;
						for (int i = 0; i < NI; i++)
							xa += (double)x[t * NI + i] * g->a[j * NI + i];
						acc += xa * g->b[o * g->rank + j];
					}
					ref[t * NO + o] += g->scale * acc;
				}
			}
		}
		be->ops->lora_seg(be, x, y, NI, NO, s2, 3);
		double d = 0;
		for (int i = 0; i < N * NO; i++)
			d = fmax(d, fabs(y[i] - ref[i]));
		ck_assert_msg(d < 1e-4, "threads %d: lora_seg off by %g", threads, d);
		llm_backend_free(be);
	}
	for (int k = 0; k < 9; k++) {
		free(ab[k][0]);
		free(ab[k][1]);
	}
	free(x);
	free(y);
	free(ref);
}
END_TEST

/* ---------------------------------------------------------------- errors */

/* Loading fails with a one-line message that names the file. */
static void assert_refused(const char *path, const char *file_in_msg,
                           const char *what)
{
	struct llm_lora *a = NULL;
	int rc = llm_lora_load(&a, path, model);
	ck_assert_msg(rc < 0, "%s: loaded", path);
	ck_assert_ptr_null(a);
	const char *m = llm_errmsg();
	ck_assert_msg(strstr(m, file_in_msg) != NULL, "'%s' does not name %s", m,
	              file_in_msg);
	ck_assert_msg(strchr(m, '\n') == NULL, "'%s' spans lines", m);
	if (what)
		ck_assert_msg(strstr(m, what) != NULL, "'%s' does not say '%s'", m, what);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
}

static void copy_file(const char *from, const char *to, long cut)
{
	char *buf;
	size_t n;
	FILE *f = fopen(from, "rb");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	n = (size_t)ftell(f);
	rewind(f);
	buf = malloc(n);
	ck_assert_int_eq(fread(buf, 1, n, f), n);
	fclose(f);
	f = fopen(to, "wb");
	fwrite(buf, 1, cut >= 0 && (size_t)cut < n ? (size_t)cut : n, f);
	fclose(f);
	free(buf);
}

/* A PEFT dir with one tensor pair of the given shapes for layer il's q. */
static void write_pair(const char *dir, int il, int64_t a0, int64_t a1,
                       int64_t b0, int64_t b1, bool with_b)
{
	struct llm_safetensors_writer *w = llm_safetensors_writer_new();
	float *z = calloc((size_t)(a0 * a1 + b0 * b1), sizeof(float));
	char name[256], path[4096];
	int64_t sa[2] = { a0, a1 }, sb[2] = { b0, b1 };
	mkdir(dir, 0777);
	snprintf(name, sizeof(name),
	         "base_model.model.model.layers.%d.self_attn.q_proj.lora_A.weight", il);
	ck_assert_int_eq(llm_safetensors_add(w, name, LLM_F32, 2, sa, z), 0);
	snprintf(name, sizeof(name),
	         "base_model.model.model.layers.%d.self_attn.q_proj.lora_B.weight", il);
	if (with_b)
		ck_assert_int_eq(llm_safetensors_add(w, name, LLM_F32, 2, sb, z), 0);
	if (il == 1)     /* an adapter on a module we do not adapt */
		ck_assert_int_eq(llm_safetensors_add(w, "base_model.model.lm_head.lora_A."
		                                     "weight", LLM_F32, 2, sa, z), 0);
	snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
	ck_assert_int_eq(llm_safetensors_write_file(w, path), 0);
	snprintf(path, sizeof(path), "%s/adapter_config.json", dir);
	write_text(path, "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8}\n");
	llm_safetensors_writer_free(w);
	free(z);
}

START_TEST(bad_adapters_refused)
{
	char st[4096];

	assert_refused(tmp("nonexistent"), "nonexistent", "No such file");

	mkdir(tmp("nocfg"), 0777);
	copy_file(fx("peft-a/adapter_model.safetensors"),
	          tmp("nocfg/adapter_model.safetensors"), -1);
	assert_refused(tmp("nocfg"), "adapter_config.json", NULL);

	mkdir(tmp("nost"), 0777);
	copy_file(fx("peft-a/adapter_config.json"), tmp("nost/adapter_config.json"), -1);
	assert_refused(tmp("nost"), "adapter_model.safetensors", NULL);

	mkdir(tmp("badjson"), 0777);
	copy_file(fx("peft-a/adapter_model.safetensors"),
	          tmp("badjson/adapter_model.safetensors"), -1);
	write_text(tmp("badjson/adapter_config.json"), "{\"r\": 4,\n \"lora_alpha\": }\n");
	assert_refused(tmp("badjson"), "adapter_config.json", "line 2");

	write_text(tmp("badjson/adapter_config.json"), "{\"peft_type\": \"IA3\"}");
	assert_refused(tmp("badjson"), "adapter_config.json", "IA3");
	write_text(tmp("badjson/adapter_config.json"), "{\"r\": \"eight\"}");
	assert_refused(tmp("badjson"), "adapter_config.json", "\"r\"");
	write_text(tmp("badjson/adapter_config.json"), "[1, 2]");
	assert_refused(tmp("badjson"), "adapter_config.json", "object");

	mkdir(tmp("trunc"), 0777);
	copy_file(fx("peft-a/adapter_config.json"), tmp("trunc/adapter_config.json"), -1);
	copy_file(fx("peft-a/adapter_model.safetensors"),
	          tmp("trunc/adapter_model.safetensors"), 5000);
	assert_refused(tmp("trunc"), "adapter_model.safetensors", NULL);

	/* shapes that do not fit this model: q is 64 x 64 */
	write_pair(tmp("shape"), 0, 4, 65, 64, 4, true);
	snprintf(st, sizeof(st), "%s/adapter_model.safetensors", tmp("shape"));
	assert_refused(tmp("shape"), "adapter_model.safetensors", "do not fit");
	write_pair(tmp("shape2"), 0, 4, 64, 64, 3, true);
	assert_refused(tmp("shape2"), "adapter_model.safetensors", "do not fit");
	write_pair(tmp("layer"), 9, 4, 64, 64, 4, true);
	assert_refused(tmp("layer"), "adapter_model.safetensors", "layer 9");
	write_pair(tmp("extra"), 1, 4, 64, 64, 4, true);
	assert_refused(tmp("extra"), "adapter_model.safetensors", "lm_head.lora_A");
	write_pair(tmp("half"), 0, 4, 64, 64, 4, false);
	assert_refused(tmp("half"), "adapter_model.safetensors", "lora_B");

	/* a model is not an adapter; a truncated GGUF adapter */
	assert_refused(model_path, "stories260K", "not a LoRA adapter");
	struct llm_lora *a = load(fx("peft-b"));
	ck_assert_int_eq(llm_lora_save_gguf(a, model, tmp("ok.gguf")), 0);
	llm_lora_free(a);
	copy_file(tmp("ok.gguf"), tmp("cut.gguf"), 700);
	assert_refused(tmp("cut.gguf"), "cut.gguf", NULL);

	/* GGUF adapters: a layer the model lacks, the wrong architecture,
	 * shapes that do not fit */
	static const struct { const char *arch, *name; int64_t ne_a[2], ne_b[2];
	                      const char *what; } gg[] = {
		{ "llama", "blk.9.attn_q.weight", { 64, 4 }, { 4, 64 }, "blk.9.attn_q" },
		{ "qwen2", "blk.0.attn_q.weight", { 64, 4 }, { 4, 64 }, "qwen2" },
		{ "llama", "blk.0.attn_k.weight", { 64, 4 }, { 4, 64 }, "do not fit" },
	};
	float zero[64 * 4] = { 0 };
	for (size_t k = 0; k < sizeof(gg) / sizeof(gg[0]); k++) {
		struct llm_gguf_writer *w = llm_gguf_writer_new();
		char name[128];
		ck_assert_int_eq(llm_gguf_set_str(w, "general.architecture", gg[k].arch), 0);
		ck_assert_int_eq(llm_gguf_set_str(w, "general.type", "adapter"), 0);
		ck_assert_int_eq(llm_gguf_set_str(w, "adapter.type", "lora"), 0);
		ck_assert_int_eq(llm_gguf_set_f32(w, "adapter.lora.alpha", 8), 0);
		snprintf(name, sizeof(name), "%s.lora_a", gg[k].name);
		ck_assert_int_eq(llm_gguf_add_tensor(w, name, LLM_F32, 2, gg[k].ne_a, zero), 0);
		snprintf(name, sizeof(name), "%s.lora_b", gg[k].name);
		ck_assert_int_eq(llm_gguf_add_tensor(w, name, LLM_F32, 2, gg[k].ne_b, zero), 0);
		ck_assert_int_eq(llm_gguf_write_file(w, tmp("bad.gguf")), 0);
		llm_gguf_writer_free(w);
		assert_refused(tmp("bad.gguf"), "bad.gguf", gg[k].what);
	}
	(void)st;
}
END_TEST

/* ---------------------------------------------------------------- main */

static void read_prompts(void)
{
	json_error_t e;
	json_t *o = json_load_file(fx("prompts.json"), 0, &e), *ps, *p, *t;
	size_t i, j;
	if (!o) {
		fprintf(stderr, "%s: %s\n", fx("prompts.json"), e.text);
		exit(1);
	}
	ps = json_object_get(o, "prompts");
	json_array_foreach(ps, i, p) {
		json_array_foreach(p, j, t)
			prompts[i][j] = (int32_t)json_integer_value(t);
		plen[i] = (int)json_array_size(p);
		n_rows += plen[i];
	}
	n_prompts = (int)json_array_size(ps);
	json_decref(o);
}

int main(void)
{
	const char *src = getenv("LLMKIT_SRC");
	model_path = test_data(STORIES260K);   /* SKIP without the data */
	snprintf(fixture, sizeof(fixture), "%s/data/fixtures/lora",
	         src && *src ? src : ".");
	read_prompts();
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	Suite *s = suite_create("lora");
	TCase *tc = tcase_create("stories260K");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, base_matches_hf);
	tcase_add_test(tc, peft_adapter_matches_peft);
	tcase_add_test(tc, peft_config_read);
	tcase_add_test(tc, peft_round_trip);
	tcase_add_test(tc, gguf_round_trip);
	tcase_add_test(tc, heterogeneous_batch);
	tcase_add_test(tc, stacked_cat_merged);
	tcase_add_test(tc, lora_seg_kernel);
	tcase_add_test(tc, bad_adapters_refused);
	suite_add_tcase(s, tc);
	int failed = test_run(s);
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return failed ? 1 : 0;
}
