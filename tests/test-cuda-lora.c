/*
 * test-cuda-lora - multi-LoRA on the CUDA backend against the CPU backend:
 *
 *   host part (no GPU needed): the adapter cache's device tier over a fake
 *   device backend that records what is placed and forgotten - uploads on
 *   load, forgets on eviction, unload and free, a failed upload leaves
 *   nothing behind, the budget in device bytes;
 *
 *   GPU part: lora_seg on the same inputs as the CPU backend - many
 *   segments of ranks 1..64, contiguous and rows lists, interleaved rows,
 *   overlapping stacked segments, odd scales; bit-identical reruns; a
 *   matrix cached by address until forget, then uploaded again; bad
 *   arguments; then stories260K with five adapters in one batch (per-slot
 *   and stacked) giving the CPU's greedy tokens, and the adapter cache
 *   with the GPU as its device tier (two resident, evictions, reloads).
 *
 * Without a GPU (or in a build without CUDA) it runs the host part and
 * exits 77 (SKIP): it never passes without a device.  A missing data
 * directory skips only what needs the model (said on stderr).
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "llmkit/adapters.h"
#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/forward.h"
#include "llmkit/kvcache.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"
#include "checks.h"

static struct llm_backend *cpu, *gpu;
static struct llm_model *model;   /* stories260K, or NULL */
static char tmpdir[256];          /* adapters written for the cache */





/* Largest |got - want| over the largest |want|; NaN is an error. */

/* ------------------------------------------------------------ adapters */

/* Adapter k: rank 2 << (k % 4) on every target, B random (PEFT's zero B
 * would change nothing), as tests/mlora-gen makes them. */
static struct llm_lora *make_adapter(int k, int rank)
{
	struct llm_lora *a;
	unsigned seed = 1000u + 17u * (unsigned)k;
	if (!rank)
		rank = 2 << (k % 4);
	if (llm_lora_new(&a, model, rank, 2.0f * rank, LLM_LORA_ALL, false)) {
		failf("llm_lora_new: %s", llm_errmsg());
		return NULL;
	}
	llm_lora_init_peft(a, 5u + (uint64_t)k);
	for (int i = 0; i < a->n_layer * LLM_LORA_N; i++) {
		struct llm_lora_mat *lm = &a->m[i];
		if (lm->a)
			for (int64_t j = 0; j < (int64_t)lm->n_out * lm->rank; j++)
				lm->b[j] = 0.15f * frand(&seed);
	}
	return a;
}

/* n adapters a0 .. into tmpdir (PEFT directories); false on failure. */
static bool write_adapters(int n, int rank)
{
	snprintf(tmpdir, sizeof(tmpdir), "%s/test-cuda-lora.XXXXXX",
	         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir)) {
		failf("mkdtemp %s", tmpdir);
		tmpdir[0] = 0;
		return false;
	}
	for (int k = 0; k < n; k++) {
		char path[512];
		struct llm_lora *a = make_adapter(k, rank);
		if (!a)
			return false;
		snprintf(path, sizeof(path), "%s/a%d", tmpdir, k);
		int rc = llm_lora_save_peft(a, model, path);
		llm_lora_free(a);
		if (rc) {
			failf("save %s: %s", path, llm_errmsg());
			return false;
		}
	}
	return true;
}

static void remove_adapters(void)
{
	char cmd[300];
	if (!tmpdir[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd))
		fprintf(stderr, "note: could not remove %s\n", tmpdir);
	tmpdir[0] = 0;
}

static int n_mats(const struct llm_lora *a)
{
	int n = 0;
	for (int i = 0; i < a->n_layer * LLM_LORA_N; i++)
		n += a->m[i].a != NULL;
	return n;
}

static uint64_t mat_bytes(const struct llm_lora *a)
{
	uint64_t n = 0;
	for (int i = 0; i < a->n_layer * LLM_LORA_N; i++) {
		const struct llm_lora_mat *lm = &a->m[i];
		if (lm->a)
			n += ((uint64_t)lm->rank * lm->n_in + (uint64_t)lm->n_out * lm->rank) * 4;
	}
	return n;
}

/* ------------------------------------------------------------ fake device */

