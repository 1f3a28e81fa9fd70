/*
 * test-gguf.c - the GGUF reader and writer.
 *
 * Facts about stories260K.gguf (from $LLMKIT_DATA/models), a byte-identical
 * copy through the writer, every value type written and read back, reading
 * from a pipe and a FIFO, and a list of malformed files that must each be
 * refused with LLM_EFORMAT and a message naming the file and the problem -
 * among them every truncation of a small valid file, and the inputs the
 * fuzzer (tests/fuzz/fuzz-gguf.c) once crashed on.
 *
 * The tests that need the model are skipped when it is absent; the suite
 * then exits 77 (SKIP) unless something failed.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llmkit/error.h"
#include "llmkit/gguf.h"
#include "llmkit/util.h"
#include "testutil.h"

static char model_path[4096];
static bool have_model;

/* ---------------------------------------------------------------- helpers */

/* A growing byte buffer for hand-built files. */
struct buf {
	unsigned char *p;
	size_t n, cap;
};

static void b_raw(struct buf *b, const void *p, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		ck_assert_ptr_nonnull(b->p);
	}
	if (n)
		memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void b_u32(struct buf *b, uint32_t v) { b_raw(b, &v, 4); }
static void b_u64(struct buf *b, uint64_t v) { b_raw(b, &v, 8); }
static void b_u8(struct buf *b, uint8_t v) { b_raw(b, &v, 1); }

static void b_str(struct buf *b, const char *s)
{
	b_u64(b, strlen(s));
	b_raw(b, s, strlen(s));
}

static void b_header(struct buf *b, uint32_t version, uint64_t n_t, uint64_t n_kv)
{
	b->n = 0;
	b_u32(b, LLM_GGUF_MAGIC);
	b_u32(b, version);
	b_u64(b, n_t);
	b_u64(b, n_kv);
}

/* A tensor description: name, dims, dtype, offset (at most 5 ne). */
static void b_tensor(struct buf *b, const char *name, uint32_t n_dims,
                     const uint64_t *ne, uint32_t type, uint64_t off)
{
	b_str(b, name);
	b_u32(b, n_dims);
	for (uint32_t d = 0; d < n_dims && d < 5; d++)
		b_u64(b, ne[d]);
	b_u32(b, type);
	b_u64(b, off);
}

static void b_pad(struct buf *b, size_t align)
{
	while (b->n % align)
		b_u8(b, 0);
}

static void b_zeros(struct buf *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		b_u8(b, 0);
}

/* Parse bytes (copied); the gguf or NULL, status in *rc. */
static struct llm_gguf *parse(const void *p, size_t n, const char *name, int *rc)
{
	struct llm_gguf *g = NULL;
	*rc = llm_gguf_from_memory(&g, p, n, name, false);
	if (*rc)
		ck_assert_ptr_null(g);
	return g;
}

/* The bytes must be refused as malformed, with a message naming them and
 * containing what. */
static void expect_bad_(const struct buf *b, const char *what, int line)
{
	char name[64];
	struct llm_gguf *g;
	int rc;

	snprintf(name, sizeof(name), "bad-%d.gguf", line);
	g = parse(b->p, b->n, name, &rc);
	ck_assert_msg(rc == LLM_EFORMAT, "line %d: expected LLM_EFORMAT, got %d "
	              "(%s)", line, rc, llm_errmsg());
	ck_assert_ptr_null(g);
	ck_assert_msg(strstr(llm_errmsg(), name), "line %d: message does not name "
	              "the file: %s", line, llm_errmsg());
	ck_assert_msg(strstr(llm_errmsg(), what), "line %d: message lacks '%s': %s",
	              line, what, llm_errmsg());
}
#define expect_bad(b, what) expect_bad_(b, what, __LINE__)

static char *write_mem(struct llm_gguf_writer *w, size_t *n)
{
	char *p = NULL;
	uint64_t written = 0;
	FILE *f = open_memstream(&p, n);
	ck_assert_ptr_nonnull(f);
	int rc = llm_gguf_write_stream(w, f, &written);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_msg(rc == 0, "write: %s", llm_errmsg());
	ck_assert_uint_eq(written, *n);
	return p;
}

static struct llm_gguf *open_model(void)
{
	struct llm_gguf *g = NULL;
	int rc = llm_gguf_open(&g, model_path);
	ck_assert_msg(rc == 0, "%s", llm_errmsg());
	return g;
}

static char tmpdir[4096];

