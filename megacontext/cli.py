"""Command line: `megacontext demo` (the main job of a new user's first minute)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="megacontext", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a synthetic MegaContext session and print LOD maps")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic session")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        run_demo(seed=args.seed, out=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
