"""Hypothesis strategies for the spec suite: configs, histories, valid working contexts, scores.

Valid WCs are built here from first principles (the coarsest legal tiling, refined by random
expansions, evicted from the oldest end only when even the coarsest tiling exceeds the
budget), not by the implementation under test, so specs can check the implementation's
`validate` and operations against an independent construction. Configs are small (K <= 6) so
every level, the tail, partial blocks and eviction all show up within a few hundred tokens.
"""

from __future__ import annotations

import dataclasses

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
    """[(lod, start)] of the coarsest legal tiling of [0, T): contract §3 invariants 3, 4, 6."""
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
        quiet = float(np.float32(0.05))  # hypothesis needs float32-exact bounds at width=32
        elem = st.floats(-quiet, quiet, width=32)
    else:
        elem = st.one_of(st.floats(-1, 1, width=32), st.sampled_from([-0.5, 0.0, 0.5]))
    return st.lists(elem, min_size=n, max_size=n).map(
        lambda xs: torch.tensor(np.asarray(xs, dtype=np.float32))
    )


# --- KL substitutability and barrier (contract §7) -------------------------------------------

KL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@st.composite
def log_prob_pairs(draw, dtypes=KL_DTYPES, max_batch: int = 2, max_positions: int = 6,
                   max_vocab: int = 8):
    """(logp_student, logp_ref, mask, seed): log_softmax of seeded random logits rounded to a
    drawn dtype, shape [B, T, V] (T may be 0); ref is the student moved by a drawn amount
    (0 = identical); mask [B, T] bool is all-true, all-false or random."""
    dtype = draw(st.sampled_from(dtypes))
    B, T = draw(st.integers(1, max_batch)), draw(st.integers(0, max_positions))
    V = draw(st.integers(1, max_vocab))
    scale = draw(st.sampled_from([0.3, 1.0, 4.0]))  # near-uniform .. peaked
    shift = draw(st.sampled_from([0.0, 0.05, 1.0, 3.0]))  # how far ref is from the student
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(B, T, V, generator=g)
    student = logits.log_softmax(-1).to(dtype)
    ref = (logits + shift * torch.randn(B, T, V, generator=g)).log_softmax(-1).to(dtype)
    kind = draw(st.sampled_from(["all", "none", "random"]))
    if kind == "random":
        mask = torch.rand(B, T, generator=g) < 0.5
    else:
        mask = torch.full((B, T), kind == "all")
    return student, ref, mask, seed


