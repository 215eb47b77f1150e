"""focus_step and block_scores (contract §5): the allocator's output is always valid and within
budget; every action is legal and replays to the output; forced collapses come first and only
they may break hysteresis; max_actions bounds the rest; quiet scores do nothing; the same
inputs give the same outputs; ties break towards older entries; bad input raises."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spec import strategies as S
from spec.implementation import mc


def check_step(cfg, T, wc, scores):
    """Run focus_step and check everything a single step must satisfy; returns its parts."""
    before = (wc.lods.clone(), wc.starts.clone(), wc.residency.clone(), scores.clone())
    out, actions = mc.focus_step(wc, scores, T, cfg)
    case = f"{S.describe(cfg, T, wc)} scores={scores.tolist()} actions={actions}"
    assert all(torch.equal(a, b) for a, b in
               zip(before, (wc.lods, wc.starts, wc.residency, scores), strict=True)), (
        f"focus_step modified its inputs: {case}")
    assert isinstance(actions, list) and all(isinstance(a, mc.Action) for a in actions), case
    out.validate(cfg, T)  # includes the budget
    entries, origin, records = S.replay_focus(cfg, T, wc, actions)
    assert entries == S.entries_of(out), (
        f"actions do not replay to the output: replayed {entries}, got {S.entries_of(out)}; "
        f"{case}")
    expected_res = [0 if o is None else int(wc.residency[o]) + 1 for o in origin]
    assert out.residency.tolist() == expected_res, (
        f"residency: got {out.residency.tolist()}, expected {expected_res} (created 0, "
        f"others +1); {case}")
    return out, actions, records, case, origin


@given(S.focus_cases())
def test_output_is_valid_and_actions_are_legal(case):
    """The new WC passes validate (budget included); every action is legal when applied in
    order and together they turn the input into the output; residency is 0 for created
    entries and +1 for the rest (§3 invariants, §5 steps 1-5)."""
    check_step(*case)


@given(S.focus_cases())
def test_forced_phase_first_then_at_most_max_actions_mature_actions(case):
    """Collapses and evictions made while N > budget come first; every later action acts only
    on input entries that are old enough (residency >= min_residency) and untouched in this
    step, and there are at most max_actions of them (§5 steps 2-5, hysteresis)."""
    cfg, T, wc, scores = case
    out, actions, records, desc, _ = check_step(*case)
    forced = [r["forced"] for r in records]
    assert forced == sorted(forced, reverse=True), f"forced actions not first: {desc}"
    free = [r for r in records if not r["forced"]]
    assert len(free) <= cfg.max_actions, f"{len(free)} > max_actions: {desc}"
    assert all(r["kind"] != "evict" for r in free), desc
    for r in free:
        assert None not in r["acted_on"], f"acts on an entry created this step: {r} {desc}"
        young = [i for i in r["acted_on"] if wc.residency[i] < cfg.min_residency]
        assert not young, f"acts on entries younger than min_residency: {young} {r} {desc}"
    if len(wc) <= cfg.budget:
        assert not any(forced), f"forced actions on a WC within budget: {desc}"


@given(S.focus_cases())
def test_eviction_only_when_unavoidable(case):
    """Entries are evicted only when N > budget and no legal group is left to collapse (the
    replay checks each eviction); afterwards N == budget exactly (§3 invariant 5, §5 step 2)."""
    cfg, T, wc, scores = case
    out, actions, records, desc, _ = check_step(*case)
    if any(r["kind"] == "evict" for r in records):
        assert len(out) == cfg.budget, f"evicted more than needed: N={len(out)} {desc}"
        _, group_id = mc.legal_actions(out, T, cfg)
        assert bool((group_id < 0).all()), f"evicted while a group is left: {desc}"


def group_table(cfg, T, wc, scores):
    """{first start: (score, start)} for every input group, scored by block_scores."""
    _, group_id = mc.legal_actions(wc, T, cfg)
    gs = mc.block_scores(scores, group_id, cfg.block_score).tolist()
    table = {}
    for i, g in enumerate(group_id.tolist()):
        if g >= 0 and (i == 0 or group_id[i - 1] != g):
            table[int(wc.starts[i])] = (gs[g], int(wc.starts[i]))
    return table


@given(S.focus_cases())
def test_actions_follow_the_scores(case):
    """Forced collapses take the lowest-scoring input groups first (ties: older); expansions
    need score > expand_threshold and come by score descending (ties: older start first); a
    collapse outside the forced phase is either half of a swap (followed by its expansion,
    score - group_score > swap_margin) or voluntary (group_score < -collapse_threshold,
    lowest first, after every expansion) (§5 steps 1-4)."""
    cfg, T, wc, scores = case
    out, actions, records, desc, _ = check_step(*case)
    groups = group_table(cfg, T, wc, scores)
    x = {int(s): float(v) for s, v in zip(wc.starts.tolist(), scores.double().tolist(),
                                           strict=True)}
    forced_inputs = [groups[r["start"]] for r in records
                     if r["forced"] and r["kind"] == "collapse" and None not in r["acted_on"]]
    rest = [g for s, g in groups.items() if g not in forced_inputs]
    if forced_inputs and rest:
        assert max(forced_inputs) < min(rest), (
            f"forced collapses skipped a lower group: took {forced_inputs}, left {min(rest)}; "
            f"{desc}")
    free = [r for r in records if not r["forced"]]
    expands = [(x[r["start"]], r["start"]) for r in free if r["kind"] == "expand"]
    assert all(v > cfg.expand_threshold for v, _ in expands), desc
    assert expands == sorted(expands, key=lambda e: (-e[0], e[1])), (
        f"expansions out of order {expands}; {desc}")
    last_expand = max((k for k, r in enumerate(free) if r["kind"] == "expand"), default=-1)
    voluntary = []
    for k, r in enumerate(free):
        if r["kind"] != "collapse":
            continue
        g_score = groups[r["start"]][0]
        if k < last_expand:
            nxt = free[k + 1]
            assert nxt["kind"] == "expand", f"a collapse before an expansion is no swap: {desc}"
            assert x[nxt["start"]] - g_score > cfg.swap_margin, f"swap below margin: {desc}"
        else:
            assert g_score < -cfg.collapse_threshold, f"voluntary collapse of {g_score}: {desc}"
            voluntary.append(groups[r["start"]])
    assert voluntary == sorted(voluntary), f"voluntary collapses out of order: {desc}"


@given(S.focus_cases() | S.voluntary_collapse_cases())
def test_no_voluntary_collapse_is_left_undone(case):
    """Unless max_actions ran out, no input group that is old enough and untouched survives
    with a group score below -collapse_threshold (§5 step 4)."""
    cfg, T, wc, scores = case
    out, actions, records, desc, _ = check_step(*case)
    if sum(not r["forced"] for r in records) >= cfg.max_actions:
        return
    touched = {i for r in records for i in r["acted_on"] if i is not None}
    entries = S.entries_of(wc)
    out_entries = set(S.entries_of(out))
    for start, (g_score, _) in group_table(cfg, T, wc, scores).items():
        h = S.find_entry(entries, start)
        members = range(h, h + cfg.block_size)
        alive = all(entries[i] in out_entries and i not in touched for i in members)
        old = all(int(wc.residency[i]) >= cfg.min_residency for i in members)
        if alive and old:
            assert not g_score < -cfg.collapse_threshold, (
                f"group at {start} with score {g_score} left uncollapsed; {desc}")


def float32_within(v: float, toward: float) -> float:
    """The float32 nearest to v on the side of `toward` (thresholds like 0.1 are not float32)."""
    f = np.float32(v)
    if abs(float(f) - toward) > abs(v - toward):
        f = np.nextafter(f, np.float32(toward))
    return float(f)


@given(st.data())
def test_quiet_scores_on_a_wc_within_budget_are_a_no_op(data):
    """Scores in [-collapse_threshold, expand_threshold] on a WC within budget: no action,
    the same entries, every residency + 1 (§5). Half the cases leave room for an expansion,
    so a gist scoring exactly the threshold must not expand."""
    cfg, T, wc = data.draw(S.cases() | S.cases_with_room())
    lo, hi = float32_within(-cfg.collapse_threshold, 0), float32_within(cfg.expand_threshold, 0)
    xs = data.draw(st.lists(st.one_of(st.just(0.0), st.floats(lo, hi, width=32)),
                            min_size=len(wc), max_size=len(wc)))
    scores = torch.tensor(xs, dtype=torch.float32)
    out, actions = mc.focus_step(wc, scores, T, cfg)
    assert actions == [], f"quiet scores acted: {actions}; {S.describe(cfg, T, wc)} {xs}"
    assert S.entries_of(out) == S.entries_of(wc)
    assert out.residency.tolist() == [r + 1 for r in wc.residency.tolist()]


@given(st.data())
def test_same_inputs_same_outputs(data):
    """focus_step is a pure function: repeated calls and equal copies of the inputs give equal
    outputs, ties included (§4: same inputs, same outputs)."""
    cfg, T, wc, _ = data.draw(S.focus_cases())
    scores = data.draw(S.scores_for(len(wc), "ties"))
    first = mc.focus_step(wc, scores, T, cfg)
    copy = mc.WorkingContext(wc.lods.clone(), wc.starts.clone(), wc.residency.clone())
    for again in (mc.focus_step(wc, scores, T, cfg), mc.focus_step(copy, scores.clone(), T, cfg)):
        assert again[0] == first[0] and again[1] == first[1], (
            f"{first} vs {again}; {S.describe(cfg, T, wc)} scores={scores.tolist()}")


# --- the no-thrash and round-trip properties -------------------------------------------------


@given(S.cases(), st.integers(4, 8), st.sampled_from(["alternate", "checker", "flip_flop"]))
def test_adversarial_scores_do_not_thrash(case, steps, pattern):
    """Under scores that flip sign every step, an entry created at step a is changed again no
    earlier than step a + min_residency + 1 (within budget no collapse is forced) (§3
    hysteresis, §5 step 5)."""
    cfg, T, wc = case
    born = [-1 - r for r in wc.residency.tolist()]  # the step that created each entry
    history = []
    for step in range(steps):
        n, sign = len(wc), 1.0 if step % 2 == 0 else -1.0
        if pattern == "alternate":
            xs = [sign] * n
        elif pattern == "checker":
            xs = [sign if i % 2 == 0 else -sign for i in range(n)]
        else:  # gists want to expand on even steps, everything wants to collapse on odd ones
            xs = [sign * (1.0 if lod > 0 else 0.5) for lod in wc.lods.tolist()]
        out, actions, records, desc, origin = check_step(cfg, T, wc, torch.tensor(xs))
        history.append(actions)
        for r in records:
            assert not r["forced"], f"forced action within budget: {desc}"
            for i in r["acted_on"]:
                assert step - born[i] > cfg.min_residency, (
                    f"{S.entries_of(wc)[i]} changed at step {step}, created at step {born[i]}, "
                    f"min_residency={cfg.min_residency}; history={history}; {desc}")
        born = [step if o is None else born[o] for o in origin]
        wc = out


@given(S.focus_cases() | S.focus_cases(S.cases_with_room()) | S.voluntary_collapse_cases())
def test_hysteresis_boundary_on_both_sides(case):
    """Hysteresis on both sides of its boundary (§3): with every entry exactly min_residency
    steps old, focus_step acts as if every entry were old (same actions as with residency
    min_residency + 7); with every entry one step younger, only forced actions happen.
    (Checking only that young entries are left alone passed a `>` for `>=`.)"""
    cfg, T, wc, scores = case
    at = S.make_wc(S.entries_of(wc), [cfg.min_residency] * len(wc))
    old = S.make_wc(S.entries_of(wc), [cfg.min_residency + 7] * len(wc))
    _, at_actions = mc.focus_step(at, scores, T, cfg)
    _, old_actions = mc.focus_step(old, scores, T, cfg)
    desc = f"{S.describe(cfg, T, wc)} scores={scores.tolist()}"
    assert at_actions == old_actions, (
        f"residency == min_residency={cfg.min_residency}: {at_actions}; older: {old_actions}; "
        f"{desc}")
    if cfg.min_residency > 0:
        young = S.make_wc(S.entries_of(wc), [cfg.min_residency - 1] * len(wc))
        _, records = S.replay_focus(cfg, T, young, mc.focus_step(young, scores, T, cfg)[1])[1:]
        free = [r for r in records if not r["forced"]]
        assert not free, f"acted on entries at residency {cfg.min_residency - 1}: {free}; {desc}"


def quiet_steps(wc, T, cfg):
    """Run min_residency all-zero steps so entries created by the last action may act."""
    for _ in range(cfg.min_residency):
        wc, actions = mc.focus_step(wc, torch.zeros(len(wc)), T, cfg)
        assert actions == []
    return wc


@given(st.data())
def test_expand_then_collapse_round_trips(data):
    """Expanding a gist, then (once its children are old enough) collapsing its children,
    restores the original entries (§5)."""
    cfg, T, wc = data.draw(S.cases(S.configs(min_residency=0) | S.configs())
                           | S.cases_with_room())  # cases() alone: room in 13 of 50 (ci)
    wc = mc.WorkingContext(wc.lods, wc.starts, wc.residency + cfg.min_residency)
    gists = [i for i, lod in enumerate(wc.lods.tolist()) if lod > 0]
    if not gists or len(wc) + cfg.block_size - 1 > cfg.budget:
        return
    g = data.draw(st.sampled_from(gists))
    lod, start = int(wc.lods[g]), int(wc.starts[g])
    xs = torch.zeros(len(wc))
    xs[g] = 1.0
    grown, actions = mc.focus_step(wc, xs, T, cfg)
    assert actions == [mc.Action("expand", lod, start)], (actions, S.describe(cfg, T, wc))
    grown = quiet_steps(grown, T, cfg)
    xs = torch.tensor([-1.0 if start <= s < start + S.span(cfg, lod) else 0.0
                       for s in grown.starts.tolist()])
    back, actions = mc.focus_step(grown, xs, T, cfg)
    assert actions == [mc.Action("collapse", lod - 1, start)], (actions, S.describe(cfg, T, grown))
    assert S.entries_of(back) == S.entries_of(wc), S.describe(cfg, T, back)


@given(st.data())
def test_collapse_then_expand_round_trips(data):
    """Collapsing a sibling group, then (once the parent is old enough) expanding the parent,
    restores the original entries (§5)."""
    cfg, T, wc = data.draw(S.cases())
    wc = mc.WorkingContext(wc.lods, wc.starts, wc.residency + cfg.min_residency)
    gid = S.reference_group_ids(cfg, T, S.entries_of(wc))
    heads = [i for i, g in enumerate(gid) if g >= 0 and (i == 0 or gid[i - 1] != g)]
    if not heads:
        return
    h = data.draw(st.sampled_from(heads))
    lod, start = int(wc.lods[h]), int(wc.starts[h])
    xs = torch.zeros(len(wc))
    xs[h:h + cfg.block_size] = -1.0
    small, actions = mc.focus_step(wc, xs, T, cfg)
    assert actions == [mc.Action("collapse", lod, start)], (actions, S.describe(cfg, T, wc))
    small = quiet_steps(small, T, cfg)
    xs = (small.starts == start).float()
    back, actions = mc.focus_step(small, xs, T, cfg)
    assert actions == [mc.Action("expand", lod + 1, start)], (actions, S.describe(cfg, T, small))
    assert S.entries_of(back) == S.entries_of(wc), S.describe(cfg, T, back)


# --- hand-checked examples: ties, max_actions, forced collapses, swaps -----------------------

# K=4, LOD2 spans 16; tail of 4 tokens. T=68: LOD2 gists at 0, 16, 32, then LOD1 at 48, 52,
# 56, 60, then tokens 64..67 (the tail).
K4 = dict(block_size=4, max_lod=2, recent_tokens=4, expand_threshold=0.1,
          collapse_threshold=0.1, swap_margin=0.2, min_residency=0)
T68 = [(2, 0), (2, 16), (2, 32), (1, 48), (1, 52), (1, 56), (1, 60), (0, 64), (0, 65), (0, 66),
       (0, 67)]
LOD1_RUN = [(2, 0)] + [(1, s) for s in range(16, 64, 4)] + [(0, t) for t in range(64, 68)]


def run(entries, xs, T=68, **overrides):
    cfg = mc.MCConfig(**{**K4, **overrides})
    wc = S.make_wc(entries)
    out, actions = mc.focus_step(wc, torch.tensor(xs, dtype=torch.float32), T, cfg)
    out.validate(cfg, T)
    return out, actions


def test_expand_ties_go_to_the_older_gist():
    """Two gists with equal scores and room for one expansion: the older one expands (§5.1)."""
    xs = [0.0, 0.5, 0.5, 0.4, 0.4, 0.4, 0.4, 0.0, 0.0, 0.0, 0.0]  # no swap: 0.5 - 0.4 < 0.2
    out, actions = run(T68, xs, budget=14)
    assert actions == [mc.Action("expand", 2, 16)], actions


def test_collapse_ties_go_to_the_older_group():
    """Two groups with equal scores and one action allowed: the older group collapses (§5.1)."""
    xs = [0.0] + [-0.5] * 8 + [0.0] * 8
    out, actions = run(LOD1_RUN, xs, budget=40, max_actions=1)
    assert actions == [mc.Action("collapse", 1, 16)], actions


def test_forced_ties_go_to_the_older_group_and_ignore_max_actions_and_residency():
    """Over budget, equal-scoring groups are collapsed oldest first, as many as needed, even
    with max_actions=1 and min_residency beyond every entry's age (§5 step 2)."""
    entries = [(1, t) for t in range(0, 64, 4)] + [(0, t) for t in range(64, 68)]  # N=20
    out, actions = run(entries, [0.0] * 20, budget=14, max_actions=1, min_residency=5)
    assert actions == [mc.Action("collapse", 1, 0), mc.Action("collapse", 1, 16)], actions
    assert len(out) == 14


