/*
 * kvcache.c - paged KV cache with reference-counted blocks (kvcache.h).
 *
 * Bookkeeping lives on the host; the blocks themselves are backend memory,
 * so the same code drives the CPU and a device backend.
 *
 * Prefix caching: a full block can be registered under the hash of the
 * tokens it holds chained with the hash of everything before it, so that
 * a later sequence starting with the same tokens takes the block instead
 * of computing it again.  A registered block whose last reference goes
 * stays in the table, on an LRU list of cached blocks; allocation takes
 * free blocks first and evicts the least recently released cached block
 * only when none is left.  A registered block is never written: a write
 * into one (after a rewind) unregisters it first, or copies it when shared.
 */
#include <stdlib.h>
#include <string.h>

#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/kvcache.h"

struct kvseq {
	int used;
	int len;           /* positions held */
	int n_table;       /* blocks in table */
	int32_t *table;    /* (max_pos / block_size rounded up) */
	int n_hashed;      /* leading blocks whose chain hash is known */
	uint64_t *hashes;  /* (max_table) chain hash of block i */
};

struct llm_kvcache {
	struct llm_kv_params p;
	struct llm_backend *be;
	int max_table;
	void **k, **v;             /* (n_layer) */
	size_t elem;               /* bytes per element */
	int32_t *refs;             /* (n_blocks) */
	int32_t *free_list;        /* stack of free block ids */
	int n_free;
	struct kvseq *seqs;        /* (max_seqs) */

	/* prefix caching */
	uint64_t *bhash;           /* (n_blocks) chain hash of a registered block */
	uint64_t *bparent;         /* (n_blocks) chain hash of the blocks before it */
	int32_t *btok;             /* (n_blocks x block_size) its tokens */
	uint8_t *hashed;           /* (n_blocks) registered */
	int32_t *hnext;            /* (n_blocks) bucket chains */
	int32_t *buckets;          /* (n_buckets) first block, -1 */
	uint32_t n_buckets;        /* a power of two */
	int32_t *lru_prev, *lru_next;  /* (n_blocks) cached blocks with no reference */
	int32_t lru_head, lru_tail;    /* oldest, newest; -1 */
	int n_lru;
	struct llm_kv_prefix_stats pstats;
};

static size_t elem_size(enum llm_dtype t)
{
	return t == LLM_F16 ? 2 : 4;
}

uint64_t llm_kv_bytes(const struct llm_kv_params *p)
{
	return 2ull * p->n_layer * p->n_blocks * p->block_size * p->n_head_kv *
	       p->head_dim * elem_size(p->type);
}

int llm_kv_init(struct llm_kvcache **out, const struct llm_kv_params *p,
                struct llm_backend *be)
{
	struct llm_kvcache *kv;
	size_t layer_bytes;

	if (p->n_layer < 1 || p->n_head_kv < 1 || p->head_dim < 1 ||
	    p->block_size < 1 || p->n_blocks < 1 ||
	    p->max_seqs < 1 || p->max_pos < 1)
		return llm_error(LLM_EINVAL, "kv cache: invalid parameters");
	if (p->type != LLM_F32 && p->type != LLM_F16)
		return llm_error(LLM_EUNSUPPORTED, "kv cache: type %s (f32 or f16)",
		                 llm_dtype_name(p->type));
	kv = calloc(1, sizeof(*kv));
	if (!kv)
		return llm_error(LLM_ENOMEM, "out of memory");
	kv->p = *p;
	kv->be = be;
	kv->elem = elem_size(p->type);
	kv->max_table = (p->max_pos + p->block_size - 1) / p->block_size;
	kv->k = calloc(p->n_layer, sizeof(*kv->k));
	kv->v = calloc(p->n_layer, sizeof(*kv->v));
	kv->refs = calloc(p->n_blocks, sizeof(*kv->refs));
	kv->free_list = malloc(p->n_blocks * sizeof(*kv->free_list));
	kv->seqs = calloc(p->max_seqs, sizeof(*kv->seqs));
	kv->n_buckets = 1;
	while (kv->n_buckets < (uint32_t)p->n_blocks && kv->n_buckets < (1u << 30))
		kv->n_buckets <<= 1;
	kv->bhash = calloc(p->n_blocks, sizeof(*kv->bhash));
	kv->bparent = calloc(p->n_blocks, sizeof(*kv->bparent));
	kv->btok = calloc((size_t)p->n_blocks * p->block_size, sizeof(*kv->btok));
	kv->hashed = calloc(p->n_blocks, sizeof(*kv->hashed));
	kv->hnext = malloc(p->n_blocks * sizeof(*kv->hnext));
	kv->buckets = malloc(kv->n_buckets * sizeof(*kv->buckets));
	kv->lru_prev = malloc(p->n_blocks * sizeof(*kv->lru_prev));
	kv->lru_next = malloc(p->n_blocks * sizeof(*kv->lru_next));
	if (!kv->k || !kv->v || !kv->refs || !kv->free_list || !kv->seqs ||
	    !kv->bhash || !kv->bparent || !kv->btok || !kv->hashed || !kv->hnext ||
	    !kv->buckets || !kv->lru_prev || !kv->lru_next)
		goto nomem;
	for (uint32_t i = 0; i < kv->n_buckets; i++)
		kv->buckets[i] = -1;
	kv->lru_head = kv->lru_tail = -1;
	layer_bytes = (size_t)p->n_blocks * p->block_size * p->n_head_kv * p->head_dim *
	              kv->elem;
	for (int l = 0; l < p->n_layer; l++) {
		kv->k[l] = be->ops->alloc(be, layer_bytes);
		kv->v[l] = be->ops->alloc(be, layer_bytes);
		if (!kv->k[l] || !kv->v[l])
			goto nomem;
	}
	/* pop order 0, 1, 2 ... */
	for (int b = 0; b < p->n_blocks; b++)
		kv->free_list[b] = p->n_blocks - 1 - b;
	kv->n_free = p->n_blocks;
	*out = kv;
	return 0;
nomem:
	llm_kv_free(kv);
	return llm_error(LLM_ENOMEM, "kv cache: out of memory for %d blocks of %d "
	                 "positions (%llu MiB)", p->n_blocks, p->block_size,
	                 (unsigned long long)(llm_kv_bytes(p) >> 20));
}

