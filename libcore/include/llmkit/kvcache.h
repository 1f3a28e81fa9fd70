/*
 * kvcache.h - the paged KV cache.
 *
 * Keys and values of every layer live in fixed-size blocks of block_size
 * positions.  Each sequence owns a block table (logical block i -> physical
 * block); physical blocks carry reference counts, so a sequence can be
 * forked (beam search, a shared prompt) by copying its table and bumping
 * counts.  A block shared by several sequences is copied before one of them
 * writes into it (copy-on-write), so forks never see each other's tokens.
 *
 * Memory: for each layer, k and v hold, for each KV head, n_blocks blocks
 * of block_size slots of head_dim elements; position p of a sequence is
 * slot o = p % block_size of physical block b = table[p / block_size].
 * Head-major, so that one head's keys over consecutive blocks are one
 * contiguous stream (scattered 2 KiB pieces read at a third of the speed
 * of long ones), and slot-major within a block, so a token's key and value
 * for a head are each one contiguous row (written whole when the token is
 * stored).  llm_kv_off gives the offset.
 */
#ifndef LLMKIT_KVCACHE_H
#define LLMKIT_KVCACHE_H

#include <stdint.h>

#include "llmkit/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

struct llm_backend;
struct llm_kvcache;

struct llm_kv_params {
	int n_layer;
	int n_head_kv;
	int head_dim;
	int block_size;       /* positions per block (default 16) */
	int n_blocks;         /* physical blocks in the pool */
	int max_seqs;         /* sequence ids 0 .. max_seqs-1 */
	int max_pos;          /* positions per sequence (the context size) */
	enum llm_dtype type;  /* LLM_F32 (the zero default) or LLM_F16 */
};

int llm_kv_init(struct llm_kvcache **out, const struct llm_kv_params *p,
                struct llm_backend *be);
void llm_kv_free(struct llm_kvcache *kv);

/* Bytes a cache of these parameters takes. */
uint64_t llm_kv_bytes(const struct llm_kv_params *p);
const struct llm_kv_params *llm_kv_params(const struct llm_kvcache *kv);

/* Offset (elements, within a layer's k or v) of dimension d of KV head h
 * at slot b * block_size + o. */
static inline int64_t llm_kv_off(const struct llm_kv_params *p, int64_t b,
                                 int o, int h, int d)
{
	return (((int64_t)h * p->n_blocks + b) * p->block_size + o) * p->head_dim + d;
}

/* A new empty sequence: its id, or LLM_ENOMEM when all ids are in use. */
int llm_kv_seq_new(struct llm_kvcache *kv);
/* Release a sequence and its blocks. */
void llm_kv_seq_free(struct llm_kvcache *kv, int seq);
/* A new sequence sharing all of src's blocks (no copy until a write). */
int llm_kv_seq_fork(struct llm_kvcache *kv, int src);
/* Positions the sequence holds. */
int llm_kv_seq_len(const struct llm_kvcache *kv, int seq);
/* Drop positions >= len. */
void llm_kv_seq_truncate(struct llm_kvcache *kv, int seq, int len);
int llm_kv_seq_valid(const struct llm_kvcache *kv, int seq);

/*
 * Make positions [from, to) writable: blocks allocated where missing, and
 * shared blocks in that range copied (copy-on-write).  The sequence length
 * becomes max(len, to).  LLM_ENOMEM when the pool runs out (nothing is
 * changed then), LLM_ERANGE when to > max_pos.
 */
int llm_kv_prepare(struct llm_kvcache *kv, int seq, int from, int to);

/* Physical slot of a position (which must be < len). */
int32_t llm_kv_slot(const struct llm_kvcache *kv, int seq, int pos);
/* The block table of a sequence (valid until the next prepare/free). */
const int32_t *llm_kv_table(const struct llm_kvcache *kv, int seq);

int llm_kv_block_size(const struct llm_kvcache *kv);
int llm_kv_n_blocks(const struct llm_kvcache *kv);
/* Blocks that can be allocated: free ones and cached ones nobody uses. */
int llm_kv_n_free_blocks(const struct llm_kvcache *kv);
/* Of those, blocks kept only by the prefix cache. */
int llm_kv_n_cached_blocks(const struct llm_kvcache *kv);
int llm_kv_max_pos(const struct llm_kvcache *kv);
int llm_kv_max_seqs(const struct llm_kvcache *kv);
int llm_kv_block_refs(const struct llm_kvcache *kv, int block);
/* Layer storage (backend memory), elements of the cache's type; offsets
 * from llm_kv_k_off / llm_kv_v_off count elements. */
void *llm_kv_k(struct llm_kvcache *kv, int layer);
void *llm_kv_v(struct llm_kvcache *kv, int layer);

/*
 * Prefix caching.  A full block of a sequence can be registered under a
 * hash of its tokens chained with the hash of all tokens before it; a new
 * sequence whose first tokens are the same then takes those blocks (their
 * counts go up) instead of computing them again - a system prompt shared
 * by every request costs its prefill once.  A registered block that no
 * sequence uses any more is kept as cached (it still counts as free) and
 * evicted, least recently released first, only when a block is needed and
 * no truly free one is left.  Matches are exact: the hash finds a block,
 * its stored tokens and parent hash confirm it.  Registered blocks are
 * never written (a write after a rewind unregisters or copies the block).
 */
struct llm_kv_prefix_stats {
	int64_t lookups;      /* full blocks asked for by llm_kv_prefix_attach
	                         onto empty sequences */
	int64_t hits;         /* blocks attached (onto any sequence) */
	int64_t evictions;    /* cached blocks reused for other data */
};

/* Positions (a multiple of block_size) of tokens[0..n) that a sequence
 * could take from the cache; *n_revived (may be NULL): how many of those
 * blocks now count as free (cached, unused). */
int llm_kv_prefix_lookup(struct llm_kvcache *kv, const int32_t *tokens, int n,
                         int *n_revived);
/* Give a sequence the cached blocks matching tokens[0..n) beyond what it
 * holds: an empty one, or one holding only whole blocks that
 * llm_kv_prefix_commit has seen (others are left as they are).  Returns
 * the positions it now holds (its length). */
int llm_kv_prefix_attach(struct llm_kvcache *kv, int seq, const int32_t *tokens,
                         int n);
/* Register the sequence's full blocks among positions [0, n), which hold
 * tokens[0..n) (the caller's promise; n <= its length).  Blocks already
 * registered are skipped, so calling this after every step is cheap. */
void llm_kv_prefix_commit(struct llm_kvcache *kv, int seq, const int32_t *tokens,
                          int n);
/* Forget every registration; cached blocks become plain free blocks. */
void llm_kv_prefix_clear(struct llm_kvcache *kv);
void llm_kv_prefix_stats(const struct llm_kvcache *kv,
                         struct llm_kv_prefix_stats *st);

#ifdef __cplusplus
}
#endif
#endif
