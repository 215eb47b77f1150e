"""`megacontext demo`: a synthetic, seeded session that shows what the controller does.

Each section is a function taking `(rng, out)`; later features add sections to `SECTIONS`.
"""

from __future__ import annotations

from typing import TextIO

import torch

from .config import MCConfig
from .lod_map import render_lod_map
from .tree import MegaContextTree
from .working_context import WorkingContext, build_working_context

DEMO_CFG = MCConfig(block_size=16, max_lod=2, budget=256, recent_tokens=48)
DEMO_DIM = 64


def summary(wc: WorkingContext, T: int, cfg: MCConfig) -> str:
    """One line: tokens, entries/budget, entries per level."""
    per_lod = torch.bincount(wc.lods, minlength=cfg.max_lod + 1).tolist() if len(wc) else []
    levels = " ".join(f"LOD{lod}={n}" for lod, n in enumerate(per_lod))
    covered = int(wc.ends(cfg)[-1] - wc.starts[0]) if len(wc) else 0
    return f"tokens={T} entries={len(wc)}/{cfg.budget} {levels} covered={covered}"


def section_baseline(rng: torch.Generator, out: TextIO) -> None:
    """Ingest a synthetic history into the tree and show the recency baseline as it grows."""
    cfg = DEMO_CFG
    tree = MegaContextTree(cfg, DEMO_DIM)
    print(f"== recency baseline  ({cfg})", file=out)
    for T in (100, 1_500, 12_000, 80_000):
        n = T - tree.num_tokens
        tree.append(torch.randn(n, DEMO_DIM, generator=rng))
        wc = build_working_context(T, cfg)
        wc.validate(cfg, T)
        vectors = tree.gather(wc)  # [N, D] what the base model would read
        print(render_lod_map(wc, T, cfg), file=out)
        print(f"   {summary(wc, T, cfg)} gathered={tuple(vectors.shape)}\n", file=out)


SECTIONS = [section_baseline]


def run_demo(seed: int = 0, out: TextIO | None = None) -> None:
    import sys

    out = out or sys.stdout
    rng = torch.Generator().manual_seed(seed)
    for section in SECTIONS:
        section(rng, out)
