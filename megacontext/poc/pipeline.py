"""The POC pipeline (contract §16): pretrain -> retrieval -> train -> evaluate -> report,
resumable.

    result = run_poc(cfg, "runs/poc")      # each stage skipped when its artifact matches cfg

Run directory:
    config.toml        the resolved POC config
    stages.json        per finished stage: the sha of the config parts it depends on, its
                       artifact and wall time (s)
    pretrain/          the `megacontext pretrain` run (absent when cfg.base names a base)
    retrieval/         the base after retrieval tuning ([retrieval]; absent when switched off):
                       the base every later stage uses
    train/             the `megacontext train` run (config.toml, metrics.jsonl, checkpoints/)
    train-causal/      the same run with `[lensnet].causal = true` (eval.causal_lensnet)
    eval/cells.json    one entry per measured cell (resume: measured cells are not redone)
    eval/summary.json  the numbers the report is written from
    report.md, *.png   the report (regenerated from eval/summary.json every run)

A stage whose record in stages.json was made with another config raises ConfigError naming
the stage (use another run directory); an interrupted stage resumes (pretrain from its last
checkpoint, train from its last phase checkpoint, evaluate from cells.json).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..device import HOST, resolve_device
from ..errors import ConfigError
from ..runtime.loading import write_text_atomic
from .config import PocConfig, poc_config_to_dict, poc_config_toml, section_sha
from .evaluation import (
    Systems,
    eval_items,
    heldout_windows,
    long_range_task,
    measure,
    measure_latency,
    summarize,
)

STAGES = ("pretrain", "retrieval", "train", "train_causal", "evaluate")


class Stages:
    """stages.json: {stage: {"sha": ..., "artifact": ..., "seconds": ...}}, written atomically."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "stages.json"
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def done(self, stage: str, sha: str) -> dict | None:
        rec = self.data.get(stage)
        if rec is None:
            return None
        if rec["sha"] != sha:
            raise ConfigError(f"{self.path}: stage {stage!r} was made with another config "
                              f"(sha {rec['sha']}, now {sha}); use another --out")
        return rec

    def mark(self, stage: str, sha: str, artifact: str, seconds: float, **extra) -> None:
        self.data[stage] = {"sha": sha, "artifact": artifact, "seconds": seconds, **extra}
        write_text_atomic(self.path, json.dumps(self.data, indent=1))


def _log(msg: str, out) -> None:
    print(f"[poc] {msg}", file=out, flush=True)


# --- stage 1: the base ----------------------------------------------------------------------


def stage_pretrain(cfg: PocConfig, run_dir: Path, stages: Stages, progress: bool, out,
                   device: torch.device = HOST) -> str:
    """The base checkpoint directory: cfg.base as given, or the [pretrain] run (on `device`)."""
    if cfg.base:
        if not Path(cfg.base).exists():
            raise ConfigError(f"base = {cfg.base!r}: no such directory")
        return cfg.base
    from ..training.pretrain import CHECKPOINT_DIR, CONFIG_FILE, PretrainConfig, pretrain

    sha = section_sha(cfg.pretrain.to_dict(), cfg.pretrain_minutes)
    rec = stages.done("pretrain", sha)
    pdir = run_dir / "pretrain"
    if rec is not None:
        _log(f"pretrain: done ({rec['artifact']}, val_nll {rec.get('val_nll')})", out)
        return rec["artifact"]
    resume = (pdir / CHECKPOINT_DIR / "manifest.json").is_file() or (
        pdir / f".{CHECKPOINT_DIR}.previous" / "manifest.json").is_file()
    pcfg = cfg.pretrain
    if resume:  # a --minutes run resolved its step count into its config.toml
        saved = PretrainConfig.from_toml(pdir / CONFIG_FILE)
        pcfg = dataclasses.replace(pcfg, train=dataclasses.replace(
            pcfg.train, steps=saved.train.steps))
        if pcfg.to_dict() != saved.to_dict():
            raise ConfigError(f"{pdir / CONFIG_FILE}: a pretrain run of another config than "
                              f"[pretrain]; use another --out")
    if resume:
        from ..training.checkpoint import read_manifest

        man = read_manifest(pdir / CHECKPOINT_DIR)
        if str(man.get("stopped") or "").startswith("time budget") or \
                man.get("step") == saved.train.steps:
            # a time-budgeted run that spent its budget (or ran all its steps) is finished
            stages.mark("pretrain", sha, str(pdir), float(man["metrics"].get("elapsed_s", 0)),
                        val_nll=man["metrics"].get("val_nll"), step=man.get("step"))
            _log(f"pretrain: finished run found in {pdir} (step {man.get('step')}, "
                 f"{man.get('stopped') or 'all steps'})", out)
            return str(pdir)
    _log(f"pretrain: {'resuming' if resume else 'starting'} in {pdir}", out)
    summary = pretrain(pcfg, pdir, resume=resume,
                       minutes=(cfg.pretrain_minutes or None) if not resume else None,
                       progress=progress, out=out, device=device)
    stages.mark("pretrain", sha, str(pdir), float(summary["elapsed_s"]),
                val_nll=summary["val_nll"], step=summary["step"], device=str(device))
    return str(pdir)


