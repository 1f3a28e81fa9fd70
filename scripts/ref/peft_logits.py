#!/usr/bin/env python3
"""Reference logits of LoRA adapters on stories260K from PyTorch + PEFT.

usage: peft_logits.py make  MODEL.gguf OUTDIR
       peft_logits.py check MODEL.gguf FIXTURE_DIR NAME ADAPTER_DIR [--tol X]

The base model is rebuilt as a Hugging Face LlamaForCausalLM from the GGUF
(with the `gguf` package: Q/K rows un-permuted from GGUF's adjacent-pair
order back to rotate-half order, the inverse of llama.cpp's converter).

make   writes the committed fixture data/fixtures/lora/:
         prompts.json         token ids of a few prompts (BOS first)
         base.f32             logits of the base model
         peft-a/, peft-a.f32  a PEFT adapter (save_pretrained) on all seven
                              projections, r=4, alpha=8, with rank_pattern
                              and alpha_pattern (different ranks/alphas per
                              matrix), random nonzero A and B; its logits
         peft-b/, peft-b.f32  r=2 rsLoRA on q and v of layers 0, 2, 4 only
       Logits files: little-endian float32, for each prompt in order,
       n_tokens x n_vocab rows, row-major.
check  loads ADAPTER_DIR with PeftModel.from_pretrained on the same base
       and compares its logits with FIXTURE_DIR/NAME.f32 (used to show that
       an adapter written by llmkit loads in PEFT and means the same).
       Exit 0 when within --tol (default 1e-4, absolute), 1 otherwise.

Exit 77 when torch, transformers, peft or gguf is missing.
"""
import json
import os
import sys

try:
    import numpy as np
    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from peft import LoraConfig, PeftModel, get_peft_model
except ImportError as e:
    print(f"SKIP: {e}", file=sys.stderr)
    sys.exit(77)

PROMPTS = [
    [1, 403, 407, 261, 378, 430, 30, 99],
    [1, 200, 511, 17, 44, 3, 87, 260, 300, 301, 302, 17],
    [1, 68, 300, 99, 2],
]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
           "down_proj"]


def field(r, key):
    f = r.fields[key]
    v = f.parts[f.data[0]]
    return v[0] if len(v) == 1 else bytes(v).decode()


def unpermute(w, n_head):
    """GGUF (adjacent pairs) rows -> Hugging Face (rotate-half) rows."""
    hd = w.shape[0] // n_head
    return (w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2)
            .reshape(w.shape))


def hf_model(path):
    r = gguf.GGUFReader(path)
    arch = field(r, "general.architecture")
    if arch != "llama":
        sys.exit(f"{path}: architecture {arch}, only llama is handled")
    n_head = int(field(r, "llama.attention.head_count"))
    n_head_kv = int(field(r, "llama.attention.head_count_kv"))
    t = {x.name: np.array(x.data, dtype=np.float32) for x in r.tensors}
    n_layer = int(field(r, "llama.block_count"))
    emb = t["token_embd.weight"]
    cfg = LlamaConfig(
        vocab_size=emb.shape[0], hidden_size=emb.shape[1],
        intermediate_size=int(field(r, "llama.feed_forward_length")),
        num_hidden_layers=n_layer, num_attention_heads=n_head,
        num_key_value_heads=n_head_kv,
        max_position_embeddings=int(field(r, "llama.context_length")),
        rms_norm_eps=float(field(r, "llama.attention.layer_norm_rms_epsilon")),
        rope_theta=10000.0, tie_word_embeddings="output.weight" not in t,
        bos_token_id=1, eos_token_id=2, attention_bias=False, mlp_bias=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).float().eval()
    sd = {"model.embed_tokens.weight": emb,
          "model.norm.weight": t["output_norm.weight"],
          "lm_head.weight": t.get("output.weight", emb)}
    for i in range(n_layer):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        sd[p + "self_attn.q_proj.weight"] = unpermute(t[b + "attn_q.weight"], n_head)
        sd[p + "self_attn.k_proj.weight"] = unpermute(t[b + "attn_k.weight"], n_head_kv)
        sd[p + "self_attn.v_proj.weight"] = t[b + "attn_v.weight"]
        sd[p + "self_attn.o_proj.weight"] = t[b + "attn_output.weight"]
        sd[p + "mlp.gate_proj.weight"] = t[b + "ffn_gate.weight"]
        sd[p + "mlp.up_proj.weight"] = t[b + "ffn_up.weight"]
        sd[p + "mlp.down_proj.weight"] = t[b + "ffn_down.weight"]
        sd[p + "input_layernorm.weight"] = t[b + "attn_norm.weight"]
        sd[p + "post_attention_layernorm.weight"] = t[b + "ffn_norm.weight"]
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "rotary" not in k]
    if missing or unexpected:
        sys.exit(f"weights: missing {missing}, unexpected {unexpected}")
    return model


