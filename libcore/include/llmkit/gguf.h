/*
 * gguf.h - GGUF v3 model files: reading (mmap or a pipe) and writing
 * (streaming, atomically).
 *
 * The file, all little-endian:
 *
 *   u32  magic      "GGUF" (0x46554747)
 *   u32  version    2 or 3 (1 is refused: it used 32-bit counts)
 *   u64  n_tensors
 *   u64  n_kv
 *   n_kv times:      string key, u32 value type, value
 *   n_tensors times: string name, u32 n_dims (1..4), u64 ne[n_dims],
 *                    u32 dtype, u64 offset (from the data section start,
 *                    a multiple of the alignment)
 *   padding to the alignment ("general.alignment", u32, default 32)
 *   data section
 *
 * A string is a u64 byte length and that many bytes (no terminator).  A
 * value of type ARRAY is a u32 element type, a u64 count and the elements
 * (arrays of arrays are accepted and skipped).
 *
 * The reader checks every count, length, type, shape, offset and size
 * against the bytes actually present before anything is used, so a
 * truncated or hostile file yields LLM_EFORMAT and a message, never a read
 * out of bounds.  Strings handed out are NUL-terminated copies.
 */
#ifndef LLMKIT_GGUF_H
#define LLMKIT_GGUF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "llmkit/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LLM_GGUF_MAGIC 0x46554747u
#define LLM_GGUF_DEFAULT_ALIGNMENT 32

enum llm_gguf_type {
	LLM_GGUF_U8 = 0, LLM_GGUF_I8 = 1, LLM_GGUF_U16 = 2, LLM_GGUF_I16 = 3,
	LLM_GGUF_U32 = 4, LLM_GGUF_I32 = 5, LLM_GGUF_F32 = 6, LLM_GGUF_BOOL = 7,
	LLM_GGUF_STRING = 8, LLM_GGUF_ARRAY = 9, LLM_GGUF_U64 = 10,
	LLM_GGUF_I64 = 11, LLM_GGUF_F64 = 12,
	LLM_GGUF_TYPE_COUNT
};

struct llm_gguf;

/* ---------------------------------------------------------------- reading */

/* Open a file (mapped read-only) or "-" (standard input, read whole). */
int llm_gguf_open(struct llm_gguf **out, const char *path);
/* The same with llm_map_file flags (util.h): LLM_MAP_PRIVATE reads the
 * file into private memory on huge pages instead of mapping it. */
int llm_gguf_open_ex(struct llm_gguf **out, const char *path, unsigned flags);
/* Parse a buffer; the buffer is copied unless own is true, in which case
 * it must come from malloc and is freed with the gguf. */
int llm_gguf_from_memory(struct llm_gguf **out, const void *data, size_t size,
                         const char *name, bool own);
void llm_gguf_free(struct llm_gguf *g);

const char *llm_gguf_path(const struct llm_gguf *g);
uint32_t llm_gguf_version(const struct llm_gguf *g);
size_t llm_gguf_alignment(const struct llm_gguf *g);
size_t llm_gguf_file_size(const struct llm_gguf *g);

/* Key/value pairs.  find returns the index or -1. */
int64_t llm_gguf_n_kv(const struct llm_gguf *g);
int64_t llm_gguf_find_key(const struct llm_gguf *g, const char *key);
const char *llm_gguf_key(const struct llm_gguf *g, int64_t i);
enum llm_gguf_type llm_gguf_kv_type(const struct llm_gguf *g, int64_t i);
/* For arrays: element type and count (0 / LLM_GGUF_TYPE_COUNT otherwise). */
enum llm_gguf_type llm_gguf_arr_type(const struct llm_gguf *g, int64_t i);
uint64_t llm_gguf_arr_n(const struct llm_gguf *g, int64_t i);
/* Raw little-endian elements of a numeric array (NULL for other kinds). */
const void *llm_gguf_arr_data(const struct llm_gguf *g, int64_t i);
/* Element j of a string array, NUL-terminated; its length in *len. */
const char *llm_gguf_arr_str(const struct llm_gguf *g, int64_t i, uint64_t j,
                             size_t *len);
const char *llm_gguf_str(const struct llm_gguf *g, int64_t i);