static void make_tmpdir(void)
{
	const char *t = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/test-gguf.XXXXXX", t && *t ? t : "/tmp");
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

/* Two readers hold the same keys, values and tensors. */
static void assert_same(const struct llm_gguf *a, const struct llm_gguf *b)
{
	ck_assert_int_eq(llm_gguf_n_kv(a), llm_gguf_n_kv(b));
	ck_assert_int_eq(llm_gguf_n_tensors(a), llm_gguf_n_tensors(b));
	ck_assert_uint_eq(llm_gguf_alignment(a), llm_gguf_alignment(b));
	for (int64_t i = 0; i < llm_gguf_n_kv(a); i++) {
		ck_assert_str_eq(llm_gguf_key(a, i), llm_gguf_key(b, i));
		enum llm_gguf_type t = llm_gguf_kv_type(a, i);
		ck_assert_int_eq(t, llm_gguf_kv_type(b, i));
		ck_assert_int_eq(llm_gguf_arr_type(a, i), llm_gguf_arr_type(b, i));
		ck_assert_uint_eq(llm_gguf_arr_n(a, i), llm_gguf_arr_n(b, i));
		if (t == LLM_GGUF_STRING)
			ck_assert_str_eq(llm_gguf_str(a, i), llm_gguf_str(b, i));
		for (uint64_t j = 0; j < llm_gguf_arr_n(a, i); j++) {
			size_t la, lb;
			const char *sa = llm_gguf_arr_str(a, i, j, &la);
			const char *sb = llm_gguf_arr_str(b, i, j, &lb);
			ck_assert((sa == NULL) == (sb == NULL));
			if (sa) {
				ck_assert_uint_eq(la, lb);
				ck_assert_mem_eq(sa, sb, la);
			}
		}
	}
	for (int64_t i = 0; i < llm_gguf_n_tensors(a); i++) {
		const struct llm_gguf_tensor *x = llm_gguf_tensor(a, i);
		const struct llm_gguf_tensor *y = llm_gguf_tensor(b, i);
		ck_assert_str_eq(x->name, y->name);
		ck_assert_int_eq(x->type, y->type);
		ck_assert_int_eq(x->n_dims, y->n_dims);
		ck_assert_mem_eq(x->ne, y->ne, sizeof(x->ne));
		ck_assert_uint_eq(x->offset, y->offset);
		ck_assert_uint_eq(x->nbytes, y->nbytes);
		ck_assert(x->nbytes == 0 || memcmp(x->data, y->data, x->nbytes) == 0);
	}
}

/* ---------------------------------------------------------------- model */

START_TEST(test_model_facts)
{
	struct llm_gguf *g = open_model();
	uint32_t u;
	int64_t i64;
	float f;
	const char *s;

	ck_assert_str_eq(llm_gguf_path(g), model_path);
	ck_assert_uint_eq(llm_gguf_version(g), 3);
	ck_assert_uint_eq(llm_gguf_file_size(g), 1185376);
	ck_assert_uint_eq(llm_gguf_alignment(g), 32);
	ck_assert_int_eq(llm_gguf_n_tensors(g), 48);
	ck_assert_int_eq(llm_gguf_n_kv(g), 19);

	ck_assert_int_eq(llm_gguf_get_u32(g, "llama.block_count", &u), 0);
	ck_assert_uint_eq(u, 5);
	ck_assert_int_eq(llm_gguf_get_u32(g, "llama.embedding_length", &u), 0);
	ck_assert_uint_eq(u, 64);
	ck_assert_int_eq(llm_gguf_get_u32(g, "llama.feed_forward_length", &u), 0);
	ck_assert_uint_eq(u, 172);
	ck_assert_int_eq(llm_gguf_get_u32(g, "llama.attention.head_count", &u), 0);
	ck_assert_uint_eq(u, 8);
	ck_assert_int_eq(llm_gguf_get_u32(g, "llama.attention.head_count_kv", &u), 0);
	ck_assert_uint_eq(u, 4);
	ck_assert_int_eq(llm_gguf_get_u32(g, "llama.context_length", &u), 0);
	ck_assert_uint_eq(u, 2048);
	ck_assert_int_eq(llm_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u), 0);
	ck_assert_uint_eq(u, 1);
	ck_assert_int_eq(llm_gguf_get_i64(g, "tokenizer.ggml.eos_token_id", &i64), 0);
	ck_assert_int_eq(i64, 2);
	ck_assert_int_eq(llm_gguf_get_u32(g, "tokenizer.ggml.padding_token_id", &u), 0);
	ck_assert_uint_eq(u, UINT32_MAX);
	ck_assert_int_eq(llm_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon",
	                                  &f), 0);
	ck_assert_float_eq(f, 1e-5f);
	ck_assert_int_eq(llm_gguf_get_str(g, "general.architecture", &s), 0);
	ck_assert_str_eq(s, "llama");
	ck_assert_int_eq(llm_gguf_get_str(g, "tokenizer.ggml.model", &s), 0);
	ck_assert_str_eq(s, "llama");

	/* the kinds of value, and wrong-type lookups */
	int64_t k = llm_gguf_find_key(g, "tokenizer.ggml.tokens");
	ck_assert_int_eq(k, 0);
	ck_assert_int_eq(llm_gguf_kv_type(g, k), LLM_GGUF_ARRAY);
	ck_assert_int_eq(llm_gguf_arr_type(g, k), LLM_GGUF_STRING);
	ck_assert_uint_eq(llm_gguf_arr_n(g, k), 512);
	size_t len;
	ck_assert_str_eq(llm_gguf_arr_str(g, k, 0, &len), "<unk>");
	ck_assert_uint_eq(len, 5);
	ck_assert_str_eq(llm_gguf_arr_str(g, k, 1, NULL), "<s>");
	ck_assert_str_eq(llm_gguf_arr_str(g, k, 2, NULL), "</s>");
	ck_assert_ptr_null(llm_gguf_arr_str(g, k, 512, NULL));
	ck_assert_ptr_null(llm_gguf_arr_data(g, k));
	k = llm_gguf_find_key(g, "tokenizer.ggml.token_type");
	ck_assert_int_eq(llm_gguf_arr_type(g, k), LLM_GGUF_I32);
	ck_assert_uint_eq(llm_gguf_arr_n(g, k), 512);
	ck_assert_int_eq(((const int32_t *)llm_gguf_arr_data(g, k))[0], 2);
	k = llm_gguf_find_key(g, "tokenizer.ggml.scores");
	ck_assert_int_eq(llm_gguf_arr_type(g, k), LLM_GGUF_F32);
	k = llm_gguf_find_key(g, "llama.block_count");
	ck_assert_int_eq(llm_gguf_kv_type(g, k), LLM_GGUF_U32);
	ck_assert_int_eq(llm_gguf_arr_type(g, k), LLM_GGUF_TYPE_COUNT);
	ck_assert_uint_eq(llm_gguf_arr_n(g, k), 0);
	ck_assert_ptr_null(llm_gguf_str(g, k));
	ck_assert_int_eq(llm_gguf_find_key(g, "no.such.key"), -1);
	u = 77;
	ck_assert_int_eq(llm_gguf_get_u32(g, "no.such.key", &u), LLM_ENOTFOUND);
	ck_assert_uint_eq(u, 77);
	ck_assert_int_eq(llm_gguf_get_str(g, "llama.block_count", &s), LLM_EFORMAT);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "llama.block_count"));
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), model_path));
	ck_assert_int_eq(llm_gguf_get_u32(g, "general.name", &u), LLM_EFORMAT);
	bool bv;
	ck_assert_int_eq(llm_gguf_get_bool(g, "llama.block_count", &bv), LLM_EFORMAT);
	ck_assert_int_eq(llm_gguf_get_f32(g, "llama.block_count", &f), 0);
	ck_assert_float_eq(f, 5.0f);

	/* tensors: names, shapes, offsets, the first values */
	const struct llm_gguf_tensor *t = llm_gguf_tensor(g, 0);
	ck_assert_str_eq(t->name, "token_embd.weight");
	ck_assert_int_eq(t->type, LLM_F32);
	ck_assert_int_eq(t->n_dims, 2);
	ck_assert_int_eq(t->ne[0], 64);
	ck_assert_int_eq(t->ne[1], 512);
	ck_assert_int_eq(t->ne[2], 1);
	ck_assert_int_eq(t->ne[3], 1);
	ck_assert_uint_eq(t->offset, 0);
	ck_assert_uint_eq(t->nbytes, 64 * 512 * 4);
	const float *x = t->data;
	ck_assert_float_eq_tol(x[0], -0.29474878f, 1e-7f);
	ck_assert_float_eq_tol(x[1], 0.5618956f, 1e-7f);
	const struct llm_gguf_tensor *o = llm_gguf_find_tensor(g, "output.weight");
	ck_assert_ptr_eq(o, llm_gguf_tensor(g, 2));
	ck_assert_uint_eq(o->nbytes, t->nbytes);
	ck_assert_mem_eq(o->data, t->data, t->nbytes);  /* tied embeddings */
	t = llm_gguf_find_tensor(g, "output_norm.weight");
	ck_assert_int_eq(t->n_dims, 1);
	ck_assert_int_eq(t->ne[0], 64);
	x = t->data;
	ck_assert_float_eq_tol(x[0], 2.458309f, 1e-6f);
	ck_assert_float_eq_tol(x[1], 1.3673227f, 1e-6f);
	t = llm_gguf_find_tensor(g, "blk.0.ffn_down.weight");
	ck_assert_int_eq(t->ne[0], 172);
	ck_assert_int_eq(t->ne[1], 64);
	ck_assert_uint_eq(t->nbytes, 172 * 64 * 4);
	t = llm_gguf_find_tensor(g, "blk.4.attn_k.weight");
	ck_assert_int_eq(t->ne[0], 64);
	ck_assert_int_eq(t->ne[1], 32);
	t = llm_gguf_tensor(g, 47);
	ck_assert_str_eq(t->name, "blk.4.ffn_norm.weight");
	ck_assert_uint_eq(t->offset + t->nbytes, 1185376 - 14176);
	ck_assert_ptr_null(llm_gguf_tensor(g, 48));
	ck_assert_ptr_null(llm_gguf_tensor(g, -1));
	ck_assert_ptr_null(llm_gguf_find_tensor(g, "blk.5.attn_q.weight"));

	/* tensor data points at the right bytes of the file (data at 14176) */
	char *file;
	size_t size;
	ck_assert_int_eq(llm_read_file(model_path, &file, &size), 0);
	ck_assert_uint_eq(size, 1185376);
	for (int64_t i = 0; i < llm_gguf_n_tensors(g); i++) {
		t = llm_gguf_tensor(g, i);
		ck_assert_uint_eq(t->offset % 32, 0);
		ck_assert_mem_eq(t->data, file + 14176 + t->offset, t->nbytes);
	}
	free(file);
	llm_gguf_free(g);
}
END_TEST

/* Copy every key and tensor through the writer: the same bytes. */
START_TEST(test_model_roundtrip)
{
	struct llm_gguf *g = open_model();
	struct llm_gguf_writer *w = llm_gguf_writer_new();
	ck_assert_ptr_nonnull(w);
	for (int64_t i = 0; i < llm_gguf_n_kv(g); i++)
		ck_assert_int_eq(llm_gguf_copy_kv(w, g, i), 0);
	for (int64_t i = 0; i < llm_gguf_n_tensors(g); i++) {
		const struct llm_gguf_tensor *t = llm_gguf_tensor(g, i);
		ck_assert_int_eq(llm_gguf_add_tensor(w, t->name, t->type, t->n_dims,
		                                     t->ne, t->data), 0);
	}
	make_tmpdir();
	char path[4200];
	snprintf(path, sizeof(path), "%s/copy.gguf", tmpdir);
	ck_assert_msg(llm_gguf_write_file(w, path) == 0, "%s", llm_errmsg());
	ck_assert_int_eq(count_dir_entries(tmpdir), 1);  /* no temporary left */

	char *a, *b;
	size_t na, nb;
	ck_assert_int_eq(llm_read_file(model_path, &a, &na), 0);
	ck_assert_int_eq(llm_read_file(path, &b, &nb), 0);
	ck_assert_uint_eq(na, nb);
	ck_assert(memcmp(a, b, na) == 0);

	size_t nm;
	char *m = write_mem(w, &nm);
	ck_assert_uint_eq(nm, na);
	ck_assert(memcmp(a, m, na) == 0);

	free(a);
	free(b);
	free(m);
	llm_gguf_writer_free(w);
	llm_gguf_free(g);
	remove_tmpdir();
}
END_TEST