void llm_kv_free(struct llm_kvcache *kv)
{
	if (!kv)
		return;
	for (int l = 0; l < kv->p.n_layer; l++) {
		if (kv->k && kv->k[l])
			kv->be->ops->dealloc(kv->be, kv->k[l]);
		if (kv->v && kv->v[l])
			kv->be->ops->dealloc(kv->be, kv->v[l]);
	}
	for (int s = 0; kv->seqs && s < kv->p.max_seqs; s++) {
		free(kv->seqs[s].table);
		free(kv->seqs[s].hashes);
	}
	free(kv->bhash);
	free(kv->bparent);
	free(kv->btok);
	free(kv->hashed);
	free(kv->hnext);
	free(kv->buckets);
	free(kv->lru_prev);
	free(kv->lru_next);
	free(kv->k);
	free(kv->v);
	free(kv->refs);
	free(kv->free_list);
	free(kv->seqs);
	free(kv);
}

/* ---------------------------------------------------------------- prefix table */

static uint64_t chain_hash(uint64_t parent, const int32_t *tok, int n)
{
	/* FNV-1a over the parent hash and the tokens, then a splitmix64
	 * finaliser; 0 is kept for "no parent" */
	uint64_t h = 0xcbf29ce484222325ull ^ parent;
	for (int i = 0; i < n; i++) {
		h ^= (uint32_t)tok[i];
		h *= 0x100000001b3ull;
	}
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebull;
	h ^= h >> 31;
	return h ? h : 1;
}

/* The registered block holding exactly these tokens after this parent; -1. */
static int32_t table_find(const struct llm_kvcache *kv, uint64_t h, uint64_t parent,
                          const int32_t *tok)
{
	int bs = kv->p.block_size;
	for (int32_t b = kv->buckets[h & (kv->n_buckets - 1)]; b >= 0; b = kv->hnext[b])
		if (kv->bhash[b] == h && kv->bparent[b] == parent &&
		    !memcmp(kv->btok + (size_t)b * bs, tok, bs * sizeof(*tok)))
			return b;
	return -1;
}

static void table_insert(struct llm_kvcache *kv, int32_t b, uint64_t h,
                         uint64_t parent, const int32_t *tok)
{
	int bs = kv->p.block_size;
	uint32_t i = h & (kv->n_buckets - 1);
	LLM_ASSERT(!kv->hashed[b]);
	kv->bhash[b] = h;
	kv->bparent[b] = parent;
	memcpy(kv->btok + (size_t)b * bs, tok, bs * sizeof(*tok));
	kv->hnext[b] = kv->buckets[i];
	kv->buckets[i] = b;
	kv->hashed[b] = 1;
}

