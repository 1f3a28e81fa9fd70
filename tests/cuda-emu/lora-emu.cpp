/*
 * lora-emu.cpp - the LoRA kernels of libcore/cuda/kernels-lora.cu run on
 * the host, without a GPU: tests/cuda-lora-emu.sh compiles the kernels'
 * source (up to its launchers) with shim.h, one pthread per CUDA thread of
 * a block, a barrier for __syncthreads and one per warp for the shuffles.
 * The descriptors, items and passes are built as backend-cuda.cu's
 * cuda_lora_seg builds them; the result is compared with plain loops in
 * double.  This checks the kernels' index math and the pass cutting on any
 * machine; it says nothing about a GPU's timing or memory model.
 */
#include "shim.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <vector>
#include <functional>
#include "llmkit/backend.h"
#include KERNELS  /* the kernels, cut before their launchers */

thread_local edim3 threadIdx, blockIdx;
edim3 blockDim, gridDim;
float ts[1 << 16];
static pthread_barrier_t bb;
static pthread_barrier_t wb[32];
static float wslot[32][32];

void emu_syncthreads() { pthread_barrier_wait(&bb); }
float emu_shfl_xor(unsigned mask, float v, int o)
{
	(void)mask;
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	wslot[w][lane] = v;
	pthread_barrier_wait(&wb[w]);
	float r = wslot[w][lane ^ o];
	pthread_barrier_wait(&wb[w]);
	return r;
}

struct targ { std::function<void()> *fn; edim3 b, t; };
#include <functional>
static void *trun(void *p)
{
	targ *a = (targ *)p;
	blockIdx = a->b;
	threadIdx = a->t;
	(*a->fn)();
	return nullptr;
}
static void launch(edim3 grid, unsigned threads, std::function<void()> fn)
{
	gridDim = grid;
	blockDim = { threads, 1, 1 };
	for (unsigned by = 0; by < grid.y; by++)
		for (unsigned bx = 0; bx < grid.x; bx++) {
			pthread_barrier_init(&bb, nullptr, threads);
			for (unsigned w = 0; w < threads / 32; w++)
				pthread_barrier_init(&wb[w], nullptr, 32);
			std::vector<pthread_t> th(threads);
			std::vector<targ> args(threads);
			for (unsigned t = 0; t < threads; t++) {
				args[t] = { &fn, { bx, by, 0 }, { t, 0, 0 } };
				pthread_create(&th[t], nullptr, trun, &args[t]);
			}
			for (unsigned t = 0; t < threads; t++)
				pthread_join(th[t], nullptr);
			pthread_barrier_destroy(&bb);
			for (unsigned w = 0; w < threads / 32; w++)
				pthread_barrier_destroy(&wb[w]);
		}
}

static inline int lora_row(const llm_lora_seg *g, int i) { return g->rows ? g->rows[i] : g->t0 + i; }
static inline bool lora_active(const llm_lora_seg *g) { return g->n > 0 && g->rank > 0 && g->scale != 0; }

