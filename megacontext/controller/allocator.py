"""The focus allocator: LensNet's signed scores -> legal, block-aligned actions (contract §5).

`focus_step` is greedy, discrete and deterministic. Everything proportional to the number of
entries N is one numpy pass (validation, groups, group scores, candidate selection, building
the new WC); Python loops run only over the actions taken, which are few (`max_actions`, plus
whatever forced collapses the budget needs).

Scores are compared as float64 (a float32/bf16 score converts exactly; float32 scores stay
float32 where only a threshold comparison needs them, done exactly by `exceeds`), and a
group's mean is the float64 sum of its member scores taken left to right, divided by K, so a
port can reproduce every decision bit for bit.
"""

from __future__ import annotations

import functools
import heapq
import math
from typing import NamedTuple

import numpy as np
import torch

from ..device import HOST
from ..errors import InputError, InputTypeError, check_tensor
from .config import BLOCK_SCORE_MODES, MCConfig
from .legality import sibling_groups
from .working_context import WorkingContext, as_numpy, validate_layout

EXPAND, COLLAPSE, EVICT = "expand", "collapse", "evict"


class Action(NamedTuple):
    """One edit of the WC, named by what it acted on *before* the action (contract §4).

    expand: the gist (its lod, its start); collapse: the sibling group (the members' lod, the
    first member's start); evict: the evicted entry.
    """

    kind: str  # "expand" | "collapse" | "evict"
    lod: int
    start: int


# --- scores ---------------------------------------------------------------------------------


def scores_as_float64(scores, n: int, name: str = "scores") -> np.ndarray:
    """Check a score vector (floating, 1-D, length n, finite) and return it as float64 [n]."""
    return scores_as_numpy(scores, n, name).astype(np.float64)


def scores_as_numpy(scores, n: int, name: str = "scores") -> np.ndarray:
    """Check a score vector (floating, 1-D, length n, finite) and return a float32 or float64
    numpy view of it (bf16/fp16 converted to float32, exactly).

    The focus step compares and sums scores in float64 but converts only the few it needs
    (group members, candidates): a float32 -> float64 copy of all N scores is a pass it can
    skip. Thresholds are compared through `exceeds`, which is exact for float32.
    """
    try:  # the common case, a float32/float64 CPU tensor without grad: checked on its view
        x = scores.numpy()
    except (AttributeError, RuntimeError, TypeError):  # not a tensor, grad, device, bf16...
        x = None
    if x is None or x.dtype not in (np.float32, np.float64) or x.ndim != 1 or x.shape[0] != n:
        check_tensor(name, scores, ndim=1, floating=True, length=n,
                     length_of="the working context")
        if scores.dtype not in (torch.float32, torch.float64):
            scores = scores.float()  # bf16/fp16 -> fp32 is exact; numpy has no bf16
        x = as_numpy(scores)
    # One pass for the common case: a NaN or inf makes the sum non-finite (so can an overflow
    # of huge finite scores, which the exact check below then lets through).
    if not math.isfinite(x.sum()) and not np.isfinite(x).all():
        i = int(np.argmax(~np.isfinite(x)))
        raise InputError(f"{name} must be finite; {name}[{i}] = {x[i]}")
    return x


def exceeds(x: np.ndarray, threshold: float) -> np.ndarray:
    """`x > threshold` [n] bool, compared as real numbers (as in float64) for float32 `x` too.

    numpy would round a Python float threshold to float32 first, which can flip a comparison;
    for float32 x, `x > t` holds exactly when x > the largest float32 <= t.
    """
    if x.dtype == np.float64:
        return x > threshold
    return x > float32_below(threshold)


@functools.lru_cache(maxsize=64)
def float32_below(threshold: float) -> np.float32:
    """The largest float32 <= threshold (float32's max for a threshold beyond its range)."""
    with np.errstate(over="ignore"):
        t32 = np.float32(threshold)  # nearest; inf beyond float32's range
    if float(t32) > threshold:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return t32


