"""gptdash_log: a training run's events as the JSON lines `gptdash watch` reads.

For trainers other than gptdash's own (nanoGPT's train.py under torchrun, a Hugging Face
Trainer under accelerate): copy this file beside the training script. Standard library
only; nothing is written on ranks other than 0 (RANK, as torchrun and accelerate set it).

nanoGPT (train.py), two lines:

    from gptdash_log import Logger; glog = Logger("run.jsonl", max_iters=max_iters)
    ...                                 # in the loop, where it prints "iter ...: loss ..."
    glog.iter(iter_num, lossf, lr=lr, tokens=tokens_per_iter)

Hugging Face Trainer, two lines:

    from gptdash_log import trainer_callback
    trainer = Trainer(..., callbacks=[trainer_callback("run.jsonl")])

Then, on your laptop: `ssh gpu-box tail -f run.jsonl | gptdash watch -`, or
`gptdash watch run.jsonl` where the file is.

Events (the same fields as `gptdash train --json`; all but `event`, `iter` and `loss`
may be left out): start, iter, eval, checkpoint, log, interrupted, done. A loss that is
not a number is written as null, as gptdash writes it.
"""
import json
import math
import os
import sys
import time

__all__ = ["Logger", "trainer_callback"]


def _number(x):
    """A float for JSON: tensors and numpy scalars become floats; NaN and inf null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _is_rank_zero():
    return int(os.environ.get("RANK", "0") or 0) == 0


class Logger:
    """Writes one JSON object per line to `path` ("-" for standard output).

    `max_iters` and any of gptdash's `start` fields (device, dtype, params, vocab_size,
    preset, corpus, corpus_name, batch_size, model={n_layer, n_head, n_embd,
    block_size, dropout}, out) given here are written as the run's start event. With
    `append=False` (the default) an existing file is truncated: `gptdash watch`, if
    following it, starts again with the new run.
    """

    def __init__(self, path="-", max_iters=0, append=False, rank_zero=None, **info):
        self.enabled = _is_rank_zero() if rank_zero is None else rank_zero
        self._file = None
        self._started = time.monotonic()
        self._last = None  # (time, step) of the previous iter
        self._tokens = 0
        self._step = 0
        if not self.enabled:
            return
        if path == "-":
            self._file = sys.stdout
        else:
            self._file = open(path, "a" if append else "w", encoding="utf-8")
        self._write({"event": "start", "max_iters": int(max_iters), **info})

    def _write(self, event):
        if self._file is None:
            return
        self._file.write(json.dumps(event, allow_nan=False) + "\n")
        self._file.flush()  # a watcher sees each line as soon as it is written

    def iter(self, step, loss, lr=None, tokens=None, grad_norm=None, iter_ms=None, **extra):
        """One training step (`step` counts steps done; calls may skip steps, as at a
        logging interval). `tokens`: tokens in one step's batch, for tokens/s; `iter_ms`:
        one step's time (default: the time since the previous call, divided by the steps
        between them)."""
        now = time.monotonic()
        step = int(step)
        if iter_ms is None and self._last is not None:
            then, before = self._last
            iter_ms = 1000.0 * (now - then) / max(step - before, 1)
        self._last = (now, step)
        steps = max(step - self._step, 1)  # steps since the previous call (logging intervals)
        self._step = step
        event = {"event": "iter", "iter": step, "loss": _number(loss)}
        if iter_ms is not None:
            event["iter_ms"] = float(iter_ms)
        if tokens is not None:
            self._tokens += int(tokens) * steps
            event["tokens"] = int(tokens)
            if iter_ms:
                event["tokens_per_s"] = int(tokens) / (float(iter_ms) / 1000.0)
        if lr is not None:
            event["lr"] = _number(lr)
        if grad_norm is not None:
            event["grad_norm"] = _number(grad_norm)
        event.update(extra)
        self._write(event)

    def eval(self, step, test_loss):
        """A test (validation) loss after `step`."""
        self._write({"event": "eval", "iter": int(step), "test_loss": _number(test_loss)})

    def checkpoint(self, step, path):
        """A checkpoint was written to `path` (an exported Hugging Face folder or a
        gptdash checkpoint loads in the dashboard with Ctrl-O)."""
        self._write({"event": "checkpoint", "iter": int(step), "path": str(path)})

    def log(self, message):
        self._write({"event": "log", "message": str(message)})

    def interrupted(self, step, path=""):
        """The run was stopped early; `path`: what it saved."""
        self._write({"event": "interrupted", "iter": int(step), "path": str(path)})

    def done(self, step=None, train_loss=None, test_loss=None, checkpoint=""):
        """The run ended: steps, seconds and tokens/s since the logger started."""
        step = self._step if step is None else int(step)
        seconds = time.monotonic() - self._started
        event = {"event": "done", "iter": step, "train_s": seconds, "wall_s": seconds,
                 "checkpoint": str(checkpoint)}
        if train_loss is not None:
            event["train_loss"] = _number(train_loss)
        if test_loss is not None:
            event["test_loss"] = _number(test_loss)
        if self._tokens and seconds > 0:
            event["tokens_per_s"] = self._tokens / seconds
        self._write(event)

    def close(self):
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()
        self._file = None


def trainer_callback(path="run.jsonl", tokens_per_step=None, **info):
    """A `transformers.TrainerCallback` that writes the run's events to `path` from the
    main process: start (max_steps, device, precision, global batch, parameters and, for
    GPT-2 models, their sizes), iter (each `logging_steps`: loss, learning rate, grad
    norm; tokens/s when `tokens_per_step`, the tokens of one optimizer step over all
    processes, is given), eval (eval_loss), checkpoint (each save), done. transformers
    is imported only here, so the module stays dependency-free."""
    from transformers import TrainerCallback

    class GptdashCallback(TrainerCallback):
        def __init__(self):
            self.logger = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if not state.is_world_process_zero:
                return
            facts = {"out": args.output_dir, "device": str(args.device),
                     "dtype": "bf16" if args.bf16 else "fp16" if args.fp16 else "f32",
                     "batch_size": args.per_device_train_batch_size * args.world_size
                     * args.gradient_accumulation_steps}
            if model is not None:
                facts["params"] = sum(p.numel() for p in model.parameters())
                c = getattr(model, "config", None)
                if c is not None and hasattr(c, "n_layer"):
                    facts["model"] = {"n_layer": c.n_layer, "n_head": c.n_head, "n_embd": c.n_embd,
                                      "block_size": c.n_positions, "dropout": c.resid_pdrop}
                    facts["vocab_size"] = c.vocab_size
            facts.update(info)
            self.logger = Logger(path, max_iters=state.max_steps, rank_zero=True, **facts)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.logger is not None and logs and "loss" in logs:
                self.logger.iter(state.global_step, logs["loss"], lr=logs.get("learning_rate"),
                                 grad_norm=logs.get("grad_norm"), tokens=tokens_per_step)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if self.logger is not None and metrics and "eval_loss" in metrics:
                self.logger.eval(state.global_step, metrics["eval_loss"])

        def on_save(self, args, state, control, **kwargs):
            if self.logger is not None:
                folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
                self.logger.checkpoint(state.global_step, folder)

        def on_train_end(self, args, state, control, **kwargs):
            if self.logger is not None:
                self.logger.done(state.global_step)
                self.logger.close()
                self.logger = None

    return GptdashCallback()