/* A device backend that only records what is placed on it (host part). */
static struct {
	pthread_mutex_t mu;
	const void *host[8192];
	size_t bytes[8192];
	int n;
	int n_weight, n_forget;
	int fail_after;           /* >= 0: weight fails once n_weight reaches it */
} fk = { PTHREAD_MUTEX_INITIALIZER, { 0 }, { 0 }, 0, 0, 0, -1 };

static int fake_find(const void *host)
{
	for (int i = 0; i < fk.n; i++)
		if (fk.host[i] == host)
			return i;
	return -1;
}

static int fake_weight(struct llm_backend *be, const void *host, size_t bytes)
{
	(void)be;
	pthread_mutex_lock(&fk.mu);
	if (fk.fail_after >= 0 && fk.n_weight >= fk.fail_after) {
		pthread_mutex_unlock(&fk.mu);
		return llm_error(LLM_ENOMEM, "fake: the device is full");
	}
	fk.n_weight++;
	if (fake_find(host) < 0 && fk.n < 8192) {
		fk.host[fk.n] = host;
		fk.bytes[fk.n++] = bytes;
	}
	pthread_mutex_unlock(&fk.mu);
	return 0;
}

static void fake_forget(struct llm_backend *be, const void *host)
{
	(void)be;
	pthread_mutex_lock(&fk.mu);
	int i = fake_find(host);
	if (i >= 0) {
		fk.host[i] = fk.host[fk.n - 1];
		fk.bytes[i] = fk.bytes[fk.n - 1];
		fk.n--;
	}
	fk.n_forget++;
	pthread_mutex_unlock(&fk.mu);
}

/* Whether every matrix of a is placed with its size. */
static bool fake_holds(const struct llm_lora *a)
{
	bool ok = true;
	pthread_mutex_lock(&fk.mu);
	for (int i = 0; i < a->n_layer * LLM_LORA_N && ok; i++) {
		const struct llm_lora_mat *lm = &a->m[i];
		if (!lm->a)
			continue;
		int ia = fake_find(lm->a), ib = fake_find(lm->b);
		ok = ia >= 0 && ib >= 0 &&
		     fk.bytes[ia] == (size_t)lm->rank * lm->n_in * 4 &&
		     fk.bytes[ib] == (size_t)lm->n_out * lm->rank * 4;
	}
	pthread_mutex_unlock(&fk.mu);
	return ok;
}

static int fake_count(void)
{
	pthread_mutex_lock(&fk.mu);
	int n = fk.n;
	pthread_mutex_unlock(&fk.mu);
	return n;
}

static struct llm_adapters *new_cache(struct llm_backend *be, int max_active,
                                      uint64_t max_mem)
{
	struct llm_adapters_params p;
	struct llm_adapters *ac;
	llm_adapters_params_default(&p);
	p.dir = tmpdir;
	p.backend = be;
	p.max_active = max_active;
	p.max_mem = max_mem;
	if (llm_adapters_new(&ac, model, &p)) {
		failf("llm_adapters_new: %s", llm_errmsg());
		return NULL;
	}
	return ac;
}

/* Load adapter k and return it pinned (NULL on failure). */
static const struct llm_lora *pin(struct llm_adapters *ac, int k)
{
	char name[16];
	const struct llm_lora *a = NULL;
	snprintf(name, sizeof(name), "a%d", k);
	int id = llm_adapters_find(ac, name);
	if (id < 0 || llm_adapters_load(ac, name, 60) ||
	    llm_adapters_acquire(ac, id, true, &a) || !a) {
		failf("adapter %s: %s", name, llm_errmsg());
		return NULL;
	}
	return a;
}

static void unpin(struct llm_adapters *ac, int k)
{
	char name[16];
	snprintf(name, sizeof(name), "a%d", k);
	llm_adapters_release(ac, llm_adapters_find(ac, name));
}

static int dummy_upload(void *user, const char *name, struct llm_lora *a)
{
	(void)user;
	(void)name;
	(void)a;
	return 0;
}