def block_scores(scores: torch.Tensor, group_id: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """Per-group aggregate of member scores: `[G]` float64, G = max(group_id) + 1.

    `group_id[N]` int64 is -1 for an entry in no group, else the entry's group in 0..G-1 (as
    `legal_actions` returns it); every group needs at least one member. `how="mean"`: the
    float64 sum of the members' scores in position order, divided by the member count;
    `how="max"`: the largest member score (the conservative choice: one entry worth keeping
    keeps its group). NaN/inf scores raise.
    """
    if how not in BLOCK_SCORE_MODES:
        raise InputError(f"how must be one of {BLOCK_SCORE_MODES}, got {how!r}")
    check_tensor("group_id", group_id, ndim=1, dtype=torch.int64)
    n = group_id.shape[0]
    x = scores_as_float64(scores, n)
    gid = as_numpy(group_id)
    if n and gid.min() < -1:
        i = int(np.argmax(gid < -1))
        raise InputError(f"group_id[{i}] = {gid[i]}: ids are -1 (no group) or 0..G-1")
    member = gid >= 0
    G = int(gid.max()) + 1 if n else 0
    if G <= 0:
        return torch.zeros(0, dtype=torch.float64, device=HOST)
    ids, vals = gid[member], x[member]
    counts = np.bincount(ids, minlength=G)
    if not counts.all():
        g = int(np.argmin(counts))
        raise InputError(f"group_id names groups 0..{G - 1} but group {g} has no member")
    if how == "mean":
        out = np.bincount(ids, weights=vals, minlength=G) / counts  # sequential sums
    else:
        order = np.argsort(ids, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(counts)[:-1]])
        out = np.maximum.reduceat(vals[order], bounds)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float64))


def aggregate(values: np.ndarray, how: str) -> float:
    """One group's score from its member scores, exactly as `block_scores` computes it."""
    if how == "max":
        return float(values.max())
    total = 0.0
    for v in values.tolist():  # left to right, as np.bincount accumulates
        total += v
    return total / values.shape[0]


def group_scores(x: np.ndarray, members: np.ndarray, how: str) -> np.ndarray:
    """[G] scores of the groups `members` ([K, G] rows), exactly as `block_scores`."""
    vals = x[members].astype(np.float64, copy=False)  # [K, G]: member j of group g in row j
    if how == "max":
        return vals.max(axis=0)
    # Reducing over the outer axis adds row after row: the sequential left-to-right sum that
    # block_scores' bincount computes (a reduction along the inner axis would be pairwise).
    return vals.sum(axis=0) / members.shape[0]


def group_of(rows: np.ndarray, heads: np.ndarray, K: int) -> np.ndarray:
    """[len(rows)] the group containing each row (groups are rows heads[g] + 0..K-1), or -1."""
    g = np.searchsorted(heads, rows, side="right") - 1
    inside = (g >= 0) & (rows < heads[np.maximum(g, 0)] + K) if heads.size else g >= 0
    return np.where(inside, g, -1)


def member_rows(heads: np.ndarray, K: int) -> np.ndarray:
    """[K, G] row of member j of group g (groups are rows heads[g] + 0..K-1)."""
    return np.arange(K)[:, None] + heads


# --- candidate orders -----------------------------------------------------------------------


def descending(vals: np.ndarray, first: int):
    """Yield chunks of positions into `vals`, together in order of value descending, ties in
    position order.

    The main phase rarely looks past the first few candidates, so only the best `first` (plus
    every tie of the last of them) are sorted up front; the rest only if the loop gets there.
    """
    n = vals.shape[0]
    if n <= first:
        yield (-vals).argsort(kind="stable")
        return
    cut = np.partition(vals, n - first)[n - first]  # the first-th largest value
    best = (vals >= cut).nonzero()[0]
    yield best[(-vals[best]).argsort(kind="stable")]
    rest = (vals < cut).nonzero()[0]
    yield rest[(-vals[rest]).argsort(kind="stable")]


# --- the focus step -------------------------------------------------------------------------


