"""The proof-of-concept config (contract §16): one TOML file for the whole study.

    cfg = load_poc_config("configs/poc.toml")   # unknown or mistyped key -> ConfigError naming it
    cfg = small_config()                         # the CI-sized study (tiny seeded models)

Top-level keys:
    base              a `megacontext pretrain` run (or checkpoint) directory to reuse; "" runs
                      the [pretrain] section into <run dir>/pretrain
    pretrain_minutes  time budget of that pretraining (0: run [pretrain.train].steps steps)
Sections:
    [pretrain.*]      a `PretrainConfig` (model, data, train); its data.context must hold
                      train.history + train.horizon bytes (the base is then in distribution
                      for a full-context read of the history)
    [train.*]         a trainer `TrainConfig` (contract §13); base.checkpoint is set by the
                      pipeline to the base of the previous stage
    [eval]            `EvalSection` below
    [retrieval]       a `RetrievalConfig` (megacontext.training.retrieval): the base is tuned to
                      look keys up far back before training (all steps 0: skipped)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..errors import ConfigError
from ..training.config_io import config_from_dict
from ..training.config_io import config_to_dict as _cfg_dict
from ..training.pretrain import PretrainConfig
from ..training.retrieval import RetrievalConfig
from ..training.train_config import (
    TrainConfig,
    config_to_dict,
    dict_to_toml,
    train_config_from_dict,
)

LONG_RANGE_VALUE_LEN = 8  # bytes per long-range answer in the evaluation


@dataclass(frozen=True)
class EvalSection:
    """What the evaluation stage measures (contract §16). Budgets are fractions of the history
    ("1/8") or slot counts ("128"); `working_budget` is the one the criteria are judged at."""

    seed: int = 0
    coding_windows: int = 12  # held-out stdlib windows of history + horizon bytes
    prose_windows: int = 6  # held-out pydoc windows
    budgets: tuple[str, ...] = ("1/16", "1/8", "1/4", "1/2")
    working_budget: str = "1/8"
    oracle_windows: int = 2  # the oracle is slow: scored on this many windows only
    long_range_examples: int = 12
    n_records: int = 4  # key -> value records planted per long-range example
    plant_within: float = 0.25  # records lie in this leading fraction of the history
    latency_blocks: int = 8  # K-blocks timed for the latency measurement
    key_len: int = 2  # bytes per long-range key (A-Z0-9); values are 8 bytes
    # train a second system whose LensNet is causal ([lensnet].causal, train-causal/) and
    # report the seed's causal-vs-non-causal comparison; false skips that run and its cells
    causal_lensnet: bool = True

    def check(self, history: int) -> None:
        for k in ("coding_windows", "prose_windows", "oracle_windows", "long_range_examples",
                  "n_records", "latency_blocks", "key_len"):
            v = getattr(self, k)
            lo = 1 if k in ("n_records", "latency_blocks", "key_len") else 0
            if v < lo:
                raise ConfigError(f"eval.{k} = {v!r}: must be >= {lo}")
        if self.coding_windows + self.prose_windows < 1:
            raise ConfigError("eval.coding_windows + eval.prose_windows must be >= 1")
        if not self.budgets:
            raise ConfigError("eval.budgets must not be empty")
        for b in self.budgets:
            parse_budget(b, history, "eval.budgets")
        parse_budget(self.working_budget, history, "eval.working_budget")
        if not 0.0 < self.plant_within <= 1.0:
            raise ConfigError(f"eval.plant_within = {self.plant_within!r}: must be in (0, 1]")


def parse_budget(text: str, history: int, key: str) -> int:
    """Slots of a budget written as a fraction of the history ("1/8") or a count ("128")."""
    try:
        v = Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"{key}: {text!r} is not a slot count or a fraction") from None
    slots = int(v * history) if v.denominator != 1 or v < 1 else int(v)
    if slots < 1:
        raise ConfigError(f"{key}: {text!r} gives {slots} slots of a {history}-byte history")
    return slots


def _default_pretrain() -> PretrainConfig:
    # two threads: the study runs alone, and a 4 x 1,088-byte step measured 1.6x faster with
    # two than with one on an idle 2-core machine (one thread wins only under heavy load)
    c = PretrainConfig()
    return dataclasses.replace(c, data=dataclasses.replace(c.data, context=1088, val_windows=16),
                               train=dataclasses.replace(c.train, batch_size=4, evals=6,
                                                         threads=2))


def _default_train() -> TrainConfig:
    c = TrainConfig()
    return dataclasses.replace(
        c, history=1024, horizon=64,
        mc=dataclasses.replace(c.mc, budget=128, recent_tokens=64, expand_threshold=0.01,
                              collapse_threshold=0.5),
        base=dataclasses.replace(c.base, checkpoint=""),
        # half the training windows are long-range examples (the answer opens the horizon), so
        # the labels show which early record is worth expanding; more snapshots per label pool
        data=dataclasses.replace(c.data, long_range_fraction=0.5, long_range_key_len=2),
        phases=dataclasses.replace(
            c.phases,
            warm_lens=dataclasses.replace(c.phases.warm_lens, steps=80, snapshots=48),
            b2=dataclasses.replace(c.phases.b2, snapshots=24)),
        loss=dataclasses.replace(c.loss, lens=dataclasses.replace(c.loss.lens,
                                                                  target_scale=0.05)))


@dataclass(frozen=True)
class PocConfig:
    """The study. Defaults: a 1,024-byte history + H = 64 (the base pretrained on 1,088-byte
    windows for 12 minutes, then retrieval-tuned), budget 128 slots (1/8) in training, the
    calibrated LensNet target scale (0.05), expand threshold (0.01) and collapse threshold
    (0.5); omitted keys of a TOML file take these."""

    base: str = ""
    pretrain_minutes: float = 12.0
    pretrain: PretrainConfig = field(default_factory=_default_pretrain)
    train: TrainConfig = field(default_factory=_default_train)
    eval: EvalSection = field(default_factory=EvalSection)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)

    def check(self) -> None:
        # the long-range records of retrieval tuning, training and evaluation are one task
        e, d, r = self.eval, self.train.data, self.retrieval
        if r.enabled and (r.key_len, r.value_len) != (e.key_len, LONG_RANGE_VALUE_LEN):
            raise ConfigError(f"retrieval.key_len = {r.key_len}, retrieval.value_len = "
                              f"{r.value_len}: must equal eval.key_len = {e.key_len} and the "
                              f"evaluation's value length {LONG_RANGE_VALUE_LEN}")
        if d.long_range_fraction and (d.long_range_key_len, d.long_range_value_len) != (
                e.key_len, LONG_RANGE_VALUE_LEN):
            raise ConfigError(f"train.data.long_range_key_len = {d.long_range_key_len}, "
                              f"long_range_value_len = {d.long_range_value_len}: must equal "
                              f"eval.key_len = {e.key_len} and {LONG_RANGE_VALUE_LEN}")
        if self.pretrain_minutes < 0:
            raise ConfigError(f"pretrain_minutes = {self.pretrain_minutes!r}: must be >= 0")
        need = self.train.history + self.train.horizon
        if not self.base and self.pretrain.data.context < need:
            raise ConfigError(
                f"pretrain.data.context = {self.pretrain.data.context}: must be >= "
                f"train.history + train.horizon = {need} (a base read beyond its training "
                f"context is out of distribution, and full context is the reference)")
        self.eval.check(self.train.history)
        for b in self.eval.budgets + (self.eval.working_budget,):
            slots = parse_budget(b, self.train.history, "eval.budgets")
            try:
                dataclasses.replace(self.train.mc, budget=slots)
            except ConfigError as e:
                raise ConfigError(f"eval budget {b!r} ({slots} slots): {e}") from None


def poc_config_to_dict(cfg: PocConfig) -> dict:
    return {"base": cfg.base, "pretrain_minutes": cfg.pretrain_minutes,
            "pretrain": cfg.pretrain.to_dict(), "train": config_to_dict(cfg.train),
            "eval": _cfg_dict(cfg.eval), "retrieval": _cfg_dict(cfg.retrieval)}


def poc_config_from_dict(data: dict) -> PocConfig:
    """Raises ConfigError naming the dotted key for unknown or mistyped keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"a POC config must be a table, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(PocConfig)}
    for k in data:
        if k not in known:
            raise ConfigError(f"unknown config key {k!r} (known: {', '.join(sorted(known))})")
    base = data.get("base", "")
    if not isinstance(base, str):
        raise ConfigError(f"config key 'base' must be a str, got {base!r}")
    minutes = data.get("pretrain_minutes", PocConfig.pretrain_minutes)
    if isinstance(minutes, bool) or not isinstance(minutes, int | float):
        raise ConfigError(f"config key 'pretrain_minutes' must be a number, got {minutes!r}")
    default = PocConfig()
    try:
        pre = PretrainConfig.from_dict(_merge(default.pretrain.to_dict(),
                                              data.get("pretrain", {})))
    except ConfigError as e:
        raise ConfigError(f"[pretrain] {e}") from None
    try:
        train = train_config_from_dict(_merge(config_to_dict(default.train),
                                              data.get("train", {})))
    except ConfigError as e:
        raise ConfigError(f"[train] {e}") from None
    ev = config_from_dict(EvalSection, data.get("eval", {}), "eval.")
    ret = config_from_dict(RetrievalConfig, data.get("retrieval", {}), "retrieval.")
    cfg = PocConfig(base=base, pretrain_minutes=float(minutes), pretrain=pre, train=train,
                    eval=ev, retrieval=ret)
    cfg.check()
    return cfg


