/*
 * test-quant - block quantization: bytes against ggml's (committed
 * fixtures from scripts/quant-fixtures.py), round-trip error bounds, the
 * reference dot products against float arithmetic, every SIMD kernel and
 * activation quantizer against the scalar reference, and importance
 * weighting lowering the weighted error.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/error.h"
#include "llmkit/quant.h"
#include "llmkit/tensor.h"
#include "llmkit/util.h"
#include "cpu/kernels.h"
#include "testutil.h"

static const int qtypes[] = { LLM_Q4_0, LLM_Q4_1, LLM_Q5_0, LLM_Q5_1, LLM_Q8_0,
                              LLM_Q2_K, LLM_Q3_K, LLM_Q4_K, LLM_Q5_K, LLM_Q6_K };
#define NQ ((int)(sizeof(qtypes) / sizeof(qtypes[0])))

static float gauss(unsigned *s)
{
	float u = 0;
	for (int i = 0; i < 12; i++) {
		*s = *s * 1103515245u + 12345u;
		u += ((*s >> 8) & 0xffff) / 65536.0f;
	}
	return u - 6.0f;
}

static char *fixture(const char *name, size_t *n)
{
	const char *src = getenv("LLMKIT_SRC");
	char path[4096];
	char *d;
	snprintf(path, sizeof(path), "%s/data/fixtures/quant/%s", src && *src ? src : ".",
	         name);
	ck_assert_msg(llm_read_file(path, &d, n) == 0, "fixture %s: %s", path, llm_errmsg());
	return d;
}

/* Our bytes equal ggml's, with and without an importance matrix. */
START_TEST(bytes_match_ggml)
{
	size_t n, ni;
	float *x = (float *)fixture("input.f32", &n);
	float *im = (float *)fixture("imatrix.f32", &ni);
	const int npr = 512, rows = (int)(n / sizeof(float) / npr);
	ck_assert_int_eq(ni, npr * sizeof(float));
	for (int k = 0; k < NQ; k++) {
		int t = qtypes[k];
		size_t rb = llm_row_size(t, npr), m;
		unsigned char *buf = malloc(rb * rows);
		char name[64];
		for (int withim = 0; withim < 2; withim++) {
			snprintf(name, sizeof(name), "%s%s.bin", llm_dtype_name(t),
			         withim ? "-im" : "");
			char *ref = fixture(name, &m);
			ck_assert_uint_eq(m, rb * rows);
			ck_assert_uint_eq(llm_quantize(t, x, buf, rows, npr, withim ? im : NULL),
			                  rb * rows);
			size_t diff = 0;
			for (size_t i = 0; i < m; i++)
				diff += buf[i] != (unsigned char)ref[i];
			ck_assert_msg(diff == 0, "%s: %zu of %zu bytes differ from ggml", name,
			              diff, m);
			free(ref);
		}
		free(buf);
	}
	free(x);
	free(im);
}
END_TEST

/* Dequantized rows stay close: rms error relative to the signal. */
/* relative rms round-trip error per type (qtypes order) */
static const float bound[] = { 0.12f, 0.10f, 0.06f, 0.05f, 0.008f,
                               0.40f, 0.20f, 0.10f, 0.05f, 0.03f };

START_TEST(roundtrip_error)
{
	const int n = 2048;
	float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
	unsigned s = 11;
	for (int i = 0; i < n; i++)
		x[i] = gauss(&s);
	for (int k = 0; k < NQ; k++) {
		const struct llm_dtype_traits *tr = llm_dtype_traits(qtypes[k]);
		void *q = malloc(llm_row_size(qtypes[k], n));
		tr->from_float(x, q, n);
		tr->to_float(q, y, n);
		double e = 0, sig = 0;
		for (int i = 0; i < n; i++) {
			e += (x[i] - y[i]) * (double)(x[i] - y[i]);
			sig += x[i] * (double)x[i];
		}
		ck_assert_msg(sqrt(e / sig) < bound[k], "%s: relative rms error %g >= %g",
		              tr->name, sqrt(e / sig), bound[k]);
		/* and not suspiciously perfect (the data is not on any grid) */
		ck_assert_msg(sqrt(e / sig) > 1e-4, "%s: no error at all?", tr->name);
		free(q);
	}
	free(x);
	free(y);
}
END_TEST

