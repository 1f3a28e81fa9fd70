#!/usr/bin/env python3
"""Build the PEFT reference fixture for one LoRA training step.

usage: peft_step.py STORIES260K.gguf OUT_DIR

Loads stories260K from its GGUF into a Hugging Face LlamaForCausalLM (Q/K
rows un-permuted from GGUF's adjacent-pair order to HF's rotate-half
order), wraps it in PEFT LoRA (r=2, alpha=4, rsLoRA, all seven
projections, no dropout), gives lora_B small random values (a fresh B = 0
would leave lora_A without gradient), and runs one step on a fixed batch of
two sequences whose labels mask a "prompt" (-100):

  loss -> backward -> clip_grad_norm_(1.0) -> AdamW(lr, betas, eps, wd)

OUT_DIR gets
  init/    the adapter before the step  (adapter_config.json + safetensors)
  grad/    the gradients before clipping, stored as an adapter of the same
           names (so llmkit's PEFT reader brings them into GGUF row order)
  after/   the adapter after the step
  step.json  tokens, labels, loss, grad norm and the optimizer settings

tests/test-train.c replays this with llmkit and compares, without torch.
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
import gguf
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

def unpermute(w, heads):
    """GGUF's adjacent-pair Q/K rows back to Hugging Face's rotate-half."""
    rows, cols = w.shape
    hd = rows // heads
    return w.reshape(heads, hd // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def hf_model(src):
    """LlamaForCausalLM (f32) with the weights of a llama GGUF file."""
    r = gguf.GGUFReader(src)

    def kv(key):
        f = r.fields[key]
        return f.parts[f.data[0]][0].item()

    dim = kv("llama.embedding_length")
    n_layer = kv("llama.block_count")
    n_head = kv("llama.attention.head_count")
    n_kv = kv("llama.attention.head_count_kv")
    ff = kv("llama.feed_forward_length")
    eps = float(kv("llama.attention.layer_norm_rms_epsilon"))
    T = {t.name: np.array(t.data, dtype=np.float32) for t in r.tensors}
    vocab = T["token_embd.weight"].shape[0]
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=dim, intermediate_size=ff,
                      num_hidden_layers=n_layer, num_attention_heads=n_head,
                      num_key_value_heads=n_kv, rms_norm_eps=eps,
                      max_position_embeddings=2048, rope_theta=10000.0,
                      tie_word_embeddings=False, attention_bias=False,
                      mlp_bias=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).float()
    sd = {"model.embed_tokens.weight": T["token_embd.weight"],
          "model.norm.weight": T["output_norm.weight"],
          "lm_head.weight": T["output.weight"]}
    for i in range(n_layer):
        b, p = f"blk.{i}.", f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = unpermute(T[b + "attn_q.weight"], n_head)
        sd[p + "self_attn.k_proj.weight"] = unpermute(T[b + "attn_k.weight"], n_kv)
        sd[p + "self_attn.v_proj.weight"] = T[b + "attn_v.weight"]
        sd[p + "self_attn.o_proj.weight"] = T[b + "attn_output.weight"]
        sd[p + "mlp.gate_proj.weight"] = T[b + "ffn_gate.weight"]
        sd[p + "mlp.up_proj.weight"] = T[b + "ffn_up.weight"]
        sd[p + "mlp.down_proj.weight"] = T[b + "ffn_down.weight"]
        sd[p + "input_layernorm.weight"] = T[b + "attn_norm.weight"]
        sd[p + "post_attention_layernorm.weight"] = T[b + "ffn_norm.weight"]
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()},
        strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    model.config.use_cache = False
    return model


def main():
    src, out = sys.argv[1], sys.argv[2]
    model = hf_model(src)
    vocab = model.config.vocab_size
    lcfg = LoraConfig(r=2, lora_alpha=4, use_rslora=True, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                      "gate_proj", "up_proj", "down_proj"],
                      bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(model, lcfg)
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    pm.train()

    L = 33
    ids = torch.randint(3, vocab, (2, L), generator=g)
    ids[:, 0] = 1
    labels = ids.clone()
    labels[1, :9] = -100      # a prompt: no loss on its tokens
    labels[0, 20:24] = -100

    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    pm.save_pretrained(os.path.join(out, "init"))

    lr, betas, aeps, wd, clip = 1e-2, (0.9, 0.999), 1e-8, 0.01, 1.0
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, eps=aeps, weight_decay=wd)
    outp = pm(input_ids=ids, labels=labels)
    loss = outp.loss
    loss.backward()

    grads = {}
    for n, p in pm.named_parameters():
        if p.requires_grad:
            name = n.replace(".default", "")
            grads[name] = p.grad.detach().clone().contiguous()
    gdir = os.path.join(out, "grad")
    os.makedirs(gdir)
    save_file(grads, os.path.join(gdir, "adapter_model.safetensors"))
    shutil.copy(os.path.join(out, "init", "adapter_config.json"), gdir)

    gn = torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    pm.save_pretrained(os.path.join(out, "after"))

    for d in ("init", "after"):
        rd = os.path.join(out, d, "README.md")
        if os.path.exists(rd):
            os.remove(rd)

    json.dump({"tokens": ids.tolist(), "labels": labels.tolist(),
               "loss": loss.item(), "grad_norm": gn.item(), "lr": lr,
               "beta1": betas[0], "beta2": betas[1], "eps": aeps,
               "weight_decay": wd, "grad_clip": clip,
               "torch": torch.__version__},
              open(os.path.join(out, "step.json"), "w"), indent=1)
    print(f"loss {loss.item():.6f} grad_norm {gn.item():.6f}")


if __name__ == "__main__":
    main()
