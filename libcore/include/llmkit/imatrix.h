/*
 * imatrix.h - importance matrices: per-column activation statistics of
 * every weight matrix, collected while a model runs on calibration text,
 * and used by llm_quantize to place the rounding error where it hurts
 * least.
 *
 * For a weight W (n_out x n_in) multiplied with activations x, the entry
 * is sum over calibration tokens of x[j]^2 for each input column j, and
 * the token count; the importance is their ratio, the mean of x^2.
 *
 * File format: llama.cpp's imatrix GGUF, so either program reads the
 * other's files:
 *
 *   general.type          "imatrix"
 *   imatrix.datasets      [string]  calibration file names
 *   imatrix.chunk_count   u32       windows evaluated
 *   imatrix.chunk_size    u32       tokens per window
 *   <weight>.in_sum2      f32 [n_in, 1]   sum of x^2 per column
 *   <weight>.counts       f32 [1, 1]      tokens summed
 */
#ifndef LLMKIT_IMATRIX_H
#define LLMKIT_IMATRIX_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct llm_ctx;
struct llm_imatrix;

int llm_imatrix_new(struct llm_imatrix **out);
void llm_imatrix_free(struct llm_imatrix *im);

/*
 * Collect from every matrix product the context's backend runs, until
 * detached (the backend's op table is wrapped; nothing else changes).
 * One imatrix per context at a time.
 */
int llm_imatrix_attach(struct llm_imatrix *im, struct llm_ctx *ctx);
void llm_imatrix_detach(struct llm_imatrix *im, struct llm_ctx *ctx);

/* Mean of x^2 per column for the weight called name (n_in of them), or
 * NULL when it was never seen or has another width.  Valid until the
 * imatrix changes. */
const float *llm_imatrix_get(struct llm_imatrix *im, const char *name, int64_t n_in);
int llm_imatrix_n_entries(const struct llm_imatrix *im);

/* Chunk bookkeeping for the file (windows and their size). */
void llm_imatrix_set_chunks(struct llm_imatrix *im, int n_chunks, int chunk_size,
                            const char *dataset);

int llm_imatrix_save(const struct llm_imatrix *im, const char *path);
int llm_imatrix_load(struct llm_imatrix **out, const char *path);

#ifdef __cplusplus
}
#endif
#endif
