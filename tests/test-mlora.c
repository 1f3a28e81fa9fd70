/*
 * test-mlora - the adapter cache (adapters.h) on stories260K with small
 * adapters written by the lora API: names restricted to the directory,
 * loading on the loader thread, LRU eviction under max_active that never
 * touches a pinned adapter and spares adapters others wait for unless
 * forced, the byte budget, unload waiting for its users, a corrupt file
 * failing with its name, rescan.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "llmkit/adapters.h"
#include "llmkit/error.h"
#include "llmkit/lora.h"
#include "llmkit/model.h"
#include "llmkit/util.h"
#include "testutil.h"

static struct llm_model *model;
static char dir[256], outside[256];

static void write_adapters(void)
{
	char path[512];
	for (int i = 0; i < 5; i++) {
		struct llm_lora *a;
		ck_assert_int_eq(llm_lora_new(&a, model, 2 + i, 4.0f, LLM_LORA_ALL, false), 0);
		llm_lora_init_peft(a, (uint64_t)i + 1);
		snprintf(path, sizeof(path), i % 2 ? "%s/a%d.gguf" : "%s/a%d", dir, i);
		ck_assert_int_eq(i % 2 ? llm_lora_save_gguf(a, model, path)
		                       : llm_lora_save_peft(a, model, path), 0);
		if (i == 0) {
			snprintf(path, sizeof(path), "%s/x", outside);
			ck_assert_int_eq(llm_lora_save_peft(a, model, path), 0);
		}
		llm_lora_free(a);
	}
	/* a symlink out of the directory, a corrupt file, a bad name */
	snprintf(path, sizeof(path), "%s/escape", dir);
	char target[512];
	snprintf(target, sizeof(target), "%s/x", outside);
	ck_assert_int_eq(symlink(target, path), 0);
	snprintf(path, sizeof(path), "%s/bad.gguf", dir);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs("GGUF not really", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/has space.gguf", dir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fclose(f);
}

static void setup(void)
{
	ck_assert_int_eq(llm_model_load(&model, test_data(STORIES260K)), 0);
	snprintf(dir, sizeof(dir), "/tmp/test-mlora-%d", (int)getpid());
	snprintf(outside, sizeof(outside), "/tmp/test-mlora-out-%d", (int)getpid());
	mkdir(dir, 0755);
	mkdir(outside, 0755);
	write_adapters();
}

static void teardown(void)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", dir, outside);
	ck_assert_int_eq(system(cmd), 0);
	llm_model_free(model);
}

static struct llm_adapters *cache(int max_active, uint64_t max_mem)
{
	struct llm_adapters_params p;
	struct llm_adapters *ac;
	llm_adapters_params_default(&p);
	p.dir = dir;
	p.max_active = max_active;
	p.max_mem = max_mem;
	ck_assert_int_eq(llm_adapters_new(&ac, model, &p), 0);
	return ac;
}

/* Acquire until resident (the loader runs meanwhile). */
static const struct llm_lora *pin(struct llm_adapters *ac, int id)
{
	const struct llm_lora *a = NULL;
	for (int i = 0; i < 2000; i++) {
		int rc = llm_adapters_acquire(ac, id, false, &a);
		ck_assert_int_ge(rc, 0);
		if (rc == 0)
			return a;
		usleep(1000);
	}
	ck_abort_msg("adapter %d never became resident", id);
	return NULL;
}

static int id_of(struct llm_adapters *ac, const char *name)
{
	int id = llm_adapters_find(ac, name);
	ck_assert_int_ge(id, 0);
	return id;
}

START_TEST(test_names)
{
	struct llm_adapters *ac = cache(0, 0);
	struct llm_adapters_stats st;
	llm_adapters_stats(ac, &st);
	ck_assert_int_eq(st.registered, 6);   /* a0..a4, bad */
	ck_assert_int_eq(llm_adapters_find(ac, "../x"), LLM_EINVAL);
	ck_assert_int_eq(llm_adapters_find(ac, "/etc/passwd"), LLM_EINVAL);
	ck_assert_int_eq(llm_adapters_find(ac, ".."), LLM_EINVAL);
	ck_assert_int_eq(llm_adapters_find(ac, ""), LLM_EINVAL);
	ck_assert_int_eq(llm_adapters_find(ac, "escape"), LLM_ENOTFOUND);
	ck_assert_int_eq(llm_adapters_find(ac, "nosuch"), LLM_ENOTFOUND);
	ck_assert(strstr(llm_errmsg(), "'nosuch'") != NULL);
	ck_assert_int_ge(llm_adapters_find(ac, "a1"), 0);
	ck_assert_str_eq(llm_adapters_name(ac, id_of(ac, "a3")), "a3");
	llm_adapters_free(ac);
}
END_TEST

