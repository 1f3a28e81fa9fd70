/*
 * topk-emu - libcore/cuda/kernels-sample.cu's kernel run on the host (a
 * thread per CUDA thread, cuda_runtime.h here) against the CPU backend's
 * candidates (llm_cands_compute): the same ids and logits exactly, the
 * same largest logit, the sums within rounding.  Rows of several shapes
 * (sharp, flat, many ties, all equal, signed zeros, NaN), sizes around
 * the block's 256 and k from 1 to 64.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <vector>

#include "cuda_runtime.h"
#include "llmkit/backend.h"
#include "llmkit/sampler.h"

#include KERNELS

dim3 blockIdx, blockDim;
thread_local dim3 threadIdx;
pthread_barrier_t emu_block_bar, emu_warp_bar[32];
uint64_t emu_warp_slot[32][32];

struct launch {
	const float *logits;
	int n_vocab;
	const int32_t *args;
	int n, k;
	int32_t *ids;
	float *vals;
	struct llm_topk_stat *st;
	unsigned t;
};

static void *run(void *p)
{
	launch *a = (launch *)p;
	threadIdx = dim3{ a->t, 0, 0 };
	topk_kernel(a->logits, a->n_vocab, a->args, a->n, a->k, a->ids, a->vals, a->st);
	return NULL;
}

/* n blocks of TOPK_THREADS threads, one block after the other */
static void emu_topk(const float *logits, int n_vocab, const int32_t *args, int n,
                     int k, int32_t *ids, float *vals, struct llm_topk_stat *st)
{
	std::vector<pthread_t> th(TOPK_THREADS);
	std::vector<launch> la(TOPK_THREADS);
	blockDim = dim3{ TOPK_THREADS, 1, 1 };
	for (int b = 0; b < n; b++) {
		blockIdx = dim3{ (unsigned)b, 0, 0 };
		pthread_barrier_init(&emu_block_bar, NULL, TOPK_THREADS);
		for (int w = 0; w < TOPK_WARPS; w++)
			pthread_barrier_init(&emu_warp_bar[w], NULL, 32);
		for (unsigned t = 0; t < TOPK_THREADS; t++) {
			la[t] = launch{ logits, n_vocab, args, n, k, ids, vals, st, t };
			if (pthread_create(&th[t], NULL, run, &la[t])) {
				fprintf(stderr, "emu: pthread_create failed\n");
				exit(1);
			}
		}
		for (unsigned t = 0; t < TOPK_THREADS; t++)
			pthread_join(th[t], NULL);
		pthread_barrier_destroy(&emu_block_bar);
		for (int w = 0; w < TOPK_WARPS; w++)
			pthread_barrier_destroy(&emu_warp_bar[w]);
	}
}

static uint64_t rng = 12345;

static double urand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (rng >> 11) * 0x1.0p-53;
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

int main(void)
{
	/* (a thread per CUDA thread and a barrier per shuffle: slow, so
	 * few rows; sizes below and above a block's 256 threads, and above 32 x 256,
	 * where a warp rescanning a subset goes round twice) */
	static const int nvs[] = { 5, 257, 9001 };
	static const float scales[] = { 1.0f, 1.0f / 0.7f, 20.0f };
	static const int32_t rows[] = { 3, 1 };
	const int R = 4, N = 2;
	int fails = 0, checks = 0;

	for (int a = 0; a < (int)(sizeof(nvs) / sizeof(nvs[0])); a++) {
		int nv = nvs[a];
		std::vector<float> lg((size_t)R * nv);
		for (int shape = 0; shape < 6; shape++) {
			for (int r = 0; r < R; r++)
				fill_row(&lg[(size_t)r * nv], nv, shape + r);
			int kmax = nv < 64 ? nv : 64;
			int ks[2] = { nv < 13 ? nv : 13, kmax };
			for (int ki = 0; ki < 2; ki++) {
				int k = ks[ki];
				int32_t args[2 * N];
				for (int i = 0; i < N; i++) {
					float sc = scales[(shape + i + ki) % 3];
					args[i] = rows[i];
					memcpy(&args[N + i], &sc, sizeof(float));
				}
				std::vector<int32_t> ig(N * k), ic(k);
				std::vector<float> vg(N * k), vc(k);
				std::vector<struct llm_topk_stat> st(N);
				emu_topk(lg.data(), nv, args, N, k, ig.data(), vg.data(), st.data());
				for (int i = 0; i < N; i++) {
					float sc, mx;
					double s1, s2;
					memcpy(&sc, &args[N + i], sizeof(float));
					llm_cands_compute(&lg[(size_t)rows[i] * nv], nv, sc, k, true,
					                  ic.data(), vc.data(), &mx, &s1, &s2);
					checks++;
					bool ok = (st[i].max == mx || (isnan(mx) && isnan(st[i].max))) &&
					          close_rel(st[i].sum, s1) && close_rel(st[i].sum_scaled, s2);
					for (int j = 0; j < k && ok; j++)
						ok = ig[i * k + j] == ic[j] &&
						     !memcmp(&vg[i * k + j], &vc[j], sizeof(float));
					if (!ok) {
						fails++;
						fprintf(stderr, "FAIL: n_vocab %d shape %d k %d row %d "
						        "(scale %g): first ids %d %d, CPU %d %d; max %g/%g "
						        "sums %.17g/%.17g %.17g/%.17g\n", nv, shape, k, i,
						        sc, ig[i * k], k > 1 ? ig[i * k + 1] : -1, ic[0],
						        k > 1 ? ic[1] : -1, st[i].max, mx, st[i].sum, s1,
						        st[i].sum_scaled, s2);
					}
				}
			}
		}
	}
	printf("%s: topk kernel on the host, %d rows against the CPU's, %d failed\n",
	       fails ? "FAIL" : "PASS", checks, fails);
	return fails ? 1 : 0;
}
