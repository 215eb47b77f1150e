"""Retrieval tuning: teach a pretrained byte-level base to look a key up far back (contract
§13.2, §16.2).

A few million bytes of text do not give a 4-layer byte model induction heads: the POC base reads
1,088-byte windows but its answer NLL on the long-range task stays at chance (ln 36), so full
context and every focus policy tie there and the task measures nothing. This stage continues
the base on long-range examples (§16.1: records planted early, `n_queries` of them asked at the
end) in up to three phases:

    copy    `copy_steps` steps on "\\n" s "\\n" s, s = `copy_length` random A-Z0-9 bytes (loss
            on the repeat): the plain induction copy forms in ~150 steps here, where the
            key lookup alone plateaus for 1,000-3,000 steps;
    short   `short_length`-byte examples, records in the first `short_plant_within`: many
            queries per second, until the mean answer NLL of the last `window` steps falls
            below `switch_nll` (the copy mechanism has formed) or `short_steps` are spent;
    long    examples of the base's full context, records in the first `plant_within`: the
            distances the evaluation asks for, for `long_steps` steps.

Loss: mean answer-byte NLL + `lm_weight` x the language-model NLL: of `text_batch` plain
windows of the base's context from the training split per step (or, with text_batch = 0, of
every byte of the examples), so the base keeps its language model. AdamW as in
pretraining, constant lr after a linear warmup, bf16 autocast. Batches are a
pure function of (seed, step), so `resume` continues bit-identically from the checkpoint written
every `checkpoint_every` steps and at the end.

    summary = retrieval_tune(cfg, base_dir, "runs/poc/retrieval")   # tqdm bar, resumable
    model, manifest = load_base("runs/poc/retrieval")              # a "tiny_gpt_base"

Run directory: checkpoint/ (kind "tiny_gpt_base": model, optimizer; the manifest keeps the
base's pretrain config, so `load_base` reads it, plus `retrieval` = this config, step, phase
and the step the long phase began) and metrics.jsonl (one line per `window` steps).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from ..data import LongRangeTask, WindowSampler, load_documents, split_documents
from ..data.long_range import ALPHABET
from ..data.windows import step_seed
from ..device import HOST, autocast, resolve_device
from ..errors import ConfigError, InputError
from .checkpoint import CheckpointMismatchError, load_checkpoint, read_manifest, save_checkpoint
from .config_io import config_to_dict, write_text_atomic
from .pretrain import (
    CHECKPOINT_DIR,
    KIND,
    METRICS_FILE,
    TrainConfig,
    load_base,
    load_optimizer_tensors,
    make_optimizer,
    optimizer_tensors,
)


@dataclass(frozen=True)
class RetrievalConfig:
    """The retrieval-tuning stage (module docstring). All steps 0 switch it off. Defaults are
    the POC's calibration (docs/poc-calibration.md §5): 200 copy steps, at most 3,200 short
    steps, 400 full-length steps, lm_weight 1.0 on one plain window per step. Units: lengths in
    bytes, `switch_nll` in nats/byte."""

    seed: int = 0
    copy_steps: int = 200
    copy_length: int = 128
    short_steps: int = 3200  # at most; the long phase starts earlier once switch_nll is met
    short_length: int = 256
    short_batch: int = 16
    short_plant_within: float = 0.6
    switch_nll: float = 1.0
    window: int = 100  # steps averaged for switch_nll and per metrics line
    long_steps: int = 400
    long_batch: int = 4
    plant_within: float = 0.25
    n_records: int = 4
    n_queries: int = 4
    key_len: int = 2
    value_len: int = 8
    lm_weight: float = 1.0
    text_batch: int = 1
    lr: float = 3e-3
    warmup_steps: int = 10
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dtype: str = "bfloat16"
    threads: int = 2  # 16 x 256-byte steps: 1.85x faster than one thread on 2 idle cores
    checkpoint_every: int = 200

    def __post_init__(self):
        for k, lo in (("seed", 0), ("copy_steps", 0), ("copy_length", 1), ("text_batch", 0),
                      ("short_steps", 0), ("short_length", 16), ("short_batch", 1),
                      ("window", 1), ("long_steps", 0), ("long_batch", 1), ("n_records", 1),
                      ("n_queries", 1), ("key_len", 1), ("value_len", 1), ("warmup_steps", 0),
                      ("threads", 0), ("checkpoint_every", 1)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"retrieval.{k} = {v!r}: must be an int >= {lo}")
        for k in ("short_plant_within", "plant_within"):
            v = getattr(self, k)
            if not 0 < v <= 1:
                raise ConfigError(f"retrieval.{k} = {v!r}: must be in (0, 1]")
        if self.n_queries > self.n_records:
            raise ConfigError(f"retrieval.n_queries = {self.n_queries}: must be <= n_records "
                              f"= {self.n_records}")
        for k in ("switch_nll", "lr", "grad_clip"):
            if not getattr(self, k) > 0:
                raise ConfigError(f"retrieval.{k} = {getattr(self, k)!r}: must be > 0")
        if self.lm_weight < 0 or self.weight_decay < 0:
            raise ConfigError(f"retrieval.lm_weight = {self.lm_weight!r}, weight_decay = "
                              f"{self.weight_decay!r}: must be >= 0")
        if self.checkpoint_every % self.window:
            # the switch test averages the last `window` steps: a resume must start on a window
            raise ConfigError(f"retrieval.checkpoint_every = {self.checkpoint_every}: must be a "
                              f"multiple of retrieval.window = {self.window}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"retrieval.dtype = {self.dtype!r}: 'float32' or 'bfloat16'")

    @property
    def enabled(self) -> bool:
        return self.copy_steps + self.short_steps + self.long_steps > 0


def retrieval_batch(task: LongRangeTask, step: int, batch: int) -> tuple[torch.Tensor, ...]:
    """Batch `step` of a task: (x [B, L-1], y [B, L-1], answer mask [B, L-1] bool: the target
    positions that are answer bytes), examples step * batch + b, b < batch."""
    texts, masks = [], []
    for b in range(batch):
        ex = task.example(step * batch + b)
        t = torch.tensor(list(ex.text), dtype=torch.int64, device=HOST)
        m = torch.zeros(len(ex.text) - 1, dtype=torch.bool, device=HOST)
        for a, e in ex.answer_spans:
            m[a - 1: e - 1] = True  # target position i predicts byte i + 1
        texts.append(t)
        masks.append(m)
    t = torch.stack(texts)
    return t[:, :-1], t[:, 1:], torch.stack(masks)


def copy_batch(seed: int, step: int, batch: int, length: int) -> tuple[torch.Tensor, ...]:
    """Batch `step` of the copy phase: rows "\\n" s "\\n" s with s = `length` bytes of A-Z0-9
    drawn from a generator seeded by step_seed(seed, step); (x, y, mask) [B, 2 * length + 1],
    mask true where the target is a byte of the repeat."""
    g = torch.Generator().manual_seed(step_seed(seed, step))
    alphabet = torch.tensor(list(ALPHABET), dtype=torch.int64, device=HOST)
    s = alphabet[torch.randint(len(ALPHABET), (batch, length), generator=g, device=HOST)]
    nl = torch.full((batch, 1), 10, dtype=torch.int64, device=HOST)
    t = torch.cat([nl, s, nl, s], dim=1)  # [B, 2L + 2]
    m = torch.zeros(batch, 2 * length + 1, dtype=torch.bool, device=HOST)
    m[:, length + 1:] = True
    return t[:, :-1], t[:, 1:], m


def retrieval_tune(cfg: RetrievalConfig, base: str | Path, run_dir: str | Path, *,
                   resume: bool = False, sources=("stdlib", "pydoc"), val_fraction: float = 0.05,
                   stop_after: int | None = None, progress: bool = True,
                   out: TextIO | None = None, device: str | torch.device = "cpu") -> dict:
    """Tune the base at `base` (a pretrain run or checkpoint directory) into `run_dir`.

    Examples come from the training split of `sources` (the base's pretraining split, so the
    held-out files stay held out). resume: continue from run_dir/checkpoint (its manifest's
    retrieval config must equal `cfg`, else CheckpointMismatchError); without it a run directory
    that holds a checkpoint is an InputError. stop_after: stop (checkpointed, unfinished) once
    this many steps are done (tests, manual interruption). Returns {"step", "phase",
    "long_from", "answer_nll" (mean of the last window), "finished", "elapsed_s"}.
    device: where the base trains (`resolve_device`); checkpoints hold CPU tensors."""
    device = resolve_device(device)
    if not cfg.enabled:
        raise ConfigError("retrieval.copy_steps + short_steps + long_steps = 0: nothing to tune")
    run_dir = Path(run_dir)
    out = out if out is not None else sys.stderr
    ckpt = run_dir / CHECKPOINT_DIR
    has = (ckpt / "manifest.json").is_file()
    if has and not resume:
        raise InputError(f"run directory {str(run_dir)!r} already holds a checkpoint; resume "
                         f"it or choose another directory")
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _tune(cfg, Path(base), run_dir, has and resume, sources, val_fraction,
                     stop_after, progress, out, device)
    finally:
        torch.set_num_threads(threads_before)


def _tune(cfg, base, run_dir, resume, sources, val_fraction, stop_after, progress, out,
          device) -> dict:
    from tqdm import tqdm

    model, base_manifest = load_base(base, device)
    context = int(base_manifest["config"]["data"]["context"])
    docs = split_documents(load_documents(tuple(sources)), val_fraction).train
    common = dict(n_records=cfg.n_records, key_len=cfg.key_len, value_len=cfg.value_len,
                  n_queries=cfg.n_queries)
    tasks = {"short": LongRangeTask(docs, length=cfg.short_length + 1,
                                    plant_within=cfg.short_plant_within, seed=cfg.seed, **common),
             "long": LongRangeTask(docs, length=context + 1, plant_within=cfg.plant_within,
                                   seed=cfg.seed + 1, **common)}
    opt_cfg = TrainConfig(lr=cfg.lr, min_lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    opt = make_optimizer(model, opt_cfg)
    text = WindowSampler(docs, context, cfg.text_batch, cfg.seed) if cfg.text_batch else None
    step, long_from, curve = 0, None, []
    phase = "copy" if cfg.copy_steps else "short" if cfg.short_steps else "long"
    elapsed_before = 0.0
    if resume:
        states, man = load_checkpoint(run_dir / CHECKPOINT_DIR, kind=KIND)
        if man.get("retrieval") != config_to_dict(cfg):
            raise CheckpointMismatchError(f"{run_dir / CHECKPOINT_DIR}: made with another "
                                          f"retrieval config; use another run directory")
        model.load_state_dict(states["model"])
        load_optimizer_tensors(opt, states.get("optimizer", {}))
        step, phase, long_from = man["step"], man["phase"], man["long_from"]
        curve, elapsed_before = man.get("curve", []), man.get("elapsed_s", 0.0)
        print(f"resuming {str(run_dir)!r} at step {step} ({phase} phase)", file=out)
    t0 = time.perf_counter()
    total = (long_from if long_from is not None else cfg.copy_steps + cfg.short_steps) + \
        cfg.long_steps

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t0

    def save(done: bool) -> None:
        # the base's kind and pretrain config (so load_base reads this), then this stage's
        man = {"kind": KIND, "config": base_manifest["config"],
               "base_step": base_manifest.get("step"), "retrieval": config_to_dict(cfg),
               "step": step, "phase": phase, "long_from": long_from, "curve": curve,
               "elapsed_s": round(elapsed(), 2), "finished": done, "base": str(base),
               "metrics": {"answer_nll": curve[-1]["answer_nll"] if curve else None}}
        save_checkpoint(run_dir / CHECKPOINT_DIR, {"model": model}, man,
                        state_dicts={"optimizer": optimizer_tensors(opt)})
        write_text_atomic(run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in curve))

    bar = tqdm(total=total, initial=step, disable=not progress, file=out, unit="step",
               dynamic_ncols=True, mininterval=1.0, desc="retrieval")
    recent: list[float] = []
    finished = False
    while True:
        if phase == "copy" and step >= cfg.copy_steps:
            phase = "short" if cfg.short_steps else "long"
            long_from = None if cfg.short_steps else step
        if phase == "short" and step >= cfg.copy_steps + cfg.short_steps:
            phase, long_from = "long", step
        if phase == "long" and step >= (long_from or 0) + cfg.long_steps:
            finished = True
            break
        if stop_after is not None and step >= stop_after:
            break
        if phase == "copy":
            x, y, m = copy_batch(cfg.seed, step, cfg.short_batch, cfg.copy_length)
        else:
            task, batch = (tasks["short"], cfg.short_batch) if phase == "short" else (
                tasks["long"], cfg.long_batch)
            x, y, m = retrieval_batch(task, step, batch)
        x, y, m = x.to(device), y.to(device), m.to(device)
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        for g in opt.param_groups:
            g["lr"] = lr
        with autocast(device, cfg.dtype):
            nll = model(x, targets=y).nll  # [B, L]
            answer = nll[m].mean()
            if text is not None:
                tx, ty = text.batch(step)
                lm = model(tx.to(device), targets=ty.to(device)).nll.mean()
            else:
                lm = nll.mean()
            loss = answer + cfg.lm_weight * lm
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        recent.append(float(answer.detach()))
        bar.update(1)
        bar.set_postfix(phase=phase, answer_nll=f"{recent[-1]:.3f}", refresh=False)
        if step % cfg.window == 0:
            mean = sum(recent[-cfg.window:]) / len(recent[-cfg.window:])
            curve.append({"step": step, "phase": phase, "answer_nll": round(mean, 4),
                          "elapsed_s": round(elapsed(), 1)})
            bar.write(f"step {step:>5} ({phase}): answer NLL {mean:.3f} nats/byte over the "
                      f"last {cfg.window} steps", file=out)
            if phase == "short" and mean < cfg.switch_nll:
                phase, long_from = "long", step
                bar.total = long_from + cfg.long_steps
                bar.write(f"short phase done at step {step}: answer NLL {mean:.3f} < "
                          f"{cfg.switch_nll}", file=out)
        if step % cfg.checkpoint_every == 0:
            save(False)
    bar.close()
    save(finished)
    last = curve[-1]["answer_nll"] if curve else math.nan
    return {"step": step, "phase": phase, "long_from": long_from, "answer_nll": last,
            "finished": finished, "elapsed_s": elapsed()}


def retrieval_finished(run_dir: str | Path) -> bool:
    """True when run_dir/checkpoint holds a finished retrieval run."""
    p = Path(run_dir) / CHECKPOINT_DIR
    return (p / "manifest.json").is_file() and bool(read_manifest(p).get("finished"))

