/* error.c - per-thread error messages (see error.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmkit/error.h"

#define MSG_MAX 1024

static _Thread_local char msg[MSG_MAX];

int llm_verror(int code, const char *fmt, va_list ap)
{
	vsnprintf(msg, sizeof(msg), fmt, ap);
	return code;
}

int llm_error(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	llm_verror(code, fmt, ap);
	va_end(ap);
	return code;
}

int llm_error_prefix(int code, const char *fmt, ...)
{
	char old[MSG_MAX];
	size_t n;
	va_list ap;

	memcpy(old, msg, sizeof(old));
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	n = strlen(msg);
	if (n + 2 < sizeof(msg)) {
		memcpy(msg + n, ": ", 3);
		n += 2;
		strncat(msg + n, old, sizeof(msg) - n - 1);
	}
	return code;
}

const char *llm_errmsg(void)
{
	return msg;
}

const char *llm_strstatus(int code)
{
	switch (code) {
	case LLM_OK:           return "success";
	case LLM_EINVAL:       return "invalid argument";
	case LLM_ENOMEM:       return "out of memory";
	case LLM_EIO:          return "input/output error";
	case LLM_EFORMAT:      return "malformed data";
	case LLM_EUNSUPPORTED: return "not supported";
	case LLM_ENOTFOUND:    return "not found";
	case LLM_ERANGE:       return "out of range";
	case LLM_ECANCELED:    return "canceled";
	}
	return "unknown error";
}

void llm_assert_fail(const char *expr, const char *file, int line)
{
	fprintf(stderr, "llmkit: %s:%d: assertion failed: %s\n", file, line, expr);
	abort();
}
