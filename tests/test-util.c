/*
 * test-util.c - number parsing, atomic output files, whole-file reading
 * (plain and gzip), UTF-8 validation, and the f16/bf16 conversions.
 *
 * The conversions are checked exhaustively where that is cheap (all 65536
 * halves), against an integer reference of round-to-nearest-even for
 * f32 -> f16 (and against the F16C instruction when the CPU has it), on
 * every halfway point and a few million random floats.
 */
#include <check.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_F16C_TEST 1
#endif

#include "llmkit/error.h"
#include "llmkit/tensor.h"
#include "llmkit/util.h"
#include "testutil.h"

/* ---------------------------------------------------------------- helpers */

static char tmpdir[4096];

static void make_tmpdir(void)
{
	const char *t = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/test-util.XXXXXX", t && *t ? t : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
}

static int count_dir_entries(const char *dir)
{
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dir);
	FILE *p = popen(cmd, "r");
	int n = -1;
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(p, 1, n, f), n);
	ck_assert_int_eq(fclose(f), 0);
}

/* One gzip member holding n bytes of p (zlib's deflate, gzip wrapper). */
static unsigned char *gzip_member(const void *p, size_t n, size_t *out_n)
{
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	ck_assert_int_eq(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8,
	                              Z_DEFAULT_STRATEGY), Z_OK);
	size_t cap = deflateBound(&zs, n) + 64;
	unsigned char *out = malloc(cap);
	zs.next_in = (Bytef *)p;
	zs.avail_in = (uInt)n;
	zs.next_out = out;
	zs.avail_out = (uInt)cap;
	ck_assert_int_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
	*out_n = cap - zs.avail_out;
	deflateEnd(&zs);
	return out;
}

static float bits_f32(uint32_t b)
{
	float f;
	memcpy(&f, &b, 4);
	return f;
}

static uint32_t f32_bits(float f)
{
	uint32_t b;
	memcpy(&b, &f, 4);
	return b;
}

/* xorshift64*: reproducible random bits */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd32(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

/* ---------------------------------------------------------------- parsing */

START_TEST(test_parse_int)
{
	int v = -1;
	int64_t w = -1;

	ck_assert_int_eq(llm_parse_int("-n", "42", 0, 100, &v), 0);
	ck_assert_int_eq(v, 42);
	ck_assert_int_eq(llm_parse_int("-n", "-7", -10, 10, &v), 0);
	ck_assert_int_eq(v, -7);
	ck_assert_int_eq(llm_parse_int("-n", "+5", 0, 10, &v), 0);
	ck_assert_int_eq(v, 5);
	ck_assert_int_eq(llm_parse_int("-n", "0", 0, 0, &v), 0);
	ck_assert_int_eq(v, 0);

	static const char *bad[] = { "abc", "", "12x", "x12", "1 2", " 12", "12 ",
	                             "\t3", "1.5", "0x10", "1e3", "-", "+", "--1",
	                             "12\n" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 99;
		ck_assert_msg(llm_parse_int("-n", bad[i], -1000, 1000, &v) == LLM_EINVAL,
		              "'%s' accepted", bad[i]);
		ck_assert_int_eq(v, 99);
		ck_assert_ptr_nonnull(strstr(llm_errmsg(), "-n"));
	}
	ck_assert_int_eq(llm_parse_int("--threads", "abc", 0, 9, &v), LLM_EINVAL);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "--threads"));
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "abc"));
	ck_assert_int_eq(llm_parse_int("-n", NULL, 0, 9, &v), LLM_EINVAL);

	/* ranges, and overflow of int and of int64 */
	ck_assert_int_eq(llm_parse_int("-n", "101", 0, 100, &v), LLM_EINVAL);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "out of range"));
	ck_assert_int_eq(llm_parse_int("-n", "-1", 0, 100, &v), LLM_EINVAL);
	ck_assert_int_eq(llm_parse_int("-n", "2147483647", INT32_MIN, INT32_MAX, &v), 0);
	ck_assert_int_eq(v, INT32_MAX);
	ck_assert_int_eq(llm_parse_int("-n", "-2147483648", INT32_MIN, INT32_MAX, &v), 0);
	ck_assert_int_eq(v, INT32_MIN);
	ck_assert_int_eq(llm_parse_int("-n", "2147483648", INT32_MIN, INT32_MAX, &v),
	                 LLM_EINVAL);
	ck_assert_int_eq(llm_parse_int("-n", "-2147483649", INT32_MIN, INT32_MAX, &v),
	                 LLM_EINVAL);
	ck_assert_int_eq(llm_parse_int("-n", "99999999999999999999", INT32_MIN,
	                               INT32_MAX, &v), LLM_EINVAL);
	ck_assert_int_eq(llm_parse_i64("-s", "9223372036854775807", INT64_MIN,
	                               INT64_MAX, &w), 0);
	ck_assert_int_eq(w, INT64_MAX);
	ck_assert_int_eq(llm_parse_i64("-s", "-9223372036854775808", INT64_MIN,
	                               INT64_MAX, &w), 0);
	ck_assert_int_eq(w, INT64_MIN);
	w = 5;
	ck_assert_int_eq(llm_parse_i64("-s", "9223372036854775808", INT64_MIN,
	                               INT64_MAX, &w), LLM_EINVAL);
	ck_assert_int_eq(llm_parse_i64("-s", "-9223372036854775809", INT64_MIN,
	                               INT64_MAX, &w), LLM_EINVAL);
	ck_assert_int_eq(w, 5);
	ck_assert_int_eq(llm_parse_i64("-s", "1000000", 0, 999999, &w), LLM_EINVAL);
}
END_TEST

