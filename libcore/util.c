/* util.c - number parsing, atomic output, file reading, clocks. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "config.h"
#include "llmkit/error.h"
#include "llmkit/tensor.h"
#include "llmkit/util.h"

/* ---------------------------------------------------------------- numbers */

/* strto* skip leading white space (and strtoull takes " -1" as 2^64 - 1):
 * a strict parse refuses it up front. */
static bool leading_space(const char *s)
{
	return isspace((unsigned char)*s);
}

int llm_parse_i64(const char *what, const char *s, int64_t min, int64_t max,
                  int64_t *out)
{
	char *end;
	long long v;

	if (!s || !*s)
		return llm_error(LLM_EINVAL, "%s: empty value", what);
	errno = 0;
	v = strtoll(s, &end, 10);
	if (*end || end == s || leading_space(s))
		return llm_error(LLM_EINVAL, "%s: '%s' is not an integer", what, s);
	if (errno == ERANGE || v < min || v > max)
		return llm_error(LLM_EINVAL, "%s: %s is out of range [%lld, %lld]",
		                 what, s, (long long)min, (long long)max);
	*out = v;
	return 0;
}

int llm_parse_int(const char *what, const char *s, int min, int max, int *out)
{
	int64_t v;
	int rc = llm_parse_i64(what, s, min, max, &v);
	if (rc == 0)
		*out = (int)v;
	return rc;
}

int llm_parse_double(const char *what, const char *s, double min, double max,
                     double *out)
{
	char *end;
	double v;

	if (!s || !*s)
		return llm_error(LLM_EINVAL, "%s: empty value", what);
	errno = 0;
	v = strtod(s, &end);
	if (*end || end == s || isnan(v) || leading_space(s))
		return llm_error(LLM_EINVAL, "%s: '%s' is not a number", what, s);
	if (errno == ERANGE || v < min || v > max)
		return llm_error(LLM_EINVAL, "%s: %s is out of range [%g, %g]",
		                 what, s, min, max);
	*out = v;
	return 0;
}

int llm_parse_float(const char *what, const char *s, double min, double max,
                    float *out)
{
	double v;
	int rc = llm_parse_double(what, s, min, max, &v);
	if (rc)
		return rc;
	if (isinf((float)v) && !isinf(v))
		return llm_error(LLM_EINVAL, "%s: %s is out of range for a float",
		                 what, s);
	*out = (float)v;
	return 0;
}

int llm_parse_dtype(const char *what, const char *s, const int *allowed,
                    int n_allowed, int *out)
{
	char names[256] = "";
	int t = llm_dtype_from_name(s ? s : "");
	for (int i = 0; i < n_allowed; i++) {
		if (t == allowed[i]) {
			*out = t;
			return 0;
		}
		snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
		         i ? ", " : "", llm_dtype_name(allowed[i]));
	}
	return llm_error(LLM_EINVAL, "%s: '%s' is not one of %s", what, s ? s : "",
	                 names);
}

int llm_parse_size(const char *what, const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mul = 1;

	if (!s || !*s || *s == '-' || leading_space(s))
		return llm_error(LLM_EINVAL, "%s: '%s' is not a size", what, s ? s : "");
	errno = 0;
	v = strtoull(s, &end, 10);
	if (end == s || errno == ERANGE)
		return llm_error(LLM_EINVAL, "%s: '%s' is not a size", what, s);
	/* [KMGT] then "i" and/or "B" (1M, 1Mi, 1MiB, 1MB), or a bare "B" */
	switch (*end) {
	case 'k': case 'K': mul = 1ull << 10; end++; break;
	case 'm': case 'M': mul = 1ull << 20; end++; break;
	case 'g': case 'G': mul = 1ull << 30; end++; break;
	case 't': case 'T': mul = 1ull << 40; end++; break;
	}
	if (mul > 1 && *end == 'i')
		end++;
	if (*end == 'B')
		end++;
	if (*end || (v && mul > UINT64_MAX / v))
		return llm_error(LLM_EINVAL, "%s: '%s' is not a size", what, s);
	*out = v * mul;
	return 0;
}

/* ---------------------------------------------------------------- output */

