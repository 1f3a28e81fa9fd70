/*
 * test-cuda-sample - the CUDA backend's topk (candidates of logits rows)
 * against the CPU backend's on random rows: the same ids and logits
 * exactly, the same sums within rounding; then stories260K generation
 * with candidates on the GPU: greedy text equal to the GPU's full-row text
 * and to the CPU's, seeded sampling equal to the GPU's full-row sampling,
 * with far fewer bytes copied back.
 *
 * Without a GPU (or in a build without CUDA) it exits 77 (SKIP) before
 * testing anything: it never passes without a device.  A missing data
 * directory skips only the model part (said on stderr).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/generate.h"
#include "llmkit/kvcache.h"
#include "llmkit/model.h"
#include "llmkit/sampler.h"
#include "llmkit/tokenizer.h"
#include "checks.h"

static struct llm_backend *cpu, *gpu;



static uint64_t rng = 0x9e3779b97f4a7c15ull;

static double urand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (rng >> 11) * 0x1.0p-53;
}

static double nrand(void)
{
	double u = urand() + 1e-300, v = urand();
	return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* Rows of several shapes: sharp, flat, many ties, ties at the top, all
 * equal, signed zeros. */
static void fill_row(float *l, int n, int shape)
{
	for (int i = 0; i < n; i++) {
		double x = nrand();
		switch (shape % 6) {
		case 0: l[i] = (float)(x * 8); break;
		case 1: l[i] = (float)(x * 0.3); break;
		case 2: l[i] = (float)(floor(x * 4) / 4); break;
		case 3: l[i] = (float)(x * 2); if (i % 5 == 0) l[i] = 4.0f; break;
		case 4: l[i] = -1.25f; break;
		default: l[i] = i % 3 == 0 ? 0.0f : i % 3 == 1 ? -0.0f : (float)x; break;
		}
	}
}

static bool close_rel(double a, double b, double tol)
{
	return fabs(a - b) <= tol * fabs(b);
}

/* ---------------------------------------------------------------- topk op */

