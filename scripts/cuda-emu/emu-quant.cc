/*
 * emu-quant - the weight kernels of libcore/cuda/kernels-quant.cu run on
 * the host by the emulator, for every type they take: matvec at 1..8
 * token rows (against the exact product over the dequantized weights, in
 * double, and against the CPU backend's matmul, with tests/test-cuda.c's
 * tolerances), dequantization to halves (each element the CPU's
 * dequantized weight rounded to a half) and get_rows (the CPU's rows).
 * Run by emu-main.cc.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "llmkit/backend.h"
#include "llmkit/quant.h"
#include "llmkit/tensor.h"
#include "cuda/cuda-internal.h"
#include "emu-check.h"

namespace emu {
#include "kernels-quant.emu.cc"
}

#define cpu emu_cpu

static const int types[] = { LLM_F32, LLM_F16, LLM_BF16, LLM_Q4_0, LLM_Q4_1,
                             LLM_Q5_0, LLM_Q5_1, LLM_Q8_0, LLM_Q2_K, LLM_Q3_K,
                             LLM_Q4_K, LLM_Q5_K, LLM_Q6_K };

struct weight {
	struct llm_tensor t;
	std::vector<unsigned char> store;  /* t.data: 64-byte aligned in it */
	vec deq;                           /* the stored weights as floats */
	size_t rb;
};

static void make_weight(weight *w, int type, int n_in, int n_out, unsigned *seed)
{
	const struct llm_dtype_traits *tr = llm_dtype_traits(type);
	vec f = emu_rnd((size_t)n_in * n_out, seed, 1);
	w->rb = llm_row_size((enum llm_dtype)type, n_in);
	memset(&w->t, 0, sizeof(w->t));
	w->t.name = "emu.weight";
	w->t.type = (enum llm_dtype)type;
	w->t.n_dims = 2;
	w->t.ne[0] = n_in;
	w->t.ne[1] = n_out;
	w->t.nbytes = w->rb * n_out;
	w->store.assign(w->t.nbytes + 64, 0);
	uintptr_t p = ((uintptr_t)w->store.data() + 63) & ~(uintptr_t)63;
	w->t.data = (void *)p;
	llm_quantize((enum llm_dtype)type, f.data(), w->t.data, n_out, n_in, NULL);
	w->deq.resize((size_t)n_in * n_out);
	for (int r = 0; r < n_out; r++)
		tr->to_float((const char *)w->t.data + r * w->rb, w->deq.data() + (size_t)r * n_in,
		             n_in);
}

static void ref_matmul(const weight *w, const float *x, float *y, int n)
{
	const int64_t n_in = w->t.ne[0], n_out = w->t.ne[1];
	for (int i = 0; i < n; i++)
		for (int64_t r = 0; r < n_out; r++) {
			double s = 0;
			for (int64_t j = 0; j < n_in; j++)
				s += (double)x[i * n_in + j] * w->deq[r * n_in + j];
			y[i * n_out + r] = (float)s;
		}
}