/* vec_dot equals the float dot of the dequantized operands. */
START_TEST(vec_dot_matches_float)
{
	const int n = 1024;
	float *w = malloc(n * sizeof(float)), *x = malloc(n * sizeof(float));
	float *wd = malloc(n * sizeof(float)), *xd = malloc(n * sizeof(float));
	unsigned s = 5;
	for (int i = 0; i < n; i++) {
		w[i] = gauss(&s);
		x[i] = gauss(&s) * (i % 7 == 0 ? 4 : 1);
	}
	for (int k = 0; k < NQ; k++) {
		const struct llm_dtype_traits *tr = llm_dtype_traits(qtypes[k]);
		const struct llm_dtype_traits *xt = llm_dtype_traits(tr->vec_dot_type);
		void *wq = malloc(llm_row_size(qtypes[k], n));
		void *xq = malloc(llm_row_size(tr->vec_dot_type, n));
		tr->from_float(w, wq, n);
		xt->from_float(x, xq, n);
		tr->to_float(wq, wd, n);
		xt->to_float(xq, xd, n);
		double ref = 0, mag = 0;
		for (int i = 0; i < n; i++) {
			ref += (double)wd[i] * xd[i];
			mag += fabs((double)wd[i] * xd[i]);
		}
		float got = tr->vec_dot(n, wq, xq);
		/* q4_1 / q5_1 use the f16 sum of the q8_1 block: a little slack */
		ck_assert_msg(fabs(got - ref) <= 2e-3 * mag, "%s: dot %g, float %g", tr->name,
		              got, ref);
		/* the quantized dot approximates the exact one */
		double exact = 0, xx = 0;
		for (int i = 0; i < n; i++) {
			exact += (double)w[i] * x[i];
			xx += (double)x[i] * x[i];
		}
		ck_assert_msg(fabs(got - exact) < 4 * bound[k] * sqrt(xx), "%s: %g vs exact %g",
		              tr->name, got, exact);
		free(wq);
		free(xq);
	}
	free(w);
	free(x);
	free(wd);
	free(xd);
}
END_TEST

static const char *isas[] = { "avx2", "avx512" };

/* SIMD activation quantizers produce the reference's bytes. */
START_TEST(quantize_x_matches_reference)
{
	static const int vts[] = { LLM_Q8_0, LLM_Q8_1, LLM_Q8_K };
	const int n = 1024;
	float *x = malloc(n * sizeof(float));
	unsigned s = 3;
	int tested = 0;
	for (int i = 0; i < n; i++)
		x[i] = gauss(&s) * (i < 256 ? 1e-3f : 1.0f);
	for (int i = 0; i < 64; i++)
		x[300 + i] = (float)(i - 32) * 0.5f;   /* halves: rounding ties */
	memset(x + 512, 0, 256 * sizeof(float));     /* an all-zero block */
	for (size_t ii = 0; ii < sizeof(isas) / sizeof(isas[0]); ii++) {
		const struct llm_cpu_kernels *k = llm_cpu_kernels_for(isas[ii]);
		if (!k)
			continue;
		for (int v = 0; v < 3; v++) {
			size_t rb = llm_row_size(vts[v], n);
			char *a = calloc(1, rb), *b = calloc(1, rb);
			llm_dtype_traits(vts[v])->from_float(x, a, n);
			k->quantize_x[vts[v]](x, b, n);
			ck_assert_msg(!memcmp(a, b, rb), "%s: %s activations differ from the "
			              "reference", k->qisa, llm_dtype_name(vts[v]));
			free(a);
			free(b);
			tested++;
		}
	}
	free(x);
	if (!tested)
		fprintf(stderr, "note: no SIMD table on this CPU\n");
}
END_TEST

/* Every SIMD rows kernel against the scalar one: 1..9 tokens, row
 * subranges, float entry (rows) and quantized entry (qrows). */
START_TEST(qrows_match_scalar)
{
	/* 352: eleven 32-blocks, not a multiple of the one-token kernels'
	 * four blocks in flight (k-quants skip it) */
	static const int n_ins[] = { 256, 512, 768, 352 };
	const struct llm_cpu_kernels *ref = llm_cpu_kernels_for("scalar");
	unsigned s = 9;
	int tested = 0;

	for (size_t ii = 0; ii < sizeof(isas) / sizeof(isas[0]); ii++) {
		const struct llm_cpu_kernels *k = llm_cpu_kernels_for(isas[ii]);
		if (!k)
			continue;
		for (int qi = 0; qi < NQ; qi++)
		for (size_t ni = 0; ni < 4; ni++)
		for (int n_tok = 1; n_tok <= 9; n_tok += (n_tok < 5 ? 1 : 4)) {
			int dt = qtypes[qi], n_in = n_ins[ni], n_out = 11;
			if (n_in % llm_dtype_traits(dt)->block_size)
				continue;
			int vt = llm_dtype_traits(dt)->vec_dot_type;
			size_t rb = llm_row_size(dt, n_in), xs = llm_row_size(vt, n_in);
			float *wf = malloc(sizeof(float) * n_in * n_out);
			char *w = malloc(rb * n_out), *xq = malloc(xs * n_tok);
			float *x = malloc(sizeof(float) * n_in * n_tok);
			float *y0 = calloc(n_tok * n_out, sizeof(float));
			float *y1 = calloc(n_tok * n_out, sizeof(float));
			float *y2 = calloc(n_tok * n_out, sizeof(float));
			for (int i = 0; i < n_in * n_out; i++)
				wf[i] = gauss(&s);
			for (int i = 0; i < n_in * n_tok; i++)
				x[i] = gauss(&s);
			llm_quantize(dt, wf, w, n_out, n_in, NULL);
			for (int t = 0; t < n_tok; t++)
				llm_dtype_traits(vt)->from_float(x + t * n_in, xq + t * xs, n_in);
			ref->qrows[dt](w, rb, n_in, 1, n_out, xq, xs, n_tok, y0, n_out);
			k->qrows[dt](w, rb, n_in, 1, n_out, xq, xs, n_tok, y1, n_out);
			k->rows[dt](w, rb, n_in, 1, n_out, x, n_in, n_tok, y2, n_out);
			for (int t = 0; t < n_tok; t++) {
				ck_assert(y1[t * n_out] == 0 && y2[t * n_out] == 0);  /* row 0 untouched */
				for (int r = 1; r < n_out; r++) {
					float a = y0[t * n_out + r], b = y1[t * n_out + r];
					float c = y2[t * n_out + r];
					float tol = 1e-4f * sqrtf((float)n_in) * 4 + 1e-4f;
					ck_assert_msg(fabsf(a - b) <= tol && fabsf(a - c) <= tol,
					              "%s %s n_in %d tok %d/%d row %d: scalar %g "
					              "simd %g rows %g", k->qisa,
					              llm_dtype_name(dt), n_in, t, n_tok, r, a, b, c);
				}
			}
			free(wf); free(w); free(xq); free(x); free(y0); free(y1); free(y2);
			tested++;
		}
	}
	if (!tested)
		fprintf(stderr, "note: no SIMD table on this CPU\n");
}
END_TEST