static void test_topk(void)
{
	enum { R = 9, N = 7 };
	static const int nvs[] = { 1, 5, 64, 65, 1000, 32000, 151936 };
	static const float scales[] = { 1.0f, 1.0f / 0.7f, 1.0f / 1.3f, 20.0f };
	static const int32_t rows[N] = { 8, 0, 3, 3, 5, 1, 7 };

	for (size_t a = 0; a < sizeof(nvs) / sizeof(nvs[0]); a++) {
		int nv = nvs[a];
		float *host = malloc((size_t)R * nv * sizeof(float));
		float *dev = gpu->ops->alloc(gpu, (size_t)R * nv * sizeof(float));
		if (!host || !dev) {
			failf("out of memory for %d rows of %d", R, nv);
			free(host);
			return;
		}
		for (int shape = 0; shape < 6; shape++) {
			for (int r = 0; r < R; r++)
				fill_row(host + (size_t)r * nv, nv, shape + r);
			gpu->ops->upload(gpu, dev, host, (size_t)R * nv * sizeof(float));
			for (int si = 0; si < 4; si++) {
				float sc[N];
				for (int i = 0; i < N; i++)   /* a mix of scales per call */
					sc[i] = scales[(si + i) % 4];
				int kmax = nv < LLM_CANDS_MAX ? nv : LLM_CANDS_MAX;
				int ks[3] = { 1, nv < 13 ? nv : 13, kmax };
				for (int ki = 0; ki < 3; ki++) {
					int k = ks[ki];
					int32_t ic[N * LLM_CANDS_MAX], ig[N * LLM_CANDS_MAX];
					float vc[N * LLM_CANDS_MAX], vg[N * LLM_CANDS_MAX];
					struct llm_topk_stat sc_c[N], sc_g[N];
					memset(ig, 0xff, sizeof(ig));
					cpu->ops->topk(cpu, host, nv, rows, sc, NULL, N, k, ic, vc,
					               sc_c);
					gpu->ops->topk(gpu, dev, nv, rows, sc, NULL, N, k, ig, vg,
					               sc_g);
					if (gpu->ops->status(gpu)) {
						failf("topk: %s", llm_errmsg());
						goto next;
					}
					int bad = -1;
					for (int i = 0; i < N * k && bad < 0; i++)
						if (ic[i] != ig[i] || memcmp(&vc[i], &vg[i], sizeof(float)))
							bad = i;
					CHECK(bad < 0, "topk n_vocab %d shape %d k %d: candidate %d of "
					      "row %d: GPU id %d (%g), CPU id %d (%g)", nv, shape, k,
					      bad % k, bad / k, bad < 0 ? 0 : ig[bad],
					      bad < 0 ? 0 : vg[bad], bad < 0 ? 0 : ic[bad],
					      bad < 0 ? 0 : vc[bad]);
					for (int i = 0; i < N; i++) {
						CHECK(sc_g[i].max == sc_c[i].max &&
						      close_rel(sc_g[i].sum, sc_c[i].sum, 1e-12) &&
						      close_rel(sc_g[i].sum_scaled, sc_c[i].sum_scaled,
						                1e-12),
						      "topk n_vocab %d shape %d row %d: GPU max %g sums "
						      "%.17g %.17g, CPU %g %.17g %.17g", nv, shape, i,
						      sc_g[i].max, sc_g[i].sum, sc_g[i].sum_scaled,
						      sc_c[i].max, sc_c[i].sum, sc_c[i].sum_scaled);
					}
				}
			}
		}
next:
		gpu->ops->dealloc(gpu, dev);
		free(host);
	}
	/* out of range k is refused, and kept as the backend's error */
	{
		struct llm_backend *g2;
		if (llm_backend_init(&g2, "cuda", 1)) {
			failf("second backend: %s", llm_errmsg());
			return;
		}
		float *d = g2->ops->alloc(g2, 16 * sizeof(float));
		int32_t r0 = 0, id[LLM_CANDS_MAX + 1];
		float one = 1, v[LLM_CANDS_MAX + 1];
		struct llm_topk_stat st;
		g2->ops->topk(g2, d, 16, &r0, &one, NULL, 1, 17, id, v, &st);
		CHECK(g2->ops->status(g2) == LLM_EINVAL, "topk of 17 of 16 accepted");
		g2->ops->dealloc(g2, d);
		llm_backend_free(g2);
	}
}

/* ---------------------------------------------------------------- model */

struct run {
	int32_t tokens[3][80];
	int n[3];
	double logprob[3];
	struct llm_ctx_stats st;
};

static int gen(struct llm_model *m, const struct llm_tokenizer *tok,
               const char *device, int cands, const struct llm_gen_params *gp,
               struct run *out)
{
	static const int32_t p0[] = { 1, 400, 300 }, p1[] = { 1, 50 }, p2[] = { 1 };
	struct llm_gen_request rq[3] = { { .prompt = p0, .n_prompt = 3 },
	                                 { .prompt = p1, .n_prompt = 2 },
	                                 { .prompt = p2, .n_prompt = 1 } };
	struct llm_ctx_params cp;
	struct llm_ctx *ctx;
	int rc;

	llm_ctx_params_default(&cp);
	cp.device = device;
	cp.n_threads = 2;
	cp.n_ctx = 256;
	cp.n_seq_max = 8;
	cp.cands = cands;
	if ((rc = llm_ctx_new(&ctx, m, &cp)))
		return rc;
	for (int i = 0; i < 3; i++)
		rq[i].params = *gp;
	rc = llm_generate(ctx, tok, rq, 3, NULL, NULL, NULL);
	llm_ctx_stats(ctx, &out->st);
	for (int i = 0; i < 3; i++) {
		out->n[i] = rq[i].n_tokens < 80 ? rq[i].n_tokens : 80;
		if (!rc)
			memcpy(out->tokens[i], rq[i].tokens, out->n[i] * sizeof(int32_t));
		out->logprob[i] = rq[i].logprob;
		llm_gen_request_clear(&rq[i]);
	}
	llm_ctx_free(ctx);
	return rc;
}

