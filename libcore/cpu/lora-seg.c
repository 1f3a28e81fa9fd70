/*
 * lora-seg.c - the CPU backend's LoRA op (backend.h, lora_seg): the deltas
 * scale * (x A^T) B^T over segments of token rows that share an adapter,
 * the SGMV idea.
 *
 * Work.  A segment is cut into pieces of at most PIECE tokens; the pieces
 * of all segments are spread over the pool at once, so a decode batch of
 * sixteen sequences with sixteen adapters keeps every thread busy, and a
 * long prefill of one adapter is split by tokens.  A piece computes its
 * rank-wide intermediate t = x A^T in the thread's scratch and then adds
 * scale * t B^T to its own rows of y: many-token pieces as two BLAS
 * matrix products, one to three tokens as matrix-vector products (sgemm
 * would pack the matrices for nothing); plain loops without BLAS.  Each
 * row of y is written by one piece of a pass, so the result does not
 * depend on the number of threads.
 *
 * A segment given as a list of rows (one adapter's tokens scattered
 * through the batch) is gathered into a contiguous block for the BLAS
 * products and its delta added back row by row, so its matrices are read
 * once for all its tokens.
 *
 * Segments may overlap (stacked adapters applied to every token, beside
 * per-slot ones); they are then applied in passes of non-overlapping
 * segments, in the order given.
 */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "cpu/backward.h"
#include "cpu/pool.h"

#ifdef HAVE_OPENBLAS
#include <cblas.h>
#endif

#define PIECE 32          /* tokens per piece of work */
#define BLAS_MIN 4        /* tokens from which a piece goes to BLAS */

struct piece {
	const struct llm_lora_seg *seg;
	int i0, n;            /* rows i0 .. i0 + n - 1 of the segment */
};

struct seg_args {
	struct llm_backend *be;
	const float *x;
	float *y;
	int n_in, n_out;
	const struct piece *pieces;
};

/* Row i of a segment. */
static inline int seg_row(const struct llm_lora_seg *g, int i)
{
	return g->rows ? g->rows[i] : g->t0 + i;
}

#ifndef HAVE_OPENBLAS
/* y[row] += scale * b (a x[row]) for rows of one piece, without BLAS. */
static void delta_rows(const struct seg_args *sa, const struct piece *pc,
                       float *t)
{
	const struct llm_lora_seg *g = pc->seg;
	int n_in = sa->n_in, n_out = sa->n_out, rank = g->rank;
	for (int i = 0; i < pc->n; i++) {
		int row = seg_row(g, pc->i0 + i);
		const float *xi = sa->x + (int64_t)row * n_in;
		float *yi = sa->y + (int64_t)row * n_out;
		for (int k = 0; k < rank; k++) {
			const float *ak = g->a + (int64_t)k * n_in;
			float s = 0;
			for (int j = 0; j < n_in; j++)
				s += xi[j] * ak[j];
			t[k] = g->scale * s;
		}
		for (int o = 0; o < n_out; o++) {
			const float *bo = g->b + (int64_t)o * rank;
			float s = 0;
			for (int k = 0; k < rank; k++)
				s += t[k] * bo[k];
			yi[o] += s;
		}
	}
}
#endif

