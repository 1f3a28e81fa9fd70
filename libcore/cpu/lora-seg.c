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
 * would pack the matrices for nothing); plain loops without BLAS.  Each row of y is written by one piece, so the
 * result does not depend on the number of threads.
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
	int t0, n;            /* rows of y (absolute) */
};

struct seg_args {
	struct llm_backend *be;
	const float *x;
	float *y;
	int n_in, n_out;
	const struct piece *pieces;
};

/* y (n x n_out) += scale * (x (n x n_in) A^T) B^T without BLAS. */
static void delta_rows(const float *x, float *y, int n, int n_in, int n_out,
                       const float *a, const float *b, int rank, float scale,
                       float *t)
{
	for (int i = 0; i < n; i++) {
		const float *xi = x + (int64_t)i * n_in;
		float *ti = t + (int64_t)i * rank;
		for (int k = 0; k < rank; k++) {
			const float *ak = a + (int64_t)k * n_in;
			float s = 0;
			for (int j = 0; j < n_in; j++)
				s += xi[j] * ak[j];
			ti[k] = scale * s;
		}
	}
	for (int i = 0; i < n; i++) {
		const float *ti = t + (int64_t)i * rank;
		float *yi = y + (int64_t)i * n_out;
		for (int o = 0; o < n_out; o++) {
			const float *bo = b + (int64_t)o * rank;
			float s = 0;
			for (int k = 0; k < rank; k++)
				s += ti[k] * bo[k];
			yi[o] += s;
		}
	}
}

static void seg_task(void *p, int64_t i0, int64_t i1, int ith)
{
	struct seg_args *sa = p;
	for (int64_t i = i0; i < i1; i++) {
		const struct piece *pc = &sa->pieces[i];
		const struct llm_lora_seg *g = pc->seg;
		const float *x = sa->x + (int64_t)pc->t0 * sa->n_in;
		float *y = sa->y + (int64_t)pc->t0 * sa->n_out;
		float *t = llm_cpu_scratch(sa->be, ith, (size_t)pc->n * g->rank);
#ifdef HAVE_OPENBLAS
		if (pc->n >= BLAS_MIN) {
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, pc->n, g->rank,
			            sa->n_in, g->scale, x, sa->n_in, g->a, sa->n_in, 0.0f, t,
			            g->rank);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, pc->n, sa->n_out,
			            g->rank, 1.0f, t, g->rank, g->b, g->rank, 1.0f, y,
			            sa->n_out);
			continue;
		}
		/* a few tokens: matrix-vector products (no packing) */
		for (int k = 0; k < pc->n; k++) {
			cblas_sgemv(CblasRowMajor, CblasNoTrans, g->rank, sa->n_in, g->scale,
			            g->a, sa->n_in, x + (int64_t)k * sa->n_in, 1, 0.0f, t, 1);
			cblas_sgemv(CblasRowMajor, CblasNoTrans, sa->n_out, g->rank, 1.0f,
			            g->b, g->rank, t, 1, 1.0f, y + (int64_t)k * sa->n_out, 1);
		}
		continue;
#endif
		delta_rows(x, y, pc->n, sa->n_in, sa->n_out, g->a, g->b, g->rank,
		           g->scale, t);
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
			if (g->t0 < end)     /* not past the rows so far: look closer */
				for (int j = s0; j < s1 && !clash; j++)
					clash = g->t0 < segs[j].t0 + segs[j].n &&
					        segs[j].t0 < g->t0 + g->n;
			if (clash)
				break;
			if (g->t0 + g->n > end)
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
				pieces[np++] = (struct piece){ g, g->t0 + t,
				                               g->n - t < PIECE ? g->n - t : PIECE };
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
