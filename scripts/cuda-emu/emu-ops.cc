/*
 * emu-ops - the inference ops of libcore/cuda/kernels-ops.cu (rmsnorm,
 * add_bias, swiglu, add, rope in both layouts, kv_store into f16 and f32
 * caches, paged attention: the one-token kernel and the tiled prefill
 * kernel, GQA; the half conversions and the copy kernel) run on the host
 * by the emulator, against the CPU backend's ops on the same inputs with
 * tests/test-cuda.c's tolerances.  The attention tables are built as
 * backend-cuda.cu's cuda_attention builds them.  Run by emu-main.cc.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "llmkit/backend.h"
#include "llmkit/kvcache.h"
#include "llmkit/model.h"
#include "llmkit/tensor.h"
#include "cuda/cuda-internal.h"
#include "emu-check.h"

namespace emu {
#include "kernels-ops.emu.cc"
}

#define cpu emu_cpu

static bool ok_launch(const char *what, cudaError_t e)
{
	if (e == cudaSuccess)
		return true;
	emu_check(false, "%s: launch returned %d", what, e);
	return false;
}

static void test_small_ops(int n, int dim)
{
	unsigned seed = 9 + dim;
	const size_t nd = (size_t)n * dim;
	vec x = emu_rnd(nd, &seed, 3), w = emu_rnd(dim, &seed, 1), b = emu_rnd(dim, &seed, 1);
	vec u = emu_rnd(nd, &seed, 2), yc(nd), yg(nd, NAN);
	char what[80];

	cpu->ops->rmsnorm(cpu, x.data(), w.data(), yc.data(), n, dim, 1e-5f);
	ok_launch("rmsnorm", emu::cuda_rmsnorm(0, x.data(), w.data(), yg.data(), n, dim, 1e-5f));
	snprintf(what, sizeof(what), "rmsnorm %dx%d", n, dim);
	emu_close(what, yg, yc, 1e-5);
	yg = x;
	emu::cuda_rmsnorm(0, yg.data(), w.data(), yg.data(), n, dim, 1e-5f);
	snprintf(what, sizeof(what), "rmsnorm %dx%d in place", n, dim);
	emu_close(what, yg, yc, 1e-5);

	yc = x;
	yg = x;
	cpu->ops->add_bias(cpu, yc.data(), b.data(), n, dim);
	ok_launch("add_bias", emu::cuda_add_bias(0, yg.data(), b.data(), n, dim));
	snprintf(what, sizeof(what), "add_bias %dx%d", n, dim);
	emu_close(what, yg, yc, 1e-6);

	yc = x;
	yg = x;
	cpu->ops->swiglu(cpu, yc.data(), u.data(), (int64_t)nd);
	ok_launch("swiglu", emu::cuda_swiglu(0, yg.data(), u.data(), (int64_t)nd));
	snprintf(what, sizeof(what), "swiglu %zu", nd);
	emu_close(what, yg, yc, 1e-5);

	yc = x;
	yg = x;
	cpu->ops->add(cpu, yc.data(), u.data(), (int64_t)nd);
	ok_launch("add", emu::cuda_add(0, yg.data(), u.data(), (int64_t)nd));
	snprintf(what, sizeof(what), "add %zu", nd);
	emu_close(what, yg, yc, 1e-7);
}

/* both layouts, partial rotation, large positions (as test-cuda) */
static void test_rope(int kind, int n_head, int hd, int n_rot, float mscale)
{
	unsigned seed = 11 + kind + hd;
	const int nt = 5;
	int32_t pos[nt] = { 0, 1, 77, 5000, 3 };
	vec inv(n_rot / 2);
	for (int k = 0; k < n_rot / 2; k++)
		inv[k] = powf(10000.0f, -2.0f * k / n_rot);
	struct llm_rope r;
	memset(&r, 0, sizeof(r));
	r.kind = kind ? LLM_ROPE_NEOX : LLM_ROPE_NORM;
	r.n_rot = n_rot;
	r.theta = 10000.0f;
	r.inv_freq = inv.data();
	r.mscale = mscale;
	vec q = emu_rnd((size_t)nt * n_head * hd, &seed, 1), g = q;
	cpu->ops->rope(cpu, q.data(), pos, nt, n_head, hd, &r);
	ok_launch("rope", emu::cuda_rope(0, g.data(), pos, nt, n_head, hd, n_rot, kind,
	                                 inv.data(), mscale));
	char what[80];
	snprintf(what, sizeof(what), "rope %s %d/%d of %d heads, mscale %g",
	         kind ? "neox" : "norm", n_rot, hd, n_head, mscale);
	emu_close(what, g, q, 2e-5);
}

