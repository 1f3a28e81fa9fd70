/*
 * The scheduler behind shim/cuda_runtime.h: a launch runs its blocks one
 * after the other; a block's threads are fibers (ucontext) of the calling
 * thread, run in turn until each waits or ends.
 *
 *   __syncthreads  waits until every thread of the block has arrived; a
 *                  thread that ends while others wait, or waits at a
 *                  barrier the others never reach, is a deadlock: said on
 *                  stderr with the block and the launch, and counted
 *                  (emu_errors), the block abandoned.
 *   warp shuffles  wait until every lane named by the mask has reached a
 *                  shuffle (warps of 32 lanes, threadIdx.x fastest); the
 *                  last to arrive hands each lane its source's value.
 *                  Lanes disagreeing on the mask or the kind of shuffle,
 *                  or reading a lane outside the mask, are errors.
 *   shared memory  static __shared__ arrays are poisoned (0xff bytes: NaN)
 *                  at the start of each block, the dynamic one too, so a
 *                  read before any write shows.
 *
 * The fibers run in threadIdx order in even blocks and in reverse order in
 * odd ones, so a missing barrier between a write and a read shows one way
 * or the other.  Launch limits checked: 1024 threads a block, grid y and z
 * up to 65535, 48 KiB of static shared memory, dynamic shared memory over
 * 48 KiB only after cudaFuncSetAttribute raised the kernel's limit, and
 * 227 KiB in all.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <map>
#include <vector>

#include "cuda_runtime.h"

dim3 blockIdx, blockDim, gridDim, threadIdx;
unsigned char *emu_dsmem;

namespace {

enum { F_RUN, F_BAR, F_WARP, F_DONE };
const size_t STACK = 256 * 1024;

struct fiber {
	ucontext_t ctx;
	int state;
	char *stack;
};

struct warp {
	unsigned arrived, mask;
	int kind, width;
	uint64_t val[32];
	int src[32];
	uint64_t res[32];
	bool bad[32];
};

std::vector<fiber> fibs;
ucontext_t sched_ctx;
unsigned cur, n_threads, n_bar;
warp warps[32];
const std::function<void()> *kernel;
const char *kname;
cudaError_t last_error = cudaSuccess;
int n_errors;
std::vector<void *> shared_seen;
size_t shared_static;
std::map<const void *, int> func_shm;
std::vector<unsigned char> dsmem;

void fail(cudaError_t e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fail(cudaError_t e, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "emu: %s: block (%u,%u,%u): ", kname, blockIdx.x, blockIdx.y,
	        blockIdx.z);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	n_errors++;
	last_error = e;
}

void set_thread(unsigned t)
{
	threadIdx.x = t % blockDim.x;
	threadIdx.y = t / blockDim.x % blockDim.y;
	threadIdx.z = t / (blockDim.x * blockDim.y);
}

/* back to the scheduler; returns when this fiber runs again */
void yield(void)
{
	unsigned me = cur;
	swapcontext(&fibs[me].ctx, &sched_ctx);
	cur = me;
	set_thread(me);
}

void entry(void)
{
	(*kernel)();
	fibs[cur].state = F_DONE;
	/* uc_link: back to the scheduler */
}

void run_block(bool reverse)
{
	for (unsigned t = 0; t < n_threads; t++) {
		fiber &f = fibs[t];
		getcontext(&f.ctx);
		f.ctx.uc_stack.ss_sp = f.stack;
		f.ctx.uc_stack.ss_size = STACK;
		f.ctx.uc_link = &sched_ctx;
		makecontext(&f.ctx, entry, 0);
		f.state = F_RUN;
	}
	n_bar = 0;
	for (unsigned w = 0; w < (n_threads + 31) / 32; w++)
		warps[w].arrived = 0;
	for (;;) {
		bool ran = false;
		for (unsigned i = 0; i < n_threads; i++) {
			unsigned t = reverse ? n_threads - 1 - i : i;
			if (fibs[t].state != F_RUN)
				continue;
			cur = t;
			set_thread(t);
			swapcontext(&sched_ctx, &fibs[t].ctx);
			ran = true;
		}
		if (!ran)
			break;
	}
	unsigned done = 0, bar = 0, wp = 0;
	for (unsigned t = 0; t < n_threads; t++) {
		done += fibs[t].state == F_DONE;
		bar += fibs[t].state == F_BAR;
		wp += fibs[t].state == F_WARP;
	}
	if (done != n_threads) {
		fail(cudaErrorLaunchFailure, "deadlock: %u threads wait at __syncthreads, "
		     "%u at a warp shuffle, %u ended", bar, wp, done);
	}
}

}  // namespace

void emu_shared(void *p, size_t bytes)
{
	for (void *q : shared_seen)
		if (q == p)
			return;
	shared_seen.push_back(p);
	memset(p, 0xff, bytes);
	shared_static += bytes;
	if (shared_static > 48 * 1024) {
		fail(cudaErrorLaunchFailure, "static shared memory of %zu bytes (48 KiB at most)",
		     shared_static);
	}
}

