/*
 * emu-train - the CUDA training kernels (libcore/cuda/kernels-train.cu),
 * run on the host by the emulator of shim/cuda_runtime.h, against the CPU
 * backend's ops on the same inputs.  Checks the kernels' index math,
 * shared memory and barriers on a machine without a GPU; numbers differ
 * from a GPU's only in expf/cosf rounding.  Run by run.sh.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "llmkit/backend.h"
#include "llmkit/error.h"
#include "llmkit/model.h"
#include "cuda/cuda-internal.h"

namespace emu {
#include "kernels-train.emu.cc"
}

static int n_fail, n_pass;
static struct llm_backend *cpu;
typedef std::vector<float> vec;

static float frand(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return ((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static vec rnd(size_t n, unsigned *seed, float scale)
{
	vec v(n);
	for (size_t i = 0; i < n; i++)
		v[i] = frand(seed) * scale;
	return v;
}

static void close_(const char *what, const vec &got, const vec &want, double tol)
{
	double mx = 1e-30, err = 0;
	for (size_t i = 0; i < want.size(); i++) {
		mx = fmax(mx, fabs((double)want[i]));
		double e = fabs((double)got[i] - want[i]);
		if (!(e <= err))
			err = isnan(e) ? INFINITY : e;
	}
	if (err / mx <= tol) {
		n_pass++;
		printf("ok    %-50s %.2g\n", what, err / mx);
	} else {
		n_fail++;
		printf("FAIL  %-50s %.3g > %.3g\n", what, err / mx, tol);
	}
}

static void test_rmsnorm_bwd(int n, int dim)
{
	unsigned seed = 7 + dim;
	vec x = rnd((size_t)n * dim, &seed, 2), w = rnd(dim, &seed, 1);
	vec dy = rnd((size_t)n * dim, &seed, 1), dx = rnd((size_t)n * dim, &seed, 1);
	vec dw = rnd(dim, &seed, 1), r(n);
	vec dx2 = dx, dw2 = dw;
	cpu->ops->rmsnorm_bwd(cpu, x.data(), w.data(), dy.data(), dx.data(), dw.data(),
	                      n, dim, 1e-5f);
	emu::cuda_rmsnorm_bwd(0, x.data(), w.data(), dy.data(), dx2.data(), dw2.data(),
	                      r.data(), n, dim, 1e-5f);
	char what[80];
	snprintf(what, sizeof(what), "rmsnorm_bwd %dx%d dx", n, dim);
	close_(what, dx2, dx, 1e-5);
	snprintf(what, sizeof(what), "rmsnorm_bwd %dx%d dw", n, dim);
	close_(what, dw2, dw, 1e-5);
}

static void test_rope_bwd(int kind, int n_rot, float mscale)
{
	unsigned seed = 3 + n_rot;
	const int n = 9, n_head = 3, hd = 64;
	vec inv(n_rot / 2);
	for (int k = 0; k < n_rot / 2; k++)
		inv[k] = powf(10000.0f, -2.0f * k / n_rot);
	struct llm_rope r;
	memset(&r, 0, sizeof(r));
	r.kind = (enum llm_rope_kind)kind;
	r.n_rot = n_rot;
	r.theta = 10000.0f;
	r.inv_freq = inv.data();
	r.mscale = mscale;
	int32_t pos[9];
	for (int i = 0; i < n; i++)
		pos[i] = (i * 131) % 500;
	vec x = rnd((size_t)n * n_head * hd, &seed, 1), y = x;
	cpu->ops->rope_bwd(cpu, x.data(), pos, n, n_head, hd, &r);
	emu::cuda_rope_bwd(0, y.data(), pos, n, n_head, hd, n_rot, kind == LLM_ROPE_NEOX,
	                   inv.data(), mscale);
	char what[80];
	snprintf(what, sizeof(what), "rope_bwd %s %d/%d mscale %g",
	         kind == LLM_ROPE_NEOX ? "neox" : "norm", n_rot, hd, mscale);
	close_(what, y, x, 1e-5);
}

static void test_attn(int n_seq, int T, int n_head, int n_head_kv, int hd)
{
	unsigned seed = 5 + T + hd;
	const size_t n = (size_t)n_seq * T, qd = n_head * hd, kd = n_head_kv * hd;
	std::vector<int32_t> start(n);
	for (int s = 0; s < n_seq; s++)
		for (int i = 0; i < T; i++)
			start[s * T + i] = s ? 0 : i >= 2 * T / 3 ? 2 * T / 3 : i >= T / 4 ? T / 4 : 0;
	struct llm_attn_train at = { n_seq, T, n_head, n_head_kv, hd,
	                             1.0f / sqrtf((float)hd), start.data() };
	vec q = rnd(n * qd, &seed, 1), k = rnd(n * kd, &seed, 1), v = rnd(n * kd, &seed, 1);
	vec dout = rnd(n * qd, &seed, 1);
	vec out(n * qd), lse(n * n_head), dq(n * qd), dk(n * kd), dv(n * kd);
	vec out2(n * qd, NAN), lse2(n * n_head, NAN), dq2(n * qd, NAN), dk2(n * kd, NAN);
	vec dv2(n * kd, NAN), D(n * n_head, NAN);
	cpu->ops->attn_train(cpu, &at, q.data(), k.data(), v.data(), out.data(), lse.data());
	cpu->ops->attn_train_bwd(cpu, &at, q.data(), k.data(), v.data(), out.data(),
	                         lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
	struct cuda_attn_train_args a;
	memset(&a, 0, sizeof(a));
	a.n_seq = n_seq;
	a.seq_len = T;
	a.n_head = n_head;
	a.n_head_kv = n_head_kv;
	a.head_dim = hd;
	a.scale = at.scale;
	a.start = start.data();
	a.q = q.data();
	a.k = k.data();
	a.v = v.data();
	a.out = out2.data();
	a.lse = lse2.data();
	if (emu::cuda_attn_train(0, &a) != cudaSuccess) {
		n_fail++;
		printf("FAIL  attention launch refused\n");
		return;
	}
	char what[96];
	snprintf(what, sizeof(what), "attn %dx%d %d/%d heads of %d: out", n_seq, T, n_head,
	         n_head_kv, hd);
	close_(what, out2, out, 1e-5);
	snprintf(what, sizeof(what), "attn %dx%d %d/%d heads of %d: lse", n_seq, T, n_head,
	         n_head_kv, hd);
	close_(what, lse2, lse, 1e-5);
	/* the backward from the CPU's out and lse */
	a.out = out.data();
	a.lse = lse.data();
	a.dout = dout.data();
	a.dq = dq2.data();
	a.dk = dk2.data();
	a.dv = dv2.data();
	a.D = D.data();
	emu::cuda_attn_train_bwd(0, &a);
	snprintf(what, sizeof(what), "attn_bwd %dx%d %d/%d heads of %d: dq", n_seq, T,
	         n_head, n_head_kv, hd);
	close_(what, dq2, dq, 1e-4);
	what[strlen(what) - 1] = 'k';
	close_(what, dk2, dk, 1e-4);
	what[strlen(what) - 1] = 'v';
	close_(what, dv2, dv, 1e-4);
}

