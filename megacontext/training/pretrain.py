"""Base pretraining: a byte-level `TinyGPT` (vocab 256) with full context (contract §13, §16).

    cfg = PretrainConfig()                       # or load_config_toml(PretrainConfig, path)
    summary = pretrain(cfg, "runs/pretrain")     # tqdm bar with loss and tokens/s
    model, manifest = load_base("runs/pretrain") # eval mode; the latest checkpoint

Training: windows of `data.context` bytes from the training split (`WindowSampler`, batch of
step s a pure function of (seed, s)), mean next-byte NLL, AdamW (weight decay on matrices
only), linear warmup then cosine decay to `min_lr`, gradient-norm clipping, optional bf16
autocast, on the CPU or a GPU (`device`; contract §13.4). Validation: mean NLL in nats/byte
over `validation_windows` of the held-out files, always computed in float32, at step 0,
every `steps // evals` steps and at the end.

Run directory:
    config.toml     the resolved config (after `minutes` fixed the step count)
    checkpoint/     the latest checkpoint (`save_checkpoint`, kind "tiny_gpt_base"): model and
                    optimizer weights; manifest: config, step, metrics, curve, tokens_seen
    metrics.jsonl   one line per validation point (step, tokens, val_nll, train_loss, elapsed_s)
A checkpoint is written after every validation point and when the run stops (end, time budget,
`stop_after`). `resume=True` continues from it bit-identically: same parameters, bit for bit,
as the uninterrupted run (on the same machine, thread count and dtype).

Time budget (`minutes`): on a fresh run, the step count is set from the measured speed of the
first steps (those run during warmup, whose learning rate does not depend on the step count)
so that training and evaluation fill the budget; the resolved count is written to config.toml.
The budget is also a hard stop: a run that gets slower stops early, checkpointed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from ..data import load_documents, split_documents, validation_windows
from ..data.windows import WindowSampler
from ..device import autocast, resolve_device
from ..errors import ConfigError, InputError
from ..models.tiny_gpt import TinyGPT, TinyGPTConfig
from .checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    config_differences,
    load_checkpoint,
    save_checkpoint,
)
from .config_io import (
    config_from_dict,
    config_to_dict,
    load_config_toml,
    save_config_toml,
    write_text_atomic,
)

KIND = "tiny_gpt_base"
CHECKPOINT_DIR = "checkpoint"
CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
CALIBRATION_STEPS = 10


def _check(cond: bool, key: str, value, rule: str) -> None:
    if not cond:
        raise ConfigError(f"config key {key!r} must be {rule}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """`TinyGPTConfig` fields (vocab is 256: bytes). Default: 821,504 parameters. Two heads of
    64 rather than four of 32: the same parameters, and CPU attention (over half of a step's
    time at 512 bytes) measured ~1.3x faster per step (bf16, one thread)."""

    n_layer: int = 4
    n_head: int = 2
    n_embd: int = 128
    mlp_ratio: int = 4
    rope_base: float = 10_000.0

    def tiny_gpt(self) -> TinyGPTConfig:
        return TinyGPTConfig(vocab_size=256, n_layer=self.n_layer, n_head=self.n_head,
                             n_embd=self.n_embd, mlp_ratio=self.mlp_ratio,
                             rope_base=self.rope_base)

    def __post_init__(self):
        self.tiny_gpt()  # raises ConfigError for values TinyGPT cannot use


@dataclass(frozen=True)
class DataConfig:
    """Corpus (contract §16): sources "stdlib", "pydoc" or paths; windows of `context` bytes."""

    sources: tuple[str, ...] = ("stdlib", "pydoc")
    include_tests: bool = False
    pattern: str = "*"  # file-name pattern for directory sources
    val_fraction: float = 0.05
    context: int = 512  # bytes per training / validation window
    val_windows: int = 32  # validation windows (each `context` bytes)

    def __post_init__(self):
        _check(len(self.sources) > 0, "data.sources", self.sources, "non-empty")
        _check(0.0 < self.val_fraction < 1.0, "data.val_fraction", self.val_fraction,
               "in (0, 1)")
        for k in ("context", "val_windows"):
            v = getattr(self, k)
            _check(isinstance(v, int) and v >= 1, f"data.{k}", v, "an int >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. `steps` counts optimizer steps of `batch_size` windows. The default step
    count is about what 10 minutes bought on the shared 2-core development machine (1,114
    steps, 7,700 bytes/s: validation 1.27 nats/byte; under heavier load 396 steps gave 1.78)."""

    seed: int = 0
    batch_size: int = 8
    steps: int = 1200
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    dtype: str = "bfloat16"  # "float32", or "bfloat16" (autocast; weights stay float32)
    # torch.set_num_threads during the run (0: leave torch's setting). 1 by default: on the
    # shared 2-core machine (load ~8) one thread measured 4,000 tokens/s, two 1,700
    threads: int = 1
    evals: int = 8  # validation points (each followed by a checkpoint), plus step 0
    # A base checkpoint (run directory or checkpoint/) whose model weights start this run, e.g.
    # to extend a 512-byte base to a longer context; its model config must equal [model]. The
    # optimizer starts fresh. "" (default): random initialisation from `seed`.
    init: str = ""

    def __post_init__(self):
        _check(isinstance(self.init, str), "train.init", self.init, "a path (string)")
        for k, lo in (("seed", 0), ("batch_size", 1), ("steps", 1), ("warmup_steps", 0),
                      ("threads", 0), ("evals", 1)):
            v = getattr(self, k)
            _check(isinstance(v, int) and not isinstance(v, bool) and v >= lo, f"train.{k}", v,
                   f"an int >= {lo}")
        _check(self.lr > 0, "train.lr", self.lr, "> 0")
        _check(0 <= self.min_lr <= self.lr, "train.min_lr", self.min_lr, "in [0, lr]")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, ">= 0")
        _check(0 <= self.beta1 < 1, "train.beta1", self.beta1, "in [0, 1)")
        _check(0 <= self.beta2 < 1, "train.beta2", self.beta2, "in [0, 1)")
        _check(self.grad_clip > 0, "train.grad_clip", self.grad_clip, "> 0")
        _check(self.dtype in ("float32", "bfloat16"), "train.dtype", self.dtype,
               "'float32' or 'bfloat16'")