static bool same_tokens(const struct run *a, const struct run *b, int *req, int *at)
{
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 80; j++) {
			bool ea = j >= a->n[i], eb = j >= b->n[i];
			if (ea && eb)
				break;
			if (ea != eb || a->tokens[i][j] != b->tokens[i][j]) {
				*req = i;
				*at = j;
				return false;
			}
		}
	return true;
}

/* One batch mixing full rows, candidates rows and tokens without logits
 * on the GPU: full rows as without candidates, candidates as the CPU
 * finds them in the row fetched afterwards. */
static void test_mixed(struct llm_model *m)
{
	static const int8_t mode[12] = { 0, 1, 2, 3, 0, 2, 2, 1, 0, 0, 3, 1 };
	struct llm_ctx *cx[2] = { NULL, NULL };
	struct llm_batch b;
	int nv = m->hp.n_vocab;

	if (llm_batch_init(&b, 12))
		return;
	for (int v = 0; v < 2; v++) {
		struct llm_ctx_params cp;
		llm_ctx_params_default(&cp);
		cp.device = "cuda";
		cp.n_ctx = 64;
		cp.n_seq_max = 4;
		cp.cands = v ? 1 : -1;
		if (llm_ctx_new(&cx[v], m, &cp)) {
			failf("mixed batch: context: %s", llm_errmsg());
			goto done;
		}
		int seq[3];
		for (int s = 0; s < 3; s++)
			seq[s] = llm_kv_seq_new(llm_ctx_kv(cx[v]));
		llm_batch_clear(&b);
		for (int i = 0; i < 12; i++) {
			if (mode[i] >= 2)
				llm_batch_add_cands(&b, 5 + i * 7, i % 4, seq[i / 4], 1.25f,
				                    mode[i] == 3);
			else
				llm_batch_add(&b, 5 + i * 7, i % 4, seq[i / 4], mode[i] == 1);
		}
		if (llm_decode(cx[v], &b)) {
			failf("mixed batch: decode: %s", llm_errmsg());
			goto done;
		}
	}
	for (int i = 0; i < 12; i++) {
		struct llm_cands c;
		bool have = llm_ctx_cands(cx[1], i, &c);
		CHECK(have == (mode[i] >= 2), "mixed batch token %d: candidates %d", i, have);
		const float *a = llm_ctx_logits(cx[0], i), *r = llm_ctx_logits(cx[1], i);
		CHECK(!a == (mode[i] == 0) && !r == (mode[i] == 0),
		      "mixed batch token %d: rows %p %p", i, (const void *)a, (const void *)r);
		if (!a || !r)
			continue;
		CHECK(!memcmp(a, r, nv * sizeof(float)), "mixed batch token %d: the row "
		      "differs with candidates", i);
		if (have) {
			int32_t ids[LLM_CANDS_MAX];
			float vals[LLM_CANDS_MAX], mx;
			double sum, sums;
			llm_cands_compute(r, nv, 1.25f, c.k, true, ids, vals, &mx, &sum, &sums);
			CHECK(c.k == (nv < LLM_CANDS_MAX ? nv : LLM_CANDS_MAX) &&
			      !memcmp(ids, c.ids, c.k * sizeof(int32_t)) &&
			      !memcmp(vals, c.logits, c.k * sizeof(float)) && mx == c.max &&
			      close_rel(c.sum, sum, 1e-12) && close_rel(c.sum_scaled, sums, 1e-12),
			      "mixed batch token %d: GPU candidates differ from the CPU's "
			      "of the same row", i);
		}
	}
done:
	llm_ctx_free(cx[0]);
	llm_ctx_free(cx[1]);
	llm_batch_free(&b);
}