static void test_swiglu(void)
{
	unsigned seed = 21;
	const size_t n = 3001;
	vec g = rnd(n, &seed, 6), u = rnd(n, &seed, 2), dh = rnd(n, &seed, 1);
	vec h(n), dg(n), du(n), h2(n, NAN), dg2(n, NAN), du2(n, NAN);
	cpu->ops->swiglu_fwd(cpu, g.data(), u.data(), h.data(), n);
	cpu->ops->swiglu_bwd(cpu, g.data(), u.data(), dh.data(), dg.data(), du.data(), n);
	emu::cuda_swiglu_fwd(0, g.data(), u.data(), h2.data(), n);
	emu::cuda_swiglu_bwd(0, g.data(), u.data(), dh.data(), dg2.data(), du2.data(), n);
	close_("swiglu_fwd", h2, h, 1e-6);
	close_("swiglu_bwd dg", dg2, dg, 1e-6);
	close_("swiglu_bwd du", du2, du, 1e-6);
}

static void test_cross_entropy(int nv)
{
	unsigned seed = 31 + nv;
	const int n = 6;
	const int32_t tg[6] = { 3, -1, nv - 1, 0, nv / 2, -1 };
	vec lg = rnd((size_t)n * nv, &seed, 8), lg2 = lg, loss(n), loss2(n, NAN);
	cpu->ops->cross_entropy(cpu, lg.data(), tg, n, nv, 0.25f, loss.data());
	emu::cuda_cross_entropy(0, lg2.data(), tg, n, nv, 0.25f, loss2.data());
	char what[64];
	snprintf(what, sizeof(what), "cross_entropy over %d: gradient", nv);
	close_(what, lg2, lg, 1e-5);
	snprintf(what, sizeof(what), "cross_entropy over %d: loss", nv);
	close_(what, loss2, loss, 1e-5);
}

static void test_adamw(void)
{
	unsigned seed = 41;
	const size_t n = 5000;
	vec p = rnd(n, &seed, 1), g = rnd(n, &seed, 1), m = rnd(n, &seed, 0.1f);
	vec v = rnd(n, &seed, 0.1f);
	for (size_t i = 0; i < n; i++)
		v[i] *= v[i];
	vec p2 = p, m2 = m, v2 = v;
	for (int step = 1; step <= 3; step++) {
		cpu->ops->adamw(cpu, p.data(), g.data(), m.data(), v.data(), n, 1e-3f, 0.9f,
		                0.999f, 1e-8f, 0.1f, step);
		double bc1 = 1.0 - pow(0.9f, (double)step), bc2 = 1.0 - pow(0.999f, (double)step);
		emu::cuda_adamw(0, p2.data(), g.data(), m2.data(), v2.data(), n, 0.9f, 0.999f,
		                1e-8f, (float)(1.0 - 1e-3 * 0.1), (float)(1e-3 / bc1),
		                (float)sqrt(bc2));
	}
	close_("adamw p", p2, p, 1e-6);
	close_("adamw m", m2, m, 1e-6);
	close_("adamw v", v2, v, 1e-6);
}

int main(void)
{
	if (llm_backend_cpu_init(&cpu, 1)) {
		fprintf(stderr, "%s\n", llm_errmsg());
		return 1;
	}
	test_rmsnorm_bwd(7, 300);
	test_rmsnorm_bwd(3, 64);
	test_rope_bwd(LLM_ROPE_NORM, 64, 1.0f);
	test_rope_bwd(LLM_ROPE_NEOX, 64, 1.0f);
	test_rope_bwd(LLM_ROPE_NEOX, 48, 1.3f);
	test_attn(2, 37, 4, 2, 16);
	test_attn(1, 150, 2, 1, 8);     /* more rows than the block's threads */
	test_attn(1, 20, 2, 2, 200);    /* head wider than the block */
	test_swiglu();
	test_cross_entropy(1000);
	test_cross_entropy(300);
	test_adamw();
	llm_backend_free(cpu);
	printf("%d checks passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}
