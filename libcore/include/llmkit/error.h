/*
 * error.h - status codes and error messages for libllmcore.
 *
 * Library functions never exit and never print.  A function that can fail
 * returns 0 (or a non-negative count) on success and a negative LLM_E* code
 * on failure, after recording a one-line message that names what was wrong
 * ("gguf: model.gguf: tensor blk.3.attn_q.weight: data extends past end of
 * file").  The message is per thread, like errno, and stays until the next
 * failure on that thread.
 *
 * Broken invariants are bugs, not input errors: LLM_ASSERT stays on in
 * release builds and aborts with the file and line.
 */
#ifndef LLMKIT_ERROR_H
#define LLMKIT_ERROR_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

enum llm_status {
	LLM_OK          = 0,
	LLM_EINVAL      = -1,  /* bad argument or option value */
	LLM_ENOMEM      = -2,  /* out of memory, or a buffer/pool is full */
	LLM_EIO         = -3,  /* read/write/open failed (errno in message) */
	LLM_EFORMAT     = -4,  /* malformed input file or data */
	LLM_EUNSUPPORTED = -5, /* valid but not supported (dtype, architecture) */
	LLM_ENOTFOUND   = -6,  /* key, tensor, token or file not found */
	LLM_ERANGE      = -7,  /* value out of range: context full, too long */
	LLM_ECANCELED   = -8,  /* stopped by a callback or a signal */
};

#if defined(__GNUC__)
#define LLM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define LLM_NORETURN __attribute__((noreturn))
#else
#define LLM_PRINTF(a, b)
#define LLM_NORETURN
#endif

/* Record a message for the calling thread and return code (git's error()). */
int llm_error(int code, const char *fmt, ...) LLM_PRINTF(2, 3);
int llm_verror(int code, const char *fmt, va_list ap);

/* Prefix the current message: "what: <old message>". Returns code. */
int llm_error_prefix(int code, const char *fmt, ...) LLM_PRINTF(2, 3);

/* The last message recorded on this thread ("" if none). */
const char *llm_errmsg(void);

/* A short name for a status code. */
const char *llm_strstatus(int code);

LLM_NORETURN void llm_assert_fail(const char *expr, const char *file, int line);

#define LLM_ASSERT(x) \
	((x) ? (void)0 : llm_assert_fail(#x, __FILE__, __LINE__))

#ifdef __cplusplus
}
#endif
#endif