static void seg_task(void *p, int64_t i0, int64_t i1, int ith)
{
	struct seg_args *sa = p;
	int n_in = sa->n_in, n_out = sa->n_out;
	for (int64_t i = i0; i < i1; i++) {
		const struct piece *pc = &sa->pieces[i];
		const struct llm_lora_seg *g = pc->seg;
#ifdef HAVE_OPENBLAS
		if (pc->n >= BLAS_MIN) {
			/* scratch: t (n x rank), and for a rows list the gathered
			 * x (n x n_in) and the delta (n x n_out) */
			size_t nt = (size_t)pc->n * g->rank;
			size_t ng = g->rows ? (size_t)pc->n * (n_in + n_out) : 0;
			float *t = llm_cpu_scratch(sa->be, ith, nt + ng);
			const float *x = sa->x + (int64_t)seg_row(g, pc->i0) * n_in;
			float *y = sa->y + (int64_t)seg_row(g, pc->i0) * n_out;
			float *xg = t + nt, *yg = xg + (size_t)pc->n * n_in;
			if (g->rows) {
				for (int r = 0; r < pc->n; r++)
					memcpy(xg + (int64_t)r * n_in,
					       sa->x + (int64_t)g->rows[pc->i0 + r] * n_in,
					       n_in * sizeof(float));
				x = xg;
				y = yg;
			}
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, pc->n, g->rank,
			            n_in, g->scale, x, n_in, g->a, n_in, 0.0f, t, g->rank);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, pc->n, n_out,
			            g->rank, 1.0f, t, g->rank, g->b, g->rank,
			            g->rows ? 0.0f : 1.0f, y, n_out);
			if (g->rows)
				for (int r = 0; r < pc->n; r++) {
					float *yr = sa->y + (int64_t)g->rows[pc->i0 + r] * n_out;
					const float *d = yg + (int64_t)r * n_out;
					for (int o = 0; o < n_out; o++)
						yr[o] += d[o];
				}
			continue;
		}
		/* a few tokens: matrix-vector products (no packing, no gather) */
		float *t = llm_cpu_scratch(sa->be, ith, (size_t)g->rank);
		for (int k = 0; k < pc->n; k++) {
			int row = seg_row(g, pc->i0 + k);
			cblas_sgemv(CblasRowMajor, CblasNoTrans, g->rank, n_in, g->scale,
			            g->a, n_in, sa->x + (int64_t)row * n_in, 1, 0.0f, t, 1);
			cblas_sgemv(CblasRowMajor, CblasNoTrans, n_out, g->rank, 1.0f,
			            g->b, g->rank, t, 1, 1.0f, sa->y + (int64_t)row * n_out, 1);
		}
#else
		delta_rows(sa, pc, llm_cpu_scratch(sa->be, ith, (size_t)g->rank));
#endif
	}
}

void llm_cpu_lora_seg(struct llm_backend *be, const float *x, float *y,
                      int n_in, int n_out, const struct llm_lora_seg *segs,
                      int n_segs)
{
	struct piece stack[256], *pieces = stack;
	int cap = 256;

	for (int s0 = 0; s0 < n_segs;) {
		/* one pass: the longest run of segments whose rows do not overlap
		 * (rows overlap only with a segment already in the pass) */
		int np = 0, s1 = s0, end = 0;
		for (; s1 < n_segs; s1++) {
			const struct llm_lora_seg *g = &segs[s1];
			bool clash = false;
			/* rows lists never share rows with others (backend.h) */
			if (!g->rows && g->t0 < end)
				for (int j = s0; j < s1 && !clash; j++)
					clash = !segs[j].rows && g->t0 < segs[j].t0 + segs[j].n &&
					        segs[j].t0 < g->t0 + g->n;
			if (clash)
				break;
			if (!g->rows && g->t0 + g->n > end)
				end = g->t0 + g->n;
			if (g->n <= 0 || g->scale == 0 || g->rank <= 0)
				continue;
			for (int t = 0; t < g->n; t += PIECE) {
				if (np == cap) {
					struct piece *q = malloc(2 * cap * sizeof(*q));
					LLM_ASSERT(q);
					memcpy(q, pieces, np * sizeof(*q));
					if (pieces != stack)
						free(pieces);
					pieces = q;
					cap *= 2;
				}
				pieces[np++] = (struct piece){ g, t, g->n - t < PIECE ? g->n - t : PIECE };
			}
		}
		s0 = s1;
		if (!np)
			continue;
		struct seg_args sa = { be, x, y, n_in, n_out, pieces };
		/* one piece of a few rows costs less than waking the pool */
		if (np == 1 && pieces[0].n < BLAS_MIN)
			seg_task(&sa, 0, 1, 0);
		else
			llm_pool_for(llm_cpu_pool(be), np, 1, seg_task, &sa);
	}
	if (pieces != stack)
		free(pieces);
}
