#!/usr/bin/env python3
"""PyTorch + PEFT LoRA training speed on CPU, stories110M's shape.

usage: train_torch.py BATCH SEQ STEPS THREADS RANK
Random weights (speed does not depend on them), LoRA on all seven
projections, AdamW; prints "torch_tok_s X peak_rss_mb Y" after one warm-up
step.
"""
import resource
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model

batch, seq, steps, threads, rank = map(int, sys.argv[1:6])
torch.set_num_threads(threads)
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048,
                  num_hidden_layers=12, num_attention_heads=12,
                  num_key_value_heads=12, max_position_embeddings=1024,
                  rms_norm_eps=1e-5, tie_word_embeddings=False)
model = LlamaForCausalLM(cfg).float()
model.config.use_cache = False
pm = get_peft_model(model, LoraConfig(
    r=rank, lora_alpha=2 * rank, lora_dropout=0.0, task_type="CAUSAL_LM",
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                    "up_proj", "down_proj"]))
pm.train()
opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-3)
ids = torch.randint(0, 32000, (batch, seq + 1))


def step():
    out = pm(input_ids=ids[:, :-1], labels=ids[:, :-1])
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(pm.parameters(), 1.0)
    opt.step()
    opt.zero_grad()


step()
t = time.time()
for _ in range(steps):
    step()
dt = time.time() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"torch_tok_s {batch * seq * steps / dt:.1f} peak_rss_mb {rss:.0f}")
