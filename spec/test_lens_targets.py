"""Lens supervision targets (contract §6 "Utilities", "Best variant"): polarity, legality masks,
block-aligned collapse broadcast, NaN = not measured, and per-variant weights that never favour
a worse variant."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spec import strategies as S
from spec.implementation import mc

NAN = float("nan")


def nan_vec(n):
    return torch.full((n,), NAN)


def reference_utility_targets(cfg, T, wc, gain, loss, price):
    """Contract §6 by a direct per-entry loop: target = max(U_exp, 0) - max(U_col, 0) over the
    legal, measured terms; a group's collapse loss is whatever value its members carry."""
    entries = S.entries_of(wc)
    gid = S.reference_group_ids(cfg, T, entries)
    slot_value = price * (cfg.block_size - 1)
    group_loss = {gid[i]: float(loss[i]) for i in range(len(entries))
                  if gid[i] >= 0 and not math.isnan(loss[i])}
    targets, mask = [], []
    for i, (lod, _) in enumerate(entries):
        t, m = 0.0, False
        if lod > 0 and not math.isnan(gain[i]):
            t, m = t + max(float(gain[i]) - slot_value, 0.0), True
        if gid[i] in group_loss:
            t, m = t - max(slot_value - group_loss[gid[i]], 0.0), True
        targets.append(t)
        mask.append(m)
    return targets, mask


def describe_utilities(cfg, T, wc, gain, loss, price):
    return (f"{S.describe(cfg, T, wc)}\nexpand_gain={gain.tolist()}\n"
            f"collapse_loss={loss.tolist()}\nprice={price}")


# --- utilities ------------------------------------------------------------------------------


@given(S.utility_cases())
def test_utility_targets_follow_the_formula(case):
    """target = max(U_exp,0) - max(U_col,0) over legal measured terms, mask = some legal term
    measured, 0 where masked out (§6 "Utilities")."""
    cfg, T, wc, gain, loss, price = case
    targets, mask = mc.lens_targets_from_utilities(wc, gain, loss, T, cfg, price)
    exp_t, exp_m = reference_utility_targets(cfg, T, wc, gain, loss, price)
    msg = (f"targets={targets.tolist()}\nexpected={exp_t}\nmask={mask.tolist()}\n"
           f"expected_mask={exp_m}\n{describe_utilities(cfg, T, wc, gain, loss, price)}")
    assert mask.dtype == torch.bool and mask.tolist() == exp_m, msg
    assert targets.is_floating_point() and bool(torch.isfinite(targets).all()), msg
    assert torch.allclose(targets.double(), torch.tensor(exp_t, dtype=torch.float64),
                          rtol=1e-5, atol=1e-5), msg
    assert bool((targets[~mask] == 0).all()), msg


@given(S.utility_cases())
def test_utility_targets_never_label_an_illegal_action(case):
    """No LOD0 entry gets a positive target; no LOD-max, protected or partial entry (no
    collapsible group) a negative one (§6, §3 "Legality")."""
    cfg, T, wc, gain, loss, price = case
    targets, mask = mc.lens_targets_from_utilities(wc, gain, loss, T, cfg, price)
    _, group_id = mc.legal_actions(wc, T, cfg)
    msg = f"targets={targets.tolist()}\n{describe_utilities(cfg, T, wc, gain, loss, price)}"
    assert not bool((targets[wc.lods == 0] > 0).any()), "LOD0 told to expand\n" + msg
    assert not bool((targets[group_id < 0] < 0).any()), "illegal collapse labelled\n" + msg
    assert not bool((targets[wc.lods == cfg.max_lod] < 0).any()), "LOD-max collapse\n" + msg
    protected = wc.ends(cfg) > S.tail_start(cfg, T)
    assert not bool((targets[protected] < 0).any()), "protected collapse\n" + msg