# --- stage 2: retrieval tuning -------------------------------------------------------------


def stage_retrieval(cfg: PocConfig, base_dir: str, run_dir: Path, stages: Stages,
                    progress: bool, out, device: torch.device = HOST) -> str:
    """The tuned base's directory (run_dir/retrieval, tuned on `device`), or `base_dir` when
    switched off."""
    from ..training.config_io import config_to_dict
    from ..training.retrieval import retrieval_finished, retrieval_tune

    if not cfg.retrieval.enabled:
        return base_dir
    sha = section_sha(config_to_dict(cfg.retrieval), cfg.pretrain.data.sources,
                      cfg.pretrain.data.val_fraction,
                      stages.data.get("pretrain", {}).get("sha", base_dir))
    rec = stages.done("retrieval", sha)
    if rec is not None:
        _log(f"retrieval: done ({rec['artifact']}, answer NLL {rec.get('answer_nll')})", out)
        return rec["artifact"]
    rdir = run_dir / "retrieval"
    resume = (rdir / "checkpoint" / "manifest.json").is_file()
    t0 = time.perf_counter()
    if resume and retrieval_finished(rdir):
        from ..training.checkpoint import read_manifest

        man = read_manifest(rdir / "checkpoint")
        summary = {"answer_nll": man["metrics"].get("answer_nll"), "step": man["step"],
                   "long_from": man["long_from"], "elapsed_s": man.get("elapsed_s", 0.0)}
    else:
        _log(f"retrieval: {'resuming' if resume else 'starting'} in {rdir}", out)
        summary = retrieval_tune(cfg.retrieval, base_dir, rdir, resume=resume,
                                 sources=cfg.pretrain.data.sources,
                                 val_fraction=cfg.pretrain.data.val_fraction,
                                 progress=progress, out=out, device=device)
    stages.mark("retrieval", sha, str(rdir), float(summary.get("elapsed_s") or
                                                   time.perf_counter() - t0),
                answer_nll=summary["answer_nll"], step=summary["step"],
                long_from=summary["long_from"], device=str(device))
    return str(rdir)


# --- stage 3: the cycles ------------------------------------------------------------------


def train_config(cfg: PocConfig, base_dir: str, causal: bool = False):
    """The trainer config of the POC's run on `base_dir` (`causal`: with a CausalLensNet)."""
    lensnet = dataclasses.replace(cfg.train.lensnet, causal=causal or cfg.train.lensnet.causal)
    return dataclasses.replace(cfg.train, lensnet=lensnet, base=dataclasses.replace(
        cfg.train.base, checkpoint=base_dir))