START_TEST(test_parse_float)
{
	float f = 0;
	double d = 0;

	ck_assert_int_eq(llm_parse_float("--temp", "0.8", 0, 2, &f), 0);
	ck_assert_float_eq(f, 0.8f);
	ck_assert_int_eq(llm_parse_float("--temp", "1e-5", 0, 1, &f), 0);
	ck_assert_float_eq(f, 1e-5f);
	ck_assert_int_eq(llm_parse_float("--x", "-3", -5, 5, &f), 0);
	ck_assert_float_eq(f, -3.0f);
	ck_assert_int_eq(llm_parse_double("--x", "0.1", 0, 1, &d), 0);
	ck_assert_double_eq(d, 0.1);
	ck_assert_int_eq(llm_parse_double("--x", "2", 2, 2, &d), 0);
	ck_assert_double_eq(d, 2.0);

	static const char *bad[] = { "abc", "", "1.5x", "x1", " 1", "1 ", "nan",
	                             "NaN", "-nan", ".", "e5", "1e", "--1", "1,5" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f = 42;
		ck_assert_msg(llm_parse_float("--temp", bad[i], -1e9, 1e9, &f) ==
		              LLM_EINVAL, "'%s' accepted", bad[i]);
		ck_assert_float_eq(f, 42);
		ck_assert_ptr_nonnull(strstr(llm_errmsg(), "--temp"));
		ck_assert_msg(llm_parse_double("--x", bad[i], -1e9, 1e9, &d) ==
		              LLM_EINVAL, "'%s' accepted", bad[i]);
	}
	/* ranges and overflow */
	ck_assert_int_eq(llm_parse_float("--temp", "2.5", 0, 2, &f), LLM_EINVAL);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "out of range"));
	ck_assert_int_eq(llm_parse_float("--temp", "-0.1", 0, 2, &f), LLM_EINVAL);
	ck_assert_int_eq(llm_parse_double("--x", "1e400", -INFINITY, INFINITY, &d),
	                 LLM_EINVAL);
	ck_assert_int_eq(llm_parse_double("--x", "-1e400", -INFINITY, INFINITY, &d),
	                 LLM_EINVAL);
	ck_assert_int_eq(llm_parse_double("--x", "inf", -1e300, 1e300, &d), LLM_EINVAL);
	/* fits a double, not a float: refused rather than turned into inf */
	ck_assert_int_eq(llm_parse_float("--x", "1e39", -INFINITY, INFINITY, &f),
	                 LLM_EINVAL);
	ck_assert_int_eq(llm_parse_float("--x", "-1e39", -INFINITY, INFINITY, &f),
	                 LLM_EINVAL);
	ck_assert_int_eq(llm_parse_float("--x", "3.4e38", -INFINITY, INFINITY, &f), 0);
	ck_assert(isfinite(f));
	ck_assert_int_eq(llm_parse_double("--x", "1e300", -INFINITY, INFINITY, &d), 0);
	ck_assert_double_eq(d, 1e300);
}
END_TEST

START_TEST(test_parse_size)
{
	static const struct { const char *s; uint64_t v; } good[] = {
		{ "0", 0 }, { "1048576", 1048576 }, { "1G", 1ull << 30 },
		{ "1g", 1ull << 30 }, { "512M", 512ull << 20 }, { "4k", 4096 },
		{ "2K", 2048 }, { "3T", 3ull << 40 }, { "1B", 1 }, { "10MB", 10ull << 20 },
		{ "10MiB", 10ull << 20 }, { "7Gi", 7ull << 30 }, { "1KiB", 1024 },
		{ "18446744073709551615", UINT64_MAX }, { "16777215T", 16777215ull << 40 },
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		uint64_t v = 1;
		ck_assert_msg(llm_parse_size("--mem", good[i].s, &v) == 0, "'%s': %s",
		              good[i].s, llm_errmsg());
		ck_assert_msg(v == good[i].v, "'%s' -> %llu", good[i].s,
		              (unsigned long long)v);
	}
	static const char *bad[] = { "", "abc", "G", "-1", " -1", " 1", "1 ", "1.5G",
	                             "1GG", "1X", "1i", "1iB", "1BB", "1Gb", "+-1",
	                             "18446744073709551616", "16777216T",
	                             "17179869184G", "1E" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t v = 77;
		ck_assert_msg(llm_parse_size("--mem", bad[i], &v) == LLM_EINVAL,
		              "'%s' accepted as %llu", bad[i], (unsigned long long)v);
		ck_assert_uint_eq(v, 77);
		ck_assert_ptr_nonnull(strstr(llm_errmsg(), "--mem"));
	}
	uint64_t v;
	ck_assert_int_eq(llm_parse_size("--mem", NULL, &v), LLM_EINVAL);
}
END_TEST

/* ---------------------------------------------------------------- ofile */

