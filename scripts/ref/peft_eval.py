#!/usr/bin/env python3
"""Held-out loss of a llm-lora-train adapter, computed by PyTorch + PEFT.

usage: peft_eval.py MODEL.gguf ADAPTER_DIR IDS_FILE SEQ N

IDS_FILE holds token ids (llm-tokenize's output: BOS first); the loss is
the mean next-token NLL over the first N windows ids[k*SEQ : k*SEQ + SEQ + 1],
which is what llm-lora-train --eval-only --ctx SEQ+1 --eval-max N reports on
the same text.  Prints "eval_loss L".  Exit 77 when torch/peft are missing.
"""
import os
import sys

try:
    import torch
    from peft import PeftModel
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from peft_step import hf_model
except ImportError as e:
    print(f"SKIP: {e}", file=sys.stderr)
    sys.exit(77)

src, adapter, ids_file, seq, n = sys.argv[1:6]
seq, n = int(seq), int(n)
ids = [int(x) for x in open(ids_file).read().split()]
assert len(ids) >= n * seq + 1, "text too short"
pm = PeftModel.from_pretrained(hf_model(src), adapter)
pm.eval()
x = torch.tensor([ids[k * seq:k * seq + seq + 1] for k in range(n)])
with torch.no_grad():
    print("eval_loss %.6f" % pm(input_ids=x, labels=x).loss.item())