/* With an importance matrix the error weighted by it goes down. */
START_TEST(imatrix_lowers_weighted_error)
{
	const int n = 512, rows = 32;
	float *x = malloc(sizeof(float) * n * rows), *y = malloc(sizeof(float) * n);
	float *im = malloc(sizeof(float) * n);
	unsigned s = 21;
	for (int i = 0; i < n * rows; i++)
		x[i] = gauss(&s);
	for (int i = 0; i < n; i++)   /* a few columns matter a lot */
		im[i] = i % 16 == 3 ? 50.0f : 0.1f + (i % 5) * 0.1f;
	for (int k = 0; k < NQ; k++) {
		int t = qtypes[k];
		if (!llm_quant_uses_imatrix(t))
			continue;
		size_t rb = llm_row_size(t, n);
		char *q = malloc(rb * rows);
		double e[2];
		for (int withim = 0; withim < 2; withim++) {
			llm_quantize(t, x, q, rows, n, withim ? im : NULL);
			e[withim] = 0;
			for (int r = 0; r < rows; r++) {
				llm_dtype_traits(t)->to_float(q + r * rb, y, n);
				for (int i = 0; i < n; i++)
					e[withim] += im[i] * (y[i] - x[r * n + i]) *
					             (double)(y[i] - x[r * n + i]);
			}
		}
		ck_assert_msg(e[1] < 0.9 * e[0], "%s: weighted error %g with imatrix, %g "
		              "without", llm_dtype_name(t), e[1], e[0]);
		free(q);
	}
	ck_assert(!llm_quant_uses_imatrix(LLM_Q8_0));
	free(x);
	free(y);
	free(im);
}
END_TEST

/* Trait rows: sizes, names, partners. */
START_TEST(traits_rows)
{
	static const struct { int t; int bs; size_t bytes; int vt; } want[] = {
		{ LLM_Q4_0, 32, 18, LLM_Q8_0 }, { LLM_Q4_1, 32, 20, LLM_Q8_1 },
		{ LLM_Q5_0, 32, 22, LLM_Q8_0 }, { LLM_Q5_1, 32, 24, LLM_Q8_1 },
		{ LLM_Q8_0, 32, 34, LLM_Q8_0 }, { LLM_Q2_K, 256, 84, LLM_Q8_K },
		{ LLM_Q3_K, 256, 110, LLM_Q8_K }, { LLM_Q4_K, 256, 144, LLM_Q8_K },
		{ LLM_Q5_K, 256, 176, LLM_Q8_K }, { LLM_Q6_K, 256, 210, LLM_Q8_K },
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		const struct llm_dtype_traits *tr = llm_dtype_traits(want[i].t);
		ck_assert_int_eq(tr->block_size, want[i].bs);
		ck_assert_uint_eq(tr->type_size, want[i].bytes);
		ck_assert_int_eq(tr->vec_dot_type, want[i].vt);
		ck_assert(tr->to_float && tr->from_float && tr->vec_dot && tr->quantized);
		ck_assert_int_eq(llm_dtype_from_name(tr->name), want[i].t);
		ck_assert_ptr_nonnull(llm_cpu_kernels_for("scalar")->rows[want[i].t]);
	}
	/* activation formats are not weights the backend multiplies */
	ck_assert_ptr_null(llm_dtype_traits(LLM_Q8_K)->vec_dot);
	ck_assert_ptr_null(llm_cpu_kernels_for("scalar")->rows[LLM_Q8_K]);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("quant");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, bytes_match_ggml);
	tcase_add_test(tc, roundtrip_error);
	tcase_add_test(tc, vec_dot_matches_float);
	tcase_add_test(tc, quantize_x_matches_reference);
	tcase_add_test(tc, qrows_match_scalar);
	tcase_add_test(tc, imatrix_lowers_weighted_error);
	tcase_add_test(tc, traits_rows);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run(suite()) ? 1 : 0;
}
