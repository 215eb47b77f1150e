"""`megacontext label`: counterfactual ΔNLL label tables for LensNet (contract §12).

Streams each FILE through a session under `--policy` (the deployment distribution: labels are
taken on the WCs that policy produces) and, every `--stride` tokens after `--warmup`, labels
the snapshot: every legal expand/collapse (up to `--max-candidates`, beyond that a seeded
sample), ΔNLL over the next `--horizon` tokens. One Parquet part per snapshot under
OUT/snapshots and OUT/labels, written atomically; rerunning the same command skips the
snapshots already written (resume), so a crash loses at most the snapshot in flight.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..cli import positive_int, seed_type
from ..controller.config import MCConfig
from ..controller.legality import legal_actions
from ..errors import InputError, MegaContextError
from ..runtime.labels import label_snapshot
from ..runtime.loading import load_base, read_ids, write_text_atomic
from ..runtime.session import MegaContextSession
from ..runtime.tables import is_labeled, write_snapshot_labels


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", metavar="FILE", nargs="+", help="text (any bytes) files")
    p.add_argument("--out", metavar="DIR", required=True, help="label directory")
    p.add_argument("--policy", choices=("window", "recency", "random"), default="recency",
                   help="the policy whose WCs are labelled")
    p.add_argument("--budget", type=positive_int, default=512)
    p.add_argument("--base", metavar="CKPT", help="pretrained base; default random-init")
    p.add_argument("--block-size", type=positive_int, default=32)
    p.add_argument("--max-lod", type=positive_int, default=2)
    p.add_argument("--recent-tokens", type=int, default=64)
    p.add_argument("--horizon", type=positive_int, default=64)
    p.add_argument("--warmup", type=positive_int, default=1024, help="first snapshot at T")
    p.add_argument("--stride", type=positive_int, default=512, help="tokens between snapshots")
    p.add_argument("--max-candidates", type=positive_int, default=64)
    p.add_argument("--batch-size", type=positive_int, default=32, help="variants per forward")
    p.add_argument("--seed", type=seed_type, default=0)
    p.add_argument("--threads", type=positive_int, help="torch threads")
    p.add_argument("--run-id", help="default: the output directory's name")
    p.add_argument("--no-progress", action="store_true")


def snapshot_plan(lengths: list[int], warmup: int, stride: int, H: int):
    """[(file index, T)] of every snapshot, in order; its position in the list is its id."""
    return [(f, T) for f, n in enumerate(lengths) for T in range(warmup, n - H + 1, stride)]


def run(args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    try:
        return _run(args, out)
    except MegaContextError as e:
        print(f"megacontext label: error: {e}", file=sys.stderr)
        return 2


SETTINGS_FILE = "settings.json"


def check_settings(args, base_sha: str) -> None:
    """A label directory records what its snapshots were made with (settings.json, written
    atomically before the first part); resuming it with other settings is an InputError naming
    each differing one, so labels of two setups are never mixed under one directory."""
    settings = {"files": [str(f) for f in args.files], "policy": args.policy,
                "budget": args.budget, "block_size": args.block_size, "max_lod": args.max_lod,
                "recent_tokens": args.recent_tokens, "horizon": args.horizon,
                "warmup": args.warmup, "stride": args.stride,
                "max_candidates": args.max_candidates, "seed": args.seed,
                "base_sha256": base_sha}
    path = Path(args.out) / SETTINGS_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        diffs = [f"{k}: directory has {saved.get(k)!r}, requested {v!r}"
                 for k, v in settings.items() if saved.get(k) != v]
        if diffs:
            raise InputError(f"label directory {args.out!r} was made with other settings ("
                             + "; ".join(diffs) + "); use another --out")
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(settings, indent=1) + "\n")


def _run(args, out) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = MCConfig(block_size=args.block_size, max_lod=args.max_lod, budget=args.budget,
                   recent_tokens=args.recent_tokens)
    files = [read_ids(f) for f in args.files]
    H = args.horizon
    plan = snapshot_plan([f.shape[0] for f in files], args.warmup, args.stride, H)
    if not plan:
        raise InputError(f"no snapshot fits: every FILE is shorter than --warmup {args.warmup} "
                         f"+ --horizon {H} bytes")
    base, base_sha, base_desc = load_base(args.base, args.seed)
    run_id = args.run_id or Path(args.out).name
    check_settings(args, base_sha)
    done = sum(is_labeled(args.out, i) for i in range(len(plan)))
    print(f"megacontext label: {len(plan)} snapshots in {len(files)} file(s) ({done} already "
          f"written), policy={args.policy}, budget={args.budget}, H={H}; base: {base_desc}",
          file=out)
    bar = tqdm(total=len(plan), initial=done, unit="snap", disable=args.no_progress,
               file=sys.stderr)
    t0, variants = time.perf_counter(), 0
    sid = 0
    for f, ids in enumerate(files):
        todo = [(i, T) for i, (ff, T) in enumerate(plan) if ff == f]
        if all(is_labeled(args.out, i) for i, _ in todo):
            sid += len(todo)
            continue
        session = MegaContextSession(cfg, base, policy=args.policy, seed=args.seed)
        for sid, T in todo:
            session.ingest(ids[session.T: T])
            if is_labeled(args.out, sid):
                continue
            future = ids[T: T + H]
            lab = label_snapshot(base, session.tree, session.wc, T, future, cfg,
                                 max_candidates=args.max_candidates, seed=args.seed + sid,
                                 batch_size=args.batch_size)
            expand_ok, group_id = legal_actions(session.wc, T, cfg)
            n_legal = int(expand_ok.sum()) + int(torch.unique(group_id[group_id >= 0]).numel())
            write_snapshot_labels(args.out, lab, future, run_id=run_id, snapshot_id=sid,
                                  source=args.files[f], policy=args.policy,
                                  base_sha256=base_sha, gistnet_sha256="mean", n_legal=n_legal)
            variants += len(lab.candidates) + 1
            bar.update(1)
            bar.set_postfix(variants_s=f"{variants / (time.perf_counter() - t0):.1f}")
    bar.close()
    dt = time.perf_counter() - t0
    print(f"wrote {args.out}/labels and {args.out}/snapshots: {variants} variants measured in "
          f"{dt:.1f} s ({variants / dt if dt else 0:.1f} variants/s)", file=out)
    return 0
