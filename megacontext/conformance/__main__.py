"""Generate the conformance vectors (contract §17): the one entry point.

    python -m megacontext.conformance --write             # rewrite golden/vectors/*.json
    python -m megacontext.conformance --write --out DIR   # write them into DIR instead
    python -m megacontext.conformance --check             # exit 1 if a committed file differs

Every file is rendered by the fixed formatter of `encoding.dumps` from a document its
generator builds with the reference, so regeneration is byte-identical. Files are written
atomically (a temporary file in the same directory, then os.replace).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from .generate import GENERATORS, render

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "golden" / "vectors"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m megacontext.conformance",
                                     description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="write every vector file")
    mode.add_argument("--check", action="store_true",
                      help="compare every vector file with a fresh rendering")
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR,
                        help=f"directory of the vector files (default {DEFAULT_DIR})")
    parser.add_argument("--only", nargs="*", choices=sorted(GENERATORS), default=None,
                        help="only these files")
    args = parser.parse_args(argv)
    names = args.only or sorted(GENERATORS)
    stale = []
    for name in names:
        text = render(name)
        path = args.out / name
        if args.write:
            write_atomic(path, text)
            print(f"wrote {path} ({len(text.encode())} bytes)")
        elif not path.exists() or path.read_bytes() != text.encode():
            stale.append(name)
    if stale:
        print(f"stale or missing: {', '.join(stale)} (regenerate with --write and review the "
              "diff)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
