"""Which actions are legal on a working context (design §3, "Legality" and "Sibling group").

Legality here is structural: levels, alignment, complete spans, the protected tail. Hysteresis
(`min_residency`) is a runtime rule the focus allocator applies on top, so that supervision
(§6) can label any structurally possible action whatever the entry's age.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import MCConfig
from .working_context import (
    WorkingContext,
    as_numpy,
    check_working_context,
    is_multiple,
    span_table,
)


def sibling_groups(
    lods: np.ndarray, starts: np.ndarray, T: int, cfg: MCConfig, spans: np.ndarray | None = None
) -> np.ndarray:
    """Start index of every collapsible sibling group, ascending. `lods`/`starts` must be valid.

    A group is K consecutive entries of one level l < max_lod whose first start is a multiple
    of span(l+1) and whose parent span is complete and outside the protected tail. Because
    entries tile contiguously, K entries starting at an aligned s with the K-th at lod l and
    start s + (K-1)·span(l) must all be at lod l (any coarser one would have to cover s, any
    finer one would leave the K entries short of the parent span), so one shifted comparison
    per entry finds every group. `spans` (= K**lods, if the caller has it) saves a pass.
    """
    K, n = cfg.block_size, lods.shape[0]
    if n < K:
        return np.zeros(0, dtype=np.int64)
    if spans is None:
        spans = span_table(cfg)[lods]
    m = n - K + 1
    # Alignment to the parent span first (a bit mask when K is a power of two): it leaves
    # about one entry in K, and the other tests run on those few.
    parent_span = spans[:m] * K
    cand = np.flatnonzero(is_multiple(starts[:m], parent_span, K))
    head_l, head_s, parent_span = lods[cand], starts[cand], parent_span[cand]
    last = cand + (K - 1)
    keep = (lods[last] == head_l) & (starts[last] - head_s == parent_span // K * (K - 1))
    keep &= (head_l < cfg.max_lod) & (head_s + parent_span <= cfg.tail_start(T))
    return cand[keep]


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
