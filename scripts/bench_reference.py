#!/usr/bin/env python3
"""The reference side of `gptdash bench train`: minGPT's or nanoGPT's own training step
on the same model, random tokens and recipe, printed as one JSON line.

Neither project is copied here; pass the folder of a checkout:

    python scripts/bench_reference.py --impl mingpt --repo /tmp/minGPT
    python scripts/bench_reference.py --impl nanogpt --repo /tmp/nanoGPT [--bf16]
    python scripts/bench_reference.py --impl nanogpt --repo /tmp/nanoGPT --device cuda --bf16 [--compile]

Run it with the torch of gptdash's virtualenv (~/.cache/gptdash/torch-2.11.0/bin/python)
so both sides use the same libtorch. `scripts/bench_train.sh` runs both side by side.
The step is each project's own: minGPT's Trainer.run body (zero_grad(set_to_none=True),
backward, clip_grad_norm_(1.0), AdamW from configure_optimizers) and nanoGPT's
train.py body (the same, with its GPT and configure_optimizers, fused AdamW on CUDA, and
`torch.compile(model)` with --compile, as its `compile = True`). nanoGPT ties its LM head
to the token embedding; minGPT does not (as gptdash). On CUDA, --bf16 is
`torch.autocast("cuda", bfloat16)` as nanoGPT trains, and the report adds the GPU's name
and peak memory.
"""
import argparse
import json
import resource
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=["mingpt", "nanogpt"], required=True)
    ap.add_argument("--repo", required=True, help="checkout of karpathy/minGPT or nanoGPT")
    ap.add_argument("--n-layer", type=int, default=6)
    ap.add_argument("--n-head", type=int, default=6)
    ap.add_argument("--n-embd", type=int, default=192)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--vocab-size", type=int, default=50257)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="torch.autocast(device, bfloat16)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (nanoGPT's default)")
    ap.add_argument("--dropout", type=float, default=0.1)
    a = ap.parse_args()

    import torch

    sys.path.insert(0, a.repo)
    torch.set_num_threads(a.threads)
    torch.manual_seed(1337)
    lr, wd, clip, dropout = 5e-4, 0.1, 1.0, a.dropout
    device_type = "cuda" if a.device.startswith("cuda") else "cpu"

    if a.impl == "mingpt":
        from mingpt.model import GPT

        cfg = GPT.get_default_config()
        cfg.model_type = None
        cfg.n_layer, cfg.n_head, cfg.n_embd = a.n_layer, a.n_head, a.n_embd
        cfg.vocab_size, cfg.block_size = a.vocab_size, a.block_size
        cfg.embd_pdrop = cfg.resid_pdrop = cfg.attn_pdrop = dropout
        model = GPT(cfg)
        from mingpt.trainer import Trainer

        tc = Trainer.get_default_config()
        tc.learning_rate, tc.weight_decay, tc.betas = lr, wd, (0.9, 0.95)
        optimizer = model.configure_optimizers(tc)
    else:
        from model import GPT, GPTConfig

        cfg = GPTConfig(
            block_size=a.block_size,
            vocab_size=a.vocab_size,
            n_layer=a.n_layer,
            n_head=a.n_head,
            n_embd=a.n_embd,
            dropout=dropout,
            bias=True,
        )
        model = GPT(cfg)
        model.to(a.device)  # before its optimizer: fused AdamW wants the parameters there
        optimizer = model.configure_optimizers(wd, lr, (0.9, 0.95), device_type)
    model.to(a.device)  # minGPT's (moving keeps the parameters its optimizer holds)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    if a.compile:
        model = torch.compile(model)

    g = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(0, a.vocab_size, (a.batch_size, a.block_size + 1), generator=g).to(a.device)
        for _ in range(a.iters + a.warmup)
    ]
    ctx = (
        torch.autocast(device_type, dtype=torch.bfloat16)
        if a.bf16
        else torch.autocast(device_type, enabled=False)
    )

    def step(b):
        x, y = b[:, :-1].contiguous(), b[:, 1:].contiguous()
        with ctx:
            _, loss = model(x, y)
        model.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        return loss.item()

    compile_start = time.perf_counter()
    for b in batches[: a.warmup]:
        step(b)
    warmup_s = time.perf_counter() - compile_start
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    loss = None
    for b in batches[a.warmup :]:
        loss = step(b)
    secs = time.perf_counter() - start
    tokens = a.iters * a.batch_size * a.block_size
    report = {
        "bench": "train",
        "impl": a.impl + ("-compile" if a.compile else ""),
        "torch": torch.__version__,
        "device": a.device,
        "dtype": "bf16-autocast" if a.bf16 else "f32",
        "threads": a.threads,
        "params": params,
        "iters": a.iters,
        "warmup_s": warmup_s,
        "tokens_per_s": tokens / secs,
        "ms_per_step": secs * 1e3 / a.iters,
        "final_loss": loss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device_type == "cuda":
        report["device_name"] = torch.cuda.get_device_name()
        report["gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(report))


if __name__ == "__main__":
    main()