@torch.no_grad()
def logits(model, prompts):
    out = []
    for p in prompts:
        ids = torch.tensor([p], dtype=torch.long)
        out.append(model(input_ids=ids).logits[0].float().numpy())
    return np.concatenate(out).astype("<f4")


def randomize(model, seed, std_a, std_b):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std_a)
            elif "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std_b)


def make(model_path, out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "prompts.json"), "w") as f:
        json.dump({"model": "stories260K.gguf", "prompts": PROMPTS}, f)
        f.write("\n")
    base = hf_model(model_path)
    logits(base, PROMPTS).tofile(os.path.join(out, "base.f32"))

    cfgs = {
        "peft-a": LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS,
                             lora_dropout=0.0,
                             rank_pattern={"down_proj": 2,
                                           "layers.1.self_attn.k_proj": 3},
                             alpha_pattern={"o_proj": 3.0}),
        "peft-b": LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                             use_rslora=True, layers_to_transform=[0, 2, 4],
                             lora_dropout=0.0),
    }
    for i, (name, cfg) in enumerate(cfgs.items()):
        pm = get_peft_model(hf_model(model_path), cfg).eval()
        randomize(pm, 1234 + i, 0.1, 0.1)
        pm.save_pretrained(os.path.join(out, name))
        try:   # the model card PEFT writes says nothing about this fixture
            os.remove(os.path.join(out, name, "README.md"))
        except FileNotFoundError:
            pass
        logits(pm, PROMPTS).tofile(os.path.join(out, name + ".f32"))
        # the saved directory loads back to the same logits
        again = PeftModel.from_pretrained(hf_model(model_path),
                                          os.path.join(out, name)).eval()
        d = np.abs(logits(again, PROMPTS) - logits(pm, PROMPTS)).max()
        assert d == 0, f"{name}: reloaded adapter differs by {d}"
        print(f"{name}: max |logit - base| = "
              f"{np.abs(logits(pm, PROMPTS) - logits(base, PROMPTS)).max():.4f}")


def check(model_path, fixture, name, adapter, tol):
    with open(os.path.join(fixture, "prompts.json")) as f:
        prompts = json.load(f)["prompts"]
    want = np.fromfile(os.path.join(fixture, name + ".f32"), dtype="<f4")
    pm = PeftModel.from_pretrained(hf_model(model_path), adapter).eval()
    got = logits(pm, prompts).reshape(-1)
    if got.shape != want.shape:
        print(f"{adapter}: {got.shape[0]} logits, fixture has {want.shape[0]}")
        return 1
    d = np.abs(got - want).max()
    print(f"{adapter} in PEFT vs {name}.f32: max |diff| = {d:.3g} (tol {tol})")
    return 0 if d <= tol else 1


def main():
    a = sys.argv[1:]
    if len(a) == 3 and a[0] == "make":
        make(a[1], a[2])
        return 0
    if len(a) in (5, 7) and a[0] == "check":
        tol = float(a[6]) if len(a) == 7 and a[5] == "--tol" else 1e-4
        return check(a[1], a[2], a[3], a[4], tol)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