static void table_remove(struct llm_kvcache *kv, int32_t b)
{
	int32_t *pp = &kv->buckets[kv->bhash[b] & (kv->n_buckets - 1)];
	LLM_ASSERT(kv->hashed[b]);
	while (*pp != b) {
		LLM_ASSERT(*pp >= 0);
		pp = &kv->hnext[*pp];
	}
	*pp = kv->hnext[b];
	kv->hashed[b] = 0;
}

static void lru_remove(struct llm_kvcache *kv, int32_t b)
{
	int32_t p = kv->lru_prev[b], n = kv->lru_next[b];
	if (p >= 0)
		kv->lru_next[p] = n;
	else
		kv->lru_head = n;
	if (n >= 0)
		kv->lru_prev[n] = p;
	else
		kv->lru_tail = p;
	kv->n_lru--;
}

static void lru_push(struct llm_kvcache *kv, int32_t b)
{
	kv->lru_prev[b] = kv->lru_tail;
	kv->lru_next[b] = -1;
	if (kv->lru_tail >= 0)
		kv->lru_next[kv->lru_tail] = b;
	else
		kv->lru_head = b;
	kv->lru_tail = b;
	kv->n_lru++;
}

/* ---------------------------------------------------------------- blocks */

static void block_unref(struct llm_kvcache *kv, int32_t b)
{
	LLM_ASSERT(b >= 0 && b < kv->p.n_blocks && kv->refs[b] > 0);
	if (--kv->refs[b] == 0) {
		if (kv->hashed[b])
			lru_push(kv, b);   /* kept for a later sequence with this prefix */
		else
			kv->free_list[kv->n_free++] = b;
	}
}

/* A free block, else the least recently released cached one. */
static int32_t block_alloc(struct llm_kvcache *kv)
{
	int32_t b;
	if (kv->n_free > 0) {
		b = kv->free_list[--kv->n_free];
	} else {
		LLM_ASSERT(kv->n_lru > 0);
		b = kv->lru_head;
		lru_remove(kv, b);
		table_remove(kv, b);
		kv->pstats.evictions++;
	}
	LLM_ASSERT(kv->refs[b] == 0);
	kv->refs[b] = 1;
	return b;
}

/* A cached block taken into a table. */
static void block_revive(struct llm_kvcache *kv, int32_t b)
{
	if (kv->refs[b] == 0)
		lru_remove(kv, b);
	kv->refs[b]++;
}

int llm_kv_seq_valid(const struct llm_kvcache *kv, int seq)
{
	return seq >= 0 && seq < kv->p.max_seqs && kv->seqs[seq].used;
}

int llm_kv_seq_new(struct llm_kvcache *kv)
{
	for (int s = 0; s < kv->p.max_seqs; s++) {
		struct kvseq *q = &kv->seqs[s];
		if (q->used)
			continue;
		if (!q->table) {
			q->table = malloc(kv->max_table * sizeof(int32_t));
			q->hashes = malloc(kv->max_table * sizeof(uint64_t));
			if (!q->table || !q->hashes) {
				free(q->table);
				free(q->hashes);
				q->table = NULL;
				q->hashes = NULL;
				return llm_error(LLM_ENOMEM, "out of memory");
			}
		}
		q->used = 1;
		q->len = 0;
		q->n_table = 0;
		q->n_hashed = 0;
		return s;
	}
	return llm_error(LLM_ENOMEM, "kv cache: all %d sequences are in use",
	                 kv->p.max_seqs);
}

void llm_kv_seq_free(struct llm_kvcache *kv, int seq)
{
	LLM_ASSERT(llm_kv_seq_valid(kv, seq));
	struct kvseq *q = &kv->seqs[seq];
	for (int i = 0; i < q->n_table; i++)
		block_unref(kv, q->table[i]);
	q->used = 0;
	q->len = 0;
	q->n_table = 0;
	q->n_hashed = 0;
}

int llm_kv_seq_fork(struct llm_kvcache *kv, int src)
{
	LLM_ASSERT(llm_kv_seq_valid(kv, src));
	int s = llm_kv_seq_new(kv);
	if (s < 0)
		return s;
	struct kvseq *a = &kv->seqs[src], *b = &kv->seqs[s];
	memcpy(b->table, a->table, a->n_table * sizeof(int32_t));
	memcpy(b->hashes, a->hashes, a->n_hashed * sizeof(uint64_t));
	b->n_table = a->n_table;
	b->n_hashed = a->n_hashed;
	b->len = a->len;
	for (int i = 0; i < b->n_table; i++)
		kv->refs[b->table[i]]++;
	return s;
}

int llm_kv_seq_len(const struct llm_kvcache *kv, int seq)
{
	LLM_ASSERT(llm_kv_seq_valid(kv, seq));
	return kv->seqs[seq].len;
}

