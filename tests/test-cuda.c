/*
 * test-cuda - the CUDA backend against the CPU backend, op by op on the
 * same inputs (tolerances by dtype and path), then stories260K end to end:
 * greedy text identical to the CPU's, and batched == single on the GPU.
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

#include "config.h"
#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/kvcache.h"
#include "llmkit/model.h"
#include "llmkit/quant.h"
#include "llmkit/tensor.h"
#include "checks.h"

static struct llm_backend *cpu, *gpu;







/* ---------------------------------------------------------------- memory */

static void *dev_floats(const float *host, int64_t n)
{
	void *d = gpu->ops->alloc(gpu, n * sizeof(float));
	if (!d) {
		fprintf(stderr, "FATAL: device alloc of %lld floats failed\n", (long long)n);
		exit(1);
	}
	if (host)
		gpu->ops->upload(gpu, d, host, n * sizeof(float));
	return d;
}

static float *host_of(const void *dev, int64_t n)
{
	float *h = malloc(n * sizeof(float));
	gpu->ops->synchronize(gpu);
	gpu->ops->download(gpu, h, dev, n * sizeof(float));
	return h;
}

static void expect_no_error(const char *what)
{
	int rc = gpu->ops->status(gpu);
	CHECK(rc == 0, "%s: device error: %s", what, llm_errmsg());
	if (rc) {
		fprintf(stderr, "the CUDA backend is stuck after an error; stopping\n");
		exit(1);
	}
}

static void test_memory(void)
{
	unsigned seed = 1;
	float *a = rnd(1000, &seed, 1), *back;
	void *d = dev_floats(a, 1000), *e = dev_floats(NULL, 1000);
	gpu->ops->copy(gpu, e, d, 1000 * sizeof(float));
	back = host_of(e, 1000);
	CHECK(!memcmp(a, back, 1000 * sizeof(float)), "upload/copy/download round trip");
	float *z = host_of(dev_floats(NULL, 10), 10);
	CHECK(z[0] == 0 && z[9] == 0, "fresh device memory is zeroed");
	/* out of memory: NULL, nothing recorded */
	void *huge = gpu->ops->alloc(gpu, (size_t)1 << 50);
	CHECK(huge == NULL, "a 1 PiB alloc returns NULL");
	CHECK(gpu->ops->status(gpu) == 0, "a failed alloc leaves no error behind");
	gpu->ops->dealloc(gpu, d);
	gpu->ops->dealloc(gpu, e);
	free(a);
	free(back);
	free(z);
	expect_no_error("memory");
}

/* ---------------------------------------------------------------- matmul */

struct wt {
	struct llm_tensor t;
	float *deq;    /* the weights as the type stores them, as floats */
};

static void make_weight(struct wt *w, int type, int n_in, int n_out, unsigned *seed)
{
	const struct llm_dtype_traits *tr = llm_dtype_traits(type);
	float *f = rnd((int64_t)n_in * n_out, seed, 1);
	size_t rb = llm_row_size(type, n_in);
	memset(w, 0, sizeof(*w));
	w->t.name = "test.weight";
	w->t.type = type;
	w->t.n_dims = 2;
	w->t.ne[0] = n_in;
	w->t.ne[1] = n_out;
	w->t.nbytes = rb * n_out;
	w->t.data = malloc(w->t.nbytes);
	llm_quantize(type, f, w->t.data, n_out, n_in, NULL);
	w->deq = malloc((size_t)n_in * n_out * sizeof(float));
	for (int r = 0; r < n_out; r++)
		tr->to_float((char *)w->t.data + r * rb, w->deq + (int64_t)r * n_in, n_in);
	free(f);
}

/* The device backend keeps weights by host address for the backend's
 * life (backend.h), so a test never frees weights while the backend lives:
 * a new weight at a freed one's address would read the old copy. */
static void free_weight(struct wt *w)
{
	free(w->deq);
}

/* y = x . deq^T in double: what both backends approximate */
static void ref_matmul(const struct wt *w, const float *x, float *y, int n)
{
	int64_t n_in = w->t.ne[0], n_out = w->t.ne[1];
	for (int i = 0; i < n; i++)
		for (int64_t r = 0; r < n_out; r++) {
			double s = 0;
			for (int64_t j = 0; j < n_in; j++)
				s += (double)x[i * n_in + j] * w->deq[r * n_in + j];
			y[i * n_out + r] = (float)s;
		}
}

