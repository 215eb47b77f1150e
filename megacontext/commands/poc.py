"""`megacontext poc [--config FILE] [--out DIR] [--small]`: the proof-of-concept study
(contract §16) end to end: pretrain (or reuse `base`), retrieval tuning, train, the causal-
LensNet run, evaluate, report.md + PNGs.

Re-running with the same config and run directory skips finished stages and resumes an
interrupted one. Errors in the input (an unknown config key, a run directory made with another
config) print one line and exit with status 2.
"""

from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="POC config TOML (default: configs/poc.toml if it exists, else the "
                             "built-in defaults)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="run directory (default runs/poc, runs/poc-small with --small)")
    parser.add_argument("--small", action="store_true",
                        help="the CI-sized study (tiny seeded models, seconds); ignores --config")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as TOML and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--device", default="auto",
                        help="where the models train and run: auto (CUDA when present, else "
                             "cpu), cpu, cuda, cuda:N (default auto; contract §13.4)")


def run(args) -> int:
    from pathlib import Path

    from ..errors import MegaContextError
    from ..poc.config import PocConfig, load_poc_config, poc_config_toml, small_config
    from ..poc.pipeline import run_poc

    try:
        if args.small:
            cfg = small_config()
        elif args.config:
            cfg = load_poc_config(args.config)
        elif Path("configs/poc.toml").is_file():
            cfg = load_poc_config("configs/poc.toml")
        else:
            cfg = PocConfig()
            cfg.check()
        if args.print_config:
            print(poc_config_toml(cfg))
            return 0
        out = args.out or ("runs/poc-small" if args.small else "runs/poc")
        report = run_poc(cfg, out, progress=not args.no_progress, device=args.device)
    except MegaContextError as e:
        print(f"megacontext poc: error: {e}", file=sys.stderr)
        return 2
    print(f"report: {report}")
    return 0