START_TEST(test_lru_pins)
{
	struct llm_adapters *ac = cache(2, 0);
	int a0 = id_of(ac, "a0"), a1 = id_of(ac, "a1"), a2 = id_of(ac, "a2");
	const struct llm_lora *l0 = pin(ac, a0), *l1 = pin(ac, a1), *x;
	ck_assert_int_eq(l0->rank, 2);
	ck_assert_int_eq(l1->rank, 3);
	/* both pinned: a2 cannot be loaded, even forced */
	ck_assert_int_eq(llm_adapters_acquire(ac, a2, true, &x), 1);
	usleep(20000);
	ck_assert(!llm_adapters_resident(ac, a2));
	ck_assert(llm_adapters_resident(ac, a0) && llm_adapters_resident(ac, a1));
	/* a1 unpinned but still wanted by a waiting request: spared unless forced */
	llm_adapters_release(ac, a1);
	ck_assert_int_eq(llm_adapters_use(ac, a1), 0);
	ck_assert_int_eq(llm_adapters_acquire(ac, a2, false, &x), 1);
	usleep(20000);
	ck_assert(llm_adapters_resident(ac, a1));
	ck_assert(!llm_adapters_resident(ac, a2));
	/* forced: a1 goes (LRU among the unpinned), a0 (pinned) stays */
	const struct llm_lora *l2 = NULL;
	ck_assert_int_eq(llm_adapters_acquire(ac, a2, true, &x), 1);
	for (int i = 0; i < 2000 && llm_adapters_acquire(ac, a2, false, &l2) == 1; i++)
		usleep(1000);
	ck_assert_ptr_nonnull(l2);
	ck_assert(llm_adapters_resident(ac, a0));
	ck_assert(!llm_adapters_resident(ac, a1));
	struct llm_adapters_stats st;
	llm_adapters_stats(ac, &st);
	ck_assert_int_eq(st.resident, 2);
	ck_assert_int_eq(st.evictions, 1);
	llm_adapters_unuse(ac, a1, 5, 7, false);
	llm_adapters_release(ac, a0);
	llm_adapters_release(ac, a2);
	/* metrics per adapter */
	struct llm_adapter_info *v;
	int n;
	ck_assert_int_eq(llm_adapters_list(ac, &v, &n), 0);
	for (int i = 0; i < n; i++)
		if (!strcmp(v[i].name, "a1")) {
			ck_assert_int_eq(v[i].requests, 1);
			ck_assert_int_eq(v[i].gen_tokens, 7);
			ck_assert_int_eq(v[i].evictions, 1);
			ck_assert_int_eq(v[i].loads, 1);
			ck_assert(v[i].load_seconds > 0);
		}
	free(v);
	llm_adapters_free(ac);
}
END_TEST

START_TEST(test_mem_budget)
{
	/* a budget with room for a0 and a1 (ranks 2 and 3) only: what a0 holds
	 * in memory and a1's file (the estimate before it is read) */
	struct llm_adapters *ac = cache(0, 0);
	int a0 = id_of(ac, "a0"), a1 = id_of(ac, "a1"), a2 = id_of(ac, "a2");
	pin(ac, a0);
	llm_adapters_release(ac, a0);
	struct llm_adapter_info *v;
	int n;
	uint64_t budget = 0;
	ck_assert_int_eq(llm_adapters_list(ac, &v, &n), 0);
	for (int i = 0; i < n; i++)
		if (!strcmp(v[i].name, "a0"))
			budget += v[i].mem_bytes;
		else if (!strcmp(v[i].name, "a1"))
			budget += v[i].disk_bytes;
	free(v);
	llm_adapters_free(ac);
	ac = cache(0, budget);
	pin(ac, a0);
	pin(ac, a1);
	llm_adapters_release(ac, a0);
	llm_adapters_release(ac, a1);
	/* a2 (rank 4) does not fit beside them: LRU a0 and then a1 go */
	pin(ac, a2);
	struct llm_adapters_stats st;
	llm_adapters_stats(ac, &st);
	ck_assert(st.mem_bytes <= budget);
	ck_assert_int_ge(st.evictions, 1);
	ck_assert(!llm_adapters_resident(ac, a0));
	ck_assert(llm_adapters_resident(ac, a2));
	llm_adapters_release(ac, a2);
	llm_adapters_free(ac);
}
END_TEST