/* Feed the model to llm_gguf_open through a pipe on standard input and
 * through a FIFO: the same as the mapped file. */
static pid_t feed(const char *src, int fd)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char *p;
		size_t n;
		if (llm_read_file(src, &p, &n))
			_exit(1);
		for (size_t off = 0; off < n;) {
			/* small writes, so the reader sees many short reads */
			size_t k = n - off < 4093 ? n - off : 4093;
			ssize_t r = write(fd, p + off, k);
			if (r <= 0)
				_exit(1);
			off += (size_t)r;
		}
		_exit(0);
	}
	return pid;
}

START_TEST(test_model_pipe)
{
	struct llm_gguf *ref = open_model();
	struct llm_gguf *g = NULL;
	int fds[2], status;

	ck_assert_int_eq(pipe(fds), 0);
	pid_t pid = feed(model_path, fds[1]);
	close(fds[1]);
	ck_assert_int_ge(dup2(fds[0], STDIN_FILENO), 0);
	close(fds[0]);
	ck_assert_msg(llm_gguf_open(&g, "-") == 0, "%s", llm_errmsg());
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_str_eq(llm_gguf_path(g), "standard input");
	ck_assert_uint_eq(llm_gguf_file_size(g), llm_gguf_file_size(ref));
	assert_same(ref, g);
	llm_gguf_free(g);

	make_tmpdir();
	char fifo[4200];
	snprintf(fifo, sizeof(fifo), "%s/model.fifo", tmpdir);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = open(fifo, O_WRONLY);
		if (fd < 0)
			_exit(1);
		pid_t inner = feed(model_path, fd);
		close(fd);
		int st;
		_exit(waitpid(inner, &st, 0) == inner && WIFEXITED(st) ?
		      WEXITSTATUS(st) : 1);
	}
	g = NULL;
	ck_assert_msg(llm_gguf_open(&g, fifo) == 0, "%s", llm_errmsg());
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_str_eq(llm_gguf_path(g), fifo);
	assert_same(ref, g);
	llm_gguf_free(g);

	/* a truncated pipe is an error, not a crash */
	ck_assert_int_eq(pipe(fds), 0);
	pid = fork();
	if (pid == 0) {
		char *p;
		size_t n;
		close(fds[0]);
		if (llm_read_file(model_path, &p, &n) || write(fds[1], p, 20000) != 20000)
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	ck_assert_int_ge(dup2(fds[0], STDIN_FILENO), 0);
	close(fds[0]);
	g = NULL;
	ck_assert_int_eq(llm_gguf_open(&g, "-"), LLM_EFORMAT);
	ck_assert_ptr_null(g);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "standard input"));
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "past end of file"));
	waitpid(pid, &status, 0);

	llm_gguf_free(ref);
	remove_tmpdir();
}
END_TEST

/* ---------------------------------------------------------------- writer */

struct fill_log {
	int calls;
	char last[64];
	size_t last_n;
};

static int fill_pattern(void *user, const char *name, void *dst, size_t n)
{
	struct fill_log *log = user;
	log->calls++;
	snprintf(log->last, sizeof(log->last), "%s", name);
	log->last_n = n;
	for (size_t i = 0; i < n; i++)
		((unsigned char *)dst)[i] = (unsigned char)(i * 13 + strlen(name));
	return 0;
}

static int fill_fail(void *user, const char *name, void *dst, size_t n)
{
	return llm_error(LLM_ECANCELED, "fill %s: refused", name);
}

/* A raw file whose keys hold nested arrays: [[1,2],[3]] and [["ab"],[]]. */
static struct llm_gguf *nested_source(void)
{
	struct buf b = { 0 };
	int rc;
	b_header(&b, 3, 0, 2);
	b_str(&b, "nested.u8");
	b_u32(&b, LLM_GGUF_ARRAY); b_u32(&b, LLM_GGUF_ARRAY); b_u64(&b, 2);
	b_u32(&b, LLM_GGUF_U8); b_u64(&b, 2); b_u8(&b, 1); b_u8(&b, 2);
	b_u32(&b, LLM_GGUF_U8); b_u64(&b, 1); b_u8(&b, 3);
	b_str(&b, "nested.str");
	b_u32(&b, LLM_GGUF_ARRAY); b_u32(&b, LLM_GGUF_ARRAY); b_u64(&b, 2);
	b_u32(&b, LLM_GGUF_STRING); b_u64(&b, 1); b_str(&b, "ab");
	b_u32(&b, LLM_GGUF_STRING); b_u64(&b, 0);
	struct llm_gguf *g = parse(b.p, b.n, "nested.gguf", &rc);
	ck_assert_msg(rc == 0, "%s", llm_errmsg());
	free(b.p);
	return g;
}

