"""Reference internals of lens supervision (not part of the contract): rank pairs, LOD-map
comparison, group broadcast."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from megacontext import MCConfig, WorkingContext
from megacontext.supervision.lens_loss import rank_hinge, rank_pairs
from megacontext.supervision.lens_targets import check_number, compare_lod_maps, group_values
from megacontext.supervision.telemetry import average_ranks


@given(st.lists(st.sampled_from([-1.0, 0.0, 0.5, 2.0]) | st.floats(-3, 3), max_size=40),
       st.randoms(use_true_random=False))
def test_rank_pairs_are_ordered_bounded_and_include_sorted_neighbours(ts, rnd):
    """Every pair has t[hi] > t[lo]; there are at most n·ceil(log2 n) pairs (O(n log n)); every
    adjacent pair of distinct targets in (t, s) order is used (stride 1)."""
    n = len(ts)
    t = torch.tensor(ts, dtype=torch.float32)
    ranks = list(range(n))
    rnd.shuffle(ranks)
    s = torch.tensor(ranks, dtype=torch.float32) / max(n, 1)  # distinct scores: order unique
    lo, hi = rank_pairs(t, s)
    assert bool((t[hi] > t[lo]).all()), (t.tolist(), lo.tolist(), hi.tolist())
    assert lo.shape[0] <= n * max(math.ceil(math.log2(max(n, 1))), 1)
    order = sorted(range(n), key=lambda i: (float(t[i]), float(s[i])))
    used = set(zip(lo.tolist(), hi.tolist(), strict=True))
    for a, b in zip(order, order[1:], strict=False):
        if t[b] > t[a]:
            assert (a, b) in used, (a, b, sorted(used))


@given(st.lists(st.sampled_from([-1.0, 0.0, 0.5]) | st.floats(-3, 3, width=32), max_size=30),
       st.sampled_from([0.0, 0.1, 0.5]))
def test_strided_rank_hinge_equals_the_mean_over_the_spelled_out_pairs(ts, margin):
    """rank_hinge (strided slices of the sorted sequence) = mean hinge over rank_pairs."""
    n = len(ts)
    t = torch.tensor(ts, dtype=torch.float64)
    s = torch.linspace(-1, 1, n, dtype=torch.float64).flip(0) ** 3  # misordered vs t mostly
    c = torch.where(t < 0, 2.0, 1.0).to(torch.float64)
    lo, hi = rank_pairs(t, s)
    hinge = torch.relu(margin - (s[hi] - s[lo])) * (c[hi] + c[lo]) / 2
    expected = float(hinge.sum()) / max(lo.shape[0], 1)
    assert math.isclose(float(rank_hinge(s, t, c, margin)), expected, rel_tol=1e-12,
                        abs_tol=1e-12), (ts, margin)


def test_rank_pairs_are_deterministic():
    t = torch.tensor([1.0, 1.0, 0.0, 2.0, 0.0])
    s = torch.tensor([0.1, 0.1, 0.3, -0.2, 0.3])
    first = rank_pairs(t, s)
    for _ in range(3):
        again = rank_pairs(t, s)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def wc(entries):
    return WorkingContext.from_numpy([e[0] for e in entries], [e[1] for e in entries])


def test_compare_lod_maps_cases():
    """finer / coarser / equal / partly and wholly evicted in best, K=2."""
    cfg = MCConfig(block_size=2, max_lod=2, budget=16, recent_tokens=0)
    a = wc([(2, 0), (1, 4), (1, 6), (0, 8), (0, 9)])
    b = wc([(1, 2), (0, 4), (0, 5), (1, 6), (1, 8)])  # [0, 2) evicted
    finer, coarser = compare_lod_maps(a, b, cfg)
    assert finer.tolist() == [True, True, False, False, False]
    assert coarser.tolist() == [False, False, False, True, True]
    gone = wc([(1, 8)])
    finer, coarser = compare_lod_maps(a, gone, cfg)
    assert finer.tolist() == [False] * 5 and coarser.tolist() == [False] * 3 + [True] * 2


def test_group_values_broadcast_and_disagreement():
    gid = torch.tensor([0, 0, -1, 1, 1])
    v = torch.tensor([math.nan, 0.5, 9.0, math.nan, math.nan])
    got = group_values(v, gid, "x")
    assert got[0].item() == 0.5 and math.isnan(got[1].item())
    with pytest.raises(ValueError, match=r"x disagrees within sibling group 0"):
        group_values(torch.tensor([0.1, 0.2, 0.0, 0.0, 0.0]), gid, "x")


def test_check_number_and_average_ranks():
    assert check_number("p", torch.tensor(0.5)) == 0.5
    for bad in (True, "1", None):
        with pytest.raises(TypeError):
            check_number("p", bad)
    with pytest.raises(ValueError, match="p must be >= 0"):
        check_number("p", -1, minimum=0.0)
    assert average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