static void test_matmul(void)
{
	static const int types[] = { LLM_F32, LLM_F16, LLM_BF16, LLM_Q4_0, LLM_Q4_1,
	                             LLM_Q5_0, LLM_Q5_1, LLM_Q8_0, LLM_Q2_K, LLM_Q3_K,
	                             LLM_Q4_K, LLM_Q5_K, LLM_Q6_K };
	static const int ns[] = { 1, 3, 8, 9, 33 };
	unsigned seed = 42;

	for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
		int type = types[ti];
		const struct llm_dtype_traits *tr = llm_dtype_traits(type);
		bool quant = tr->quantized;
		/* float types also at a width that is no multiple of 32 */
		int widths[2] = { 512, quant ? 256 : 100 };
		for (int wi = 0; wi < 2; wi++) {
			int n_in = widths[wi], n_out = wi ? 13 : 300;
			struct wt w;
			char what[128];
			make_weight(&w, type, n_in, n_out, &seed);
			CHECK(gpu->ops->supports(gpu, type), "supports %s", tr->name);
			for (size_t ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ni++) {
				int n = ns[ni];
				float *x = rnd((int64_t)n * n_in, &seed, 1);
				float *ref = malloc((size_t)n * n_out * sizeof(float));
				float *yc = malloc((size_t)n * n_out * sizeof(float));
				void *dx = dev_floats(x, (int64_t)n * n_in);
				void *dy = dev_floats(NULL, (int64_t)n * n_out);
				ref_matmul(&w, x, ref, n);
				cpu->ops->matmul(cpu, &w.t, x, yc, n);
				gpu->ops->matmul(gpu, &w.t, dx, dy, n);
				float *yg = host_of(dy, (int64_t)n * n_out);
				expect_no_error("matmul");
				/* matvec (n <= 8; quantized weights n <= 32, 8 rows a
				 * pass) reads f32 activations against the stored
				 * weights: near exact.  cuBLAS takes activations (and
				 * dequantized weights) as halves, bf16 as bf16. */
				bool mv = n <= 8 || (quant && n <= 32);
				double tol_ref = mv ? 2e-5 : type == LLM_F32 ? 2e-5
				               : type == LLM_BF16 ? 1.5e-2 : 4e-3;
				snprintf(what, sizeof(what), "matmul %s %dx%d n=%d vs exact",
				         tr->name, n_out, n_in, n);
				expect_close(what, yg, ref, (int64_t)n * n_out, tol_ref);
				/* the CPU quantizes activations for quantized weights */
				double tol_cpu = quant ? 3e-2 : tol_ref + 1e-4;
				snprintf(what, sizeof(what), "matmul %s %dx%d n=%d vs cpu",
				         tr->name, n_out, n_in, n);
				expect_close(what, yg, yc, (int64_t)n * n_out, tol_cpu);
				gpu->ops->dealloc(gpu, dx);
				gpu->ops->dealloc(gpu, dy);
				free(x); free(ref); free(yc); free(yg);
			}
			/* embedding lookup: the same rows, exactly as the CPU reads them */
			int32_t ids[7] = { 0, 5, 12, 5, 1, 12, 3 };
			float *rc = malloc(7 * (size_t)n_in * sizeof(float));
			void *dr = dev_floats(NULL, 7 * (int64_t)n_in);
			cpu->ops->get_rows(cpu, &w.t, ids, 7, rc);
			gpu->ops->get_rows(gpu, &w.t, ids, 7, dr);
			float *rg = host_of(dr, 7 * (int64_t)n_in);
			expect_no_error("get_rows");
			snprintf(what, sizeof(what), "get_rows %s width %d", tr->name, n_in);
			expect_close(what, rg, rc, 7 * (int64_t)n_in, 1e-6);
			gpu->ops->dealloc(gpu, dr);
			free(rc); free(rg);
			free_weight(&w);
		}
	}
}

/* ---------------------------------------------------------------- small ops */