START_TEST(test_writer_all_types)
{
	struct llm_gguf_writer *w = llm_gguf_writer_new();
	struct llm_gguf *nest = nested_source();
	struct fill_log log = { 0 };
	uint8_t u8[] = { 0, 1, 255 };
	int8_t i8[] = { -128, 0, 127 };
	uint16_t u16[] = { 0, 65535 };
	int16_t i16[] = { -32768, 32767 };
	uint32_t u32[] = { 0, UINT32_MAX };
	int32_t i32[] = { INT32_MIN, -1, INT32_MAX };
	float f32[] = { 0.25f, -INFINITY, 1e-40f };
	uint8_t bools[] = { 1, 0, 1, 1 };
	uint64_t u64[] = { UINT64_MAX, 1 };
	int64_t i64[] = { INT64_MIN, INT64_MAX };
	double f64[] = { 1e308, -5e-324, 0.1 };
	const char *strs[] = { "alpha", "", "w\xc3\xb6rld", "nul\0inside" };
	size_t lens[] = { 5, 0, 6, 10 };
	struct { const char *key; enum llm_gguf_type t; const void *p; uint64_t n;
	         size_t es; } arrs[] = {
		{ "a.u8", LLM_GGUF_U8, u8, 3, 1 }, { "a.i8", LLM_GGUF_I8, i8, 3, 1 },
		{ "a.u16", LLM_GGUF_U16, u16, 2, 2 }, { "a.i16", LLM_GGUF_I16, i16, 2, 2 },
		{ "a.u32", LLM_GGUF_U32, u32, 2, 4 }, { "a.i32", LLM_GGUF_I32, i32, 3, 4 },
		{ "a.f32", LLM_GGUF_F32, f32, 3, 4 }, { "a.bool", LLM_GGUF_BOOL, bools, 4, 1 },
		{ "a.u64", LLM_GGUF_U64, u64, 2, 8 }, { "a.i64", LLM_GGUF_I64, i64, 2, 8 },
		{ "a.f64", LLM_GGUF_F64, f64, 3, 8 }, { "a.empty", LLM_GGUF_F32, NULL, 0, 4 },
	};
	size_t n_arrs = sizeof(arrs) / sizeof(arrs[0]);

	ck_assert_int_eq(llm_gguf_set_u32(w, "s.u32", 4000000000u), 0);
	ck_assert_int_eq(llm_gguf_set_i32(w, "s.i32", -7), 0);
	ck_assert_int_eq(llm_gguf_set_u64(w, "s.u64", UINT64_MAX), 0);
	ck_assert_int_eq(llm_gguf_set_f32(w, "s.f32", -2.5f), 0);
	ck_assert_int_eq(llm_gguf_set_bool(w, "s.true", true), 0);
	ck_assert_int_eq(llm_gguf_set_bool(w, "s.false", false), 0);
	ck_assert_int_eq(llm_gguf_set_str(w, "s.str", "hello, gguf"), 0);
	ck_assert_int_eq(llm_gguf_set_str(w, "s.empty", ""), 0);
	for (size_t i = 0; i < n_arrs; i++)
		ck_assert_int_eq(llm_gguf_set_arr(w, arrs[i].key, arrs[i].t, arrs[i].p,
		                                  arrs[i].n), 0);
	ck_assert_int_eq(llm_gguf_set_arr_str(w, "a.str", strs, lens, 4), 0);
	ck_assert_int_eq(llm_gguf_set_arr_str(w, "a.str0", strs, NULL, 3), 0);
	ck_assert_int_eq(llm_gguf_copy_kv(w, nest, 0), 0);
	ck_assert_int_eq(llm_gguf_copy_kv(w, nest, 1), 0);
	ck_assert_int_eq(llm_gguf_set_arr(w, "bad", LLM_GGUF_STRING, strs, 1),
	                 LLM_EINVAL);
	ck_assert_int_eq(llm_gguf_set_arr(w, "bad", LLM_GGUF_ARRAY, strs, 1),
	                 LLM_EINVAL);

	float w0[6] = { 1, 2, 3, 4, 5, 6 };
	int64_t ne0[2] = { 3, 2 }, ne1[3] = { 64, 2, 3 }, ne2[1] = { 256 };
	int64_t ne3[4] = { 2, 3, 1, 2 }, ne4[2] = { 0, 5 };
	ck_assert_int_eq(llm_gguf_add_tensor(w, "w0", LLM_F32, 2, ne0, w0), 0);
	ck_assert_int_eq(llm_gguf_add_tensor_fill(w, "w1.q8_0", LLM_Q8_0, 3, ne1,
	                                          fill_pattern, &log), 0);
	ck_assert_int_eq(llm_gguf_add_tensor_fill(w, "w2.q4_k", LLM_Q4_K, 1, ne2,
	                                          fill_pattern, &log), 0);
	ck_assert_int_eq(llm_gguf_add_tensor_fill(w, "w3.f16", LLM_F16, 4, ne3,
	                                          fill_pattern, &log), 0);
	ck_assert_int_eq(llm_gguf_add_tensor(w, "w4.empty", LLM_BF16, 2, ne4, NULL), 0);

	size_t n;
	char *p = write_mem(w, &n);
	ck_assert_int_eq(log.calls, 3);
	ck_assert_str_eq(log.last, "w3.f16");
	ck_assert_uint_eq(log.last_n, 2 * 3 * 2 * 2);

	int rc;
	struct llm_gguf *g = parse(p, n, "types.gguf", &rc);
	ck_assert_msg(rc == 0, "%s", llm_errmsg());
	ck_assert_int_eq(llm_gguf_n_kv(g), 8 + (int64_t)n_arrs + 4);

	uint32_t u;
	int64_t v;
	float f;
	bool bv;
	const char *s;
	ck_assert_int_eq(llm_gguf_get_u32(g, "s.u32", &u), 0);
	ck_assert_uint_eq(u, 4000000000u);
	ck_assert_int_eq(llm_gguf_get_i64(g, "s.i32", &v), 0);
	ck_assert_int_eq(v, -7);
	ck_assert_int_eq(llm_gguf_get_u32(g, "s.i32", &u), LLM_EFORMAT);
	ck_assert_int_eq(llm_gguf_get_i64(g, "s.u64", &v), LLM_EFORMAT);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "s.u64"));
	ck_assert_int_eq(llm_gguf_kv_type(g, llm_gguf_find_key(g, "s.u64")), LLM_GGUF_U64);
	ck_assert_int_eq(llm_gguf_get_f32(g, "s.f32", &f), 0);
	ck_assert_float_eq(f, -2.5f);
	ck_assert_int_eq(llm_gguf_get_bool(g, "s.true", &bv), 0);
	ck_assert(bv);
	ck_assert_int_eq(llm_gguf_get_bool(g, "s.false", &bv), 0);
	ck_assert(!bv);
	ck_assert_int_eq(llm_gguf_get_str(g, "s.str", &s), 0);
	ck_assert_str_eq(s, "hello, gguf");
	ck_assert_int_eq(llm_gguf_get_str(g, "s.empty", &s), 0);
	ck_assert_str_eq(s, "");
	for (size_t i = 0; i < n_arrs; i++) {
		int64_t k = llm_gguf_find_key(g, arrs[i].key);
		ck_assert_int_ge(k, 0);
		ck_assert_int_eq(llm_gguf_kv_type(g, k), LLM_GGUF_ARRAY);
		ck_assert_int_eq(llm_gguf_arr_type(g, k), arrs[i].t);
		ck_assert_uint_eq(llm_gguf_arr_n(g, k), arrs[i].n);
		ck_assert_ptr_nonnull(llm_gguf_arr_data(g, k));
		if (arrs[i].n)
			ck_assert_mem_eq(llm_gguf_arr_data(g, k), arrs[i].p,
			                 arrs[i].n * arrs[i].es);
	}
	int64_t k = llm_gguf_find_key(g, "a.str");
	ck_assert_int_eq(llm_gguf_arr_type(g, k), LLM_GGUF_STRING);
	ck_assert_uint_eq(llm_gguf_arr_n(g, k), 4);
	for (uint64_t j = 0; j < 4; j++) {
		size_t len;
		const char *e = llm_gguf_arr_str(g, k, j, &len);
		ck_assert_uint_eq(len, lens[j]);
		ck_assert_mem_eq(e, strs[j], len);
		ck_assert_int_eq(e[len], 0);
	}
	k = llm_gguf_find_key(g, "a.str0");
	ck_assert_uint_eq(llm_gguf_arr_n(g, k), 3);
	ck_assert_str_eq(llm_gguf_arr_str(g, k, 2, NULL), strs[2]);
	k = llm_gguf_find_key(g, "nested.u8");
	ck_assert_int_eq(llm_gguf_arr_type(g, k), LLM_GGUF_ARRAY);
	ck_assert_uint_eq(llm_gguf_arr_n(g, k), 2);
	ck_assert_ptr_null(llm_gguf_arr_data(g, k));
	k = llm_gguf_find_key(g, "nested.str");
	ck_assert_int_eq(llm_gguf_arr_type(g, k), LLM_GGUF_ARRAY);
	ck_assert_uint_eq(llm_gguf_arr_n(g, k), 2);

	/* tensors: shapes, and the bytes given or filled */
	ck_assert_int_eq(llm_gguf_n_tensors(g), 5);
	const struct llm_gguf_tensor *t = llm_gguf_find_tensor(g, "w0");
	ck_assert_int_eq(t->n_dims, 2);
	ck_assert_mem_eq(t->data, w0, sizeof(w0));
	t = llm_gguf_find_tensor(g, "w1.q8_0");
	ck_assert_int_eq(t->type, LLM_Q8_0);
	ck_assert_int_eq(t->n_dims, 3);
	ck_assert_int_eq(t->ne[2], 3);
	ck_assert_uint_eq(t->nbytes, 2 * 34 * 2 * 3);
	for (size_t i = 0; i < t->nbytes; i++)
		ck_assert_uint_eq(((const unsigned char *)t->data)[i],
		                  (unsigned char)(i * 13 + 7));
	t = llm_gguf_find_tensor(g, "w2.q4_k");
	ck_assert_uint_eq(t->nbytes, 144);
	t = llm_gguf_find_tensor(g, "w3.f16");
	ck_assert_int_eq(t->n_dims, 4);
	ck_assert_int_eq(t->ne[3], 2);
	t = llm_gguf_find_tensor(g, "w4.empty");
	ck_assert_uint_eq(t->nbytes, 0);
	ck_assert_int_eq(t->ne[1], 5);
	for (int64_t i = 0; i < 5; i++)
		ck_assert_uint_eq(llm_gguf_tensor(g, i)->offset % 32, 0);

	/* copying the read file through the writer again: the same bytes */
	struct llm_gguf_writer *w2 = llm_gguf_writer_new();
	for (int64_t i = 0; i < llm_gguf_n_kv(g); i++)
		ck_assert_int_eq(llm_gguf_copy_kv(w2, g, i), 0);
	for (int64_t i = 0; i < llm_gguf_n_tensors(g); i++) {
		t = llm_gguf_tensor(g, i);
		ck_assert_int_eq(llm_gguf_add_tensor(w2, t->name, t->type, t->n_dims,
		                                     t->ne, t->data), 0);
	}
	size_t n2;
	char *p2 = write_mem(w2, &n2);
	ck_assert_uint_eq(n2, n);
	ck_assert(memcmp(p, p2, n) == 0);

	free(p);
	free(p2);
	llm_gguf_writer_free(w2);
	llm_gguf_writer_free(w);
	llm_gguf_free(g);
	llm_gguf_free(nest);
}
END_TEST