/* half conversions: the bits of tensor.h's conversions (round to nearest
 * even), subnormals and overflow included */
static void test_to_half(void)
{
	unsigned seed = 17;
	const int n = 1000;
	vec x = emu_rnd(n, &seed, 4);
	x[0] = 70000.0f;
	x[1] = -65519.0f;
	x[2] = 3e-6f;     /* f16 subnormal */
	x[3] = -6e-8f;
	x[4] = 2.9802322e-8f;  /* 2^-25: a tie, to zero */
	x[5] = 1e-40f;
	for (int i = 6; i < 300; i++)
		x[i] = ldexpf(x[i], -10 - i % 20);
	std::vector<uint16_t> h(n, 0xdead), b(n, 0xdead);
	ok_launch("f32_to_half", emu::cuda_f32_to_half(0, x.data(), h.data(), n, false));
	ok_launch("f32_to_bf16", emu::cuda_f32_to_half(0, x.data(), b.data(), n, true));
	int bad_h = 0, bad_b = 0;
	for (int i = 0; i < n; i++) {
		bad_h += h[i] != llm_f32_to_f16(x[i]);
		bad_b += b[i] != llm_f32_to_bf16(x[i]);
	}
	emu_check(!bad_h, "f32_to_half: %d of %d halves differ from llm_f32_to_f16", bad_h, n);
	emu_check(!bad_b, "f32_to_bf16: %d of %d differ from llm_f32_to_bf16", bad_b, n);
}

static void test_copy(void)
{
	std::vector<int32_t> a(3000), c(3000, -1);
	for (int i = 0; i < 3000; i++)
		a[i] = i * 7919;
	ok_launch("copy", emu::cuda_copy_kernel(0, a.data(), c.data(), 3000 * 4));
	emu_check(a == c, "copy kernel: 12000 bytes over a grid of 16 blocks");
}

/* ---------------------------------------------------------------- attention */

/* backend-cuda.cu's cuda_attention with host memory for the device's:
 * runs of tokens with one table share one copy of its blocks; a run of
 * two or more goes to the tiled kernel (unless simple), the rest to the
 * one-token kernel. */
static cudaError_t emu_attention(const struct llm_attn_batch *ab, const float *q,
                                 float *out, bool simple)
{
	const int n = ab->n_tokens;
	std::vector<int32_t> tok_off(n), blocks, singles, tiles;
	for (int i0 = 0, i1; i0 < n; i0 = i1) {
		int max_pos = ab->pos[i0];
		for (i1 = i0 + 1; i1 < n && ab->table[i1] == ab->table[i0]; i1++)
			if (ab->pos[i1] > max_pos)
				max_pos = ab->pos[i1];
		int nblk = max_pos / ab->block_size + 1;
		for (int i = i0; i < i1; i++)
			tok_off[i] = (int32_t)blocks.size();
		if (i1 - i0 >= 2 && !simple) {
			for (int t0 = i0; t0 < i1; t0 += CUDA_ATTN_TILE) {
				int t1 = t0 + CUDA_ATTN_TILE < i1 ? t0 + CUDA_ATTN_TILE : i1, mp = 0;
				for (int i = t0; i < t1; i++)
					mp = ab->pos[i] > mp ? ab->pos[i] : mp;
				tiles.push_back(t0);
				tiles.push_back(t1 - t0);
				tiles.push_back(mp);
			}
		} else {
			for (int i = i0; i < i1; i++)
				singles.push_back(i);
		}
		for (int b = 0; b < nblk; b++)
			blocks.push_back(ab->table[i0][b]);
	}
	struct cuda_attn_args a;
	memset(&a, 0, sizeof(a));
	a.n_tokens = n;
	a.n_head = ab->n_head;
	a.n_head_kv = ab->n_head_kv;
	a.head_dim = ab->head_dim;
	a.scale = ab->scale;
	a.block_size = ab->block_size;
	a.n_blocks = ab->n_blocks;
	a.f16 = ab->kv_type == LLM_F16;
	a.k = ab->k;
	a.v = ab->v;
	a.pos = ab->pos;
	a.tok_off = tok_off.data();
	a.blocks = blocks.data();
	a.singles = singles.data();
	a.n_singles = (int)singles.size();
	a.tiles = tiles.data();
	a.n_tiles = (int)tiles.size() / 3;
	a.q = q;
	a.out = out;
	return emu::cuda_attention(0, &a);
}