void llm_kv_seq_truncate(struct llm_kvcache *kv, int seq, int len)
{
	LLM_ASSERT(llm_kv_seq_valid(kv, seq) && len >= 0);
	struct kvseq *q = &kv->seqs[seq];
	if (len >= q->len)
		return;
	int keep = (len + kv->p.block_size - 1) / kv->p.block_size;
	for (int i = keep; i < q->n_table; i++)
		block_unref(kv, q->table[i]);
	q->n_table = keep;
	q->len = len;
	if (q->n_hashed > len / kv->p.block_size)
		q->n_hashed = len / kv->p.block_size;
}

const struct llm_kv_params *llm_kv_params(const struct llm_kvcache *kv)
{
	return &kv->p;
}

/* A block is one contiguous region per head in each layer's k and v. */
static void copy_block(struct llm_kvcache *kv, int32_t dst, int32_t src)
{
	const struct llm_kv_params *p = &kv->p;
	size_t bytes = (size_t)p->block_size * p->head_dim * kv->elem;
	for (int l = 0; l < p->n_layer; l++) {
		char *k = kv->k[l], *v = kv->v[l];
		for (int h = 0; h < p->n_head_kv; h++) {
			size_t to = llm_kv_off(p, dst, 0, h, 0) * kv->elem;
			size_t from = llm_kv_off(p, src, 0, h, 0) * kv->elem;
			kv->be->ops->copy(kv->be, k + to, k + from, bytes);
			kv->be->ops->copy(kv->be, v + to, v + from, bytes);
		}
	}
}

int llm_kv_prepare(struct llm_kvcache *kv, int seq, int from, int to)
{
	LLM_ASSERT(llm_kv_seq_valid(kv, seq) && from >= 0 && from <= to);
	struct kvseq *q = &kv->seqs[seq];
	int bs = kv->p.block_size;

	if (to > kv->p.max_pos)
		return llm_error(LLM_ERANGE, "kv cache: position %d is beyond the "
		                 "context size %d", to - 1, kv->p.max_pos);
	if (from > q->len)
		return llm_error(LLM_EINVAL, "kv cache: sequence %d: position %d leaves "
		                 "a gap after its %d positions", seq, from, q->len);
	if (from == to)
		return 0;
	int b_from = from / bs, b_to = (to + bs - 1) / bs;
	/* count what is needed first, so failure changes nothing */
	int need = 0;
	for (int b = b_from; b < b_to; b++)
		if (b >= q->n_table || kv->refs[q->table[b]] > 1)
			need++;
	if (need > kv->n_free + kv->n_lru)
		return llm_error(LLM_ENOMEM, "kv cache: out of blocks (%d needed, %d "
		                 "free)", need, kv->n_free + kv->n_lru);
	for (int b = b_from; b < b_to; b++) {
		if (b >= q->n_table) {
			q->table[b] = block_alloc(kv);
			q->n_table = b + 1;
		} else if (kv->refs[q->table[b]] > 1) {
			int32_t nb = block_alloc(kv);
			copy_block(kv, nb, q->table[b]);
			block_unref(kv, q->table[b]);
			q->table[b] = nb;
		} else if (kv->hashed[q->table[b]]) {
			/* about to change: no longer the block its hash names */
			table_remove(kv, q->table[b]);
		}
	}
	if (q->n_hashed > b_from)
		q->n_hashed = b_from;
	if (to > q->len)
		q->len = to;
	return 0;
}

int32_t llm_kv_slot(const struct llm_kvcache *kv, int seq, int pos)
{
	const struct kvseq *q = &kv->seqs[seq];
	LLM_ASSERT(pos >= 0 && pos < q->len);
	return q->table[pos / kv->p.block_size] * kv->p.block_size +
	       pos % kv->p.block_size;
}

const int32_t *llm_kv_table(const struct llm_kvcache *kv, int seq)
{
	return kv->seqs[seq].table;
}

int llm_kv_block_size(const struct llm_kvcache *kv) { return kv->p.block_size; }
int llm_kv_n_blocks(const struct llm_kvcache *kv) { return kv->p.n_blocks; }
int llm_kv_n_free_blocks(const struct llm_kvcache *kv) { return kv->n_free + kv->n_lru; }
int llm_kv_n_cached_blocks(const struct llm_kvcache *kv) { return kv->n_lru; }
int llm_kv_max_pos(const struct llm_kvcache *kv) { return kv->p.max_pos; }
int llm_kv_max_seqs(const struct llm_kvcache *kv) { return kv->p.max_seqs; }
int llm_kv_block_refs(const struct llm_kvcache *kv, int b) { return kv->refs[b]; }
void *llm_kv_k(struct llm_kvcache *kv, int layer) { return kv->k[layer]; }
void *llm_kv_v(struct llm_kvcache *kv, int layer) { return kv->v[layer]; }