START_TEST(test_ofile_commit_abort)
{
	struct llm_ofile *o;
	char path[4200], *p;
	size_t n;

	make_tmpdir();
	snprintf(path, sizeof(path), "%s/out.txt", tmpdir);

	/* the temporary sits beside the target; the target appears on commit */
	ck_assert_int_eq(llm_ofile_open(&o, path), 0);
	ck_assert_ptr_nonnull(o->tmp);
	ck_assert_int_eq(strncmp(o->tmp, path, strlen(path)), 0);
	ck_assert_ptr_nonnull(strstr(o->tmp + strlen(path), ".tmp."));
	ck_assert_ptr_null(strchr(o->tmp + strlen(tmpdir) + 1, '/'));
	ck_assert_int_eq(access(o->tmp, F_OK), 0);
	ck_assert_int_eq(access(path, F_OK), -1);
	fputs("first version\n", o->f);
	char tmp_name[4300];
	snprintf(tmp_name, sizeof(tmp_name), "%s", o->tmp);
	ck_assert_int_eq(llm_ofile_commit(o), 0);
	ck_assert_int_eq(access(tmp_name, F_OK), -1);
	ck_assert_int_eq(count_dir_entries(tmpdir), 1);
	ck_assert_int_eq(llm_read_file(path, &p, &n), 0);
	ck_assert_str_eq(p, "first version\n");
	free(p);

	/* the usual mode, not mkstemp's 0600 */
	struct stat st;
	mode_t um = umask(022);
	umask(um);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0666 & ~um);

	/* abort: the old file stays, the temporary goes */
	ck_assert_int_eq(llm_ofile_open(&o, path), 0);
	fputs("half written", o->f);
	snprintf(tmp_name, sizeof(tmp_name), "%s", o->tmp);
	ck_assert_int_eq(count_dir_entries(tmpdir), 2);
	llm_ofile_abort(o);
	ck_assert_int_eq(access(tmp_name, F_OK), -1);
	ck_assert_int_eq(count_dir_entries(tmpdir), 1);
	ck_assert_int_eq(llm_read_file(path, &p, &n), 0);
	ck_assert_str_eq(p, "first version\n");
	free(p);

	/* abort with no old file leaves nothing */
	snprintf(path, sizeof(path), "%s/new.txt", tmpdir);
	ck_assert_int_eq(llm_ofile_open(&o, path), 0);
	fputs("x", o->f);
	llm_ofile_abort(o);
	ck_assert_int_eq(access(path, F_OK), -1);
	ck_assert_int_eq(count_dir_entries(tmpdir), 1);
	llm_ofile_abort(NULL);

	/* commit replaces an existing file */
	snprintf(path, sizeof(path), "%s/out.txt", tmpdir);
	ck_assert_int_eq(llm_ofile_open(&o, path), 0);
	fputs("second", o->f);
	ck_assert_int_eq(llm_ofile_commit(o), 0);
	ck_assert_int_eq(llm_read_file(path, &p, &n), 0);
	ck_assert_str_eq(p, "second");
	free(p);
	ck_assert_int_eq(count_dir_entries(tmpdir), 1);

	/* a directory that does not exist */
	snprintf(path, sizeof(path), "%s/no/such/file", tmpdir);
	o = NULL;
	ck_assert_int_eq(llm_ofile_open(&o, path), LLM_EIO);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), path));

	/* "-" is standard output, nothing to rename */
	ck_assert_int_eq(llm_ofile_open(&o, "-"), 0);
	ck_assert_ptr_eq(o->f, stdout);
	ck_assert_ptr_null(o->tmp);
	ck_assert_int_eq(llm_ofile_commit(o), 0);

	/* same file */
	ck_assert(llm_same_file(path, path) == false);    /* does not exist */
	snprintf(path, sizeof(path), "%s/out.txt", tmpdir);
	char alias[4300];
	snprintf(alias, sizeof(alias), "%s/./out.txt", tmpdir);
	ck_assert(llm_same_file(path, alias));
	ck_assert(!llm_same_file(path, "-"));
	remove_tmpdir();
}
END_TEST

/* A write that fails (file size limit): commit reports it and leaves
 * neither the target nor the temporary. */
START_TEST(test_ofile_write_error)
{
	struct llm_ofile *o;
	struct rlimit old, lim;
	char path[4200];

	make_tmpdir();
	snprintf(path, sizeof(path), "%s/big.out", tmpdir);
	ck_assert_int_eq(llm_ofile_open(&o, path), 0);
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 4096;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	static char block[100000];
	fwrite(block, 1, sizeof(block), o->f);
	int rc = llm_ofile_commit(o);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	ck_assert_int_eq(rc, LLM_EIO);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), path));
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "write failed"));
	ck_assert_int_eq(count_dir_entries(tmpdir), 0);
	remove_tmpdir();
}
END_TEST

/* ---------------------------------------------------------------- read */

