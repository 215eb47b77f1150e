"""`megacontext run`: stream a file through a MegaContextSession (contract §11, §14).

Prints the working context's LOD map (contract §9) as it evolves and loss@H at every
`--every` tokens, then a metrics table; writes metrics.jsonl and actions.parquet (and, with
`--labels`, the snapshots' ΔNLL metrics) to the run directory.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..cli import positive_int, seed_type
from ..controller.config import MCConfig
from ..controller.lod_map import render_lod_map
from ..errors import MegaContextError
from ..models.lensnet import LensNet, LensNetConfig, lens_features, lens_tail
from ..runtime.labels import label_snapshot
from ..runtime.loading import load_base, read_ids
from ..runtime.session import POLICIES, MegaContextSession
from ..runtime.telemetry import RunTelemetry


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a text (any bytes) file to stream")
    p.add_argument("--policy", choices=POLICIES, default="recency")
    p.add_argument("--budget", type=positive_int, default=512, help="W_max, slots")
    p.add_argument("--base", metavar="CKPT", help="pretrained base (megacontext pretrain run "
                   "or checkpoint directory); default: a random-init TinyGPT")
    p.add_argument("--block-size", type=positive_int, default=32, help="K")
    p.add_argument("--max-lod", type=positive_int, default=2)
    p.add_argument("--recent-tokens", type=int, default=64, help="protected LOD0 tail")
    p.add_argument("--horizon", type=positive_int, default=64, help="H for loss@H")
    p.add_argument("--every", type=positive_int, default=1024,
                   help="tokens between LOD maps and loss@H measurements")
    p.add_argument("--limit", type=positive_int, help="stream only the first N bytes")
    p.add_argument("--labels", action="store_true",
                   help="also measure ΔNLL labels at each measurement (lod_loss, correlations)")
    p.add_argument("--max-candidates", type=positive_int, default=32)
    p.add_argument("--seed", type=seed_type, default=0)
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<file>-<policy>-"
                   "b<budget>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _scores(session: MegaContextSession) -> torch.Tensor | None:
    """The lens policy's scores on the current WC (for the score/target correlations)."""
    if session.policy != "lens":
        return None
    with torch.no_grad():
        return session.lensnet(session.tree.gather(session.wc),
                               lens_features(session.wc, session.T, session.cfg),
                               tail=lens_tail(session.lensnet, session.tree)).float()


def run(args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    try:
        return _run(args, out)
    except MegaContextError as e:
        print(f"megacontext run: error: {e}", file=sys.stderr)
        return 2


def _run(args, out) -> int:
    cfg = MCConfig(block_size=args.block_size, max_lod=args.max_lod, budget=args.budget,
                   recent_tokens=args.recent_tokens)
    ids = read_ids(args.file)
    if args.limit:
        ids = ids[: args.limit]
    base, base_sha, base_desc = load_base(args.base, args.seed)
    torch.manual_seed(args.seed)
    lensnet = None
    if args.policy == "lens":
        dim = base.embed(torch.zeros(1, dtype=torch.int64)).shape[1]
        lensnet = LensNet(LensNetConfig(d_in=dim)).eval()
        print("note: --policy lens uses an untrained, seeded LensNet (no LensNet checkpoint yet)",
              file=out)
    session = MegaContextSession(cfg, base, lensnet=lensnet, policy=args.policy,
                                 seed=args.seed, horizon=args.horizon)
    name = Path(args.file).name
    run_dir = Path(args.out or f"runs/{name}-{args.policy}-b{args.budget}")
    run_id = f"{name}-{args.policy}-b{args.budget}-{int(time.time())}"
    tel = RunTelemetry(run_dir, run_id, args.policy, cfg)
    print(f"megacontext run: {args.file} ({ids.shape[0]:,} bytes), policy={args.policy}, "
          f"budget={args.budget}, K={cfg.block_size}, H={args.horizon}; base: {base_desc}",
          file=out)
    K, H, n = cfg.block_size, args.horizon, ids.shape[0]
    bar = tqdm(total=n, unit="B", unit_scale=True, disable=args.no_progress, file=sys.stderr,
               desc=args.policy)
    next_eval = args.every
    for i in range(0, n, K):
        j = min(i + K, n)
        future = ids[j: j + H] if args.policy == "oracle" else None
        if args.policy == "oracle" and future.shape[0] == 0:
            future = None  # the stream's end: nothing left to look ahead at
            if j % K == 0:
                break
        for rec in session.ingest(ids[i:j], future=future):
            tel.refocus(rec)
        bar.update(j - i)
        if j >= next_eval and j + H <= n:
            next_eval += args.every
            loss = session.nll(ids[j: j + H])
            labels = (label_snapshot(base, session.tree, session.wc, session.T, ids[j: j + H],
                                     cfg, max_candidates=args.max_candidates, seed=args.seed)
                      if args.labels else None)
            line = tel.evaluation(session.T, loss, labels, _scores(session) if labels else None)
            bar.clear()
            print(render_lod_map(session.wc, session.T, cfg), file=out)
            extra = "".join(f"  {k}={line[k]:.3f}" for k in ("lod_delta/1", "lod_delta/2",
                                                               "pearson") if line.get(k)
                            is not None)
            print(f"   loss@{H}={loss:.3f} nats/byte  entries/lod={session.lod_counts()}{extra}\n",
                  file=out)
    bar.close()
    summary = tel.close()
    print(f"== metrics ({run_dir}/metrics.jsonl, actions.parquet)", file=out)
    rows = [("policy", args.policy), ("budget (slots)", args.budget),
            ("tokens streamed", session.T),
            ("refocus steps", summary["refocus_steps"]), ("actions", summary["actions"])]
    for key, label, fmt in (("swap_rate", "swap_rate (actions/block)", "{:.3f}"),
                            ("mean_residency", "mean_residency (steps)", "{:.2f}"),
                            ("loss_at_h", f"loss@{H} mean (nats/byte)", "{:.4f}"),
                            ("token_budget_utilization", "token_budget_utilization", "{:.3f}"),
                            ("latency_ms/gather", "latency gather (ms/step)", "{:.3f}"),
                            ("latency_ms/lens", "latency lens (ms/step)", "{:.3f}"),
                            ("latency_ms/allocator", "latency allocator (ms/step)", "{:.3f}"),
                            ("latency_ms/base", "latency base (ms/step)", "{:.3f}")):
        v = summary[key]
        rows.append((label, "n/a" if v is None else fmt.format(v)))
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}", file=out)
    return 0
