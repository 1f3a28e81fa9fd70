/*
 * adapters.h - the adapter cache of multi-LoRA serving: many LoRA adapters
 * (lora.h) registered from one directory, loaded on first use on a loader
 * thread, kept in host memory under a count and a byte budget, evicted
 * least-recently-used when nothing uses them.
 *
 * Directory.  Every subdirectory of the adapters directory holding
 * adapter_config.json or adapter_model.safetensors is a PEFT adapter named
 * after the subdirectory; every NAME.gguf file is a llama.cpp GGUF adapter
 * named NAME.  Names are [A-Za-z0-9_.-], at most 127 bytes, not starting
 * with '.'; an entry whose real path (symlinks resolved) leaves the
 * directory is not registered.  A name is only ever looked up in the
 * registry, so a request can never make the server open another path.
 * llm_adapters_rescan picks up what was added or removed.
 *
 * Tiers.  disk -> host memory (llm_lora) -> device memory.  Given the
 * serving backend (params.backend) and it has memory of its own (a GPU),
 * an adapter that becomes resident is also placed in the device's memory
 * (its A and B matrices, through ops->weight, on the loader thread: a
 * device that is full fails that adapter's load, not the server), and its
 * device copies are freed (ops->forget) when it is evicted or unloaded;
 * the byte budget then counts device bytes.  The upload / drop hooks are
 * the general form (upload after an adapter is read, drop before its host
 * copy is freed; drop is called with the cache's lock held); the backend
 * sets them itself.  The CPU backend computes from host memory: no tier.
 *
 * Lifetime of a use.  A request naming an adapter counts as a user from
 * submission to its end (llm_adapters_use / _unuse; per-adapter metrics are
 * kept there).  While it runs, the engine pins the adapter
 * (llm_adapters_acquire / _release on the engine thread): a pinned adapter
 * is never evicted.  llm_adapters_unload waits for the users to finish.
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef LLMKIT_ADAPTERS_H
#define LLMKIT_ADAPTERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct llm_backend;
struct llm_model;
struct llm_lora;
struct llm_adapters;

struct llm_adapters_params {
	const char *dir;          /* the adapters directory (required) */
	int max_active;           /* adapters resident at once (default 64; 0: no
	                             limit) */
	uint64_t max_mem;         /* bytes of resident adapter matrices, on the
	                             device with a device tier (0: no limit; one
	                             adapter larger than it is still read when
	                             nothing else is resident) */
	/* device tier: the backend the adapters are served on (NULL or the
	 * CPU: host memory only; it must outlive the cache); or hooks of
	 * one's own (not both) */
	struct llm_backend *backend;
	int (*upload)(void *user, const char *name, struct llm_lora *a);
	void (*drop)(void *user, const char *name, struct llm_lora *a);
	void *tier_user;
};

void llm_adapters_params_default(struct llm_adapters_params *p);

/* Registers the directory's adapters (nothing is read yet) and starts the
 * loader thread. */
int llm_adapters_new(struct llm_adapters **out, const struct llm_model *m,
                     const struct llm_adapters_params *p);
/* Stops the loader; every use must be over. */
void llm_adapters_free(struct llm_adapters *ac);

/* Called (on the loader thread) when a load finished, well or not: the
 * engine sets it to wake up and admit what waited.  Not under any lock.
 * Once this returns, the previous callback is not running (NULL unsets). */
void llm_adapters_on_ready(struct llm_adapters *ac, void (*fn)(void *user),
                           void *user);

/* Scan the directory again: new adapters are registered, vanished ones
 * unregistered (freed once unused), failed ones may be tried again. */
int llm_adapters_rescan(struct llm_adapters *ac, int *n_added, int *n_removed);

/* An adapter's id (>= 0, stable for the cache's life): LLM_EINVAL for a
 * name that is not allowed, LLM_ENOTFOUND for an unknown one. */
int llm_adapters_find(struct llm_adapters *ac, const char *name);
/* The name of id (valid for the cache's life), NULL for a bad id. */
const char *llm_adapters_name(struct llm_adapters *ac, int id);

/* A request naming id was submitted: LLM_ENOTFOUND for an id no longer
 * registered, LLM_ECANCELED while the adapter is being unloaded. */
int llm_adapters_use(struct llm_adapters *ac, int id);
/* ... and is done: its tokens go to the adapter's metrics. */
void llm_adapters_unuse(struct llm_adapters *ac, int id, int64_t prompt_tokens,
                        int64_t gen_tokens, bool failed);

/*
 * Engine thread: pin id for a request about to run.  0: resident, pinned,
 * *a set.  1: not resident yet - a load was queued (or is under way, or
 * waits for room: with force, adapters that others still wait for may be
 * evicted to make it).  Negative: reading it failed (the message says why,
 * naming the adapter); it is tried again after a rescan or a load.
 */
int llm_adapters_acquire(struct llm_adapters *ac, int id, bool force,
                         const struct llm_lora **a);
void llm_adapters_release(struct llm_adapters *ac, int id);
bool llm_adapters_resident(struct llm_adapters *ac, int id);

/* Load now (waits at most timeout seconds; < 0: no limit): 0 when
 * resident; LLM_ENOMEM when every resident adapter is pinned. */
int llm_adapters_load(struct llm_adapters *ac, const char *name, double timeout);
/* Unload: new requests for it are refused meanwhile, the ones in flight
 * finish first (at most timeout seconds, else LLM_ERANGE and nothing
 * changes), then its memory is freed.  0 also when it was not resident. */
int llm_adapters_unload(struct llm_adapters *ac, const char *name,
                        double timeout);

enum llm_adapter_state {
	LLM_ADAPTER_DISK,         /* registered, not in memory */
	LLM_ADAPTER_QUEUED,       /* waiting for the loader */
	LLM_ADAPTER_LOADING,
	LLM_ADAPTER_RESIDENT,     /* in host memory (and the device's) */
	LLM_ADAPTER_FAILED        /* reading it failed (error says why) */
};

const char *llm_adapter_state_name(enum llm_adapter_state s);

struct llm_adapter_info {
	char name[128];
	const char *format;       /* "peft" or "gguf" */
	enum llm_adapter_state state;
	bool unloading;
	uint64_t disk_bytes;      /* the file(s) */
	uint64_t mem_bytes;       /* resident matrices (0 when not resident) */
	uint64_t device_bytes;    /* their device copies (device tier) */
	int rank;                 /* once read */
	int users, pins;          /* requests in flight / running */
	uint64_t requests, failed, prompt_tokens, gen_tokens;
	uint64_t hits, misses;    /* acquires that found it resident / loaded it */
	uint64_t loads, evictions;
	double load_seconds;      /* all loads */
	double last_load_seconds;
	char error[256];          /* the last failure */
};

/* A snapshot of every registered adapter (malloc'd array). */
int llm_adapters_list(struct llm_adapters *ac, struct llm_adapter_info **out,
                      int *n);

struct llm_adapters_stats {
	int registered, resident, loading;
	int max_active;
	uint64_t mem_bytes, max_mem;
	uint64_t device_bytes;    /* resident matrices on the device */
	bool device;              /* a device tier: max_mem counts device_bytes */
	uint64_t loads, evictions, hits, misses, load_failures;
};

void llm_adapters_stats(struct llm_adapters *ac, struct llm_adapters_stats *s);

#ifdef __cplusplus
}
#endif
#endif