def test_forced_collapses_cascade_before_evicting():
    """When the only groups left are made of parents created by forced collapses in this
    step, they are collapsed too (history kept at LOD2) rather than evicting (§5 step 2)."""
    entries = [(0, t) for t in range(68)]  # every block at LOD0: N=68
    out, actions = run(entries, [0.0] * 68, budget=8)
    assert [a.kind for a in actions].count("evict") == 0, actions
    assert S.entries_of(out)[:3] == [(2, 0), (2, 16), (2, 32)], S.entries_of(out)
    assert len(out) <= 8


def test_eviction_when_even_the_coarsest_tiling_does_not_fit():
    """With nothing left to collapse, the oldest entries are evicted, just enough (§3.5)."""
    out, actions = run(T68, [0.0] * 11, budget=6)
    assert actions == [mc.Action("collapse", 1, 48), mc.Action("evict", 2, 0),
                       mc.Action("evict", 2, 16)], actions
    assert len(out) == 6


def test_a_swap_counts_as_two_actions():
    """At the budget, a needle needs a swap (collapse + expand): with max_actions=1 nothing
    happens; with 2 the swap is applied, collapse first (§5 step 3)."""
    xs = [0.9, 0.0, 0.0, -0.05, -0.05, -0.05, -0.05, 0.0, 0.0, 0.0, 0.0]  # no voluntary
    _, actions = run(T68, xs, budget=11, max_actions=1)
    assert actions == [], actions
    _, actions = run(T68, xs, budget=11, max_actions=2)
    assert actions == [mc.Action("collapse", 1, 48), mc.Action("expand", 2, 0)], actions
    # two needles, each needing a swap, and 3 actions: one swap, then 1 action left: stop
    xs = [0.0, 0.9, 0.0] + [-0.5] * 8 + [0.8] * 4 + [0.0] * 4
    entries = [(2, 0), (2, 16), (2, 32)] + [(1, s) for s in range(48, 80, 4)] + [
        (1, 80), (1, 84), (1, 88), (1, 92)] + [(0, t) for t in range(96, 100)]
    _, actions = run(entries, xs, T=100, budget=len(entries), max_actions=3)
    assert [a.kind for a in actions] == ["collapse", "expand", "collapse"], actions