static void test_model(void)
{
	const char *dir = getenv("LLMKIT_DATA");
	char path[4096];
	struct llm_model *m;
	struct llm_tokenizer *tok;
	struct run *r = calloc(3, sizeof(*r));
	int req = 0, at = 0;

	snprintf(path, sizeof(path), "%s/models/stories260K.gguf",
	         dir && *dir ? dir : "../shared/data");
	if (llm_model_load(&m, path)) {
		fprintf(stderr, "note: %s: %s; model tests skipped\n", path, llm_errmsg());
		free(r);
		return;
	}
	if (llm_tokenizer_from_gguf(&tok, m->gguf)) {
		failf("tokenizer: %s", llm_errmsg());
		llm_model_free(m);
		free(r);
		return;
	}
	test_mixed(m);

	struct llm_gen_params gp;
	llm_gen_params_default(&gp);
	gp.max_tokens = 80;
	gp.ignore_eos = true;
	gp.logprobs = true;
	gp.top_logprobs = 3;

	/* greedy: candidates on the GPU == full rows on the GPU == the CPU */
	gp.sampling.temperature = 0;
	if (gen(m, tok, "cuda", 1, &gp, &r[0]) || gen(m, tok, "cuda", -1, &gp, &r[1]) ||
	    gen(m, tok, "cpu", -1, &gp, &r[2])) {
		failf("greedy generation: %s", llm_errmsg());
		goto done;
	}
	CHECK(same_tokens(&r[0], &r[1], &req, &at), "greedy: candidates depart from "
	      "full rows on the GPU, request %d token %d", req, at);
	CHECK(same_tokens(&r[0], &r[2], &req, &at), "greedy: GPU candidates depart "
	      "from the CPU, request %d token %d", req, at);
	for (int i = 0; i < 3; i++)
		CHECK(fabs(r[0].logprob[i] - r[1].logprob[i]) <= 1e-6 * (r[0].n[i] + 1),
		      "greedy request %d: log-prob %.9g with candidates, %.9g without", i,
		      r[0].logprob[i], r[1].logprob[i]);
	CHECK(r[0].st.logits_bytes * 10 < r[1].st.logits_bytes,
	      "greedy: %lld bytes back with candidates, %lld without",
	      (long long)r[0].st.logits_bytes, (long long)r[1].st.logits_bytes);
	fprintf(stderr, "greedy: %lld logits bytes back with candidates, %lld without "
	        "(%lld decode calls)\n", (long long)r[0].st.logits_bytes,
	        (long long)r[1].st.logits_bytes, (long long)r[0].st.n_calls);

	/* seeded sampling, defaults and a nucleus of the whole row: the same
	 * draws from candidates as from full rows on the GPU */
	for (int s = 0; s < 2; s++) {
		llm_gen_params_default(&gp);
		gp.max_tokens = 80;
		gp.ignore_eos = true;
		gp.sampling.seed = 7 + s;
		if (s == 1) {
			gp.sampling.temperature = 1.0f;
			gp.sampling.top_k = 0;
			gp.sampling.top_p = 0.9f;
			gp.sampling.min_p = 0;
		}
		if (gen(m, tok, "cuda", 1, &gp, &r[0]) || gen(m, tok, "cuda", -1, &gp, &r[1])) {
			failf("sampled generation: %s", llm_errmsg());
			goto done;
		}
		CHECK(same_tokens(&r[0], &r[1], &req, &at), "sampling %d: candidates "
		      "depart from full rows on the GPU, request %d token %d", s, req, at);
	}
done:
	llm_tokenizer_free(tok);
	llm_model_free(m);
	free(r);
}

int main(void)
{
	if (llm_cuda_device_count() < 1) {
		printf("SKIP: no CUDA device (or a build without CUDA)\n");
		return 77;
	}
	if (llm_backend_cpu_init(&cpu, 2) || llm_backend_init(&gpu, "cuda", 1)) {
		fprintf(stderr, "FAIL: backends: %s\n", llm_errmsg());
		return 1;
	}
	if (!gpu->ops->topk || !cpu->ops->topk) {
		fprintf(stderr, "FAIL: a backend has no topk\n");
		return 1;
	}
	test_topk();
	test_model();
	llm_backend_free(gpu);
	llm_backend_free(cpu);
	printf("%d checks passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}