static void test_tier_host(void)
{
	static struct llm_backend_ops ops, no_forget;
	struct llm_backend fake = { &ops, NULL, 1 }, half = { &no_forget, NULL, 1 };
	struct llm_adapters_params p;
	struct llm_adapters *ac;
	struct llm_adapters_stats st;

	ops.name = "fake";
	ops.host_memory = false;
	ops.weight = fake_weight;
	ops.forget = fake_forget;
	no_forget = ops;
	no_forget.forget = NULL;
	if (!write_adapters(4, 4))
		return;

	/* a backend and hooks of one's own; a backend that cannot forget */
	llm_adapters_params_default(&p);
	p.dir = tmpdir;
	p.backend = &fake;
	p.upload = dummy_upload;
	CHECK(llm_adapters_new(&ac, model, &p) == LLM_EINVAL, "backend + hooks: EINVAL");
	p.upload = NULL;
	p.backend = &half;
	CHECK(llm_adapters_new(&ac, model, &p) == LLM_EUNSUPPORTED,
	      "a backend without forget: EUNSUPPORTED");

	/* two resident at a time */
	if (!(ac = new_cache(&fake, 2, 0)))
		return;
	const struct llm_lora *a0 = pin(ac, 0);
	if (!a0)
		goto out;
	uint64_t one = mat_bytes(a0);
	const int nm = n_mats(a0);      /* every adapter here has the same shape */
	CHECK(fake_count() == 2 * n_mats(a0) && fake_holds(a0),
	      "a0 resident: its %d matrices placed (%d on the device)", 2 * n_mats(a0),
	      fake_count());
	llm_adapters_stats(ac, &st);
	CHECK(st.device && st.device_bytes == one, "stats: device tier, %llu device "
	      "bytes (want %llu)", (unsigned long long)st.device_bytes,
	      (unsigned long long)one);
	unpin(ac, 0);
	const struct llm_lora *a1 = pin(ac, 1);
	if (!a1)
		goto out;
	unpin(ac, 1);
	const struct llm_lora *a2 = pin(ac, 2);   /* evicts a0 (least recent) */
	if (!a2)
		goto out;
	a1 = pin(ac, 1);
	if (!a1)
		goto out;
	CHECK(fake_count() == 2 * n_mats(a1) + 2 * n_mats(a2) && fake_holds(a1) &&
	      fake_holds(a2), "a0 evicted: only a1's and a2's matrices on the device "
	      "(%d)", fake_count());
	llm_adapters_stats(ac, &st);
	CHECK(st.resident == 2 && st.evictions == 1 && st.device_bytes == 2 * one,
	      "after the eviction: %d resident, %llu evictions, %llu device bytes",
	      st.resident, (unsigned long long)st.evictions,
	      (unsigned long long)st.device_bytes);
	unpin(ac, 1);
	unpin(ac, 2);
	CHECK(llm_adapters_unload(ac, "a1", 10) == 0, "unload a1: %s", llm_errmsg());
	CHECK(fake_count() == 2 * n_mats(a2) && fake_holds(a2),
	      "a1 unloaded: its device copies forgotten (%d left)", fake_count());

	/* a device that fills up half way through an adapter: its load fails,
	 * naming the device's reason, and nothing of it stays there */
	int before = fake_count();
	pthread_mutex_lock(&fk.mu);
	fk.fail_after = fk.n_weight + 5;
	pthread_mutex_unlock(&fk.mu);
	int rc = llm_adapters_load(ac, "a3", 60);
	CHECK(rc < 0 && strstr(llm_errmsg(), "fake: the device is full"),
	      "a failed upload fails the load (%d: %s)", rc, llm_errmsg());
	CHECK(fake_count() == before, "a failed upload leaves nothing on the device "
	      "(%d, was %d)", fake_count(), before);
	pthread_mutex_lock(&fk.mu);
	fk.fail_after = -1;
	pthread_mutex_unlock(&fk.mu);
	CHECK(llm_adapters_load(ac, "a3", 60) == 0, "a3 loads once there is room: %s",
	      llm_errmsg());
	llm_adapters_free(ac);
	CHECK(fake_count() == 0, "freeing the cache forgets everything (%d left)",
	      fake_count());

	/* the byte budget counts device bytes: room for one and a half */
	if (!(ac = new_cache(&fake, 0, one + one / 2)))
		goto out;
	for (int k = 0; k < 4; k++)
		if (pin(ac, k))
			unpin(ac, k);
	llm_adapters_stats(ac, &st);
	CHECK(st.resident == 1 && st.device_bytes == one && fake_count() ==
	      2 * nm, "budget of 1.5 adapters: %d resident, %llu device bytes",
	      st.resident, (unsigned long long)st.device_bytes);
	struct llm_adapter_info *v;
	int n;
	if (!llm_adapters_list(ac, &v, &n)) {
		uint64_t sum = 0;
		for (int i = 0; i < n; i++)
			sum += v[i].device_bytes;
		CHECK(sum == one, "per-adapter device bytes add up (%llu)",
		      (unsigned long long)sum);
		free(v);
	}
out:
	llm_adapters_free(ac);
	CHECK(fake_count() == 0, "nothing left on the fake device (%d)", fake_count());
	remove_adapters();
}

