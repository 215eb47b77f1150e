"""render_lod_map (contract §9): the normative text format, and golden maps that pin the
recency baseline on canonical scenarios (a changed map is a reviewed diff)."""

import pytest
from hypothesis import given

from spec import strategies as S
from spec.implementation import mc


def reference_block_chars(cfg, T, wc) -> str:
    """One char per K-token block, computed token by token (independent of the impl)."""
    K = cfg.block_size
    lod_of = {}
    for lod, start in S.entries_of(wc):
        for t in range(start, start + S.span(cfg, lod)):
            lod_of[t] = lod
    chars = []
    for b in range(-(-T // K)):
        toks = [t for t in range(b * K, min(b * K + K, T)) if t in lod_of]
        if not toks:
            chars.append(" ")
        elif b * K + K > T:
            chars.append(",")
        else:
            lod = lod_of[toks[-1]]
            chars.append("." if lod == 0 else str(lod))
    return "".join(chars)


@given(S.cases())
def test_map_format(case):
    """Header `T=.. N=../.. K=..`, then one char per block wrapped at 128 per line."""
    cfg, T, wc = case
    text = mc.render_lod_map(wc, T, cfg)
    header, *body = text.split("\n")
    assert header == f"T={T} N={len(wc)}/{cfg.budget} K={cfg.block_size}", header
    assert all(len(line) == 128 for line in body[:-1]), [len(x) for x in body]
    assert all(0 < len(line) <= 128 for line in body)
    assert "".join(body) == reference_block_chars(cfg, T, wc), (
        f"\n{text}\n{S.describe(cfg, T, wc)}"
    )


def _scenarios():
    K32 = dict(block_size=32, max_lod=2, recent_tokens=64)
    yield "short_history_all_lod0", mc.MCConfig(budget=8192, **K32), 96, 0
    yield "T_not_multiple_of_K", mc.MCConfig(budget=8192, **K32), 1000, 0
    yield "history_needing_lod2", mc.MCConfig(budget=256, **K32), 40_000, 0
    yield "budget_forcing_eviction", mc.MCConfig(budget=72, **K32), 20_000, 0
    yield "after_appending_tokens", mc.MCConfig(budget=256, **K32), 40_000, 100
    yield "small_blocks_three_levels", mc.MCConfig(block_size=4, max_lod=3, budget=40,
                                                   recent_tokens=10), 700, 0


SCENARIOS = list(_scenarios())


@pytest.mark.parametrize("name,cfg,T,appended", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_golden_baseline_maps(name, cfg, T, appended, golden):
    """The recency baseline's LOD map on canonical scenarios matches golden/."""
    wc = mc.build_working_context(T, cfg)
    if appended:
        wc = mc.append_tokens(wc, T, appended, cfg)
        T += appended
    assert mc.render_lod_map(wc, T, cfg) == golden
