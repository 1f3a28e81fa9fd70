/*
 * test-kernels - every SIMD kernel of the CPU backend against the scalar
 * reference, and the backend's small ops against plain arithmetic.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/backend.h"
#include "llmkit/kvcache.h"
#include "llmkit/model.h"
#include "llmkit/tensor.h"
#include "cpu/kernels.h"
#include "testutil.h"

static float frand(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return ((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* n_out random rows of n_in weights in dtype dt (row_size apart) */
static void *random_rows(int dt, int n_in, int n_out, unsigned *seed)
{
	size_t rb = llm_row_size(dt, n_in);
	float *wf = malloc(sizeof(float) * n_in);
	char *w = malloc(rb * n_out);
	for (int r = 0; r < n_out; r++) {
		for (int i = 0; i < n_in; i++)
			wf[i] = frand(seed);
		llm_dtype_traits(dt)->from_float(wf, w + r * rb, n_in);
	}
	free(wf);
	return w;
}

static float *random_floats(int n, unsigned *seed)
{
	float *x = malloc(sizeof(float) * n);
	for (int i = 0; i < n; i++)
		x[i] = frand(seed);
	return x;
}

static const char *isas[] = { "avx2", "avx512" };

/* rows kernels: all dtypes, awkward sizes, 1..9 tokens, row subranges */
START_TEST(rows_match_scalar)
{
	static const int n_ins[] = { 1, 7, 8, 15, 16, 17, 64, 100, 172, 768, 1030, 2051 };
	/* past a tile of tokens (48 on AVX2), and rows beyond blocks of 16 */
	static const int n_toks[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 31, 50 };
	static const int dtypes[] = { LLM_F32, LLM_F16, LLM_BF16 };
	const struct llm_cpu_kernels *ref = llm_cpu_kernels_for("scalar");
	unsigned seed = 7;
	int tested = 0;

	for (size_t ii = 0; ii < sizeof(isas) / sizeof(isas[0]); ii++) {
		const struct llm_cpu_kernels *k = llm_cpu_kernels_for(isas[ii]);
		if (!k)
			continue;   /* this CPU lacks it; the other ISAs still run */
		for (size_t di = 0; di < 3; di++)
		for (size_t ni = 0; ni < sizeof(n_ins) / sizeof(n_ins[0]); ni++)
		for (size_t ti = 0; ti < sizeof(n_toks) / sizeof(n_toks[0]); ti++) {
			int dt = dtypes[di], n_in = n_ins[ni], n_tok = n_toks[ti];
			int n_out = n_tok > 9 ? 23 : 13;
			size_t rb = llm_row_size(dt, n_in);
			void *w = random_rows(dt, n_in, n_out, &seed);
			float *x = random_floats(n_in * n_tok, &seed);
			float *y0 = calloc(n_tok * n_out, sizeof(float));
			float *y1 = calloc(n_tok * n_out, sizeof(float));
			/* a subrange that does not start at a block of 4 */
			ref->rows[dt](w, rb, n_in, 1, n_out, x, n_in, n_tok, y0, n_out);
			k->rows[dt](w, rb, n_in, 1, n_out, x, n_in, n_tok, y1, n_out);
			for (int i = 0; i < n_tok * n_out; i++) {
				float tol = 1e-5f * n_in + 1e-6f;
				ck_assert_msg(fabsf(y0[i] - y1[i]) <= tol,
				              "%s %s n_in %d n_tok %d [%d]: %g vs %g",
				              k->isa, llm_dtype_name(dt), n_in, n_tok, i,
				              y0[i], y1[i]);
			}
			ck_assert(y1[0] == 0.0f);  /* row 0 is outside [1, n_out) */
			free(w); free(x); free(y0); free(y1);
			tested++;
		}
	}
	if (!tested)
		fprintf(stderr, "note: no SIMD kernels on this CPU; scalar only\n");
}
END_TEST

/* A token's products do not depend on the other tokens of the batch
 * (from two tokens on): the first k of a batch, or k from its second on,
 * give the bits the whole batch gave them. */