/* ------------------------------------------------------------ GPU: the op */

static void *dev_floats(const float *host, int64_t n)
{
	void *d = gpu->ops->alloc(gpu, n * sizeof(float));
	if (!d) {
		fprintf(stderr, "FATAL: device alloc of %lld floats failed\n", (long long)n);
		exit(1);
	}
	if (host)
		gpu->ops->upload(gpu, d, host, n * sizeof(float));
	return d;
}

static void expect_no_error(const char *what)
{
	int rc = gpu->ops->status(gpu);
	CHECK(rc == 0, "%s: device error: %s", what, llm_errmsg());
	if (rc) {
		fprintf(stderr, "the CUDA backend is stuck after an error; stopping\n");
		exit(1);
	}
}

struct mats {
	float *a[64], *b[64];
};

/* y0 + the segments' deltas, on the CPU and on the GPU: compared, and the
 * GPU's run twice (the bits must not change). */
static void seg_case(const char *what, int n_rows, int n_in, int n_out,
                     const struct llm_lora_seg *segs, int n_segs)
{
	unsigned seed = 99;
	float *x = rnd((int64_t)n_rows * n_in, &seed, 1);
	float *y0 = rnd((int64_t)n_rows * n_out, &seed, 1);
	size_t ny = (size_t)n_rows * n_out * sizeof(float);
	float *yc = malloc(ny), *yg = malloc(ny), *yg2 = malloc(ny);
	memcpy(yc, y0, ny);
	cpu->ops->lora_seg(cpu, x, yc, n_in, n_out, segs, n_segs);

	float *dx = dev_floats(x, (int64_t)n_rows * n_in);
	float *dy = dev_floats(y0, (int64_t)n_rows * n_out);
	gpu->ops->lora_seg(gpu, dx, dy, n_in, n_out, segs, n_segs);
	gpu->ops->synchronize(gpu);
	gpu->ops->download(gpu, yg, dy, ny);
	gpu->ops->upload(gpu, dy, y0, ny);
	gpu->ops->lora_seg(gpu, dx, dy, n_in, n_out, segs, n_segs);
	gpu->ops->synchronize(gpu);
	gpu->ops->download(gpu, yg2, dy, ny);
	expect_no_error(what);

	double e = rel_err(yg, yc, (int64_t)n_rows * n_out);
	CHECK(e <= 2e-5, "%s: relative error %.3g against the CPU", what, e);
	CHECK(!memcmp(yg, yg2, ny), "%s: a second run gives other bits", what);
	/* the deltas are not lost in the noise: the result moved */
	double moved = rel_err(y0, yc, (int64_t)n_rows * n_out);
	CHECK(moved > 1e-3, "%s: the deltas changed nothing (%.3g)", what, moved);
	gpu->ops->dealloc(gpu, dx);
	gpu->ops->dealloc(gpu, dy);
	free(x);
	free(y0);
	free(yc);
	free(yg);
	free(yg2);
}

static void make_mats(struct mats *m, int n, const int *ranks, int n_in, int n_out,
                      unsigned seed)
{
	for (int i = 0; i < n; i++) {
		m->a[i] = rnd((int64_t)ranks[i] * n_in, &seed, 0.3f);
		m->b[i] = rnd((int64_t)n_out * ranks[i], &seed, 0.3f);
	}
}