/*
 * Typed lookups by key.  Each returns 0 and stores the value, LLM_ENOTFOUND
 * when the key is absent (*out untouched, no message), or LLM_EFORMAT when
 * the key holds a value that does not fit the asked type.  Integer getters
 * accept any integer type whose value fits.
 */
int llm_gguf_get_u32(const struct llm_gguf *g, const char *key, uint32_t *out);
int llm_gguf_get_i64(const struct llm_gguf *g, const char *key, int64_t *out);
int llm_gguf_get_f32(const struct llm_gguf *g, const char *key, float *out);
int llm_gguf_get_bool(const struct llm_gguf *g, const char *key, bool *out);
int llm_gguf_get_str(const struct llm_gguf *g, const char *key, const char **out);

/* Tensors. */
struct llm_gguf_tensor {
	char *name;
	enum llm_dtype type;
	int n_dims;
	int64_t ne[LLM_MAX_DIMS];
	uint64_t offset;        /* from the start of the data section */
	size_t nbytes;
	const void *data;       /* inside the mapping or buffer */
};

int64_t llm_gguf_n_tensors(const struct llm_gguf *g);
const struct llm_gguf_tensor *llm_gguf_tensor(const struct llm_gguf *g, int64_t i);
const struct llm_gguf_tensor *llm_gguf_find_tensor(const struct llm_gguf *g,
                                                   const char *name);

const char *llm_gguf_type_name(enum llm_gguf_type t);

/* ---------------------------------------------------------------- writing */

/*
 * A writer collects key/value pairs and tensor descriptions, then streams
 * the file in one pass (no seeks, so stdout may be a pipe).  Tensor data is
 * given as a pointer that must stay valid until the write, or produced on
 * demand by a callback into a buffer of the tensor's size.
 */
struct llm_gguf_writer;

typedef int (*llm_gguf_fill_fn)(void *user, const char *name, void *dst,
                                size_t nbytes);

struct llm_gguf_writer *llm_gguf_writer_new(void);
void llm_gguf_writer_free(struct llm_gguf_writer *w);

/* Setting a key that exists replaces its value, keeping its position. */
int llm_gguf_set_u32(struct llm_gguf_writer *w, const char *key, uint32_t v);
int llm_gguf_set_i32(struct llm_gguf_writer *w, const char *key, int32_t v);
int llm_gguf_set_u64(struct llm_gguf_writer *w, const char *key, uint64_t v);
int llm_gguf_set_f32(struct llm_gguf_writer *w, const char *key, float v);
int llm_gguf_set_bool(struct llm_gguf_writer *w, const char *key, bool v);
int llm_gguf_set_str(struct llm_gguf_writer *w, const char *key, const char *v);
/* Numeric array: n elements of type t, copied from data (little-endian). */
int llm_gguf_set_arr(struct llm_gguf_writer *w, const char *key,
                     enum llm_gguf_type t, const void *data, uint64_t n);
int llm_gguf_set_arr_str(struct llm_gguf_writer *w, const char *key,
                         const char *const *strs, const size_t *lens,
                         uint64_t n);
/* Copy key i of a reader, whatever its type. */
int llm_gguf_copy_kv(struct llm_gguf_writer *w, const struct llm_gguf *g,
                     int64_t i);
int llm_gguf_remove_key(struct llm_gguf_writer *w, const char *key);

int llm_gguf_add_tensor(struct llm_gguf_writer *w, const char *name,
                        enum llm_dtype type, int n_dims, const int64_t *ne,
                        const void *data);
int llm_gguf_add_tensor_fill(struct llm_gguf_writer *w, const char *name,
                             enum llm_dtype type, int n_dims, const int64_t *ne,
                             llm_gguf_fill_fn fill, void *user);

/* Write to a stream (no close); bytes written in *written if not NULL. */
int llm_gguf_write_stream(struct llm_gguf_writer *w, FILE *f, uint64_t *written);
/* Write to a path atomically (a temporary file renamed into place), or to
 * standard output when path is "-". */
int llm_gguf_write_file(struct llm_gguf_writer *w, const char *path);

#ifdef __cplusplus
}
#endif
#endif