START_TEST(rows_batch_invariant)
{
	static const int n_ins[] = { 100, 768, 2051 };
	static const int ks[] = { 2, 3, 4, 5, 7, 31, 48, 49 };
	static const int dtypes[] = { LLM_F32, LLM_F16 };
	int n_out = 37, n_tok = 50;
	unsigned seed = 13;
	int tested = 0;

	for (size_t ii = 0; ii < sizeof(isas) / sizeof(isas[0]); ii++) {
		const struct llm_cpu_kernels *k = llm_cpu_kernels_for(isas[ii]);
		if (!k)
			continue;
		for (size_t di = 0; di < 2; di++)
		for (size_t ni = 0; ni < sizeof(n_ins) / sizeof(n_ins[0]); ni++) {
			int dt = dtypes[di], n_in = n_ins[ni];
			size_t rb = llm_row_size(dt, n_in);
			void *w = random_rows(dt, n_in, n_out, &seed);
			float *x = random_floats(n_in * n_tok, &seed);
			float *y = malloc(sizeof(float) * n_tok * n_out);
			float *yk = malloc(sizeof(float) * n_tok * n_out);
			k->rows[dt](w, rb, n_in, 0, n_out, x, n_in, n_tok, y, n_out);
			for (size_t ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ki++) {
				int nk = ks[ki];
				k->rows[dt](w, rb, n_in, 0, n_out, x, n_in, nk, yk, n_out);
				ck_assert_msg(!memcmp(y, yk, sizeof(float) * nk * n_out),
				              "%s %s n_in %d: first %d of %d differ",
				              k->isa, llm_dtype_name(dt), n_in, nk, n_tok);
				k->rows[dt](w, rb, n_in, 0, n_out, x + n_in, n_in, nk, yk, n_out);
				ck_assert_msg(!memcmp(y + n_out, yk, sizeof(float) * nk * n_out),
				              "%s %s n_in %d: %d from the second differ",
				              k->isa, llm_dtype_name(dt), n_in, nk);
			}
			free(w); free(x); free(y); free(yk);
			tested++;
		}
	}
	if (!tested)
		fprintf(stderr, "note: no SIMD kernels on this CPU; scalar only\n");
}
END_TEST

START_TEST(attention_kernels_match_scalar)
{
	const struct llm_cpu_kernels *ref = llm_cpu_kernels_for("scalar");
	unsigned seed = 3;
	static const int hds[] = { 4, 8, 12, 64, 80, 128, 160, 256 };
	static const int bss[] = { 4, 16, 32 };
	for (size_t ii = 0; ii < sizeof(isas) / sizeof(isas[0]); ii++) {
		const struct llm_cpu_kernels *k = llm_cpu_kernels_for(isas[ii]);
		if (!k)
			continue;
		for (size_t hi = 0; hi < sizeof(hds) / sizeof(hds[0]); hi++)
		for (size_t bi = 0; bi < sizeof(bss) / sizeof(bss[0]); bi++)
		for (int nb = 1; nb <= bss[bi]; nb += (nb < 4 ? 1 : 5)) {
			int hd = hds[hi], bs = bss[bi];
			float *q = malloc(sizeof(float) * hd);
			float *kb = malloc(sizeof(float) * hd * bs);
			float *vb = malloc(sizeof(float) * hd * bs);
			float s0[32], s1[32], a0[256], a1[256];
			for (int i = 0; i < hd; i++)
				q[i] = frand(&seed);
			for (int i = 0; i < hd * bs; i++) {
				kb[i] = frand(&seed);
				vb[i] = frand(&seed);
			}
			float m0 = ref->qk(q, kb, hd, nb, 0.5f, s0);
			float m1 = k->qk(q, kb, hd, nb, 0.5f, s1);
			float m = s0[0];
			for (int j = 1; j < nb; j++)
				m = s0[j] > m ? s0[j] : m;
			ck_assert(m0 == m);
			ck_assert(fabsf(m0 - m1) < 1e-5f * hd);
			for (int j = 0; j < nb; j++)
				ck_assert_msg(fabsf(s0[j] - s1[j]) < 1e-5f * hd, "%s qk hd %d "
				              "bs %d nb %d", k->isa, hd, bs, nb);
			for (int d = 0; d < hd; d++)
				a0[d] = a1[d] = frand(&seed);
			ref->pv(a0, s0, vb, hd, nb);
			k->pv(a1, s0, vb, hd, nb);
			for (int d = 0; d < hd; d++)
				ck_assert_msg(fabsf(a0[d] - a1[d]) < 1e-5f * nb, "%s pv hd %d "
				              "nb %d", k->isa, hd, nb);
			/* f16 caches: the same values rounded to half */
			uint16_t *kh = malloc(2 * hd * bs), *vh = malloc(2 * hd * bs);
			for (int i = 0; i < hd * bs; i++) {
				kh[i] = llm_f32_to_f16(kb[i]);
				vh[i] = llm_f32_to_f16(vb[i]);
			}
			m0 = ref->qk16(q, kh, hd, nb, 0.5f, s0);
			m1 = k->qk16(q, kh, hd, nb, 0.5f, s1);
			ck_assert(fabsf(m0 - m1) < 1e-5f * hd);
			for (int j = 0; j < nb; j++)
				ck_assert_msg(fabsf(s0[j] - s1[j]) < 1e-5f * hd, "%s qk16 hd %d "
				              "bs %d nb %d", k->isa, hd, bs, nb);
			for (int d = 0; d < hd; d++)
				a0[d] = a1[d] = frand(&seed);
			ref->pv16(a0, s0, vh, hd, nb);
			k->pv16(a1, s0, vh, hd, nb);
			for (int d = 0; d < hd; d++)
				ck_assert_msg(fabsf(a0[d] - a1[d]) < 1e-5f * nb, "%s pv16 hd %d "
				              "nb %d", k->isa, hd, nb);
			free(kh);
			free(vh);
			free(q);
			free(kb);
			free(vb);
		}
	}
}
END_TEST