START_TEST(test_writer_replace_keeps_position)
{
	struct llm_gguf_writer *w = llm_gguf_writer_new();
	ck_assert_int_eq(llm_gguf_set_u32(w, "a", 1), 0);
	ck_assert_int_eq(llm_gguf_set_str(w, "b", "first"), 0);
	ck_assert_int_eq(llm_gguf_set_u32(w, "c", 3), 0);
	ck_assert_int_eq(llm_gguf_set_u32(w, "d", 4), 0);
	/* replace b with a value of another type and size, c with the same */
	ck_assert_int_eq(llm_gguf_set_f32(w, "b", 0.5f), 0);
	ck_assert_int_eq(llm_gguf_set_u32(w, "c", 33), 0);
	ck_assert_int_eq(llm_gguf_remove_key(w, "a"), 0);
	ck_assert_int_eq(llm_gguf_remove_key(w, "a"), LLM_ENOTFOUND);
	ck_assert_int_eq(llm_gguf_set_u32(w, "a", 11), 0);   /* now at the end */

	size_t n;
	char *p = write_mem(w, &n);
	int rc;
	struct llm_gguf *g = parse(p, n, "replace.gguf", &rc);
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(llm_gguf_n_kv(g), 4);
	ck_assert_str_eq(llm_gguf_key(g, 0), "b");
	ck_assert_str_eq(llm_gguf_key(g, 1), "c");
	ck_assert_str_eq(llm_gguf_key(g, 2), "d");
	ck_assert_str_eq(llm_gguf_key(g, 3), "a");
	ck_assert_int_eq(llm_gguf_kv_type(g, 0), LLM_GGUF_F32);
	float f;
	uint32_t u;
	ck_assert_int_eq(llm_gguf_get_f32(g, "b", &f), 0);
	ck_assert_float_eq(f, 0.5f);
	ck_assert_int_eq(llm_gguf_get_u32(g, "c", &u), 0);
	ck_assert_uint_eq(u, 33);
	ck_assert_int_eq(llm_gguf_get_u32(g, "a", &u), 0);
	ck_assert_uint_eq(u, 11);
	free(p);
	llm_gguf_free(g);
	llm_gguf_writer_free(w);
}
END_TEST

/* general.alignment set to 64 (and 1): offsets and data section follow. */
START_TEST(test_writer_alignment)
{
	static const uint32_t aligns[] = { 64, 1, 4096 };
	for (size_t a = 0; a < sizeof(aligns) / sizeof(aligns[0]); a++) {
		struct llm_gguf_writer *w = llm_gguf_writer_new();
		unsigned char data[300];
		for (size_t i = 0; i < sizeof(data); i++)
			data[i] = (unsigned char)i;
		ck_assert_int_eq(llm_gguf_set_str(w, "general.architecture", "x"), 0);
		ck_assert_int_eq(llm_gguf_set_u32(w, "general.alignment", aligns[a]), 0);
		int64_t n1[1] = { 3 }, n2[1] = { 70 }, n3[1] = { 1 };
		ck_assert_int_eq(llm_gguf_add_tensor(w, "t1", LLM_I8, 1, n1, data), 0);
		ck_assert_int_eq(llm_gguf_add_tensor(w, "t2", LLM_F32, 1, n2, data), 0);
		ck_assert_int_eq(llm_gguf_add_tensor(w, "t3", LLM_I16, 1, n3, data + 7), 0);

		size_t n;
		char *p = write_mem(w, &n);
		/* own the copy so tensor data can be located in it */
		char *own = malloc(n);
		memcpy(own, p, n);
		struct llm_gguf *g;
		ck_assert_int_eq(llm_gguf_from_memory(&g, own, n, "align.gguf", true), 0);
		ck_assert_uint_eq(llm_gguf_alignment(g), aligns[a]);
		ck_assert_uint_eq(n % aligns[a], 0);
		/* the header ends at 200: data starts at the next multiple */
		size_t data_off = (const char *)llm_gguf_tensor(g, 0)->data - own;
		ck_assert_uint_eq(data_off, (200 + aligns[a] - 1) / aligns[a] * aligns[a]);
		for (int64_t i = 0; i < 3; i++) {
			const struct llm_gguf_tensor *t = llm_gguf_tensor(g, i);
			ck_assert_uint_eq(t->offset % aligns[a], 0);
			ck_assert_uint_eq(((const char *)t->data - own) % aligns[a], 0);
		}
		ck_assert_uint_eq(llm_gguf_tensor(g, 1)->offset,
		                  aligns[a] == 1 ? 3 : aligns[a]);
		ck_assert_mem_eq(llm_gguf_tensor(g, 1)->data, data, 280);
		ck_assert_mem_eq(llm_gguf_tensor(g, 2)->data, data + 7, 2);
		free(p);
		llm_gguf_free(g);
		llm_gguf_writer_free(w);
	}

	/* an alignment the reader would refuse is refused when writing */
	struct llm_gguf_writer *w = llm_gguf_writer_new();
	FILE *f = fopen("/dev/null", "wb");
	ck_assert_int_eq(llm_gguf_set_u32(w, "general.alignment", 48), 0);
	ck_assert_int_eq(llm_gguf_write_stream(w, f, NULL), LLM_EINVAL);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "general.alignment"));
	ck_assert_int_eq(llm_gguf_set_u64(w, "general.alignment", 64), 0);
	ck_assert_int_eq(llm_gguf_write_stream(w, f, NULL), LLM_EINVAL);
	ck_assert_int_eq(llm_gguf_set_u32(w, "general.alignment", 0), 0);
	ck_assert_int_eq(llm_gguf_write_stream(w, f, NULL), LLM_EINVAL);
	ck_assert_int_eq(llm_gguf_set_u32(w, "general.alignment", 16), 0);
	ck_assert_int_eq(llm_gguf_write_stream(w, f, NULL), 0);
	fclose(f);
	llm_gguf_writer_free(w);
}
END_TEST

START_TEST(test_writer_bad_calls)
{
	struct llm_gguf_writer *w = llm_gguf_writer_new();
	float x[64] = { 0 };
	int64_t ne[4] = { 4, 4, 1, 1 };
	ck_assert_int_eq(llm_gguf_add_tensor(w, "ok", LLM_F32, 2, ne, x), 0);
	ck_assert_int_eq(llm_gguf_add_tensor(w, "ok", LLM_F32, 2, ne, x), LLM_EINVAL);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "duplicate tensor ok"));
	ck_assert_int_eq(llm_gguf_add_tensor(w, "", LLM_F32, 2, ne, x), LLM_EINVAL);
	char longname[300];
	memset(longname, 'n', sizeof(longname) - 1);
	longname[299] = 0;
	ck_assert_int_eq(llm_gguf_add_tensor(w, longname, LLM_F32, 2, ne, x), LLM_EINVAL);
	ck_assert_int_eq(llm_gguf_add_tensor(w, "d0", LLM_F32, 0, ne, x), LLM_EINVAL);
	ck_assert_int_eq(llm_gguf_add_tensor(w, "d5", LLM_F32, 5, ne, x), LLM_EINVAL);
	ck_assert_int_eq(llm_gguf_add_tensor(w, "type", (enum llm_dtype)4, 2, ne, x),
	                 LLM_EINVAL);
	ck_assert_int_eq(llm_gguf_add_tensor(w, "q", LLM_Q4_0, 2, ne, x), LLM_EINVAL);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "block size"));
	int64_t neg[2] = { 4, -1 };
	ck_assert_int_eq(llm_gguf_add_tensor(w, "neg", LLM_F32, 2, neg, x), LLM_EINVAL);
	int64_t big[2] = { INT64_C(1) << 62, 4 };
	ck_assert_int_eq(llm_gguf_add_tensor(w, "big", LLM_F32, 2, big, x), LLM_EINVAL);
	int64_t big0[2] = { INT64_C(1) << 62, 0 };
	ck_assert_int_eq(llm_gguf_add_tensor(w, "big0", LLM_F32, 2, big0, NULL),
	                 LLM_EINVAL);
	ck_assert_int_eq(llm_gguf_add_tensor(w, "nodata", LLM_F32, 2, ne, NULL),
	                 LLM_EINVAL);

	/* a failing fill callback fails the write, and write_file leaves
	 * neither the file nor a temporary */
	ck_assert_int_eq(llm_gguf_add_tensor_fill(w, "fails", LLM_F32, 2, ne,
	                                          fill_fail, NULL), 0);
	make_tmpdir();
	char path[4200];
	snprintf(path, sizeof(path), "%s/out.gguf", tmpdir);
	ck_assert_int_eq(llm_gguf_write_file(w, path), LLM_ECANCELED);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "fill fails: refused"));
	ck_assert_int_eq(count_dir_entries(tmpdir), 0);

	/* an existing file survives a failed write untouched */
	FILE *f = fopen(path, "wb");
	fputs("old", f);
	fclose(f);
	ck_assert_int_eq(llm_gguf_write_file(w, path), LLM_ECANCELED);
	ck_assert_int_eq(count_dir_entries(tmpdir), 1);
	char *p;
	size_t n;
	ck_assert_int_eq(llm_read_file(path, &p, &n), 0);
	ck_assert_str_eq(p, "old");
	free(p);

	/* a directory that does not exist */
	snprintf(path, sizeof(path), "%s/no/such/dir.gguf", tmpdir);
	ck_assert_int_eq(llm_gguf_write_file(w, path), LLM_EIO);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), path));

	/* a full disk */
	if (access("/dev/full", W_OK) == 0) {
		struct llm_gguf_writer *w2 = llm_gguf_writer_new();
		static float big1[1 << 16];
		int64_t nb[1] = { 1 << 16 };
		ck_assert_int_eq(llm_gguf_add_tensor(w2, "x", LLM_F32, 1, nb, big1), 0);
		f = fopen("/dev/full", "wb");
		ck_assert_int_eq(llm_gguf_write_stream(w2, f, NULL), LLM_EIO);
		ck_assert_ptr_nonnull(strstr(llm_errmsg(), "write failed"));
		fclose(f);
		llm_gguf_writer_free(w2);
	}
	llm_gguf_writer_free(w);
	remove_tmpdir();
}
END_TEST

