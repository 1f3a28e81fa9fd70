/*
 * backward.h - the CPU backend's LoRA and training ops (internal): their
 * contracts are in backend.h (llm_backend_ops, after synchronize).
 */
#ifndef LLMKIT_CPU_BACKWARD_H
#define LLMKIT_CPU_BACKWARD_H

#include "llmkit/backend.h"

struct llm_pool;

/* From backend-cpu.c: the backend's pool, a per-thread scratch buffer of at
 * least n floats, and one shared buffer (for a converted weight matrix). */
struct llm_pool *llm_cpu_pool(struct llm_backend *be);
float *llm_cpu_scratch(struct llm_backend *be, int ith, size_t n);
float *llm_cpu_shared(struct llm_backend *be, size_t n);

void llm_cpu_lora_seg(struct llm_backend *be, const float *x, float *y,
                      int n_in, int n_out, const struct llm_lora_seg *segs,
                      int n_segs);
void llm_cpu_gemm(struct llm_backend *be, enum llm_gemm_op ta,
                  enum llm_gemm_op tb, int m, int n, int k, float alpha,
                  const float *a, int lda, const float *b, int ldb, float beta,
                  float *c, int ldc);
void llm_cpu_matmul_train(struct llm_backend *be, const struct llm_tensor *w,
                          const float *x, float *y, int n);
void llm_cpu_matmul_bwd(struct llm_backend *be, const struct llm_tensor *w,
                        const float *dy, float *dx, int n, float beta);
void llm_cpu_rmsnorm_bwd(struct llm_backend *be, const float *x, const float *w,
                         const float *dy, float *dx, float *dw, int n, int dim,
                         float eps);
void llm_cpu_rope_bwd(struct llm_backend *be, float *dx, const int32_t *pos,
                      int n, int n_head, int head_dim,
                      const struct llm_rope *rope);
void llm_cpu_attn_train(struct llm_backend *be, const struct llm_attn_train *at,
                        const float *q, const float *k, const float *v,
                        float *out, float *lse);
void llm_cpu_attn_train_bwd(struct llm_backend *be,
                            const struct llm_attn_train *at, const float *q,
                            const float *k, const float *v, const float *out,
                            const float *lse, const float *dout, float *dq,
                            float *dk, float *dv);
void llm_cpu_swiglu_fwd(struct llm_backend *be, const float *g, const float *u,
                        float *h, int64_t n);
void llm_cpu_swiglu_bwd(struct llm_backend *be, const float *g, const float *u,
                        const float *dh, float *dg, float *du, int64_t n);
void llm_cpu_cross_entropy(struct llm_backend *be, float *logits,
                           const int32_t *targets, int n, int n_vocab,
                           float scale, float *loss);
void llm_cpu_adamw(struct llm_backend *be, float *p, const float *g, float *m,
                   float *v, int64_t n, float lr, float beta1, float beta2,
                   float eps, float wd, int64_t step);

#endif