static void free_mats(struct mats *m, int n)
{
	for (int i = 0; i < n; i++) {
		gpu->ops->forget(gpu, m->a[i]);
		gpu->ops->forget(gpu, m->b[i]);
		free(m->a[i]);
		free(m->b[i]);
	}
}

static void test_lora_seg(void)
{
	enum { NI = 96, NO = 200 };
	static const int ranks[12] = { 1, 64, 3, 16, 8, 33, 2, 5, 64, 12, 7, 1 };
	struct mats m;
	struct llm_lora_seg s[16];
	make_mats(&m, 12, ranks, NI, NO, 7);
#define SEG(i, t0_, n_, rows_, sc) \
	((struct llm_lora_seg){ (t0_), (n_), m.a[i], m.b[i], ranks[i], (sc), (rows_) })

	/* contiguous, disjoint, gaps between them, lengths around the kernels'
	 * 8-row items, every rank */
	int t = 0, ns = 0;
	static const int lens[12] = { 1, 7, 8, 9, 17, 3, 30, 2, 16, 5, 1, 24 };
	for (int i = 0; i < 12; i++) {
		s[ns++] = SEG(i, t, lens[i], NULL, 0.25f + 0.5f * i);
		t += lens[i] + (i % 3 == 0);
	}
	seg_case("contiguous segments, ranks 1..64", t, NI, NO, s, ns);

	/* rows lists: 150 rows dealt round-robin to 5 adapters (decode steps
	 * interleave sequences), plus a segment of its own rows at the end */
	static int32_t rows[5][40];
	int nr[5] = { 0 };
	for (int r = 0; r < 150; r++)
		rows[r % 5][nr[r % 5]++] = r;
	ns = 0;
	for (int i = 0; i < 5; i++)
		s[ns++] = SEG(i + 1, rows[i][0], nr[i], rows[i], 1.0f + i);
	s[ns++] = SEG(0, 150, 11, NULL, -2.0f);
	seg_case("interleaved rows lists", 161, NI, NO, s, ns);

	/* rows lists with uneven, scattered rows (and one of a single row) */
	static int32_t odd[3][100];
	int no[3] = { 0 };
	unsigned seed = 3;
	for (int r = 0; r < 100; r++) {
		int k = (int)((frand(&seed) + 1) * 1.5f);
		k = k > 2 ? 2 : k;
		if (k == 2 && no[2] >= 1)
			k = r % 2;
		odd[k][no[k]++] = r;
	}
	ns = 0;
	for (int i = 0; i < 3; i++)
		if (no[i])
			s[ns++] = SEG(i + 6, odd[i][0], no[i], odd[i], 0.7f);
	seg_case("scattered rows lists", 100, NI, NO, s, ns);

	/* stacked: adapters over every row (overlapping, applied in order),
	 * one over part of them, a rows-list segment beside them in the same
	 * call; zero scales and empty segments do nothing */
	static int32_t tail[6] = { 41, 43, 45, 47, 49, 50 };
	ns = 0;
	s[ns++] = SEG(1, 0, 40, NULL, 0.5f);
	s[ns++] = SEG(3, 0, 40, NULL, 1.5f);
	s[ns++] = SEG(4, 10, 12, NULL, -1.0f);
	s[ns++] = SEG(5, 0, 40, NULL, 0.0f);
	s[ns++] = SEG(2, 5, 0, NULL, 1.0f);
	s[ns++] = SEG(8, 0, 40, NULL, 0.25f);
	s[ns++] = SEG(9, 0, 6, tail, 2.0f);
	seg_case("stacked (overlapping) segments", 51, NI, NO, s, ns);

	/* wide rows: a model-sized projection, one rows list of 300 rows */
	{
		enum { WI = 288, WO = 768 };
		static const int wr[2] = { 16, 8 };
		struct mats w;
		static int32_t even[300], oddr[300];
		make_mats(&w, 2, wr, WI, WO, 11);
		for (int i = 0; i < 300; i++) {
			even[i] = 2 * i;
			oddr[i] = 2 * i + 1;
		}
		struct llm_lora_seg ws[2] = {
			{ 0, 300, w.a[0], w.b[0], 16, 0.5f, even },
			{ 1, 300, w.a[1], w.b[1], 8, 2.0f, oddr },
		};
		seg_case("a 288 x 768 projection over 600 rows", 600, WI, WO, ws, 2);
		free_mats(&w, 2);
	}

	/* cached by address: changing the host matrix changes nothing on the
	 * GPU until forget, then the new values are uploaded */
	{
		enum { R = 10 };
		unsigned sd = 5;
		float *x = rnd(R * NI, &sd, 1), *y0 = rnd(R * NO, &sd, 1);
		float *want_old = malloc(R * NO * 4), *want_new = malloc(R * NO * 4);
		float *got = malloc(R * NO * 4);
		struct llm_lora_seg g = SEG(3, 0, R, NULL, 1.0f);
		memcpy(want_old, y0, R * NO * 4);
		cpu->ops->lora_seg(cpu, x, want_old, NI, NO, &g, 1);
		float *dx = dev_floats(x, R * NI), *dy = dev_floats(y0, R * NO);
		gpu->ops->lora_seg(gpu, dx, dy, NI, NO, &g, 1);   /* uploads a3, b3 */
		for (int i = 0; i < ranks[3] * NI; i++)
			m.a[3][i] = -m.a[3][i];
		memcpy(want_new, y0, R * NO * 4);
		cpu->ops->lora_seg(cpu, x, want_new, NI, NO, &g, 1);
		gpu->ops->upload(gpu, dy, y0, R * NO * 4);
		gpu->ops->lora_seg(gpu, dx, dy, NI, NO, &g, 1);
		gpu->ops->synchronize(gpu);
		gpu->ops->download(gpu, got, dy, R * NO * 4);
		CHECK(rel_err(got, want_old, R * NO) <= 2e-5,
		      "before forget the GPU keeps its first copy of a matrix");
		gpu->ops->forget(gpu, m.a[3]);
		gpu->ops->forget(gpu, m.a[3]);   /* twice: the second is ignored */
		gpu->ops->upload(gpu, dy, y0, R * NO * 4);
		gpu->ops->lora_seg(gpu, dx, dy, NI, NO, &g, 1);
		gpu->ops->synchronize(gpu);
		gpu->ops->download(gpu, got, dy, R * NO * 4);
		expect_no_error("forget");
		CHECK(rel_err(got, want_new, R * NO) <= 2e-5,
		      "after forget the matrix is uploaded again (error %.3g)",
		      rel_err(got, want_new, R * NO));
		CHECK(rel_err(want_new, want_old, R * NO) > 1e-3, "the change shows");
		gpu->ops->dealloc(gpu, dx);
		gpu->ops->dealloc(gpu, dy);
		free(x);
		free(y0);
		free(want_old);
		free(want_new);
		free(got);
	}
	free_mats(&m, 12);
#undef SEG
}