def focus_step(
    wc: WorkingContext, scores: torch.Tensor, T: int, cfg: MCConfig
) -> tuple[WorkingContext, list[Action]]:
    """One focus step: `(new_wc, actions)`, the actions in the order they were applied.

    `wc` must be valid for `T` tokens except that it may exceed the budget (the state after
    `append_tokens`); `scores[N]` is LensNet's signed utility per entry (floating, finite).
    Groups are those of `legal_actions`; a group's score is `block_scores(..., cfg.block_score)`.

    1. Forced: while N > budget, collapse the legal group with the lowest (score, start),
       ignoring thresholds, hysteresis and `max_actions`. Forced collapses may cascade: the new
       parent carries its group's score and, once its K siblings are all present at its
       level, their group joins the pool — so history is kept at a coarser level rather than
       evicted. Only when no legal group is left are the oldest entries evicted, just enough
       to fit (`evict` actions, oldest first).
    2. Main: expand candidates are gists with residency >= min_residency and score >
       expand_threshold, by score descending (ties: older start first). Swap groups are legal
       groups whose members all have residency >= min_residency, by score ascending (ties:
       older group first). For each candidate: expand it if N + K - 1 <= budget; otherwise
       collapse the lowest-scoring unused group that does not contain it and expand it, if
       score - group_score > swap_margin and two actions remain; otherwise stop.
    3. Voluntary: collapse the remaining unused swap groups with score < -collapse_threshold,
       lowest first.

    Expansions and main/voluntary collapses together are at most `max_actions` (a swap is two
    actions, applied collapse first so N never exceeds the budget). Outside the forced phase
    an entry takes part in at most one action per step: an entry created or touched by an
    action is not acted on again in the same step, and a group is unusable once any member
    was. Residency: entries created by an action (an expansion's children, a collapse's
    parent) get 0; every other surviving entry gets its residency + 1. An entry is acted on
    (outside forced collapses) only if its input residency >= min_residency, so two such
    changes of one entry are more than min_residency steps apart.

    Returns a new WC valid for T and within the budget, and the list of `Action`s applied.

    Raises (nothing is clamped or skipped; contract §4.1, §5.1):
      InputTypeError  `cfg` is not an MCConfig; `wc` is not a WorkingContext; `scores` is not a
                      torch.Tensor or not floating point; `T` is not an int.
      InputError      `scores` is not 1-D or its length differs from len(wc); a score is NaN or
                      infinite (the message names the first such index); `T` < 0; a residency
                      is negative.
      LevelError, AlignmentError, ContiguityError, CoverageError, TailError
                      (InvariantError subclasses) `wc` breaks that invariant for T; the error's
                      `index` is the first offending entry. (BudgetError is never raised: the
                      input may exceed the budget.)
    """
    if not isinstance(cfg, MCConfig):
        raise InputTypeError(f"cfg must be an MCConfig, got {type(cfg).__name__}")
    if not isinstance(wc, WorkingContext):
        raise InputTypeError(f"wc must be a WorkingContext, got {type(wc).__name__}")
    lods, starts, res = as_numpy(wc.lods), as_numpy(wc.starts), as_numpy(wc.residency)
    spans, ends, first_in_tail, head_min_res = validate_layout(lods, starts, res, T, cfg,
                                                               check_budget=False)
    n_in = lods.shape[0]
    x = scores_as_numpy(scores, n_in)  # float32 or float64 [N]
    K, budget, how = cfg.block_size, cfg.budget, cfg.block_score

    # [G] first member of each group
    heads = sibling_groups(lods, starts, T, cfg, spans, ends, first_in_tail)
    G = heads.shape[0]
    members = member_rows(heads, K)  # [K, G]
    gscore = group_scores(x, members, how)  # [G]
    # ascending score, ties: older group first (heads ascend, so a stable sort breaks them)
    group_order = gscore.argsort(kind="stable")
    heads_l, head_lods, head_starts = heads.tolist(), lods[heads].tolist(), starts[heads].tolist()

    # The WC is edited in place on the input rows: a collapse's parent keeps its first
    # member's row (at lod + 1) and the other members die; expansions are spliced in at the end.
    # Per-row flags are bytearrays (cheap single-item and slice writes from the action loop)
    # with numpy views for the vectorized work.
    actions: list[Action] = []
    n = n_in
    alive = bytearray(b"\x01") * n_in  # row i still starts an entry of the WC
    touched = bytearray(n_in)  # row i took part in an action this step
    alive_np, touched_np = np.frombuffer(alive, dtype=bool), np.frombuffer(touched, dtype=bool)
    out_lods = lods.copy()
    dead_k, used_k = bytes(K - 1), b"\x01" * K
    created: list[int] = []  # rows of parents made by collapses (residency 0)
    expanded: list[int] = []
    group_used = [False] * G

    def collapse_group(g: int) -> None:
        nonlocal n
        head = heads_l[g]
        actions.append(Action(COLLAPSE, head_lods[g], head_starts[g]))
        alive[head + 1:head + K] = dead_k
        touched[head:head + K] = used_k
        out_lods[head] = head_lods[g] + 1
        created.append(head)
        group_used[g] = True
        n -= K - 1

    # 1. forced collapses, lowest (score, start) first, cascading into the groups that new
    # parents complete; then eviction if nothing is left to collapse.
    order, gscore_l = group_order.tolist(), gscore.tolist()
    next_group = 0  # order[:next_group] were collapsed here
    if n > budget:
        parent_score: dict[int, float] = {}  # row -> score of a parent made here (its group's)
        cascaded: list[tuple[float, int, int, int, np.ndarray]] = []  # heap of new groups
        while n > budget:
            g = order[next_group] if next_group < G else -1
            if cascaded and (g < 0 or cascaded[0][:2] < (gscore_l[g], head_starts[g])):
                score, start, head, lod, run = heapq.heappop(cascaded)
                actions.append(Action(COLLAPSE, lod, start))
                alive_np[run[1:]] = False
                touched_np[run] = True
                out_lods[head] = lod + 1
                created.append(head)
                n -= K - 1
            elif g >= 0:
                score, head, lod = gscore_l[g], heads_l[g], head_lods[g]
                collapse_group(g)
                next_group += 1
            else:
                break
            parent_score[head] = score
            run = sibling_run(head, lod + 1, starts, alive_np, out_lods, T, cfg)
            if run is not None:
                first = int(run[0])
                vals = x[run].astype(np.float64)  # [K] the members' current scores
                for i, r in enumerate(run.tolist()):
                    if r in parent_score:
                        vals[i] = parent_score[r]
                heapq.heappush(cascaded, (aggregate(vals, how), int(starts[first]),
                                          first, lod + 1, run))
        if n > budget:  # no legal group left: evict the oldest entries, just enough
            victims = np.flatnonzero(alive_np)[: n - budget]
            for lod, start in zip(out_lods[victims].tolist(), starts[victims].tolist(),
                                  strict=True):
                actions.append(Action(EVICT, lod, start))
            alive_np[victims] = False
            touched_np[victims] = True
            n = budget

    # 2. main phase: expansions, paired with swap collapses once the budget is full.
    left = cfg.max_actions
    min_res = cfg.min_residency
    swap_groups = group_order[next_group:]
    # Only rows before the tail can be gists or group members; in the common case every one
    # of them is old enough (the young ones are new tokens in the tail), which validation's
    # residency minimum already tells.
    any_young = first_in_tail > 0 and head_min_res < min_res
    young = (res[:first_in_tail] < min_res).nonzero()[0] if any_young else ()
    if len(young) and G:  # only groups whose every member is old enough
        group_ok = np.ones(G, dtype=bool)
        g = group_of(young, heads, K)
        group_ok[g[g >= 0]] = False
        swap_groups = swap_groups[group_ok[swap_groups]]
    swap_scores = gscore[swap_groups].tolist()  # ascending
    swap_groups = swap_groups.tolist()
    n_swap = len(swap_groups)
    g_ptr = 0  # swap_groups[:g_ptr] are used

    wanted = exceeds(x[:first_in_tail], cfg.expand_threshold)
    wanted &= lods[:first_in_tail] > 0
    if any_young:
        wanted &= res[:first_in_tail] >= min_res
    cand = wanted.nonzero()[0]
    cand_x = x[cand].astype(np.float64, copy=False)
    # From here on the loop only records: heads of the groups collapsed (and their members'
    # rows dead in `alive`), rows expanded, actions (as Actions built with tuple.__new__, half
    # the cost of the NamedTuple constructor); lods, starts and residencies are edited in one
    # vectorized pass afterwards.
    merged: list[int] = []  # rows of the main-phase parents (a collapsed group's head)
    group_gone = [False] * G  # collapsed (its members are gone)
    for g in order[:next_group]:
        group_gone[g] = True
    make = tuple.__new__
    swap_margin, collapse_below = cfg.swap_margin, -cfg.collapse_threshold
    full = budget - (K - 1)  # n > full: no room for an expansion without a collapse
    record, expand_row, merge_at = actions.append, expanded.append, merged.append
    stop = cand.shape[0] == 0
    for chunk in () if stop else descending(cand_x, 2 * left + 1):
        rows = cand[chunk]
        # the group just before each candidate; it contains the candidate only if it reaches it
        before = (heads.searchsorted(rows, "right") - 1).tolist()
        for e, score, lod, start, own in zip(rows.tolist(), cand_x[chunk].tolist(),
                                             lods[rows].tolist(), starts[rows].tolist(),
                                             before, strict=True):
            if left == 0:
                stop = True
                break
            if own >= 0 and e >= heads_l[own] + K:
                own = -1
            if touched[e] or (own >= 0 and group_gone[own]):  # collapsed away, or evicted
                continue
            if n > full:
                while g_ptr < n_swap and group_used[swap_groups[g_ptr]]:
                    g_ptr += 1
                j = g_ptr
                while j < n_swap and (group_used[swap_groups[j]] or swap_groups[j] == own):
                    j += 1
                if j == n_swap or left < 2 or not score - swap_scores[j] > swap_margin:
                    stop = True
                    break
                g = swap_groups[j]
                record(make(Action, (COLLAPSE, head_lods[g], head_starts[g])))
                head = heads_l[g]
                merge_at(head)
                alive[head + 1:head + K] = dead_k
                group_used[g] = group_gone[g] = True
                left -= 1
            record(make(Action, (EXPAND, lod, start)))
            expand_row(e)
            if own >= 0:
                group_used[own] = True
            n += K - 1
            left -= 1
        if stop:
            break

    # 3. voluntary collapses of what is left, lowest score first.
    for j in range(g_ptr, n_swap):
        if left == 0 or not swap_scores[j] < collapse_below:
            break
        g = swap_groups[j]
        if not group_used[g]:
            actions.append(make(Action, (COLLAPSE, head_lods[g], head_starts[g])))
            head = heads_l[g]
            merged.append(head)
            alive[head + 1:head + K] = dead_k
            group_used[g] = True
            left -= 1

    new_wc = build_result(lods, starts, res, spans, alive_np, out_lods, created, merged,
                          expanded, K)
    return new_wc, actions


