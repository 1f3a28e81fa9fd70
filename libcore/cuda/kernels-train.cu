/*
 * kernels-train.cu - the training ops' kernels (backend.h): the backward of
 * rmsnorm and rope, attention over whole training sequences and its
 * backward, swiglu forward and backward, cross entropy, AdamW.  The GEMMs
 * and the weight matrices' products are cuBLAS (backend-cuda.cu).
 *
 * Determinism: every output element is written by exactly one thread, and
 * every sum is taken in a fixed order - a thread's own loop in index
 * order, then a tree over the block's threads whose shape depends only on
 * the block size.  No atomics.  So the same device and inputs give the
 * same bits on every run (checkpoint/resume relies on it).
 *
 * The kernels follow the CPU backend's loops (libcore/cpu/backward.c)
 * formula by formula; sums run in another order, so results agree with
 * the CPU's to rounding, not bit for bit.
 */
#include <math.h>

#include "cuda/cuda-internal.h"

static unsigned grid_of(int64_t n, int per)
{
	return (unsigned)((n + per - 1) / per);
}

/* Threads of the block-per-row kernels (a power of two: block_sum). */
#define ROW_THREADS 256
#define ATT_THREADS 128

/* Sum of v over the block's threads, every thread gets it; sh holds
 * blockDim.x values.  A fixed tree: the same bits every run. */
template <typename T>
static __device__ T block_sum(T v, T *sh)
{
	sh[threadIdx.x] = v;
	__syncthreads();
	for (unsigned o = blockDim.x / 2; o > 0; o >>= 1) {
		if (threadIdx.x < o)
			sh[threadIdx.x] += sh[threadIdx.x + o];
		__syncthreads();
	}
	T r = sh[0];
	__syncthreads();   /* sh may be reused at once */
	return r;
}

static __device__ float block_max(float v, float *sh)
{
	sh[threadIdx.x] = v;
	__syncthreads();
	for (unsigned o = blockDim.x / 2; o > 0; o >>= 1) {
		if (threadIdx.x < o)
			sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + o]);
		__syncthreads();
	}
	float r = sh[0];
	__syncthreads();
	return r;
}

/* ---------------------------------------------------------------- rmsnorm */

/* One block per row: dx += r w dy - x c, with r = 1/rms(x) and
 * c = (dy.w.x) r^3 / dim; r kept for the weight's gradient. */
static __global__ void rms_bwd_rows_kernel(const float *x, const float *w,
                                           const float *dy, float *dx, float *r,
                                           int dim, float eps)
{
	__shared__ double sh[ROW_THREADS];
	const int64_t i = blockIdx.x;
	const float *xr = x + i * dim, *dyr = dy + i * dim;
	float *dxr = dx + i * dim;
	double ss = 0, dot = 0;
	for (int j = threadIdx.x; j < dim; j += ROW_THREADS) {
		ss += (double)xr[j] * xr[j];
		dot += (double)dyr[j] * w[j] * xr[j];
	}
	ss = block_sum(ss, sh);
	dot = block_sum(dot, sh);
	const float rr = 1.0f / sqrtf((float)(ss / dim) + eps);
	const float c = (float)(dot * rr * rr * rr / dim);
	if (threadIdx.x == 0)
		r[i] = rr;
	for (int j = threadIdx.x; j < dim; j += ROW_THREADS)
		dxr[j] += rr * w[j] * dyr[j] - xr[j] * c;
}

/* One thread per column: dw[j] += sum over rows of dy x r, rows in order. */
static __global__ void rms_bwd_cols_kernel(const float *x, const float *dy,
                                           const float *r, float *dw, int n,
                                           int dim)
{
	const int j = blockIdx.x * blockDim.x + threadIdx.x;
	if (j >= dim)
		return;
	double s = 0;
	for (int64_t i = 0; i < n; i++)
		s += (double)dy[i * dim + j] * x[i * dim + j] * r[i];
	dw[j] += (float)s;
}

cudaError_t cuda_rmsnorm_bwd(cudaStream_t s, const float *x, const float *w,
                             const float *dy, float *dx, float *dw, float *r,
                             int n, int dim, float eps)
{
	if (n < 1 || dim < 1)
		return cudaSuccess;
	rms_bwd_rows_kernel<<<n, ROW_THREADS, 0, s>>>(x, w, dy, dx, r, dim, eps);
	if (dw)
		rms_bwd_cols_kernel<<<grid_of(dim, 128), 128, 0, s>>>(x, dy, r, dw, n, dim);
	return cudaGetLastError();
}