def stage_train(cfg: PocConfig, base_dir: str, run_dir: Path, stages: Stages, progress: bool,
                out, causal: bool = False, device: torch.device = HOST) -> str:
    """The last phase checkpoint of the trainer run on `base_dir` (stage "train" in train/,
    or with `causal` stage "train_causal" in train-causal/)."""
    from ..training.cycle import train
    from ..training.train_config import config_sha256

    stage, tdir = ("train_causal", run_dir / "train-causal") if causal else (
        "train", run_dir / "train")
    tcfg = train_config(cfg, base_dir, causal)
    sha = section_sha(config_sha256(tcfg), stages.data.get("pretrain", {}).get("sha"),
                      *([stages.data["retrieval"]["sha"]] if "retrieval" in stages.data else []))
    rec = stages.done(stage, sha)
    if rec is not None:
        _log(f"{stage}: done ({rec['artifact']})", out)
        return rec["artifact"]
    ckpts = sorted(p for p in (tdir / "checkpoints").glob("*") if (p / "manifest.json").is_file())
    resume = str(ckpts[-1]) if ckpts else None
    _log(f"{stage}: {'resuming after ' + resume if resume else 'starting'} in {tdir}", out)
    t0 = time.perf_counter()
    result = train(tcfg, tdir, resume=resume, progress=progress, device=device)
    for p in result.phases:
        m = {k: round(v, 4) for k, v in p.metrics.items() if isinstance(v, float)}
        _log(f"{stage}: {p.phase.label}: {p.steps} steps {json.dumps(m)}", out)
    ckpts = sorted(p for p in (tdir / "checkpoints").glob("*") if (p / "manifest.json").is_file())
    stages.mark(stage, sha, str(ckpts[-1]), time.perf_counter() - t0, device=str(device))
    return str(ckpts[-1])


# --- stage 4: evaluation -----------------------------------------------------------------


def load_systems(cfg: PocConfig, base_dir: str, checkpoint: str,
                 causal_checkpoint: str | None = None, device: torch.device = HOST) -> Systems:
    """Trained modules from `checkpoint` (and the causal run's from `causal_checkpoint`) and
    their seeded initialisations (build_models), all on `device` (the runtime's trees stay on
    the host)."""
    from ..training.cycle import MODULES, build_models
    from ..training.phase_store import load_phase_checkpoint
    from ..training.text import split_windows

    tcfg = train_config(cfg, base_dir)
    tw, _ = split_windows(tcfg.data.source, tcfg.seed, tcfg.data.synthetic_bytes,
                          tcfg.data.val_fraction, tcfg.history + tcfg.horizon)

    def trained(tc, path):
        models = build_models(tc, tw, device)
        tensors, _ = load_phase_checkpoint(path)
        for name in MODULES:
            models.load_state(name, tensors[name])
        return models.base.eval(), models.gistnet.eval(), models.lensnet.eval()

    init = build_models(tcfg, tw, device)
    causal = (trained(train_config(cfg, base_dir, causal=True), causal_checkpoint)
              if causal_checkpoint else None)
    return Systems(*trained(tcfg, checkpoint), init.base.eval(), init.gistnet.eval(),
                   init.lensnet.eval(), causal)