def test_an_entry_collapsed_by_a_swap_is_not_expanded_later():
    """At most one action per entry: a gist collapsed away by a swap is skipped when its
    own turn to expand comes (§5 step 5)."""
    xs = [1.0, 0.5, -1.0, -1.0, -1.0] + [-0.2] * 4 + [0.0] * 8  # group at 16: -0.625
    out, actions = run(LOD1_RUN, xs, budget=17)
    assert actions == [mc.Action("collapse", 1, 16), mc.Action("expand", 2, 0),
                       mc.Action("collapse", 1, 32)], actions


def test_swap_needs_the_margin():
    """A swap happens only if score - group_score > swap_margin (§5 step 3)."""
    xs = [0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    _, actions = run(T68, xs, budget=11, swap_margin=0.25)
    assert actions == [], actions
    _, actions = run(T68, xs, budget=11, swap_margin=0.2)
    assert actions == [mc.Action("collapse", 1, 48), mc.Action("expand", 2, 0)], actions


def test_a_swap_never_collapses_the_group_of_its_own_gist():
    """The paired group is the lowest-scoring one that does not contain the gist being
    expanded, even when the gist's own group scores lower (§5 step 3)."""
    xs = [0.0, 0.9, -0.9, -0.9, -0.9, -0.2, -0.2, -0.2, -0.2] + [0.0] * 8  # own group: -0.45
    _, actions = run(LOD1_RUN, xs, budget=17)
    assert actions == [mc.Action("collapse", 1, 32), mc.Action("expand", 1, 16)], actions


def test_block_score_max_is_conservative():
    """One member worth keeping keeps its group under `max`, not under `mean` (§4)."""
    xs = [0.0, 0.0, 0.0, 0.0625, -0.9, -0.9, -0.9, 0.0, 0.0, 0.0, 0.0]
    _, actions = run(T68, xs, budget=20, block_score="mean")
    assert actions == [mc.Action("collapse", 1, 48)], actions
    _, actions = run(T68, xs, budget=20, block_score="max")
    assert actions == [], actions


# --- block_scores -----------------------------------------------------------------------------


@given(st.data())
def test_block_scores_mean_and_max(data):
    """block_scores gives one float64 value per group: the mean (the float64 sum of the
    members' scores in position order, divided by their count) or the max (§4)."""
    cfg, T, wc = data.draw(S.cases())
    scores = data.draw(S.scores_for(len(wc), "ties") | S.scores_for(len(wc)))
    _, group_id = mc.legal_actions(wc, T, cfg)
    for how in ("mean", "max"):
        got = mc.block_scores(scores, group_id, how)
        G = int(group_id.max()) + 1 if len(wc) else 0
        assert got.dtype == torch.float64 and got.shape == (max(G, 0),), (got, group_id)
        for g in range(max(G, 0)):
            vals = [float(v) for v, i in zip(scores.tolist(), group_id.tolist(), strict=True)
                    if i == g]
            total = 0.0
            for v in vals:
                total += v
            want = max(vals) if how == "max" else total / len(vals)
            assert float(got[g]) == want, (how, g, vals, float(got[g]), want)
            if how == "mean":
                assert math.isclose(want, math.fsum(vals) / len(vals), abs_tol=1e-12)


def test_block_scores_bad_input():
    """Unknown `how`, NaN scores, mismatched lengths, int scores and ids without members raise
    typed errors naming the argument (§4)."""
    gid = torch.tensor([0, 0, 1, 1, -1])
    x = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    with pytest.raises(ValueError, match="how"):
        mc.block_scores(x, gid, "median")
    with pytest.raises(ValueError, match=r"scores\[3\]"):
        mc.block_scores(torch.tensor([0.1, 0.2, 0.3, float("nan"), 0.5]), gid, "mean")
    with pytest.raises(ValueError, match="scores"):
        mc.block_scores(x[:4], gid, "mean")
    with pytest.raises(TypeError, match="scores"):
        mc.block_scores(torch.arange(5), gid, "mean")
    with pytest.raises(ValueError, match="group 1"):
        mc.block_scores(x, torch.tensor([0, 0, 2, 2, -1]), "mean")


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad,error,needle",
    [
        ("nan", ValueError, r"scores\[3\]"),
        ("inf", ValueError, r"scores\[5\]"),
        ("short", ValueError, "scores"),
        ("long", ValueError, "scores"),
        ("int", TypeError, "scores"),
        ("2d", ValueError, "scores"),
        ("list", TypeError, "scores"),
    ],
)
def test_bad_scores_raise(bad, error, needle):
    """NaN/inf scores, a length other than the WC's, a non-float dtype or shape raise a typed
    error naming scores (and the offending index) (§4)."""
    cfg = mc.MCConfig(**K4, budget=20)
    wc = S.make_wc(T68)
    xs = torch.zeros(11)
    if bad == "nan":
        xs[3] = float("nan")
    elif bad == "inf":
        xs[5] = float("-inf")
    elif bad == "short":
        xs = xs[:10]
    elif bad == "long":
        xs = torch.zeros(12)
    elif bad == "int":
        xs = torch.zeros(11, dtype=torch.int64)
    elif bad == "2d":
        xs = xs[None]
    else:
        xs = [0.0] * 11
    with pytest.raises(error, match=needle):
        mc.focus_step(wc, xs, 68, cfg)


