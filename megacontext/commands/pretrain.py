"""`megacontext pretrain`: train the byte-level base TinyGPT (contract §13, §16).

    megacontext pretrain [--config FILE.toml] [--run-dir DIR] [--minutes M] [--resume]

The config is the default `PretrainConfig` or a TOML file (unknown keys are an error naming
the key); `--seed`, `--steps` and `--corpus` override it. `--write-config FILE` writes the
resolved config and exits (a starting point for your own). Errors in the input (a bad config
key, an empty corpus directory, a run directory that already holds a checkpoint without
`--resume`) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def add_arguments(parser) -> None:
    """`megacontext pretrain` options."""
    from ..cli import positive_int, seed_type

    parser.add_argument("--config", metavar="FILE",
                        help="TOML config (default: the built-in PretrainConfig; with --resume: "
                             "the run directory's config.toml)")
    parser.add_argument("--run-dir", default="runs/pretrain", metavar="DIR",
                        help="where config.toml, checkpoint/ and metrics.jsonl go "
                             "(default runs/pretrain)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir from its checkpoint, bit-identically")
    parser.add_argument("--minutes", type=positive_float, metavar="M",
                        help="time budget: sets the step count from the measured speed and "
                             "stops (checkpointed) when it is spent")
    parser.add_argument("--stop-after", type=positive_int, metavar="STEPS",
                        help="stop (checkpointed) after this many steps in total")
    parser.add_argument("--seed", type=seed_type, help="override train.seed")
    parser.add_argument("--steps", type=positive_int, help="override train.steps")
    parser.add_argument("--corpus", action="append", metavar="SOURCE",
                        help="override data.sources: 'stdlib', 'pydoc', a directory or a file "
                             "(repeat for several)")
    parser.add_argument("--write-config", metavar="FILE",
                        help="write the resolved config as TOML to FILE and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--device", default="auto",
                        help="where to train: auto (CUDA when present, else cpu), cpu, cuda, "
                             "cuda:N (default auto; contract §13.4)")


def resolve_config(args):
    from pathlib import Path

    from ..training.pretrain import CONFIG_FILE, PretrainConfig

    if args.config is not None:
        cfg = PretrainConfig.from_toml(args.config)
    elif args.resume and (Path(args.run_dir) / CONFIG_FILE).is_file():
        cfg = PretrainConfig.from_toml(Path(args.run_dir) / CONFIG_FILE)
    else:
        cfg = PretrainConfig()
    train = {k: v for k, v in (("seed", args.seed), ("steps", args.steps)) if v is not None}
    if train:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))
    if args.corpus:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                                sources=tuple(args.corpus)))
    return cfg


def run(args) -> int:
    from ..errors import MegaContextError
    from ..training.pretrain import pretrain

    try:
        cfg = resolve_config(args)
        if args.write_config:
            cfg.to_toml(args.write_config)
            print(f"wrote {args.write_config}")
            return 0
        summary = pretrain(cfg, args.run_dir, resume=args.resume, minutes=args.minutes,
                           stop_after=args.stop_after, progress=not args.no_progress,
                           device=args.device)
    except MegaContextError as e:
        print(f"megacontext pretrain: error: {e}", file=sys.stderr)
        return 2
    rate = summary["tokens_per_s"]
    speed = (f"{rate:,.0f} tokens/s" if rate == rate  # NaN: this call trained no step
             else "already complete, nothing to train")
    print(f"done: step {summary['step']}/{summary['steps']}, {summary['tokens']:,} tokens, "
          f"val_nll {summary['val_nll']:.4f} nats/byte, {speed}; checkpoint in "
          f"{args.run_dir}/checkpoint")
    return 0