/* ---------------------------------------------------------------- rope */

/* The forward's rotation (kernels-ops.cu) with the sine negated: its
 * transpose.  One thread per (token, head, rotated pair). */
static __global__ void rope_bwd_kernel(float *x, const int32_t *pos, int n,
                                       int n_head, int head_dim, int half,
                                       int neox, const float *inv_freq,
                                       float mscale)
{
	const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (idx >= (int64_t)n * n_head * half)
		return;
	const int k = (int)(idx % half);
	const int64_t ih = idx / half;       /* token * n_head + head */
	const int i = (int)(ih / n_head);
	const float th = (float)pos[i] * inv_freq[k];
	const float c = cosf(th) * mscale, sn = -sinf(th) * mscale;
	float *v = x + ih * head_dim;
	const int j0 = neox ? k : 2 * k, j1 = neox ? k + half : 2 * k + 1;
	const float v0 = v[j0], v1 = v[j1];
	v[j0] = v0 * c - v1 * sn;
	v[j1] = v0 * sn + v1 * c;
}

cudaError_t cuda_rope_bwd(cudaStream_t s, float *x, const int32_t *pos, int n,
                          int n_head, int head_dim, int n_rot, int kind,
                          const float *inv_freq, float mscale)
{
	const int half = n_rot / 2;
	const int64_t total = (int64_t)n * n_head * half;
	if (total < 1)
		return cudaSuccess;
	rope_bwd_kernel<<<grid_of(total, 256), 256, 0, s>>>(x, pos, n, n_head, head_dim,
	                                                    half, kind, inv_freq, mscale);
	return cudaGetLastError();
}

/* ---------------------------------------------------------------- attention */

/*
 * Layout (llm_attn_train): row = s * T + i; q row stride n_head * hd, head
 * h at h * hd; k and v row stride n_head_kv * hd, KV head h / group.  Row i
 * sees keys j in [start[row], i] of its own sequence.
 */

/* Forward: one block per (sequence, head, query row).  Shared memory: the
 * query (hd) and the row's scores (T). */
static __global__ void attn_fwd_kernel(struct cuda_attn_train_args a)
{
	extern __shared__ float smem[];
	__shared__ double shd[ATT_THREADS];
	__shared__ float shf[ATT_THREADS];
	const int T = a.seq_len, hd = a.head_dim;
	const int i = (int)(blockIdx.x % T);
	const int64_t sh_ = blockIdx.x / T;
	const int h = (int)(sh_ % a.n_head);
	const int64_t s = sh_ / a.n_head;
	const int kvh = h / (a.n_head / a.n_head_kv);
	const int qst = a.n_head * hd, kst = a.n_head_kv * hd;
	const int64_t row = s * T + i;
	const float *kb = a.k + s * T * kst + kvh * hd;
	const float *vb = a.v + s * T * kst + kvh * hd;
	float *qs = smem, *S = smem + hd;
	const int j0 = a.start[row];

	for (int d = threadIdx.x; d < hd; d += ATT_THREADS)
		qs[d] = a.q[row * qst + h * hd + d];
	__syncthreads();
	float mx = -INFINITY;
	for (int j = j0 + threadIdx.x; j <= i; j += ATT_THREADS) {
		const float *kj = kb + (int64_t)j * kst;
		float acc = 0;
		for (int d = 0; d < hd; d++)
			acc += qs[d] * kj[d];
		acc *= a.scale;
		S[j] = acc;
		mx = fmaxf(mx, acc);
	}
	mx = block_max(mx, shf);
	double sum = 0;
	for (int j = j0 + threadIdx.x; j <= i; j += ATT_THREADS) {
		const float e = expf(S[j] - mx);
		S[j] = e;
		sum += e;
	}
	sum = block_sum(sum, shd);   /* its barriers publish S */
	const float inv = (float)(1.0 / sum);
	if (threadIdx.x == 0)
		a.lse[row * a.n_head + h] = mx + (float)log(sum);
	for (int d = threadIdx.x; d < hd; d += ATT_THREADS) {
		float o = 0;
		for (int j = j0; j <= i; j++)
			o += S[j] * inv * vb[(int64_t)j * kst + d];
		a.out[row * qst + h * hd + d] = o;
	}
}

