"""The vectorized focus allocator against its per-entry loop reference, and its internals
(candidate ordering, group scores, cascades) — reference internals, not the contract."""

import random

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

import megacontext as mc
from benchmarks.loop_allocator import loop_focus_step
from megacontext.controller.allocator import descending, group_scores, member_rows, sibling_run
from megacontext.controller.legality import sibling_groups
from spec import strategies as S


def same(cfg, T, wc, scores):
    got, got_actions = mc.focus_step(wc, scores, T, cfg)
    ref, ref_actions = loop_focus_step(wc, scores, T, cfg)
    assert got == ref and got_actions == ref_actions, (
        f"{S.describe(cfg, T, wc)} scores={scores.tolist()}\nvectorized {got_actions}\n"
        f"loop       {ref_actions}")
    return got


@given(S.focus_cases())
def test_vectorized_matches_the_loop_reference(case):
    """Same new WC and same actions as the per-entry loop, on every kind of case."""
    same(*case)


def test_long_sessions_match_the_loop_reference():
    """Seeded sessions of appends and focus steps (ties, needles, forced cascades,
    evictions): the two implementations agree step by step."""
    rng = random.Random(0)
    g = torch.Generator().manual_seed(0)
    for _ in range(25):
        K, max_lod = rng.choice([2, 3, 4]), rng.choice([1, 2, 3])
        recent = rng.randint(0, 3 * K)
        cfg = mc.MCConfig(
            block_size=K, max_lod=max_lod, recent_tokens=recent,
            budget=rng.randint(max(recent, 1), recent + 8 * K),
            expand_threshold=rng.choice([0.0, 0.1]), collapse_threshold=rng.choice([0.0, 0.1]),
            swap_margin=rng.choice([0.0, 0.2]), min_residency=rng.randint(0, 2),
            max_actions=rng.randint(1, 10), block_score=rng.choice(["mean", "max"]))
        T = rng.randint(0, 3 * K**max_lod)
        wc = mc.build_working_context(T, cfg)
        for _ in range(12):
            if rng.random() < 0.3:
                n = rng.randint(0, 3 * K)
                wc, T = mc.append_tokens(wc, T, n, cfg), T + n
            if rng.random() < 0.3:
                xs = torch.tensor([rng.choice([-0.5, 0.0, 0.5]) for _ in range(len(wc))],
                                  dtype=torch.float32)
            else:
                xs = torch.rand(len(wc), generator=g) * 2 - 1
            wc = same(cfg, T, wc, xs)


def test_cascade_tie_prefers_the_older_group():
    """A group completed by a forced collapse competes with input groups by (score, start):
    at equal scores the older one goes first, whichever kind it is."""
    cfg = mc.MCConfig(block_size=2, max_lod=2, budget=5, recent_tokens=0)
    T = 12  # LOD0 tokens 0..11: groups at 0, 2, ..., 10 (LOD1 parents span 2, LOD2 span 4)
    wc = mc.WorkingContext.from_numpy(np.zeros(12), np.arange(12))
    out = same(cfg, T, wc, torch.zeros(12))
    _, actions = mc.focus_step(wc, torch.zeros(12), T, cfg)
    assert actions[:3] == [mc.Action("collapse", 0, 0), mc.Action("collapse", 0, 2),
                           mc.Action("collapse", 1, 0)], actions
    assert len(out) <= 5


@given(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]), max_size=60), st.integers(1, 8))
def test_descending_is_a_stable_sort_whatever_the_first_chunk(xs, first):
    """The chunks together list positions by value descending, ties in position order, even
    when ties straddle the first chunk's boundary."""
    vals = np.asarray(xs, dtype=np.float64)
    got = np.concatenate(list(descending(vals, first))) if xs else np.zeros(0, dtype=np.int64)
    assert got.tolist() == sorted(range(len(xs)), key=lambda i: (-xs[i], i)), (xs, first)


@given(S.cases(), st.data())
def test_hot_path_group_scores_equal_block_scores(case, data):
    """The allocator's group scores are exactly block_scores of the legal groups."""
    cfg, T, wc = case
    scores = data.draw(S.scores_for(len(wc)))
    _, group_id = mc.legal_actions(wc, T, cfg)
    heads = sibling_groups(wc.lods.numpy(), wc.starts.numpy(), T, cfg)
    x = scores.double().numpy()
    for how in ("mean", "max"):
        want = mc.block_scores(scores, group_id, how).numpy()
        assert np.array_equal(group_scores(x, member_rows(heads, cfg.block_size), how), want), how


def test_sibling_run_finds_a_completed_group_only():
    """After forced collapses, the K siblings of a new parent form a group only when all are
    present at the parent's level and their parent span is outside the tail."""
    cfg = mc.MCConfig(block_size=2, max_lod=2, budget=8, recent_tokens=2)
    starts = np.arange(8, dtype=np.int64)
    alive = np.ones(8, dtype=bool)
    lods = np.zeros(8, dtype=np.int64)
    alive[1] = False
    lods[0] = 1  # tokens 0-1 collapsed to LOD1 at row 0
    assert sibling_run(0, 1, starts, alive, lods, 8, cfg) is None  # 2-3 still LOD0
    alive[3] = False
    lods[2] = 1
    assert sibling_run(2, 1, starts, alive, lods, 8, cfg).tolist() == [0, 2]
    alive[5], lods[4], alive[7], lods[6] = False, 1, False, 1
    assert sibling_run(4, 1, starts, alive, lods, 8, cfg) is None  # [4, 8) touches the tail


@given(
    st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=20),
    st.one_of(st.floats(allow_nan=False), st.sampled_from([0.1, -0.1, 0.2, 1e39, -1e39])),
)
def test_float32_threshold_test_is_exact(values, threshold):
    """`exceeds` on float32 scores equals the float64 comparison (numpy alone would round the
    threshold to float32 first and flip comparisons next to it)."""
    from megacontext.controller.allocator import exceeds

    x32 = np.asarray(values, dtype=np.float32)
    # the values right next to the threshold are where rounding would flip a comparison
    with np.errstate(over="ignore"):
        near = np.float32(threshold)
    x32 = np.concatenate([x32, [near, np.nextafter(near, np.float32(np.inf)),
                                np.nextafter(near, np.float32(-np.inf))]]).astype(np.float32)
    x32 = x32[np.isfinite(x32)]
    expected = x32.astype(np.float64) > threshold
    assert np.array_equal(exceeds(x32, threshold), expected), (x32.tolist(), threshold)
