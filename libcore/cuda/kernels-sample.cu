/*
 * kernels-sample.cu - the candidates of rows of logits (backend.h topk;
 * sampler.h llm_cands): per row, the k best ids by logit * scale, their
 * logits, the row's largest logit and two softmax sums.  One launch for
 * all rows, one thread block per row.
 *
 * The order is total: a ranks before b when its scaled value is larger,
 * or equal (as floats: -0 == +0) with the lower id; NaN counts as -inf.
 * The CPU's llm_cands_compute ranks the same way, and the products are
 * rounded as there (__fmul_rn: never fused into anything).
 *
 * Selection: the row is split into TOPK_THREADS subsets, subset t holding
 * the ids t, t + TOPK_THREADS, t + 2 TOPK_THREADS, ...  best[t] is the best
 * element of subset t that ranks after the last winner (all of it at
 * first).  Each round the best of the best[] is the next winner (it is the
 * best element after the previous winner, as every better one has won
 * already), and only the winner's subset changes: a warp rescans it for
 * its best element after the new winner.  Every other best[t] ranks after
 * the new winner already and stays what it was.  So k rounds cost one
 * pass over the row plus k rescans of one subset (n_vocab / TOPK_THREADS
 * elements, a warp's worth of loads each).
 *
 * Sums: max first (one pass, with the subset bests), then
 * sum exp((double)(l - max)) and sum exp((double)(l * scale - max *
 * scale)) in double, per thread then over the block.  They are not summed
 * in id order as the CPU sums, so they may differ from it in the last bits
 * (the sampler allows for that: see llm_sampler_sample_cands).
 */
#include <math.h>
#include <stdint.h>

#include "llmkit/backend.h"
#include "cuda/cuda-internal.h"

#define TOPK_THREADS 256
#define TOPK_WARPS (TOPK_THREADS / 32)
#define FULL_MASK 0xffffffffu

static_assert(LLM_TOPK_MAX == CUDA_TOPK_MAX, "the op's limit is the kernel's");
static_assert(TOPK_THREADS % 32 == 0 && TOPK_WARPS <= 32, "block of whole warps");

/* a ranks before b; id -1 is "none", after everything */
__device__ __forceinline__ bool tk_before(float av, int ai, float bv, int bi)
{
	if (ai < 0)
		return false;
	if (bi < 0)
		return true;
	return av > bv || (av == bv && ai < bi);
}

__device__ __forceinline__ float tk_key(float l, float scale)
{
	float s = __fmul_rn(l, scale);
	return s != s ? -INFINITY : s;
}

/* The best (v, id) over the warp, in every lane (a total order: the
 * butterfly gives each lane the same). */
__device__ __forceinline__ void warp_best(float &v, int &id)
{
	for (int o = 16; o > 0; o >>= 1) {
		float v2 = __shfl_xor_sync(FULL_MASK, v, o);
		int i2 = __shfl_xor_sync(FULL_MASK, id, o);
		if (tk_before(v2, i2, v, id)) {
			v = v2;
			id = i2;
		}
	}
}

__device__ __forceinline__ double warp_sum(double x)
{
	for (int o = 16; o > 0; o >>= 1)
		x += __shfl_xor_sync(FULL_MASK, x, o);
	return x;
}

__device__ __forceinline__ float warp_max(float x)
{
	for (int o = 16; o > 0; o >>= 1)
		x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, o));
	return x;
}

/*
 * args: rows (n) then the scales' bits (n).  Outputs: ids and vals (n x k),
 * st (n).  Launched with n blocks of TOPK_THREADS threads; k <= n_vocab.
 */
__global__ void topk_kernel(const float *logits, int n_vocab, const int32_t *args,
                            int n, int k, int32_t *ids, float *vals,
                            struct llm_topk_stat *st)
{
	__shared__ float best_v[TOPK_THREADS];
	__shared__ int best_i[TOPK_THREADS];
	__shared__ float red_v[TOPK_WARPS];
	__shared__ int red_i[TOPK_WARPS];
	__shared__ double red_a[TOPK_WARPS], red_b[TOPK_WARPS];
	__shared__ float row_max;

