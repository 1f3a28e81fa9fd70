/*
 * adapter-cache.c - the adapter cache of multi-LoRA serving (adapters.h):
 * a registry of the adapters directory, a loader thread, LRU eviction
 * under a count and a byte budget, pins and users.
 *
 * Entries are never freed while the cache lives (ids stay valid); a
 * vanished adapter is only marked gone.  One mutex guards everything; the
 * loader reads files without it.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "llmkit/adapters.h"
#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/lora.h"
#include "llmkit/util.h"

struct entry {
	char name[128];
	char *path;               /* what llm_lora_load reads */
	bool gguf;
	bool gone;                /* no longer in the directory */
	bool unloading;
	enum llm_adapter_state state;
	struct llm_lora *lora;
	uint64_t disk_bytes, mem_bytes, dev_bytes;
	int users, pins;
	uint64_t last_use;        /* LRU clock */
	uint64_t queued_at;
	struct llm_adapter_info st;  /* counters (name, state ... filled on list) */
};

struct llm_adapters {
	const struct llm_model *m;
	struct llm_adapters_params p;
	char *dir;                /* as given */
	char *real;               /* realpath of dir */
	pthread_mutex_t mu;
	pthread_cond_t cv;        /* loader work, load results, unuse */
	struct entry **e;
	int n, cap;
	uint64_t clock, qclock;
	int n_resident, n_loading;   /* loading: queued or loading */
	uint64_t mem, mem_loading;
	bool device;              /* a device tier: the budget counts dev_mem */
	uint64_t dev_mem;
	uint64_t loads, evictions, hits, misses, load_failures;
	bool stop;
	pthread_t th;
	bool started;
	void (*ready)(void *);
	void *ready_user;
	bool calling;             /* the loader is in ready() */
};

static const char *const state_names[] = {
	"disk", "queued", "loading", "resident", "failed"
};

const char *llm_adapter_state_name(enum llm_adapter_state s)
{
	return (unsigned)s < 5 ? state_names[s] : "?";
}

void llm_adapters_params_default(struct llm_adapters_params *p)
{
	memset(p, 0, sizeof(*p));
	p->max_active = 64;
}

