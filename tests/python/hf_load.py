"""Loads a folder `gptdash export` wrote, with transformers alone, as a user would, and
prints one JSON object: the classes chosen, the token ids of a text and the logits of
the model on them. tests/hf_transformers.rs compares them with gptdash's own.

    python hf_load.py FOLDER TEXT
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

folder, text = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(folder).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
ids = tokenizer(text)["input_ids"]
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0]
    # Its own decoding loop runs on it too (greedy, the KV cache of transformers).
    generated = model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False,
                               pad_token_id=tokenizer.eos_token_id or 0)[0].tolist()
print(json.dumps({
    "model": type(model).__name__,
    "is_gpt2": isinstance(model, GPT2LMHeadModel),
    "tied": model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(),
    "tokenizer": type(tokenizer).__name__,
    "eos_token": tokenizer.eos_token,
    "ids": ids,
    "decoded": tokenizer.decode(ids),
    "generated": generated,
    "logits": logits.tolist(),
}))