static void test_small_ops(void)
{
	unsigned seed = 9;
	const int n = 5, dim = 100;
	float *x = rnd(n * dim, &seed, 3), *w = rnd(dim, &seed, 1), *b = rnd(dim, &seed, 1);
	float *u = rnd(n * dim, &seed, 2);
	float *yc = malloc(n * dim * sizeof(float)), *t;
	void *dx = dev_floats(x, n * dim), *dy = dev_floats(NULL, n * dim);
	void *du = dev_floats(u, n * dim);

	cpu->ops->rmsnorm(cpu, x, w, yc, n, dim, 1e-5f);
	gpu->ops->rmsnorm(gpu, dx, w, dy, n, dim, 1e-5f);
	t = host_of(dy, n * dim);
	expect_close("rmsnorm", t, yc, n * dim, 1e-5);
	free(t);
	/* in place */
	gpu->ops->copy(gpu, dy, dx, n * dim * sizeof(float));
	gpu->ops->rmsnorm(gpu, dy, w, dy, n, dim, 1e-5f);
	t = host_of(dy, n * dim);
	expect_close("rmsnorm in place", t, yc, n * dim, 1e-5);
	free(t);

	memcpy(yc, x, n * dim * sizeof(float));
	cpu->ops->add_bias(cpu, yc, b, n, dim);
	gpu->ops->copy(gpu, dy, dx, n * dim * sizeof(float));
	gpu->ops->add_bias(gpu, dy, b, n, dim);
	t = host_of(dy, n * dim);
	expect_close("add_bias", t, yc, n * dim, 1e-6);
	free(t);

	memcpy(yc, x, n * dim * sizeof(float));
	cpu->ops->swiglu(cpu, yc, u, n * dim);
	gpu->ops->copy(gpu, dy, dx, n * dim * sizeof(float));
	gpu->ops->swiglu(gpu, dy, du, n * dim);
	t = host_of(dy, n * dim);
	expect_close("swiglu", t, yc, n * dim, 1e-5);
	free(t);

	memcpy(yc, x, n * dim * sizeof(float));
	cpu->ops->add(cpu, yc, u, n * dim);
	gpu->ops->copy(gpu, dy, dx, n * dim * sizeof(float));
	gpu->ops->add(gpu, dy, du, n * dim);
	t = host_of(dy, n * dim);
	expect_close("add", t, yc, n * dim, 1e-7);
	free(t);
	expect_no_error("small ops");

	/* rope: both layouts, partial rotation, large positions */
	for (int kind = 0; kind < 2; kind++) {
		const int n_head = 3, hd = 16, n_rot = 12, nt = 4;
		int32_t pos[4] = { 0, 1, 77, 5000 };
		static float invs[2][6];  /* weights: one address per content */
		float *inv = invs[kind];
		for (int k = 0; k < n_rot / 2; k++)
			inv[k] = powf(10000.0f, -2.0f * k / n_rot);
		struct llm_rope r = { kind ? LLM_ROPE_NEOX : LLM_ROPE_NORM, n_rot, 10000.0f,
		                      inv, 1.25f };
		float *q = rnd(nt * n_head * hd, &seed, 1);
		void *dq = dev_floats(q, nt * n_head * hd);
		cpu->ops->rope(cpu, q, pos, nt, n_head, hd, &r);
		gpu->ops->rope(gpu, dq, pos, nt, n_head, hd, &r);
		t = host_of(dq, nt * n_head * hd);
		expect_close(kind ? "rope neox" : "rope norm", t, q, nt * n_head * hd, 2e-5);
		free(t);
		free(q);
		gpu->ops->dealloc(gpu, dq);
	}
	expect_no_error("rope");
	gpu->ops->dealloc(gpu, dx);
	gpu->ops->dealloc(gpu, dy);
	gpu->ops->dealloc(gpu, du);
	free(x); free(u); free(yc);  /* w and b are weights: kept */
}

/* ---------------------------------------------------------------- attention */

/*
 * Three sequences over shuffled blocks of one cache: their keys and values
 * stored by both backends (the caches must match byte for byte), then one
 * call holding sequence 0's whole prefill and one decode token of each
 * other sequence.
 */