START_TEST(test_read_file)
{
	char path[4200], *p;
	size_t n;

	make_tmpdir();
	snprintf(path, sizeof(path), "%s/plain.txt", tmpdir);
	write_bytes(path, "hello\0world", 11);
	ck_assert_int_eq(llm_read_file(path, &p, &n), 0);
	ck_assert_uint_eq(n, 11);
	ck_assert_mem_eq(p, "hello\0world", 12);   /* and the terminator */
	free(p);

	snprintf(path, sizeof(path), "%s/empty", tmpdir);
	write_bytes(path, "", 0);
	ck_assert_int_eq(llm_read_file(path, &p, &n), 0);
	ck_assert_uint_eq(n, 0);
	ck_assert_int_eq(p[0], 0);
	free(p);

	/* bigger than the first buffer (64 KiB) */
	size_t big_n = 1000003;
	char *big = malloc(big_n);
	for (size_t i = 0; i < big_n; i++)
		big[i] = (char)(rnd32() & 0xff);
	big[0] = 'x';     /* not a gzip magic */
	snprintf(path, sizeof(path), "%s/big.bin", tmpdir);
	write_bytes(path, big, big_n);
	ck_assert_int_eq(llm_read_file(path, &p, &n), 0);
	ck_assert_uint_eq(n, big_n);
	ck_assert(memcmp(p, big, n) == 0);
	free(p);

	snprintf(path, sizeof(path), "%s/missing", tmpdir);
	ck_assert_int_eq(llm_read_file(path, &p, &n), LLM_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), path));

	/* standard input */
	snprintf(path, sizeof(path), "%s/plain.txt", tmpdir);
	ck_assert_ptr_nonnull(freopen(path, "rb", stdin));
	ck_assert_int_eq(llm_read_file("-", &p, &n), 0);
	ck_assert_uint_eq(n, 11);
	free(p);
	free(big);
	remove_tmpdir();
}
END_TEST

START_TEST(test_read_gzip)
{
	char path[4200], *p;
	size_t n, gz_n, gz2_n;

	make_tmpdir();

	/* one member */
	const char *text = "The quick brown fox jumps over the lazy dog.\n";
	unsigned char *gz = gzip_member(text, strlen(text), &gz_n);
	snprintf(path, sizeof(path), "%s/one.gz", tmpdir);
	write_bytes(path, gz, gz_n);
	ck_assert_int_eq(llm_read_file(path, &p, &n), 0);
	ck_assert_uint_eq(n, strlen(text));
	ck_assert_str_eq(p, text);
	free(p);

	/* highly compressible: the output buffer must grow many times */
	size_t zn = 5u << 20;
	char *zeros = calloc(1, zn);
	unsigned char *gzz = gzip_member(zeros, zn, &gz2_n);
	ck_assert_uint_lt(gz2_n * 100, zn);
	snprintf(path, sizeof(path), "%s/zeros.gz", tmpdir);
	write_bytes(path, gzz, gz2_n);
	ck_assert_int_eq(llm_read_file(path, &p, &n), 0);
	ck_assert_uint_eq(n, zn);
	ck_assert(memcmp(p, zeros, zn) == 0);
	free(p);

	/* concatenated members read as one stream (as gzip -d does) */
	unsigned char *gz2 = gzip_member("second member", 13, &gz2_n);
	unsigned char *cat = malloc(gz_n + gz2_n + gz_n);
	memcpy(cat, gz, gz_n);
	memcpy(cat + gz_n, gz2, gz2_n);
	memcpy(cat + gz_n + gz2_n, gz, gz_n);
	snprintf(path, sizeof(path), "%s/cat.gz", tmpdir);
	write_bytes(path, cat, gz_n + gz2_n + gz_n);
	ck_assert_int_eq(llm_read_file(path, &p, &n), 0);
	ck_assert_uint_eq(n, 2 * strlen(text) + 13);
	ck_assert_int_eq(memcmp(p, text, strlen(text)), 0);
	ck_assert_int_eq(memcmp(p + strlen(text), "second member", 13), 0);
	ck_assert_int_eq(memcmp(p + strlen(text) + 13, text, strlen(text)), 0);
	free(p);

	/* every truncation of a member is an error, in the data or the trailer */
	snprintf(path, sizeof(path), "%s/cut.gz", tmpdir);
	for (size_t k = 2; k < gz_n; k++) {
		write_bytes(path, gz, k);
		int rc = llm_read_file(path, &p, &n);
		ck_assert_msg(rc == LLM_EFORMAT, "cut at %zu of %zu: rc %d", k, gz_n, rc);
		ck_assert_ptr_nonnull(strstr(llm_errmsg(), path));
	}
	/* a second member cut short */
	write_bytes(path, cat, gz_n + gz2_n / 2);
	ck_assert_int_eq(llm_read_file(path, &p, &n), LLM_EFORMAT);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "truncated"));

	/* corrupt data and trailing garbage */
	unsigned char *bad = malloc(gz_n + 4);
	memcpy(bad, gz, gz_n);
	bad[gz_n - 6] ^= 0xff;                  /* the CRC */
	snprintf(path, sizeof(path), "%s/bad.gz", tmpdir);
	write_bytes(path, bad, gz_n);
	ck_assert_int_eq(llm_read_file(path, &p, &n), LLM_EFORMAT);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "corrupt"));
	memcpy(bad, gz, gz_n);
	memcpy(bad + gz_n, "junk", 4);
	write_bytes(path, bad, gz_n + 4);
	ck_assert_int_eq(llm_read_file(path, &p, &n), LLM_EFORMAT);
	write_bytes(path, "\x1f\x8b", 2);
	ck_assert_int_eq(llm_read_file(path, &p, &n), LLM_EFORMAT);

	free(bad);
	free(cat);
	free(gz);
	free(gz2);
	free(gzz);
	free(zeros);
	remove_tmpdir();
}
END_TEST