/* exp within a few ulp of libm's over the softmax and SiLU range; the sum
 * matches; swiglu matches the formula. */
START_TEST(exp_and_swiglu_match_libm)
{
	const struct llm_cpu_kernels *ref = llm_cpu_kernels_for("scalar");
	for (size_t ii = 0; ii < sizeof(isas) / sizeof(isas[0]); ii++) {
		const struct llm_cpu_kernels *k = llm_cpu_kernels_for(isas[ii]);
		if (!k)
			continue;
		enum { N = 20001 };
		static float x[N], y[N], g0[N], g1[N], u[N];
		double want_sum = 0;
		for (int i = 0; i < N; i++) {
			x[i] = y[i] = -100.0f + i * 0.01f;       /* -100 .. 100 */
		}
		/* the sum over the part where no float overflows */
		float sum = k->exp_sum(y, 18501, 5.0f);
		for (int i = 0; i < N; i++) {
			y[i] = x[i];
			if (x[i] - 5.0f >= -87.0f && x[i] - 5.0f <= 80.0f)
				want_sum += exp((double)x[i] - 5.0);
		}
		ck_assert(fabs(sum - want_sum) <= 1e-5 * want_sum);
		k->exp_sum(y, N, 5.0f);
		for (int i = 0; i < N; i++) {
			float want = expf(x[i] - 5.0f);
			if (x[i] - 5.0f < -87.0f)
				ck_assert(y[i] < 2e-38f);    /* flushed towards 0 */
			else if (x[i] - 5.0f > 88.0f)
				ck_assert(y[i] > 1e38f);     /* saturated */
			else
				ck_assert_msg(fabsf(y[i] - want) <= 4e-7f * want,
				              "%s exp(%g) = %g, libm %g", k->isa, x[i] - 5.0f,
				              y[i], want);
		}
		for (int i = 0; i < N; i++) {
			g0[i] = g1[i] = (i % 2001 - 1000) * 0.02f;
			u[i] = (i % 7) - 3.0f;
		}
		ref->swiglu(g0, u, N);
		k->swiglu(g1, u, N - 3);   /* an odd length: the tail path too */
		for (int i = 0; i < N - 3; i++)
			ck_assert_msg(fabsf(g0[i] - g1[i]) <= 1e-6f * (1 + fabsf(g0[i])),
			              "%s swiglu [%d] %g vs %g", k->isa, i, g0[i], g1[i]);
	}
}
END_TEST

/* The backend's attention against a naive softmax(QK^T)V over a paged
 * cache with scattered blocks and GQA, the cache filled by its own store. */