/* D[row * n_head + h] = dO . O of that row and head. */
static __global__ void attn_d_kernel(struct cuda_attn_train_args a)
{
	const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	const int64_t n = (int64_t)a.n_seq * a.seq_len;
	if (idx >= n * a.n_head)
		return;
	const int64_t row = idx / a.n_head;
	const int h = (int)(idx % a.n_head), hd = a.head_dim;
	const float *o = a.out + row * a.n_head * hd + h * hd;
	const float *dO = a.dout + row * a.n_head * hd + h * hd;
	float D = 0;
	for (int d = 0; d < hd; d++)
		D += dO[d] * o[d];
	a.D[idx] = D;
}

/* dQ: one block per (sequence, head, query row i).  dS_ij = P_ij (dO_i.V_j
 * - D_i) over the row's window, then dQ_i = scale sum_j dS_ij K_j. */
static __global__ void attn_dq_kernel(struct cuda_attn_train_args a)
{
	extern __shared__ float smem[];
	const int T = a.seq_len, hd = a.head_dim;
	const int i = (int)(blockIdx.x % T);
	const int64_t sh_ = blockIdx.x / T;
	const int h = (int)(sh_ % a.n_head);
	const int64_t s = sh_ / a.n_head;
	const int kvh = h / (a.n_head / a.n_head_kv);
	const int qst = a.n_head * hd, kst = a.n_head_kv * hd;
	const int64_t row = s * T + i;
	const float *kb = a.k + s * T * kst + kvh * hd;
	const float *vb = a.v + s * T * kst + kvh * hd;
	float *qs = smem, *dos = smem + hd, *S = smem + 2 * hd;
	const int j0 = a.start[row];
	const float l = a.lse[row * a.n_head + h], Di = a.D[row * a.n_head + h];

	for (int d = threadIdx.x; d < hd; d += ATT_THREADS) {
		qs[d] = a.q[row * qst + h * hd + d];
		dos[d] = a.dout[row * qst + h * hd + d];
	}
	__syncthreads();
	for (int j = j0 + threadIdx.x; j <= i; j += ATT_THREADS) {
		const float *kj = kb + (int64_t)j * kst, *vj = vb + (int64_t)j * kst;
		float sc = 0, dp = 0;
		for (int d = 0; d < hd; d++) {
			sc += qs[d] * kj[d];
			dp += dos[d] * vj[d];
		}
		const float p = expf(sc * a.scale - l);
		S[j] = p * (dp - Di);
	}
	__syncthreads();
	for (int d = threadIdx.x; d < hd; d += ATT_THREADS) {
		float acc = 0;
		for (int j = j0; j <= i; j++)
			acc += S[j] * kb[(int64_t)j * kst + d];
		a.dq[row * qst + h * hd + d] = a.scale * acc;
	}
}

/* dK, dV: one block per (sequence, KV head, key row j).  The query rows
 * that see key j are i in [j, T) with start[i] <= j; the heads of the
 * group add in order: dV_j = sum_g sum_i P_ij dO_i, dK_j = sum_g scale
 * sum_i dS_ij Q_i.  Shared memory: k_j, v_j, the two sums (hd each), and
 * P and dS of the current head (T each). */