@given(S.cases(), st.data())
def test_collapse_label_lands_on_exactly_the_group_legal_actions_reports(case, data):
    """A collapse loss measured on one member of a group labels all K members of the group
    that legal_actions reports, with one value, and nothing else (block-aligned broadcast)."""
    cfg, T, wc = case
    n, K = len(wc), cfg.block_size
    _, group_id = mc.legal_actions(wc, T, cfg)
    groups = sorted(set(group_id.tolist()) - {-1})
    if not groups:
        return
    g = data.draw(st.sampled_from(groups))
    members = (group_id == g).nonzero().flatten().tolist()
    carrier = data.draw(st.sampled_from(members))
    loss = nan_vec(n)
    loss[carrier] = 0.0  # collapsing costs nothing: U_col = price·(K-1) > 0
    targets, mask = mc.lens_targets_from_utilities(wc, nan_vec(n), loss, T, cfg, 0.5)
    labelled = mask.nonzero().flatten().tolist()
    msg = (f"group {g} members={members} carrier={carrier} labelled={labelled} "
           f"targets={targets.tolist()}\n{S.describe(cfg, T, wc)}")
    assert len(members) == K and labelled == members, msg
    assert torch.allclose(targets[members], torch.full((K,), -0.5 * (K - 1))), msg


def test_utility_targets_example():
    """K=4, T=37, tail [31, 37), price 0.1 (an action moves 3 slots: 0.3 nats): hand-checked
    expand, broadcast collapse, a measured zero, and ignored illegal values."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=6)
    entries = [(1, 0), (1, 4), (1, 8), (1, 12), (1, 16)] + [(0, t) for t in range(20, 37)]
    wc, n = S.make_wc(entries), len(entries)
    _, group_id = mc.legal_actions(wc, 37, cfg)
    assert group_id.tolist() == [0] * 4 + [-1] + [1] * 4 + [2] * 4 + [-1] * 9
    gain, loss = nan_vec(n), nan_vec(n)
    gain[0] = 1.0  # U_exp = 0.7
    loss[2] = 0.1  # group 0 (entries 0..3): U_col = 0.2 on all four; entry 0: 0.7 - 0.2
    gain[4] = 0.2  # U_exp = -0.1: measured, not worth it -> target 0, mask set
    loss[4] = 0.0  # entry 4 is in no group: an illegal collapse, ignored
    gain[5] = 5.0  # LOD0 cannot expand: ignored
    loss[7] = 0.5  # group 1 (entries 5..8): U_col = -0.2 -> target 0 on all four, mask set
    loss[14] = 0.0  # token 29's block touches the tail: no group, ignored
    targets, mask = mc.lens_targets_from_utilities(wc, gain, loss, 37, cfg, 0.1)
    expected = [0.5, -0.2, -0.2, -0.2] + [0.0] * 18
    assert mask.tolist() == [True] * 9 + [False] * 13, mask.tolist()
    assert torch.allclose(targets, torch.tensor(expected), atol=1e-6), targets.tolist()


@given(S.cases())
def test_all_nan_utilities_give_an_empty_mask(case):
    """Nothing measured -> mask all false and targets all exactly 0 (finite, never NaN)."""
    cfg, T, wc = case
    n = len(wc)
    targets, mask = mc.lens_targets_from_utilities(wc, nan_vec(n), nan_vec(n), T, cfg, 0.1)
    assert not bool(mask.any()) and bool((targets == 0).all()), (
        f"targets={targets.tolist()} mask={mask.tolist()}\n{S.describe(cfg, T, wc)}")


def test_utility_targets_reject_bad_input():
    """Infinite utilities, wrong lengths, bad price and disagreeing group values raise typed
    errors naming the argument (§4): nothing is clamped or dropped silently."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=6)
    entries = [(1, 0), (1, 4), (1, 8), (1, 12), (1, 16)] + [(0, t) for t in range(20, 37)]
    wc, n = S.make_wc(entries), len(entries)
    ok = nan_vec(n)
    bad = nan_vec(n)
    bad[3] = math.inf
    with pytest.raises(ValueError, match=r"expand_gain\[3\]"):
        mc.lens_targets_from_utilities(wc, bad, ok, 37, cfg, 0.1)
    with pytest.raises(ValueError, match="collapse_loss"):
        mc.lens_targets_from_utilities(wc, ok, nan_vec(n - 1), 37, cfg, 0.1)
    with pytest.raises(TypeError, match="expand_gain"):
        mc.lens_targets_from_utilities(wc, torch.zeros(n, dtype=torch.int64), ok, 37, cfg, 0.1)
    for price in (-0.1, math.nan):
        with pytest.raises(ValueError, match="price"):
            mc.lens_targets_from_utilities(wc, ok, ok, 37, cfg, price)
    two = nan_vec(n)
    two[0], two[2] = 0.1, 0.2  # two members of group 0 disagree
    with pytest.raises(ValueError, match="collapse_loss"):
        mc.lens_targets_from_utilities(wc, ok, two, 37, cfg, 0.1)