static void test_attention(int kv_type, int head_dim)
{
	const int n_head = 4, n_head_kv = 2, bs = 16, n_blocks = 24;
	const int lens[3] = { 37, 5, 70 };
	struct llm_kv_params lp = { .n_layer = 1, .n_head_kv = n_head_kv,
	                            .head_dim = head_dim, .block_size = bs,
	                            .n_blocks = n_blocks, .max_seqs = 3,
	                            .max_pos = 1024, .type = kv_type };
	size_t elem = kv_type == LLM_F16 ? 2 : 4;
	size_t cache_bytes = (size_t)n_blocks * bs * n_head_kv * head_dim * elem;
	int32_t tables[3][8];
	unsigned seed = 5 + head_dim;
	int kv_dim = n_head_kv * head_dim, q_dim = n_head * head_dim;
	char what[96];

	/* blocks 23, 22, ... 0 handed out round robin */
	for (int b = 0, next = n_blocks - 1; b < 8; b++)
		for (int s = 0; s < 3; s++)
			tables[s][b] = next--;

	void *kc = cpu->ops->alloc(cpu, cache_bytes), *vc = cpu->ops->alloc(cpu, cache_bytes);
	void *kg = gpu->ops->alloc(gpu, cache_bytes), *vg = gpu->ops->alloc(gpu, cache_bytes);
	memset(kc, 0, cache_bytes);
	memset(vc, 0, cache_bytes);
	for (int s = 0; s < 3; s++) {
		int n = lens[s];
		float *k = rnd((int64_t)n * kv_dim, &seed, 1), *v = rnd((int64_t)n * kv_dim, &seed, 1);
		int32_t *slots = malloc(n * sizeof(int32_t));
		for (int p = 0; p < n; p++)
			slots[p] = tables[s][p / bs] * bs + p % bs;
		void *dk = dev_floats(k, (int64_t)n * kv_dim), *dv = dev_floats(v, (int64_t)n * kv_dim);
		cpu->ops->kv_store(cpu, kc, vc, &lp, k, v, slots, n);
		gpu->ops->kv_store(gpu, kg, vg, &lp, dk, dv, slots, n);
		gpu->ops->dealloc(gpu, dk);
		gpu->ops->dealloc(gpu, dv);
		free(k); free(v); free(slots);
	}
	char *kb = malloc(cache_bytes), *vb = malloc(cache_bytes);
	gpu->ops->synchronize(gpu);
	gpu->ops->download(gpu, kb, kg, cache_bytes);
	gpu->ops->download(gpu, vb, vg, cache_bytes);
	snprintf(what, sizeof(what), "kv_store %s hd %d: caches identical",
	         llm_dtype_name(kv_type), head_dim);
	CHECK(!memcmp(kb, kc, cache_bytes) && !memcmp(vb, vc, cache_bytes), "%s", what);

	int nt = lens[0] + 2;
	int32_t *pos = malloc(nt * sizeof(int32_t));
	const int32_t **tab = malloc(nt * sizeof(*tab));
	for (int i = 0; i < lens[0]; i++) {
		pos[i] = i;
		tab[i] = tables[0];
	}
	pos[lens[0]] = lens[1] - 1;
	tab[lens[0]] = tables[1];
	pos[lens[0] + 1] = lens[2] - 1;
	tab[lens[0] + 1] = tables[2];
	float *q = rnd((int64_t)nt * q_dim, &seed, 2);
	float *oc = malloc((size_t)nt * q_dim * sizeof(float));
	void *dq = dev_floats(q, (int64_t)nt * q_dim), *dout = dev_floats(NULL, (int64_t)nt * q_dim);
	struct llm_attn_batch ab = {
		.n_tokens = nt, .n_head = n_head, .n_head_kv = n_head_kv,
		.head_dim = head_dim, .scale = 1.0f / sqrtf((float)head_dim),
		.pos = pos, .table = tab, .block_size = bs, .n_blocks = n_blocks,
		.kv_type = kv_type, .k = kc, .v = vc,
	};
	cpu->ops->attention(cpu, &ab, q, oc);
	ab.k = kg;
	ab.v = vg;
	gpu->ops->attention(gpu, &ab, dq, dout);
	float *og = host_of(dout, (int64_t)nt * q_dim);
	expect_no_error("attention");
	snprintf(what, sizeof(what), "attention %s hd %d (prefill + decode)",
	         llm_dtype_name(kv_type), head_dim);
	expect_close(what, og, oc, (int64_t)nt * q_dim, 3e-5);
	/* a prefill continuing a sequence (positions 20..36: tiles that do
	 * not start at 0) */
	ab.n_tokens = lens[0] - 20;
	ab.pos = pos + 20;
	ab.table = tab + 20;
	gpu->ops->attention(gpu, &ab, (float *)dq + 20 * (int64_t)q_dim, dout);
	free(og);
	og = host_of(dout, (int64_t)(lens[0] - 20) * q_dim);
	snprintf(what, sizeof(what), "attention %s hd %d (prefill from 20)",
	         llm_dtype_name(kv_type), head_dim);
	expect_close(what, og, oc + 20 * (int64_t)q_dim, (int64_t)(lens[0] - 20) * q_dim,
	             3e-5);
	/* the decode tokens alone (one kernel across sequences) */
	ab.n_tokens = 2;
	ab.pos = pos + lens[0];
	ab.table = tab + lens[0];
	gpu->ops->attention(gpu, &ab, (float *)dq + (int64_t)lens[0] * q_dim, dout);
	free(og);
	og = host_of(dout, 2 * (int64_t)q_dim);
	snprintf(what, sizeof(what), "attention %s hd %d (decode only)",
	         llm_dtype_name(kv_type), head_dim);
	expect_close(what, og, oc + (int64_t)lens[0] * q_dim, 2 * (int64_t)q_dim, 3e-5);
	expect_no_error("attention");

	free(og); free(q); free(oc); free(pos); free(tab); free(kb); free(vb);
	gpu->ops->dealloc(gpu, dq);
	gpu->ops->dealloc(gpu, dout);
	gpu->ops->dealloc(gpu, kg);
	gpu->ops->dealloc(gpu, vg);
	cpu->ops->dealloc(cpu, kc);
	cpu->ops->dealloc(cpu, vc);
}