def sibling_run(head: int, lod: int, starts: np.ndarray, alive: np.ndarray,
                cur_lods: np.ndarray, T: int, cfg: MCConfig) -> np.ndarray | None:
    """After a forced collapse made an LOD-`lod` parent at row `head`: the rows of its K
    siblings (itself included) if they now form a legal group, else None.

    Every entry of the edited WC starts where some input row started (a parent keeps its
    first member's row), so a sibling slot is filled iff an alive row starts there at `lod`.
    """
    K = cfg.block_size
    if lod >= cfg.max_lod:
        return None
    p, parent = int(starts[head]), cfg.span(lod + 1)
    q = p - p % parent
    if q + parent > cfg.tail_start(T):
        return None
    # The last sibling's slot first (scalar reads): it is usually what is missing.
    last = q + parent - cfg.span(lod)
    r = int(starts.searchsorted(last))
    if r == starts.shape[0] or starts[r] != last or not alive[r] or cur_lods[r] != lod:
        return None
    slots = q + cfg.span(lod) * np.arange(K, dtype=np.int64)
    rows = np.minimum(np.searchsorted(starts, slots), starts.shape[0] - 1)
    if (starts[rows] == slots).all() and alive[rows].all() and (cur_lods[rows] == lod).all():
        return rows
    return None