START_TEST(attention_op_matches_naive)
{
	for (int half = 0; half < 2; half++) {
	struct llm_backend *be;
	int n_head = 4, n_kv = 2, hd = 16, bs = 4, n_pos = 11;
	struct llm_kv_params lp = { .n_head_kv = n_kv, .head_dim = hd, .block_size = bs,
	                            .n_blocks = 6 };
	int32_t table[3] = { 5, 0, 2 };    /* physical blocks out of order */
	int32_t pos[2] = { 6, 10 };
	const int32_t *tables[2] = { table, table };
	unsigned seed = 11;
	enum llm_dtype type = half ? LLM_F16 : LLM_F32;
	float *k = calloc(6 * bs * n_kv * hd, sizeof(float));
	float *v = calloc(6 * bs * n_kv * hd, sizeof(float));
	float kr[11][2][16], vr[11][2][16];    /* plain copies: [pos][head][dim] */
	float q[2 * 4 * 16], out[2 * 4 * 16];

	ck_assert_int_eq(llm_backend_cpu_init(&be, 2), 0);
	for (int p = 0; p < n_pos; p++)
		for (int h = 0; h < n_kv; h++)
			for (int d = 0; d < hd; d++) {
				kr[p][h][d] = frand(&seed);
				vr[p][h][d] = frand(&seed);
			}
	for (int p = 0; p < n_pos; p++) {
		int32_t slot = table[p / bs] * bs + p % bs;
		lp.type = type;
		be->ops->kv_store(be, k, v, &lp, &kr[p][0][0], &vr[p][0][0], &slot, 1);
	}
	/* the layout kvcache.h documents; then the reference sees what the
	 * cache holds (values rounded to half for an f16 cache) */
	if (!half) {
		ck_assert(k[llm_kv_off(&lp, 0, 1, 1, 3)] == kr[5][1][3]);
		ck_assert(v[llm_kv_off(&lp, 2, 2, 0, 7)] == vr[10][0][7]);
	} else {
		uint16_t *kh = (uint16_t *)k, *vh = (uint16_t *)v;
		ck_assert(kh[llm_kv_off(&lp, 0, 1, 1, 3)] == llm_f32_to_f16(kr[5][1][3]));
		ck_assert(vh[llm_kv_off(&lp, 2, 2, 0, 7)] == llm_f32_to_f16(vr[10][0][7]));
		for (int p = 0; p < n_pos; p++)
			for (int h = 0; h < n_kv; h++)
				for (int d = 0; d < hd; d++) {
					kr[p][h][d] = llm_f16_to_f32(llm_f32_to_f16(kr[p][h][d]));
					vr[p][h][d] = llm_f16_to_f32(llm_f32_to_f16(vr[p][h][d]));
				}
	}
	for (int i = 0; i < 2 * n_head * hd; i++)
		q[i] = frand(&seed);
	struct llm_attn_batch ab = {
		.n_tokens = 2, .n_head = n_head, .n_head_kv = n_kv, .head_dim = hd,
		.scale = 0.25f, .pos = pos, .table = tables, .block_size = bs,
		.n_blocks = 6, .kv_type = type, .k = k, .v = v,
	};
	be->ops->attention(be, &ab, q, out);
	for (int t = 0; t < 2; t++)
		for (int h = 0; h < n_head; h++) {
			double sc[16], mx = -1e30, z = 0;
			int kvh = h / (n_head / n_kv);
			for (int p = 0; p <= pos[t]; p++) {
				double d = 0;
				for (int j = 0; j < hd; j++)
					d += q[(t * n_head + h) * hd + j] * kr[p][kvh][j];
				sc[p] = d * 0.25;
				mx = fmax(mx, sc[p]);
			}
			for (int p = 0; p <= pos[t]; p++)
				z += (sc[p] = exp(sc[p] - mx));
			for (int j = 0; j < hd; j++) {
				double o = 0;
				for (int p = 0; p <= pos[t]; p++)
					o += sc[p] / z * vr[p][kvh][j];
				ck_assert_msg(fabs(o - out[(t * n_head + h) * hd + j]) < 1e-5,
				              "token %d head %d dim %d", t, h, j);
			}
		}
	free(k);
	free(v);
	llm_backend_free(be);
	}
}
END_TEST

START_TEST(rope_rotates_pairs)
{
	struct llm_backend *be;
	float inv[2] = { 1.0f, 0.01f };
	struct llm_rope r = { LLM_ROPE_NORM, 4, 10000.0f, inv, 1.0f };
	float x[6] = { 1, 0, 1, 0, 7, 8 };   /* head_dim 6, n_rot 4 */
	int32_t pos = 3;
	ck_assert_int_eq(llm_backend_cpu_init(&be, 1), 0);
	be->ops->rope(be, x, &pos, 1, 1, 6, &r);
	ck_assert(fabsf(x[0] - cosf(3.0f)) < 1e-6f && fabsf(x[1] - sinf(3.0f)) < 1e-6f);
	ck_assert(fabsf(x[2] - cosf(0.03f)) < 1e-6f && fabsf(x[3] - sinf(0.03f)) < 1e-6f);
	ck_assert(x[4] == 7 && x[5] == 8);   /* beyond n_rot: untouched */
	float y[4] = { 1, 1, 0, 0 };          /* NEOX pairs (0,2) and (1,3) */
	r.kind = LLM_ROPE_NEOX;
	be->ops->rope(be, y, &pos, 1, 1, 4, &r);
	ck_assert(fabsf(y[0] - cosf(3.0f)) < 1e-6f && fabsf(y[2] - sinf(3.0f)) < 1e-6f);
	ck_assert(fabsf(y[1] - cosf(0.03f)) < 1e-6f && fabsf(y[3] - sinf(0.03f)) < 1e-6f);
	llm_backend_free(be);
}
END_TEST