/* [A-Za-z0-9_.-]+, at most 127 bytes, no leading '.' */
static bool name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 127 || s[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* The real path of p lies inside the adapters directory. */
static bool inside(const struct llm_adapters *ac, const char *p)
{
	char buf[PATH_MAX];
	if (!realpath(p, buf))
		return false;
	size_t n = strlen(ac->real);
	return !strncmp(buf, ac->real, n) && buf[n] == '/';
}

static int find_id(struct llm_adapters *ac, const char *name)
{
	for (int i = 0; i < ac->n; i++)
		if (!strcmp(ac->e[i]->name, name))
			return i;
	return -1;
}

/* Free a resident adapter's memory (under mu; nobody pins it). */
static void evict(struct llm_adapters *ac, struct entry *en, bool count)
{
	LLM_ASSERT(en->state == LLM_ADAPTER_RESIDENT && en->pins == 0);
	if (ac->p.drop)
		ac->p.drop(ac->p.tier_user, en->name, en->lora);
	llm_lora_free(en->lora);
	en->lora = NULL;
	ac->mem -= en->mem_bytes;
	ac->dev_mem -= en->dev_bytes;
	en->mem_bytes = 0;
	en->dev_bytes = 0;
	en->state = LLM_ADAPTER_DISK;
	ac->n_resident--;
	if (count) {
		en->st.evictions++;
		ac->evictions++;
	}
}

static bool room_for(const struct llm_adapters *ac, uint64_t bytes)
{
	if (ac->p.max_active > 0 && ac->n_resident + ac->n_loading >= ac->p.max_active)
		return false;
	uint64_t mem = ac->device ? ac->dev_mem : ac->mem;
	if (ac->p.max_mem > 0 && ac->n_resident + ac->n_loading > 0 &&
	    mem + ac->mem_loading + bytes > ac->p.max_mem)
		return false;
	return true;
}

/*
 * Make room for an adapter of about `bytes` by evicting least recently
 * used unpinned adapters: first those no waiting request needs, then, with
 * force, the others.  True when there is room.
 */
static bool make_room(struct llm_adapters *ac, uint64_t bytes, bool force)
{
	while (!room_for(ac, bytes)) {
		struct entry *v = NULL;
		for (int pass = 0; pass < (force ? 2 : 1) && !v; pass++)
			for (int i = 0; i < ac->n; i++) {
				struct entry *en = ac->e[i];
				if (en->state != LLM_ADAPTER_RESIDENT || en->pins > 0)
					continue;
				if (pass == 0 && en->users > 0)
					continue;
				if (!v || en->last_use < v->last_use)
					v = en;
			}
		if (!v)
			return false;
		evict(ac, v, true);
	}
	return true;
}

static void queue_load(struct llm_adapters *ac, struct entry *en)
{
	en->state = LLM_ADAPTER_QUEUED;
	en->queued_at = ++ac->qclock;
	en->st.error[0] = 0;
	ac->n_loading++;
	ac->mem_loading += en->disk_bytes;
	pthread_cond_broadcast(&ac->cv);
}

/* ---------------------------------------------------------------- device tier */

/* Bytes of a's matrices (what the device tier places). */
static uint64_t device_bytes(const struct llm_lora *a)
{
	uint64_t n = 0;
	for (int i = 0; i < a->n_layer * LLM_LORA_N; i++) {
		const struct llm_lora_mat *lm = &a->m[i];
		if (lm->a)
			n += ((uint64_t)lm->rank * lm->n_in + (uint64_t)lm->n_out * lm->rank) *
			     sizeof(float);
	}
	return n;
}

/* Free a's device copies (unknown ones are ignored: a partial upload). */
static void tier_drop(void *user, const char *name, struct llm_lora *a)
{
	struct llm_backend *be = user;
	(void)name;
	for (int i = 0; i < a->n_layer * LLM_LORA_N; i++) {
		const struct llm_lora_mat *lm = &a->m[i];
		if (lm->a) {
			be->ops->forget(be, lm->a);
			be->ops->forget(be, lm->b);
		}
	}
}

/* Place a's matrices on the device, where lora_seg finds them by address. */
static int tier_upload(void *user, const char *name, struct llm_lora *a)
{
	struct llm_backend *be = user;
	int rc = 0;
	for (int i = 0; !rc && i < a->n_layer * LLM_LORA_N; i++) {
		const struct llm_lora_mat *lm = &a->m[i];
		if (!lm->a)
			continue;
		rc = be->ops->weight(be, lm->a, (size_t)lm->rank * lm->n_in * sizeof(float));
		if (!rc)
			rc = be->ops->weight(be, lm->b,
			                     (size_t)lm->n_out * lm->rank * sizeof(float));
	}
	if (rc)
		tier_drop(user, name, a);   /* the message (the backend's) stays */
	return rc;
}

static void *loader_main(void *arg)
{
	struct llm_adapters *ac = arg;

	pthread_mutex_lock(&ac->mu);
	for (;;) {
		struct entry *en = NULL;
		for (int i = 0; i < ac->n; i++)
			if (ac->e[i]->state == LLM_ADAPTER_QUEUED &&
			    (!en || ac->e[i]->queued_at < en->queued_at))
				en = ac->e[i];
		if (!en) {
			if (ac->stop)
				break;
			pthread_cond_wait(&ac->cv, &ac->mu);
			continue;
		}
		en->state = LLM_ADAPTER_LOADING;
		char *path = strdup(en->path);
		pthread_mutex_unlock(&ac->mu);

		struct llm_lora *a = NULL;
		double t0 = llm_time_now();
		int rc = path ? llm_lora_load(&a, path, ac->m)
		              : llm_error(LLM_ENOMEM, "out of memory");
		if (!rc && ac->p.upload)
			rc = ac->p.upload(ac->p.tier_user, en->name, a);
		double dt = llm_time_now() - t0;
		char msg[256];
		if (rc)
			snprintf(msg, sizeof(msg), "%s", llm_errmsg());
		free(path);

		pthread_mutex_lock(&ac->mu);
		ac->n_loading--;
		ac->mem_loading -= en->disk_bytes;
		if (rc) {
			llm_lora_free(a);
			en->state = LLM_ADAPTER_FAILED;
			snprintf(en->st.error, sizeof(en->st.error), "adapter %.100s: %.140s",
			         en->name, msg);
			ac->load_failures++;
		} else {
			en->lora = a;
			en->mem_bytes = (uint64_t)a->n_params * sizeof(float);
			en->dev_bytes = ac->device ? device_bytes(a) : 0;
			ac->dev_mem += en->dev_bytes;
			en->st.rank = a->rank;
			en->state = LLM_ADAPTER_RESIDENT;
			en->last_use = ++ac->clock;
			ac->mem += en->mem_bytes;
			ac->n_resident++;
			en->st.loads++;
			ac->loads++;
			en->st.load_seconds += dt;
			en->st.last_load_seconds = dt;
		}
		void (*ready)(void *) = ac->ready;
		void *ru = ac->ready_user;
		ac->calling = ready != NULL;
		pthread_mutex_unlock(&ac->mu);
		if (ready)
			ready(ru);
		pthread_mutex_lock(&ac->mu);
		ac->calling = false;
		pthread_cond_broadcast(&ac->cv);
	}
	pthread_mutex_unlock(&ac->mu);
	return NULL;
}

/* ---------------------------------------------------------------- scanning */

static int add_entry(struct llm_adapters *ac, const char *name, const char *path,
                     bool gguf, uint64_t bytes)
{
	struct entry *en = calloc(1, sizeof(*en));
	if (!en || !(en->path = strdup(path))) {
		free(en);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	if (ac->n == ac->cap) {
		int nc = ac->cap ? 2 * ac->cap : 64;
		struct entry **e = realloc(ac->e, nc * sizeof(*e));
		if (!e) {
			free(en->path);
			free(en);
			return llm_error(LLM_ENOMEM, "out of memory");
		}
		ac->e = e;
		ac->cap = nc;
	}
	snprintf(en->name, sizeof(en->name), "%s", name);
	en->gguf = gguf;
	en->disk_bytes = bytes;
	en->state = LLM_ADAPTER_DISK;
	ac->e[ac->n++] = en;
	return 0;
}

/* Under mu.  What the directory holds now. */
static int scan(struct llm_adapters *ac, int *n_added, int *n_removed)
{
	DIR *d = opendir(ac->dir);
	struct dirent *de;
	int added = 0, removed = 0, rc = 0;
	char *seen;

	if (!d)
		return llm_error(LLM_EIO, "%s: %s", ac->dir, strerror(errno));
	seen = calloc(ac->n + 1, 1);
	if (!seen) {
		closedir(d);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	int n_before = ac->n;
	while ((de = readdir(d))) {
		char name[256], path[PATH_MAX], file[PATH_MAX + 32];
		struct stat sb;
		bool gguf = false;
		uint64_t bytes = 0;

		if (de->d_name[0] == '.')
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", ac->dir, de->d_name) >=
		    (int)sizeof(path))
			continue;
		if (stat(path, &sb) || !inside(ac, path))
			continue;     /* dangling, or a link out of the directory */
		snprintf(name, sizeof(name), "%s", de->d_name);
		if (S_ISDIR(sb.st_mode)) {
			struct stat fb;
			snprintf(file, sizeof(file), "%s/adapter_model.safetensors", path);
			if (stat(file, &fb) || !inside(ac, file))
				continue;
			bytes = (uint64_t)fb.st_size;
		} else if (S_ISREG(sb.st_mode)) {
			size_t n = strlen(name);
			if (n <= 5 || strcmp(name + n - 5, ".gguf"))
				continue;
			name[n - 5] = 0;
			gguf = true;
			bytes = (uint64_t)sb.st_size;
		} else {
			continue;
		}
		if (!name_ok(name))
			continue;
		int id = find_id(ac, name);
		if (id >= 0) {
			struct entry *en = ac->e[id];
			if (id < n_before)
				seen[id] = 1;
			if (en->gone) {
				en->gone = false;
				added++;
			}
			if (strcmp(en->path, path)) {
				char *p = strdup(path);
				if (p) {
					free(en->path);
					en->path = p;
				}
			}
			en->gguf = gguf;
			en->disk_bytes = bytes;
			if (en->state == LLM_ADAPTER_FAILED)
				en->state = LLM_ADAPTER_DISK;   /* may be fixed: try again */
			continue;
		}
		if ((rc = add_entry(ac, name, path, gguf, bytes)))
			break;
		added++;
	}
	closedir(d);
	for (int i = 0; !rc && i < n_before; i++) {
		struct entry *en = ac->e[i];
		if (seen[i] || en->gone)
			continue;
		en->gone = true;
		removed++;
		if (en->state == LLM_ADAPTER_RESIDENT && en->pins == 0)
			evict(ac, en, false);
		else if (en->state == LLM_ADAPTER_FAILED)
			en->state = LLM_ADAPTER_DISK;
	}
	free(seen);
	if (n_added)
		*n_added = added;
	if (n_removed)
		*n_removed = removed;
	return rc;
}

/* ---------------------------------------------------------------- life */

int llm_adapters_new(struct llm_adapters **out, const struct llm_model *m,
                     const struct llm_adapters_params *p)
{
	struct llm_adapters *ac;
	char buf[PATH_MAX];
	struct stat sb;
	int rc;

	*out = NULL;
	if (!p || !p->dir || !*p->dir)
		return llm_error(LLM_EINVAL, "adapters: a directory is needed");
	if (p->max_active < 0)
		return llm_error(LLM_EINVAL, "adapters: max_active %d is negative",
		                 p->max_active);
	if (stat(p->dir, &sb) || !S_ISDIR(sb.st_mode) || !realpath(p->dir, buf))
		return llm_error(LLM_EIO, "%s: not a directory (%s)", p->dir,
		                 errno ? strerror(errno) : "not a directory");
	bool tier = p->backend && !p->backend->ops->host_memory;
	if (tier && (p->upload || p->drop))
		return llm_error(LLM_EINVAL, "adapters: a backend and upload / drop "
		                 "hooks both given");
	if (tier && (!p->backend->ops->weight || !p->backend->ops->forget))
		return llm_error(LLM_EUNSUPPORTED, "adapters: the %s backend cannot hold "
		                 "adapters in its memory", p->backend->ops->name);
	if (!(ac = calloc(1, sizeof(*ac))))
		return llm_error(LLM_ENOMEM, "out of memory");
	ac->m = m;
	ac->p = *p;
	if (tier) {
		ac->p.upload = tier_upload;
		ac->p.drop = tier_drop;
		ac->p.tier_user = p->backend;
		ac->device = true;
	}
	ac->dir = strdup(p->dir);
	ac->real = strdup(buf);
	pthread_mutex_init(&ac->mu, NULL);
	pthread_cond_init(&ac->cv, NULL);
	if (!ac->dir || !ac->real) {
		rc = llm_error(LLM_ENOMEM, "out of memory");
		goto fail;
	}
	ac->p.dir = ac->dir;
	pthread_mutex_lock(&ac->mu);
	rc = scan(ac, NULL, NULL);
	pthread_mutex_unlock(&ac->mu);
	if (rc)
		goto fail;
	if (pthread_create(&ac->th, NULL, loader_main, ac)) {
		rc = llm_error(LLM_ENOMEM, "adapters: cannot start the loader thread");
		goto fail;
	}
	ac->started = true;
	*out = ac;
	return 0;
fail:
	llm_adapters_free(ac);
	return rc;
}

void llm_adapters_free(struct llm_adapters *ac)
{
	if (!ac)
		return;
	if (ac->started) {
		pthread_mutex_lock(&ac->mu);
		ac->stop = true;
		/* what is queued is not read any more */
		for (int i = 0; i < ac->n; i++)
			if (ac->e[i]->state == LLM_ADAPTER_QUEUED) {
				ac->e[i]->state = LLM_ADAPTER_DISK;
				ac->n_loading--;
				ac->mem_loading -= ac->e[i]->disk_bytes;
			}
		pthread_cond_broadcast(&ac->cv);
		pthread_mutex_unlock(&ac->mu);
		pthread_join(ac->th, NULL);
	}
	for (int i = 0; i < ac->n; i++) {
		struct entry *en = ac->e[i];
		if (en->lora && ac->p.drop)
			ac->p.drop(ac->p.tier_user, en->name, en->lora);
		llm_lora_free(en->lora);
		free(en->path);
		free(en);
	}
	free(ac->e);
	pthread_mutex_destroy(&ac->mu);
	pthread_cond_destroy(&ac->cv);
	free(ac->dir);
	free(ac->real);
	free(ac);
}

void llm_adapters_on_ready(struct llm_adapters *ac, void (*fn)(void *user),
                           void *user)
{
	pthread_mutex_lock(&ac->mu);
	while (ac->calling)       /* the old callback is not running after this */
		pthread_cond_wait(&ac->cv, &ac->mu);
	ac->ready = fn;
	ac->ready_user = user;
	pthread_mutex_unlock(&ac->mu);
}

int llm_adapters_rescan(struct llm_adapters *ac, int *n_added, int *n_removed)
{
	pthread_mutex_lock(&ac->mu);
	int rc = scan(ac, n_added, n_removed);
	pthread_mutex_unlock(&ac->mu);
	return rc;
}

int llm_adapters_find(struct llm_adapters *ac, const char *name)
{
	if (!name_ok(name))
		return llm_error(LLM_EINVAL, "adapter name '%.100s' is not allowed "
		                 "(letters, digits, '_', '.', '-'; not starting with "
		                 "'.')", name);
	pthread_mutex_lock(&ac->mu);
	int id = find_id(ac, name);
	if (id >= 0 && ac->e[id]->gone)
		id = -1;
	pthread_mutex_unlock(&ac->mu);
	if (id < 0)
		return llm_error(LLM_ENOTFOUND, "adapter '%s' does not exist", name);
	return id;
}

const char *llm_adapters_name(struct llm_adapters *ac, int id)
{
	pthread_mutex_lock(&ac->mu);
	const char *n = id >= 0 && id < ac->n ? ac->e[id]->name : NULL;
	pthread_mutex_unlock(&ac->mu);
	return n;
}

/* ---------------------------------------------------------------- uses */

int llm_adapters_use(struct llm_adapters *ac, int id)
{
	int rc = 0;
	pthread_mutex_lock(&ac->mu);
	if (id < 0 || id >= ac->n || ac->e[id]->gone) {
		rc = llm_error(LLM_ENOTFOUND, "adapter %d does not exist", id);
	} else if (ac->e[id]->unloading) {
		rc = llm_error(LLM_ECANCELED, "adapter '%s' is being unloaded",
		               ac->e[id]->name);
	} else {
		ac->e[id]->users++;
		ac->e[id]->st.requests++;
	}
	pthread_mutex_unlock(&ac->mu);
	return rc;
}

void llm_adapters_unuse(struct llm_adapters *ac, int id, int64_t prompt_tokens,
                        int64_t gen_tokens, bool failed)
{
	pthread_mutex_lock(&ac->mu);
	LLM_ASSERT(id >= 0 && id < ac->n && ac->e[id]->users > 0);
	struct entry *en = ac->e[id];
	en->users--;
	en->st.prompt_tokens += (uint64_t)prompt_tokens;
	en->st.gen_tokens += (uint64_t)gen_tokens;
	if (failed)
		en->st.failed++;
	if (en->users == 0)
		pthread_cond_broadcast(&ac->cv);
	pthread_mutex_unlock(&ac->mu);
}

int llm_adapters_acquire(struct llm_adapters *ac, int id, bool force,
                         const struct llm_lora **a)
{
	int rc = 1;
	*a = NULL;
	pthread_mutex_lock(&ac->mu);
	LLM_ASSERT(id >= 0 && id < ac->n);
	struct entry *en = ac->e[id];
	switch (en->state) {
	case LLM_ADAPTER_RESIDENT:
		en->pins++;
		en->last_use = ++ac->clock;
		en->st.hits++;
		ac->hits++;
		*a = en->lora;
		rc = 0;
		break;
	case LLM_ADAPTER_FAILED:
		rc = llm_error(LLM_EFORMAT, "%s", en->st.error);
		break;
	case LLM_ADAPTER_DISK:
		if (en->gone) {
			rc = llm_error(LLM_ENOTFOUND, "adapter '%s' was removed", en->name);
			break;
		}
		if (make_room(ac, en->disk_bytes, force)) {
			queue_load(ac, en);
			en->st.misses++;
			ac->misses++;
		}
		break;
	default:
		break;
	}
	pthread_mutex_unlock(&ac->mu);
	return rc;
}

void llm_adapters_release(struct llm_adapters *ac, int id)
{
	pthread_mutex_lock(&ac->mu);
	LLM_ASSERT(id >= 0 && id < ac->n && ac->e[id]->pins > 0);
	struct entry *en = ac->e[id];
	en->pins--;
	en->last_use = ++ac->clock;
	if (en->pins == 0 && en->gone && en->state == LLM_ADAPTER_RESIDENT)
		evict(ac, en, false);
	pthread_mutex_unlock(&ac->mu);
}

bool llm_adapters_resident(struct llm_adapters *ac, int id)
{
	pthread_mutex_lock(&ac->mu);
	bool r = id >= 0 && id < ac->n && ac->e[id]->state == LLM_ADAPTER_RESIDENT;
	pthread_mutex_unlock(&ac->mu);
	return r;
}

/* ---------------------------------------------------------------- management */

/* Wait on cv until the deadline (< 0: none); false when it passed. */
static bool wait_until(struct llm_adapters *ac, double deadline)
{
	if (deadline < 0) {
		pthread_cond_wait(&ac->cv, &ac->mu);
		return true;
	}
	double now = llm_time_now();
	if (now >= deadline)
		return false;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	double d = deadline - now;
	ts.tv_sec += (time_t)d;
	ts.tv_nsec += (long)((d - (double)(time_t)d) * 1e9);
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&ac->cv, &ac->mu, &ts);
	return true;
}

int llm_adapters_load(struct llm_adapters *ac, const char *name, double timeout)
{
	int id = llm_adapters_find(ac, name);
	if (id < 0)
		return id;
	double deadline = timeout < 0 ? -1 : llm_time_now() + timeout;
	int rc = 0;
	pthread_mutex_lock(&ac->mu);
	struct entry *en = ac->e[id];
	if (en->unloading) {
		rc = llm_error(LLM_ECANCELED, "adapter '%s' is being unloaded", name);
		goto out;
	}
	if (en->state == LLM_ADAPTER_FAILED)
		en->state = LLM_ADAPTER_DISK;     /* asked for: try again */
	if (en->state == LLM_ADAPTER_DISK) {
		if (!make_room(ac, en->disk_bytes, true)) {
			rc = llm_error(LLM_ENOMEM, "no room for adapter '%s': the %d resident "
			               "adapters are all in use", name, ac->n_resident);
			goto out;
		}
		queue_load(ac, en);
		en->st.misses++;
		ac->misses++;
	}
	while (en->state == LLM_ADAPTER_QUEUED || en->state == LLM_ADAPTER_LOADING)
		if (!wait_until(ac, deadline)) {
			rc = llm_error(LLM_ERANGE, "adapter '%s' is still loading after "
			               "%.0f s", name, timeout);
			goto out;
		}
	if (en->state == LLM_ADAPTER_FAILED)
		rc = llm_error(LLM_EFORMAT, "%s", en->st.error);
	else if (en->state == LLM_ADAPTER_RESIDENT)
		en->last_use = ++ac->clock;
out:
	pthread_mutex_unlock(&ac->mu);
	return rc;
}

int llm_adapters_unload(struct llm_adapters *ac, const char *name,
                        double timeout)
{
	int id = llm_adapters_find(ac, name);
	if (id < 0)
		return id;
	double deadline = timeout < 0 ? -1 : llm_time_now() + timeout;
	int rc = 0;
	pthread_mutex_lock(&ac->mu);
	struct entry *en = ac->e[id];
	if (en->unloading) {
		rc = llm_error(LLM_ECANCELED, "adapter '%s' is being unloaded already",
		               name);
		goto out;
	}
	en->unloading = true;
	while (en->users > 0 || en->state == LLM_ADAPTER_QUEUED ||
	       en->state == LLM_ADAPTER_LOADING)
		if (!wait_until(ac, deadline)) {
			rc = llm_error(LLM_ERANGE, "adapter '%s' still has %d requests in "
			               "flight after %.0f s", name, en->users, timeout);
			break;
		}
	if (!rc && en->state == LLM_ADAPTER_RESIDENT)
		evict(ac, en, false);
	en->unloading = false;
out:
	pthread_mutex_unlock(&ac->mu);
	return rc;
}

int llm_adapters_list(struct llm_adapters *ac, struct llm_adapter_info **out,
                      int *n)
{
	pthread_mutex_lock(&ac->mu);
	struct llm_adapter_info *v = malloc((ac->n + 1) * sizeof(*v));
	int k = 0;
	if (!v) {
		pthread_mutex_unlock(&ac->mu);
		return llm_error(LLM_ENOMEM, "out of memory");
	}
	for (int i = 0; i < ac->n; i++) {
		struct entry *en = ac->e[i];
		if (en->gone && en->state != LLM_ADAPTER_RESIDENT)
			continue;
		struct llm_adapter_info *x = &v[k++];
		*x = en->st;
		snprintf(x->name, sizeof(x->name), "%s", en->name);
		x->format = en->gguf ? "gguf" : "peft";
		x->state = en->state;
		x->unloading = en->unloading;
		x->disk_bytes = en->disk_bytes;
		x->mem_bytes = en->mem_bytes;
		x->device_bytes = en->dev_bytes;
		x->users = en->users;
		x->pins = en->pins;
	}
	pthread_mutex_unlock(&ac->mu);
	*out = v;
	*n = k;
	return 0;
}

void llm_adapters_stats(struct llm_adapters *ac, struct llm_adapters_stats *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_lock(&ac->mu);
	for (int i = 0; i < ac->n; i++)
		s->registered += !ac->e[i]->gone;
	s->resident = ac->n_resident;
	s->loading = ac->n_loading;
	s->max_active = ac->p.max_active;
	s->mem_bytes = ac->mem;
	s->max_mem = ac->p.max_mem;
	s->device_bytes = ac->dev_mem;
	s->device = ac->device;
	s->loads = ac->loads;
	s->evictions = ac->evictions;
	s->hits = ac->hits;
	s->misses = ac->misses;
	s->load_failures = ac->load_failures;
	pthread_mutex_unlock(&ac->mu);
}