static void test_type(int type, int n_in, int n_out, unsigned *seed)
{
	const struct llm_dtype_traits *tr = llm_dtype_traits(type);
	const bool quant = tr->quantized;
	weight w;
	char what[112];
	make_weight(&w, type, n_in, n_out, seed);
	emu_check(emu::cuda_type_supported((enum llm_dtype)type), "%s supported", tr->name);

	/* matvec at every row count it takes; x 16-byte aligned (the float4
	 * loads) except at n = 3, where x starts a float late (scalar loads) */
	for (int n = 1; n <= CUDA_MV_MAX; n++) {
		const bool skew = n == 3 && n_in % 4 == 0;
		vec xs = emu_rnd((size_t)n * n_in + 8, seed, 1);
		uintptr_t a = ((uintptr_t)xs.data() + 15) & ~(uintptr_t)15;
		float *x = (float *)a + (skew ? 1 : 0);
		vec ref((size_t)n * n_out), yc((size_t)n * n_out), yg((size_t)n * n_out, NAN);
		ref_matmul(&w, x, ref.data(), n);
		cpu->ops->matmul(cpu, &w.t, x, yc.data(), n);
		cudaError_t e = emu::cuda_matvec(0, (enum llm_dtype)type, w.t.data, w.rb, n_in,
		                                 n_out, x, n, yg.data());
		if (e != cudaSuccess) {
			emu_check(false, "matvec %s %dx%d n=%d: launch returned %d", tr->name,
			          n_out, n_in, n, e);
			continue;
		}
		snprintf(what, sizeof(what), "matvec %s %dx%d n=%d%s vs exact", tr->name, n_out,
		         n_in, n, skew ? " (x unaligned)" : "");
		emu_close(what, yg, ref, 2e-5);
		snprintf(what, sizeof(what), "matvec %s %dx%d n=%d%s vs cpu", tr->name, n_out,
		         n_in, n, skew ? " (x unaligned)" : "");
		/* the CPU quantizes the activations for quantized weights */
		emu_close(what, yg, yc, quant ? 3e-2 : 2e-5 + 1e-4);
	}

	/* dequantized to halves: rows 2 .. n_out - 1, as the backend's tiles */
	const int r0 = 2, nr = n_out - 2;
	std::vector<uint16_t> h((size_t)nr * n_in, 0x7e00);
	cudaError_t e = emu::cuda_dequant_f16(0, (enum llm_dtype)type,
	                                      (const char *)w.t.data + r0 * w.rb, w.rb, n_in,
	                                      nr, h.data());
	int bad = 0;
	double worst = 0;
	for (size_t i = 0; i < h.size(); i++) {
		const float want = w.deq[(size_t)r0 * n_in + i];
		const float got = llm_f16_to_f32(h[i]);
		/* a half's rounding: 2^-11 relative, 2^-25 among subnormals */
		const double lim = fabs(want) * (1.0 / 2048 + 1e-6) + 3e-8;
		const double err = fabs((double)got - want);
		if (!(err <= lim))
			bad++;
		worst = err / lim > worst ? err / lim : worst;
	}
	emu_check(e == cudaSuccess && !bad, "dequant_f16 %s rows %d..%d of %d: %d of %zu "
	          "halves off the rounded weight (worst %.2g of the bound)", tr->name, r0,
	          n_out - 1, n_in, bad, h.size(), worst);

	/* embedding lookup: exactly the CPU's rows */
	const int32_t ids[7] = { 0, 5, 12, 5, 1, 12, n_out - 1 };
	vec rc((size_t)7 * n_in), rg((size_t)7 * n_in, NAN);
	cpu->ops->get_rows(cpu, &w.t, ids, 7, rc.data());
	e = emu::cuda_get_rows(0, (enum llm_dtype)type, w.t.data, w.rb, n_in, ids, 7,
	                       rg.data());
	snprintf(what, sizeof(what), "get_rows %s width %d", tr->name, n_in);
	if (e == cudaSuccess)
		emu_close(what, rg, rc, 1e-6);
	else
		emu_check(false, "%s: launch returned %d", what, e);
}

void emu_test_quant(void)
{
	unsigned seed = 42;
	for (int type : types) {
		const bool quant = llm_dtype_traits(type)->quantized;
		/* quantized: one and five super-blocks (40 units: lanes take two);
		 * float types also at a width that is no multiple of 32 */
		test_type(type, quant ? 256 : 100, 21, &seed);
		test_type(type, quant ? 1280 : 1312, 13, &seed);
	}
	float x[8] = { 0 }, y[8];
	emu_check(!emu::cuda_type_supported(LLM_Q8_1) &&
	          emu::cuda_matvec(0, LLM_Q8_1, x, 36, 32, 1, x, 1, y) == cudaErrorInvalidValue,
	          "q8_1 weights refused");
	emu_check(emu::cuda_matvec(0, LLM_F32, x, 4, 1, 1, x, CUDA_MV_MAX + 1, y) ==
	          cudaErrorInvalidValue, "matvec refuses %d rows", CUDA_MV_MAX + 1);
}