/* Bad arguments are kept as the backend's error (on a backend of their
 * own: an error sticks). */
static void test_errors(void)
{
	struct llm_backend *b;
	float *a = calloc(2000 * 8, 4), *bb = calloc(2000 * 8, 4);
	int32_t twice[3] = { 0, 1, 1 };
	struct llm_lora_seg dup = { 0, 3, a, bb, 2, 1.0f, twice };
	struct llm_lora_seg big = { 0, 1, a, bb, 2000, 1.0f, NULL };
	const struct { const char *what; struct llm_lora_seg *g; int rc; } cases[] = {
		{ "a rows list naming a row twice", &dup, LLM_EINVAL },
		{ "rank 2000", &big, LLM_EUNSUPPORTED },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (llm_backend_init(&b, "cuda", 1)) {
			failf("cuda backend: %s", llm_errmsg());
			break;
		}
		void *x = b->ops->alloc(b, 4 * 8 * 4), *y = b->ops->alloc(b, 4 * 8 * 4);
		b->ops->lora_seg(b, x, y, 8, 8, cases[i].g, 1);
		int rc = b->ops->status(b);
		CHECK(rc == cases[i].rc, "%s: status %d (%s), want %d", cases[i].what, rc,
		      llm_errmsg(), cases[i].rc);
		llm_backend_free(b);
	}
	free(a);
	free(bb);
}

