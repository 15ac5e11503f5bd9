"""Continue training a model gptdash exported (`gptdash export --hf DIR`) with Hugging
Face's Trainer — on the CPU, one GPU, or many under torchrun / accelerate (DDP) — while
`gptdash watch` follows the run through the JSON-lines file it logs (scripts/gptdash_log.py).
Every checkpoint it saves (`OUT/checkpoint-N`) is a GPT-2 folder with its tokenizer, so
gptdash loads it back: `Ctrl-O` in the watching dashboard, `--init` / `--checkpoint`.

    torchrun --nproc_per_node 8 scripts/train_hf.py --model hf --text corpus.txt \\
        --out hf-run --events run.jsonl --steps 5000
    gptdash watch run.jsonl            # or: ssh gpu-box tail -F run.jsonl | gptdash watch -

Needs torch, transformers and accelerate (`pip install transformers accelerate`).
The text is read one line at a time (a `.gz` file too); lines are framed by
`<|endoftext|>` when the exported model was trained that way (gptdash's `sentences` and
`documents` modes, recorded in its config.json), and the token stream is cut into
blocks of the model's context. The last 5% of the blocks are the evaluation split.
"""
import argparse
import gzip
import json
import os
import sys

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments,
                          default_data_collator)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gptdash_log import trainer_callback  # noqa: E402


def blocks(tokenizer, path, block_size, framed):
    """The text's token ids cut into `block_size` blocks (the remainder dropped)."""
    opener = gzip.open if path.endswith(".gz") else open
    eos = tokenizer.eos_token_id
    ids = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if framed and eos is not None:
                ids.append(eos)
            ids.extend(tokenizer(line)["input_ids"])
    if framed and eos is not None:
        ids.append(eos)
    n = len(ids) // block_size
    return torch.tensor(ids[: n * block_size]).view(n, block_size)


class Blocks(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"input_ids": self.rows[i], "labels": self.rows[i]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a Hugging Face GPT-2 folder (gptdash export --hf)")
    p.add_argument("--text", required=True, help="training text, one document or sentence per line")
    p.add_argument("--out", required=True, help="folder for checkpoints and the final model")
    p.add_argument("--events", default="run.jsonl", help="the JSON-lines file gptdash watch follows")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16, help="per device")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=10)
    args = p.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    config = json.load(open(os.path.join(args.model, "config.json")))
    framed = config.get("gptdash", {}).get("data_mode") in ("sentences", "documents")
    rows = blocks(tokenizer, args.text, config["n_positions"], framed)
    if len(rows) < 2:
        sys.exit(f"error: --text {args.text}: too little text for two blocks of {config['n_positions']} tokens")
    held = max(1, len(rows) // 20)
    cuda = torch.cuda.is_available()
    training = TrainingArguments(
        output_dir=args.out,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.steps // 20),
        weight_decay=0.1,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        logging_steps=args.log_every,
        eval_strategy="steps",
        eval_steps=args.eval_every,
        save_steps=args.save_every,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
        report_to=[],
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=Blocks(rows[:-held]),
        eval_dataset=Blocks(rows[-held:]),
        data_collator=default_data_collator,  # equal-length blocks: nothing to pad
        processing_class=tokenizer,  # saved into every checkpoint, so gptdash can load it
        callbacks=[trainer_callback(args.events, preset=os.path.basename(args.model.rstrip("/")),
                                    tokens_per_step=training.world_size * args.batch_size
                                    * config["n_positions"])],
    )
    trainer.train()
    trainer.save_model(args.out)


if __name__ == "__main__":
    main()