/* A bad index is an error the caller sees, not a crash; later ops wait. */
static void test_errors(void)
{
	struct llm_backend *g;
	unsigned seed = 3;
	struct wt w;
	int32_t ids[2] = { 1, 999 };

	if (llm_backend_init(&g, "cuda", 1)) {
		failf("second CUDA backend: %s", llm_errmsg());
		return;
	}
	make_weight(&w, LLM_F32, 32, 4, &seed);
	void *d = g->ops->alloc(g, 2 * 32 * sizeof(float));
	g->ops->get_rows(g, &w.t, ids, 2, d);
	int rc = g->ops->status(g);
	CHECK(rc == LLM_EINVAL, "get_rows of row 999 of 4: status %d (%s)", rc, llm_errmsg());
	CHECK(strstr(llm_errmsg(), "999") != NULL, "the message names the row: %s",
	      llm_errmsg());
	struct llm_backend *none;
	CHECK(llm_backend_init(&none, "cuda:1023", 1) != 0, "cuda:1023 is refused");
	g->ops->dealloc(g, d);
	llm_backend_free(g);
}

/* ---------------------------------------------------------------- host */

#ifdef HAVE_CUDA
/* kernels-quant.cu: the kernels' unpacking of one row, run on the host */
int llm_cuda_dequant_host(int t, const void *row, int n_in, float *out);

/*
 * Every type the kernels take, unpacked by the kernels' own code (compiled
 * for the host too) against quant.c's dequantization, bit for bit up to
 * fused multiply-adds.  Runs without a GPU: a wrong unpacking fails here,
 * but nothing here makes the suite pass without a device.
 */