def build_result(lods, starts, res, spans, alive, out_lods, created, merged, expanded, K):
    """The new WC: surviving rows (parents at their new lod), each expanded gist replaced by
    its K children. Survivors' residency + 1; parents and children 0.

    `alive`/`out_lods`/`created` carry the forced phase's edits (`created` may name rows that
    later died); `merged` are the heads of the main-phase collapses (their other members
    already dead in `alive`; their lod goes up one here); `expanded` the expanded rows.
    """
    n = lods.shape[0]
    counts = alive.astype(np.intp)  # output rows per input row: 0 dead, 1 kept, K expanded
    fresh = [r for r in created if alive[r]] + merged  # rows of the new parents
    if merged:
        out_lods[merged] += 1
    if expanded:
        expanded.sort()
        out_lods[expanded] -= 1  # each child: one level down, residency 0, start shifted below
        counts[expanded] = K
    rows = np.arange(n).repeat(counts)  # ascending; an expanded row K times
    new_lods, new_starts, new_res = out_lods[rows], starts[rows], res[rows]
    new_res += 1
    if fresh or expanded:
        at = rows.searchsorted(fresh + expanded)  # output row of each (an expansion's first)
        new_res[at] = 0
        if expanded:
            ks = np.arange(K)
            kids = at[len(fresh):, None] + ks  # [E, K] output rows
            new_res[kids] = 0
            new_starts[kids] += (spans[expanded] // K)[:, None] * ks
    return WorkingContext._from_trusted(new_lods, new_starts, new_res)