@dataclass(frozen=True)
class PretrainConfig:
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PretrainConfig:
        return config_from_dict(cls, data)

    @classmethod
    def from_toml(cls, path) -> PretrainConfig:
        return load_config_toml(cls, path)

    def to_toml(self, path) -> Path:
        return save_config_toml(self, path, "megacontext pretrain: resolved config")


# --- pure pieces ----------------------------------------------------------------------------


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over `warmup_steps` (step 0 gets lr / warmup_steps), then cosine decay from
    lr to min_lr, reaching min_lr at step `steps - 1`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - 1 - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on parameters with >= 2 dimensions (matrices, embeddings) only."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=False)


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as flat tensors "<param index>.<name>"."""
    return {f"{i}.{k}": v for i, st in opt.state_dict()["state"].items() for k, v in st.items()}


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)


@torch.no_grad()
def validation_nll(model: TinyGPT, x: torch.Tensor, y: torch.Tensor, batch: int = 16) -> float:
    """Mean NLL (nats/byte, float32 forward) of y given x over all positions of all windows.
    x, y: int64 [n, L] on any device (moved to the model's, `batch` windows at a time)."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch].to(dev), y[i:i + batch].to(dev)
        total += float(model(xb, targets=yb).nll.double().sum())
    model.train(was_training)
    return total / y.numel()


# --- the run --------------------------------------------------------------------------------


def _write_metrics(run_dir: Path, curve: list[dict]) -> None:
    write_text_atomic(run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in curve))


