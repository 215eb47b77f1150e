"""`megacontext report RUN_DIR`: PNG plots of a training run (contract §14).

Reads <RUN_DIR>/metrics.jsonl and config.toml, loads the last phase checkpoint, streams one
validation window through a lens-policy session, and writes into <RUN_DIR>/report/:

    losses.png        every phase's training loss per step
    loss_at_h.png     loss@H per policy after each phase (the run's budget; needs eval_windows)
    loss_vs_budget.png  loss@H of the trained models against budget (1/16 .. 1/2 of the history)
                      per policy (lens, recency, random, window), on the probe window
    lens.png          LensNet score |mean|, std and score/target Spearman per lens step
    swap_residency.png  histograms of actions per refocus (swap rate) and of the age of
                      entries when changed (residency), from the probe session
    scores.png        histogram of the probe session's LensNet scores
    lod_over_time.png the probe WC's level of detail per history block (x) at every refocus
                      (y); colour = level, white = not yet ingested / evicted
Every file is written to a temporary name in the same directory, then renamed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

from ..errors import InputError, MegaContextError


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", help="a `megacontext train` run directory")


def _save(fig, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def report(run_dir: str | os.PathLike) -> list[Path]:
    """Write the plots listed in the module docstring; returns their paths. InputError naming
    the run directory when it has no metrics.jsonl or no checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from ..controller.working_context import as_numpy
    from ..runtime.session import MegaContextSession, policy_nll
    from ..training.cycle import train
    from ..training.text import split_windows
    from ..training.train_config import load_train_config

    run = Path(run_dir)
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise InputError(f"run_dir {run}: no metrics.jsonl (not a train run directory?)")
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    if not (run / "config.toml").is_file() or not any("phase" in r for r in rows):
        raise InputError(f"run_dir {run}: not a `megacontext train` run directory (its "
                         f"metrics.jsonl has no phase records)")
    rows = [r for r in rows if "phase" in r]
    out = run / "report"
    out.mkdir(exist_ok=True)
    written = []

    phases = list(dict.fromkeys(r["phase"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    for ph in phases:
        pts = [(r["step"], r["loss"]) for r in rows if r["phase"] == ph and "loss" in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=".", label=ph)
    ax.set(xlabel="step in phase", ylabel="loss", title="training loss per phase", yscale="log")
    ax.legend(fontsize=7)
    _save(fig, out / "losses.png")
    written.append(out / "losses.png")

    ev = [r for r in rows if any(k.startswith("eval/loss_at_h/") for k in r)]
    fig, ax = plt.subplots(figsize=(8, 4))
    for pol in ("lens", "recency", "random"):
        key = f"eval/loss_at_h/{pol}"
        ax.plot([r["phase"] for r in ev if key in r], [r[key] for r in ev if key in r],
                marker="o", label=pol)
    ax.set(xlabel="after phase", ylabel="loss@H (nats/token)",
           title="loss@H per policy (run budget)" + ("" if ev else ": no eval rows"))
    ax.legend()
    ax.tick_params(axis="x", rotation=45)
    _save(fig, out / "loss_at_h.png")
    written.append(out / "loss_at_h.png")

    lens = [r for r in rows if "spearman" in r]
    fig, ax = plt.subplots(figsize=(8, 4))
    for key in ("score_abs_mean", "score_std", "spearman"):
        ax.plot([r.get(key, float("nan")) for r in lens], label=key)
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xlabel="lens step (all lens phases)", title="LensNet scores and polarity")
    ax.legend()
    _save(fig, out / "lens.png")
    written.append(out / "lens.png")

    cfg = load_train_config(run / "config.toml")
    ckpts = sorted(p for p in (run / "checkpoints").glob("[0-9]*") if p.is_dir())
    if not ckpts:
        raise InputError(f"run_dir {run}: no phase checkpoint under checkpoints/")
    models = train(cfg, None, resume=ckpts[-1]).models
    _, val = split_windows(cfg.data.source, cfg.seed, cfg.data.synthetic_bytes,
                           cfg.data.val_fraction, cfg.history + cfg.horizon)
    ids = val.sample(torch.Generator().manual_seed(99))
    K = cfg.mc.block_size
    s = MegaContextSession(cfg.mc, models.base, models.gistnet, models.lensnet, "lens")
    n_blocks = -(-cfg.history // K)
    image = []
    with torch.no_grad():
        for i in range(0, cfg.history, K):
            s.ingest(ids[i: i + K])
            row = np.full(n_blocks, np.nan)
            lods, starts = as_numpy(s.wc.lods), as_numpy(s.wc.starts)
            for lod, start in zip(lods.tolist(), starts.tolist(), strict=True):
                b0 = start // K
                row[b0: b0 + max(cfg.mc.span(lod) // K, 1)] = lod
            image.append(row)
    budgets = []
    for frac in (16, 8, 4, 2):
        try:
            budgets.append(dataclasses.replace(cfg.mc, budget=max(cfg.history // frac, 1)))
        except MegaContextError:  # a budget that cannot hold the protected tail: not plotted
            continue
    fig, ax = plt.subplots(figsize=(7, 4))
    with torch.no_grad():
        for pol in ("lens", "recency", "random", "window"):
            ys = [policy_nll(mc_cfg, models.base, ids, cfg.history, cfg.horizon, pol,
                             gistnet=models.gistnet, lensnet=models.lensnet, seed=cfg.seed)
                  for mc_cfg in budgets]
            ax.plot([b.budget for b in budgets], ys, marker="o", label=pol)
    ax.set(xscale="log", xlabel="budget (slots)", ylabel="loss@H (nats/token)",
           title=f"loss@H against budget (history {cfg.history}, probe window)")
    ax.legend()
    _save(fig, out / "loss_vs_budget.png")
    written.append(out / "loss_vs_budget.png")
    recs = [r for r in s.records if r.kind == "refocus"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    a1.hist([len(r.actions) for r in recs], bins=20)
    a1.set(xlabel="actions per refocus (per K-token block)", ylabel="refocuses", title="swap rate")
    a2.hist([a for r in recs for a in r.action_ages] or [0], bins=20)
    a2.set(xlabel="age of a changed entry (focus steps)", title="residency")
    _save(fig, out / "swap_residency.png")
    written.append(out / "swap_residency.png")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    scores = torch.cat([r.scores for r in recs if r.scores is not None] or [torch.zeros(1)])
    ax.hist(scores.numpy(), bins=40)
    ax.set(xlabel="LensNet score", ylabel="entries", title="probe session scores")
    _save(fig, out / "scores.png")
    written.append(out / "scores.png")
    fig, ax = plt.subplots(figsize=(8, 5))
    im = ax.imshow(np.array(image), aspect="auto", interpolation="nearest", cmap="viridis",
                   vmin=0, vmax=cfg.mc.max_lod)
    fig.colorbar(im, ax=ax, label="level of detail")
    ax.set(xlabel="history block", ylabel="refocus step", title="LOD map over time")
    _save(fig, out / "lod_over_time.png")
    written.append(out / "lod_over_time.png")
    plt.close("all")
    return written


def run(args) -> int:
    try:
        for p in report(args.run_dir):
            print(p)
    except MegaContextError as e:
        print(f"megacontext report: error: {e}", file=sys.stderr)
        return 2
    return 0
