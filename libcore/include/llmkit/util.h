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
 * A whole input file in memory, read-only.  A regular file is mapped.  With
 * streams set, a pipe, a device or "-" (standard input) is read whole from
 * its descriptor instead - opened once: reopening a FIFO would leave it
 * without a reader for a moment, and a writer caught then dies of SIGPIPE;
 * without it they are LLM_EIO ("not a regular file").  llm_unmap releases
 * either kind.
 */
struct llm_map {
	const unsigned char *data;
	size_t size;
	bool mapped;      /* else malloc'd (the caller may take it over) */
};

int llm_map_file(struct llm_map *m, const char *path, bool streams);
void llm_unmap(struct llm_map *m);

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
