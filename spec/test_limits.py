"""Every numeric limit of the contract pinned at the limit and one step past it, on both sides of
each rule (contract §3, §4, §5, §6): budget, max_actions, min_residency, the expand and collapse
thresholds, swap_margin, the protected-tail boundary, the K-1 slot cost of an expansion,
alignment and completeness of gists, and the MCConfig validation limits.

A limit tested only far from its boundary lets an off-by-one through (a count one past a limit,
`>=` for `>`); each spec here runs the case exactly at the limit and the case one step beyond
it ("one step": one entry, one action, one focus step, one token, one float32 ulp).

Hand-checked cases on K = 4, LOD2 spans 16 tokens: T = 68 and the coarsest tiling
T68 = LOD2 gists at 0, 16, 32; LOD1 gists at 48, 52, 56, 60 (one group); tokens 64..67.
"""

import math

import numpy as np
import pytest
import torch

from spec import strategies as S
from spec.implementation import mc

K4 = dict(block_size=4, max_lod=2, recent_tokens=4, expand_threshold=0.1,
          collapse_threshold=0.1, swap_margin=0.2, min_residency=0)
T68 = [(2, 0), (2, 16), (2, 32), (1, 48), (1, 52), (1, 56), (1, 60), (0, 64), (0, 65), (0, 66),
       (0, 67)]
LOD1_RUN = [(2, 0)] + [(1, s) for s in range(16, 64, 4)] + [(0, t) for t in range(64, 68)]


def f32_above(v: float) -> float:
    """The next float32 above the float32 v (one ulp past it)."""
    return float(np.nextafter(np.float32(v), np.float32(math.inf)))


def f32_below(v: float) -> float:
    return float(np.nextafter(np.float32(v), np.float32(-math.inf)))


def step(entries, xs, T=68, residency=None, **overrides):
    cfg = mc.MCConfig(**{**K4, **overrides})
    wc = S.make_wc(entries, residency)
    out, actions = mc.focus_step(wc, torch.tensor(xs, dtype=torch.float32), T, cfg)
    out.validate(cfg, T)
    return out, actions


# --- budget: N == budget is within it, budget + 1 is not (§3 invariant 1, §5 step 2) ---------


def test_validate_accepts_n_equal_to_budget_and_rejects_one_more():
    """A WC of exactly `budget` entries validates; the same WC with budget - 1 raises
    BudgetError naming entry `budget` (the first one over)."""
    entries = [(0, t) for t in range(20)]
    wc = S.make_wc(entries)
    wc.validate(mc.MCConfig(block_size=4, budget=20, recent_tokens=4), 20)
    with pytest.raises(mc.BudgetError) as info:
        wc.validate(mc.MCConfig(block_size=4, budget=19, recent_tokens=4), 20)
    assert info.value.index == 19, f"BudgetError names entry {info.value.index}, expected 19"


def test_no_forced_action_at_the_budget_and_one_forced_collapse_one_over():
    """N == budget with quiet scores: no action at all; N == budget + 1: exactly one forced
    collapse (of the only group), whatever max_actions and residency say (§5 step 2)."""
    xs = [0.0] * len(T68)
    _, actions = step(T68, xs, budget=11, min_residency=3)
    assert actions == [], f"at the budget (N = 11 = budget): {actions}"
    out, actions = step(T68, xs, budget=10, min_residency=3, max_actions=1)
    assert actions == [mc.Action("collapse", 1, 48)], f"one over the budget: {actions}"
    assert len(out) == 8, len(out)


# --- K-1 slot cost: a plain expansion needs N + K - 1 <= budget (§3, §5 step 3) --------------