/*
 * test-cuda's test_attention: three sequences over shuffled blocks of one
 * cache, stored by both (the caches identical byte for byte), then one
 * call with sequence 0's whole prefill and a decode token of each other
 * sequence; a prefill continuing at position 20; the decode tokens alone;
 * and everything through the one-token kernel.
 */
static void test_attention(int kv_type, int head_dim, int n_head, int n_head_kv)
{
	const int bs = 16, n_blocks = 24;
	const int lens[3] = { 37, 5, 70 };
	struct llm_kv_params lp;
	memset(&lp, 0, sizeof(lp));
	lp.n_layer = 1;
	lp.n_head_kv = n_head_kv;
	lp.head_dim = head_dim;
	lp.block_size = bs;
	lp.n_blocks = n_blocks;
	lp.max_seqs = 3;
	lp.max_pos = 1024;
	lp.type = (enum llm_dtype)kv_type;
	const size_t elem = kv_type == LLM_F16 ? 2 : 4;
	const size_t cache_bytes = (size_t)n_blocks * bs * n_head_kv * head_dim * elem;
	int32_t tables[3][8];
	unsigned seed = 5 + head_dim;
	const int kv_dim = n_head_kv * head_dim, q_dim = n_head * head_dim;
	char what[112], cfg[64];
	snprintf(cfg, sizeof(cfg), "%s hd %d, %d/%d heads", llm_dtype_name(kv_type), head_dim,
	         n_head, n_head_kv);

	/* blocks 23, 22, ... 0 handed out round robin */
	for (int b = 0, next = n_blocks - 1; b < 8; b++)
		for (int s = 0; s < 3; s++)
			tables[s][b] = next--;
	std::vector<unsigned char> kc(cache_bytes, 0), vc(cache_bytes, 0);
	std::vector<unsigned char> kg(cache_bytes, 0xa5), vg(cache_bytes, 0xa5);
	for (int s = 0; s < 3; s++) {
		int n = lens[s];
		vec k = emu_rnd((size_t)n * kv_dim, &seed, 1), v = emu_rnd((size_t)n * kv_dim, &seed, 1);
		std::vector<int32_t> slots(n);
		for (int p = 0; p < n; p++)
			slots[p] = tables[s][p / bs] * bs + p % bs;
		cpu->ops->kv_store(cpu, kc.data(), vc.data(), &lp, k.data(), v.data(),
		                   slots.data(), n);
		ok_launch("kv_store", emu::cuda_kv_store(0, kg.data(), vg.data(), kv_type == LLM_F16,
		                                         n_head_kv, head_dim, bs, n_blocks,
		                                         k.data(), v.data(), slots.data(), n));
	}
	/* the slots no sequence holds were never written: same on both sides */
	for (int b = 0; b < n_blocks; b++)
		for (int o = 0; o < bs; o++) {
			int used = 0;
			for (int s = 0; s < 3; s++)
				for (int j = 0; j < 8; j++)
					used |= tables[s][j] == b && j * bs + o < lens[s];
			if (used)
				continue;
			for (int h = 0; h < n_head_kv; h++) {
				size_t off = llm_kv_off(&lp, b, o, h, 0) * elem;
				memset(kg.data() + off, 0, head_dim * elem);
				memset(vg.data() + off, 0, head_dim * elem);
			}
		}
	snprintf(what, sizeof(what), "kv_store %s: caches identical", cfg);
	emu_check(kc == kg && vc == vg, "%s", what);

	const int nt = lens[0] + 2;
	std::vector<int32_t> pos(nt);
	std::vector<const int32_t *> tab(nt);
	for (int i = 0; i < lens[0]; i++) {
		pos[i] = i;
		tab[i] = tables[0];
	}
	pos[lens[0]] = lens[1] - 1;
	tab[lens[0]] = tables[1];
	pos[lens[0] + 1] = lens[2] - 1;
	tab[lens[0] + 1] = tables[2];
	vec q = emu_rnd((size_t)nt * q_dim, &seed, 2), oc((size_t)nt * q_dim);
	vec og((size_t)nt * q_dim, NAN);
	struct llm_attn_batch ab;
	memset(&ab, 0, sizeof(ab));
	ab.n_tokens = nt;
	ab.n_head = n_head;
	ab.n_head_kv = n_head_kv;
	ab.head_dim = head_dim;
	ab.scale = 1.0f / sqrtf((float)head_dim);
	ab.pos = pos.data();
	ab.table = tab.data();
	ab.block_size = bs;
	ab.n_blocks = n_blocks;
	ab.kv_type = (enum llm_dtype)kv_type;
	ab.k = kc.data();
	ab.v = vc.data();
	cpu->ops->attention(cpu, &ab, q.data(), oc.data());
	ab.k = kg.data();
	ab.v = vg.data();
	ok_launch("attention", emu_attention(&ab, q.data(), og.data(), false));
	snprintf(what, sizeof(what), "attention %s (prefill + decode)", cfg);
	emu_close(what, og, oc, 3e-5);

	/* a prefill continuing a sequence: tiles that do not start at 0 */
	const size_t n20 = (size_t)(lens[0] - 20) * q_dim;
	ab.n_tokens = lens[0] - 20;
	ab.pos = pos.data() + 20;
	ab.table = tab.data() + 20;
	og.assign(og.size(), NAN);
	ok_launch("attention", emu_attention(&ab, q.data() + 20 * (size_t)q_dim, og.data(), false));
	snprintf(what, sizeof(what), "attention %s (prefill from 20)", cfg);
	emu_close(what, og.data(), oc.data() + 20 * (size_t)q_dim, n20, 3e-5);

	/* the decode tokens alone (one kernel across sequences) */
	ab.n_tokens = 2;
	ab.pos = pos.data() + lens[0];
	ab.table = tab.data() + lens[0];
	og.assign(og.size(), NAN);
	ok_launch("attention", emu_attention(&ab, q.data() + (size_t)lens[0] * q_dim,
	                                     og.data(), false));
	snprintf(what, sizeof(what), "attention %s (decode only)", cfg);
	emu_close(what, og.data(), oc.data() + (size_t)lens[0] * q_dim, 2 * (size_t)q_dim, 3e-5);

	/* all of it through the one-token kernel (LLMKIT_CUDA_ATTN=simple) */
	ab.n_tokens = nt;
	ab.pos = pos.data();
	ab.table = tab.data();
	og.assign(og.size(), NAN);
	ok_launch("attention", emu_attention(&ab, q.data(), og.data(), true));
	snprintf(what, sizeof(what), "attention %s (one-token kernel only)", cfg);
	emu_close(what, og, oc, 3e-5);
}