def stage_evaluate(cfg: PocConfig, base_dir: str, checkpoint: str, run_dir: Path,
                   stages: Stages, progress: bool, out, causal_checkpoint: str | None = None,
                   device: torch.device = HOST) -> dict:
    sha = section_sha(poc_config_to_dict(cfg)["eval"], stages.data.get("train", {}).get("sha"),
                      *([stages.data["train_causal"]["sha"]] if causal_checkpoint else []))
    edir = run_dir / "eval"
    rec = stages.done("evaluate", sha)
    if rec is not None:
        _log(f"evaluate: done ({rec['artifact']})", out)
        return json.loads(Path(rec["artifact"]).read_text())
    t0 = time.perf_counter()
    torch.set_num_threads(cfg.train.threads)
    systems = load_systems(cfg, base_dir, checkpoint, causal_checkpoint, device)
    T, H = cfg.train.history, cfg.train.horizon
    data = {"coding": heldout_windows("stdlib", cfg.eval.coding_windows, T + H,
                                      cfg.pretrain.data.val_fraction),
            "prose": heldout_windows("pydoc", cfg.eval.prose_windows, T + H,
                                     cfg.pretrain.data.val_fraction)}
    task = long_range_task(cfg)
    examples = [task.example(i) for i in range(cfg.eval.long_range_examples)]
    data["long_range"] = [{"name": f"long_range/{i}",
                           "ids": torch.tensor(list(ex.text), device=HOST),
                           "record": ex.record_value,
                           "others": tuple(v for k, v in enumerate(ex.record_values)
                                           if k != ex.queried)}
                          for i, ex in enumerate(examples)]
    items = eval_items(cfg)
    cells_path = edir / "cells.json"
    cells_sha = section_sha(sha, "cells", str(device))  # cells of two devices never mix
    cells = {}
    if cells_path.is_file():
        saved = json.loads(cells_path.read_text())
        if saved.get("sha") == cells_sha:
            cells = saved["cells"]
    todo = [it for it in items if it["key"] not in cells]
    _log(f"evaluate: {len(items)} cells ({len(items) - len(todo)} already measured)", out)
    bar = tqdm(todo, desc="evaluate", disable=not progress, file=sys.stderr, unit="cell")
    last_save = time.perf_counter()
    for it in bar:
        bar.set_postfix_str(it["key"])
        example = data[it["corpus"]][it["window"]]
        cells[it["key"]] = measure(it, systems, example["ids"], cfg,
                                   record=example.get("record"),
                                   others=example.get("others", ()))
        if time.perf_counter() - last_save > 20:
            write_text_atomic(cells_path, json.dumps({"sha": cells_sha, "cells": cells}))
            last_save = time.perf_counter()
    write_text_atomic(cells_path, json.dumps({"sha": cells_sha, "cells": cells}))
    from .config import parse_budget

    work = parse_budget(cfg.eval.working_budget, T, "eval.working_budget")
    first = (data["coding"] or data["prose"])[0]["ids"]
    latency = measure_latency(systems, first, cfg, work)
    meta = {"base": base_dir, "checkpoint": checkpoint, "causal_checkpoint": causal_checkpoint,
            "files": {k: sorted({w["name"] for w in v}) for k, v in data.items()
                      if k != "long_range"},
            "long_range": {"examples": len(examples), "n_records": cfg.eval.n_records,
                           "plant_within": cfg.eval.plant_within, "value_len": 8,
                           "key_len": cfg.eval.key_len},
            "stages": {k: {kk: vv for kk, vv in v.items() if kk != "sha"}
                       for k, v in stages.data.items()},
            "latency": latency, "threads": torch.get_num_threads(), "device": str(device)}
    summary = summarize(items, cells, cfg, meta)
    path = write_text_atomic(edir / "summary.json", json.dumps(summary, indent=1))
    stages.mark("evaluate", sha, str(path), time.perf_counter() - t0)
    summary["meta"]["stages"]["evaluate"] = {"seconds": time.perf_counter() - t0}
    write_text_atomic(edir / "summary.json", json.dumps(summary, indent=1))
    return summary


# --- the whole study ----------------------------------------------------------------------


def run_poc(cfg: PocConfig, run_dir: str | Path, progress: bool = True, out=None,
            device: str | torch.device = "cpu") -> Path:
    """Run every stage not yet done; write report.md + PNGs. Returns the report's path.

    device (`resolve_device`; InputError for one this machine lacks): where every stage's
    models train and run (the runtime's trees and the controller stay on the host; contract
    §13.4). "auto" = CUDA when present (the CLI's default). The device is not part of
    a stage's config: a run may resume on another device."""
    from .report import write_report

    device = resolve_device(device)
    out = out or sys.stdout
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.toml", poc_config_toml(cfg))
    stages = Stages(run_dir)
    t0 = time.perf_counter()
    _log(f"device: {device}", out)
    base_dir = stage_pretrain(cfg, run_dir, stages, progress, out, device)
    base_dir = stage_retrieval(cfg, base_dir, run_dir, stages, progress, out, device)
    checkpoint = stage_train(cfg, base_dir, run_dir, stages, progress, out, device=device)
    causal = (stage_train(cfg, base_dir, run_dir, stages, progress, out, causal=True,
                          device=device)
              if cfg.eval.causal_lensnet else None)
    summary = stage_evaluate(cfg, base_dir, checkpoint, run_dir, stages, progress, out, causal,
                             device)
    report = write_report(summary, run_dir)
    _log(f"report: {report} ({time.perf_counter() - t0:.1f} s this invocation)", out)
    return report
