"""`megacontext evaluate`: loss@H for several policies x budgets on held-out text (contract §11,
§16), written as a Markdown table (and the raw numbers as JSON beside it).

Each evaluation window is `--history` bytes followed by `--horizon` bytes of one file; every
policy ingests the history in K-byte chunks from an empty session at budget B and scores the
horizon (teacher forcing). `full` is the base model reading the whole history (the upper
bound); `oracle` sees the horizon as lookahead. Budgets are slot counts or fractions of the
history ("1/16").
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from fractions import Fraction
from pathlib import Path

import torch
from tqdm import tqdm

from ..cli import positive_int, seed_type
from ..controller.config import MCConfig
from ..errors import InputError, MegaContextError
from ..runtime.loading import load_base, read_ids, write_text_atomic
from ..runtime.session import POLICIES, full_context_nll, policy_nll


def _se(se: float) -> str:
    """A standard error, or "n/a" for a single window (no spread to estimate)."""
    return "n/a" if math.isnan(se) else f"{se:.4f}"


def _short_sha(sha: str) -> str:
    """A checkpoint digest shortened for a table header; names that are not digests stay."""
    is_digest = len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
    return f"sha256 {sha[:12]}" if is_digest else sha


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", metavar="FILE", nargs="*",
                   help="text files to evaluate on (or use --heldout N)")
    p.add_argument("--heldout", type=positive_int, metavar="N",
                   help="use the first N held-out standard-library files (validation split of "
                        "megacontext.data) long enough for one window")
    p.add_argument("--base", metavar="CKPT", help="pretrained base; default random-init")
    p.add_argument("--history", type=positive_int, default=4096, help="bytes of history")
    p.add_argument("--horizon", type=positive_int, default=64,
                   help="H: tokens (bytes) of the horizon loss@H is measured on")
    p.add_argument("--block-size", type=positive_int, default=32, help="K: tokens per gist")
    p.add_argument("--recent-tokens", type=int, default=64,
                   help="the protected tail kept at LOD0 (tokens)")
    p.add_argument("--budgets", default="1/16,1/8,1/4,1/2",
                   help="comma-separated slot counts or fractions of --history")
    p.add_argument("--policies", default="full,window,recency,random",
                   help=f"comma-separated, from full,{','.join(POLICIES)} (lens: untrained)")
    p.add_argument("--windows-per-file", type=positive_int, default=1,
                   help="history + H windows drawn from each file")
    p.add_argument("--seed", type=seed_type, default=0,
                   help="seed of the window draw and the random policy")
    p.add_argument("--threads", type=positive_int, help="torch threads")
    p.add_argument("--out", metavar="FILE.md", default="evaluation.md",
                   help="the Markdown table (the raw numbers go to FILE.json beside it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_budgets(text: str, history: int) -> list[int]:
    out = []
    for part in text.split(","):
        try:
            v = Fraction(part.strip())
        except (ValueError, ZeroDivisionError):
            raise InputError(f"--budgets: {part!r} is not a count or a fraction") from None
        b = int(v * history) if v < 1 or v.denominator != 1 else int(v)
        if b < 1:
            raise InputError(f"--budgets: {part!r} gives {b} slots")
        out.append(b)
    return out


def heldout_documents(n: int, min_bytes: int) -> list[tuple[str, torch.Tensor]]:
    """(name, ids) of the first n held-out (validation split) standard-library files with at
    least min_bytes bytes, by name (`megacontext.data.corpus`, contract §16)."""
    from ..data.corpus import load_documents, split_documents

    docs = [d for d in split_documents(load_documents(("stdlib",))).validation
            if len(d) >= min_bytes][:n]
    if not docs:
        raise InputError(f"no held-out standard-library file has {min_bytes} bytes")
    return [(d.name, torch.frombuffer(bytearray(d.data), dtype=torch.uint8).long())
            for d in docs]


def windows(ids: torch.Tensor, length: int, count: int) -> list[torch.Tensor]:
    n = ids.shape[0]
    if n < length:
        return []
    if count == 1:
        return [ids[:length]]
    step = (n - length) / (count - 1)
    return [ids[round(i * step): round(i * step) + length] for i in range(count)]


def run(args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    try:
        return _run(args, out)
    except MegaContextError as e:
        print(f"megacontext evaluate: error: {e}", file=sys.stderr)
        return 2


def _run(args, out) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    Tn, H, K = args.history, args.horizon, args.block_size
    budgets = parse_budgets(args.budgets, Tn)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for p in policies:
        if p != "full" and p not in POLICIES:
            raise InputError(f"--policies: {p!r} is not one of full,{','.join(POLICIES)}")
    cfgs = {b: MCConfig(block_size=K, budget=b, recent_tokens=args.recent_tokens)
            for b in budgets}
    if args.files:
        docs = [(f, read_ids(f)) for f in args.files]
    elif args.heldout:
        docs = heldout_documents(args.heldout, Tn + H)
    else:
        raise InputError("name FILEs or --heldout N")
    files = [name for name, _ in docs]
    wins = [(f, w) for f, ids in docs for w in windows(ids, Tn + H, args.windows_per_file)]
    if not wins:
        raise InputError(f"no FILE holds --history + --horizon = {Tn + H} bytes")
    base, base_sha, base_desc = load_base(args.base, args.seed)
    lensnet = None
    if "lens" in policies:
        from ..models.lensnet import LensNet, LensNetConfig

        torch.manual_seed(args.seed)
        lensnet = LensNet(LensNetConfig(d_in=base.embed(torch.zeros(1, dtype=torch.int64))
                                        .shape[1])).eval()
    cells = [(p, b) for p in policies for b in (budgets if p != "full" else [None])]
    results: dict[str, list[float]] = {f"{p}@{b}": [] for p, b in cells}
    bar = tqdm(total=len(wins) * len(cells), disable=args.no_progress, file=sys.stderr,
               unit="eval")
    for _, ids in wins:
        for p, b in cells:
            if p == "full":
                loss = full_context_nll(base, ids, Tn, H)
            else:
                loss = policy_nll(cfgs[b], base, ids, Tn, H, p, lensnet=lensnet, seed=args.seed)
            results[f"{p}@{b}"].append(loss)
            bar.update(1)
    bar.close()

    def cell(key):
        v = results[key]
        m = statistics.fmean(v)
        se = statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
        return m, se

    full = cell("full@None")[0] if "full" in policies else None
    lines = [f"loss@{H} (nats/byte, mean ± s.e. over {len(wins)} windows of {Tn} + {H} bytes "
             f"from {len(files)} file(s)); K={K}, recent_tokens={args.recent_tokens}; "
             f"base: {base_desc} ({_short_sha(base_sha)})", ""]
    head = "| policy | " + " | ".join(f"B={b} ({Fraction(b, Tn)})" for b in budgets) + " |"
    lines += [head, "|" + " --- |" * (len(budgets) + 1)]
    for p in policies:
        if p == "full":
            m, se = cell("full@None")
            lines.append(f"| full context ({Tn}) | " + " | ".join(
                [f"{m:.4f} ± {_se(se)}"] * len(budgets)) + " |")
            continue
        row = []
        for b in budgets:
            m, se = cell(f"{p}@{b}")
            d = f" ({m - full:+.3f})" if full is not None else ""
            row.append(f"{m:.4f} ± {_se(se)}{d}")
        lines.append(f"| {p} | " + " | ".join(row) + " |")
    lines += ["", "Files: " + ", ".join(files), ""]
    text = "\n".join(lines)
    write_text_atomic(args.out, text)
    raw = {"history": Tn, "horizon": H, "block_size": K, "budgets": budgets, "files": files,
           "base": base_desc, "base_sha256": base_sha, "results": results}
    write_text_atomic(Path(args.out).with_suffix(".json"), json.dumps(raw, indent=1))
    print(text, file=out)
    return 0