/* ---------------------------------------------------------------- utf-8 */

/* Unicode's table of well-formed byte sequences (Table 3-7), as a second
 * opinion: the length of the valid sequence at s, or 0. */
static size_t ref_utf8_len(const unsigned char *s, size_t n)
{
	static const struct { unsigned char lo[4], hi[4]; size_t len; } rows[] = {
		{ { 0x00 }, { 0x7f }, 1 },
		{ { 0xc2, 0x80 }, { 0xdf, 0xbf }, 2 },
		{ { 0xe0, 0xa0, 0x80 }, { 0xe0, 0xbf, 0xbf }, 3 },
		{ { 0xe1, 0x80, 0x80 }, { 0xec, 0xbf, 0xbf }, 3 },
		{ { 0xed, 0x80, 0x80 }, { 0xed, 0x9f, 0xbf }, 3 },
		{ { 0xee, 0x80, 0x80 }, { 0xef, 0xbf, 0xbf }, 3 },
		{ { 0xf0, 0x90, 0x80, 0x80 }, { 0xf0, 0xbf, 0xbf, 0xbf }, 4 },
		{ { 0xf1, 0x80, 0x80, 0x80 }, { 0xf3, 0xbf, 0xbf, 0xbf }, 4 },
		{ { 0xf4, 0x80, 0x80, 0x80 }, { 0xf4, 0x8f, 0xbf, 0xbf }, 4 },
	};
	for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
		if (s[0] < rows[r].lo[0] || s[0] > rows[r].hi[0])
			continue;
		if (rows[r].len > n)
			return 0;
		for (size_t k = 1; k < rows[r].len; k++)
			if (s[k] < rows[r].lo[k] || s[k] > rows[r].hi[k])
				return 0;
		return rows[r].len;
	}
	return 0;
}

static int64_t ref_utf8_invalid_at(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t l = ref_utf8_len(s + i, n - i);
		if (!l)
			return (int64_t)i;
		i += l;
	}
	return -1;
}

