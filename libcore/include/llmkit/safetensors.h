/*
 * safetensors.h - Hugging Face safetensors files: reading (mmap) and
 * writing (streaming, atomically).
 *
 * The file, all little-endian:
 *
 *   u64  N          length of the header
 *   N bytes         header: a JSON object, UTF-8, possibly padded with
 *                   trailing spaces (writers pad to a multiple of 8)
 *   data            the tensors' bytes
 *
 * The header maps each tensor name to
 *
 *   { "dtype": "F32" | "F16" | "BF16" | ..., "shape": [d0, d1, ...],
 *     "data_offsets": [begin, end] }
 *
 * with begin/end counted from the start of the data section, and may hold
 * one "__metadata__" object of string -> string.  Shapes are row-major as
 * PyTorch has them: shape[0] is the outermost dimension, so a Linear
 * weight of out_features x in_features is [out, in] (GGUF would say
 * ne = {in, out}).
 *
 * The reader checks the header length against the file, parses the JSON
 * strictly (duplicate keys refused), and checks every tensor's dtype,
 * shape, and offsets: end - begin must equal the element count times the
 * element size, the range must lie inside the data section, and no two
 * tensors may overlap.  A file that fails gets LLM_EFORMAT and a message
 * naming the file and tensor; nothing is read out of bounds.
 *
 * Supported element types: F32, F16, BF16, F64, I8, I16, I32, I64 (the
 * numeric types llmkit's dtype table knows).  Others (BOOL, U8, F8_*)
 * yield LLM_EUNSUPPORTED naming the tensor.
 */
#ifndef LLMKIT_SAFETENSORS_H
#define LLMKIT_SAFETENSORS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "llmkit/gguf.h"
#include "llmkit/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LLM_SAFETENSORS_MAX_DIMS 8
/* Largest header accepted (as the reference implementation: 100 MB). */
#define LLM_SAFETENSORS_MAX_HEADER (100u * 1000u * 1000u)

struct llm_safetensors;

struct llm_safetensors_tensor {
	char *name;
	enum llm_dtype type;
	int n_dims;                                /* 0 for a scalar */
	int64_t shape[LLM_SAFETENSORS_MAX_DIMS];   /* row-major, [0] outermost */
	uint64_t offset;                           /* from the data section */
	size_t nbytes;
	const void *data;                          /* inside the mapping */
};

/* ---------------------------------------------------------------- reading */

int llm_safetensors_open(struct llm_safetensors **out, const char *path);
/* Parse a buffer (copied unless own, then it must come from malloc). */
int llm_safetensors_from_memory(struct llm_safetensors **out, const void *data,
                                size_t size, const char *name, bool own);
void llm_safetensors_free(struct llm_safetensors *st);

const char *llm_safetensors_path(const struct llm_safetensors *st);
int64_t llm_safetensors_n_tensors(const struct llm_safetensors *st);
/* Tensors in the order of their data offsets. */
const struct llm_safetensors_tensor *
llm_safetensors_tensor(const struct llm_safetensors *st, int64_t i);
const struct llm_safetensors_tensor *
llm_safetensors_find(const struct llm_safetensors *st, const char *name);
/* A "__metadata__" value, or NULL. */
const char *llm_safetensors_metadata(const struct llm_safetensors *st,
                                     const char *key);

/* The header name of a dtype ("F32", "BF16" ...); NULL if it has none. */
const char *llm_safetensors_dtype_name(enum llm_dtype t);

/* ---------------------------------------------------------------- writing */

/*
 * A writer collects tensors (data pointers that stay valid until the write,
 * or fill callbacks called once each, in order, with a buffer of the
 * tensor's size) and metadata, then streams the file in one pass.  Tensors
 * are written in the order added.  The fill callback type is the GGUF
 * writer's.
 */
struct llm_safetensors_writer;

struct llm_safetensors_writer *llm_safetensors_writer_new(void);
void llm_safetensors_writer_free(struct llm_safetensors_writer *w);

int llm_safetensors_set_metadata(struct llm_safetensors_writer *w,
                                 const char *key, const char *value);
/* shape as in the file: row-major, shape[0] outermost; n_dims may be 0. */
int llm_safetensors_add(struct llm_safetensors_writer *w, const char *name,
                        enum llm_dtype type, int n_dims, const int64_t *shape,
                        const void *data);
int llm_safetensors_add_fill(struct llm_safetensors_writer *w, const char *name,
                             enum llm_dtype type, int n_dims,
                             const int64_t *shape, llm_gguf_fill_fn fill,
                             void *user);

int llm_safetensors_write_stream(struct llm_safetensors_writer *w, FILE *f,
                                 uint64_t *written);
/* Atomically to path (temporary file renamed into place), "-": stdout. */
int llm_safetensors_write_file(struct llm_safetensors_writer *w,
                               const char *path);

#ifdef __cplusplus
}
#endif
#endif