	const int row = blockIdx.x;
	const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
	const float *x = logits + (int64_t)args[row] * n_vocab;
	const float scale = __int_as_float(args[n + row]);

	/* pass 1: each subset's best, and the largest logit */
	float bv = 0.0f, mx = -INFINITY;
	int bi = -1;
	for (int i = t; i < n_vocab; i += TOPK_THREADS) {
		float l = x[i];
		mx = fmaxf(mx, l);
		float s = tk_key(l, scale);
		if (tk_before(s, i, bv, bi)) {
			bv = s;
			bi = i;
		}
	}
	best_v[t] = bv;
	best_i[t] = bi;
	mx = warp_max(mx);
	if (lane == 0)
		red_v[warp] = mx;
	__syncthreads();
	if (t == 0) {
		float m = red_v[0];
		for (int w = 1; w < TOPK_WARPS; w++)
			m = fmaxf(m, red_v[w]);
		row_max = m;
	}
	__syncthreads();
	mx = row_max;

	/* pass 2: the sums, with the float differences the CPU rounds */
	const float mxs = __fmul_rn(mx, scale);
	double sa = 0, sb = 0;
	for (int i = t; i < n_vocab; i += TOPK_THREADS) {
		float l = x[i];
		sa += exp((double)__fsub_rn(l, mx));
		if (scale != 1.0f)
			sb += exp((double)__fsub_rn(__fmul_rn(l, scale), mxs));
	}
	sa = warp_sum(sa);
	sb = warp_sum(sb);
	if (lane == 0) {
		red_a[warp] = sa;
		red_b[warp] = sb;
	}
	__syncthreads();
	if (t == 0) {
		double a = 0, b = 0;
		for (int w = 0; w < TOPK_WARPS; w++) {
			a += red_a[w];
			b += red_b[w];
		}
		st[row].max = mx;
		st[row].sum = a;
		st[row].sum_scaled = scale != 1.0f ? b : a;
	}

	/* k rounds: the best of the subset bests wins, its subset is rescanned
	 * (red_v/red_i are free again: thread 0 read them before the last
	 * barrier, and they are written next after the one below) */
	int32_t *out_ids = ids + (int64_t)row * k;
	float *out_vals = vals + (int64_t)row * k;
	for (int r = 0; r < k; r++) {
		float v = best_v[t];
		int id = best_i[t];
		warp_best(v, id);
		if (lane == 0) {
			red_v[warp] = v;
			red_i[warp] = id;
		}
		__syncthreads();
		if (warp == 0) {
			v = lane < TOPK_WARPS ? red_v[lane] : 0.0f;
			id = lane < TOPK_WARPS ? red_i[lane] : -1;
			warp_best(v, id);   /* the winner, in every lane of warp 0 */
			if (lane == 0) {
				out_ids[r] = id;
				out_vals[r] = id >= 0 ? x[id] : -INFINITY;
			}
			if (id >= 0) {
				/* the winner's subset, lane j reading its elements
				 * j, j + 32, ... (subset indices): the best of it
				 * that ranks after the winner */
				const int sub = id % TOPK_THREADS;
				float nv = 0.0f;
				int ni = -1;
				for (int64_t i = sub + (int64_t)lane * TOPK_THREADS; i < n_vocab;
				     i += 32 * TOPK_THREADS) {
					float s = tk_key(x[i], scale);
					if (tk_before(v, id, s, (int)i) &&
					    tk_before(s, (int)i, nv, ni)) {
						nv = s;
						ni = (int)i;
					}
				}
				warp_best(nv, ni);
				if (lane == 0) {
					best_v[sub] = nv;
					best_i[sub] = ni;
				}
			}
		}
		__syncthreads();
	}
}

cudaError_t cuda_topk(cudaStream_t s, const float *logits, int n_vocab,
                      const int32_t *args, int n, int k, int32_t *ids,
                      float *vals, struct llm_topk_stat *st)
{
	if (n < 1)
		return cudaSuccess;
	if (k < 1 || k > CUDA_TOPK_MAX || k > n_vocab)
		return cudaErrorInvalidValue;
	topk_kernel<<<n, TOPK_THREADS, 0, s>>>(logits, n_vocab, args, n, k, ids, vals,
	                                        st);
	return cudaGetLastError();
}