struct unload_arg {
	struct llm_adapters *ac;
	int rc;
	volatile int done;
};

static void *unload_main(void *p)
{
	struct unload_arg *u = p;
	u->rc = llm_adapters_unload(u->ac, "a3", 30);
	u->done = 1;
	return NULL;
}

START_TEST(test_unload_waits)
{
	struct llm_adapters *ac = cache(0, 0);
	int a3 = id_of(ac, "a3");
	ck_assert_int_eq(llm_adapters_use(ac, a3), 0);
	pin(ac, a3);
	struct unload_arg u = { ac, 1, 0 };
	pthread_t th;
	pthread_create(&th, NULL, unload_main, &u);
	usleep(100000);
	ck_assert_int_eq(u.done, 0);                 /* still in use */
	ck_assert_int_eq(llm_adapters_use(ac, a3), LLM_ECANCELED);  /* refused */
	ck_assert(llm_adapters_resident(ac, a3));
	llm_adapters_release(ac, a3);
	llm_adapters_unuse(ac, a3, 1, 1, false);
	pthread_join(th, NULL);
	ck_assert_int_eq(u.rc, 0);
	ck_assert(!llm_adapters_resident(ac, a3));
	ck_assert_int_eq(llm_adapters_use(ac, a3), 0);   /* usable again */
	llm_adapters_unuse(ac, a3, 0, 0, false);
	/* a load by name brings it back; a timeout while in use changes nothing */
	ck_assert_int_eq(llm_adapters_load(ac, "a3", 30), 0);
	ck_assert(llm_adapters_resident(ac, a3));
	ck_assert_int_eq(llm_adapters_use(ac, a3), 0);
	ck_assert_int_eq(llm_adapters_unload(ac, "a3", 0.05), LLM_ERANGE);
	ck_assert(llm_adapters_resident(ac, a3));
	llm_adapters_unuse(ac, a3, 0, 0, false);
	llm_adapters_free(ac);
}
END_TEST

START_TEST(test_corrupt_rescan)
{
	struct llm_adapters *ac = cache(0, 0);
	int bad = id_of(ac, "bad");
	const struct llm_lora *x;
	int rc = 1;
	for (int i = 0; i < 2000 && rc == 1; i++) {
		rc = llm_adapters_acquire(ac, bad, false, &x);
		if (rc == 1)
			usleep(1000);
	}
	ck_assert_int_lt(rc, 0);
	ck_assert(strstr(llm_errmsg(), "adapter bad") != NULL);
	ck_assert_int_lt(llm_adapters_load(ac, "bad", 30), 0);
	/* others still load */
	pin(ac, id_of(ac, "a2"));
	llm_adapters_release(ac, id_of(ac, "a2"));
	/* rescan: a new adapter, a removed one */
	char from[512], to[512];
	snprintf(from, sizeof(from), "%s/a1.gguf", dir);
	snprintf(to, sizeof(to), "%s/fresh.gguf", dir);
	ck_assert_int_eq(link(from, to), 0);
	snprintf(from, sizeof(from), "%s/a3.gguf", dir);
	ck_assert_int_eq(unlink(from), 0);
	int added = 0, removed = 0;
	ck_assert_int_eq(llm_adapters_rescan(ac, &added, &removed), 0);
	ck_assert_int_eq(added, 1);
	ck_assert_int_eq(removed, 1);
	ck_assert_int_eq(llm_adapters_find(ac, "a3"), LLM_ENOTFOUND);
	pin(ac, id_of(ac, "fresh"));
	llm_adapters_release(ac, id_of(ac, "fresh"));
	llm_adapters_free(ac);
}
END_TEST

int main(void)
{
	test_data(STORIES260K);    /* SKIP (77) without it, before forking */
	Suite *s = suite_create("mlora");
	TCase *tc = tcase_create("cache");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_lru_pins);
	tcase_add_test(tc, test_mem_budget);
	tcase_add_test(tc, test_unload_waits);
	tcase_add_test(tc, test_corrupt_rescan);
	suite_add_tcase(s, tc);
	return test_run(s) ? 1 : 0;
}