def test_plain_expansion_needs_exactly_k_minus_one_free_slots():
    """Expanding a gist adds K - 1 = 3 entries: with budget = N + 3 it is applied alone and
    fills the budget exactly; with budget = N + 2 it is not applied alone: it needs a swap
    (a collapse first) (§5 step 3)."""
    xs = [0.9] + [0.0] * 10  # N = 11
    out, actions = step(T68, xs, budget=14)
    assert actions == [mc.Action("expand", 2, 0)], f"budget N + K - 1 = 14: {actions}"
    assert len(out) == 14, len(out)
    out, actions = step(T68, xs, budget=13)
    assert actions == [mc.Action("collapse", 1, 48), mc.Action("expand", 2, 0)], (
        f"budget N + K - 2 = 13: the expansion alone would not fit: {actions}")
    assert len(out) == 11, len(out)


@pytest.mark.parametrize("budget,n", [(10, 8), (11, 11), (13, 11), (14, 14), (16, 14),
                                      (17, 17)])
def test_baseline_expands_exactly_while_k_minus_one_more_slots_fit(budget, n):
    """build_working_context expands newest-first while an expansion (K - 1 = 3 more slots)
    fits: at T = 68 the coarsest tiling has 8 entries, so budgets 11, 14, 17 are filled
    exactly and one slot less leaves the previous size (§4 "expand newest-first while the
    budget allows")."""
    cfg = mc.MCConfig(**{**K4, "budget": budget})
    wc = mc.build_working_context(68, cfg)
    wc.validate(cfg, 68)
    assert len(wc) == n, f"budget={budget}: N = {len(wc)}, expected {n}: {S.entries_of(wc)}"


# --- max_actions: exactly max_actions, never one more (§5 step 3-4) --------------------------


@pytest.mark.parametrize("max_actions", [1, 2, 3])
def test_expansions_stop_at_exactly_max_actions(max_actions):
    """Three gists worth expanding and room for all: exactly max_actions of them expand, in
    score order; with max_actions = 3 all three do (§5 step 3)."""
    xs = [0.9, 0.8, 0.7] + [0.0] * 8
    _, actions = step(T68, xs, budget=40, max_actions=max_actions)
    want = [mc.Action("expand", 2, s) for s in (0, 16, 32)][:max_actions]
    assert actions == want, f"max_actions={max_actions}: {actions}"


@pytest.mark.parametrize("max_actions", [1, 2, 3])
def test_voluntary_collapses_stop_at_exactly_max_actions(max_actions):
    """Three LOD1 groups below -collapse_threshold: exactly max_actions of them collapse,
    lowest first (§5 step 4)."""
    xs = [0.0] + [-0.3] * 4 + [-0.5] * 4 + [-0.4] * 4 + [0.0] * 4
    _, actions = step(LOD1_RUN, xs, budget=40, max_actions=max_actions)
    want = [mc.Action("collapse", 1, s) for s in (32, 48, 16)][:max_actions]
    assert actions == want, f"max_actions={max_actions}: {actions}"


# --- min_residency: residency == min_residency may act, one less may not (§3 hysteresis) -----


@pytest.mark.parametrize("min_residency", [1, 2, 5])
def test_a_gist_exactly_min_residency_old_may_expand_one_step_younger_may_not(min_residency):
    """The gist at 0 (score 0.9, room to expand): with residency == min_residency it expands;
    with residency == min_residency - 1 nothing happens (§3: entries younger than
    min_residency steps are not acted upon)."""
    xs = [0.9] + [0.0] * 10
    old = [min_residency] + [9] * 10
    _, actions = step(T68, xs, residency=old, budget=40, min_residency=min_residency)
    assert actions == [mc.Action("expand", 2, 0)], f"residency {min_residency}: {actions}"
    young = [min_residency - 1] + [9] * 10
    _, actions = step(T68, xs, residency=young, budget=40, min_residency=min_residency)
    assert actions == [], f"residency {min_residency - 1} < min_residency: {actions}"


