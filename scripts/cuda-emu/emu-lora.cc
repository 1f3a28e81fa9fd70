/*
 * emu-lora - the LoRA kernels of libcore/cuda/kernels-lora.cu (through
 * their launchers, cuda_lora_shrink and cuda_lora_expand) run on the host
 * by the emulator.  The descriptors, items and passes are built as
 * backend-cuda.cu's cuda_lora_seg builds them; the result is compared with
 * plain loops in double.  Checks the kernels' index math, warp sums and
 * the pass cutting of overlapping segments without a GPU.  Run by
 * emu-main.cc.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "llmkit/backend.h"
#include "cuda/cuda-internal.h"
#include "emu-check.h"

namespace emu {
#include "kernels-lora.emu.cc"
}

static inline int lora_row(const llm_lora_seg *g, int i)
{
	return g->rows ? g->rows[i] : g->t0 + i;
}

static inline bool lora_active(const llm_lora_seg *g)
{
	return g->n > 0 && g->rank > 0 && g->scale != 0;
}

/* The backend's host part (cuda_lora_seg), with the device the host: -1
 * for a row twice in one segment, else the number of passes. */
static int emu_lora_seg(const float *x, float *y, int n_in, int n_out,
                        const llm_lora_seg *segs, int n_segs)
{
	int n_act = 0, max_rank = 0;
	int64_t n_items = 0, n_rows = 0, n_t = 0, max_row = -1;
	for (int s = 0; s < n_segs; s++) {
		const llm_lora_seg *g = &segs[s];
		if (!lora_active(g))
			continue;
		if (g->rows) {
			for (int i = 0; i < g->n; i++)
				max_row = g->rows[i] > max_row ? g->rows[i] : max_row;
			n_rows += g->n;
		} else {
			max_row = g->t0 + g->n - 1 > max_row ? g->t0 + g->n - 1 : max_row;
		}
		n_act++;
		n_items += (g->n + CUDA_LORA_TOK - 1) / CUDA_LORA_TOK;
		n_t += (int64_t)g->n * g->rank;
		max_rank = g->rank > max_rank ? g->rank : max_rank;
	}
	if (!n_act)
		return 0;
	std::vector<cuda_lora_seg> ds(n_act);
	std::vector<cuda_lora_item> items(n_items);
	std::vector<int32_t> rows(n_rows + 1);
	std::vector<uint32_t> stamp(max_row + 1, 0);
	std::vector<int> pass_end(n_act + 1);
	uint32_t passc = 0, pass = ++passc;
	int na = 0, ni = 0, nr = 0, np = 0;
	int64_t toff = 0;
	for (int s = 0; s < n_segs; s++) {
		const llm_lora_seg *g = &segs[s];
		if (!lora_active(g))
			continue;
		bool clash = false;
		for (int i = 0; i < g->n && !clash; i++)
			clash = stamp[lora_row(g, i)] == pass;
		if (clash) {
			pass_end[np++] = ni;
			pass = ++passc;
		}
		for (int i = 0; i < g->n; i++) {
			int r = lora_row(g, i);
			if (stamp[r] == pass)
				return -1;
			stamp[r] = pass;
		}
		cuda_lora_seg *d = &ds[na];
		d->a = g->a;
		d->b = g->b;
		d->toff = toff;
		d->rank = g->rank;
		d->scale = g->scale;
		d->t0 = g->rows ? 0 : g->t0;
		d->rows = g->rows ? nr : -1;
		if (g->rows) {
			memcpy(rows.data() + nr, g->rows, (size_t)g->n * 4);
			nr += g->n;
		}
		for (int i0 = 0; i0 < g->n; i0 += CUDA_LORA_TOK) {
			items[ni].seg = na;
			items[ni].i0 = i0;
			items[ni].n = g->n - i0 < CUDA_LORA_TOK ? g->n - i0 : CUDA_LORA_TOK;
			ni++;
		}
		toff += (int64_t)g->n * g->rank;
		na++;
	}
	pass_end[np++] = ni;
	if (!(na == n_act && ni == n_items && nr == n_rows && toff == n_t)) {
		emu_check(false, "lora: the descriptors do not add up");
		return -2;
	}
	vec t(n_t, NAN);
	for (int p = 0; p < np; p++) {
		const int i0 = p ? pass_end[p - 1] : 0, cnt = pass_end[p] - i0;
		const cuda_lora_item *it = items.data() + i0;
		int e = emu::cuda_lora_shrink(0, x, n_in, ds.data(), rows.data(), it, cnt,
		                              t.data());
		if (e == cudaSuccess)
			e = emu::cuda_lora_expand(0, t.data(), y, n_out, ds.data(), rows.data(),
			                          it, cnt, max_rank);
		if (e != cudaSuccess) {
			emu_check(false, "lora: a launch failed (%d)", e);
			return -2;
		}
	}
	return np;
}