int llm_ofile_open(struct llm_ofile **out, const char *path)
{
	struct llm_ofile *o = calloc(1, sizeof(*o));
	int fd;

	if (!o)
		return llm_error(LLM_ENOMEM, "out of memory");
	o->path = strdup(path);
	if (!o->path)
		goto nomem;
	if (!strcmp(path, "-")) {
		o->f = stdout;
		*out = o;
		return 0;
	}
	size_t n = strlen(path) + 16;
	o->tmp = malloc(n);
	if (!o->tmp)
		goto nomem;
	snprintf(o->tmp, n, "%s.tmp.XXXXXX", path);
	fd = mkstemp(o->tmp);
	if (fd < 0) {
		int rc = llm_error(LLM_EIO, "%s: cannot create: %s", path, strerror(errno));
		free(o->tmp);
		free(o->path);
		free(o);
		return rc;
	}
	{
		/* mkstemp makes 0600; give the file the usual umask mode. */
		mode_t um = umask(022);
		umask(um);
		fchmod(fd, 0666 & ~um);
	}
	o->f = fdopen(fd, "wb");
	if (!o->f) {
		close(fd);
		unlink(o->tmp);
		goto nomem;
	}
	*out = o;
	return 0;
nomem:
	free(o->tmp);
	free(o->path);
	free(o);
	return llm_error(LLM_ENOMEM, "out of memory");
}

static void ofile_free(struct llm_ofile *o)
{
	free(o->tmp);
	free(o->path);
	free(o);
}

int llm_ofile_commit(struct llm_ofile *o)
{
	int rc = 0;

	if (!o->tmp) {
		if (fflush(o->f) != 0 || ferror(o->f))
			rc = llm_error(LLM_EIO, "standard output: write failed: %s",
			               strerror(errno));
		ofile_free(o);
		return rc;
	}
	if (fflush(o->f) != 0 || ferror(o->f) || fsync(fileno(o->f)) != 0) {
		rc = llm_error(LLM_EIO, "%s: write failed: %s", o->path, strerror(errno));
		fclose(o->f);
		unlink(o->tmp);
	} else if (fclose(o->f) != 0) {
		rc = llm_error(LLM_EIO, "%s: write failed: %s", o->path, strerror(errno));
		unlink(o->tmp);
	} else if (rename(o->tmp, o->path) != 0) {
		rc = llm_error(LLM_EIO, "%s: cannot rename into place: %s", o->path,
		               strerror(errno));
		unlink(o->tmp);
	}
	ofile_free(o);
	return rc;
}

void llm_ofile_abort(struct llm_ofile *o)
{
	if (!o)
		return;
	if (o->tmp) {
		fclose(o->f);
		unlink(o->tmp);
	} else {
		fflush(o->f);
	}
	ofile_free(o);
}