@pytest.mark.parametrize("min_residency", [1, 2, 5])
def test_a_group_exactly_min_residency_old_may_collapse_one_younger_member_blocks_it(
        min_residency):
    """The LOD1 group at 48 (every member -0.5): it collapses when its youngest member has
    residency == min_residency; one member at min_residency - 1 keeps the whole group (§3)."""
    xs = [0.0] * 3 + [-0.5] * 4 + [0.0] * 4
    res = [9, 9, 9, 9, min_residency, 9, 9, 9, 9, 9, 9]
    _, actions = step(T68, xs, residency=res, budget=40, min_residency=min_residency)
    assert actions == [mc.Action("collapse", 1, 48)], f"youngest member {min_residency}: {actions}"
    res[4] = min_residency - 1
    _, actions = step(T68, xs, residency=res, budget=40, min_residency=min_residency)
    assert actions == [], f"a member at residency {min_residency - 1}: {actions}"


def test_a_swap_partner_exactly_min_residency_old_may_be_collapsed():
    """A swap's collapse obeys hysteresis on the same boundary: the only group, at residency
    == min_residency, pairs with a needle at the budget; one step younger, no swap (§5 step 3)."""
    xs = [0.9] + [0.0] * 10
    res = [3, 3, 3, 2, 2, 2, 2, 3, 3, 3, 3]
    _, actions = step(T68, xs, residency=res, budget=11, min_residency=2)
    assert actions == [mc.Action("collapse", 1, 48), mc.Action("expand", 2, 0)], actions
    res[5] = 1
    _, actions = step(T68, xs, residency=res, budget=11, min_residency=2)
    assert actions == [], f"partner member at residency 1 < 2: {actions}"


# --- thresholds: score == threshold does not act, one ulp beyond does (§5 steps 1, 4) --------


@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.5])
def test_expand_needs_a_score_strictly_above_the_threshold(threshold):
    """score == expand_threshold: no expansion; the next float32 above it: expansion."""
    xs = [threshold] + [0.0] * 10
    _, actions = step(T68, xs, budget=40, expand_threshold=threshold, collapse_threshold=1.0)
    assert actions == [], f"score == expand_threshold == {threshold}: {actions}"
    xs[0] = f32_above(threshold)
    _, actions = step(T68, xs, budget=40, expand_threshold=threshold, collapse_threshold=1.0)
    assert actions == [mc.Action("expand", 2, 0)], f"score {xs[0]} > {threshold}: {actions}"


def test_expand_threshold_compares_exact_values_not_float32_roundings():
    """With the default threshold 0.1 (not a float32 value), the float32 nearest 0.1 lies
    above 0.1 and expands; the float32 just below it does not (§5 step 1: score > threshold)."""
    above = float(np.float32(0.1))
    assert above > 0.1
    _, actions = step(T68, [above] + [0.0] * 10, budget=40)
    assert actions == [mc.Action("expand", 2, 0)], f"{above!r} > 0.1: {actions}"
    _, actions = step(T68, [f32_below(above)] + [0.0] * 10, budget=40)
    assert actions == [], f"{f32_below(above)!r} < 0.1: {actions}"


@pytest.mark.parametrize("how", ["mean", "max"])
@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.5])
def test_voluntary_collapse_needs_a_group_score_strictly_below_minus_threshold(how, threshold):
    """Group score == -collapse_threshold: no collapse; every member one float32 ulp lower (so
    mean and max both move by exactly one ulp): collapse (§5 step 4)."""
    xs = [0.0] * 3 + [-threshold] * 4 + [0.0] * 4
    kw = dict(budget=40, collapse_threshold=threshold, block_score=how)
    _, actions = step(T68, xs, **kw)
    assert actions == [], f"group score == -{threshold} ({how}): {actions}"
    xs[3:7] = [f32_below(-threshold)] * 4
    _, actions = step(T68, xs, **kw)
    assert actions == [mc.Action("collapse", 1, 48)], f"group {xs[3]} < -{threshold}: {actions}"


# --- swap_margin: score - group_score == margin does not swap, beyond it does (§5 step 3) ----