// the backend's host part, with "device" = host
static int emu_lora_seg(const float *x, float *y, int n_in, int n_out, const llm_lora_seg *segs, int n_segs)
{
	int n_act = 0, max_rank = 0;
	int64_t n_items = 0, n_rows = 0, n_t = 0, max_row = -1;
	for (int s = 0; s < n_segs; s++) {
		const llm_lora_seg *g = &segs[s];
		if (!lora_active(g)) continue;
		if (g->rows) { for (int i = 0; i < g->n; i++) max_row = g->rows[i] > max_row ? g->rows[i] : max_row; n_rows += g->n; }
		else max_row = g->t0 + g->n - 1 > max_row ? g->t0 + g->n - 1 : max_row;
		n_act++; n_items += (g->n + CUDA_LORA_TOK - 1) / CUDA_LORA_TOK; n_t += (int64_t)g->n * g->rank;
		max_rank = g->rank > max_rank ? g->rank : max_rank;
	}
	if (!n_act) return 0;
	const size_t off_items = (size_t)n_act * sizeof(cuda_lora_seg);
	const size_t off_rows = off_items + (size_t)n_items * sizeof(cuda_lora_item);
	const size_t total = off_rows + (size_t)n_rows * sizeof(int32_t);
	std::vector<unsigned char> buf(total);
	std::vector<uint32_t> stamp(max_row + 1, 0);
	std::vector<int> pass_end(n_act + 1);
	uint32_t passc = 0;
	cuda_lora_seg *ds = (cuda_lora_seg *)buf.data();
	cuda_lora_item *items = (cuda_lora_item *)(buf.data() + off_items);
	int32_t *rows = (int32_t *)(buf.data() + off_rows);
	int na = 0, ni = 0, nr = 0, np = 0; int64_t toff = 0;
	uint32_t pass = ++passc;
	for (int s = 0; s < n_segs; s++) {
		const llm_lora_seg *g = &segs[s];
		if (!lora_active(g)) continue;
		bool clash = false;
		for (int i = 0; i < g->n && !clash; i++) clash = stamp[lora_row(g, i)] == pass;
		if (clash) { pass_end[np++] = ni; pass = ++passc; }
		for (int i = 0; i < g->n; i++) { int r = lora_row(g, i); if (stamp[r] == pass) return -1; stamp[r] = pass; }
		cuda_lora_seg *d = &ds[na];
		d->a = g->a; d->b = g->b; d->toff = toff; d->rank = g->rank; d->scale = g->scale;
		d->t0 = g->rows ? 0 : g->t0; d->rows = g->rows ? nr : -1;
		if (g->rows) { memcpy(rows + nr, g->rows, (size_t)g->n * 4); nr += g->n; }
		for (int i0 = 0; i0 < g->n; i0 += CUDA_LORA_TOK) {
			items[ni].seg = na; items[ni].i0 = i0; items[ni].n = g->n - i0 < CUDA_LORA_TOK ? g->n - i0 : CUDA_LORA_TOK; ni++;
		}
		toff += (int64_t)g->n * g->rank; na++;
	}
	pass_end[np++] = ni;
	if (!(na == n_act && ni == n_items && nr == n_rows && toff == n_t)) { printf("ASSERT\n"); exit(1); }
	std::vector<float> t(n_t, NAN);
	for (int p = 0; p < np; p++) {
		const int i0 = p ? pass_end[p - 1] : 0;
		const int cnt = pass_end[p] - i0;
		const cuda_lora_item *it = items + i0;
		launch({ (unsigned)cnt, 1, 1 }, 256, [&] { lora_shrink_kernel(x, n_in, ds, rows, it, t.data()); });
		unsigned tiles = (n_out + 255) / 256;
		launch({ (unsigned)cnt, tiles, 1 }, 256, [&] { lora_expand_kernel(t.data(), y, n_out, ds, rows, it); });
	}
	return np;
}

static void ref(const float *x, float *y, int n_in, int n_out, const llm_lora_seg *segs, int n)
{
	for (int s = 0; s < n; s++) {
		const llm_lora_seg *g = &segs[s];
		if (!lora_active(g)) continue;
		for (int i = 0; i < g->n; i++) {
			int r = lora_row(g, i);
			std::vector<double> tt(g->rank);
			for (int k = 0; k < g->rank; k++) { double a = 0; for (int j = 0; j < n_in; j++) a += (double)x[(int64_t)r*n_in+j] * g->a[(int64_t)k*n_in+j]; tt[k] = g->scale * a; }
			for (int o = 0; o < n_out; o++) { double a = 0; for (int k = 0; k < g->rank; k++) a += tt[k] * g->b[(int64_t)o*g->rank+k]; y[(int64_t)r*n_out+o] += (float)a; }
		}
	}
}

static unsigned sd = 1;
static float fr() { sd = sd * 1103515245u + 12345u; return ((sd >> 8) & 0xffff) / 32768.0f - 1.0f; }
static float *rnd(int64_t n, float sc) { float *v = (float *)malloc(n * 4); for (int64_t i = 0; i < n; i++) v[i] = fr() * sc; return v; }