def pretrain(
    cfg: PretrainConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    minutes: float | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    out: TextIO | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Train (or resume) a byte-level TinyGPT into `run_dir`; see the module docstring.

    resume: continue from run_dir/checkpoint (its config.toml must equal `cfg`, else
        CheckpointMismatchError naming the differing keys); without it, a run directory that
        already holds a checkpoint is an InputError (nothing is overwritten).
    minutes: time budget (see module docstring); stop_after: stop (checkpointed) once this many
        steps are done in total (for tests and manual interruption).
    Returns {"step", "steps", "tokens", "val_nll", "curve", "stopped", "tokens_per_s" (training
    steps of this session only), "elapsed_s" (wall time of the run, all sessions), "config"}.
    device: where the model trains (`resolve_device`: "auto", "cpu", "cuda[:N]"; InputError for
        one this machine lacks). Checkpoints hold CPU tensors, so a run resumes on any device
        (bit-identical only on the same device, thread count and dtype).
    """
    run_dir = Path(run_dir)
    device = resolve_device(device)
    out = out if out is not None else sys.stderr
    if minutes is not None and not (isinstance(minutes, int | float) and minutes > 0):
        raise InputError(f"minutes must be > 0, got {minutes!r}")
    if stop_after is not None and (not isinstance(stop_after, int) or stop_after < 1):
        raise InputError(f"stop_after must be an int >= 1, got {stop_after!r}")
    ckpt_dir = run_dir / CHECKPOINT_DIR
    has_ckpt = (ckpt_dir / "manifest.json").is_file() or \
        (run_dir / f".{CHECKPOINT_DIR}.previous" / "manifest.json").is_file()
    if resume and not has_ckpt:
        raise CheckpointError(f"--resume: no checkpoint in run directory {str(run_dir)!r}")
    if not resume and has_ckpt:
        raise InputError(f"run directory {str(run_dir)!r} already holds a checkpoint; pass "
                         f"resume=True (CLI: --resume) to continue it, or choose another directory")

    threads_before = torch.get_num_threads()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        return _run(cfg, run_dir, resume, minutes, stop_after, progress, out, device)
    finally:
        torch.set_num_threads(threads_before)


def _run(cfg, run_dir, resume, minutes, stop_after, progress, out, device) -> dict:
    from tqdm import tqdm

    t_start = time.perf_counter()
    deadline = t_start + 60.0 * minutes if minutes is not None else math.inf
    ckpt_dir = run_dir / CHECKPOINT_DIR
    if resume:
        saved = load_config_toml(PretrainConfig, run_dir / CONFIG_FILE)
        # a --minutes run resolved its step count: the caller's count is not a mismatch
        if cfg.train.steps != saved.train.steps and minutes is not None:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train,
                                                                     steps=saved.train.steps))
        diffs = config_differences(saved.to_dict(), cfg.to_dict())
        if diffs:
            raise CheckpointMismatchError(
                f"{str(run_dir / CONFIG_FILE)!r} differs from the requested config "
                f"(expected = the run's, found = requested): " + "; ".join(diffs))
    split = split_documents(load_documents(cfg.data.sources, cfg.data.include_tests,
                                           cfg.data.pattern), cfg.data.val_fraction)
    T, B = cfg.data.context, cfg.train.batch_size
    sampler = WindowSampler(split.train, T, B, cfg.train.seed)
    vx, vy = validation_windows(split.validation, T, cfg.data.val_windows)

    torch.manual_seed(cfg.train.seed)
    with torch.device(device):  # parameters are made where they train
        model = TinyGPT(cfg.model.tiny_gpt())
    if cfg.train.init and not resume:
        init_states, init_manifest = load_checkpoint(cfg.train.init, kind=KIND)
        init_model = init_manifest.get("config", {}).get("model")
        diffs = config_differences({"model": init_model}, {"model": config_to_dict(cfg.model)})
        if diffs:
            raise CheckpointMismatchError(
                f"train.init={cfg.train.init!r}: its model config differs from [model]: "
                + "; ".join(diffs))
        model.load_state_dict(init_states["model"])
        print(f"initialised from {cfg.train.init!r} (step {init_manifest.get('step')})",
              file=out)
    opt = make_optimizer(model, cfg.train)
    curve: list[dict] = []
    step, elapsed_before, train_loss = 0, 0.0, float("nan")
    if resume:
        states, manifest = load_checkpoint(ckpt_dir, kind=KIND, config=cfg.to_dict())
        model.load_state_dict(states["model"])
        load_optimizer_tensors(opt, states.get("optimizer", {}))
        step, curve = manifest["step"], list(manifest.get("curve", []))
        elapsed_before = float(manifest["metrics"].get("elapsed_s", 0.0))
        train_loss = float(manifest["metrics"].get("train_loss", float("nan")))
        print(f"resuming {str(ckpt_dir)!r} at step {step}", file=out)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"corpus {split.summary()}; {sampler.num_windows:,} training windows of {T} bytes",
          file=out)
    print(f"model {n_params:,} parameters {cfg.model}; {cfg.train}", file=out)

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t_start

    def evaluate() -> dict:
        t0 = time.perf_counter()
        v = validation_nll(model, vx, vy)
        rec = {"step": step, "tokens": step * B * T, "val_nll": round(v, 6),
               "train_loss": round(train_loss, 6) if math.isfinite(train_loss) else None,
               "elapsed_s": round(elapsed(), 2)}
        curve.append(rec)
        return rec | {"eval_s": time.perf_counter() - t0}

    def checkpoint(stopped: str | None) -> None:
        metrics = {"val_nll": curve[-1]["val_nll"] if curve else None,
                   "val_nll_step": curve[-1]["step"] if curve else None,
                   "train_loss": train_loss if math.isfinite(train_loss) else None,
                   "tokens": step * B * T, "elapsed_s": round(elapsed(), 2)}
        save_checkpoint(ckpt_dir, {"model": model},
                        {"kind": KIND, "config": cfg.to_dict(), "step": step,
                         "metrics": metrics, "curve": curve, "stopped": stopped},
                        state_dicts={"optimizer": optimizer_tensors(opt)})
        _write_metrics(run_dir, curve)

    def log(rec: dict, bar) -> None:
        tl = rec["train_loss"] if rec["train_loss"] is not None else float("nan")
        msg = (f"step {rec['step']:>6}  tokens {rec['tokens']:>11,}  val_nll "
               f"{rec['val_nll']:.4f} nats/byte  train_loss {tl:.4f}  "
               f"elapsed {rec['elapsed_s']:.0f} s")
        (bar.write if bar is not None else print)(msg, file=out)

    if not resume:
        first = evaluate()
        log(first, None)
    interval = max(1, cfg.train.steps // cfg.train.evals)
    calibrate = (not resume and minutes is not None)
    k_cal = min(CALIBRATION_STEPS, cfg.train.warmup_steps + 1, cfg.train.steps)
    if not calibrate:
        cfg.to_toml(run_dir / CONFIG_FILE)
    bar = tqdm(total=cfg.train.steps, initial=step, disable=not progress, file=out,
               unit="step", dynamic_ncols=True, mininterval=1.0)
    model.train()
    stopped = None
    first_step, train_s = step, 0.0  # tokens/s counts training steps only, not evaluations
    t_cal = time.perf_counter()
    while step < cfg.train.steps:
        t_step = time.perf_counter()
        x, y = (t.to(device) for t in sampler.batch(step))
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.train)
        with autocast(device, cfg.train.dtype):
            loss = model(x, targets=y).nll.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        train_loss = float(loss.detach())
        now = time.perf_counter()
        train_s += now - t_step
        tok_per_s = (step - first_step) * B * T / train_s
        bar.update(1)
        bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tok_per_s:,.0f}", refresh=False)
        if calibrate and step == 1 and k_cal > 1:
            # the first step pays one-time costs (allocator, kernel loading, a GPU's library
            # set-up): timing starts after it, so they do not shrink the step count
            t_cal = now
        if calibrate and step == k_cal:
            per_step = (now - t_cal) / (k_cal - 1 if k_cal > 1 else 1)
            remaining = deadline - now
            # S steps cost S * per_step plus (S / interval) evaluations of first["eval_s"]
            per_eval = first["eval_s"] * cfg.train.evals
            steps = int(step + max(remaining - per_eval, 0.0) / per_step)
            steps = max(steps, step + 1)
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))
            interval = max(1, steps // cfg.train.evals)
            cfg.to_toml(run_dir / CONFIG_FILE)
            bar.total = steps
            bar.write(f"time budget {minutes} min: {per_step * 1000:.0f} ms/step measured -> "
                      f"steps = {steps}", file=out)
            calibrate = False
        if step % interval == 0 or step == cfg.train.steps:
            log(evaluate(), bar)
            checkpoint(None)
        if stop_after is not None and step >= stop_after and step < cfg.train.steps:
            stopped = f"stop_after={stop_after}"
            break
        if time.perf_counter() >= deadline and step < cfg.train.steps:
            stopped = f"time budget of {minutes} min"
            break
    bar.close()
    if calibrate:  # the run ended before calibration (tiny step counts)
        cfg.to_toml(run_dir / CONFIG_FILE)
    if stopped is not None:
        if not curve or curve[-1]["step"] != step:
            log(evaluate(), None)
        checkpoint(stopped)
        print(f"stopped at step {step}/{cfg.train.steps} ({stopped}); continue with --resume",
              file=out)
    total_s = elapsed()
    return {"step": step, "steps": cfg.train.steps, "tokens": step * B * T,
            "val_nll": curve[-1]["val_nll"], "curve": curve, "stopped": stopped,
            "tokens_per_s": (step - first_step) * B * T / train_s if train_s else float("nan"),
            "elapsed_s": total_s,
            "config": cfg}


def load_base(path: str | os.PathLike, device: str | torch.device = "cpu"
              ) -> tuple[TinyGPT, dict]:
    """(TinyGPT in eval mode on `device`, manifest) from a pretrain run directory or its
    checkpoint directory. Raises CheckpointError / CheckpointMismatchError (not a
    "tiny_gpt_base" checkpoint) / CheckpointCorruptError; InputError for a device this machine
    lacks."""
    device = resolve_device(device)
    states, manifest = load_checkpoint(path, kind=KIND)  # a run dir resolves to checkpoint/
    cfg = config_from_dict(PretrainConfig, manifest["config"])
    with torch.device(device):
        model = TinyGPT(cfg.model.tiny_gpt())
    model.load_state_dict(states["model"])
    model.eval()
    return model, manifest
