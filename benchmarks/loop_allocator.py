"""The focus allocator written the straightforward way: one entry at a time, in Python.

This is the perf baseline of contract §10 and an independent second implementation of contract §5
(the same decisions, the same tie-breaks, the same bookkeeping): `loop_focus_step` must return
exactly what `megacontext.focus_step` returns. It is how such allocators are usually first
written (and how the public implementation this project replaces wrote its own): Python lists
of entries, a scan for sibling groups, `sorted` for candidate orders, a rescan of the groups
after every forced collapse, one pass to build the result.
"""

from __future__ import annotations

import math

import torch

from megacontext import Action, MCConfig, WorkingContext


def loop_validate(lods, starts, T, cfg):
    """Every invariant of contract §3 but the budget, entry by entry (ValueError on a break)."""
    K, tail = cfg.block_size, max(T - cfg.recent_tokens, 0)
    prev_end = None
    for i in range(len(lods)):
        lod, start = lods[i], starts[i]
        if not 0 <= lod <= cfg.max_lod:
            raise ValueError(f"entry {i}: lod {lod}")
        span = K**lod
        if start % span:
            raise ValueError(f"entry {i}: misaligned")
        if lod > 0 and start + span > min(T, tail):
            raise ValueError(f"entry {i}: incomplete or protected gist")
        if prev_end is not None and start != prev_end:
            raise ValueError(f"entry {i}: not contiguous")
        prev_end = start + span
    if (prev_end or 0) != T or (starts and starts[0] < 0):
        raise ValueError("coverage")


def loop_groups(lods, starts, T, cfg):
    """First index of every legal sibling group, by scanning the entries."""
    K, tail = cfg.block_size, max(T - cfg.recent_tokens, 0)
    heads, i = [], 0
    while i + K <= len(lods):
        lod, start = lods[i], starts[i]
        parent = K ** (lod + 1)
        ok = lod < cfg.max_lod and start % parent == 0 and start + parent <= tail
        j = 0
        while ok and j < K:
            ok = lods[i + j] == lod and starts[i + j] == start + j * K**lod
            j += 1
        if ok:
            heads.append(i)
            i += K
        else:
            i += 1
    return heads


def loop_group_score(scores, i, cfg):
    """Score of the group whose members are entries i..i+K-1 (sum left to right / K)."""
    K = cfg.block_size
    if cfg.block_score == "max":
        return max(scores[i:i + K])
    total = 0.0
    for j in range(i, i + K):
        total += scores[j]
    return total / K


def loop_focus_step(wc: WorkingContext, scores: torch.Tensor, T: int, cfg: MCConfig):
    """`(new_wc, actions)` exactly as `megacontext.focus_step`, computed entry by entry."""
    K, budget = cfg.block_size, cfg.budget
    lods, starts, res = wc.lods.tolist(), wc.starts.tolist(), wc.residency.tolist()
    loop_validate(lods, starts, T, cfg)
    xs = scores.double().tolist()
    if len(xs) != len(lods) or not all(math.isfinite(v) for v in xs):
        raise ValueError("scores")
    n = len(lods)
    new = [False] * n  # created by an action this step
    actions = []

    # 1. forced: rescan the groups after every collapse; evict only when none is left.
    while len(lods) > budget:
        heads = loop_groups(lods, starts, T, cfg)
        if not heads:
            break
        i = min(heads, key=lambda h: (loop_group_score(xs, h, cfg), starts[h]))
        actions.append(Action("collapse", lods[i], starts[i]))
        score = loop_group_score(xs, i, cfg)
        lods[i:i + K], starts[i:i + K] = [lods[i] + 1], [starts[i]]
        res[i:i + K], xs[i:i + K], new[i:i + K] = [0], [score], [True]
    while len(lods) > budget:
        actions.append(Action("evict", lods[0], starts[0]))
        for column in (lods, starts, res, xs, new):
            del column[0]

    # 2. main: candidates and swap groups among untouched, mature entries. From here on
    # entries are only marked; the new WC is built in one pass at the end.
    n = len(lods)
    used = list(new)
    mature = [not new[i] and res[i] >= cfg.min_residency for i in range(n)]
    candidates = sorted((-xs[i], starts[i], i) for i in range(n)
                        if mature[i] and lods[i] > 0 and xs[i] > cfg.expand_threshold)
    swap = sorted((loop_group_score(xs, h, cfg), starts[h], h)
                  for h in loop_groups(lods, starts, T, cfg) if all(mature[h:h + K]))
    expand, collapse = [False] * n, [False] * n

    def mark_collapse(h):
        actions.append(Action("collapse", lods[h], starts[h]))
        used[h:h + K] = [True] * K
        collapse[h] = True

    left = cfg.max_actions
    first_free = 0  # swap[:first_free] are used
    for neg_score, _, c in candidates:
        if left == 0:
            break
        if used[c]:
            continue
        if n + K - 1 > budget:
            pick = None
            for k in range(first_free, len(swap)):
                score, _, h = swap[k]
                if any(used[h:h + K]):
                    if k == first_free:
                        first_free += 1
                elif not h <= c < h + K:
                    pick = (score, h)
                    break
            if pick is None or left < 2 or not -neg_score - pick[0] > cfg.swap_margin:
                break
            mark_collapse(pick[1])
            left -= 1
        actions.append(Action("expand", lods[c], starts[c]))
        used[c] = expand[c] = True
        n += K - 1
        left -= 1

    # 3. voluntary collapses, lowest score first.
    for score, _, h in swap:
        if left == 0 or not score < -cfg.collapse_threshold:
            break
        if not any(used[h:h + K]):
            mark_collapse(h)
            left -= 1

    out_lods, out_starts, out_res = [], [], []
    i = 0
    while i < len(lods):
        if collapse[i]:
            out_lods.append(lods[i] + 1), out_starts.append(starts[i]), out_res.append(0)
            i += K
            continue
        if expand[i]:
            child = K ** (lods[i] - 1)
            for j in range(K):
                out_lods.append(lods[i] - 1), out_starts.append(starts[i] + j * child)
                out_res.append(0)
        else:
            out_lods.append(lods[i]), out_starts.append(starts[i])
            out_res.append(0 if new[i] else res[i] + 1)
        i += 1
    new_wc = WorkingContext(*(torch.tensor(col, dtype=torch.int64)
                              for col in (out_lods, out_starts, out_res)))
    return new_wc, actions