static void ref(const float *x, float *y, int n_in, int n_out, const llm_lora_seg *segs,
                int n)
{
	for (int s = 0; s < n; s++) {
		const llm_lora_seg *g = &segs[s];
		if (!lora_active(g))
			continue;
		for (int i = 0; i < g->n; i++) {
			int r = lora_row(g, i);
			std::vector<double> tt(g->rank);
			for (int k = 0; k < g->rank; k++) {
				double a = 0;
				for (int j = 0; j < n_in; j++)
					a += (double)x[(int64_t)r * n_in + j] * g->a[(int64_t)k * n_in + j];
				tt[k] = g->scale * a;
			}
			for (int o = 0; o < n_out; o++) {
				double a = 0;
				for (int k = 0; k < g->rank; k++)
					a += tt[k] * g->b[(int64_t)o * g->rank + k];
				y[(int64_t)r * n_out + o] += (float)a;
			}
		}
	}
}

static unsigned sd = 1;

static void run(const char *what, int T, int n_in, int n_out, llm_lora_seg *s, int n,
                int want_passes)
{
	vec x = emu_rnd((size_t)T * n_in, &sd, 1), y0 = emu_rnd((size_t)T * n_out, &sd, 1);
	vec a = y0, b = y0;
	int np = emu_lora_seg(x.data(), a.data(), n_in, n_out, s, n);
	ref(x.data(), b.data(), n_in, n_out, s, n);
	double moved = 0;
	for (size_t i = 0; i < b.size(); i++)
		moved = fmax(moved, fabs(b[i] - y0[i]));
	char w[96];
	snprintf(w, sizeof(w), "lora %s", what);
	emu_close(w, a, b, 1e-5);
	emu_check(moved > 1e-3 && np == want_passes,
	          "lora %s: passes %d (want %d), the deltas move y by %.3g", what, np,
	          want_passes, moved);
}

void emu_test_lora(void)
{
	const int NI = 70, NO = 300;
	static const int ranks[12] = { 1, 64, 3, 16, 8, 33, 2, 5, 64, 12, 7, 1 };
	vec A[12], B[12];
	for (int i = 0; i < 12; i++) {
		A[i] = emu_rnd((size_t)ranks[i] * NI, &sd, 0.3f);
		B[i] = emu_rnd((size_t)NO * ranks[i], &sd, 0.3f);
	}
#define SEG(i, t0_, n_, rows_, sc) \
	llm_lora_seg{ (t0_), (n_), A[i].data(), B[i].data(), ranks[i], (sc), (rows_) }
	llm_lora_seg s[16];
	int t = 0, ns = 0;
	static const int lens[12] = { 1, 7, 8, 9, 17, 3, 30, 2, 16, 5, 1, 24 };
	for (int i = 0; i < 12; i++) {
		s[ns++] = SEG(i, t, lens[i], nullptr, 0.25f + 0.5f * i);
		t += lens[i] + (i % 3 == 0);
	}
	run("contiguous", t, NI, NO, s, ns, 1);
	static int32_t rows[5][40];
	int nr[5] = { 0 };
	for (int r = 0; r < 150; r++)
		rows[r % 5][nr[r % 5]++] = 149 - r;
	ns = 0;
	for (int i = 0; i < 5; i++)
		s[ns++] = SEG(i + 1, 0, nr[i], rows[i], 1.0f + i);
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
	/* n_in < 32, n_out < 256 and odd */
	vec a2 = emu_rnd(5 * 7, &sd, 1), b2 = emu_rnd(13 * 5, &sd, 1);
	llm_lora_seg g2[2] = { { 0, 19, a2.data(), b2.data(), 5, 0.9f, nullptr },
	                       { 3, 4, a2.data(), b2.data(), 5, 0.5f, nullptr } };
	run("tiny 7 -> 13, overlapping", 19, 7, 13, g2, 2, 2);
	int32_t dup[3] = { 0, 1, 1 };
	llm_lora_seg d = { 0, 3, a2.data(), b2.data(), 5, 1.0f, dup };
	float x[100] = { 0 }, y[100] = { 0 };
	int rc = emu_lora_seg(x, y, 7, 13, &d, 1);
	emu_check(rc == -1, "lora: a row twice in one segment is refused");
	/* a rank over the expand kernel's limit is refused at launch */
	cuda_lora_item it = { 0, 0, 1 };
	emu_check(emu::cuda_lora_expand(0, x, y, 13, nullptr, nullptr, &it, 1,
	                                CUDA_LORA_MAX_RANK + 1) == cudaErrorInvalidValue,
	          "lora: expand refuses rank %d", CUDA_LORA_MAX_RANK + 1);
}
