"""Command line: `megacontext <command>` (also `python -m megacontext <command>`).

Each command lives in its own module, which provides `add_arguments(parser)` and
`run(args) -> int`; this file only lists them. Values a command cannot use are rejected by
argparse with a one-line usage error naming the option (never a traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

# name -> (module providing add_arguments/run, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("megacontext.commands.demo",
             "run a synthetic MegaContext session and print LOD maps"),
    "pretrain": ("megacontext.commands.pretrain",
                 "train the byte-level base TinyGPT on the stdlib corpus"),
    "run": ("megacontext.commands.run",
            "stream a file through a MegaContext session (LOD maps, metrics)"),
    "label": ("megacontext.commands.label",
              "write counterfactual ΔNLL label tables (Parquet)"),
    "evaluate": ("megacontext.commands.evaluate",
                 "loss@H of policies x budgets on held-out text (Markdown table)"),
    "train": ("megacontext.commands.train",
              "alternating GistNet / LensNet / LoRA training (warm start, B1-B2-B3 cycles)"),
    "report": ("megacontext.commands.report", "PNG plots of a training run directory"),
    "poc": ("megacontext.commands.poc",
            "the proof of concept end to end: pretrain, retrieval, train, evaluate, report"),
}

SEED_MAX = 2**63 - 1


def seed_type(text: str) -> int:
    """argparse type for seeds: an integer in [0, 2**63 - 1] (torch.Generator's range)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be an integer, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"seed must be in [0, 2**63 - 1], got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type for counts and sizes: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def version() -> str:
    try:
        return metadata.version("megacontext")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown (not installed)"


class DefaultsFormatter(argparse.HelpFormatter):
    """Shows an option's default in its help, unless it is None/False or the help names it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default is argparse.SUPPRESS
                or "default" in text or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="megacontext", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"megacontext {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text,
                             formatter_class=DefaultsFormatter)
        importlib.import_module(module).add_arguments(cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, _ = COMMANDS[args.command]
    try:
        return int(importlib.import_module(module).run(args) or 0)
    except BrokenPipeError:  # `megacontext demo | head`: the reader left; not an error
        sys.stdout = None
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
