"""The lens loss (contract §6 "Loss"): every term's polarity, masking, the empty-mask edge case in
fp32 and bf16, permutation invariance, and a loss that cannot be hard-wired to zero."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spec import strategies as S
from spec.implementation import mc

TERMS = ("reg", "pref", "rank", "budget")
NAN = float("nan")


def only(term, **kw):
    """Weights that keep one term (weight 1) and zero the others."""
    w = {t: 0.0 for t in TERMS}
    w[term] = 1.0
    w.update(kw)
    return mc.LensLossWeights(**w)


def loss_and_grad(scores, targets, mask, wc, cfg, weights=None, term="total"):
    s = scores.detach().clone().requires_grad_(True)
    out = mc.lens_loss(s, targets, mask, wc, cfg, weights or mc.LensLossWeights())
    getattr(out, term).backward()
    return out, s.grad


def describe_loss(cfg, T, wc, scores, targets, mask, weights=None):
    return (f"{S.describe(cfg, T, wc)}\nscores={scores.tolist()}\ntargets={targets.tolist()}\n"
            f"mask={mask.tolist()}\nweights={weights}")


def cost_weighted_masses(scores, mask, wc, T, cfg):
    """(P, Q) of §6 with slot costs from legal_actions: an expand costs K-1 slots, a collapse
    frees K-1 slots shared by K members; an entry whose asked action is illegal weighs 0."""
    K = cfg.block_size
    expand_ok, group_id = mc.legal_actions(wc, T, cfg)
    s = scores.double()
    m = mask.double()
    P = float(((K - 1) * expand_ok.double() * s.clamp(min=0) * m).sum())
    Q = float(((K - 1) / K * (group_id >= 0).double() * (-s).clamp(min=0) * m).sum())
    return P, Q


# --- polarity -------------------------------------------------------------------------------


@given(S.loss_cases(), st.sampled_from([0.25, 0.5, 2.0]))
def test_preference_gradient_opposes_the_target_sign(case, temperature):
    """d pref / d s_i has the opposite sign of t_i for every masked entry with t_i != 0 (descent
    moves the score toward the target's sign), and is 0 where t_i = 0 or the mask is off."""
    cfg, T, wc, scores, targets, mask = case
    w = only("pref", temperature=temperature)
    _, g = loss_and_grad(scores, targets, mask, wc, cfg, w, "pref")
    msg = f"grad={g.tolist()}\n{describe_loss(cfg, T, wc, scores, targets, mask, w)}"
    t = torch.where(mask, targets, 0.0)
    active = mask & (t != 0)
    assert bool((g[active] * t[active] < 0).all()), msg
    assert bool((g[~active] == 0).all()), msg


@given(S.loss_cases(), st.sampled_from([0.5, 1.0, 3.0]))
def test_regression_pulls_each_score_toward_tanh_of_scaled_target(case, scale):
    """reg = Σ c·(s - tanh(t/scale))² / n; its gradient has the sign of s - tanh(t/scale) on
    every masked entry (descent moves s toward tanh(t/scale))."""
    cfg, T, wc, scores, targets, mask = case
    w = only("reg", target_scale=scale)
    out, g = loss_and_grad(scores, targets, mask, wc, cfg, w, "reg")
    msg = f"reg={out.reg.item()} grad={g.tolist()}\n" + describe_loss(
        cfg, T, wc, scores, targets, mask, w)
    y = torch.tanh(torch.where(mask, targets, 0.0) / scale)
    assert torch.equal(torch.sign(g[mask]), torch.sign(scores[mask] - y[mask])), msg
    n = max(int(mask.sum()), 1)
    expected = float(((scores[mask].double() - y[mask].double()) ** 2).sum()) / n
    assert math.isclose(out.reg.item(), expected, rel_tol=1e-4, abs_tol=1e-6), msg


def violated_pairs(scores, targets, mask, margin):
    """Every pair of masked entries with t_i > t_j and s_i - s_j < margin (O(n²), reference)."""
    idx = mask.nonzero().flatten().tolist()
    return [(i, j) for i in idx for j in idx
            if targets[i] > targets[j] and float(margin - (scores[i] - scores[j])) > 0]


@given(S.loss_cases(), st.sampled_from([0.0, 0.1, 0.5]))
def test_rank_is_zero_exactly_when_every_pair_is_ordered_by_the_margin(case, margin):
    """rank = 0 iff every pair of masked entries with t_i > t_j has s_i - s_j >= margin: the
    pairs the term uses must include a misordered one whenever one exists."""
    cfg, T, wc, scores, targets, mask = case
    out = mc.lens_loss(scores, targets, mask, wc, cfg, only("rank", margin=margin))
    bad = violated_pairs(scores, targets, mask, margin)
    msg = f"rank={out.rank.item()} violated={bad[:5]}\n" + describe_loss(
        cfg, T, wc, scores, targets, mask)
    assert (out.rank.item() > 0) == bool(bad), msg
    assert out.rank.item() >= 0, msg


@given(S.loss_cases(), st.sampled_from([0.1, 0.5]))
def test_rank_gradient_widens_the_gap_between_higher_and_lower_targets(case, margin):
    """Descending the rank term raises every entry holding the highest masked target and lowers
    every entry holding the lowest (it widens each misordered gap it uses, never narrows
    one from the top or the bottom); with a misordered pair, some gradient is non-zero."""
    cfg, T, wc, scores, targets, mask = case
    out, g = loss_and_grad(scores, targets, mask, wc, cfg, only("rank", margin=margin), "rank")
    msg = f"grad={g.tolist()}\n" + describe_loss(cfg, T, wc, scores, targets, mask)
    if not bool(mask.any()):
        return
    t = targets[mask]
    top, bottom = mask & (targets == t.max()), mask & (targets == t.min())
    assert bool((g[top] <= 0).all()) and bool((g[bottom] >= 0).all()), msg
    if violated_pairs(scores, targets, mask, margin):
        assert bool((g[mask] != 0).any()), msg


def test_rank_small_examples():
    """t = [1, -1], s = [-0.2, 0.3]: the misordered pair's gap s0 - s1 grows under descent, and
    the hinge is margin - (s0 - s1) = 0.1 + 0.5; an adjacent misordered pair is never skipped."""
    cfg = mc.MCConfig(block_size=2, max_lod=1, budget=4, recent_tokens=0)
    wc = S.make_wc([(0, 0), (0, 1)])
    out, g = loss_and_grad(torch.tensor([-0.2, 0.3]), torch.tensor([1.0, -1.0]),
                           torch.tensor([True, True]), wc, cfg, only("rank", margin=0.1), "rank")
    assert math.isclose(out.rank.item(), 0.6, rel_tol=1e-6), out
    assert g[0] < 0 < g[1], g.tolist()
    # Three entries, t = [0, 1, 2], s = [0, 0.5, 0.45], margin 0: the only misordered pair is
    # the adjacent (1, 2); the rank term must see it.
    wc3 = S.make_wc([(0, 0), (0, 1), (0, 2)])
    out = mc.lens_loss(torch.tensor([0.0, 0.5, 0.45]), torch.tensor([0.0, 1.0, 2.0]),
                       torch.ones(3, dtype=torch.bool), wc3, cfg, only("rank", margin=0.0))
    assert out.rank.item() > 0, out


@given(S.loss_cases())
def test_budget_is_the_bounded_cost_weighted_imbalance_and_descent_reduces_it(case):
    """budget = ((P-Q)/(P+Q+eps))² in [0, 1] with P, Q the slot-cost-weighted positive and
    negative score mass over the mask; a small descent step never increases |P-Q|/(P+Q), and
    strictly reduces it when both masses are positive and unequal (a budget term with no
    gradient, which "never increases" alone would accept, fails)."""
    cfg, T, wc, scores, targets, mask = case
    w = mc.LensLossWeights()
    out, g = loss_and_grad(scores, targets, mask, wc, cfg, only("budget"), "budget")
    P, Q = cost_weighted_masses(scores, mask, wc, T, cfg)
    r = (P - Q) / (P + Q + w.eps)
    msg = f"budget={out.budget.item()} P={P} Q={Q} grad={g.tolist()}\n" + describe_loss(
        cfg, T, wc, scores, targets, mask)
    assert 0.0 <= out.budget.item() <= 1.0, msg
    assert math.isclose(out.budget.item(), r * r, rel_tol=1e-4, abs_tol=1e-6), msg
    # A step moving no score by more than 1e-3·|r| (in float64): first order dominates.
    step = 1e-3 * min(abs(r), 1.0) / max(float(g.abs().max()), 1e-30)
    P2, Q2 = cost_weighted_masses(scores.double() - step * g.double(), mask, wc, T, cfg)
    r2 = (P2 - Q2) / (P2 + Q2 + w.eps)
    assert abs(r2) <= abs(r) * (1 + 1e-9) + 1e-12, msg + f"\nimbalance {r} -> {r2}"
    if P > 0 and Q > 0 and abs(r) > 1e-6:  # d|r|/ds != 0 on every entry with a cost and s != 0
        assert abs(r2) < abs(r) * (1 - 1e-9), msg + f"\nimbalance {r} -> {r2}: no descent"


def test_budget_is_zero_when_expand_and_collapse_mass_balance():
    """One gist scored +a (asks for K-1 slots) and one group of K members scored -a (frees K-1
    slots): P = Q, budget 0; all mass on one side: budget close to 1."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=4)
    entries = [(1, 0)] + [(0, t) for t in range(4, 24)]  # LOD0 4..7 is a group; tail 20..23
    wc = S.make_wc(entries)
    _, group_id = mc.legal_actions(wc, 24, cfg)
    scores = torch.zeros(len(entries))
    scores[0] = 0.6
    scores[group_id == 0] = -0.6
    mask = torch.ones(len(entries), dtype=torch.bool)
    targets = torch.zeros(len(entries))
    out = mc.lens_loss(scores, targets, mask, wc, cfg)
    assert out.budget.item() < 1e-10, out
    out = mc.lens_loss(scores.clamp(min=0), targets, mask, wc, cfg)
    assert 0.99 < out.budget.item() <= 1.0, out


# --- masking and the empty mask ---------------------------------------------------------------


@given(S.loss_cases())
def test_masked_out_entries_get_exactly_zero_gradient(case):
    """Every term and the total give masked-out entries a gradient of exactly 0 (and no NaN),
    whatever their targets hold (NaN there means not measured)."""
    cfg, T, wc, scores, targets, mask = case
    for term in ("total", *TERMS):
        _, g = loss_and_grad(scores, targets, mask, wc, cfg, None, term)
        assert not bool(torch.isnan(g).any()) and bool((g[~mask] == 0).all()), (
            f"term={term} grad={g.tolist()}\n" + describe_loss(cfg, T, wc, scores, targets, mask))


@given(S.loss_cases(), st.sampled_from([NAN, math.inf, -math.inf, 1e30]))
def test_masked_out_targets_never_reach_any_term_or_gradient(case, garbage):
    """Whatever a masked-out entry's target holds (NaN, ±inf, 1e30), every term and every
    gradient is bitwise what it is with that target at 0: masked values reach no output and no
    gradient, through any term (§6)."""
    cfg, T, wc, scores, targets, mask = case
    clean_t = torch.where(mask, targets, torch.zeros_like(targets))
    dirty_t = torch.where(mask, targets, torch.full_like(targets, garbage))
    for term in ("total", *TERMS):
        out_clean, g_clean = loss_and_grad(scores, clean_t, mask, wc, cfg, None, term)
        out_dirty, g_dirty = loss_and_grad(scores, dirty_t, mask, wc, cfg, None, term)
        v_clean, v_dirty = getattr(out_clean, term), getattr(out_dirty, term)
        where = f"term={term} garbage={garbage}\n" + describe_loss(cfg, T, wc, scores, clean_t,
                                                                     mask)
        assert torch.equal(v_dirty, v_clean), f"value {v_dirty} != {v_clean}; {where}"
        assert torch.equal(g_dirty, g_clean), f"grad {g_dirty} != {g_clean}; {where}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_empty_mask_gives_exactly_zero_finite_differentiable_loss(dtype):
    """An empty mask (here from all-NaN utilities) gives total and every term exactly 0, a
    working backward, a zero gradient and no NaN, in fp32 and bf16."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=6)
    T = 37
    wc = S.make_wc([(1, 0), (1, 4), (1, 8), (1, 12), (1, 16)] + [(0, t) for t in range(20, 37)])
    n = len(wc)
    targets, mask = mc.lens_targets_from_utilities(wc, torch.full((n,), NAN),
                                                   torch.full((n,), NAN), T, cfg, 0.1)
    assert not bool(mask.any()), mask.tolist()
    scores = torch.linspace(-1, 1, n, dtype=dtype).requires_grad_(True)
    out = mc.lens_loss(scores, torch.full((n,), NAN), mask, wc, cfg)
    values = {k: v.item() for k, v in out._asdict().items()}
    assert all(v == 0.0 for v in values.values()), values
    out.total.backward()
    assert scores.grad is not None and scores.grad.dtype == dtype, scores.grad
    assert bool((scores.grad == 0).all()), scores.grad.tolist()


@given(S.loss_cases(mask_kind="random"), st.integers(0, 2**16))
def test_loss_is_not_constant(case, seed):
    """For random scores and targets the total is positive and its gradient is non-zero at every
    masked entry (a loss hard-wired to zero fails), and every term with a positive value has a
    non-zero gradient on some masked entry (budget: when both masses are positive), so one
    term that ignores its inputs fails too."""
    cfg, T, wc, _, _, mask = case
    g = torch.Generator().manual_seed(seed)
    n = len(wc)
    scores = torch.rand(n, generator=g) * 2 - 1
    targets = torch.randn(n, generator=g)
    out, grad = loss_and_grad(scores, targets, mask, wc, cfg)
    msg = f"loss={out}\ngrad={grad.tolist()}\n" + describe_loss(cfg, T, wc, scores, targets, mask)
    if bool(mask.any()):
        assert out.total.item() > 0 and bool((grad[mask] != 0).all()), msg
    P, Q = cost_weighted_masses(scores, mask, wc, T, cfg)
    for term in TERMS:
        if getattr(out, term).item() > 0 and (term != "budget" or (P > 0 and Q > 0)):
            _, g_term = loss_and_grad(scores, targets, mask, wc, cfg, None, term)
            assert bool((g_term[mask] != 0).any()), f"{term} has no gradient\n{msg}"


# --- composition, weights, invariances --------------------------------------------------------


@given(S.loss_cases(), st.lists(st.sampled_from([0.0, 0.3, 1.0, 2.0]), min_size=4,
                                max_size=4))
def test_total_is_the_weighted_sum_of_the_terms(case, ws):
    """total = w_reg·reg + w_pref·pref + w_rank·rank + w_budget·budget, and the reported terms
    do not depend on the term weights."""
    cfg, T, wc, scores, targets, mask = case
    w = mc.LensLossWeights(**dict(zip(TERMS, ws, strict=True)))
    out = mc.lens_loss(scores, targets, mask, wc, cfg, w)
    ref = mc.lens_loss(scores, targets, mask, wc, cfg)
    expected = sum(wt * getattr(out, t).item() for wt, t in zip(ws, TERMS, strict=True))
    msg = f"{out}\nweights={ws}\n" + describe_loss(cfg, T, wc, scores, targets, mask)
    assert math.isclose(out.total.item(), expected, rel_tol=1e-5, abs_tol=1e-6), msg
    for t in TERMS:
        assert math.isclose(getattr(out, t).item(), getattr(ref, t).item(), rel_tol=1e-6,
                            abs_tol=1e-7), msg


@given(S.loss_cases(), st.sampled_from([0.0, 0.5, 3.0]))
def test_collapse_weight_scales_the_terms_on_negative_targets(case, cw):
    """With collapse_weight c, the reg and pref gradients on negative-target entries are c
    times those at c = 1, and unchanged on the others."""
    cfg, T, wc, scores, targets, mask = case
    neg = mask & (torch.where(mask, targets, 0.0) < 0)
    for term in ("reg", "pref"):
        _, g1 = loss_and_grad(scores, targets, mask, wc, cfg, only(term), term)
        _, gc = loss_and_grad(scores, targets, mask, wc, cfg, only(term, collapse_weight=cw),
                              term)
        msg = f"{term}: c={cw} g1={g1.tolist()} gc={gc.tolist()}\n" + describe_loss(
            cfg, T, wc, scores, targets, mask)
        assert torch.allclose(gc[neg], cw * g1[neg], rtol=1e-5, atol=1e-9), msg
        assert torch.allclose(gc[~neg], g1[~neg], rtol=1e-6, atol=0), msg


@given(st.one_of(S.loss_cases(), S.loss_cases(tied_targets=True)),
       st.randoms(use_true_random=False))
def test_loss_is_invariant_to_permuting_entries(case, rnd):
    """reg, pref and rank are invariant under any permutation of (scores, targets, mask); the
    total is invariant under permutations that keep each entry's slot cost (budget weighs by
    the entry's legal actions). Runs of tied targets included: the rank pairs must not depend
    on the input order."""
    cfg, T, wc, scores, targets, mask = case
    n = len(wc)
    perm = list(range(n))
    rnd.shuffle(perm)
    perm = torch.tensor(perm, dtype=torch.int64)
    a = mc.lens_loss(scores, targets, mask, wc, cfg)
    b = mc.lens_loss(scores[perm], targets[perm], mask[perm], wc, cfg)
    msg = f"perm={perm.tolist()}\n{a}\n{b}\n" + describe_loss(cfg, T, wc, scores, targets, mask)
    for t in ("reg", "pref", "rank"):
        assert math.isclose(getattr(a, t).item(), getattr(b, t).item(), rel_tol=1e-5,
                            abs_tol=1e-6), msg
    # Within each slot-cost class (expand legal?, in a group?) any shuffle keeps the total.
    expand_ok, group_id = mc.legal_actions(wc, T, cfg)
    cls = expand_ok.long() * 2 + (group_id >= 0).long()
    perm = torch.arange(n)
    for c in range(4):
        members = (cls == c).nonzero().flatten().tolist()
        shuffled = members[:]
        rnd.shuffle(shuffled)
        perm[members] = torch.tensor(shuffled, dtype=torch.int64)
    c = mc.lens_loss(scores[perm], targets[perm], mask[perm], wc, cfg)
    assert math.isclose(a.total.item(), c.total.item(), rel_tol=1e-5, abs_tol=1e-6), (
        msg + f"\nclass perm={perm.tolist()}\n{c}")


def test_bf16_scores_match_fp32_and_get_bf16_gradients():
    """bf16 scores give the fp32 loss of the same (rounded) values; the gradient is bf16."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=6)
    wc = S.make_wc([(1, 0), (1, 4), (1, 8), (1, 12), (1, 16)] + [(0, t) for t in range(20, 37)])
    g = torch.Generator().manual_seed(0)
    n = len(wc)
    s16 = (torch.rand(n, generator=g) * 2 - 1).to(torch.bfloat16).requires_grad_(True)
    targets, mask = torch.randn(n, generator=g), torch.rand(n, generator=g) < 0.7
    a = mc.lens_loss(s16, targets, mask, wc, cfg)
    b = mc.lens_loss(s16.detach().float(), targets, mask, wc, cfg)
    assert math.isclose(a.total.item(), b.total.item(), rel_tol=1e-6), (a, b)
    a.total.backward()
    assert s16.grad.dtype == torch.bfloat16 and bool(torch.isfinite(s16.grad).all())


def test_lens_loss_rejects_bad_input():
    """NaN scores, masked NaN targets, wrong lengths, a non-bool mask, an invalid WC and
    impossible weights raise typed errors naming the argument or invariant (§4)."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=6)
    wc = S.make_wc([(1, 0), (1, 4), (1, 8), (1, 12), (1, 16)] + [(0, t) for t in range(20, 37)])
    n = len(wc)
    s, t, m = torch.zeros(n), torch.zeros(n), torch.ones(n, dtype=torch.bool)
    bad = s.clone()
    bad[2] = NAN
    with pytest.raises(ValueError, match=r"scores\[2\]"):
        mc.lens_loss(bad, t, m, wc, cfg)
    with pytest.raises(ValueError, match=r"targets\[2\]"):
        mc.lens_loss(s, bad, m, wc, cfg)
    with pytest.raises(ValueError, match="scores"):
        mc.lens_loss(s[:-1], t, m, wc, cfg)
    with pytest.raises(TypeError, match="mask"):
        mc.lens_loss(s, t, m.float(), wc, cfg)
    broken = S.make_wc([(0, 0), (0, 2)])  # a gap: the WC breaks contiguity
    with pytest.raises(mc.ContiguityError):
        mc.lens_loss(torch.zeros(2), torch.zeros(2), torch.ones(2, dtype=torch.bool), broken, cfg)
    for kw in ({"temperature": 0.0}, {"reg": -1.0}, {"margin": NAN}, {"target_scale": -2.0}):
        with pytest.raises(ValueError):
            mc.LensLossWeights(**kw)
