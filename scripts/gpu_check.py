#!/usr/bin/env python3
"""gptdash's device check: compares, it does not only print (issue 14).

Run through scripts/gpu_check.sh, which finds libtorch. Needs only the prebuilt gptdash
binary and Python's standard library. On a machine without a GPU it runs the CPU half
and says that CUDA was not checked; with one, it also compares CUDA against the CPU.

    scripts/gpu_check.sh [--bin target/release/gptdash] [--out gpu_check.json] [--quick]

Checks (each a row of the table and of the JSON report):
  device        the device gptdash sees (CUDA: named)
  train         `train --corpus small` test loss: bf16 within 3% of f32 (per device);
                CUDA f32 within 2% of the CPU's
  generate      greedy tokens equal with and without the KV cache (probabilities
                within 1e-4), and on CUDA equal to the CPU's
  finetune      two epochs on the SST-2 fixture end with a `done` event
  bench         `bench train` (f32, bf16; on CUDA also --preset gpt2 --block-size 1024)
                and `bench generate`: tokens/s, ms/token, peak memory
  side by side  with --nanogpt DIR (a checkout of karpathy/nanoGPT, outside this
                repository): gptdash's fused step against nanoGPT's own train.py step
                (eager, and torch.compile on CUDA) on the same model, random tokens and
                torch, interleaved rounds (scripts/bench_reference.py): tokens/s, the
                ratio, and on CUDA MFU against the GPU's bf16 peak (--peak-tflops, else
                known for H100/H200/A100/L4), at the bench config and at GPT-2 124M
                with block 1024. Measurements, not comparisons: they fail nothing.
Exit code 0 when every comparison holds, 1 otherwise.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Dense bf16 peak (TFLOP/s) by GPU name, for MFU; --peak-tflops overrides.
BF16_PEAK = [("H200", 989.4), ("H100", 989.4), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0)]


def flops_per_token(n_layer, n_embd, vocab, block):
    """Training FLOPs per token of the matrix products (6 per weight: forward and
    backward) plus attention's (12·L·E·T, as nanoGPT's estimate_mfu): the same formula
    for both sides, so their MFU ratio is their throughput ratio."""
    return 6 * (12 * n_layer * n_embd ** 2 + vocab * n_embd) + 12 * n_layer * n_embd * block


class Check:
    def __init__(self, binary, workdir, quick):
        self.binary = binary
        self.workdir = workdir
        self.quick = quick
        self.rows = []
        self.failed = False

    def run(self, args, timeout=900):
        """gptdash ARGS --json: (exit code, events, stderr)."""
        env = dict(os.environ, HOME=self.workdir, XDG_CONFIG_HOME=os.path.join(self.workdir, "cfg"))
        p = subprocess.run([self.binary] + args + ["--json"], cwd=self.workdir, env=env,
                           capture_output=True, text=True, timeout=timeout)
        events = []
        for line in p.stdout.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
        return p.returncode, events, p.stderr.strip()

    def row(self, name, ok, detail, **figures):
        self.rows.append({"check": name, "ok": ok, "detail": detail, **figures})
        if ok is False:
            self.failed = True

    @staticmethod
    def last(events, kind):
        found = [e for e in events if e.get("event") == kind]
        return found[-1] if found else None

    def train(self, device, dtype, out):
        iters = "60" if self.quick else "200"
        code, events, err = self.run(["train", "--corpus", "small", "--device", device, "--dtype", dtype,
                                      "--max-iters", iters, "--out", out])
        done = self.last(events, "done")
        if code != 0 or not done or done.get("test_loss") is None:
            self.row(f"train {device} {dtype}", False, f"exit {code}: {err[-300:]}")
            return None
        self.row(f"train {device} {dtype}", True, f"test loss {done['test_loss']:.4f}",
                 test_loss=done["test_loss"], tokens_per_s=done.get("step_tokens_per_s"))
        return done["test_loss"]

    def compare(self, name, value, reference, tolerance):
        if value is None or reference is None:
            self.row(name, False, "a run it compares failed")
            return
        rel = abs(value - reference) / abs(reference)
        self.row(name, rel <= tolerance, f"{value:.4f} vs {reference:.4f}: {100 * rel:.2f}% (limit {100 * tolerance:.0f}%)",
                 relative=rel)

    def generate(self, checkpoint, device, cache=True):
        args = ["generate", "--checkpoint", checkpoint, "--prompt", "He and I", "--max-new-tokens", "20",
                "--device", device]
        if not cache:
            args.append("--no-cache")
        code, events, err = self.run(args)
        g = self.last(events, "generated")
        if code != 0 or not g:
            return None, f"exit {code}: {err[-300:]}"
        return [(t["id"], t["prob"]) for t in g["tokens"]], None

    def same_tokens(self, name, a, b):
        (ta, ea), (tb, eb) = a, b
        if ta is None or tb is None:
            self.row(name, False, ea or eb)
            return
        ids_equal = [i for i, _ in ta] == [i for i, _ in tb]
        worst = max((abs(p - q) for (_, p), (_, q) in zip(ta, tb)), default=0.0)
        self.row(name, ids_equal and worst <= 1e-4,
                 f"{len(ta)} tokens {'equal' if ids_equal else 'DIFFER'}, probabilities within {worst:.1e}",
                 max_prob_diff=worst)

    def bench(self, name, args):
        code, events, err = self.run(["bench"] + args)
        b = self.last(events, "bench")
        if code != 0 or not b:
            self.row(name, False, f"exit {code}: {err[-300:]}")
            return
        keys = ["tokens_per_s", "ms_per_step", "ms_per_token", "peak_rss_mib", "gpu_mib", "mfu"]
        figures = {k: b[k] for k in keys if k in b}
        self.row(name, True, ", ".join(f"{k} {v:.4g}" for k, v in figures.items()), **figures)

    def reference(self, python, nanogpt, model, device, compiled, iters):
        """nanoGPT's own step (scripts/bench_reference.py): its JSON report, or None."""
        args = [python, os.path.join(ROOT, "scripts", "bench_reference.py"), "--impl", "nanogpt",
                "--repo", nanogpt, "--device", device, "--bf16", "--iters", str(iters[0]),
                "--warmup", str(iters[1])]
        for k, v in model.items():
            args += ["--" + k.replace("_", "-"), str(v)]
        if compiled:
            args.append("--compile")
        try:
            p = subprocess.run(args, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return None, "timed out"
        lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
        if p.returncode != 0 or not lines:
            return None, f"exit {p.returncode}: {p.stderr.strip()[-300:]}"
        return json.loads(lines[-1]), None

    def side_by_side(self, python, nanogpt, device, label, model, iters, rounds, peak):
        """gptdash's fused bf16 step and nanoGPT's (eager; compiled on CUDA), interleaved."""
        sides = {"gptdash": [], "nanoGPT": []}
        if device == "cuda":
            sides["nanoGPT+compile"] = []
        notes = []
        for _ in range(rounds):
            code, events, err = self.run(["bench", "train", "--device", device, "--dtype", "bf16",
                                          "--iters", str(iters[0]), "--warmup", str(iters[1])]
                                         + [x for k, v in model.items() for x in ("--" + k.replace("_", "-"), str(v))])
            b = self.last(events, "bench")
            if code == 0 and b:
                sides["gptdash"].append(b["tokens_per_s"])
            else:
                self.row(f"side by side {device} {label}: gptdash", False, f"exit {code}: {err[-300:]}")
                return
            for side in [s for s in sides if s != "gptdash"]:
                r, why = self.reference(python, nanogpt, model, device, side.endswith("compile"), iters)
                if r:
                    sides[side].append(r["tokens_per_s"])
                    peak = peak or next((p for n, p in BF16_PEAK if n in r.get("device_name", "")), None)
                else:
                    notes.append(f"{side}: {why}")
        best = {s: max(v) for s, v in sides.items() if v}
        flops = flops_per_token(model["n_layer"], model["n_embd"], model["vocab_size"], model["block_size"])
        figures = {"tokens_per_s": best}
        parts = []
        for s, t in best.items():
            part = f"{s} {t:,.0f} tok/s"
            if s != "gptdash" and "gptdash" in best:
                part += f" ({best['gptdash'] / t:.2f}x)"
            if peak and device == "cuda":
                mfu = t * flops / (peak * 1e12)
                figures.setdefault("mfu", {})[s] = mfu
                part += f", MFU {100 * mfu:.1f}%"
            parts.append(part)
        if peak and device == "cuda":
            figures["peak_tflops"] = peak
        self.row(f"side by side {device} {label}", None,
                 "; ".join(parts + notes) + f" (best of {rounds} interleaved rounds)", **figures)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "gptdash"))
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--quick", action="store_true", help="fewer steps (CI)")
    ap.add_argument("--nanogpt", help="a checkout of karpathy/nanoGPT: adds the side-by-side rows")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the side by side")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, for MFU")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="gptdash-check-")
    c = Check(os.path.abspath(a.bin), work, a.quick)
    started = time.time()

    # The device.
    code, events, err = c.run(["bench", "generate", "--device", "cuda", "--new-tokens", "2", "--repeats", "1"])
    b = c.last(events, "bench")
    cuda = code == 0 and b is not None
    if cuda:
        c.row("device", True, f"CUDA: {b.get('device')}", device=b.get("device"))
    else:
        c.row("device", None, "no CUDA device: CUDA was NOT checked; the CPU half ran ("
              + (err.splitlines()[-1] if err else "no message") + ")")

    # Training: bf16 against f32, CUDA against the CPU.
    cpu32 = c.train("cpu", "f32", "cpu-f32")
    cpu16 = c.train("cpu", "bf16", "cpu-bf16")
    c.compare("train cpu: bf16 vs f32", cpu16, cpu32, 0.03)
    if cuda:
        gpu32 = c.train("cuda", "f32", "cuda-f32")
        gpu16 = c.train("cuda", "bf16", "cuda-bf16")
        c.compare("train: cuda f32 vs cpu f32", gpu32, cpu32, 0.02)
        c.compare("train cuda: bf16 vs f32", gpu16, gpu32, 0.03)

    # Generation: with and without the KV cache; CUDA against the CPU.
    if cpu32 is not None:
        cached = c.generate("cpu-f32", "cpu")
        c.same_tokens("generate cpu: KV cache vs none", cached, c.generate("cpu-f32", "cpu", cache=False))
        if cuda:
            on_gpu = c.generate("cpu-f32", "cuda")
            c.same_tokens("generate: cuda vs cpu", on_gpu, cached)
            c.same_tokens("generate cuda: KV cache vs none", on_gpu, c.generate("cpu-f32", "cuda", cache=False))

        # Two fine-tuning epochs on the SST-2 fixture.
        for device in ["cpu"] + (["cuda"] if cuda else []):
            code, events, err = c.run(["finetune", "--checkpoint", "cpu-f32", "--sst2",
                                       os.path.join(ROOT, "tests", "fixtures", "sst2", "train.tsv"),
                                       "--samples", "8", "--val-fraction", "0.5", "--epochs", "2",
                                       "--device", device, "--out", f"clf-{device}"])
            done = c.last(events, "done")
            c.row(f"finetune {device}, 2 epochs", code == 0 and done is not None,
                  f"val acc {done['val_acc']:.3f}" if done else f"exit {code}: {err[-300:]}")

    # Benchmarks.
    iters = ["--iters", "3", "--warmup", "1"] if a.quick else []
    for device in ["cpu"] + (["cuda"] if cuda else []):
        for dtype in ["f32", "bf16"]:
            c.bench(f"bench train {device} {dtype}", ["train", "--device", device, "--dtype", dtype] + iters)
        c.bench(f"bench generate {device}", ["generate", "--device", device] + (["--new-tokens", "10", "--repeats", "1"] if a.quick else []))
    if cuda:
        for dtype in ["f32", "bf16"]:
            c.bench(f"bench train cuda {dtype} gpt2 block 1024",
                    ["train", "--device", "cuda", "--dtype", dtype, "--preset", "gpt2", "--block-size", "1024",
                     "--batch-size", "8"] + iters)

    # gptdash's step beside nanoGPT's, on the same torch (gpu_check.sh names its python).
    if a.nanogpt:
        python = os.environ.get("GPTDASH_TORCH_PYTHON", "python3")
        bench_model = {"n_layer": 6, "n_head": 6, "n_embd": 192, "block_size": 64, "vocab_size": 50257,
                       "batch_size": 16}
        steps = (3, 1) if a.quick else (30, 5)
        if a.quick:
            bench_model.update(vocab_size=2000, n_layer=2)
        c.side_by_side(python, os.path.abspath(a.nanogpt), "cpu", "bench config", bench_model, steps,
                       a.rounds, a.peak_tflops)
        if cuda:
            c.side_by_side(python, os.path.abspath(a.nanogpt), "cuda", "bench config", bench_model,
                           steps, a.rounds, a.peak_tflops)
            gpt2 = {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "vocab_size": 50257,
                    "batch_size": 8}
            c.side_by_side(python, os.path.abspath(a.nanogpt), "cuda", "GPT-2 124M block 1024", gpt2,
                           steps, a.rounds, a.peak_tflops)

    report = {"cuda_checked": cuda, "seconds": round(time.time() - started, 1), "checks": c.rows}
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    width = max(len(r["check"]) for r in c.rows)
    for r in c.rows:
        mark = {True: "ok  ", False: "FAIL", None: "--  "}[r["ok"]]
        print(f"{mark} {r['check']:<{width}}  {r['detail']}")
    print(f"report: {a.out} ({report['seconds']} s)" + ("" if cuda else "; CUDA was not checked (no GPU)"))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
