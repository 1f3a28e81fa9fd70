/*
 * kvcache.c - paged KV cache with reference-counted blocks (kvcache.h).
 *
 * Bookkeeping lives on the host; the blocks themselves are backend memory,
 * so the same code drives the CPU and a device backend.
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
	if (!kv->k || !kv->v || !kv->refs || !kv->free_list || !kv->seqs)
		goto nomem;
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
	for (int s = 0; kv->seqs && s < kv->p.max_seqs; s++)
		free(kv->seqs[s].table);
	free(kv->k);
	free(kv->v);
	free(kv->refs);
	free(kv->free_list);
	free(kv->seqs);
	free(kv);
}

static void block_unref(struct llm_kvcache *kv, int32_t b)
{
	LLM_ASSERT(b >= 0 && b < kv->p.n_blocks && kv->refs[b] > 0);
	if (--kv->refs[b] == 0)
		kv->free_list[kv->n_free++] = b;
}

static int32_t block_alloc(struct llm_kvcache *kv)
{
	LLM_ASSERT(kv->n_free > 0);
	int32_t b = kv->free_list[--kv->n_free];
	LLM_ASSERT(kv->refs[b] == 0);
	kv->refs[b] = 1;
	return b;
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
			if (!q->table)
				return llm_error(LLM_ENOMEM, "out of memory");
		}
		q->used = 1;
		q->len = 0;
		q->n_table = 0;
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
}

int llm_kv_seq_fork(struct llm_kvcache *kv, int src)
{
	LLM_ASSERT(llm_kv_seq_valid(kv, src));
	int s = llm_kv_seq_new(kv);
	if (s < 0)
		return s;
	struct kvseq *a = &kv->seqs[src], *b = &kv->seqs[s];
	memcpy(b->table, a->table, a->n_table * sizeof(int32_t));
	b->n_table = a->n_table;
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
	if (need > kv->n_free)
		return llm_error(LLM_ENOMEM, "kv cache: out of blocks (%d needed, %d "
		                 "free)", need, kv->n_free);
	for (int b = b_from; b < b_to; b++) {
		if (b >= q->n_table) {
			q->table[b] = block_alloc(kv);
			q->n_table = b + 1;
		} else if (kv->refs[q->table[b]] > 1) {
			int32_t nb = block_alloc(kv);
			copy_block(kv, nb, q->table[b]);
			block_unref(kv, q->table[b]);
			q->table[b] = nb;
		}
	}
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
int llm_kv_n_free_blocks(const struct llm_kvcache *kv) { return kv->n_free; }
int llm_kv_max_pos(const struct llm_kvcache *kv) { return kv->p.max_pos; }
int llm_kv_max_seqs(const struct llm_kvcache *kv) { return kv->p.max_seqs; }
int llm_kv_block_refs(const struct llm_kvcache *kv, int b) { return kv->refs[b]; }
void *llm_kv_k(struct llm_kvcache *kv, int layer) { return kv->k[layer]; }
void *llm_kv_v(struct llm_kvcache *kv, int layer) { return kv->v[layer]; }