/* ------------------------------------------------------------ GPU: the model */

static int argmax(const float *v, int n)
{
	int best = 0;
	for (int i = 1; i < n; i++)
		if (v[i] > v[best])
			best = i;
	return best;
}

static struct llm_ctx *new_ctx(const char *dev)
{
	struct llm_ctx_params p;
	struct llm_ctx *c;
	llm_ctx_params_default(&p);
	p.device = dev;
	p.n_ctx = 128;
	p.n_seq_max = 8;
	p.n_threads = 2;
	if (llm_ctx_new(&c, model, &p)) {
		failf("context on %s: %s", dev, llm_errmsg());
		return NULL;
	}
	return c;
}

enum { NS = 7, PL = 6, GEN = 24 };

/* Sequences s = 0 .. NS-1 with adapter slot slot[s] (-1: base), prompts
 * prefilled in one batch, then GEN greedy steps all together. */
static int run_batch(struct llm_ctx *c, const int *slot, int out[NS][GEN])
{
	struct llm_batch b;
	int seqs[NS], nv = llm_ctx_n_vocab(c), rc = 0;
	unsigned seed = 21;
	llm_batch_init(&b, NS * PL);
	for (int s = 0; s < NS; s++) {
		seqs[s] = llm_kv_seq_new(llm_ctx_kv(c));
		for (int i = 0; i < PL; i++) {
			int tok = i ? 3 + (int)((frand(&seed) + 1) * 0.5f * (nv - 4)) : 1;
			llm_batch_add(&b, tok, i, seqs[s], i == PL - 1);
			b.adapter[b.n - 1] = slot[s];
		}
	}
	for (int step = 0; step < GEN && !rc; step++) {
		if ((rc = llm_decode(c, &b)))
			break;
		int row = 0;
		for (int i = 0; i < b.n; i++)
			if (b.logits[i])
				out[row++][step] = argmax(llm_ctx_logits(c, i), nv);
		llm_batch_clear(&b);
		for (int s = 0; s < NS; s++) {
			llm_batch_add(&b, out[s][step], PL + step, seqs[s], true);
			b.adapter[b.n - 1] = slot[s];
		}
	}
	llm_batch_free(&b);
	for (int s = 0; s < NS; s++)
		llm_kv_seq_free(llm_ctx_kv(c), seqs[s]);
	return rc;
}

static void test_model(void)
{
	/* five adapters of ranks 2 .. 32; sequences 0 and 5 share adapter 0
	 * (a rows list in the decode steps), sequence 6 is the base model */
	static const int slot[NS] = { 0, 1, 2, 3, 4, 0, -1 };
	static const int rank[5] = { 2, 4, 8, 16, 32 };
	struct llm_lora *ad[6] = { 0 };
	struct llm_ctx *cc = new_ctx("cpu"), *gc = new_ctx("cuda");
	int tc[NS][GEN], tg[NS][GEN];
	if (!cc || !gc)
		goto done;
	for (int k = 0; k < 6; k++)
		if (!(ad[k] = make_adapter(k, k < 5 ? rank[k] : 4)))
			goto done;
	for (int k = 0; k < 5; k++)
		if (llm_ctx_set_adapter(cc, k, ad[k], 1.0f) ||
		    llm_ctx_set_adapter(gc, k, ad[k], 1.0f)) {
			failf("set adapter %d: %s", k, llm_errmsg());
			goto done;
		}
	for (int pass = 0; pass < 2; pass++) {
		const char *what = pass ? "five adapters + two stacked" : "five adapters";
		/* two stacked adapters: overlapping segments of one call */
		if (pass && (llm_ctx_add_lora(cc, ad[5], 0.8f) ||
		             llm_ctx_add_lora(gc, ad[5], 0.8f) ||
		             llm_ctx_add_lora(cc, ad[4], -0.5f) ||
		             llm_ctx_add_lora(gc, ad[4], -0.5f))) {
			failf("add_lora: %s", llm_errmsg());
			break;
		}
		if (run_batch(cc, slot, tc) || run_batch(gc, slot, tg)) {
			failf("%s: decode: %s", what, llm_errmsg());
			break;
		}
		for (int s = 0; s < NS; s++) {
			int same = 0;
			while (same < GEN && tc[s][same] == tg[s][same])
				same++;
			CHECK(same == GEN, "%s: sequence %d (slot %d): the GPU's greedy tokens "
			      "depart from the CPU's at %d of %d", what, s, slot[s], same, GEN);
		}
		/* the adapters matter: the base sequence differs from adapter 0's */
		bool differ = false;
		for (int s = 1; s < 5; s++)
			differ |= memcmp(tc[s], tc[6], sizeof(tc[6])) != 0;
		CHECK(differ, "%s: adapters changed no sequence", what);
	}
done:
	llm_ctx_free(cc);
	llm_ctx_free(gc);
	for (int k = 0; k < 6; k++)
		llm_lora_free(ad[k]);
}