START_TEST(test_utf8)
{
	static const struct { const char *s; size_t n; int64_t at; } cases[] = {
		{ "", 0, -1 },
		{ "plain ascii", 11, -1 },
		{ "nul\0inside", 10, -1 },
		{ "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, -1 },
		{ "\xef\xbf\xbf\xf4\x8f\xbf\xbf", 7, -1 },        /* U+FFFF, U+10FFFF */
		{ "ab\x80", 3, 2 },                                /* lone continuation */
		{ "a\xc3", 2, 1 },                                 /* truncated 2-byte */
		{ "ab\xe2\x82", 4, 2 },                            /* truncated 3-byte */
		{ "\xf0\x9f\x98", 3, 0 },                          /* truncated 4-byte */
		{ "x\xc3(", 3, 1 },                                /* bad continuation */
		{ "\xc0\x80", 2, 0 },                              /* overlong NUL */
		{ "\xc1\xbf", 2, 0 },                              /* overlong 0x7f */
		{ "ok\xe0\x80\xaf", 5, 2 },                        /* overlong '/' */
		{ "\xe0\x9f\xbf", 3, 0 },                          /* overlong U+07FF */
		{ "\xf0\x8f\xbf\xbf", 4, 0 },                      /* overlong U+FFFF */
		{ "\xed\xa0\x80", 3, 0 },                          /* surrogate D800 */
		{ "a\xed\xbf\xbf", 4, 1 },                         /* surrogate DFFF */
		{ "\xed\x9f\xbf\xed\xa0\x80", 6, 3 },              /* D7FF ok, D800 not */
		{ "\xf4\x90\x80\x80", 4, 0 },                      /* U+110000 */
		{ "\xf5\x80\x80\x80", 4, 0 },
		{ "\xf8\x88\x80\x80\x80", 5, 0 },                  /* 5-byte form */
		{ "\xfe", 1, 0 }, { "\xff", 1, 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int64_t at = llm_utf8_invalid_at(cases[i].s, cases[i].n);
		ck_assert_msg(at == cases[i].at, "case %zu: %lld, expected %lld", i,
		              (long long)at, (long long)cases[i].at);
	}
	/* only the first n bytes count */
	ck_assert_int_eq(llm_utf8_invalid_at("ok\xff", 2), -1);

	/* every sequence of up to three bytes, and random four-byte ones,
	 * against the table */
	unsigned char s[6];
	for (uint32_t v = 0; v < (1u << 24); v++) {
		s[0] = v >> 16;
		s[1] = v >> 8;
		s[2] = v;
		for (size_t n = 1; n <= 3; n++) {
			if (n < 3 && (v & ((1u << (8 * (3 - n))) - 1)))
				continue;
			int64_t a = llm_utf8_invalid_at((const char *)s, n);
			int64_t b = ref_utf8_invalid_at(s, n);
			if (a != b)
				ck_abort_msg("%02x %02x %02x (n %zu): %lld, table says %lld",
				             s[0], s[1], s[2], n, (long long)a, (long long)b);
		}
	}
	for (int i = 0; i < 2000000; i++) {
		uint32_t r = rnd32();
		s[0] = 0xf0 | (r & 7);          /* lead bytes f0..f7 */
		s[1] = 0x80 | ((r >> 3) & 0x3f);
		s[2] = 0x80 | ((r >> 9) & 0x3f);
		s[3] = (r >> 15) & 0xff;
		s[4] = 'z';
		int64_t a = llm_utf8_invalid_at((const char *)s, 5);
		int64_t b = ref_utf8_invalid_at(s, 5);
		if (a != b)
			ck_abort_msg("%02x %02x %02x %02x: %lld, table says %lld", s[0],
			             s[1], s[2], s[3], (long long)a, (long long)b);
	}
}
END_TEST

/* ---------------------------------------------------------------- f16 */

/* The value of a half by its definition. */
static double ref_f16_value(uint16_t h)
{
	int e = (h >> 10) & 0x1f, m = h & 0x3ff;
	double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
	return h & 0x8000 ? -v : v;
}

/*
 * f32 -> f16 with round-to-nearest-even, in integers: x = M * 2^(E-23)
 * (M with its implicit bit), the half's step in x's binade is
 * 2^(max(E,-14)-10), so the half's significand is M / 2^s with
 * s = 13 + max(E,-14) - E, rounded on the bits shifted out.
 */
static uint16_t ref_f32_to_f16(float f)
{
	uint32_t x = f32_bits(f);
	uint16_t sign = (x >> 16) & 0x8000;
	uint32_t ebits = (x >> 23) & 0xff, man = x & 0x7fffff;
	if (ebits == 0xff)
		return sign | (man ? 0x7e00 : 0x7c00);
	int E = ebits ? (int)ebits - 127 : -126;
	uint64_t M = ebits ? (man | 0x800000) : man;
	int emin = E > -14 ? E : -14;
	int s = 13 + emin - E;
	uint64_t q, r, half;
	if (s >= 40) {
		q = 0;
		r = M;
		half = UINT64_MAX;               /* far below half a step */
	} else {
		q = M >> s;
		r = M & ((1ull << s) - 1);
		half = 1ull << (s - 1);
	}
	if (r > half || (r == half && (q & 1)))
		q++;
	/* q is the significand with its implicit bit (1024..2048) for a
	 * normal half; the exponent field counts from there */
	uint32_t h = E >= -14 ? (uint32_t)(emin + 14) * 1024 + (uint32_t)q
	                      : (uint32_t)q;
	if (h >= 0x7c00)
		h = 0x7c00;
	return sign | (uint16_t)h;
}

#ifdef HAVE_F16C_TEST
__attribute__((target("f16c"))) static uint16_t f16c_f32_to_f16(float f)
{
	return (uint16_t)_cvtss_sh(f, 0);  /* round to nearest even */
}

__attribute__((target("f16c"))) static float f16c_f16_to_f32(uint16_t h)
{
	return _cvtsh_ss(h);
}
#endif

static bool f16_is_nan(uint16_t h)
{
	return (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
}

START_TEST(test_f16_exhaustive)
{
	for (uint32_t i = 0; i < 65536; i++) {
		uint16_t h = (uint16_t)i;
		float f = llm_f16_to_f32(h);
		uint16_t back = llm_f32_to_f16(f);
		if (f16_is_nan(h)) {
			ck_assert_msg(isnan(f), "%04x -> %g", h, f);
			ck_assert_msg(f16_is_nan(back), "%04x -> nan -> %04x", h, back);
			ck_assert_uint_eq(back & 0x8000, h & 0x8000);
			continue;
		}
		ck_assert_msg(back == h, "%04x -> %.9g -> %04x", h, f, back);
		if ((h & 0x7c00) == 0x7c00)
			ck_assert(isinf(f) && (f < 0) == ((h & 0x8000) != 0));
		else
			ck_assert_msg((double)f == ref_f16_value(h), "%04x -> %.9g, not %.9g",
			              h, f, ref_f16_value(h));
		ck_assert_uint_eq(ref_f32_to_f16(f), h);   /* the reference agrees */
	}
	ck_assert_float_eq(llm_f16_to_f32(0x3c00), 1.0f);
	ck_assert_float_eq(llm_f16_to_f32(0x7bff), 65504.0f);
	ck_assert_float_eq(llm_f16_to_f32(0x0001), ldexpf(1, -24));
	ck_assert(signbit(llm_f16_to_f32(0x8000)));
}
END_TEST

static void check_f32_to_f16(float f)
{
	uint16_t got = llm_f32_to_f16(f), want = ref_f32_to_f16(f);
	if (isnan(f)) {
		if (!f16_is_nan(got) || (got & 0x8000) != (want & 0x8000))
			ck_abort_msg("nan %08x -> %04x", f32_bits(f), got);
		return;
	}
	if (got != want)
		ck_abort_msg("%08x (%.9g) -> %04x, expected %04x", f32_bits(f), f, got,
		             want);
}

START_TEST(test_f32_to_f16_rounding)
{
	/* every halfway point between neighbouring halves, and the floats just
	 * either side of it: the cases rounding gets wrong */
	for (uint32_t i = 0; i < 0x7c00; i++) {
		for (int sg = 0; sg < 2; sg++) {
			double lo = ref_f16_value((uint16_t)i);
			double hi = i + 1 < 0x7c00 ? ref_f16_value((uint16_t)(i + 1)) : 65536.0;
			float mid = (float)((lo + hi) / 2);   /* exact in float */
			ck_assert((double)mid == (lo + hi) / 2);
			if (sg)
				mid = -mid;
			check_f32_to_f16(mid);
			check_f32_to_f16(nextafterf(mid, INFINITY));
			check_f32_to_f16(nextafterf(mid, -INFINITY));
		}
	}
	/* specials */
	ck_assert_uint_eq(llm_f32_to_f16(65504.0f), 0x7bff);
	ck_assert_uint_eq(llm_f32_to_f16(65519.99f), 0x7bff);
	ck_assert_uint_eq(llm_f32_to_f16(65520.0f), 0x7c00);
	ck_assert_uint_eq(llm_f32_to_f16(1e10f), 0x7c00);
	ck_assert_uint_eq(llm_f32_to_f16(-INFINITY), 0xfc00);
	ck_assert_uint_eq(llm_f32_to_f16(ldexpf(1, -25)), 0);          /* tie -> 0 */
	ck_assert_uint_eq(llm_f32_to_f16(nextafterf(ldexpf(1, -25), 1)), 1);
	ck_assert_uint_eq(llm_f32_to_f16(ldexpf(3, -25)), 2);          /* tie -> even */
	ck_assert_uint_eq(llm_f32_to_f16(FLT_MIN), 0);
	ck_assert_uint_eq(llm_f32_to_f16(-0.0f), 0x8000);
	ck_assert(f16_is_nan(llm_f32_to_f16(NAN)));
	ck_assert(f16_is_nan(llm_f32_to_f16(bits_f32(0x7f800001))));  /* signalling */
	ck_assert(f16_is_nan(llm_f32_to_f16(bits_f32(0xffc00000))));

	/* all floats of every 97th bit pattern, and 4 million random ones */
	for (uint64_t b = 0; b < (1ull << 32); b += 97)
		check_f32_to_f16(bits_f32((uint32_t)b));
	for (int i = 0; i < 4000000; i++)
		check_f32_to_f16(bits_f32(rnd32()));
}
END_TEST

#ifdef HAVE_F16C_TEST
START_TEST(test_f16_vs_f16c)
{
	unsigned eax, ebx, ecx, edx;
	/* F16C is VEX-encoded: it needs the OS's AVX support too */
	if (!__builtin_cpu_supports("avx") || !__get_cpuid(1, &eax, &ebx, &ecx, &edx) ||
	    !(ecx & bit_F16C)) {
		fprintf(stderr, "test-util: CPU without F16C: hardware check skipped\n");
		return;
	}
	for (uint32_t i = 0; i < 65536; i++) {
		float a = llm_f16_to_f32((uint16_t)i), b = f16c_f16_to_f32((uint16_t)i);
		ck_assert(f32_bits(a) == f32_bits(b) || (isnan(a) && isnan(b)));
	}
	for (int i = 0; i < 4000000; i++) {
		/* random floats, biased half the time to the f16 range */
		uint32_t r = rnd32();
		if (i & 1)
			r = (r & 0x807fffff) | ((uint32_t)(101 + (rnd32() % 45)) << 23);
		float f = bits_f32(r);
		uint16_t got = llm_f32_to_f16(f), hw = f16c_f32_to_f16(f);
		if (isnan(f))
			ck_assert(f16_is_nan(got) && f16_is_nan(hw));
		else if (got != hw)
			ck_abort_msg("%08x: %04x, F16C says %04x", r, got, hw);
	}
}
END_TEST
#endif

/* ---------------------------------------------------------------- bf16 */

static uint16_t ref_f32_to_bf16(uint32_t x)
{
	uint32_t up = x >> 16, lo = x & 0xffff;
	if ((x & 0x7fffffff) > 0x7f800000)
		return 0;    /* nan: checked separately */
	if (lo > 0x8000 || (lo == 0x8000 && (up & 1)))
		up++;
	return (uint16_t)up;
}

START_TEST(test_bf16)
{
	/* bf16 -> f32 is exact: the high half of the bits */
	for (uint32_t i = 0; i < 65536; i++) {
		float f = llm_bf16_to_f32((uint16_t)i);
		ck_assert_uint_eq(f32_bits(f), i << 16);
		uint16_t back = llm_f32_to_bf16(f);
		if (isnan(f))
			ck_assert((back & 0x7f80) == 0x7f80 && (back & 0x7f) &&
			          (back & 0x8000) == (i & 0x8000));
		else
			ck_assert_uint_eq(back, i);
	}
	/* below, at and above every halfway point */
	static const uint32_t lows[] = { 0x0000, 0x0001, 0x7fff, 0x8000, 0x8001,
	                                 0xffff };
	for (uint32_t up = 0; up < 65536; up++) {
		for (size_t k = 0; k < 6; k++) {
			uint32_t x = up << 16 | lows[k];
			uint16_t got = llm_f32_to_bf16(bits_f32(x));
			if ((x & 0x7fffffff) > 0x7f800000) {
				ck_assert_msg((got & 0x7f80) == 0x7f80 && (got & 0x7f),
				              "nan %08x -> %04x", x, got);
				continue;
			}
			if (got != ref_f32_to_bf16(x))
				ck_abort_msg("%08x -> %04x, expected %04x", x, got,
				             ref_f32_to_bf16(x));
		}
	}
	for (int i = 0; i < 4000000; i++) {
		uint32_t x = rnd32();
		uint16_t got = llm_f32_to_bf16(bits_f32(x));
		if ((x & 0x7fffffff) > 0x7f800000)
			ck_assert((got & 0x7f80) == 0x7f80 && (got & 0x7f));
		else if (got != ref_f32_to_bf16(x))
			ck_abort_msg("%08x -> %04x, expected %04x", x, got,
			             ref_f32_to_bf16(x));
	}
	ck_assert_uint_eq(llm_f32_to_bf16(1.0f), 0x3f80);
	ck_assert_uint_eq(llm_f32_to_bf16(FLT_MAX), 0x7f80);   /* rounds to inf */
	ck_assert_uint_eq(llm_f32_to_bf16(-INFINITY), 0xff80);
	/* a nan whose payload lives only in the low half stays a nan */
	ck_assert_uint_eq(llm_f32_to_bf16(bits_f32(0x7f800001)) & 0x7fc0, 0x7fc0);
}
END_TEST

/* The dtype table and row sizes. */
START_TEST(test_dtype_traits)
{
	ck_assert_str_eq(llm_dtype_name(LLM_F32), "f32");
	ck_assert_str_eq(llm_dtype_name(LLM_Q4_K), "q4_k");
	ck_assert_str_eq(llm_dtype_name(4), "unknown");
	ck_assert_str_eq(llm_dtype_name(-1), "unknown");
	ck_assert_str_eq(llm_dtype_name(LLM_DTYPE_COUNT), "unknown");
	ck_assert_int_eq(llm_dtype_from_name("BF16"), LLM_BF16);
	ck_assert_int_eq(llm_dtype_from_name("q8_0"), LLM_Q8_0);
	ck_assert_int_eq(llm_dtype_from_name("q9_9"), -1);
	ck_assert_ptr_null(llm_dtype_traits(31));
	ck_assert_uint_eq(llm_row_size(LLM_F16, 10), 20);
	ck_assert_uint_eq(llm_row_size(LLM_Q4_0, 64), 36);
	ck_assert_uint_eq(llm_row_size(LLM_Q4_0, 33), 0);
	ck_assert_uint_eq(llm_row_size(LLM_Q6_K, 512), 420);
	ck_assert_uint_eq(llm_row_size(LLM_F32, -4), 0);
	ck_assert_uint_eq(llm_row_size(LLM_F64, INT64_C(1) << 61), 0);   /* overflow */
	ck_assert_uint_eq(llm_row_size(LLM_F64, INT64_C(1) << 60), UINT64_C(1) << 63);
	for (int t = 0; t < LLM_DTYPE_COUNT; t++) {
		const struct llm_dtype_traits *tr = llm_dtype_traits(t);
		if (!tr)
			continue;
		ck_assert_int_eq(llm_dtype_from_name(tr->name), t);
		ck_assert_int_gt(tr->block_size, 0);
		ck_assert_uint_gt(tr->type_size, 0);
		ck_assert_uint_eq(llm_row_size(t, tr->block_size), tr->type_size);
	}
	struct llm_tensor t = { .type = LLM_Q8_0, .n_dims = 3, .ne = { 64, 3, 2, 1 } };
	ck_assert_int_eq(llm_tensor_nelements(&t), 384);
	ck_assert_uint_eq(llm_tensor_row_size(&t), 68);

	/* the row converters of f16 and bf16 match the scalar ones */
	const struct llm_dtype_traits *h = llm_dtype_traits(LLM_F16);
	float src[5] = { 1.0f, -2.5f, 65519.0f, 1e-7f, 0.1f }, dst[5];
	uint16_t q[5];
	h->from_float(src, q, 5);
	h->to_float(q, dst, 5);
	for (int i = 0; i < 5; i++) {
		ck_assert_uint_eq(q[i], llm_f32_to_f16(src[i]));
		ck_assert_float_eq(dst[i], llm_f16_to_f32(q[i]));
	}
}
END_TEST

START_TEST(test_clocks)
{
	double t0 = llm_time_now(), c0 = llm_time_cpu();
	volatile double x = 0;
	for (int i = 0; i < 20000000; i++)
		x += i * 0.5;
	double t1 = llm_time_now(), c1 = llm_time_cpu();
	ck_assert(t1 > t0);
	ck_assert(c1 > c0);
	ck_assert(t1 - t0 < 60);
}
END_TEST

static Suite *util_suite(void)
{
	Suite *s = suite_create("util");
	TCase *tc = tcase_create("parse");
	tcase_add_test(tc, test_parse_int);
	tcase_add_test(tc, test_parse_float);
	tcase_add_test(tc, test_parse_size);
	suite_add_tcase(s, tc);

	tc = tcase_create("files");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_ofile_commit_abort);
	tcase_add_test(tc, test_ofile_write_error);
	tcase_add_test(tc, test_read_file);
	tcase_add_test(tc, test_read_gzip);
	suite_add_tcase(s, tc);

	tc = tcase_create("text and numbers");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_utf8);
	tcase_add_test(tc, test_f16_exhaustive);
	tcase_add_test(tc, test_f32_to_f16_rounding);
#ifdef HAVE_F16C_TEST
	tcase_add_test(tc, test_f16_vs_f16c);
#endif
	tcase_add_test(tc, test_bf16);
	tcase_add_test(tc, test_dtype_traits);
	tcase_add_test(tc, test_clocks);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	int failed = test_run(util_suite());
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
