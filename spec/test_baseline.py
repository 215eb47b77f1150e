"""build_working_context and append_tokens (contract §3 invariant 5 and §4): the recency baseline
is valid, covers the whole history whenever the coarsest tiling fits, evicts only the oldest
entries otherwise, and is finest near the cursor."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spec import strategies as S
from spec.implementation import mc


@given(st.data())
def test_baseline_is_valid(data):
    """For any config and history length the baseline passes validate."""
    cfg = data.draw(S.configs())
    T = data.draw(S.histories(cfg))
    wc = mc.build_working_context(T, cfg)
    wc.validate(cfg, T)
    assert torch.equal(wc.residency, torch.zeros_like(wc.residency)), "new entries: residency 0"


@given(st.data())
def test_baseline_covers_history_or_evicts_only_oldest(data):
    """If the coarsest tiling fits, [0, T) is covered; otherwise the WC is exactly the newest
    `budget` entries of the coarsest tiling (eviction is the last resort, oldest first)."""
    cfg = data.draw(S.configs())
    T = data.draw(S.histories(cfg))
    wc = mc.build_working_context(T, cfg)
    coarsest = S.coarsest_tiling(cfg, T)
    if len(coarsest) <= cfg.budget:
        assert T == 0 or wc.starts[0] == 0, f"evicted although the coarsest tiling fits: " \
            f"{S.describe(cfg, T, wc)}"
    else:
        assert S.entries_of(wc) == coarsest[len(coarsest) - cfg.budget:], S.describe(cfg, T, wc)


@given(st.data())
def test_baseline_is_finest_near_the_cursor_and_fills_the_budget(data):
    """Levels never increase towards the cursor, and no gist could still be expanded."""
    cfg = data.draw(S.configs())
    T = data.draw(S.histories(cfg))
    wc = mc.build_working_context(T, cfg)
    lods = wc.lods.tolist()
    assert all(a >= b for a, b in zip(lods, lods[1:], strict=False)), S.describe(cfg, T, wc)
    if any(lods):
        assert len(wc) + cfg.block_size - 1 > cfg.budget, (
            f"budget left for another expansion: {S.describe(cfg, T, wc)}"
        )


def test_baseline_example():
    """A hand-checked case: K=4, LOD2 spans 16, tail 6, budget 20, T=37."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=20, recent_tokens=6)
    wc = mc.build_working_context(37, cfg)
    expected = [(2, 0), (1, 16)] + [(0, t) for t in range(20, 37)]
    assert S.entries_of(wc) == expected, S.entries_of(wc)


@given(S.cases(), st.integers(0, 40))
def test_append_adds_new_lod0_entries(case, n):
    """append_tokens keeps every entry and adds LOD0 entries [T, T+n) with residency 0; the
    result is valid for T+n tokens except, possibly, for the budget."""
    cfg, T, wc = case
    out = mc.append_tokens(wc, T, n, cfg)
    assert S.entries_of(out) == S.entries_of(wc) + [(0, t) for t in range(T, T + n)]
    assert out.residency.tolist() == wc.residency.tolist() + [0] * n
    try:
        out.validate(cfg, T + n)
    except mc.BudgetError:
        assert len(out) > cfg.budget


def test_append_rejects_bad_input():
    """Negative n, a WC that does not end at T, or a non-WC raise typed errors."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=20, recent_tokens=6)
    wc = mc.build_working_context(10, cfg)
    with pytest.raises(ValueError, match="n"):
        mc.append_tokens(wc, 10, -1, cfg)
    with pytest.raises(mc.CoverageError):
        mc.append_tokens(wc, 11, 1, cfg)
    with pytest.raises(TypeError, match="wc"):
        mc.append_tokens([0, 1], 10, 1, cfg)


@pytest.mark.parametrize("bad_T,error", [(-3, ValueError), (2.0, TypeError)])
def test_build_rejects_bad_history_length(bad_T, error):
    with pytest.raises(error, match="T"):
        mc.build_working_context(bad_T, mc.MCConfig())