@pytest.mark.parametrize("margin", [0.5, 0.75, 1.0])
def test_swap_needs_a_difference_strictly_above_the_margin(margin):
    """At the budget, a needle (score s) and the only group (every member g = -0.25):
    s - g == swap_margin leaves the WC alone; s one float32 ulp higher swaps (collapse, then
    expand) (§5 step 3). Values are exact in binary, so s - g is exact in any precision."""
    g = -0.25
    s = margin + g  # 0.25, 0.5, 0.75
    kw = dict(budget=11, swap_margin=margin, expand_threshold=0.0, collapse_threshold=1.0)
    xs = [s] + [0.0] * 2 + [g] * 4 + [0.0] * 4
    _, actions = step(T68, xs, **kw)
    assert actions == [], f"s - g == swap_margin == {margin}: {actions}"
    xs[0] = f32_above(s)
    _, actions = step(T68, xs, **kw)
    assert actions == [mc.Action("collapse", 1, 48), mc.Action("expand", 2, 0)], (
        f"s - g = {xs[0] - g} > {margin}: {actions}")


# --- the protected tail [T - recent_tokens, T) (§3 invariant 6, legality) --------------------


def test_tail_boundary_in_validate():
    """A gist ending exactly where the tail starts is valid; with one more protected token it
    covers a tail token: TailError naming that gist."""
    wc = S.make_wc(T68)
    wc.validate(mc.MCConfig(**{**K4, "recent_tokens": 4}), 68)  # tail [64, 68)
    with pytest.raises(mc.TailError) as info:
        wc.validate(mc.MCConfig(**{**K4, "recent_tokens": 5}), 68)  # tail [63, 68)
    assert info.value.index == 6, f"TailError names entry {info.value.index}, expected 6"


def test_tail_boundary_in_legality():
    """A group ending exactly where the tail starts is collapsible: the LOD1 group [48, 64)
    and the LOD0 group of tokens [60, 64) with the tail at 64; with one more protected token
    (tail at 63) the token group reaches into the tail and is no group (§3 legality:
    protected spans cannot collapse)."""
    cfg4 = mc.MCConfig(**{**K4, "recent_tokens": 4})
    _, group_id = mc.legal_actions(S.make_wc(T68), 68, cfg4)
    assert group_id[3:7].tolist() == [group_id[3].item()] * 4 and group_id[3] >= 0, group_id
    tokens = [(2, 0), (2, 16), (2, 32), (1, 48), (1, 52), (1, 56)] + [(0, t) for t in
                                                                     range(60, 68)]
    _, group_id = mc.legal_actions(S.make_wc(tokens), 68, cfg4)
    assert (group_id[6:10] >= 0).all(), f"tokens [60, 64) before a tail at 64: {group_id}"
    cfg5 = mc.MCConfig(**{**K4, "recent_tokens": 5})
    _, group_id = mc.legal_actions(S.make_wc(tokens), 68, cfg5)
    assert (group_id[6:10] < 0).all(), f"tokens [60, 64) with token 63 protected: {group_id}"


def test_tail_boundary_in_focus_step():
    """A group ending exactly at the tail start collapses when scored low; with one more
    protected token the same WC of tokens [60, 64) is left alone (§3 legality, §5)."""
    tokens = [(2, 0), (2, 16), (2, 32), (1, 48), (1, 52), (1, 56)] + [(0, t) for t in
                                                                     range(60, 68)]
    xs = [0.0] * 6 + [-0.5] * 4 + [0.0] * 4
    _, actions = step(tokens, xs, budget=40, recent_tokens=4)
    assert actions == [mc.Action("collapse", 0, 60)], f"tail at 64: {actions}"
    _, actions = step(tokens, xs, budget=40, recent_tokens=5)
    assert actions == [], f"tail at 63: {actions}"


# --- alignment and completeness of gists (§3 invariants 3, 4) --------------------------------


