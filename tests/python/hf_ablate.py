"""Per-token losses of a GPT-2 folder under transformers, plain and with one attention
head's output zeroed before the attention's output projection (a forward pre-hook on
`attn.c_proj`: transformers 5 no longer takes `head_mask`). tests/hf_transformers.rs
compares them with `gptdash inspect --ablate`.

    python hf_ablate.py FOLDER TEXT FRAME LAYER HEAD      (LAYER, HEAD from 0; FRAME 0/1)
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, text, frame, layer, head = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5])
model = AutoModelForCausalLM.from_pretrained(folder).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
ids = tokenizer(text)["input_ids"]
if frame:
    ids = [tokenizer.eos_token_id] + ids
x = torch.tensor([ids])


def losses():
    with torch.no_grad():
        logp = torch.log_softmax(model(x).logits[0].double(), -1)
    return [-logp[p, ids[p + 1]].item() for p in range(len(ids) - 1)]


plain = losses()
d = model.config.n_embd // model.config.n_head


def zero_head(module, args):
    y = args[0].clone()
    y[..., head * d:(head + 1) * d] = 0
    return (y,)


handle = model.transformer.h[layer].attn.c_proj.register_forward_pre_hook(zero_head)
ablated = losses()
handle.remove()
print(json.dumps({"ids": ids, "plain": plain, "ablated": ablated}))