# --- best variant ---------------------------------------------------------------------------


def reference_best_targets(cfg, T, wc, best, delta):
    """§6 "Best variant" by a per-token comparison of the two LOD maps (evicted tokens carry no
    evidence); also checks that no entry is both finer and coarser, and that a coarser member
    implies its whole group is coarser (aligned spans nest)."""
    level = {}
    for lod, s in S.entries_of(best):
        for tok in range(s, s + S.span(cfg, lod)):
            level[tok] = lod
    entries = S.entries_of(wc)
    gid = S.reference_group_ids(cfg, T, entries)
    finer, coarser = [], []
    for lod, s in entries:
        seen = [level[tok] for tok in range(s, s + S.span(cfg, lod)) if tok in level]
        finer.append(any(lv < lod for lv in seen))
        coarser.append(any(lv > lod for lv in seen))
        assert not (finer[-1] and coarser[-1]), f"entry ({lod}, {s}) both finer and coarser"
    collapsed = {gid[i] for i in range(len(entries)) if coarser[i] and gid[i] >= 0}
    for i in range(len(entries)):
        if gid[i] in collapsed:
            assert coarser[i], f"group {gid[i]} only partly coarser in best at entry {i}"
    m = math.tanh(abs(delta))
    targets = [m if finer[i] else (-m if gid[i] in collapsed else 0.0)
               for i in range(len(entries))]
    mask = [finer[i] or gid[i] in collapsed for i in range(len(entries))]
    return targets, mask


@given(S.variant_pairs())
def test_best_targets_follow_the_lod_map_comparison(case):
    """finer in best -> +tanh(|Δ|); coarser (best collapsed the group or an ancestor) ->
    -tanh(|Δ|) on every member of a legal group; elsewhere masked (§6 "Best variant")."""
    cfg, T, wc, best, delta = case
    targets, mask = mc.lens_targets_from_best(wc, best, delta, T, cfg)
    exp_t, exp_m = reference_best_targets(cfg, T, wc, best, delta)
    msg = (f"targets={targets.tolist()}\nexpected={exp_t}\nmask={mask.tolist()}\n"
           f"{S.describe(cfg, T, wc)}\nbest={S.entries_of(best)} delta={delta}")
    assert mask.tolist() == exp_m, msg
    assert torch.allclose(targets.double(), torch.tensor(exp_t, dtype=torch.float64),
                          atol=1e-6), msg


@given(S.variant_pairs())
def test_best_targets_label_only_legal_actions_and_whole_groups(case):
    """Positive targets only on gists; negative only inside a legal group, and then on all K
    members with one value (block-aligned broadcast)."""
    cfg, T, wc, best, delta = case
    targets, mask = mc.lens_targets_from_best(wc, best, delta, T, cfg)
    expand_ok, group_id = mc.legal_actions(wc, T, cfg)
    msg = (f"targets={targets.tolist()} group_id={group_id.tolist()}\n"
           f"{S.describe(cfg, T, wc)}\nbest={S.entries_of(best)} delta={delta}")
    assert not bool((targets[~expand_ok] > 0).any()), msg
    assert not bool((targets[group_id < 0] < 0).any()), msg
    neg = mask & (targets < 0) if delta != 0 else torch.zeros_like(mask)
    for g in set(group_id[neg].tolist()):
        members = group_id == g
        assert bool(mask[members].all()) and bool((targets[members] == targets[neg][0]).all()), msg