static __global__ void attn_dkv_kernel(struct cuda_attn_train_args a)
{
	extern __shared__ float smem[];
	const int T = a.seq_len, hd = a.head_dim;
	const int group = a.n_head / a.n_head_kv;
	const int j = (int)(blockIdx.x % T);
	const int64_t sk = blockIdx.x / T;
	const int kvh = (int)(sk % a.n_head_kv);
	const int64_t s = sk / a.n_head_kv;
	const int qst = a.n_head * hd, kst = a.n_head_kv * hd;
	const int64_t krow = s * T + j;
	float *ks = smem, *vs = smem + hd, *dks = smem + 2 * hd, *dvs = smem + 3 * hd;
	float *P = smem + 4 * hd, *dS = P + T;

	for (int d = threadIdx.x; d < hd; d += ATT_THREADS) {
		ks[d] = a.k[krow * kst + kvh * hd + d];
		vs[d] = a.v[krow * kst + kvh * hd + d];
		dks[d] = 0;
		dvs[d] = 0;
	}
	__syncthreads();
	for (int g = 0; g < group; g++) {
		const int h = kvh * group + g;
		for (int i = j + threadIdx.x; i < T; i += ATT_THREADS) {
			const int64_t row = s * T + i;
			if (a.start[row] > j) {
				P[i] = 0;
				dS[i] = 0;
				continue;
			}
			const float *qi = a.q + row * qst + h * hd;
			const float *doi = a.dout + row * qst + h * hd;
			float sc = 0, dp = 0;
			for (int d = 0; d < hd; d++) {
				sc += qi[d] * ks[d];
				dp += doi[d] * vs[d];
			}
			const float p = expf(sc * a.scale - a.lse[row * a.n_head + h]);
			P[i] = p;
			dS[i] = p * (dp - a.D[row * a.n_head + h]);
		}
		__syncthreads();
		for (int d = threadIdx.x; d < hd; d += ATT_THREADS) {
			float av = 0, ak = 0;
			for (int i = j; i < T; i++) {
				const int64_t row = s * T + i;
				av += P[i] * a.dout[row * qst + h * hd + d];
				ak += dS[i] * a.q[row * qst + h * hd + d];
			}
			dvs[d] += av;
			dks[d] += a.scale * ak;
		}
		__syncthreads();   /* P and dS are the next head's */
	}
	for (int d = threadIdx.x; d < hd; d += ATT_THREADS) {
		a.dk[krow * kst + kvh * hd + d] = dks[d];
		a.dv[krow * kst + kvh * hd + d] = dvs[d];
	}
}

/* Dynamic shared memory past the default 48 KiB must be asked for per
 * kernel (long sequences; the GPU may not have it: the launch's error). */
static cudaError_t shared_fits(void (*kernel)(struct cuda_attn_train_args),
                               size_t bytes)
{
	if (bytes <= 48u * 1024 - 2048)   /* the kernels' static arrays */
		return cudaSuccess;
	return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
	                            (int)bytes);
}

bool cuda_attn_train_fits(int seq_len, int head_dim)
{
	return seq_len >= 1 && head_dim >= 1 && head_dim <= CUDA_ATTN_MAX_HD &&
	       seq_len <= CUDA_ATTN_TRAIN_MAX_T;
}

cudaError_t cuda_attn_train(cudaStream_t s, const struct cuda_attn_train_args *a)
{
	const int64_t blocks = (int64_t)a->n_seq * a->n_head * a->seq_len;
	if (blocks < 1)
		return cudaSuccess;
	if (!cuda_attn_train_fits(a->seq_len, a->head_dim))
		return cudaErrorInvalidValue;
	const size_t shm = ((size_t)a->head_dim + a->seq_len) * sizeof(float);
	cudaError_t e = shared_fits(attn_fwd_kernel, shm);
	if (e != cudaSuccess)
		return e;
	attn_fwd_kernel<<<(unsigned)blocks, ATT_THREADS, shm, s>>>(*a);
	return cudaGetLastError();
}

cudaError_t cuda_attn_train_bwd(cudaStream_t s, const struct cuda_attn_train_args *a)
{
	const int64_t n = (int64_t)a->n_seq * a->seq_len;
	const int64_t qblocks = n * a->n_head, kblocks = n * a->n_head_kv;
	if (qblocks < 1)
		return cudaSuccess;
	if (!cuda_attn_train_fits(a->seq_len, a->head_dim))
		return cudaErrorInvalidValue;
	const size_t shq = (2 * (size_t)a->head_dim + a->seq_len) * sizeof(float);
	const size_t shk = (4 * (size_t)a->head_dim + 2 * (size_t)a->seq_len) *
	                   sizeof(float);
	cudaError_t e = shared_fits(attn_dq_kernel, shq);
	if (e == cudaSuccess)
		e = shared_fits(attn_dkv_kernel, shk);
	if (e != cudaSuccess)
		return e;
	attn_d_kernel<<<grid_of(qblocks, 256), 256, 0, s>>>(*a);
	attn_dq_kernel<<<(unsigned)qblocks, ATT_THREADS, shq, s>>>(*a);
	attn_dkv_kernel<<<(unsigned)kblocks, ATT_THREADS, shk, s>>>(*a);
	return cudaGetLastError();
}

