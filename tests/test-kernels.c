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
#include "llmkit/model.h"
#include "llmkit/tensor.h"
#include "cpu/kernels.h"
#include "testutil.h"

static float frand(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return ((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static const char *isas[] = { "avx2", "avx512" };

/* rows kernels: all dtypes, awkward sizes, 1..9 tokens, row subranges */
START_TEST(rows_match_scalar)
{
	static const int n_ins[] = { 1, 7, 8, 15, 16, 17, 64, 100, 172, 768 };
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
		for (int n_tok = 1; n_tok <= 9; n_tok++) {
			int dt = dtypes[di], n_in = n_ins[ni], n_out = 13;
			size_t rb = llm_row_size(dt, n_in);
			float *wf = malloc(sizeof(float) * n_in * n_out);
			void *w = malloc(rb * n_out);
			float *x = malloc(sizeof(float) * n_in * n_tok);
			float *y0 = calloc(n_tok * n_out, sizeof(float));
			float *y1 = calloc(n_tok * n_out, sizeof(float));
			for (int i = 0; i < n_in * n_out; i++)
				wf[i] = frand(&seed);
			for (int i = 0; i < n_in * n_tok; i++)
				x[i] = frand(&seed);
			for (int r = 0; r < n_out; r++)
				llm_dtype_traits(dt)->from_float(wf + r * n_in,
				                                 (char *)w + r * rb, n_in);
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
			free(wf); free(w); free(x); free(y0); free(y1);
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
	for (size_t ii = 0; ii < sizeof(isas) / sizeof(isas[0]); ii++) {
		const struct llm_cpu_kernels *k = llm_cpu_kernels_for(isas[ii]);
		if (!k)
			continue;
		for (int hd = 4; hd <= 128; hd *= 2) {
			int n = 13, stride = hd * 3;
			float *q = malloc(sizeof(float) * hd), *kv = malloc(sizeof(float) * n * stride);
			float s0[13], s1[13], a0[128], a1[128];
			for (int i = 0; i < hd; i++)
				q[i] = frand(&seed);
			for (int i = 0; i < n * stride; i++)
				kv[i] = frand(&seed);
			ref->qk(q, kv + hd, stride, n, hd, 0.5f, s0);
			k->qk(q, kv + hd, stride, n, hd, 0.5f, s1);
			for (int j = 0; j < n; j++)
				ck_assert(fabsf(s0[j] - s1[j]) < 1e-5f * hd);
			for (int d = 0; d < hd; d++)
				a0[d] = a1[d] = frand(&seed);
			ref->pv(a0, s0, kv, stride, n, hd);
			k->pv(a1, s0, kv, stride, n, hd);
			for (int d = 0; d < hd; d++)
				ck_assert(fabsf(a0[d] - a1[d]) < 1e-5f * n);
			free(q);
			free(kv);
		}
	}
}
END_TEST

/* The backend's attention against a naive softmax(QK^T)V over a paged
 * cache with scattered blocks and GQA. */
START_TEST(attention_op_matches_naive)
{
	struct llm_backend *be;
	int n_head = 4, n_kv = 2, hd = 16, bs = 4, n_pos = 11, kvd = n_kv * hd;
	int32_t table[3] = { 5, 0, 2 };    /* physical blocks out of order */
	int32_t pos[2] = { 6, 10 };
	const int32_t *tables[2] = { table, table };
	unsigned seed = 11;
	float *k = calloc(6 * bs * kvd, sizeof(float));
	float *v = calloc(6 * bs * kvd, sizeof(float));
	float q[2 * 4 * 16], out[2 * 4 * 16];

	ck_assert_int_eq(llm_backend_cpu_init(&be, 2), 0);
	for (int p = 0; p < n_pos; p++) {
		int s = table[p / bs] * bs + p % bs;
		for (int d = 0; d < kvd; d++) {
			k[s * kvd + d] = frand(&seed);
			v[s * kvd + d] = frand(&seed);
		}
	}
	for (int i = 0; i < 2 * n_head * hd; i++)
		q[i] = frand(&seed);
	struct llm_attn_batch ab = {
		.n_tokens = 2, .n_head = n_head, .n_head_kv = n_kv, .head_dim = hd,
		.scale = 0.25f, .pos = pos, .table = tables, .block_size = bs,
		.k = k, .v = v,
	};
	be->ops->attention(be, &ab, q, out);
	for (int t = 0; t < 2; t++)
		for (int h = 0; h < n_head; h++) {
			double sc[16], mx = -1e30, z = 0;
			int kvh = h / (n_head / n_kv);
			for (int p = 0; p <= pos[t]; p++) {
				int s = table[p / bs] * bs + p % bs;
				double d = 0;
				for (int j = 0; j < hd; j++)
					d += q[(t * n_head + h) * hd + j] * k[s * kvd + kvh * hd + j];
				sc[p] = d * 0.25;
				mx = fmax(mx, sc[p]);
			}
			for (int p = 0; p <= pos[t]; p++)
				z += (sc[p] = exp(sc[p] - mx));
			for (int j = 0; j < hd; j++) {
				double o = 0;
				for (int p = 0; p <= pos[t]; p++) {
					int s = table[p / bs] * bs + p % bs;
					o += sc[p] / z * v[s * kvd + kvh * hd + j];
				}
				ck_assert_msg(fabs(o - out[(t * n_head + h) * hd + j]) < 1e-5,
				              "token %d head %d dim %d", t, h, j);
			}
		}
	free(k);
	free(v);
	llm_backend_free(be);
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

int main(void)
{
	Suite *s = suite_create("kernels");
	TCase *tc = tcase_create("cpu");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, rows_match_scalar);
	tcase_add_test(tc, attention_kernels_match_scalar);
	tcase_add_test(tc, attention_op_matches_naive);
	tcase_add_test(tc, rope_rotates_pairs);
	tcase_add_test(tc, matmul_paths_agree);
	suite_add_tcase(s, tc);
	int failed = test_run(s);
	return failed ? 1 : 0;
}