static int fails;
static void run(const char *what, int T, int n_in, int n_out, llm_lora_seg *s, int n,
                int want_passes)
{
	float *x = rnd((int64_t)T * n_in, 1), *y0 = rnd((int64_t)T * n_out, 1);
	std::vector<float> a(y0, y0 + (size_t)T * n_out), b = a;
	int np = emu_lora_seg(x, a.data(), n_in, n_out, s, n);
	ref(x, b.data(), n_in, n_out, s, n);
	double mx = 1e-30, err = 0, moved = 0;
	for (size_t i = 0; i < a.size(); i++) { mx = fmax(mx, fabs(b[i])); double e = fabs(a[i] - b[i]); if (!(e <= err)) err = std::isnan(e) ? INFINITY : e; moved = fmax(moved, fabs(b[i] - y0[i])); }
	bool ok = err / mx < 1e-5 && moved > 1e-3 && np == want_passes;
	printf("%s %s: passes %d (want %d), rel err %.3g, moved %.3g\n", ok ? "ok" : "FAIL", what, np, want_passes, err / mx, moved);
	fails += !ok;
	free(x); free(y0);
}

int main()
{
	const int NI = 70, NO = 300;
	static const int ranks[12] = { 1, 64, 3, 16, 8, 33, 2, 5, 64, 12, 7, 1 };
	float *A[12], *B[12];
	for (int i = 0; i < 12; i++) { A[i] = rnd(ranks[i] * NI, 0.3f); B[i] = rnd(NO * ranks[i], 0.3f); }
#define SEG(i, t0_, n_, rows_, sc) llm_lora_seg{ (t0_), (n_), A[i], B[i], ranks[i], (sc), (rows_) }
	llm_lora_seg s[16];
	int t = 0, ns = 0;
	static const int lens[12] = { 1, 7, 8, 9, 17, 3, 30, 2, 16, 5, 1, 24 };
	for (int i = 0; i < 12; i++) { s[ns++] = SEG(i, t, lens[i], nullptr, 0.25f + 0.5f * i); t += lens[i] + (i % 3 == 0); }
	run("contiguous", t, NI, NO, s, ns, 1);
	static int32_t rows[5][40]; int nr[5] = { 0 };
	for (int r = 0; r < 150; r++) rows[r % 5][nr[r % 5]++] = 149 - r;
	ns = 0;
	for (int i = 0; i < 5; i++) s[ns++] = SEG(i + 1, 0, nr[i], rows[i], 1.0f + i);
	s[ns++] = SEG(0, 150, 11, nullptr, -2.0f);
	run("interleaved rows lists", 161, NI, NO, s, ns, 1);
	static int32_t tail[6] = { 41, 43, 45, 47, 49, 50 };
	ns = 0;
	s[ns++] = SEG(1, 0, 40, nullptr, 0.5f);
	s[ns++] = SEG(3, 0, 40, nullptr, 1.5f);
	s[ns++] = SEG(4, 10, 12, nullptr, -1.0f);
	s[ns++] = SEG(5, 0, 40, nullptr, 0.0f);
	s[ns++] = SEG(2, 5, 0, nullptr, 1.0f);
	s[ns++] = SEG(8, 0, 40, nullptr, 0.25f);
	s[ns++] = SEG(9, 0, 6, tail, 2.0f);
	run("stacked", 51, NI, NO, s, ns, 4);
	// n_in < 32 and n_out < 256 and odd
	float *a2 = rnd(5 * 7, 1), *b2 = rnd(13 * 5, 1);
	llm_lora_seg g2[2] = { { 0, 19, a2, b2, 5, 0.9f, nullptr }, { 3, 4, a2, b2, 5, 0.5f, nullptr } };
	run("tiny 7 -> 13, overlapping", 19, 7, 13, g2, 2, 2);
	int32_t dup[3] = { 0, 1, 1 };
	llm_lora_seg d = { 0, 3, a2, b2, 5, 1.0f, dup };
	float x[100] = { 0 }, y[100] = { 0 };
	int rc = emu_lora_seg(x, y, 7, 13, &d, 1);
	printf("%s duplicate row rejected\n", rc == -1 ? "ok" : "FAIL");
	fails += rc != -1;
	return fails ? 1 : 0;
}
