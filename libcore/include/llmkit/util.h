/*
 * util.h - small helpers shared by libcore and the programs: strict number
 * parsing, atomic output files, whole-file reading (gzip transparently),
 * clocks.
 */
#ifndef LLMKIT_UTIL_H
#define LLMKIT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Strict parsing: the whole string must be a number in [min, max]; returns
 * 0, or LLM_EINVAL with a message naming what (e.g. "-n") and the text.
 */
int llm_parse_i64(const char *what, const char *s, int64_t min, int64_t max,
                  int64_t *out);
int llm_parse_int(const char *what, const char *s, int min, int max, int *out);
int llm_parse_float(const char *what, const char *s, double min, double max,
                    float *out);
int llm_parse_double(const char *what, const char *s, double min, double max,
                     double *out);
/* A dtype name among the allowed ones ("f16", "f32" ...). */
int llm_parse_dtype(const char *what, const char *s, const int *allowed,
                    int n_allowed, int *out);

/* "512M", "2G", "1048576" -> bytes. */
int llm_parse_size(const char *what, const char *s, uint64_t *out);

/*
 * Atomic output.  llm_ofile_open creates "<path>.tmp.XXXXXX" beside path
 * (or uses stdout for "-"); llm_ofile_commit flushes, checks every write
 * and renames it over path; llm_ofile_abort removes it.  Either one frees
 * the object.
 */
struct llm_ofile {
	FILE *f;
	char *path;
	char *tmp;      /* NULL for stdout */
};

int llm_ofile_open(struct llm_ofile **out, const char *path);
int llm_ofile_commit(struct llm_ofile *o);
void llm_ofile_abort(struct llm_ofile *o);

/* True when both paths name the same existing file. */
bool llm_same_file(const char *a, const char *b);

/*
 * A whole input file in memory, read-only.  By default a regular file is
 * mapped.  Flags:
 *
 *   LLM_MAP_STREAMS  also take a pipe, a device or "-" (standard input),
 *                    read whole from its descriptor - opened once:
 *                    reopening a FIFO would leave it without a reader for a
 *                    moment, and a writer caught then dies of SIGPIPE.
 *                    Without it they are LLM_EIO ("not a regular file").
 *   LLM_MAP_PRIVATE  read a regular file into private memory on 2 MiB pages
 *                    instead of mapping it.  Costs the read at load time;
 *                    pays it back wherever the data is streamed over again
 *                    and again (model weights), since 4 KiB pages make every
 *                    page of it a TLB miss - and on virtual machines each
 *                    miss a two-level page walk.
 *
 * llm_unmap releases any kind.
 */
enum llm_map_kind { LLM_MAP_NONE, LLM_MAP_HEAP, LLM_MAP_FILE, LLM_MAP_ANON };

struct llm_map {
	const unsigned char *data;
	size_t size;
	enum llm_map_kind kind;
	size_t span;          /* bytes mapped (LLM_MAP_ANON) */
};

#define LLM_MAP_STREAMS 1u
#define LLM_MAP_PRIVATE 2u

int llm_map_file(struct llm_map *m, const char *path, unsigned flags);
void llm_unmap(struct llm_map *m);
/* Adopt a malloc'd buffer (released with free() by llm_unmap). */
void llm_map_heap(struct llm_map *m, const void *data, size_t size);

/* Read a whole file ("-" = stdin); .gz (by magic) is inflated.  The buffer
 * is NUL-terminated (not counted in *size) and must be freed. */
int llm_read_file(const char *path, char **data, size_t *size);

/*
 * Where models live.  A name with a '/' (or an existing file) is used as
 * it is; a bare name is looked for in $LLMKIT_MODELS, $LLMKIT_DATA/models,
 * $XDG_DATA_HOME/llmkit/models (~/.local/share/llmkit/models) and the data
 * directory given to configure, in that order.  LLM_ENOTFOUND lists where
 * it looked.
 */
#define LLM_DEFAULT_MODEL "stories260K.gguf"
int llm_find_model(const char *name, char *out, size_t n);

/* Seconds from a monotonic clock; CPU seconds of the process. */
double llm_time_now(void);
double llm_time_cpu(void);

/* Validate UTF-8: returns the byte offset of the first invalid sequence,
 * or -1 when the whole string is valid. */
int64_t llm_utf8_invalid_at(const char *s, size_t n);

#ifdef __cplusplus
}
#endif
#endif
