"""`megacontext train CONFIG`: the alternating GistNet / LensNet / LoRA cycle (contract §13).

Reads a TOML config (omitted keys take the defaults of `TrainConfig`; `--print-default` shows
them), writes the resolved config, metrics.jsonl and one checkpoint per phase under --out, and
prints one line per phase. `--resume CHECKPOINT` continues after that phase checkpoint.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..errors import MegaContextError


def add_arguments(parser) -> None:
    parser.add_argument("config", nargs="?", help="TOML config file (see --print-default)")
    parser.add_argument("--out", default=None, help="run directory (default: runs/<config stem>)")
    parser.add_argument("--resume", default=None, metavar="CHECKPOINT",
                        help="a phase checkpoint directory of a run with the same config")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--device", default="auto",
                        help="where the models train: auto (CUDA when present, else cpu), cpu, "
                             "cuda, cuda:N (default auto; CPU only under torchrun; contract "
                             "§13.4)")
    parser.add_argument("--print-default", action="store_true",
                        help="print the default config as TOML and exit")


def run(args) -> int:
    from ..training.cycle import evaluate, train
    from ..training.text import split_windows
    from ..training.train_config import (
        TrainConfig,
        config_to_dict,
        dict_to_toml,
        load_train_config,
    )

    if args.print_default:
        print(dict_to_toml(config_to_dict(TrainConfig())))
        return 0
    if not args.config:
        print("megacontext train: error: CONFIG is required (or --print-default)",
              file=sys.stderr)
        return 2
    try:
        cfg = load_train_config(args.config)
        out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
        t0 = time.perf_counter()
        result = train(cfg, out, resume=args.resume, progress=not args.no_progress,
                       device=args.device)
        for p in result.phases:
            m = {k: round(v, 5) for k, v in p.metrics.items() if isinstance(v, float)}
            print(f"{p.phase.label}: {p.steps} steps  {json.dumps(m)}  -> {p.checkpoint}")
        if cfg.eval_windows:
            _, val = split_windows(cfg.data.source, cfg.seed, cfg.data.synthetic_bytes,
                                   cfg.data.val_fraction, cfg.history + cfg.horizon)
            ev = evaluate(cfg, result.models, val, cfg.eval_windows)
            print("eval: " + json.dumps({k: round(v, 4) for k, v in ev.items()}))
        print(f"done in {time.perf_counter() - t0:.1f} s; run directory {out}")
    except MegaContextError as e:
        print(f"megacontext train: error: {e}", file=sys.stderr)
        return 2
    return 0