void __syncthreads(void)
{
	fibs[cur].state = F_BAR;
	if (++n_bar == n_threads) {
		n_bar = 0;
		for (unsigned t = 0; t < n_threads; t++)
			fibs[t].state = F_RUN;
		return;
	}
	yield();
}

uint64_t emu_shfl(unsigned mask, uint64_t v, int kind, int arg, int width)
{
	const unsigned t = cur, lane = t % 32, wi = t / 32;
	warp &w = warps[wi];
	const unsigned in_warp = n_threads - wi * 32 >= 32 ? 32 : n_threads - wi * 32;
	const unsigned exist = in_warp == 32 ? 0xffffffffu : (1u << in_warp) - 1;
	if (!(mask >> lane & 1) || (mask & ~exist)) {
		fail(cudaErrorLaunchFailure, "thread %u: warp shuffle with mask %#x by a lane "
		     "outside it or over lanes that do not exist", t, mask);
	}
	if (w.arrived == 0) {
		w.mask = mask;
		w.kind = kind;
		w.width = width;
	} else if (w.mask != mask || w.kind != kind || w.width != width) {
		fail(cudaErrorLaunchFailure, "lanes of warp %u disagree on a shuffle (mask, "
		     "kind or width)", wi);
	}
	const int seg = (int)(lane & ~(unsigned)(width - 1)), l = (int)lane - seg;
	int src;
	switch (kind) {
	case EMU_SHFL_IDX: src = seg + (arg & (width - 1)); break;
	case EMU_SHFL_UP: src = l >= arg ? (int)lane - arg : (int)lane; break;
	case EMU_SHFL_DOWN: src = l + arg < width ? (int)lane + arg : (int)lane; break;
	default: src = (l ^ arg) < width ? seg + (l ^ arg) : (int)lane; break;
	}
	w.val[lane] = v;
	w.src[lane] = src;
	w.arrived |= 1u << lane;
	fibs[t].state = F_WARP;
	if ((w.arrived & w.mask) == w.mask) {
		for (int k = 0; k < 32; k++) {
			if (!(w.arrived >> k & 1))
				continue;
			w.bad[k] = !(w.mask >> w.src[k] & 1);
			w.res[k] = w.bad[k] ? 0 : w.val[w.src[k]];
			fibs[wi * 32 + k].state = F_RUN;
		}
		w.arrived = 0;
	} else {
		yield();
	}
	if (w.bad[lane]) {
		fail(cudaErrorLaunchFailure, "thread %u reads a lane outside the shuffle's "
		     "mask", t);
	}
	return w.res[lane];
}

void __syncwarp(unsigned mask)
{
	(void)emu_shfl(mask, 0, EMU_SHFL_IDX, (int)(cur % 32), 32);
}

cudaError_t cudaGetLastError(void)
{
	cudaError_t e = last_error;
	last_error = cudaSuccess;
	return e;
}

void emu_func_attr(const void *fn, int bytes)
{
	func_shm[fn] = bytes;
}

int emu_errors(void)
{
	return n_errors;
}

void emu_launch(const emu_cfg &c, const char *name, const void *fn,
                const std::function<void()> &f)
{
	kname = name;
	blockIdx = dim3(0, 0, 0);
	const unsigned long threads = (unsigned long)c.block.x * c.block.y * c.block.z;
	const int allowed = func_shm.count(fn) ? func_shm[fn] : 48 * 1024;
	if (threads < 1 || threads > 1024 || c.block.z > 64 || c.grid.x < 1 ||
	    c.grid.y < 1 || c.grid.z < 1 || c.grid.y > 65535 || c.grid.z > 65535) {
		fail(cudaErrorInvalidConfiguration, "launch of grid (%u,%u,%u) of blocks "
		     "(%u,%u,%u)", c.grid.x, c.grid.y, c.grid.z, c.block.x, c.block.y,
		     c.block.z);
		return;
	}
	if (c.shm > (size_t)allowed || c.shm > 227 * 1024) {
		fail(cudaErrorInvalidValue, "launch with %zu bytes of dynamic shared memory "
		     "(the kernel's limit: %d)", c.shm, allowed);
		return;
	}
	while (fibs.size() < threads) {
		fiber fb;
		/* a guard page below each stack */
		void *p = mmap(NULL, STACK + 4096, PROT_READ | PROT_WRITE,
		               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED) {
			perror("emu: mmap");
			exit(1);
		}
		mprotect(p, 4096, PROT_NONE);
		fb.stack = (char *)p + 4096;
		fibs.push_back(fb);
	}
	kernel = &f;
	n_threads = (unsigned)threads;
	gridDim = c.grid;
	blockDim = c.block;
	dsmem.resize(c.shm + 16);
	emu_dsmem = dsmem.data();
	unsigned long nb = 0;
	for (unsigned bz = 0; bz < c.grid.z; bz++)
		for (unsigned by = 0; by < c.grid.y; by++)
			for (unsigned bx = 0; bx < c.grid.x; bx++, nb++) {
				blockIdx = dim3(bx, by, bz);
				shared_seen.clear();
				shared_static = 0;
				memset(dsmem.data(), 0xff, dsmem.size());
				run_block(nb & 1);
			}
}
