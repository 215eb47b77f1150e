"""Which actions are legal on a working context (contract §3, "Legality" and "Sibling group").

Legality here is structural: levels, alignment, complete spans, the protected tail. Hysteresis
(`min_residency`) is a runtime rule the focus allocator applies on top, so that supervision
(§6) can label any structurally possible action whatever the entry's age.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .config import MCConfig
from .working_context import (
    WorkingContext,
    as_numpy,
    check_working_context,
    span_table,
)


def sibling_groups(
    lods: np.ndarray,
    starts: np.ndarray,
    T: int,
    cfg: MCConfig,
    spans: np.ndarray | None = None,
    ends: np.ndarray | None = None,
    first_in_tail: int | None = None,
) -> np.ndarray:
    """Start index of every collapsible sibling group, ascending. `lods`/`starts` must be valid.

    A group is K consecutive entries of one level l < max_lod whose first start is a multiple
    of span(l+1) and whose parent span is complete and outside the protected tail. Because
    entries tile contiguously, an entry of level l at a start s aligned to span(l+1) heads a
    group iff the K-th entry from it ends at s + span(l+1): the K entries then fill the parent
    span, none can be coarser (it would have to start at s) and so none finer. The group lies
    before the tail iff that K-th entry does, i.e. its row is before `first_in_tail` (the first
    row reaching into the tail). `spans`, `ends`, `first_in_tail` (from `validate_layout`, if
    the caller has them) save passes.
    """
    K, n = cfg.block_size, lods.shape[0]
    if spans is None:
        spans = span_table(cfg)[lods]
    if ends is None:
        ends = starts + spans
    if first_in_tail is None:
        first_in_tail = int(np.searchsorted(ends, cfg.tail_start(T), side="right"))
    m = min(n, first_in_tail) - K + 1  # heads whose K-th entry ends before the tail
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    # Alignment to the parent span first: it leaves about one entry in K.
    head = starts[:m]
    if K & (K - 1) == 0:  # a bit mask per level (span(l+1) - 1); int64 division is slow
        low = parent_masks(cfg)[lods[:m]]
        low &= head  # in place
        cand = (low == 0).nonzero()[0]
    else:
        cand = np.flatnonzero(head % (spans[:m] * K) == 0)
    parent_span = spans[cand] * K
    keep = ends[cand + (K - 1)] == starts[cand] + parent_span
    keep &= lods[cand] < cfg.max_lod
    return cand[keep]


def parent_masks(cfg: MCConfig) -> np.ndarray:
    """[max_lod + 1] int64: `span(l + 1) - 1` per level; -1 (every bit) for max_lod, which has
    no parent (and whose span(max_lod + 1) may not fit in int64)."""
    return _parent_masks(cfg.block_size, cfg.max_lod)


@functools.lru_cache(maxsize=64)
def _parent_masks(K: int, max_lod: int) -> np.ndarray:
    table = np.append(K ** np.arange(1, max_lod + 1, dtype=np.int64) - 1, -1)
    table.flags.writeable = False
    return table


def legal_actions(wc: WorkingContext, T: int, cfg: MCConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """`(expand_ok[N] bool, group_id[N] int64)` for a valid working context.

    `expand_ok[i]`: entry i is a gist (lod > 0); gists never lie in the protected tail and their
    children always exist, so every gist can expand. `group_id[i]`: the index (0, 1, ... in
    order of position) of the collapsible sibling group that entry i belongs to, -1 if none.
    The WC may exceed the budget (the state between `append_tokens` and `focus_step`).
    """
    spans = check_working_context(wc, T, cfg, check_budget=False)
    lods, starts = as_numpy(wc.lods), as_numpy(wc.starts)
    heads = sibling_groups(lods, starts, T, cfg, spans=spans)
    group_id = np.full(lods.shape[0], -1, dtype=np.int64)
    members = heads[:, None] + np.arange(cfg.block_size)  # [G, K]
    group_id[members.ravel()] = np.repeat(np.arange(heads.shape[0]), cfg.block_size)
    return torch.from_numpy(lods > 0), torch.from_numpy(group_id)