bool llm_same_file(const char *a, const char *b)
{
	struct stat sa, sb;
	if (!strcmp(a, "-") || !strcmp(b, "-"))
		return false;
	if (stat(a, &sa) != 0 || stat(b, &sb) != 0)
		return false;
	return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* ---------------------------------------------------------------- input */

static int read_fd(int fd, const char *path, unsigned char **out, size_t *size)
{
	size_t cap = 1 << 16, n = 0;
	unsigned char *buf = malloc(cap);

	if (!buf)
		return llm_error(LLM_ENOMEM, "%s: out of memory", path);
	for (;;) {
		if (n == cap) {
			unsigned char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				return llm_error(LLM_ENOMEM, "%s: out of memory", path);
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t got = read(fd, buf + n, cap - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			int rc = llm_error(LLM_EIO, "%s: read failed: %s", path,
			                   strerror(errno));
			free(buf);
			return rc;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	*out = buf;
	*size = n;
	return 0;
}

/* A regular file read into fresh 2 MiB-aligned anonymous memory. */
static int read_private(struct llm_map *m, int fd, const char *path, size_t size)
{
	const size_t huge = 2u << 20;
	size_t span = (size + huge - 1) & ~(huge - 1);
	unsigned char *p = mmap(NULL, span + huge, PROT_READ | PROT_WRITE,
	                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return llm_error(LLM_ENOMEM, "%s: cannot allocate %zu bytes", path, size);
	/* trim to a 2 MiB-aligned span so whole huge pages back it */
	unsigned char *al = (unsigned char *)(((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1));
	if (al > p)
		munmap(p, (size_t)(al - p));
	if (al + span < p + span + huge)
		munmap(al + span, (size_t)(p + span + huge - (al + span)));
#ifdef MADV_HUGEPAGE
	madvise(al, span, MADV_HUGEPAGE);
#endif
	size_t done = 0;
	while (done < size) {
		size_t want = size - done < (64u << 20) ? size - done : (64u << 20);
		ssize_t got = pread(fd, al + done, want, (off_t)done);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			int rc = llm_error(LLM_EIO, "%s: read failed: %s", path,
			                   got < 0 ? strerror(errno) : "file shrank while read");
			munmap(al, span);
			return rc;
		}
		done += (size_t)got;
	}
	mprotect(al, span, PROT_READ);
	m->data = al;
	m->size = size;
	m->span = span;
	m->kind = LLM_MAP_ANON;
	return 0;
}

int llm_map_file(struct llm_map *m, const char *path, unsigned flags)
{
	struct stat st;
	bool is_stdin = !strcmp(path, "-");
	bool streams = flags & LLM_MAP_STREAMS;
	int fd, rc = 0;

	memset(m, 0, sizeof(*m));
	if (is_stdin && !streams)
		return llm_error(LLM_EIO, "standard input: a file is needed here");
	fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return llm_error(errno == ENOENT ? LLM_ENOTFOUND : LLM_EIO, "%s: %s", path,
		                 strerror(errno));
	if (fstat(fd, &st) != 0) {
		rc = llm_error(LLM_EIO, "%s: %s", path, strerror(errno));
	} else if (S_ISDIR(st.st_mode)) {
		rc = llm_error(LLM_EIO, "%s: is a directory", path);
	} else if (!S_ISREG(st.st_mode) || is_stdin) {
		unsigned char *buf = NULL;
		if (!streams)
			rc = llm_error(LLM_EIO, "%s: not a regular file", path);
		else if ((rc = read_fd(fd, is_stdin ? "standard input" : path, &buf,
		                       &m->size)) == 0) {
			m->data = buf;
			m->kind = LLM_MAP_HEAP;
		}
	} else if (st.st_size > 0 && (flags & LLM_MAP_PRIVATE)) {
		rc = read_private(m, fd, path, (size_t)st.st_size);
	} else if (st.st_size > 0) {
		void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p == MAP_FAILED) {
			rc = llm_error(LLM_EIO, "%s: mmap: %s", path, strerror(errno));
		} else {
			m->data = p;
			m->size = (size_t)st.st_size;
			m->kind = LLM_MAP_FILE;
		}
	}
	if (!is_stdin)
		close(fd);
	return rc;
}

void llm_unmap(struct llm_map *m)
{
	switch (m->kind) {
	case LLM_MAP_FILE:
		munmap((void *)m->data, m->size);
		break;
	case LLM_MAP_ANON:
		munmap((void *)m->data, m->span);
		break;
	case LLM_MAP_HEAP:
		free((void *)m->data);
		break;
	case LLM_MAP_NONE:
		break;
	}
	memset(m, 0, sizeof(*m));
}

void llm_map_heap(struct llm_map *m, const void *data, size_t size)
{
	m->data = data;
	m->size = size;
	m->kind = data ? LLM_MAP_HEAP : LLM_MAP_NONE;
	m->span = 0;
}

static int read_stream(FILE *f, const char *name, char **data, size_t *size)
{
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap + 1);

	if (!buf)
		return llm_error(LLM_ENOMEM, "%s: out of memory", name);
	for (;;) {
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (n < cap) {
			if (ferror(f)) {
				free(buf);
				return llm_error(LLM_EIO, "%s: read failed: %s", name,
				                 strerror(errno));
			}
			break;
		}
		char *nb = cap > SIZE_MAX / 4 ? NULL : realloc(buf, cap * 2 + 1);
		if (!nb) {
			free(buf);
			return llm_error(LLM_ENOMEM, "%s: out of memory", name);
		}
		buf = nb;
		cap *= 2;
	}
	buf[n] = 0;
	*data = buf;
	*size = n;
	return 0;
}

static int inflate_gz(const char *name, char *in, size_t n_in, char **data,
                      size_t *size)
{
	z_stream zs;
	size_t cap = n_in * 4 + 1024, n = 0;
	char *out = malloc(cap + 1);
	int zr;

	if (!out)
		return llm_error(LLM_ENOMEM, "%s: out of memory", name);
	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, 15 + 32) != Z_OK) {
		free(out);
		return llm_error(LLM_ENOMEM, "%s: zlib init failed", name);
	}
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)n_in; /* files > 4 GiB: chunk below */
	size_t left_in = n_in - zs.avail_in;
	for (;;) {
		if (n == cap) {
			char *nb = realloc(out, cap * 2 + 1);
			if (!nb) {
				inflateEnd(&zs);
				free(out);
				return llm_error(LLM_ENOMEM, "%s: out of memory", name);
			}
			out = nb;
			cap *= 2;
		}
		zs.next_out = (Bytef *)out + n;
		zs.avail_out = (uInt)(cap - n > UINT_MAX ? UINT_MAX : cap - n);
		size_t before = zs.avail_out;
		zr = inflate(&zs, Z_NO_FLUSH);
		n += before - zs.avail_out;
		if (zr == Z_STREAM_END) {
			/* Concatenated gzip members: keep going. */
			if (zs.avail_in == 0 && left_in == 0)
				break;
			inflateReset(&zs);
			continue;
		}
		if (zr != Z_OK && zr != Z_BUF_ERROR) {
			inflateEnd(&zs);
			free(out);
			return llm_error(LLM_EFORMAT, "%s: corrupt gzip data (%s)", name,
			                 zs.msg ? zs.msg : "inflate failed");
		}
		if (zs.avail_in == 0 && left_in) {
			zs.avail_in = (uInt)(left_in > UINT_MAX ? UINT_MAX : left_in);
			left_in -= zs.avail_in;
		} else if (zr == Z_BUF_ERROR && zs.avail_in == 0) {
			inflateEnd(&zs);
			free(out);
			return llm_error(LLM_EFORMAT, "%s: truncated gzip data", name);
		}
	}
	inflateEnd(&zs);
	out[n] = 0;
	*data = out;
	*size = n;
	return 0;
}