static void test_dequant_host(void)
{
	static const int types[] = { LLM_F32, LLM_F16, LLM_BF16, LLM_Q4_0, LLM_Q4_1,
	                             LLM_Q5_0, LLM_Q5_1, LLM_Q8_0, LLM_Q2_K, LLM_Q3_K,
	                             LLM_Q4_K, LLM_Q5_K, LLM_Q6_K };
	unsigned seed = 77;
	char what[64];
	for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
		const int widths[3] = { 512, 256, 100 };
		for (int wi = 0; wi < 3; wi++) {
			struct wt w;
			int n_in = widths[wi];
			if (llm_dtype_traits(types[ti])->block_size > 1 && n_in % 256)
				continue;
			make_weight(&w, types[ti], n_in, 3, &seed);
			size_t rb = llm_row_size(types[ti], n_in);
			for (int r = 0; r < 3; r++) {
				/* 16-byte aligned, as device memory is */
				void *row = aligned_alloc(64, (rb + 63) & ~(size_t)63);
				float *got = malloc(n_in * sizeof(float));
				memcpy(row, (char *)w.t.data + r * rb, rb);
				int rc = llm_cuda_dequant_host(types[ti], row, n_in, got);
				snprintf(what, sizeof(what), "host deq32 %s width %d row %d",
				         llm_dtype_name(types[ti]), n_in, r);
				CHECK(rc == 0, "%s: not taken", what);
				if (!rc)
					expect_close(what, got, w.deq + (int64_t)r * n_in, n_in, 1e-6);
				free(row);
				free(got);
			}
			free(w.t.data);
			free_weight(&w);
		}
	}
}
#endif

/* ---------------------------------------------------------------- model */

static int argmax(const float *v, int n)
{
	int best = 0;
	for (int i = 1; i < n; i++)
		if (v[i] > v[best])
			best = i;
	return best;
}

static struct llm_ctx *new_ctx(const struct llm_model *m, const char *dev)
{
	struct llm_ctx_params p;
	struct llm_ctx *c;
	llm_ctx_params_default(&p);
	p.device = dev;
	p.n_ctx = 256;
	p.n_seq_max = 8;
	p.n_threads = 2;
	if (llm_ctx_new(&c, m, &p)) {
		failf("context on %s: %s", dev, llm_errmsg());
		return NULL;
	}
	return c;
}

/* Greedy from BOS for n steps, one token at a time; the logits of the
 * first step into first (n_vocab). */
static int greedy(struct llm_ctx *c, int32_t *out, int n, float *first)
{
	struct llm_batch b;
	int seq = llm_kv_seq_new(llm_ctx_kv(c)), tok = 1, nv = llm_ctx_n_vocab(c);
	llm_batch_init(&b, 1);
	for (int i = 0; i < n; i++) {
		llm_batch_clear(&b);
		llm_batch_add(&b, tok, i, seq, true);
		if (llm_decode(c, &b)) {
			llm_batch_free(&b);
			return -1;
		}
		const float *lg = llm_ctx_logits(c, 0);
		if (i == 0 && first)
			memcpy(first, lg, nv * sizeof(float));
		out[i] = tok = argmax(lg, nv);
	}
	llm_batch_free(&b);
	return 0;
}