/* write_file("-") writes to standard output. */
START_TEST(test_writer_stdout)
{
	struct llm_gguf_writer *w = llm_gguf_writer_new();
	ck_assert_int_eq(llm_gguf_set_str(w, "general.name", "stdout"), 0);
	size_t n;
	char *ref = write_mem(w, &n);

	make_tmpdir();
	char path[4200];
	snprintf(path, sizeof(path), "%s/stdout.gguf", tmpdir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	fflush(stdout);
	ck_assert_int_ge(dup2(fd, STDOUT_FILENO), 0);
	close(fd);
	ck_assert_int_eq(llm_gguf_write_file(w, "-"), 0);
	fflush(stdout);

	struct llm_gguf *g = NULL;
	ck_assert_int_eq(llm_gguf_open(&g, path), 0);
	ck_assert_uint_eq(llm_gguf_file_size(g), n);
	const char *s;
	ck_assert_int_eq(llm_gguf_get_str(g, "general.name", &s), 0);
	ck_assert_str_eq(s, "stdout");
	llm_gguf_free(g);
	free(ref);
	llm_gguf_writer_free(w);
	remove_tmpdir();
}
END_TEST

/* ---------------------------------------------------------------- bad input */

/* A small valid file: two keys (one a string array), two tensors. */
static void small_file(struct buf *b)
{
	uint64_t ne0[2] = { 2, 2 }, ne1[1] = { 3 };
	b_header(b, 3, 2, 2);
	b_str(b, "general.architecture");
	b_u32(b, LLM_GGUF_STRING); b_str(b, "llama");
	b_str(b, "tok");
	b_u32(b, LLM_GGUF_ARRAY); b_u32(b, LLM_GGUF_STRING); b_u64(b, 2);
	b_str(b, "a"); b_str(b, "bc");
	b_tensor(b, "w", 2, ne0, LLM_F32, 0);
	b_tensor(b, "v", 1, ne1, LLM_F16, 32);
	b_pad(b, 32);
	for (int i = 0; i < 4; i++) {
		float f = (float)i;
		b_raw(b, &f, 4);
	}
	b_zeros(b, 16);
	b_raw(b, "\x00\x3c\x00\x40\x00\x42", 6);
}

START_TEST(test_small_file_valid)
{
	struct buf b = { 0 };
	int rc;
	small_file(&b);
	struct llm_gguf *g = parse(b.p, b.n, "small.gguf", &rc);
	ck_assert_msg(rc == 0, "%s", llm_errmsg());
	ck_assert_int_eq(llm_gguf_n_tensors(g), 2);
	ck_assert_int_eq(((const uint16_t *)llm_gguf_find_tensor(g, "v")->data)[2],
	                 0x4200);
	llm_gguf_free(g);
	free(b.p);
}
END_TEST

/* Every proper prefix of a valid file is refused, from memory and from a
 * mapped file: never a crash, never success. */
START_TEST(test_truncated_everywhere)
{
	struct buf b = { 0 };
	small_file(&b);
	make_tmpdir();
	char path[4200];
	snprintf(path, sizeof(path), "%s/cut.gguf", tmpdir);
	for (size_t k = 0; k < b.n; k++) {
		struct llm_gguf *g = NULL;
		int rc;
		g = parse(b.p, k, "cut.gguf", &rc);
		ck_assert_msg(rc == LLM_EFORMAT, "cut at %zu: rc %d", k, rc);
		ck_assert_ptr_null(g);
		ck_assert_msg(strstr(llm_errmsg(), "cut.gguf"), "cut at %zu: %s", k,
		              llm_errmsg());
		/* the problem is named: a short file, or data missing */
		ck_assert_msg(strstr(llm_errmsg(), "truncated") ||
		              strstr(llm_errmsg(), "bad magic") ||
		              strstr(llm_errmsg(), "exceeds") ||
		              strstr(llm_errmsg(), "past end of file"),
		              "cut at %zu: %s", k, llm_errmsg());

		FILE *f = fopen(path, "wb");
		ck_assert_uint_eq(fwrite(b.p, 1, k, f), k);
		fclose(f);
		rc = llm_gguf_open(&g, path);
		ck_assert_msg(rc == LLM_EFORMAT, "file cut at %zu: rc %d", k, rc);
		ck_assert_ptr_nonnull(strstr(llm_errmsg(), path));
	}
	free(b.p);
	remove_tmpdir();
}
END_TEST

START_TEST(test_bad_header)
{
	struct buf b = { 0 };

	small_file(&b);
	b.p[3] = 'X';
	expect_bad(&b, "bad magic");
	b.n = 0;
	expect_bad(&b, "bad magic");

	small_file(&b);
	memcpy(b.p + 4, "\x01\0\0\0", 4);
	expect_bad(&b, "version 1");
	memcpy(b.p + 4, "\x04\0\0\0", 4);
	expect_bad(&b, "version 4");
	memcpy(b.p + 4, "\0\0\0\x03", 4);
	expect_bad(&b, "big-endian");
	memcpy(b.p + 4, "\0\0\0\0", 4);
	expect_bad(&b, "invalid version");

	/* absurd counts */
	small_file(&b);
	memcpy(b.p + 8, "\0\0\0\0\0\0\0\x80", 8);
	expect_bad(&b, "tensor count 9223372036854775808");
	small_file(&b);
	memcpy(b.p + 16, "\0\0\0\0\0\0\0\x80", 8);
	expect_bad(&b, "key/value count 9223372036854775808");
	small_file(&b);
	memcpy(b.p + 16, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
	expect_bad(&b, "key/value count");
	small_file(&b);
	memcpy(b.p + 16, "\x03\0\0\0\0\0\0\0", 8);  /* one key too many */
	expect_bad(&b, "");

	/* a valid v2 file is read */
	small_file(&b);
	memcpy(b.p + 4, "\x02\0\0\0", 4);
	int rc;
	struct llm_gguf *g = parse(b.p, b.n, "v2.gguf", &rc);
	ck_assert_int_eq(rc, 0);
	ck_assert_uint_eq(llm_gguf_version(g), 2);
	llm_gguf_free(g);
	free(b.p);
}
END_TEST

START_TEST(test_bad_kv)
{
	struct buf b = { 0 };

	/* key length 2^63 */
	b_header(&b, 3, 0, 1);
	b_u64(&b, UINT64_C(1) << 63);
	b_zeros(&b, 40);
	expect_bad(&b, "string length 9223372036854775808");

	/* string value length 2^63 */
	b_header(&b, 3, 0, 1);
	b_str(&b, "k");
	b_u32(&b, LLM_GGUF_STRING);
	b_u64(&b, UINT64_C(1) << 63);
	b_zeros(&b, 40);
	expect_bad(&b, "string length");

	/* array lengths 2^63: numbers, strings, arrays */
	static const uint32_t elem[] = { LLM_GGUF_U8, LLM_GGUF_F64, LLM_GGUF_STRING,
	                                 LLM_GGUF_ARRAY };
	for (size_t i = 0; i < 4; i++) {
		b_header(&b, 3, 0, 1);
		b_str(&b, "arr");
		b_u32(&b, LLM_GGUF_ARRAY);
		b_u32(&b, elem[i]);
		b_u64(&b, UINT64_C(1) << 63);
		b_zeros(&b, 64);
		expect_bad(&b, "array of 9223372036854775808");
	}
	/* array a little longer than the file */
	b_header(&b, 3, 0, 1);
	b_str(&b, "arr");
	b_u32(&b, LLM_GGUF_ARRAY); b_u32(&b, LLM_GGUF_U32); b_u64(&b, 5);
	b_zeros(&b, 16);
	expect_bad(&b, "exceeds the file");

	/* value and element types out of range */
	b_header(&b, 3, 0, 1);
	b_str(&b, "k");
	b_u32(&b, 13);
	b_zeros(&b, 16);
	expect_bad(&b, "key k: invalid value type 13");
	b_header(&b, 3, 0, 1);
	b_str(&b, "k");
	b_u32(&b, LLM_GGUF_ARRAY); b_u32(&b, 0xffffffff); b_u64(&b, 0);
	expect_bad(&b, "invalid array element type 4294967295");

	/* bools are 0 or 1, alone or in arrays */
	b_header(&b, 3, 0, 1);
	b_str(&b, "flag");
	b_u32(&b, LLM_GGUF_BOOL); b_u8(&b, 2);
	expect_bad(&b, "key flag: invalid bool 2");
	b_header(&b, 3, 0, 1);
	b_str(&b, "flags");
	b_u32(&b, LLM_GGUF_ARRAY); b_u32(&b, LLM_GGUF_BOOL); b_u64(&b, 3);
	b_u8(&b, 1); b_u8(&b, 0); b_u8(&b, 0xff);
	expect_bad(&b, "invalid bool 255 at index 2");

	/* duplicate keys, far apart */
	b_header(&b, 3, 0, 3);
	b_str(&b, "dup"); b_u32(&b, LLM_GGUF_U32); b_u32(&b, 1);
	b_str(&b, "other"); b_u32(&b, LLM_GGUF_U8); b_u8(&b, 1);
	b_str(&b, "dup"); b_u32(&b, LLM_GGUF_F32); b_u32(&b, 1);
	expect_bad(&b, "duplicate key dup");

	/* keys with a NUL inside would alias */
	b_header(&b, 3, 0, 1);
	b_u64(&b, 3); b_raw(&b, "a\0b", 3);
	b_u32(&b, LLM_GGUF_U8); b_u8(&b, 1);
	expect_bad(&b, "NUL");

	/* arrays nested too deeply (6 levels) */
	b_header(&b, 3, 0, 1);
	b_str(&b, "deep");
	b_u32(&b, LLM_GGUF_ARRAY);
	for (int d = 0; d < 6; d++) {
		b_u32(&b, LLM_GGUF_ARRAY);
		b_u64(&b, 1);
	}
	b_u32(&b, LLM_GGUF_U8); b_u64(&b, 0);
	b_zeros(&b, 64);
	expect_bad(&b, "nested too deeply");

	/* a truncated nested array */
	b_header(&b, 3, 0, 1);
	b_str(&b, "nest");
	b_u32(&b, LLM_GGUF_ARRAY); b_u32(&b, LLM_GGUF_ARRAY); b_u64(&b, 1);
	b_u32(&b, LLM_GGUF_U16); b_u64(&b, 3); b_u8(&b, 1);
	expect_bad(&b, "key nest: array of 3 u16 exceeds the file");

	/* general.alignment: a u32 power of two */
	static const uint32_t bad_align[] = { 0, 3, 48, 0x80000001u };
	for (size_t i = 0; i < 4; i++) {
		b_header(&b, 3, 0, 1);
		b_str(&b, "general.alignment");
		b_u32(&b, LLM_GGUF_U32); b_u32(&b, bad_align[i]);
		expect_bad(&b, "general.alignment must be a u32 power of two");
	}
	b_header(&b, 3, 0, 1);
	b_str(&b, "general.alignment");
	b_u32(&b, LLM_GGUF_U64); b_u64(&b, 32);
	expect_bad(&b, "general.alignment");
	b_header(&b, 3, 0, 1);
	b_str(&b, "general.alignment");
	b_u32(&b, LLM_GGUF_STRING); b_str(&b, "32");
	expect_bad(&b, "general.alignment");
	free(b.p);
}
END_TEST

/* One tensor description, then data of nbytes at the default alignment. */
static void one_tensor(struct buf *b, const char *name, uint32_t n_dims,
                       const uint64_t *ne, uint32_t type, uint64_t off,
                       size_t nbytes)
{
	b_header(b, 3, 1, 0);
	b_tensor(b, name, n_dims, ne, type, off);
	b_pad(b, 32);
	b_zeros(b, nbytes);
}

START_TEST(test_bad_tensor)
{
	struct buf b = { 0 };
	uint64_t ne[5] = { 4, 1, 1, 1, 1 };

	one_tensor(&b, "t", 1, ne, LLM_F32, 0, 16);
	int rc;
	struct llm_gguf *g = parse(b.p, b.n, "ok.gguf", &rc);
	ck_assert_int_eq(rc, 0);
	llm_gguf_free(g);

	one_tensor(&b, "t", 0, ne, LLM_F32, 0, 16);
	expect_bad(&b, "tensor t: 0 dimensions");
	one_tensor(&b, "t", 5, ne, LLM_F32, 0, 16);
	expect_bad(&b, "tensor t: 5 dimensions");
	one_tensor(&b, "t", 0xffffffff, ne, LLM_F32, 0, 16);
	expect_bad(&b, "dimensions");

	/* dtype ids: never used (4, 5: q4_2, q4_3), past the end, huge */
	static const uint32_t bad_types[] = { 4, 5, 31, 40, 1000, 0x80000000u,
	                                      0xffffffffu };
	for (size_t i = 0; i < sizeof(bad_types) / sizeof(bad_types[0]); i++) {
		char what[64];
		snprintf(what, sizeof(what), "tensor t: unknown type %u", bad_types[i]);
		one_tensor(&b, "t", 1, ne, bad_types[i], 0, 16);
		expect_bad(&b, what);
	}

	/* element counts that overflow */
	uint64_t ov1[2] = { UINT64_C(1) << 32, UINT64_C(1) << 32 };
	one_tensor(&b, "t", 2, ov1, LLM_F32, 0, 16);
	expect_bad(&b, "tensor t: shape overflows");
	uint64_t ov2[1] = { UINT64_C(1) << 63 };
	one_tensor(&b, "t", 1, ov2, LLM_I8, 0, 16);
	expect_bad(&b, "shape overflows");
	uint64_t ov3[4] = { 65536, 65536, 65536, 65536 };
	one_tensor(&b, "t", 4, ov3, LLM_F32, 0, 16);
	expect_bad(&b, "shape overflows");
	/* fits as elements, not as bytes */
	uint64_t ov4[1] = { UINT64_C(1) << 62 };
	one_tensor(&b, "t", 1, ov4, LLM_F32, 0, 16);
	expect_bad(&b, "size overflows");
	/* an empty tensor whose other dimensions still overflow a row size
	 * (found by the fuzzer) */
	uint64_t ov5[4] = { UINT64_C(1) << 62, 0, 0, 0 };
	one_tensor(&b, "t", 4, ov5, LLM_F32, 0, 0);
	expect_bad(&b, "overflows");
	uint64_t ov6[2] = { 0, UINT64_C(1) << 63 };
	one_tensor(&b, "t", 2, ov6, LLM_F32, 0, 0);
	expect_bad(&b, "shape overflows");

	/* rows must be whole blocks */
	uint64_t q[2] = { 33, 2 };
	one_tensor(&b, "t", 2, q, LLM_Q4_0, 0, 64);
	expect_bad(&b, "row of 33 is not a multiple of the q4_0 block size 32");
	uint64_t k[1] = { 128 };
	one_tensor(&b, "t", 1, k, LLM_Q6_K, 0, 256);
	expect_bad(&b, "q6_k block size 256");

	/* offsets: aligned, inside the file */
	one_tensor(&b, "t", 1, ne, LLM_F32, 4, 64);
	expect_bad(&b, "tensor t: offset 4 is not a multiple of the alignment 32");
	one_tensor(&b, "t", 1, ne, LLM_F32, 0, 15);
	expect_bad(&b, "tensor t: data extends past end of file");
	one_tensor(&b, "t", 1, ne, LLM_F32, 32, 40);
	expect_bad(&b, "past end of file");
	one_tensor(&b, "t", 1, ne, LLM_F32, UINT64_C(1) << 63, 16);
	expect_bad(&b, "past end of file");
	one_tensor(&b, "t", 1, ne, LLM_F32, UINT64_MAX - 31, 16);
	expect_bad(&b, "past end of file");
	/* a header with no room left for the data section */
	b_header(&b, 3, 1, 0);
	b_tensor(&b, "t", 1, ne, LLM_F32, 0);
	expect_bad(&b, "");

	/* names: not empty, not over 255 bytes, no NUL, unique */
	one_tensor(&b, "", 1, ne, LLM_F32, 0, 16);
	expect_bad(&b, "invalid tensor name");
	char longname[257];
	memset(longname, 'x', 256);
	longname[256] = 0;
	one_tensor(&b, longname, 1, ne, LLM_F32, 0, 16);
	expect_bad(&b, "invalid tensor name");
	b_header(&b, 3, 1, 0);
	b_u64(&b, 3); b_raw(&b, "a\0b", 3);
	b_u32(&b, 1); b_u64(&b, 4); b_u32(&b, LLM_F32); b_u64(&b, 0);
	b_pad(&b, 32);
	b_zeros(&b, 16);
	expect_bad(&b, "invalid tensor name");

	/* two tensors: overlapping, duplicate names */
	b_header(&b, 3, 2, 0);
	b_tensor(&b, "a", 1, ne, LLM_F32, 0);
	uint64_t ne16[1] = { 16 };
	b_tensor(&b, "b", 1, ne16, LLM_F32, 0);
	b_pad(&b, 32);
	b_zeros(&b, 64);
	expect_bad(&b, "overlap");
	b_header(&b, 3, 3, 0);
	b_tensor(&b, "a", 1, ne16, LLM_F32, 32);     /* 32..96 */
	b_tensor(&b, "b", 1, ne, LLM_F32, 0);        /* 0..16 */
	b_tensor(&b, "c", 1, ne, LLM_F32, 64);       /* inside a */
	b_pad(&b, 32);
	b_zeros(&b, 128);
	expect_bad(&b, "tensors a and c overlap");
	b_header(&b, 3, 2, 0);
	b_tensor(&b, "same", 1, ne, LLM_F32, 0);
	b_tensor(&b, "same", 1, ne, LLM_F32, 32);
	b_pad(&b, 32);
	b_zeros(&b, 64);
	expect_bad(&b, "duplicate tensor same");

	/* empty tensors hold no bytes: at any aligned offset in the file */
	uint64_t e[2] = { 4, 0 };
	b_header(&b, 3, 3, 0);
	b_tensor(&b, "a", 1, ne16, LLM_F32, 0);
	b_tensor(&b, "e1", 2, e, LLM_F32, 32);
	b_tensor(&b, "e2", 2, e, LLM_F32, 0);
	b_pad(&b, 32);
	b_zeros(&b, 64);
	g = parse(b.p, b.n, "empty.gguf", &rc);
	ck_assert_msg(rc == 0, "%s", llm_errmsg());
	ck_assert_uint_eq(llm_gguf_find_tensor(g, "e1")->nbytes, 0);
	llm_gguf_free(g);
	free(b.p);
}
END_TEST

/* Inputs the fuzzer found, kept as regressions (fuzz-gguf.c's checks). */
static const unsigned char fuzz_crash_1[] = {
	/* n_dims 4, ne {2^62, 0, 0, 0}: an empty f32 tensor whose row size
	 * overflows; it was accepted, and llm_row_size wrapped to 0 */
	0x47, 0x47, 0x55, 0x46, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x6f, 0x6e, 0x6c, 0x79,
	0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static const unsigned char fuzz_oom_1[] = {
	/* valid: general.alignment 2^29 and no tensors, 125 bytes; the
	 * fuzzer's writer round trip made a 512 MiB copy (the harness now
	 * leaves such alignments out of the round trip) */
	0x47, 0x47, 0x55, 0x46, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x67, 0x65, 0x6e, 0x65,
	0x72, 0x61, 0x6c, 0x2e, 0x61, 0x72, 0x63, 0x68, 0x69, 0x74, 0x65, 0x63,
	0x71, 0x75, 0x72, 0x65, 0x08, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x6c, 0x6c, 0x61, 0x6d, 0x61, 0x11, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x67, 0x65, 0x6e, 0x65, 0x72, 0x61, 0x6c,
	0x2e, 0x61, 0x6c, 0x69, 0x67, 0x6e, 0x6d, 0x65, 0x6e, 0x74, 0x04, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00,
};

START_TEST(test_fuzz_regressions)
{
	static const struct { const unsigned char *p; size_t n; const char *what; }
	cases[] = {
		{ fuzz_crash_1, sizeof(fuzz_crash_1), "tensor only: size overflows" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf b = { 0 };
		b_raw(&b, cases[i].p, cases[i].n);
		expect_bad(&b, cases[i].what);
		free(b.p);
	}
	int rc;
	struct llm_gguf *g = parse(fuzz_oom_1, sizeof(fuzz_oom_1), "oom.gguf", &rc);
	ck_assert_msg(rc == 0, "%s", llm_errmsg());
	ck_assert_uint_eq(llm_gguf_alignment(g), 1u << 29);
	ck_assert_int_eq(llm_gguf_n_kv(g), 3);
	ck_assert_str_eq(llm_gguf_key(g, 2), "");
	ck_assert_int_eq(llm_gguf_n_tensors(g), 0);
	llm_gguf_free(g);

	ck_assert_uint_eq(llm_row_size(LLM_F32, INT64_C(1) << 62), 0);
	ck_assert_uint_eq(llm_row_size(LLM_F32, INT64_C(1) << 40), UINT64_C(1) << 42);
}
END_TEST

START_TEST(test_open_errors)
{
	struct llm_gguf *g = NULL;
	ck_assert_int_eq(llm_gguf_open(&g, "/nonexistent/model.gguf"), LLM_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "/nonexistent/model.gguf"));
	ck_assert_ptr_null(g);

	make_tmpdir();
	char path[4200];
	snprintf(path, sizeof(path), "%s/empty.gguf", tmpdir);
	FILE *f = fopen(path, "wb");
	fclose(f);
	ck_assert_int_eq(llm_gguf_open(&g, path), LLM_EFORMAT);
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), path));
	ck_assert_ptr_nonnull(strstr(llm_errmsg(), "bad magic"));
	ck_assert_ptr_null(g);
	remove_tmpdir();
}
END_TEST