START_TEST(matmul_paths_agree)
{
	/* the rows-kernel path and the BLAS path give the same product */
	struct llm_backend *be;
	int n_in = 96, n_out = 70, n = 40;   /* >= BLAS_MIN_TOKENS */
	unsigned seed = 5;
	static const int dtypes[] = { LLM_F32, LLM_F16, LLM_BF16 };
	ck_assert_int_eq(llm_backend_cpu_init(&be, 2), 0);
	for (int di = 0; di < 3; di++) {
		int dt = dtypes[di];
		size_t rb = llm_row_size(dt, n_in);
		float *wf = malloc(sizeof(float) * n_in * n_out);
		char *w = malloc(rb * n_out);
		float *x = malloc(sizeof(float) * n_in * n), *y = malloc(sizeof(float) * n_out * n);
		for (int i = 0; i < n_in * n_out; i++)
			wf[i] = frand(&seed);
		for (int i = 0; i < n_in * n; i++)
			x[i] = frand(&seed);
		for (int r = 0; r < n_out; r++)
			llm_dtype_traits(dt)->from_float(wf + r * n_in, w + r * rb, n_in);
		struct llm_tensor t = { "w", dt, 2, { n_in, n_out, 1, 1 }, rb * n_out, w };
		be->ops->matmul(be, &t, x, y, n);          /* BLAS */
		for (int i = 0; i < n; i++) {
			float y1[70];
			be->ops->matmul(be, &t, x + i * n_in, y1, 1);   /* rows kernel */
			for (int r = 0; r < n_out; r++) {
				double ref = 0;
				float wr[96];
				llm_dtype_traits(dt)->to_float(w + r * rb, wr, n_in);
				for (int j = 0; j < n_in; j++)
					ref += (double)wr[j] * x[i * n_in + j];
				ck_assert(fabs(ref - y[i * n_out + r]) < 1e-4);
				ck_assert(fabs(ref - y1[r]) < 1e-4);
			}
		}
		free(wf); free(w); free(x); free(y);
	}
	llm_backend_free(be);
}
END_TEST

START_TEST(padded_rows_same_bits)
{
	/* rows of 4 KiB (1024 f32) reach the rows kernel copied at a padded
	 * stride (backend-cpu.c, x_padded): the product is the kernel's on
	 * the dense rows, bit for bit */
	struct llm_backend *be;
	int n_in = 1024, n_out = 36, n = 9;
	unsigned seed = 11;
	const struct llm_cpu_kernels *k = llm_cpu_kernels();
	float *w = malloc(sizeof(float) * n_in * n_out);
	float *x = malloc(sizeof(float) * n_in * n);
	float *y = malloc(sizeof(float) * n_out * n), *y0 = malloc(sizeof(float) * n_out * n);
	for (int i = 0; i < n_in * n_out; i++)
		w[i] = frand(&seed);
	for (int i = 0; i < n_in * n; i++)
		x[i] = frand(&seed);
	ck_assert_int_eq(llm_backend_cpu_init(&be, 2), 0);
	struct llm_tensor t = { "w", LLM_F32, 2, { n_in, n_out, 1, 1 },
	                        sizeof(float) * n_in * n_out, w };
	be->ops->matmul(be, &t, x, y, n);
	k->rows[LLM_F32](w, sizeof(float) * n_in, n_in, 0, n_out, x, n_in, n, y0, n_out);
	ck_assert_mem_eq(y, y0, sizeof(float) * n_out * n);
	llm_backend_free(be);
	free(w); free(x); free(y); free(y0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("kernels");
	TCase *tc = tcase_create("cpu");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, rows_match_scalar);
	tcase_add_test(tc, rows_batch_invariant);
	tcase_add_test(tc, padded_rows_same_bits);
	tcase_add_test(tc, attention_kernels_match_scalar);
	tcase_add_test(tc, attention_op_matches_naive);
	tcase_add_test(tc, exp_and_swiglu_match_libm);
	tcase_add_test(tc, rope_rotates_pairs);
	tcase_add_test(tc, matmul_paths_agree);
	suite_add_tcase(s, tc);
	int failed = test_run(s);
	return failed ? 1 : 0;
}