void emu_test_ops(void)
{
	test_small_ops(5, 100);
	test_small_ops(3, 1000);   /* rows longer than the block */
	for (int kind = 0; kind < 2; kind++) {
		test_rope(kind, 3, 16, 12, 1.25f);
		test_rope(kind, 2, 128, 128, 1.0f);
	}
	test_to_half();
	test_copy();
	static const int f16_hd[] = { 8, 64, 256 };
	for (int hd : f16_hd)
		test_attention(LLM_F16, hd, 4, 2);
	test_attention(LLM_F32, 128, 4, 2);
	test_attention(LLM_F32, 40, 6, 2);
	/* refused: a head too wide, heads not a multiple of the KV heads */
	struct cuda_attn_args a;
	memset(&a, 0, sizeof(a));
	a.n_singles = 1;
	a.n_head = 4;
	a.n_head_kv = 2;
	a.head_dim = CUDA_ATTN_MAX_HD + 1;
	emu_check(emu::cuda_attention(0, &a) == cudaErrorInvalidValue,
	          "attention refuses a head of %d", CUDA_ATTN_MAX_HD + 1);
	a.head_dim = 64;
	a.n_head = 5;
	emu_check(emu::cuda_attention(0, &a) == cudaErrorInvalidValue,
	          "attention refuses 5 heads over 2 KV heads");
}