/* ---------------------------------------------------------------- prefixes */

/* Walk the chain of registered blocks matching tokens from block `from`
 * (parent: the chain hash of the blocks before it); calls fn on each.
 * Returns the block after the last match. */
static int prefix_walk(struct llm_kvcache *kv, const int32_t *tokens, int n,
                       int from, uint64_t parent,
                       void (*fn)(struct llm_kvcache *, int i, int32_t b,
                                  uint64_t h, void *), void *user)
{
	int bs = kv->p.block_size, i;
	for (i = from; i < n / bs && i < kv->max_table; i++) {
		const int32_t *t = tokens + (size_t)i * bs;
		uint64_t h = chain_hash(parent, t, bs);
		int32_t b = table_find(kv, h, parent, t);
		if (b < 0)
			break;
		if (fn)
			fn(kv, i, b, h, user);
		parent = h;
	}
	return i;
}

static void count_revived(struct llm_kvcache *kv, int i, int32_t b, uint64_t h,
                          void *user)
{
	(void)i;
	(void)h;
	if (kv->refs[b] == 0)
		(*(int *)user)++;
}

int llm_kv_prefix_lookup(struct llm_kvcache *kv, const int32_t *tokens, int n,
                         int *n_revived)
{
	int revived = 0;
	int blocks = prefix_walk(kv, tokens, n, 0, 0, count_revived, &revived);
	if (n_revived)
		*n_revived = revived;
	return blocks * kv->p.block_size;
}

struct attach_ctx {
	struct kvseq *q;
};

static void attach_one(struct llm_kvcache *kv, int i, int32_t b, uint64_t h,
                       void *user)
{
	struct kvseq *q = ((struct attach_ctx *)user)->q;
	block_revive(kv, b);
	q->table[i] = b;
	q->hashes[i] = h;
	q->n_table = q->n_hashed = i + 1;
}

int llm_kv_prefix_attach(struct llm_kvcache *kv, int seq, const int32_t *tokens,
                         int n)
{
	LLM_ASSERT(llm_kv_seq_valid(kv, seq));
	struct kvseq *q = &kv->seqs[seq];
	struct attach_ctx a = { q };
	int bs = kv->p.block_size;

	/* only onto whole blocks whose chain is known */
	if (q->len % bs || q->n_table != q->len / bs || q->n_hashed != q->n_table)
		return q->len;
	int from = q->n_table;
	int blocks = prefix_walk(kv, tokens, n, from, from ? q->hashes[from - 1] : 0,
	                         attach_one, &a);
	q->len = blocks * bs;
	/* blocks asked for are counted once, by an empty sequence's attach */
	if (from == 0)
		kv->pstats.lookups += n / bs;
	kv->pstats.hits += blocks - from;
	return q->len;
}

void llm_kv_prefix_commit(struct llm_kvcache *kv, int seq, const int32_t *tokens,
                          int n)
{
	LLM_ASSERT(llm_kv_seq_valid(kv, seq));
	struct kvseq *q = &kv->seqs[seq];
	int bs = kv->p.block_size;

	LLM_ASSERT(n <= q->len);
	for (int i = q->n_hashed; i < n / bs; i++) {
		const int32_t *t = tokens + (size_t)i * bs;
		uint64_t parent = i ? q->hashes[i - 1] : 0;
		uint64_t h = chain_hash(parent, t, bs);
		int32_t b = q->table[i];
		q->hashes[i] = h;
		/* a twin computed by another sequence meanwhile keeps the entry;
		 * this block is then freed as usual when released */
		if (!kv->hashed[b] && table_find(kv, h, parent, t) < 0)
			table_insert(kv, b, h, parent, t);
		q->n_hashed = i + 1;
	}
}

void llm_kv_prefix_clear(struct llm_kvcache *kv)
{
	while (kv->n_lru > 0) {
		int32_t b = kv->lru_head;
		lru_remove(kv, b);
		table_remove(kv, b);
		kv->free_list[kv->n_free++] = b;
	}
	for (int32_t b = 0; b < kv->p.n_blocks; b++)
		if (kv->hashed[b])
			table_remove(kv, b);
}

void llm_kv_prefix_stats(const struct llm_kvcache *kv, struct llm_kv_prefix_stats *st)
{
	*st = kv->pstats;
}
