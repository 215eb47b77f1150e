"""The training config tree (contract §13): dataclasses read from and written to TOML.

    cfg = load_train_config("train.toml")    # unknown or mistyped key -> ConfigError naming it
    save_train_config(cfg, run_dir / "config.toml")   # the resolved config, written atomically

Every section is a frozen dataclass; `config_from_dict(TrainConfig, data)` walks the tree and
checks each key: an unknown key, a value of the wrong type (an int where a bool is expected, a
string where a number is), or a value a section's own check rejects raises `ConfigError` whose
message starts with the dotted key (`phases.b1.steps`, `mc.budget`). Omitted keys take their
defaults. Floats accept integers (written back as floats); nothing else is coerced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..controller.config import MCConfig
from ..errors import ConfigError

PHASE_NAMES = ("warm_gist", "warm_lens", "b1", "b2", "b3")


def _need(cond: bool, key: str, value, rule: str) -> None:
    if not cond:
        raise ConfigError(f"{key} = {value!r}: {rule}")


@dataclass(frozen=True)
class BaseSection:
    """The frozen base model. `checkpoint`: a pretrain checkpoint directory (its manifest's
    config.model gives the TinyGPT shape); "" builds a seeded TinyGPT of the shape below and
    trains it for `pretrain_steps` full-context steps on the training text (tiny runs, tests)."""

    checkpoint: str = "runs/base4k"  # a `megacontext pretrain` run (or checkpoint) dir
    n_layer: int = 4
    n_head: int = 2
    n_embd: int = 128
    pretrain_steps: int = 0
    pretrain_lr: float = 3e-3
    pretrain_batch: int = 8
    pretrain_context: int = 64

    def check(self, key: str) -> None:
        for name in ("n_layer", "n_head", "n_embd", "pretrain_batch", "pretrain_context"):
            _need(getattr(self, name) >= 1, f"{key}.{name}", getattr(self, name), "must be >= 1")
        _need(self.pretrain_steps >= 0, f"{key}.pretrain_steps", self.pretrain_steps,
              "must be >= 0")
        _need(self.pretrain_lr > 0, f"{key}.pretrain_lr", self.pretrain_lr, "must be > 0")


@dataclass(frozen=True)
class DataSection:
    """Training text. `source`: any source of the byte corpus (`megacontext.data`: "stdlib",
    "pydoc", a directory or a file path), split into train / validation exactly as base
    pretraining splits it (a hash of each document's name; `val_fraction` of them validate),
    or "synthetic" (seeded key=value records with later look-ups: long-range structure in a
    few kB, for tiny runs)."""

    source: str = "stdlib"
    val_fraction: float = 0.05
    synthetic_bytes: int = 65536
    # The long-range task (contract §16.1) mixed into the training windows: this fraction of
    # drawn windows are examples of history + horizon bytes whose query ends at the history
    # (the answer opens the horizon, real text fills the rest), so the labels can show which
    # early record is worth expanding. 0 (default): plain text only, no extra draws.
    long_range_fraction: float = 0.0
    long_range_records: int = 4
    long_range_key_len: int = 2
    long_range_value_len: int = 8
    long_range_plant_within: float = 0.25

    def check(self, key: str) -> None:
        _need(0 < self.val_fraction < 1, f"{key}.val_fraction", self.val_fraction,
              "must be in (0, 1)")
        _need(0 <= self.long_range_fraction <= 1, f"{key}.long_range_fraction",
              self.long_range_fraction, "must be in [0, 1]")
        _need(0 < self.long_range_plant_within <= 1, f"{key}.long_range_plant_within",
              self.long_range_plant_within, "must be in (0, 1]")
        for k in ("long_range_records", "long_range_key_len", "long_range_value_len"):
            _need(getattr(self, k) >= 1, f"{key}.{k}", getattr(self, k), "must be >= 1")
        _need(self.synthetic_bytes >= 1024, f"{key}.synthetic_bytes", self.synthetic_bytes,
              "must be >= 1024")


@dataclass(frozen=True)
class GistSection:
    n_layers: int = 1
    n_heads: int = 4
    mlp_ratio: int = 2
    shared: bool = True


@dataclass(frozen=True)
class LensSection:
    """LensNet's size; `causal`: train `CausalLensNet` (entry n reads only entries <= n, no
    tail gists: the seed's causal-vs-non-causal ablation) instead of the non-causal LensNet."""

    width: int = 64
    n_heads: int = 4
    n_latents: int = 6
    slot_mlp_ratio: int = 2
    causal: bool = False


@dataclass(frozen=True)
class LoraSection:
    """LoRA on the attention projections (qkv, proj) of the first or last `n_blocks` blocks."""

    rank: int = 8
    blocks: str = "last"  # "first" | "last"
    n_blocks: int = 2
    alpha: float = 0.0  # 0: alpha = rank (scale 1)

    def check(self, key: str) -> None:
        _need(4 <= self.rank <= 16, f"{key}.rank", self.rank, "must be in [4, 16]")
        _need(self.blocks in ("first", "last"), f"{key}.blocks", self.blocks,
              "must be 'first' or 'last'")
        _need(self.n_blocks >= 1, f"{key}.n_blocks", self.n_blocks, "must be >= 1")
        _need(self.alpha >= 0, f"{key}.alpha", self.alpha, "must be >= 0")


@dataclass(frozen=True)
class LensWeightsSection:
    """`LensLossWeights` (contract §6): one weight per term, temperature, margin, scale."""

    reg: float = 1.0
    pref: float = 1.0
    rank: float = 0.5
    budget: float = 0.1
    temperature: float = 0.5
    margin: float = 0.1
    target_scale: float = 1.0
    collapse_weight: float = 1.0


@dataclass(frozen=True)
class LossSection:
    """Objectives. GistNet: `kl_how` aggregate (mean | rmse | p95 | max) of KL over the horizon,
    `kl_direction` fwd = KL(raw || gist), rev = KL(gist || raw); `stability` weights the L2 to
    the gists of the phase's starting GistNet; `boundary` adds that weight times the KL
    aggregate over the first K horizon tokens (the boundary where history meets prediction).
    LensNet: `target_mode` utilities (per-action ΔNLL, slot `price` nats/slot) or best (the
    best of `n_variants` random variants; `variant_weights` on/off); `legality_mask` false trains
    on every entry with target 0 where no legal action was measured (the field notes' bug, kept
    as an ablation). LoRA: task NLL@H plus `keep_alive` times the gist substitutability KL."""

    kl_how: str = "mean"
    kl_direction: str = "fwd"
    stability: float = 0.0
    boundary: float = 0.0
    spans_per_snapshot: int = 4
    target_mode: str = "utilities"
    price: float = 0.0
    max_candidates: int = 64
    n_variants: int = 8
    variant_weights: bool = True
    legality_mask: bool = True
    lens: LensWeightsSection = field(default_factory=LensWeightsSection)
    keep_alive: float = 0.1

    def check(self, key: str) -> None:
        _need(self.kl_how in ("mean", "rmse", "p95", "max"), f"{key}.kl_how", self.kl_how,
              "must be one of mean, rmse, p95, max")
        _need(self.kl_direction in ("fwd", "rev"), f"{key}.kl_direction", self.kl_direction,
              "must be 'fwd' or 'rev'")
        _need(self.target_mode in ("utilities", "best"), f"{key}.target_mode",
              self.target_mode, "must be 'utilities' or 'best'")
        for name in ("stability", "boundary", "price", "keep_alive"):
            v = getattr(self, name)
            _need(math.isfinite(v) and v >= 0, f"{key}.{name}", v, "must be finite and >= 0")
        for name in ("spans_per_snapshot", "max_candidates"):
            _need(getattr(self, name) >= 1, f"{key}.{name}", getattr(self, name), "must be >= 1")
        _need(self.n_variants >= 2, f"{key}.n_variants", self.n_variants, "must be >= 2")


@dataclass(frozen=True)
class PhaseSection:
    """One phase: `steps` optimizer steps (0: the phase is skipped) of `batch` snapshots each;
    AdamW with linear warmup over `warmup` steps, then cosine from `lr` to `min_lr`; gradient
    norm clipped to `grad_clip`. Lens phases label `snapshots` snapshots first."""

    steps: int = 0
    batch: int = 2
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 2
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    snapshots: int = 8

    def check(self, key: str) -> None:
        _need(self.steps >= 0, f"{key}.steps", self.steps, "must be >= 0")
        for name in ("batch", "snapshots"):
            _need(getattr(self, name) >= 1, f"{key}.{name}", getattr(self, name), "must be >= 1")
        _need(self.warmup >= 0, f"{key}.warmup", self.warmup, "must be >= 0")
        _need(self.lr > 0 and 0 <= self.min_lr <= self.lr, f"{key}.lr/min_lr",
              (self.lr, self.min_lr), "need lr > 0 and 0 <= min_lr <= lr")
        _need(self.weight_decay >= 0, f"{key}.weight_decay", self.weight_decay, "must be >= 0")
        _need(self.grad_clip > 0, f"{key}.grad_clip", self.grad_clip, "must be > 0")


@dataclass(frozen=True)
class PhasesSection:
    warm_gist: PhaseSection = field(default_factory=lambda: PhaseSection(steps=24))
    warm_lens: PhaseSection = field(default_factory=lambda: PhaseSection(steps=60, batch=4,
                                                                         snapshots=12))
    b1: PhaseSection = field(default_factory=lambda: PhaseSection(steps=12))
    b2: PhaseSection = field(default_factory=lambda: PhaseSection(steps=40, batch=4,
                                                                  snapshots=8))
    b3: PhaseSection = field(default_factory=lambda: PhaseSection(steps=12, lr=5e-4))


@dataclass(frozen=True)
class TrainConfig:
    """The whole run. `history` tokens are ingested by a session before each snapshot and the
    next `horizon` (H) tokens are predicted; `cycles` repeats B1 -> B2 -> B3 after the warm
    start; `threads` is torch's intra-op thread count (1 for bit-reproducible golden runs)."""

    seed: int = 0
    history: int = 4096
    horizon: int = 64
    cycles: int = 2
    threads: int = 1
    eval_windows: int = 0  # validation windows scored per policy after every phase (0: off)
    polarity_window: int = 5  # lens steps whose mean score/target Spearman the alarm watches
    stop_on_polarity: bool = False  # the polarity alarm stops the run (PolarityAlarm)
    wandb: bool = False  # also log to Weights & Biases (offline) when it is installed
    mc: MCConfig = field(default_factory=lambda: MCConfig(budget=512, max_actions=16))
    base: BaseSection = field(default_factory=BaseSection)
    data: DataSection = field(default_factory=DataSection)
    gistnet: GistSection = field(default_factory=GistSection)
    lensnet: LensSection = field(default_factory=LensSection)
    lora: LoraSection = field(default_factory=LoraSection)
    loss: LossSection = field(default_factory=LossSection)
    phases: PhasesSection = field(default_factory=PhasesSection)

    def check(self, key: str = "") -> None:
        p = f"{key}." if key else ""
        _need(self.seed >= 0, f"{p}seed", self.seed, "must be >= 0")
        _need(self.history >= self.mc.block_size, f"{p}history", self.history,
              f"must be >= mc.block_size = {self.mc.block_size}")
        _need(self.horizon >= 1, f"{p}horizon", self.horizon, "must be >= 1")
        _need(self.cycles >= 0, f"{p}cycles", self.cycles, "must be >= 0")
        _need(self.threads >= 1, f"{p}threads", self.threads, "must be >= 1")
        _need(self.polarity_window >= 1, f"{p}polarity_window", self.polarity_window,
              "must be >= 1")
        _need(self.eval_windows >= 0, f"{p}eval_windows", self.eval_windows, "must be >= 0")


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def config_from_dict(cls, data: dict, prefix: str = "", default=None):
    """Build dataclass `cls` from nested dicts; ConfigError naming the dotted key on an unknown
    key, a mistyped value or a value the section rejects. Omitted keys keep the value of
    `default` (an instance of `cls`; None: `cls()`), so a partial [mc] table overrides only
    what it names."""
    default = cls() if default is None else default
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a table, got {data!r}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            key = f"{prefix}.{k}" if prefix else k
            raise ConfigError(f"{key}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {f.name: getattr(default, f.name) for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        kwargs[f.name] = _value(key, hints[f.name], data[f.name], kwargs[f.name])
    try:
        out = cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{prefix or 'config'}: {e}") from None
    if hasattr(out, "check"):
        out.check(prefix)
    return out


def _value(key: str, typ, v, default):
    if dataclasses.is_dataclass(typ):
        return config_from_dict(typ, v, key, default)
    if typ is bool:
        ok = isinstance(v, bool)
    elif typ is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    elif typ is float:
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        v = float(v) if ok else v
    elif typ is str:
        ok = isinstance(v, str)
    else:
        raise ConfigError(f"{key}: unsupported field type {typ!r}")
    if not ok:
        raise ConfigError(f"{key} = {v!r}: expected {typ.__name__}, got {type(v).__name__}")
    return v


def train_config_from_dict(data: dict) -> TrainConfig:
    """A TrainConfig from nested dicts (the parsed TOML); ConfigError naming the dotted key."""
    return config_from_dict(TrainConfig, data)


def config_to_dict(cfg) -> dict:
    """Nested plain dict of a config dataclass (the resolved config)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = config_to_dict(v) if dataclasses.is_dataclass(v) else v
    return out


def config_sha256(cfg) -> str:
    """sha256 of the resolved config's canonical JSON: two runs share it iff configs agree."""
    text = json.dumps(config_to_dict(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _toml_scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(v)


def dict_to_toml(data: dict, prefix: str = "") -> str:
    """TOML text of a nested dict of scalars (tables after the scalars of each level)."""
    lines = [f"{k} = {_toml_scalar(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}.{k}" if prefix else k
            body = dict_to_toml(v, name)
            lines += ["", f"[{name}]", body] if body else ["", f"[{name}]"]
    return "\n".join(x for x in lines if x is not None).strip("\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def save_train_config(cfg: TrainConfig, path: str | os.PathLike) -> Path:
    return write_text_atomic(path, "# megacontext train: resolved config\n\n"
                             + dict_to_toml(config_to_dict(cfg)) + "\n")


def load_train_config(path: str | os.PathLike) -> TrainConfig:
    """Read a TrainConfig from TOML. ConfigError naming the file on a syntax error, the dotted
    key on an unknown / mistyped / invalid value."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        return config_from_dict(TrainConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