def kl_values(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[torch.Tensor]:
    """Non-negative float32 per-position KLs [n]: ties, zeros, tiny and large values."""
    elem = st.one_of(st.floats(0, 50, width=32), st.sampled_from([0.0, 1e-30, 0.5, 8.0]))
    return st.lists(elem, min_size=min_size, max_size=max_size).map(
        lambda xs: torch.tensor(np.asarray(xs, dtype=np.float32))
    )


# --- lens supervision (contract §6) ----------------------------------------------------------

NAN = float("nan")


def reference_group_ids(cfg, T: int, entries) -> list[int]:
    """Sibling group of each entry by a direct scan (contract §3), -1 where none; independent of
    the implementation's legal_actions."""
    K, gid, g, i = cfg.block_size, [-1] * len(entries), 0, 0
    while i + K <= len(entries):
        lod, start = entries[i]
        parent = span(cfg, lod + 1)
        if (lod < cfg.max_lod and start % parent == 0
                and all(e[0] == lod for e in entries[i:i + K])
                and start + parent <= tail_start(cfg, T)):
            gid[i:i + K] = [g] * K
            g, i = g + 1, i + K
        else:
            i += 1
    return gid


def _f32(xs) -> torch.Tensor:
    return torch.tensor(np.asarray(xs, dtype=np.float32))


@st.composite
def rich_cases(draw):
    """(cfg, T, wc) with plenty to supervise: K <= 4, a short tail, a history of at least one
    top-level span and a budget with room above the coarsest tiling, so gists, sibling groups
    at every level, the tail and partial blocks all occur (no eviction)."""
    K, max_lod = draw(st.integers(2, 4)), draw(st.integers(1, 3))
    recent, top = draw(st.integers(0, 2 * K)), K**max_lod
    T = draw(st.integers(top, 3 * top + 2 * K + 3))
    probe = mc.MCConfig(block_size=K, max_lod=max_lod, recent_tokens=recent,
                        budget=max(T, recent) + 1)
    coarse = len(coarsest_tiling(probe, T))
    budget = draw(st.integers(max(coarse, recent, 1), max(coarse, recent) + 8 * K))
    cfg = mc.MCConfig(block_size=K, max_lod=max_lod, recent_tokens=recent, budget=budget)
    return cfg, T, draw(working_contexts(cfg, T))


def supervision_cases() -> st.SearchStrategy:
    """rich_cases mostly, any case (empty, evicted, all-LOD0 WCs) sometimes."""
    return st.one_of(rich_cases(), rich_cases(), cases())


def utility_values() -> st.SearchStrategy[float]:
    """One ΔNLL utility in nats: NaN (not measured), ties, zeros, spread values."""
    return st.one_of(st.just(NAN), st.sampled_from([0.0, 0.25, 1.0, 3.0]),
                     st.floats(-1, 4, width=32))


@st.composite
def utility_cases(draw, case_strategy=None):
    """(cfg, T, wc, expand_gain, collapse_loss, price) for lens_targets_from_utilities.

    expand_gain is drawn per entry (LOD0 entries too: those values must be ignored).
    collapse_loss holds one value per sibling group (or NaN), carried by a random non-empty
    subset of its members (the rest NaN: the implementation must broadcast), and random values
    on entries in no group (illegal collapses: must be ignored)."""
    cfg, T, wc = draw(case_strategy or supervision_cases())
    entries, n = entries_of(wc), len(wc)
    gid = reference_group_ids(cfg, T, entries)
    gain = [draw(utility_values()) for _ in range(n)]
    loss = [NAN] * n
    for g in range(max(gid, default=-1) + 1):
        members = [i for i in range(n) if gid[i] == g]
        value = draw(utility_values())
        carriers = draw(st.lists(st.sampled_from(members), min_size=1, unique=True))
        for i in carriers:
            loss[i] = value
    for i in range(n):
        if gid[i] < 0:
            loss[i] = draw(utility_values())
    price = draw(st.sampled_from([0.0, 0.01, 0.1, 0.5]))
    return cfg, T, wc, _f32(gain), _f32(loss), price


@st.composite
def variant_pairs(draw, case_strategy=None):
    """(cfg, T, wc, best_wc, delta_loss): two valid WCs for the same history. best is either
    an independent random WC or wc after a few random legal edits (expanding gists, collapsing
    sibling groups), so both finer and coarser regions occur; either WC may have a few oldest
    entries evicted (so spans can be partly evicted in best)."""
    cfg, T, wc = draw(case_strategy or supervision_cases())
    K = cfg.block_size
    if draw(st.sampled_from(["edited", "edited", "independent"])) == "independent":
        best = entries_of(draw(working_contexts(cfg, T)))
    else:  # collapse one or two groups, then expand one or two other gists (never undo)
        best, created = entries_of(wc), set()
        for kind in ["collapse"] * draw(st.integers(1, 2)) + ["expand"] * draw(st.integers(1, 2)):
            if kind == "collapse":
                gid = reference_group_ids(cfg, T, best)
                heads = [i for i in range(len(best))
                         if gid[i] >= 0 and (i == 0 or gid[i - 1] != gid[i])]
                if heads:
                    i = draw(st.sampled_from(heads))
                    lod, start = best[i]
                    best = best[:i] + [(lod + 1, start)] + best[i + K:]
                    created.add((lod + 1, start))
            else:
                gists = [i for i, e in enumerate(best) if e[0] > 0 and e not in created]
                if gists:
                    best = expand(best, draw(st.sampled_from(gists)), cfg)

    def evict(entries):
        k = min(draw(st.sampled_from([0, 0, 0, 1, 3])), max(len(entries) - 1, 0))
        return make_wc(entries[k:])

    delta = draw(st.one_of(st.sampled_from([0.3, -0.3, 2.0, 0.0]), st.floats(-5, 5)))
    return cfg, T, evict(entries_of(wc)), evict(best), delta


def target_values() -> st.SearchStrategy[float]:
    """One lens target: zeros, ties (the best-variant kind), spread utilities."""
    return st.one_of(st.sampled_from([0.0, 0.5, -0.5, 0.7615942, -0.7615942]),
                     st.floats(-3, 3, width=32).filter(lambda x: x == 0 or abs(x) > 1e-3))


@st.composite
def loss_cases(draw, case_strategy=None, mask_kind: str | None = None,
               tied_targets: bool = False):
    """(cfg, T, wc, scores, targets, mask) for lens_loss: float32 scores in [-1, 1] (spread,
    tied or saturated), targets mixing ties, zeros and spread utilities (|t| >= 1e-3 or 0), NaN
    wherever the mask is off (allowed: "not measured"), mask random/all/none. Values come from
    a drawn seed (a few draws per example instead of three per entry). tied_targets: every
    target from the five-value pool (long runs of equal targets, as best-variant targets)."""
    cfg, T, wc = draw((case_strategy or supervision_cases()).filter(lambda c: c[1] > 0))
    n = len(wc)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    score_kind = draw(st.sampled_from(["spread", "ties", "saturated"]))
    if score_kind == "spread":
        scores = torch.rand(n, generator=g) * 2 - 1
    elif score_kind == "ties":
        scores = torch.tensor([-0.75, -0.25, 0.0, 0.25, 0.75])[torch.randint(5, (n,),
                                                                                generator=g)]
    else:
        scores = torch.sign(torch.randn(n, generator=g)) * (1 - 1e-3 * torch.rand(n, generator=g))
    pool = torch.tensor([0.0, 0.5, -0.5, 0.7615942, -0.7615942])
    tied = pool[torch.randint(5, (n,), generator=g)]
    spread = torch.randn(n, generator=g) * draw(st.sampled_from([1.0, 0.1, 3.0]))
    spread = torch.where(spread.abs() < 1e-3, 0.0, spread)
    p_tied = 1.0 if tied_targets else draw(st.sampled_from([0.5, 0.0, 1.0]))
    targets = torch.where(torch.rand(n, generator=g) < p_tied, tied, spread)
    kind = mask_kind or draw(st.sampled_from(["random", "random", "all", "none"]))
    if kind == "random":
        mask = torch.rand(n, generator=g) < draw(st.sampled_from([0.5, 0.1, 0.9]))
    else:
        mask = torch.full((n,), kind == "all")
    return cfg, T, wc, scores, torch.where(mask, targets, NAN), mask


def variant_losses() -> st.SearchStrategy[torch.Tensor]:
    """Per-variant losses [V] (nats): ties, spread values, V from 1 to 12."""
    elem = st.one_of(st.sampled_from([0.5, 1.0, 2.5]), st.floats(0, 20, width=32))
    return st.lists(elem, min_size=1, max_size=12).map(_f32)


# --- lens-gated attention (seed 004) ---------------------------------------------------------


@st.composite
def lens_gated_configs(draw, **fixed):
    """Small LensGatedConfigs (at most 3 heads of 2-8 features) with every mechanism switch
    drawn; keyword arguments pin fields (e.g. reciprocity=True)."""
    n_head = draw(st.integers(1, 3))
    kwargs = dict(
        n_embd=n_head * draw(st.sampled_from([2, 4, 8])),
        n_head=n_head,
        mlp_ratio=draw(st.sampled_from([1.0, 2.0, 4.0])),
        bias=draw(st.booleans()),
        reciprocity=draw(st.booleans()),
        discoverability=draw(st.booleans()),
        route_gate=draw(st.booleans()),
        route_bias_init=draw(st.sampled_from([-1.0, 0.0, 0.8])),
        context=draw(st.sampled_from(["off", "low_rank", "full_rank"])),
        context_rank=draw(st.integers(1, 4)),
        context_alpha=draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
    )
    kwargs.update(fixed)
    return mc.LensGatedConfig(**kwargs)


@st.composite
def telemetry_batches(draw, max_batch: int = 4, max_n: int = 12):
    """(scores [B, N] float32 finite, targets [B, N] float32 with some NaN = not measured,
    mask [B, N] bool): ties, zeros, constant rows and empty rows all occur."""
    B, n = draw(st.integers(1, max_batch)), draw(st.integers(0, max_n))
    val = st.one_of(st.sampled_from([0.0, 0.5, -0.5, 1.0]), st.floats(-3, 3, width=32))
    scores = draw(st.lists(val, min_size=B * n, max_size=B * n))
    targets = draw(st.lists(st.one_of(val, st.just(NAN)), min_size=B * n, max_size=B * n))
    mask = draw(st.lists(st.booleans(), min_size=B * n, max_size=B * n))
    return (_f32(scores).reshape(B, n), _f32(targets).reshape(B, n),
            torch.tensor(mask, dtype=torch.bool).reshape(B, n))


# --- models: LensNet, GistNet, TinyGPT ---------------------------------------------------------


@st.composite
def lens_batches(draw, d_in: int, max_batch: int = 3, max_entries: int = 20):
    """(x [B, N, d_in], features [B, N, 3], lengths [B]) float32: sample b has lengths[b] real
    entries (0 allowed) followed by padding. Values come from a drawn torch seed (cheap)."""
    B = draw(st.integers(1, max_batch))
    lengths = draw(st.lists(st.integers(0, max_entries), min_size=B, max_size=B))
    N = max(lengths)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(B, N, d_in, generator=g) * draw(st.sampled_from([0.1, 1.0, 10.0]))
    lods = torch.randint(0, 3, (B, N), generator=g).float()
    distance = torch.rand(B, N, generator=g) * 12.0
    features = torch.stack([lods, lods * 1.3862944, distance], dim=-1)  # ln 4 = 1.386...
    return x, features, lengths


def position_shifts() -> st.SearchStrategy[float]:
    """A constant added to every RoPE position: integer or fractional, small, to ~1e6, and up
    to 2**31 (beyond 2**24 float32 no longer holds every integer: angles must be computed in
    a wider type). Add it to int64 or float64 positions: a float32 tensor cannot hold them."""
    return st.one_of(
        st.integers(-1000, 10**6),
        st.integers(2**24, 2**31 - 2**10),
        st.sampled_from([0.5, 16.5, 12345.25, 999_999.5, 2**24 + 0.5, 2**30 + 0.25,
                         2**31 - 2**10 + 0.5]),
    )


def shifted(positions: torch.Tensor, shift) -> torch.Tensor:
    """positions + shift without float32 rounding: int64 stays int64 for an integer shift,
    anything else is added in float64 (int64 + a Python float would give float32)."""
    if isinstance(shift, int) and not positions.is_floating_point():
        return positions + shift
    return positions.double() + shift


# --- focus allocator (contract §5) -------------------------------------------------------------


def focus_scores(n: int, starts=None, region: int = 1) -> st.SearchStrategy[torch.Tensor]:
    """float32 scores[n] for focus_step: any, ties, quiet, saturated ±1 (every gist wants to
    expand and every group to collapse: the adversarial field) or, given the entries' starts,
    a field that is constant over `region`-token regions (whole groups agree, so swaps and
    voluntary collapses happen)."""
    def f32(elem):
        return st.lists(elem, min_size=n, max_size=n).map(
            lambda xs: torch.tensor(np.asarray(xs, dtype=np.float32)))

    quiet = f32(st.floats(-0.0625, 0.0625, width=32))  # within every threshold but 0
    kinds = [scores_for(n), scores_for(n, "ties"), quiet, f32(st.sampled_from([-1.0, 1.0]))]
    if starts is not None and n:
        regions = [int(s) // region for s in starts]
        values = st.lists(st.sampled_from([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]),
                          min_size=regions[-1] + 1, max_size=regions[-1] + 1)
        field = values.map(lambda v: torch.tensor([v[r] for r in regions], dtype=torch.float32))
        kinds += [field, field]
    return st.one_of(kinds)


@st.composite
def roomy_cases(draw):
    """(cfg, T, wc) with gists and sibling groups to act on: K <= 4, at least one top-level
    span of history, and a budget from the coarsest tiling's size to 8 blocks above it."""
    K, max_lod = draw(st.integers(2, 4)), draw(st.integers(1, 3))
    recent = draw(st.integers(0, 2 * K))
    T = draw(st.integers(K**max_lod, 3 * K**max_lod + 2 * K + 3))
    probe = mc.MCConfig(block_size=K, max_lod=max_lod, recent_tokens=recent, budget=T + recent + 1)
    coarse = max(len(coarsest_tiling(probe, T)), recent, 1)
    budget = draw(st.integers(coarse, coarse + 8 * K))
    cfg = draw(configs(block_size=K, max_lod=max_lod, recent_tokens=recent, budget=budget))
    return cfg, T, draw(working_contexts(cfg, T))


@st.composite
def focus_cases(draw, case_strategy=None, grow: bool = True):
    """(cfg, T, wc, scores): a valid WC (roomy_cases twice as often as cases), often with
    every entry old enough to act on, with probability 1/2 grown past its budget by
    `append_tokens` (forced collapses, cascades and eviction), and scores of every kind."""
    cfg, T, wc = draw(case_strategy if case_strategy is not None
                    else st.one_of(roomy_cases(), roomy_cases(), cases()))
    if draw(st.booleans()):
        wc = mc.WorkingContext(wc.lods, wc.starts, wc.residency + cfg.min_residency)
    if grow and draw(st.booleans()):
        n = draw(st.integers(1, 3 * cfg.block_size))
        wc, T = mc.append_tokens(wc, T, n, cfg), T + n
    region = span(cfg, draw(st.integers(1, cfg.max_lod)))
    return cfg, T, wc, draw(focus_scores(len(wc), wc.starts.tolist(), region))


def find_entry(entries, start: int) -> int:
    """Index of the entry starting at `start`, -1 if none (entries are sorted by start)."""
    for i, (_, s) in enumerate(entries):
        if s == start:
            return i
    return -1


def replay_focus(cfg, T: int, wc, actions):
    """Apply focus_step's `actions` to the input WC one at a time, checking each is legal.

    Independent of the implementation (contract §3, §5): an expand names a present gist; a
    collapse names K consecutive present entries of one level < max_lod forming a whole
    aligned sibling group whose parent span is complete and outside the protected tail; an
    evict names the oldest entry, only while N > budget and no legal group is left. Returns
    `(entries, origin, records)`: the final `[(lod, start)]`, for each final entry the input
    index it came from unchanged (None: created by an action), and per action a dict with
    `forced` (N > budget before it) and `acted_on` (input indices, None for created entries).
    """
    K = cfg.block_size
    entries, origin = entries_of(wc), list(range(len(wc)))
    records = []
    for a_i, action in enumerate(actions):
        where = f"action {a_i} {action!r} of {list(actions)!r}\nstate={entries}\n" \
                f"{describe(cfg, T, wc)}"
        kind, lod, start = action
        assert kind in ("expand", "collapse", "evict"), f"unknown kind: {where}"
        assert type(lod) is int and type(start) is int, f"lod/start must be plain ints: {where}"
        forced = len(entries) > cfg.budget
        i = find_entry(entries, start)
        assert i >= 0 and entries[i][0] == lod, f"acts on an entry not in the WC: {where}"
        if kind == "expand":
            assert lod > 0, f"an LOD0 entry cannot expand: {where}"
            acted = [origin[i]]
            kids = expand(entries, i, cfg)[i:i + K]
            entries[i:i + 1], origin[i:i + 1] = kids, [None] * K
        elif kind == "collapse":
            assert lod < cfg.max_lod, f"an LOD-max entry cannot collapse: {where}"
            parent = span(cfg, lod + 1)
            assert start % parent == 0, f"collapse not aligned to its parent span: {where}"
            assert start + parent <= tail_start(cfg, T), (
                f"collapse of a partial or protected span (tail starts at "
                f"{tail_start(cfg, T)}): {where}")
            group = entries[i:i + K]
            assert len(group) == K and all(e[0] == lod for e in group), (
                f"collapse of something other than K siblings of one level: {where}")
            acted = origin[i:i + K]
            entries[i:i + K], origin[i:i + K] = [(lod + 1, start)], [None]
        else:
            assert forced, f"eviction while the WC fits the budget: {where}"
            assert i == 0, f"evicts an entry other than the oldest: {where}"
            assert max(reference_group_ids(cfg, T, entries), default=-1) < 0, (
                f"evicts while a legal group could still be collapsed: {where}")
            acted = [origin[0]]
            del entries[0], origin[0]
        records.append({"kind": kind, "lod": lod, "start": start, "forced": forced,
                        "acted_on": acted})
    return entries, origin, records


@st.composite
def voluntary_collapse_cases(draw):
    """(cfg, T, wc, scores) where voluntary collapses (§5 step 4) are due: a roomy WC within
    budget with at least one sibling group, every entry old enough to act on, and scores
    constant over regions of one group span, mostly negative, so whole groups score below
    -collapse_threshold. focus_cases rarely gets here (under the ci profile, none of its 50
    examples reached step 4 with actions to spare)."""
    cfg, T, wc = draw(roomy_cases().filter(
        lambda c: max(reference_group_ids(c[0], c[1], entries_of(c[2])), default=-1) >= 0))
    wc = mc.WorkingContext(wc.lods, wc.starts, wc.residency + cfg.min_residency)
    region = span(cfg, draw(st.integers(1, cfg.max_lod)))
    regions = [s // region for s in wc.starts.tolist()]
    values = draw(st.lists(st.sampled_from([-1.0, -0.5, -0.5, -0.25, 0.0, 0.5]),
                           min_size=regions[-1] + 1, max_size=regions[-1] + 1))
    return cfg, T, wc, torch.tensor([values[r] for r in regions], dtype=torch.float32)


@st.composite
def cases_with_room(draw):
    """(cfg, T, wc) with gists old enough to act on and room for an expansion: a drawn WC
    (not evicted, with a gist), every residency raised by min_residency, and the budget raised
    to K-1 .. 4K slots above its size. cases() almost never leaves room for an expansion (its
    WCs are refined until the budget is full): under the ci profile, none of 50."""
    cfg, T, wc = draw(st.one_of(cases(), roomy_cases()).filter(
        lambda c: bool((c[2].lods > 0).any()) and int(c[2].starts[0]) == 0))
    K = cfg.block_size
    cfg = dataclasses.replace(cfg, budget=len(wc) + draw(st.integers(K - 1, 4 * K)))
    return cfg, T, mc.WorkingContext(wc.lods, wc.starts, wc.residency + cfg.min_residency)