static void test_model(void)
{
	const char *dir = getenv("LLMKIT_DATA");
	char path[4096];
	struct llm_model *m;
	enum { STEPS = 120, NS = 4, PL = 12, GEN = 40 };

	snprintf(path, sizeof(path), "%s/models/stories260K.gguf",
	         dir && *dir ? dir : "../shared/data");
	if (llm_model_load(&m, path)) {
		fprintf(stderr, "note: %s: %s; model tests skipped\n", path, llm_errmsg());
		return;
	}
	struct llm_ctx *cc = new_ctx(m, "cpu"), *gc = new_ctx(m, "cuda");
	int nv = m->hp.n_vocab;
	if (!cc || !gc)
		goto done;
	int32_t tc[STEPS], tg[STEPS];
	float *lc = malloc(nv * sizeof(float)), *lgp = malloc(nv * sizeof(float));
	if (greedy(cc, tc, STEPS, lc) || greedy(gc, tg, STEPS, lgp))
		failf("greedy decode: %s", llm_errmsg());
	else {
		expect_close("stories260K first logits", lgp, lc, nv, 1e-4);
		int same = 0;
		while (same < STEPS && tc[same] == tg[same])
			same++;
		CHECK(same == STEPS, "greedy text: the GPU's departs from the CPU's at "
		      "token %d of %d", same, STEPS);
	}
	free(lc);
	free(lgp);

	/* batched == single on the GPU: four prompts prefilled in one batch
	 * (cuBLAS) and decoded together (matvec), against each alone, token
	 * by token, in a fresh context */
	int32_t prompts[NS][PL], single[NS][GEN], batched[NS][GEN];
	unsigned seed = 11;
	for (int s = 0; s < NS; s++) {
		prompts[s][0] = 1;
		for (int i = 1; i < PL; i++)
			prompts[s][i] = 3 + (int)((frand(&seed) + 1) * 0.5f * (nv - 4));
	}
	struct llm_batch b;
	llm_batch_init(&b, NS * PL);
	for (int s = 0; s < NS; s++) {
		struct llm_ctx *one = new_ctx(m, "cuda");
		if (!one)
			goto done_b;
		int seq = llm_kv_seq_new(llm_ctx_kv(one)), tok = 0;
		for (int i = 0; i < PL + GEN - 1; i++) {
			tok = i < PL ? prompts[s][i] : single[s][i - PL];
			llm_batch_clear(&b);
			llm_batch_add(&b, tok, i, seq, true);
			if (llm_decode(one, &b)) {
				failf("single decode: %s", llm_errmsg());
				llm_ctx_free(one);
				goto done_b;
			}
			if (i >= PL - 1)
				single[s][i - PL + 1] = argmax(llm_ctx_logits(one, 0), nv);
		}
		llm_ctx_free(one);
	}
	{
		struct llm_ctx *all = new_ctx(m, "cuda");
		int seqs[NS];
		if (!all)
			goto done_b;
		llm_batch_clear(&b);
		for (int s = 0; s < NS; s++) {
			seqs[s] = llm_kv_seq_new(llm_ctx_kv(all));
			for (int i = 0; i < PL; i++)
				llm_batch_add(&b, prompts[s][i], i, seqs[s], i == PL - 1);
		}
		for (int step = 0; step < GEN; step++) {
			if (llm_decode(all, &b)) {
				failf("batched decode: %s", llm_errmsg());
				break;
			}
			int row = 0;
			for (int i = 0; i < b.n; i++)
				if (b.logits[i]) {
					int s = row++;
					batched[s][step] = argmax(llm_ctx_logits(all, i), nv);
				}
			llm_batch_clear(&b);
			for (int s = 0; s < NS; s++)
				llm_batch_add(&b, batched[s][step], PL + step, seqs[s], true);
		}
		for (int s = 0; s < NS; s++)
			CHECK(!memcmp(single[s], batched[s], sizeof(single[s])),
			      "sequence %d: batched greedy tokens differ from single", s);
		llm_ctx_free(all);
	}
done_b:
	llm_batch_free(&b);
done:
	llm_ctx_free(cc);
	llm_ctx_free(gc);
	llm_model_free(m);
}

int main(void)
{
#ifdef HAVE_CUDA
	test_dequant_host();
	if (n_fail) {
		printf("%d checks passed, %d failed (host unpacking)\n", n_pass, n_fail);
		return 1;
	}
	/* cuBLAS is opened at run time: the library and its five entry points
	 * must be found (no GPU needed for that) */
	if (llm_cuda_blas_open()) {
		printf("FAIL: %s\n", llm_errmsg());
		return 1;
	}
	n_pass++;
#endif
	if (llm_cuda_device_count() < 1) {
		printf("SKIP: no CUDA device (or a build without CUDA); %d host checks "
		       "passed\n", n_pass);
		return 77;
	}
	if (llm_backend_cpu_init(&cpu, 2) || llm_backend_init(&gpu, "cuda", 1)) {
		fprintf(stderr, "FAIL: backends: %s\n", llm_errmsg());
		return 1;
	}
	test_memory();
	test_small_ops();
	test_matmul();
	for (int t = 0; t < 2; t++) {
		static const int hds[] = { 8, 64, 128, 256 };
		for (int h = 0; h < 4; h++)
			test_attention(t ? LLM_F32 : LLM_F16, hds[h]);
	}
	test_errors();
	test_model();
	llm_backend_free(gpu);
	llm_backend_free(cpu);
	printf("%d checks passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}
