/*
 * emu-sample - the candidates kernel of libcore/cuda/kernels-sample.cu
 * (cuda_topk: per row the k best ids by logit * scale, their logits, the
 * row's largest logit and two softmax sums) run on the host by the
 * emulator, against the CPU backend's topk op on the same rows: the same
 * ids and logits bit for bit, the same largest logit, the sums within
 * 1e-12 relative (the kernel sums per thread, then over the block; the CPU
 * in id order).  Rows of six shapes (sharp, flat, many ties, all equal,
 * signed zeros, NaN every 97th), sizes below and above the block's 256
 * threads and above 32 x 256 (a warp rescanning a subset goes round more
 * than once), k of 13 and 64, three scales; launches of two rows picked
 * out of four, out of order.  Run by emu-main.cc.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <vector>

#include "llmkit/backend.h"
#include "cuda/cuda-internal.h"
#include "emu-check.h"

namespace emu {
#include "kernels-sample.emu.cc"
}

/* xorshift, normal deviates by Box-Muller */
static uint64_t rng = 12345;

static double urand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) * 0x1.0p-53;
}

static void fill_row(float *l, int n, int shape)
{
	for (int i = 0; i < n; i++) {
		double x = sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand());
		switch (shape % 6) {
		case 0: l[i] = (float)(x * 8); break;
		case 1: l[i] = (float)(x * 0.3); break;
		case 2: l[i] = (float)(floor(x * 4) / 4); break;
		case 3: l[i] = -1.25f; break;
		case 4: l[i] = i % 3 == 0 ? 0.0f : i % 3 == 1 ? -0.0f : (float)x; break;
		default: l[i] = i % 97 == 5 ? NAN : (float)(x * 2); break;
		}
	}
}

static bool close_rel(double a, double b)
{
	return (isnan(a) && isnan(b)) || fabs(a - b) <= 1e-12 * fabs(b);
}

void emu_test_sample(void)
{
	static const int nvs[] = { 5, 257, 9001 };
	static const float scales[] = { 1.0f, 1.0f / 0.7f, 20.0f };
	static const int32_t rows[] = { 3, 1 };
	const int R = 4, N = 2;
	rng = 12345;

	for (int nv : nvs) {
		std::vector<float> lg((size_t)R * nv);
		for (int shape = 0; shape < 6; shape++) {
			for (int r = 0; r < R; r++)
				fill_row(&lg[(size_t)r * nv], nv, shape + r);
			const int ks[2] = { nv < 13 ? nv : 13, nv < 64 ? nv : 64 };
			for (int ki = 0; ki < 2; ki++) {
				const int k = ks[ki];
				int32_t args[2 * N];
				float sc[N];
				for (int i = 0; i < N; i++) {
					sc[i] = scales[(shape + i + ki) % 3];
					args[i] = rows[i];
					memcpy(&args[N + i], &sc[i], sizeof(float));
				}
				/* outputs poisoned: a slot the kernel leaves shows */
				std::vector<int32_t> ig(N * k, -7), ic(N * k);
				std::vector<float> vg(N * k, NAN), vc(N * k);
				std::vector<llm_topk_stat> sg(N, llm_topk_stat{ NAN, NAN, NAN }), scpu(N);
				cudaError_t e = emu::cuda_topk(0, lg.data(), nv, args, N, k, ig.data(),
				                               vg.data(), sg.data());
				emu_cpu->ops->topk(emu_cpu, lg.data(), nv, rows, sc, NULL, N, k,
				                   ic.data(), vc.data(), scpu.data());
				for (int i = 0; i < N; i++) {
					const llm_topk_stat &g = sg[i], &c = scpu[i];
					int bad = -1;
					for (int j = 0; j < k && bad < 0; j++)
						if (ig[i * k + j] != ic[i * k + j] ||
						    memcmp(&vg[i * k + j], &vc[i * k + j], sizeof(float)))
							bad = j;
					bool mx_ok = g.max == c.max || (isnan(g.max) && isnan(c.max));
					bool s_ok = close_rel(g.sum, c.sum) &&
					            close_rel(g.sum_scaled, c.sum_scaled);
					const bool ok = e == cudaSuccess && bad < 0 && mx_ok && s_ok;
					const int j = bad < 0 ? 0 : bad;
					char what[400];
					int w = snprintf(what, sizeof(what), "topk n_vocab %d shape %d k %d "
					                 "row %d scale %g: ids, logits, max, sums", nv,
					                 shape, k, rows[i], sc[i]);
					if (!ok)
						snprintf(what + w, sizeof(what) - w, "%s; at %d: id %d %a, "
						         "cpu %d %a; max %g/%g; sums %.17g/%.17g "
						         "%.17g/%.17g", e == cudaSuccess ? "" :
						         " (launch error)", j, ig[i * k + j],
						         vg[i * k + j], ic[i * k + j], vc[i * k + j],
						         g.max, c.max, g.sum, c.sum, g.sum_scaled,
						         c.sum_scaled);
					emu_check(ok, "%s", what);
				}
			}
		}
	}
	/* the launcher's limits */
	{
		float l[4] = { 1, 2, 3, 4 };
		int32_t args[2] = { 0, 0x3f800000 }, id[65];
		float v[65];
		llm_topk_stat st;
		emu_check(emu::cuda_topk(0, l, 4, args, 1, 5, id, v, &st) == cudaErrorInvalidValue &&
		          emu::cuda_topk(0, l, 4, args, 1, 0, id, v, &st) == cudaErrorInvalidValue &&
		          emu::cuda_topk(0, l, 4, args, 0, 1, id, v, &st) == cudaSuccess,
		          "topk refuses k > n_vocab and k < 1, takes no rows");
	}
}