def test_invalid_working_context_raises_its_invariant_error():
    """A WC that fails validate raises that invariant's error, naming the entry (§4)."""
    cfg = mc.MCConfig(**K4, budget=20)
    gap = T68[:8] + T68[9:]
    with pytest.raises(mc.ContiguityError) as info:
        mc.focus_step(S.make_wc(gap), torch.zeros(10), 68, cfg)
    assert info.value.index == 8, info.value
    with pytest.raises(mc.CoverageError):
        mc.focus_step(S.make_wc(T68), torch.zeros(11), 69, cfg)
    with pytest.raises(TypeError, match="wc"):
        mc.focus_step(T68, torch.zeros(11), 68, cfg)
    with pytest.raises(TypeError, match="cfg"):
        mc.focus_step(S.make_wc(T68), torch.zeros(11), 68, dict(K4))


def test_low_precision_scores_are_accepted():
    """bf16/fp16/fp64 scores are compared exactly as their float64 values (§5)."""
    cfg = mc.MCConfig(**K4, budget=20)
    wc = S.make_wc(T68)
    xs = torch.tensor([0.0, 0.5, 0.0, -0.5, -0.5, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0])
    want = mc.focus_step(wc, xs, 68, cfg)
    for dtype in (torch.bfloat16, torch.float16, torch.float64):
        got = mc.focus_step(wc, xs.to(dtype), 68, cfg)
        assert got[0] == want[0] and got[1] == want[1], (dtype, got, want)
