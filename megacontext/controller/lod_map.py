"""`render_lod_map`: the normative text picture of a working context (contract §9).

    T=<tokens> N=<entries>/<budget> K=<K>
    then one character per K-token block of [0, T), wrapped at 128 characters per line:
    '.' LOD0, digit l for a block under an LOD-l gist, ',' the trailing partial block
    (always LOD0), ' ' a block that is evicted (none of its tokens is in the WC).

Every block lies either under one gist or wholly at LOD0 (gists are K-aligned and span at
least K tokens), so a block is described by the entry holding its last token; eviction drops
the oldest tokens first, so a block with any token left still has its last one.
"""

from __future__ import annotations

import numpy as np

from .config import MCConfig
from .working_context import WorkingContext, as_numpy, check_working_context

LINE_WIDTH = 128


def render_lod_map(wc: WorkingContext, T: int, cfg: MCConfig) -> str:
    """The normative text picture of `wc` over a history of `T` tokens (contract §9).

    Line 1: `T=<T> N=<len(wc)>/<cfg.budget> K=<cfg.block_size>`. Then one character per
    K-token block of [0, T), oldest first, 128 per line (no trailing newline; T = 0 gives the
    header alone): '.' LOD0, the digit l under an LOD-l gist, ',' the trailing partial block,
    ' ' an evicted block. `wc` must be valid for T except that it may exceed the budget;
    otherwise the invariant's `InvariantError` subclass is raised (InputTypeError for a
    non-WC or non-MCConfig, InputError/InputTypeError for a bad T).
    """
    check_working_context(wc, T, cfg, check_budget=False)
    K = cfg.block_size
    header = f"T={T} N={len(wc)}/{cfg.budget} K={K}"
    n_blocks = -(-T // K)
    if n_blocks == 0:
        return header
    lods, starts = as_numpy(wc.lods), as_numpy(wc.starts)
    last_token = np.minimum(np.arange(1, n_blocks + 1) * K, T) - 1  # [n_blocks]
    entry = np.searchsorted(starts, last_token, side="right") - 1
    evicted = entry < 0
    block_lod = lods[np.maximum(entry, 0)]
    chars = np.where(block_lod == 0, ord("."), ord("0") + block_lod)
    if T % K:
        chars[-1] = ord(",")
    chars = np.where(evicted, ord(" "), chars)
    body = chars.astype(np.uint8).tobytes().decode("ascii")
    lines = [body[i:i + LINE_WIDTH] for i in range(0, len(body), LINE_WIDTH)]
    return "\n".join([header, *lines])
