/*
 * kernels-lora.cu - LoRA deltas over segments of token rows (backend.h
 * lora_seg; the SGMV idea): one shrink and one expand launch cover every
 * segment of a pass, whatever its rank and however its rows are spread.
 *
 * Work items (cuda-internal.h) are up to CUDA_LORA_TOK rows of one
 * segment; one thread block per item.
 *
 *   shrink: each warp takes ranks k = warp, warp + WARPS, ... of the item's
 *           segment; its lanes stride over the n_in columns, read a[k][j]
 *           once for all the item's rows and sum x[row][j] a[k][j] per row,
 *           then reduce across the warp.  t = scale * sum.
 *   expand: the item's t rows (n x rank) into shared memory; one thread per
 *           output o (blockIdx.y tiles n_out) sums t[i][k] b[o][k] over k
 *           for each row i and adds it to y[row i][o].
 *
 * Every y element an expand launch touches belongs to one item row (the
 * caller never puts two items over the same row in one launch), so it is
 * read and written by one thread: no atomics, and the sums are in a fixed
 * order (bit-reproducible run to run).
 */
#include "cuda/cuda-internal.h"

#define SHRINK_THREADS 256
#define SHRINK_WARPS (SHRINK_THREADS / 32)
#define EXPAND_THREADS 256

/* Row i (0 <= i < n of the item's segment) of segment g. */
static __device__ __forceinline__ int seg_row(const struct cuda_lora_seg &g,
                                              const int32_t *rows, int i)
{
	return g.rows >= 0 ? rows[g.rows + i] : g.t0 + i;
}

static __global__ void lora_shrink_kernel(const float *x, int n_in,
                                          const struct cuda_lora_seg *segs,
                                          const int32_t *rows,
                                          const struct cuda_lora_item *items,
                                          float *t)
{
	const struct cuda_lora_item it = items[blockIdx.x];
	const struct cuda_lora_seg g = segs[it.seg];
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	const float *xr[CUDA_LORA_TOK];

#pragma unroll
	for (int i = 0; i < CUDA_LORA_TOK; i++)
		xr[i] = i < it.n ? x + (int64_t)seg_row(g, rows, it.i0 + i) * n_in : x;
	/* the item's rows of t: row i, rank k at tr[i * rank + k] */
	float *tr = t + g.toff + (int64_t)it.i0 * g.rank;

	for (int k = warp; k < g.rank; k += SHRINK_WARPS) {
		const float *ak = g.a + (int64_t)k * n_in;
		float acc[CUDA_LORA_TOK];
#pragma unroll
		for (int i = 0; i < CUDA_LORA_TOK; i++)
			acc[i] = 0.0f;
		for (int j = lane; j < n_in; j += 32) {
			const float av = ak[j];
#pragma unroll
			for (int i = 0; i < CUDA_LORA_TOK; i++)
				if (i < it.n)
					acc[i] += av * xr[i][j];
		}
		/* every lane of the warp gets here (k depends on the warp only) */
#pragma unroll
		for (int i = 0; i < CUDA_LORA_TOK; i++) {
			float v = acc[i];
#pragma unroll
			for (int o = 16; o > 0; o >>= 1)
				v += __shfl_xor_sync(0xffffffffu, v, o);
			acc[i] = v;
		}
		if (lane == 0) {
#pragma unroll
			for (int i = 0; i < CUDA_LORA_TOK; i++)
				if (i < it.n)
					tr[(int64_t)i * g.rank + k] = g.scale * acc[i];
		}
	}
}

static __global__ void lora_expand_kernel(const float *t, float *y, int n_out,
                                          const struct cuda_lora_seg *segs,
                                          const int32_t *rows,
                                          const struct cuda_lora_item *items)
{
	extern __shared__ float ts[];  /* (it.n x rank) */
	const struct cuda_lora_item it = items[blockIdx.x];
	const struct cuda_lora_seg g = segs[it.seg];
	const float *tr = t + g.toff + (int64_t)it.i0 * g.rank;
	const int nt = it.n * g.rank;

	for (int q = threadIdx.x; q < nt; q += EXPAND_THREADS)
		ts[q] = tr[q];
	__syncthreads();   /* no thread has returned before this barrier */

	const int o = blockIdx.y * EXPAND_THREADS + threadIdx.x;
	if (o >= n_out)
		return;
	const float *bo = g.b + (int64_t)o * g.rank;
	float acc[CUDA_LORA_TOK];
#pragma unroll
	for (int i = 0; i < CUDA_LORA_TOK; i++)
		acc[i] = 0.0f;
	for (int k = 0; k < g.rank; k++) {
		const float bv = bo[k];
#pragma unroll
		for (int i = 0; i < CUDA_LORA_TOK; i++)
			if (i < it.n)
				acc[i] += ts[i * g.rank + k] * bv;
	}
#pragma unroll
	for (int i = 0; i < CUDA_LORA_TOK; i++)
		if (i < it.n)
			y[(int64_t)seg_row(g, rows, it.i0 + i) * n_out + o] += acc[i];
}

cudaError_t cuda_lora_shrink(cudaStream_t s, const float *x, int n_in,
                             const struct cuda_lora_seg *segs,
                             const int32_t *rows,
                             const struct cuda_lora_item *items, int n_items,
                             float *t)
{
	if (n_items < 1 || n_in < 1)
		return cudaSuccess;
	lora_shrink_kernel<<<n_items, SHRINK_THREADS, 0, s>>>(x, n_in, segs, rows,
	                                                      items, t);
	return cudaGetLastError();
}

cudaError_t cuda_lora_expand(cudaStream_t s, const float *t, float *y, int n_out,
                             const struct cuda_lora_seg *segs,
                             const int32_t *rows,
                             const struct cuda_lora_item *items, int n_items,
                             int max_rank)
{
	if (n_items < 1 || n_out < 1 || max_rank < 1)
		return cudaSuccess;
	if (max_rank > CUDA_LORA_MAX_RANK)
		return cudaErrorInvalidValue;
	const unsigned tiles = (unsigned)((n_out + EXPAND_THREADS - 1) / EXPAND_THREADS);
	if (tiles > 65535u)
		return cudaErrorInvalidValue;
	const size_t shm = (size_t)CUDA_LORA_TOK * max_rank * sizeof(float);
	lora_expand_kernel<<<dim3((unsigned)n_items, tiles), EXPAND_THREADS, shm, s>>>(
		t, y, n_out, segs, rows, items);
	return cudaGetLastError();
}
