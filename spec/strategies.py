"""Hypothesis strategies for the spec suite: configs, histories, valid working contexts, scores.

Valid WCs are built here from first principles (the coarsest legal tiling, refined by random
expansions, evicted from the oldest end only when even the coarsest tiling exceeds the
budget), not by the implementation under test, so specs can check the implementation's
`validate` and operations against an independent construction. Configs are small (K <= 6) so
every level, the tail, partial blocks and eviction all show up within a few hundred tokens.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from spec.implementation import mc

# --- reference arithmetic, independent of the implementation --------------------------------


def span(cfg, lod: int) -> int:
    return cfg.block_size**lod


def tail_start(cfg, T: int) -> int:
    return max(T - cfg.recent_tokens, 0)


def coarsest_tiling(cfg, T: int) -> list[tuple[int, int]]:
    """[(lod, start)] of the coarsest legal tiling of [0, T): design §3 invariants 3, 4, 6."""
    K = cfg.block_size
    a0 = K * (tail_start(cfg, T) // K)  # blocks from here on touch the tail or are partial
    entries, p = [], 0
    while p < a0:
        lod = max(
            lvl for lvl in range(1, cfg.max_lod + 1)
            if p % span(cfg, lvl) == 0 and p + span(cfg, lvl) <= a0
        )
        entries.append((lod, p))
        p += span(cfg, lod)
    entries += [(0, t) for t in range(a0, T)]
    return entries


def expand(entries: list[tuple[int, int]], i: int, cfg) -> list[tuple[int, int]]:
    lod, start = entries[i]
    child = span(cfg, lod - 1)
    kids = [(lod - 1, start + j * child) for j in range(cfg.block_size)]
    return entries[:i] + kids + entries[i + 1:]


def make_wc(entries, residency=None):
    lods = torch.tensor([e[0] for e in entries], dtype=torch.int64)
    starts = torch.tensor([e[1] for e in entries], dtype=torch.int64)
    res = torch.zeros_like(lods) if residency is None else torch.as_tensor(residency,
                                                                             dtype=torch.int64)
    return mc.WorkingContext(lods, starts, res)


def entries_of(wc) -> list[tuple[int, int]]:
    return list(zip(wc.lods.tolist(), wc.starts.tolist(), strict=True))


def describe(cfg, T, wc) -> str:
    """A reproducible description of a case, for assertion messages."""
    return f"cfg={cfg!r} T={T} entries={entries_of(wc)} residency={wc.residency.tolist()}"


# --- strategies ------------------------------------------------------------------------------


@st.composite
def configs(draw, max_block: int = 6, max_levels: int = 3, **fixed):
    """Small valid MCConfigs exercising every field; keyword arguments pin fields."""
    K = fixed.pop("block_size", None) or draw(st.integers(2, max_block))
    max_lod = fixed.pop("max_lod", None) or draw(st.integers(1, max_levels))
    recent = fixed.pop("recent_tokens", None)
    if recent is None:
        recent = draw(st.integers(0, 3 * K))
    budget = fixed.pop("budget", None) or draw(st.integers(max(recent, 1), recent + 6 * K))
    kwargs = dict(
        block_size=K,
        max_lod=max_lod,
        recent_tokens=recent,
        budget=budget,
        expand_threshold=draw(st.sampled_from([0.0, 0.1, 0.3])),
        collapse_threshold=draw(st.sampled_from([0.0, 0.1, 0.3])),
        swap_margin=draw(st.sampled_from([0.0, 0.2, 0.5])),
        min_residency=draw(st.integers(0, 3)),
        max_actions=draw(st.integers(1, 12)),
        block_score=draw(st.sampled_from(["mean", "max"])),
    )
    kwargs.update(fixed)
    return mc.MCConfig(**kwargs)


def histories(cfg) -> st.SearchStrategy[int]:
    """History lengths T from 0 to a few top-level spans (with partial blocks)."""
    return st.integers(0, 3 * span(cfg, cfg.max_lod) + 2 * cfg.block_size + 3)


@st.composite
def working_contexts(draw, cfg, T: int, max_residency: int = 5):
    """A valid WC for T tokens: a random refinement of the coarsest tiling within budget."""
    entries = coarsest_tiling(cfg, T)
    if len(entries) > cfg.budget:  # eviction is unavoidable: drop the oldest
        entries = entries[len(entries) - cfg.budget:]
    else:
        for _ in range(draw(st.integers(0, 12))):
            gists = [i for i, (lod, _) in enumerate(entries) if lod > 0]
            if not gists or len(entries) + cfg.block_size - 1 > cfg.budget:
                break
            entries = expand(entries, draw(st.sampled_from(gists)), cfg)
    res = draw(st.lists(st.integers(0, max_residency), min_size=len(entries),
                        max_size=len(entries)))
    return make_wc(entries, res)


@st.composite
def cases(draw, cfg_strategy=None, min_T: int = 0):
    """(cfg, T, wc) with wc valid for T tokens under cfg."""
    cfg = draw(cfg_strategy if cfg_strategy is not None else configs())
    T = draw(histories(cfg).filter(lambda t: t >= min_T))
    wc = draw(working_contexts(cfg, T))
    return cfg, T, wc


def scores_for(n: int, kind: str | None = None) -> st.SearchStrategy[torch.Tensor]:
    """float32 scores[n] in [-1, 1]; `kind` in {None (any), 'ties', 'quiet'}."""
    if kind == "ties":
        elem = st.sampled_from([-0.75, -0.25, 0.0, 0.25, 0.75])
    elif kind == "quiet":
        elem = st.floats(-0.05, 0.05, width=32)
    else:
        elem = st.one_of(st.floats(-1, 1, width=32), st.sampled_from([-0.5, 0.0, 0.5]))
    return st.lists(elem, min_size=n, max_size=n).map(
        lambda xs: torch.tensor(np.asarray(xs, dtype=np.float32))
    )