int llm_read_file(const char *path, char **data, size_t *size)
{
	bool is_stdin = !strcmp(path, "-");
	const char *name = is_stdin ? "standard input" : path;
	FILE *f = is_stdin ? stdin : fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0;
	int rc;

	if (!f)
		return llm_error(errno == ENOENT ? LLM_ENOTFOUND : LLM_EIO,
		                 "%s: %s", path, strerror(errno));
	rc = read_stream(f, name, &buf, &n);
	if (!is_stdin)
		fclose(f);
	if (rc)
		return rc;
	if (n >= 2 && (unsigned char)buf[0] == 0x1f && (unsigned char)buf[1] == 0x8b) {
		rc = inflate_gz(name, buf, n, data, size);
		free(buf);
		return rc;
	}
	*data = buf;
	*size = n;
	return 0;
}

/* ---------------------------------------------------------------- clocks */

double llm_time_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double llm_time_cpu(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

/* ---------------------------------------------------------------- utf-8 */

int64_t llm_utf8_invalid_at(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < n) {
		unsigned c = s[i];
		size_t len;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			len = 2; cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			len = 3; cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			len = 4; cp = c & 0x07;
		} else {
			return (int64_t)i;
		}
		if (i + len > n)
			return (int64_t)i;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return (int64_t)i;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		/* overlong, surrogates, beyond U+10FFFF */
		if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
		    (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return (int64_t)i;
		i += len;
	}
	return -1;
}

/* ---------------------------------------------------------------- models */

int llm_find_model(const char *name, char *out, size_t n)
{
	char dirs[5][2048];
	int nd = 0;
	const char *e;

	if (strchr(name, '/') || access(name, F_OK) == 0 || !strcmp(name, "-")) {
		if ((size_t)snprintf(out, n, "%s", name) >= n)
			return llm_error(LLM_EINVAL, "model path too long");
		return 0;
	}
	if ((e = getenv("LLMKIT_MODELS")) && *e)
		snprintf(dirs[nd++], sizeof(dirs[0]), "%s", e);
	if ((e = getenv("LLMKIT_DATA")) && *e)
		snprintf(dirs[nd++], sizeof(dirs[0]), "%s/models", e);
	if ((e = getenv("XDG_DATA_HOME")) && *e)
		snprintf(dirs[nd++], sizeof(dirs[0]), "%s/llmkit/models", e);
	else if ((e = getenv("HOME")) && *e)
		snprintf(dirs[nd++], sizeof(dirs[0]), "%s/.local/share/llmkit/models", e);
	snprintf(dirs[nd++], sizeof(dirs[0]), "%s/models", LLMKIT_DATA_DIR);
	for (int i = 0; i < nd; i++) {
		if ((size_t)snprintf(out, n, "%s/%s", dirs[i], name) >= n)
			continue;
		if (access(out, R_OK) == 0)
			return 0;
	}
	char where[4096] = "";
	for (int i = 0; i < nd; i++) {
		strncat(where, i ? ", " : "", sizeof(where) - strlen(where) - 1);
		strncat(where, dirs[i], sizeof(where) - strlen(where) - 1);
	}
	return llm_error(LLM_ENOTFOUND, "model %s not found (looked in %s; run "
	                 "scripts/get-model.sh, or set LLMKIT_MODELS)", name, where);
}
