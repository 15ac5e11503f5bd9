"""Drives scripts/gptdash_log.py as trainers would; tests/python_logger.rs reads what it
wrote with gptdash's own stream parser. Standard library only.

    python3 logger_run.py OUTDIR

Writes OUTDIR/nanogpt.jsonl (a nanoGPT-like loop, a NaN loss at step 30),
OUTDIR/trainer.jsonl (the Trainer callback, driven with a stand-in for transformers'
TrainerCallback), and prints a short run to standard output (path "-"); on rank 1
(RANK=1) it must write nothing: OUTDIR/rank1.jsonl must not exist.
"""
import os
import sys
import types
from types import SimpleNamespace

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "scripts"))
import gptdash_log  # noqa: E402

out = sys.argv[1]

# A nanoGPT-like loop on rank 0.
glog = gptdash_log.Logger(os.path.join(out, "nanogpt.jsonl"), max_iters=50, device="cuda:0",
                          dtype="bf16", params=124_000_000, preset="nanoGPT gpt2",
                          model={"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024,
                                 "dropout": 0.0})
for step in range(1, 51):
    loss = float("nan") if step == 30 else 10.0 / step ** 0.5
    glog.iter(step, loss, lr=6e-4, tokens=491_520, grad_norm=1.0 / step)
    if step % 25 == 0:
        glog.eval(step, 9.0 / step ** 0.5)
        glog.checkpoint(step, "out/ckpt")
glog.log("saved the final model")
glog.done(train_loss=1.4)
glog.close()

# Rank 1 of a torchrun job writes nothing.
os.environ["RANK"] = "1"
silent = gptdash_log.Logger(os.path.join(out, "rank1.jsonl"), max_iters=5)
silent.iter(1, 2.0)
silent.done()
silent.close()
os.environ["RANK"] = "0"

# The Trainer callback, with a stand-in for transformers (not needed to run this).
fake = types.ModuleType("transformers")
fake.TrainerCallback = type("TrainerCallback", (), {})
sys.modules["transformers"] = fake
callback = gptdash_log.trainer_callback(os.path.join(out, "trainer.jsonl"), tokens_per_step=65536,
                                        preset="distilgpt2")
args = SimpleNamespace(output_dir="hf-out", device="cpu", bf16=False, fp16=False,
                       per_device_train_batch_size=8, world_size=2, gradient_accumulation_steps=4)
state = SimpleNamespace(is_world_process_zero=True, max_steps=20, global_step=0)
config = SimpleNamespace(n_layer=6, n_head=12, n_embd=768, n_positions=1024, resid_pdrop=0.1,
                         vocab_size=50257)
model = SimpleNamespace(config=config, parameters=lambda: [SimpleNamespace(numel=lambda: 1000)] * 3)
callback.on_train_begin(args, state, None, model=model)
for step in range(1, 21):
    state.global_step = step
    if step % 5 == 0:
        callback.on_log(args, state, None, logs={"loss": 3.0 - step / 10, "learning_rate": 5e-5,
                                                  "grad_norm": 0.7, "epoch": step / 20})
    if step % 10 == 0:
        callback.on_log(args, state, None, logs={"eval_loss": 3.1 - step / 10, "epoch": step / 20})
        callback.on_evaluate(args, state, None, metrics={"eval_loss": 3.1 - step / 10})
        callback.on_save(args, state, None)
callback.on_log(args, state, None, logs={"train_runtime": 12.0})  # no loss: nothing
callback.on_train_end(args, state, None)

# Standard output.
tiny = gptdash_log.Logger("-", max_iters=3)
for step in range(1, 4):
    tiny.iter(step, 1.0 / step, iter_ms=100.0, tokens=1000)
tiny.done()