/* ---------------------------------------------------------------- swiglu */

static __global__ void swiglu_fwd_kernel(const float *g, const float *u, float *h,
                                         int64_t n)
{
	const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		const float v = g[i];
		h[i] = v / (1.0f + expf(-v)) * u[i];
	}
}

static __global__ void swiglu_bwd_kernel(const float *g, const float *u,
                                         const float *dh, float *dg, float *du,
                                         int64_t n)
{
	const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		const float gv = g[i], sg = 1.0f / (1.0f + expf(-gv)), d = dh[i];
		const float uv = u[i];
		du[i] = d * gv * sg;
		dg[i] = d * uv * sg * (1.0f + gv * (1.0f - sg));
	}
}

cudaError_t cuda_swiglu_fwd(cudaStream_t s, const float *g, const float *u,
                            float *h, int64_t n)
{
	if (n < 1)
		return cudaSuccess;
	swiglu_fwd_kernel<<<grid_of(n, 256), 256, 0, s>>>(g, u, h, n);
	return cudaGetLastError();
}

cudaError_t cuda_swiglu_bwd(cudaStream_t s, const float *g, const float *u,
                            const float *dh, float *dg, float *du, int64_t n)
{
	if (n < 1)
		return cudaSuccess;
	swiglu_bwd_kernel<<<grid_of(n, 256), 256, 0, s>>>(g, u, dh, dg, du, n);
	return cudaGetLastError();
}

/* ---------------------------------------------------------------- loss */

/* One block per row (the target is the block's: no divergent barrier). */
static __global__ void cross_entropy_kernel(float *logits, const int32_t *targets,
                                            int nv, float scale, float *loss)
{
	__shared__ double shd[ROW_THREADS];
	__shared__ float shf[ROW_THREADS];
	const int64_t i = blockIdx.x;
	float *row = logits + i * nv;
	const int t = targets[i];
	if (t < 0) {
		for (int j = threadIdx.x; j < nv; j += ROW_THREADS)
			row[j] = 0;
		if (threadIdx.x == 0)
			loss[i] = 0;
		return;
	}
	const float rt = row[t];   /* read before the barriers below */
	float mx = -INFINITY;
	for (int j = threadIdx.x; j < nv; j += ROW_THREADS)
		mx = fmaxf(mx, row[j]);
	mx = block_max(mx, shf);
	double sum = 0;
	for (int j = threadIdx.x; j < nv; j += ROW_THREADS)
		sum += expf(row[j] - mx);
	sum = block_sum(sum, shd);
	const float lse = mx + (float)log(sum);
	if (threadIdx.x == 0)
		loss[i] = lse - rt;
	for (int j = threadIdx.x; j < nv; j += ROW_THREADS)
		row[j] = scale * expf(row[j] - lse);
	__syncthreads();
	if (threadIdx.x == 0)
		row[t] -= scale;
}

cudaError_t cuda_cross_entropy(cudaStream_t s, float *logits, const int32_t *targets,
                               int n, int n_vocab, float scale, float *loss)
{
	if (n < 1 || n_vocab < 1)
		return cudaSuccess;
	cross_entropy_kernel<<<n, ROW_THREADS, 0, s>>>(logits, targets, n_vocab, scale,
	                                               loss);
	return cudaGetLastError();
}

/* ---------------------------------------------------------------- AdamW */

static __global__ void adamw_kernel(float *p, const float *g, float *m, float *v,
                                    int64_t n, float b1, float b2, float eps,
                                    float decay, float step_size, float bc2_sqrt)
{
	const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n)
		return;
	const float gi = g[i];
	const float pi = p[i] * decay;
	const float mi = m[i] = b1 * m[i] + (1.0f - b1) * gi;
	const float vi = v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
	p[i] = pi - step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
}

cudaError_t cuda_adamw(cudaStream_t s, float *p, const float *g, float *m, float *v,
                       int64_t n, float beta1, float beta2, float eps, float decay,
                       float step_size, float bc2_sqrt)
{
	if (n < 1)
		return cudaSuccess;
	adamw_kernel<<<grid_of(n, 256), 256, 0, s>>>(p, g, m, v, n, beta1, beta2, eps,
	                                             decay, step_size, bc2_sqrt);
	return cudaGetLastError();
}