def test_alignment_boundary():
    """An LOD1 gist at start 4 (a multiple of K) is valid; the same run shifted by one token
    puts it at start 5: AlignmentError naming it."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=0)
    S.make_wc([(0, t) for t in range(4)] + [(1, 4)] + [(0, 8)]).validate(cfg, 9)
    with pytest.raises(mc.AlignmentError) as info:
        S.make_wc([(0, t) for t in range(5)] + [(1, 5)]).validate(cfg, 9)
    assert info.value.index == 5, info.value.index


def test_complete_span_boundary():
    """A gist whose span ends exactly at T is valid; with T one token shorter its span is
    incomplete: LevelError naming it."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=0)
    wc = S.make_wc([(1, 0), (1, 4)])
    wc.validate(cfg, 8)
    with pytest.raises(mc.LevelError) as info:
        wc.validate(cfg, 7)
    assert info.value.index == 1, info.value.index


# --- lens targets: the K-1 slot price (§6) ---------------------------------------------------


def test_utility_targets_are_zero_exactly_at_the_slot_price():
    """U_exp = gain - price·(K-1) and U_col = price·(K-1) - loss: a gain or loss equal to the
    K-1 slot price gives target 0 (masked in, measured); a quarter more gain gives +0.25, a
    quarter less loss -0.25 (§6)."""
    cfg = mc.MCConfig(**{**K4, "budget": 40})
    wc = S.make_wc(T68)
    price = 0.25  # K - 1 = 3 slots cost 0.75 nats
    nan = float("nan")
    for gain, loss, want in [(0.75, nan, 0.0), (1.0, nan, 0.25), (nan, 0.75, 0.0),
                             (nan, 0.5, -0.25)]:
        expand_gain = torch.full((11,), nan)
        collapse_loss = torch.full((11,), nan)
        expand_gain[3] = gain  # the LOD1 gist at 48: expandable, and in the group at 48
        collapse_loss[3:7] = loss
        targets, mask = mc.lens_targets_from_utilities(wc, expand_gain, collapse_loss, 68, cfg,
                                                       price)
        assert bool(mask[3]), f"gain={gain} loss={loss}: entry 3 masked out"
        assert targets[3].item() == want, (
            f"gain={gain} loss={loss} price·(K-1)=0.75: target {targets[3].item()}, want {want}")


# --- MCConfig validation limits: the smallest/largest valid value and one past it (§4) -------


@pytest.mark.parametrize(
    "field,ok,bad",
    [
        ("block_size", 2, 1),
        ("max_lod", 1, 0),
        ("max_lod", 9, 10),
        ("budget", 1, 0),
        ("recent_tokens", 0, -1),
        ("min_residency", 0, -1),
        ("max_actions", 1, 0),
        ("expand_threshold", 0.0, -5e-324),
        ("collapse_threshold", 0.0, -5e-324),
        ("swap_margin", 0.0, -5e-324),
    ],
)
def test_config_limit_is_valid_and_one_past_it_is_not(field, ok, bad):
    """Each MCConfig field's extreme valid value constructs; one step past it (one integer,
    the smallest negative double) raises ValueError naming the field and the value (§4)."""
    base = dict(budget=8, recent_tokens=0) if field in ("budget", "recent_tokens") else {}
    cfg = mc.MCConfig(**{**base, field: ok})
    assert getattr(cfg, field) == ok
    with pytest.raises(ValueError, match=field) as info:
        mc.MCConfig(**{**base, field: bad})
    assert repr(bad) in str(info.value) or str(bad) in str(info.value), str(info.value)


def test_budget_equal_to_tail_is_valid_and_one_less_is_not():
    """budget == recent_tokens constructs; budget == recent_tokens - 1 raises ValueError
    naming both (§4)."""
    mc.MCConfig(budget=7, recent_tokens=7)
    with pytest.raises(ValueError, match="budget") as info:
        mc.MCConfig(budget=6, recent_tokens=7)
    assert "recent_tokens" in str(info.value), str(info.value)


def test_budget_one_holds_a_one_token_tail():
    """The smallest budget, 1, works end to end: recent_tokens = 1 keeps the newest token and
    evicts everything else; the result validates."""
    cfg = mc.MCConfig(block_size=2, max_lod=1, budget=1, recent_tokens=1)
    wc = mc.build_working_context(5, cfg)
    wc.validate(cfg, 5)
    assert S.entries_of(wc) == [(0, 4)], S.entries_of(wc)