def _merge(default: dict, data) -> dict:
    """`data` over `default`, table by table (a non-table `data` is left for the checks)."""
    if not isinstance(data, dict):
        return data
    out = dict(default)
    for k, v in data.items():
        out[k] = _merge(default[k], v) if isinstance(default.get(k), dict) else v
    return out


def load_poc_config(path: str | Path) -> PocConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {str(p)!r}: no such file")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {str(p)!r}: not valid TOML ({e})") from None
    return poc_config_from_dict(data)


def poc_config_toml(cfg: PocConfig) -> str:
    return dict_to_toml(poc_config_to_dict(cfg))


def section_sha(*parts) -> str:
    """sha256 (16 hex digits) of JSON-able parts: what a stage's artifact is stamped with."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def small_config() -> PocConfig:
    """The CI-sized study: a 1-layer 32-wide base pretrained for 30 steps on 160-byte windows,
    6 steps of retrieval tuning, a 128-byte history with K = 8, one cycle of a few steps, a
    handful of eval windows."""
    d = {
        "pretrain_minutes": 0.0,
        "pretrain": {"model": {"n_layer": 1, "n_head": 2, "n_embd": 32},
                     "data": {"context": 160, "val_windows": 4},
                     "train": {"steps": 30, "batch_size": 4, "warmup_steps": 3, "evals": 1,
                               "dtype": "float32"}},
        "train": {"history": 128, "horizon": 16, "cycles": 1, "eval_windows": 0,
                  "mc": {"block_size": 8, "budget": 48, "recent_tokens": 16,
                         "max_actions": 8},
                  "gistnet": {"n_heads": 2}, "lensnet": {"width": 16, "n_heads": 2},
                  "lora": {"rank": 4, "n_blocks": 1},
                  "loss": {"spans_per_snapshot": 2, "max_candidates": 16, "n_variants": 4},
                  "phases": {p: {"steps": 2, "batch": 1, "snapshots": 2, "warmup": 1}
                             for p in ("warm_gist", "warm_lens", "b1", "b2", "b3")}},
        "eval": {"coding_windows": 2, "prose_windows": 1, "budgets": ["1/4", "1/2"],
                 "working_budget": "1/4", "oracle_windows": 1, "long_range_examples": 2,
                 "n_records": 2, "latency_blocks": 2},
        "retrieval": {"copy_steps": 2, "copy_length": 16, "text_batch": 0,
                      "short_steps": 4, "short_length": 80, "short_batch": 2, "window": 2,
                      "long_steps": 2, "long_batch": 1, "n_records": 2, "n_queries": 2,
                      "checkpoint_every": 2, "dtype": "float32"},
    }
    return poc_config_from_dict(d)
