"""legal_actions (contract §3 "Legality", "Sibling group"): LOD0 never expands, LOD-max never
collapses, and a collapse group is exactly K aligned siblings whose parent is complete and
outside the protected tail."""

import torch
from hypothesis import given

from spec import strategies as S
from spec.implementation import mc


def reference_groups(cfg, T, entries):
    """Start indices of collapsible groups, by a direct scan (independent of the impl)."""
    K, heads, i = cfg.block_size, [], 0
    while i + K <= len(entries):
        lod, start = entries[i]
        run = entries[i:i + K]
        parent = S.span(cfg, lod + 1)
        if (lod < cfg.max_lod and start % parent == 0 and all(e[0] == lod for e in run)
                and start + parent <= S.tail_start(cfg, T)):
            heads.append(i)
            i += K
        else:
            i += 1
    return heads


@given(S.cases())
def test_expand_is_offered_exactly_for_gists(case):
    """expand_ok is a bool[N], false for every LOD0 entry and true for every gist."""
    cfg, T, wc = case
    expand_ok, _ = mc.legal_actions(wc, T, cfg)
    assert expand_ok.dtype == torch.bool and expand_ok.shape == wc.lods.shape
    assert torch.equal(expand_ok, wc.lods > 0), S.describe(cfg, T, wc)


@given(S.cases())
def test_groups_are_whole_aligned_complete_unprotected_sibling_runs(case):
    """Every group is K consecutive same-level entries (level < max_lod) starting at a
    multiple of span(l+1), its parent span complete and outside the tail; ids run 0..G-1 in
    position order; and every such run is a group."""
    cfg, T, wc = case
    _, group_id = mc.legal_actions(wc, T, cfg)
    assert group_id.dtype == torch.int64 and group_id.shape == wc.lods.shape
    entries, K = S.entries_of(wc), cfg.block_size
    heads = reference_groups(cfg, T, entries)
    expected = [-1] * len(entries)
    for g, h in enumerate(heads):
        expected[h:h + K] = [g] * K
    assert group_id.tolist() == expected, (
        f"group_id={group_id.tolist()} expected={expected}\n{S.describe(cfg, T, wc)}"
    )
    ends = wc.ends(cfg)
    for i in range(len(entries)):
        if group_id[i] >= 0:
            assert wc.lods[i] < cfg.max_lod, "LOD-max entries never collapse"
            assert ends[i] <= S.tail_start(cfg, T), "protected entries never collapse"


@given(S.cases(S.configs(), min_T=1))
def test_legal_actions_accepts_over_budget_wc(case):
    """Between append_tokens and focus_step a WC may exceed the budget; legality still works."""
    cfg, T, wc = case
    grown = mc.append_tokens(wc, T, cfg.budget, cfg)
    expand_ok, group_id = mc.legal_actions(grown, T + cfg.budget, cfg)
    assert expand_ok.shape[0] == len(grown) == group_id.shape[0]


def test_legal_actions_example():
    """K=4, T=37, tail [31, 37): the block [28, 32) touches the tail and cannot collapse."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=6)
    entries = [(1, 0), (1, 4), (1, 8), (1, 12), (1, 16)] + [(0, t) for t in range(20, 37)]
    wc = S.make_wc(entries)
    expand_ok, group_id = mc.legal_actions(wc, 37, cfg)
    assert expand_ok.tolist() == [True] * 5 + [False] * 17
    assert group_id.tolist() == [0] * 4 + [-1] + [1] * 4 + [2] * 4 + [-1] * 9


def test_legal_actions_rejects_invalid_wc():
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=6)
    wc = S.make_wc([(0, 0), (0, 2)])
    try:
        mc.legal_actions(wc, 3, cfg)
    except mc.ContiguityError as err:
        assert err.index == 1
    else:
        raise AssertionError("legal_actions accepted a WC with a gap")