/* The adapter cache with the GPU as its device tier: four adapters, two
 * resident at a time, each used in turn twice (evictions free device
 * copies; a reloaded adapter may get another adapter's old host address,
 * which must not find the old device copy): the CPU's greedy tokens with
 * the same host adapter. */
static void test_tier_gpu(void)
{
	static const int slot[NS] = { 0, 0, 0, 0, 0, 0, -1 };
	struct llm_ctx *cc = new_ctx("cpu"), *gc = new_ctx("cuda");
	struct llm_adapters *ac = NULL;
	int tc[NS][GEN], tg[NS][GEN];
	if (!cc || !gc || !write_adapters(4, 0))
		goto done;
	if (!(ac = new_cache(llm_ctx_backend(gc), 2, 0)))
		goto done;
	for (int round = 0; round < 8; round++) {
		int k = round % 4;
		const struct llm_lora *a = pin(ac, k);
		if (!a)
			break;
		if (llm_ctx_set_adapter(cc, 0, a, 1.0f) || llm_ctx_set_adapter(gc, 0, a, 1.0f) ||
		    run_batch(cc, slot, tc) || run_batch(gc, slot, tg)) {
			failf("round %d: %s", round, llm_errmsg());
			unpin(ac, k);
			break;
		}
		CHECK(!memcmp(tc, tg, sizeof(tc)), "device tier, round %d (a%d): the GPU's "
		      "greedy tokens differ from the CPU's", round, k);
		llm_ctx_set_adapter(cc, 0, NULL, 0);
		llm_ctx_set_adapter(gc, 0, NULL, 0);
		unpin(ac, k);
	}
	struct llm_adapters_stats st;
	llm_adapters_stats(ac, &st);
	CHECK(st.device && st.resident == 2 && st.evictions >= 6,
	      "device tier: %d resident, %llu evictions", st.resident,
	      (unsigned long long)st.evictions);
done:
	llm_adapters_free(ac);      /* before the backend it placed adapters on */
	llm_ctx_free(cc);
	llm_ctx_free(gc);
	remove_adapters();
}

int main(void)
{
	const char *dir = getenv("LLMKIT_DATA");
	char path[4096];

	snprintf(path, sizeof(path), "%s/models/stories260K.gguf",
	         dir && *dir ? dir : "../shared/data");
	if (llm_model_load(&model, path)) {
		fprintf(stderr, "note: %s: %s; model tests skipped\n", path, llm_errmsg());
		model = NULL;
	}
	/* host part */
	if (model)
		test_tier_host();
	if (n_fail) {
		printf("%d checks passed, %d failed (host part)\n", n_pass, n_fail);
		return 1;
	}
	if (llm_cuda_device_count() < 1) {
		printf("SKIP: no CUDA device (or a build without CUDA); %d host checks "
		       "passed\n", n_pass);
		llm_model_free(model);
		return 77;
	}
	if (llm_backend_cpu_init(&cpu, 2) || llm_backend_init(&gpu, "cuda", 1)) {
		fprintf(stderr, "FAIL: backends: %s\n", llm_errmsg());
		return 1;
	}
	test_lora_seg();
	test_errors();
	if (model) {
		test_model();
		test_tier_gpu();
	}
	llm_backend_free(gpu);
	llm_backend_free(cpu);
	llm_model_free(model);
	printf("%d checks passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}
