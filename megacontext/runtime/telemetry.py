"""Run telemetry (contract §14): one JSONL line per refocus, Parquet action traces beside it.

    tel = RunTelemetry(run_dir, run_id, policy, cfg)
    tel.refocus(record)                       # after every session refocus
    tel.evaluation(T, loss_at_h, labels, scores)   # when loss@H (and labels) are measured
    tel.close()                               # actions.parquet (atomic) + a summary line

`metrics.jsonl` lines carry `"event"`: "refocus", "eval" or "summary". Metric names (§14):
    loss_at_h                  nats/token, mean NLL of the next H tokens given the WC
    swap_rate                  actions per completed K-token block (refocus events: this step's
                               actions; summary: all actions / all blocks)
    mean_residency             mean age (focus steps) of the entries changed by the actions
    latency_ms/{gather,lens,allocator,base}
    token_budget_utilization   N / W_max after the step
    entries_per_lod            list, index = lod
    score_abs_mean, score_std  of the scores the allocator saw
    tokens_per_step            tokens ingested since the previous refocus event
    lod_loss/l                 eval with labels: lod_loss/0 = loss@H of the snapshot; for l >= 1
                               the mean loss@H of the measured variants that collapse a group
                               into an LOD-l gist (seed 002)
    lod_delta/l                lod_loss/l - lod_loss/0: the mean ΔNLL of replacing K LOD-(l-1)
                               entries with their LOD-l gist
    adv_delta_{mean,p95,std}   over every measured variant's ΔNLL
    pearson, spearman          of the policy's scores vs the ΔNLL targets of §6 (price 0),
                               where scores exist (lens, oracle): the polarity alarm of seed 000
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from ..controller.config import MCConfig
from ..supervision.lens_targets import lens_targets_from_utilities
from ..supervision.telemetry import pearson_corr, spearman_corr
from .labels import COLLAPSE, SnapshotLabels
from .session import RefocusRecord
from .tables import now_utc, write_table_atomic

ACTION_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("step", pa.int64()), ("T", pa.int64()), ("kind", pa.string()),
    ("action", pa.string()), ("lod", pa.int64()), ("start", pa.int64()),
    ("policy", pa.string()),
])


def _num(x):
    """JSON-safe number: NaN/inf become null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def label_metrics(labels: SnapshotLabels, cfg: MCConfig,
                  scores: torch.Tensor | None = None) -> dict:
    """lod_loss/l, lod_delta/l, adv_delta_* and (with scores) pearson/spearman for one
    labelled snapshot. Scores [N] must be the policy's scores on `labels.wc`."""
    out: dict = {"lod_loss/0": labels.base_nll}
    d = labels.delta_nll.numpy()
    if d.size:
        out["adv_delta_mean"] = float(d.mean())
        out["adv_delta_p95"] = float(np.quantile(d, 0.95))
        out["adv_delta_std"] = float(d.std())
    for lod in range(1, cfg.max_lod + 1):
        sel = [i for i, c in enumerate(labels.candidates)
               if c.kind == COLLAPSE and c.lod == lod - 1]
        if sel:
            delta = float(d[sel].mean())
            out[f"lod_delta/{lod}"] = delta
            out[f"lod_loss/{lod}"] = labels.base_nll + delta
    if scores is not None:
        targets, mask = lens_targets_from_utilities(labels.wc, labels.expand_gain,
                                                    labels.collapse_loss, labels.T, cfg, 0.0)
        out["pearson"] = float(pearson_corr(scores.float(), targets.float(), mask))
        out["spearman"] = float(spearman_corr(scores.float(), targets.float(), mask))
    return out


class RunTelemetry:
    """JSONL metrics (flushed per line) and Parquet action traces of one run. The run owns its
    directory's metrics.jsonl: it is started afresh, like actions.parquet, so a repeated run
    never mixes its lines with an earlier run's."""

    def __init__(self, run_dir: str | Path, run_id: str, policy: str, cfg: MCConfig):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run_id, self.policy, self.cfg = run_id, policy, cfg
        self._jsonl = open(self.dir / "metrics.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        self._actions: list[dict] = []
        self._last_T = 0
        self.n_actions = self.n_blocks = 0
        self.ages: list[int] = []
        self.latency = {"gather": 0.0, "lens": 0.0, "allocator": 0.0, "base": 0.0}
        self.n_records = 0
        self.losses: list[float] = []
        self.utilization: list[float] = []

    def write(self, event: str, metrics: dict) -> dict:
        line = {"event": event, "run_id": self.run_id, "policy": self.policy,
                "time": now_utc(), **{k: (_num(v) if isinstance(v, float) else v)
                                      for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(line) + "\n")
        self._jsonl.flush()
        return line

    def refocus(self, rec: RefocusRecord) -> dict:
        blocks = 1 if rec.kind == "refocus" else 0
        self.n_actions += len(rec.actions)
        self.n_blocks += blocks
        self.ages += rec.action_ages
        for k in self.latency:
            self.latency[k] += getattr(rec, f"{k}_ms")
        self.n_records += 1
        util = rec.N / self.cfg.budget
        self.utilization.append(util)
        for a in rec.actions:
            self._actions.append({"run_id": self.run_id, "step": rec.step, "T": rec.T,
                                  "kind": rec.kind, "action": a.kind, "lod": a.lod,
                                  "start": a.start, "policy": self.policy})
        m = {
            "step": rec.step, "kind": rec.kind, "T": rec.T, "N": rec.N,
            "actions": len(rec.actions),
            "swap_rate": float(len(rec.actions)) if blocks else None,
            "mean_residency": float(np.mean(rec.action_ages)) if rec.action_ages else None,
            "token_budget_utilization": util, "entries_per_lod": rec.entries_per_lod,
            "score_abs_mean": rec.score_abs_mean, "score_std": rec.score_std,
            "tokens_per_step": rec.T - self._last_T,
            **{f"latency_ms/{k}": getattr(rec, f"{k}_ms") for k in self.latency},
        }
        self._last_T = rec.T
        return self.write("refocus", m)

    def evaluation(self, T: int, loss_at_h: float | None, labels: SnapshotLabels | None = None,
                   scores: torch.Tensor | None = None) -> dict:
        m: dict = {"T": T, "loss_at_h": loss_at_h}
        if loss_at_h is not None:
            self.losses.append(loss_at_h)
        if labels is not None:
            m.update(label_metrics(labels, self.cfg, scores))
        return self.write("eval", m)

    def summary(self) -> dict:
        n = max(self.n_records, 1)
        return {
            "refocus_steps": self.n_blocks, "records": self.n_records,
            "actions": self.n_actions,
            "swap_rate": self.n_actions / self.n_blocks if self.n_blocks else None,
            "mean_residency": float(np.mean(self.ages)) if self.ages else None,
            "loss_at_h": float(np.mean(self.losses)) if self.losses else None,
            "token_budget_utilization": float(np.mean(self.utilization))
            if self.utilization else None,
            **{f"latency_ms/{k}": v / n for k, v in self.latency.items()},
        }

    def close(self) -> dict:
        """Write actions.parquet (atomically) and the summary line; returns the summary."""
        cols = {f.name: [a[f.name] for a in self._actions] for f in ACTION_SCHEMA}
        write_table_atomic(pa.Table.from_pydict(cols, schema=ACTION_SCHEMA),
                           self.dir / "actions.parquet")
        s = self.summary()
        self.write("summary", s)
        self._jsonl.close()
        return s
