#!/usr/bin/env python3
"""Zero-shot "noisy channel" sentiment for issue 11: does the language model expect a
sentence more after a positive remark than after a negative one?

P(sentence | <|endoftext|> prefix) is scored for five negative and five positive
prefixes (SST-2 style text: lower case, punctuation split); a sentence is called
positive when its log-likelihood after the positive prefix is higher (threshold 0, and
the median for a balanced call). Run on the first 1,200 SST-2 rows: no training, so
no split. Needs an export (`gptdash export --checkpoint M --hf DIR`) and transformers in
the torch virtualenv (tests/hf_transformers.rs installs it).

    ~/.cache/gptdash/torch-2.11.0/bin/python scripts/experiments/channel_zero_shot.py DIR [SST2_TSV]
"""
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

EOT = "<|endoftext|>"
PREFIXES = {
    0: ["this movie is terrible .", "i hated this movie .", "what a waste of time .",
        "one of the worst films i have ever seen .", "boring and stupid ."],
    1: ["this movie is great .", "i loved this movie .", "what a wonderful film .",
        "one of the best films i have ever seen .", "beautiful and moving ."],
}


def main():
    model_dir = sys.argv[1]
    tsv = sys.argv[2] if len(sys.argv) > 2 else str(
        Path(__file__).resolve().parents[2] / "../shared/data/sst2/train.tsv")
    torch.set_num_threads(2)
    model = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    block = model.config.n_positions
    rows = []
    with open(tsv) as f:
        next(f)
        for line in f:
            sentence, label = line.rstrip("\n").rsplit("\t", 1)
            rows.append((sentence.strip(), int(label)))
            if len(rows) == 1200:
                break
    sents = [s for s, _ in rows]
    y = torch.tensor([label for _, label in rows])

    def score(prefix):
        p = tok(EOT + prefix, add_special_tokens=False)["input_ids"]
        out = []
        for i in range(0, len(sents), 64):
            ids = [p + tok(" " + s, add_special_tokens=False)["input_ids"][: block - len(p)]
                   for s in sents[i:i + 64]]
            width = max(len(x) for x in ids)
            x = torch.zeros(len(ids), width, dtype=torch.long)
            mask = torch.zeros(len(ids), width)
            for r, seq in enumerate(ids):
                x[r, :len(seq)] = torch.tensor(seq)
                mask[r, len(p):len(seq)] = 1
            with torch.no_grad():
                lp = torch.log_softmax(model(x).logits[:, :-1].float(), -1)
                lp = lp.gather(-1, x[:, 1:, None])[..., 0]
            out += (lp * mask[:, 1:]).sum(1).tolist()
        return torch.tensor(out)

    s = {c: torch.stack([score(p) for p in PREFIXES[c]]) for c in (0, 1)}

    def report(name, d):
        at0 = ((d > 0).long() == y).float().mean().item()
        median = ((d > d.median()).long() == y).float().mean().item()
        print(f"{name}: accuracy {at0:.3f} (threshold 0), {median:.3f} (median)")

    for k, (neg, pos) in enumerate(zip(PREFIXES[0], PREFIXES[1])):
        report(f"{neg!r} vs {pos!r}", s[1][k] - s[0][k])
    report("all five pairs", torch.logsumexp(s[1], 0) - torch.logsumexp(s[0], 0))


if __name__ == "__main__":
    main()