@given(S.cases())
def test_identical_variant_gives_an_empty_mask(case):
    """The best variant compared with itself has nothing to teach: mask all false."""
    cfg, T, wc = case
    targets, mask = mc.lens_targets_from_best(wc, wc, 1.0, T, cfg)
    assert not bool(mask.any()) and bool((targets == 0).all()), S.describe(cfg, T, wc)


def test_best_targets_example_and_pinned_edge_cases():
    """K=4: best expands one LOD2 gist (finer: +), collapses a legal group (coarser: - on all
    four), collapses a region whose LOD1 entries have no legal group (masked, while the legal
    LOD0 group inside it is labelled), and evicts the start of an entry it refines (evicted
    tokens carry no evidence: still finer; wholly evicted: masked)."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=4)
    T = 68
    # wc:  LOD2 [0,16) | LOD1 16,20,24,28 (a group) | LOD1 32,36,40 + LOD0 44..47 | LOD0 48..67
    wc_entries = ([(2, 0)] + [(1, s) for s in (16, 20, 24, 28)] + [(1, s) for s in (32, 36, 40)]
                  + [(0, t) for t in range(44, 68)])
    # best: evicts [0,4), LOD1 4,8,12 | LOD2 [16,32) | LOD2 [32,48) | LOD0 48..67
    best_entries = [(1, 4), (1, 8), (1, 12), (2, 16), (2, 32)] + [(0, t) for t in range(48, 68)]
    wc, best = S.make_wc(wc_entries), S.make_wc(best_entries)
    targets, mask = mc.lens_targets_from_best(wc, best, -0.5, T, cfg)
    m = math.tanh(0.5)
    # LOD1 32, 36, 40 are masked (their siblings are LOD0 44..47: no legal group), but the
    # LOD0 group 44..47 under best's LOD2 [32, 48) is a legal collapse and is labelled.
    expected = [m] + [-m] * 4 + [0.0] * 3 + [-m] * 4 + [0.0] * 20
    assert mask.tolist() == [True] * 5 + [False] * 3 + [True] * 4 + [False] * 20, mask.tolist()
    assert torch.allclose(targets, torch.tensor(expected), atol=1e-6), targets.tolist()
    # Wholly evicted in best: no evidence either way.
    gone = S.make_wc([(2, 16), (2, 32)] + [(0, t) for t in range(48, 68)])
    targets, mask = mc.lens_targets_from_best(wc, gone, 0.5, T, cfg)
    assert mask.tolist()[:1] == [False], mask.tolist()


# --- variant weights ------------------------------------------------------------------------


@given(S.variant_losses(), st.one_of(st.none(), st.floats(0, 20)))
def test_variant_weights_never_favour_a_worse_variant(losses, baseline):
    """weights are >= 1, finite, and non-increasing in the loss (ties weigh the same); the best
    variant weighs the most (§6; the field notes' bug gave the worst variants the most)."""
    w = mc.variant_weights(losses, baseline)
    msg = f"losses={losses.tolist()} baseline={baseline} weights={w.tolist()}"
    assert w.shape == losses.shape and bool(torch.isfinite(w).all()) and bool((w >= 1).all()), msg
    lo, hi = losses[:, None], losses[None, :]
    worse_heavier = (lo < hi) & (w[:, None] < w[None, :])
    assert not bool(worse_heavier.any()), msg
    assert not bool(((lo == hi) & (w[:, None] != w[None, :])).any()), msg
    assert w[torch.argmin(losses)] == w.max(), msg


def test_variant_weights_example():
    """Improvement over the worst (default baseline): losses [1, 2, 1.5] -> [2, 1, 1.5]; over a
    given baseline 1.75 -> [1.75, 1, 1.25]."""
    losses = torch.tensor([1.0, 2.0, 1.5])
    assert mc.variant_weights(losses).tolist() == [2.0, 1.0, 1.5]
    assert mc.variant_weights(losses, 1.75).tolist() == [1.75, 1.0, 1.25]
    with pytest.raises(ValueError, match="losses"):
        mc.variant_weights(torch.tensor([1.0, NAN]))
