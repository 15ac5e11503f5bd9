#!/usr/bin/env python3
"""Writes the small test fixtures under tests/fixtures/ (deterministic).

Needs torch, transformers, safetensors and pyarrow (a developer tool, not part of the
build): PYTHONPATH=<those packages> python3 scripts/make_fixtures.py

- sst2/: eight labelled sentences written for gptdash, as GLUE TSV and as the Hugging
  Face parquet layout, plus malformed parquet files.
- gpt2-tiny/: a randomly initialised 2-layer GPT-2 saved by transformers'
  save_pretrained (weights named `transformer.h.0...`), and gpt2-tiny-hub/: the same
  weights named as the hub's `gpt2` files are (no prefix, with `attn.bias` mask
  buffers); expected.json holds GPT2LMHeadModel's logits for a fixed input, and
  attentions.json its attention probabilities (`output_attentions=True`) for the first
  input, per layer `[heads][query][key]`.

`python3 scripts/make_fixtures.py attentions` writes only attentions.json, from the
gpt2-tiny folder as it is (the weights stay byte for byte).
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

root = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def write_attentions():
    """transformers' attention probabilities of gpt2-tiny on expected.json's first input."""
    folder = os.path.join(root, "gpt2-tiny")
    model = GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").eval()
    ids = json.load(open(os.path.join(folder, "expected.json")))["input_ids"][0]
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_attentions=True)
    attentions = [layer[0].tolist() for layer in out.attentions]
    json.dump({"input_ids": ids, "attentions": attentions}, open(os.path.join(folder, "attentions.json"), "w"))


if sys.argv[1:] == ["attentions"]:
    write_attentions()
    print("attentions written")
    sys.exit(0)

import pyarrow as pa  # noqa: E402 (only the full run needs it)
import pyarrow.parquet as pq  # noqa: E402

rows = [
    ("a warm , funny and generous film .", 1),
    ("the plot drags and the jokes fall flat .", 0),
    ("one of the most moving stories of the year", 1),
    ("tedious , overlong and strangely lifeless", 0),
    ("the cast is terrific", 1),
    ("a mess from start to finish .", 0),
    ("smart , sweet and surprisingly sharp", 1),
    ("nothing here rings true", 0),
]
sst = os.path.join(root, "sst2")
os.makedirs(os.path.join(sst, "sst2"), exist_ok=True)
os.makedirs(os.path.join(sst, "bad"), exist_ok=True)
with open(os.path.join(sst, "train.tsv"), "w") as f:
    f.write("sentence\tlabel\n")
    for s, l in rows:
        f.write(f"{s} \t{l}\n")


def table(sentences, labels):
    return pa.table({
        "sentence": pa.array(sentences, pa.string()),
        "label": pa.array(labels, pa.int64()),
        "idx": pa.array(list(range(len(sentences))), pa.int32()),
    })


pq.write_table(table([s for s, _ in rows], [l for _, l in rows]), os.path.join(sst, "sst2", "train-00000-of-00001.parquet"))
pq.write_table(pa.table({"sentence": pa.array(["fine", "good"]), "idx": pa.array([0, 1], pa.int32())}),
               os.path.join(sst, "bad", "missing-label.parquet"))
pq.write_table(table(["fine", "odd"], [1, 2]), os.path.join(sst, "bad", "label-2.parquet"))

torch.manual_seed(0)
config = GPT2Config(vocab_size=96, n_positions=16, n_embd=32, n_layer=2, n_head=4, layer_norm_epsilon=1e-5)
model = GPT2LMHeadModel(config).eval()
with torch.no_grad():  # larger than the 0.02 init so the logits are not all near zero
    for p in model.parameters():
        p.mul_(5.0)
out = os.path.join(root, "gpt2-tiny")
model.save_pretrained(out, safe_serialization=True)
ids = [[5, 17, 42, 3, 88, 1, 60, 9], [7, 7, 2, 95, 0, 31, 14, 50]]
with torch.no_grad():
    logits = model(torch.tensor(ids)).logits
json.dump({"input_ids": ids, "logits": logits.tolist()}, open(os.path.join(out, "expected.json"), "w"))

hub = os.path.join(root, "gpt2-tiny-hub")
os.makedirs(hub, exist_ok=True)
weights = load_file(os.path.join(out, "model.safetensors"))
renamed = {k.removeprefix("transformer."): v for k, v in weights.items() if k != "lm_head.weight"}
for i in range(config.n_layer):
    renamed[f"h.{i}.attn.bias"] = torch.tril(torch.ones(16, 16)).view(1, 1, 16, 16)
save_file(renamed, os.path.join(hub, "model.safetensors"), metadata={"format": "pt"})
json.dump(json.load(open(os.path.join(out, "config.json"))), open(os.path.join(hub, "config.json"), "w"), indent=2)
write_attentions()
print("fixtures written")