/* ---------------------------------------------------------------- main */

static Suite *gguf_suite(void)
{
	Suite *s = suite_create("gguf");
	TCase *tc = tcase_create("model");
	tcase_set_timeout(tc, 60);
	if (have_model) {
		tcase_add_test(tc, test_model_facts);
		tcase_add_test(tc, test_model_roundtrip);
		tcase_add_test(tc, test_model_pipe);
	}
	suite_add_tcase(s, tc);

	tc = tcase_create("writer");
	tcase_add_test(tc, test_writer_all_types);
	tcase_add_test(tc, test_writer_replace_keeps_position);
	tcase_add_test(tc, test_writer_alignment);
	tcase_add_test(tc, test_writer_bad_calls);
	tcase_add_test(tc, test_writer_stdout);
	suite_add_tcase(s, tc);

	tc = tcase_create("bad input");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_small_file_valid);
	tcase_add_test(tc, test_truncated_everywhere);
	tcase_add_test(tc, test_bad_header);
	tcase_add_test(tc, test_bad_kv);
	tcase_add_test(tc, test_bad_tensor);
	tcase_add_test(tc, test_fuzz_regressions);
	tcase_add_test(tc, test_open_errors);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	const char *data = getenv("LLMKIT_DATA");
	snprintf(model_path, sizeof(model_path), "%s/models/stories260K.gguf",
	         data && *data ? data : "../shared/data");
	have_model = access(model_path, R_OK) == 0;
	if (!have_model)
		fprintf(stderr, "test-gguf: %s not found: model tests skipped\n",
		        model_path);

	int failed = test_run(gguf_suite());
	if (failed)
		return EXIT_FAILURE;
	return have_model ? EXIT_SUCCESS : 77;
}
