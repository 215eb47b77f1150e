"""KL substitutability and barrier (contract §7): per-position KL summed over the vocabulary,
aggregated over positions with mean | rmse | p95 | max in float32 whatever the input dtype,
exact zeros with NaN-free gradients at zero KL and on empty masks, and a hinge barrier
weight·relu(agg − tau) with fwd = KL(ref‖student), rev = KL(student‖ref).

Decisions pinned here (contract §7 states them): aggregation flattens leading dimensions (one
statistic over all selected positions of a batch); p95 is linear interpolation between order
statistics (numpy/torch default); masked-out positions are never read (they may hold NaN);
log-probabilities are renormalized, so -inf marks a zero-probability token.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spec import strategies as S
from spec.implementation import mc

HOWS = ("mean", "rmse", "p95", "max")
DTYPES = S.KL_DTYPES
DTYPE_IDS = ["fp32", "bf16", "fp16"]


# --- float64 references, written from the definitions ----------------------------------------


def kl64(logp_p: torch.Tensor, logp_q: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) per position in float64, from (renormalized) log-probabilities [..., V]."""
    lp = logp_p.detach().double().log_softmax(-1)
    lq = logp_q.detach().double().log_softmax(-1)
    p = lp.exp()
    return torch.where(p > 0, p * (lp - lq), 0.0).sum(-1)


def agg64(values, how: str) -> float:
    """The aggregate of a 1-D float64 array (0 when empty); p95 = numpy's linear quantile."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return 0.0
    return {
        "mean": lambda: v.mean(),
        "rmse": lambda: math.sqrt((v**2).mean()),
        "p95": lambda: np.quantile(v, 0.95),
        "max": lambda: v.max(),
    }[how]()


def close(got: float, want: float, rtol: float = 2e-5, atol: float = 2e-6) -> bool:
    return abs(got - want) <= atol + rtol * abs(want)


def grads_of(out: torch.Tensor, *inputs: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(out, inputs, allow_unused=False))


def all_finite(*ts: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in ts)


def random_logp(shape, seed: int, scale: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g)).log_softmax(-1).to(dtype)


# --- per-position KL -------------------------------------------------------------------------


@given(S.log_prob_pairs())
def test_kl_per_position_matches_float64_definition(pair):
    """kl_per_position(p, q) = Σ_vocab p·(log p − log q) per position, float32 for every input
    dtype, within float32 rounding of a float64 computation, and never below −1e-6 (§7)."""
    student, ref, _, seed = pair
    got = mc.kl_per_position(student, ref)
    want = kl64(student, ref)
    where = f"dtype={student.dtype} shape={tuple(student.shape)} seed={seed}"
    assert got.dtype == torch.float32, f"result dtype {got.dtype}, want float32; {where}"
    assert got.shape == student.shape[:-1], f"shape {tuple(got.shape)}; {where}"
    torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=2e-6,
                               msg=lambda m: f"{m}; {where}")
    assert bool((got >= -1e-6).all()), f"negative KL {got.min().item()}; {where}"


def test_zero_probability_tokens_contribute_nothing():
    """A token that both distributions give probability 0 (log-prob -inf) adds 0 to the KL: the
    same value as with that token removed from the vocabulary, with a finite gradient (§7)."""
    student = random_logp((3, 5), seed=1).requires_grad_()
    ref = random_logp((3, 5), seed=2)
    pad = torch.full((3, 1), float("-inf"))
    with_zero = mc.kl_per_position(torch.cat([student, pad], -1), torch.cat([ref, pad], -1))
    without = mc.kl_per_position(student, ref)
    torch.testing.assert_close(with_zero, without, msg=lambda m: f"-inf token changed KL: {m}")
    (g,) = grads_of(with_zero.sum(), student)
    assert all_finite(g), f"gradient {g}"


def test_support_mismatch_is_infinite_and_the_barrier_refuses_it():
    """KL(p‖q) is +inf where q gives probability 0 to a token p does not; the barrier raises an
    InputError naming the position rather than returning inf/NaN into training (§4, §7)."""
    p = torch.tensor([[0.0, -1.0], [-0.5, -0.9]]).log_softmax(-1)
    q = torch.tensor([[0.0, float("-inf")], [-0.2, -2.0]]).log_softmax(-1)
    kl = mc.kl_per_position(p, q)
    assert math.isinf(kl[0].item()) and math.isfinite(kl[1].item()), f"kl={kl.tolist()}"
    with pytest.raises(ValueError, match=r"infinite.*\[0\]"):
        mc.kl_barrier(p, q, None, "rev", "mean", 0.0)
    # the other direction is finite: ref's zero-probability token is not in the student's support
    assert math.isfinite(mc.kl_barrier(q, p, None, "rev", "mean", 0.0).item())


# --- aggregation -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("how", HOWS)
def test_zero_kl_gives_zero_with_finite_gradient(how, dtype):
    """At identical distributions every aggregator returns exactly 0 (float32) and its backward
    is finite, for fp32, bf16 and fp16 inputs: no rmse epsilon, no sqrt'(0) NaN (§7, seed 003)."""
    kl = torch.zeros(2, 7, dtype=dtype, requires_grad=True)
    out = mc.aggregate_kl(kl, how)
    (g,) = grads_of(out, kl)
    assert out.dtype == torch.float32 and out.item() == 0.0, f"{how} {dtype}: {out!r}"
    assert all_finite(g), f"{how} {dtype}: d/dkl = {g}"

    student = random_logp((2, 7, 11), seed=3, dtype=dtype).requires_grad_()
    for direction in ("fwd", "rev"):
        out = mc.kl_barrier(student, student.detach().clone(), None, direction, how, 0.0)
        (g,) = grads_of(out, student)
        assert out.dtype == torch.float32 and out.item() == 0.0, f"{how} {direction} {dtype}: {out}"
        assert all_finite(g), f"{how} {direction} {dtype}: gradient {g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("how", HOWS)
def test_empty_selection_gives_exact_zero_and_zero_gradient(how, dtype):
    """An all-false mask, or no positions at all, aggregates to exactly 0 (float32) with an
    all-zero, NaN-free gradient, for every aggregator and dtype — never NaN or an error (§7)."""
    where = f"how={how} dtype={dtype}"
    kl = torch.rand(3, 4).to(dtype).requires_grad_()
    cases = {
        "all-false mask": lambda: mc.aggregate_kl(kl, how, torch.zeros(3, 4, dtype=torch.bool)),
        "broadcast all-false mask": lambda: mc.aggregate_kl(kl, how, torch.tensor(False)),
        "no positions": lambda: mc.aggregate_kl(kl[:, :0], how),
    }
    for name, run in cases.items():
        out = run()
        (g,) = grads_of(out, kl)
        assert out.dtype == torch.float32 and out.item() == 0.0, f"{name}, {where}: {out!r}"
        assert bool((g == 0).all()), f"{name}, {where}: gradient {g}"

    student = random_logp((2, 3, 5), seed=4, dtype=dtype).requires_grad_()
    ref = random_logp((2, 3, 5), seed=5, dtype=dtype)
    for direction in ("fwd", "rev"):
        for name, args in {
            "all-false mask": (student, ref, torch.zeros(2, 3, dtype=torch.bool)),
            "no positions": (student[:, :0], ref[:, :0], None),
        }.items():
            out = mc.kl_barrier(*args, direction, how, 0.0, 2.0)
            (g,) = grads_of(out, student)
            assert out.dtype == torch.float32 and out.item() == 0.0, f"{name} {direction} {where}"
            assert bool((g == 0).all()), f"{name} {direction} {where}: gradient {g}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@given(values=S.kl_values(min_size=1))
def test_p95_works_in_low_precision(dtype, values):
    """p95 accepts fp16 and bf16 input (torch.quantile rejects both) and equals the float64
    linear-interpolation quantile of the same (rounded) values, as a float32 (§7, seed 003)."""
    x = values.to(dtype)
    got = mc.aggregate_kl(x, "p95")
    want = agg64(x.double().numpy(), "p95")
    assert got.dtype == torch.float32, f"dtype {got.dtype}"
    assert close(got.item(), want), f"p95={got.item()} want {want}; values={x.tolist()}"


@given(values=S.kl_values(min_size=1), how=st.sampled_from(HOWS))
def test_aggregators_match_their_definitions(values, how):
    """mean, rmse = sqrt(mean(kl²)), p95 = linear-interpolation 0.95 quantile (h = 0.95·(n−1)
    between order statistics) and max match float64 computations of the definitions (§7)."""
    got = mc.aggregate_kl(values, how).item()
    want = agg64(values.double().numpy(), how)
    assert close(got, want), f"{how}={got} want {want}; values={values.tolist()}"


@given(values=S.kl_values(min_size=1))
def test_aggregator_ordering(values):
    """For non-negative input: mean ≤ rmse ≤ max and min ≤ p95 ≤ max (up to float32 rounding)
    (§7)."""
    a = {how: mc.aggregate_kl(values, how).item() for how in HOWS}
    lo, hi = values.min().item(), values.max().item()
    slack = lambda x: 1e-6 * abs(x) + 1e-30
    assert a["mean"] <= a["rmse"] + slack(a["rmse"]), f"{a}; values={values.tolist()}"
    assert a["rmse"] <= a["max"] + slack(a["max"]), f"{a}; values={values.tolist()}"
    assert lo <= a["p95"] <= hi, f"{a} min={lo}; values={values.tolist()}"
    assert a["max"] == hi, f"max={a['max']} but the largest value is {hi}"


@given(st.floats(0, 100, width=32), st.integers(1, 50), st.sampled_from(DTYPES))
def test_aggregators_agree_on_constant_input(c, n, dtype):
    """On a constant input every aggregator returns that constant (§7)."""
    x = torch.full((n,), c, dtype=dtype)
    want = x[0].double().item()
    got = {how: mc.aggregate_kl(x, how).item() for how in HOWS}
    assert all(close(v, want, rtol=1e-6, atol=0) for v in got.values()), f"{got} want {want}"


def test_rmse_catches_a_short_incoherent_loop():
    """rmse, p95 and max fire on a few looping positions that the mean dilutes under the tau gate
    (seed 003: coherent rmse ≈ 0.03, loop ≈ 1.5, tau ≈ 1): on 60 positions, a coherent student
    stays under tau for every aggregator, and a 4-position loop trips rmse but not mean."""
    V, T = 16, 60
    ref = random_logp((T, V), seed=6, scale=1.0)
    coherent = (ref.exp() + 0.02 * torch.rand(T, V, generator=torch.Generator().manual_seed(7)))
    coherent = coherent.log().log_softmax(-1)
    looping = coherent.clone()
    unlikely = ref.argmin(-1)  # the student loops on a token the reference finds improbable
    for t in (30, 31, 32, 33):
        looping[t] = torch.full((V,), -12.0).index_fill(0, unlikely[t], 0.0).log_softmax(-1)
    tau = 1.0
    agg = {
        name: {how: mc.aggregate_kl(mc.kl_per_position(s, ref), how).item() for how in HOWS}
        for name, s in (("coherent", coherent), ("looping", looping))
    }
    barrier = {
        name: {how: mc.kl_barrier(s, ref, None, "rev", how, tau).item() for how in HOWS}
        for name, s in (("coherent", coherent), ("looping", looping))
    }
    info = f"aggregates={agg} barrier(tau={tau})={barrier}"
    assert all(v == 0 for v in barrier["coherent"].values()), info
    assert barrier["looping"]["mean"] == 0, f"mean should dilute the loop under tau; {info}"
    for how in ("rmse", "p95", "max"):
        assert barrier["looping"][how] > 0, f"{how} should fire on the loop; {info}"
    ratio = lambda name: agg[name]["rmse"] / agg[name]["mean"]
    assert ratio("looping") > 3 * ratio("coherent"), f"rmse/mean should jump on the loop; {info}"


def test_aggregation_flattens_leading_dimensions():
    """aggregate_kl over [B, T] is one statistic over all selected positions of all sequences
    (as one long sequence), not a mean of per-sequence statistics (decision; §7 is silent)."""
    kl = torch.tensor([[0.0, 0.0, 0.0, 9.0], [1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    flat = kl[mask]
    for how in HOWS:
        got = mc.aggregate_kl(kl, how, mask).item()
        want = agg64(flat.numpy(), how)
        per_row = np.mean([agg64(kl[b][mask[b]].numpy(), how) for b in range(2)])
        assert close(got, want), f"{how}: got {got}, flattened {want}, per-row mean {per_row}"


# --- directions, masks, barrier --------------------------------------------------------------


def test_fwd_and_rev_are_the_two_kls():
    """direction='fwd' is KL(ref‖student) and 'rev' is KL(student‖ref): on an asymmetric pair
    they differ, and each matches a direct float64 computation (§7; the seed's convention)."""
    student = torch.tensor([[0.90, 0.05, 0.05], [0.50, 0.49, 0.01]]).log()
    ref = torch.tensor([[0.34, 0.33, 0.33], [0.10, 0.10, 0.80]]).log()
    for how in HOWS:
        fwd = mc.kl_barrier(student, ref, None, "fwd", how, 0.0).item()
        rev = mc.kl_barrier(student, ref, None, "rev", how, 0.0).item()
        want_fwd = agg64(kl64(ref, student).numpy(), how)
        want_rev = agg64(kl64(student, ref).numpy(), how)
        info = f"{how}: fwd={fwd} (want {want_fwd}) rev={rev} (want {want_rev})"
        assert close(fwd, want_fwd) and close(rev, want_rev), info
        assert abs(fwd - rev) > 0.05, f"directions should differ on this pair; {info}"
    torch.testing.assert_close(mc.kl_per_position(ref, student).double(), kl64(ref, student))


@given(S.log_prob_pairs(), st.sampled_from(HOWS), st.sampled_from(["fwd", "rev"]))
def test_barrier_matches_float64_with_finite_gradient(pair, how, direction):
    """For random log-probs, masks (all-false included) and dtypes, the barrier at tau=0 is the
    float64 aggregate of the selected per-position KLs, is float32, and has a finite gradient
    (§7)."""
    student, ref, mask, seed = pair
    student = student.requires_grad_()
    out = mc.kl_barrier(student, ref, mask, direction, how, 0.0)
    kl = kl64(ref, student) if direction == "fwd" else kl64(student, ref)
    want = agg64(kl[mask].numpy(), how)
    where = f"{how} {direction} dtype={student.dtype} shape={tuple(student.shape)} seed={seed} " \
            f"mask={mask.tolist()}"
    assert out.dtype == torch.float32, f"dtype {out.dtype}; {where}"
    assert close(out.item(), want, rtol=5e-5, atol=5e-6), f"{out.item()} want {want}; {where}"
    (g,) = grads_of(out, student)
    assert all_finite(g), f"gradient {g}; {where}"


def barrier64(student, ref, mask, direction, how, weight):
    """weight·aggregate in float64 with autograd, from the definitions (tau = 0): the gradient
    reference. rmse is the 2-norm over sqrt(n) (torch's norm backward is 0 at 0)."""
    s, r = student.double().log_softmax(-1), ref.double().log_softmax(-1)
    p, q = (r, s) if direction == "fwd" else (s, r)
    kl = (p.exp() * (p - q)).sum(-1)[mask]  # finite logits: no zero probabilities
    agg = {"mean": lambda: kl.mean(),
           "rmse": lambda: torch.linalg.vector_norm(kl) / math.sqrt(kl.numel()),
           "p95": lambda: torch.quantile(kl, 0.95),
           "max": lambda: kl.amax()}[how]()
    return weight * agg, kl


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("direction", ["fwd", "rev"])
def test_barrier_gradient_matches_float64_autograd(direction, how, dtype):
    """The barrier's gradient with respect to both log-prob inputs equals float64 autograd
    through the definitions (the KL, each aggregator, the weight) on the same rounded inputs,
    to the precision of the gradient's dtype (the input's): a training loss is only as good
    as its gradient, and "finite" alone passes a halved or half-detached one (§7)."""
    g = torch.Generator().manual_seed(12)
    student = (2.0 * torch.randn(3, 9, 7, generator=g)).log_softmax(-1).to(dtype)
    ref = (2.0 * torch.randn(3, 9, 7, generator=g)).log_softmax(-1).to(dtype)
    mask = torch.rand(3, 9, generator=g) < 0.7
    s64, r64 = (t.detach().double().requires_grad_() for t in (student, ref))
    want, kl = barrier64(s64, r64, mask, direction, how, 2.0)
    gaps = kl.detach().sort().values.diff()
    assert bool((gaps > 1e-4).all()), f"near-tied KLs make p95/max ill-posed: {kl.tolist()}"
    want_s, want_r = torch.autograd.grad(want, (s64, r64))
    student, ref = student.requires_grad_(), ref.requires_grad_()
    out = mc.kl_barrier(student, ref, mask, direction, how, 0.0, 2.0)
    got_s, got_r = grads_of(out, student, ref)
    where = f"{direction} {how} {dtype}: barrier {out.item()} want {want.item()}"
    rtol = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]  # grad dtype
    for name, got, ref_grad in (("student", got_s, want_s), ("ref", got_r, want_r)):
        torch.testing.assert_close(got.double(), ref_grad, rtol=rtol, atol=1e-5,
                                   msg=lambda m, name=name: f"d/d{name}: {m}; {where}")


@given(S.log_prob_pairs(dtypes=(torch.float32, torch.bfloat16)), st.sampled_from(HOWS),
       st.sampled_from(["fwd", "rev"]))
def test_masked_positions_never_affect_value_or_gradient(pair, how, direction):
    """Masked-out positions are never read: filling them with garbage (NaN, ±inf, huge) leaves
    the barrier bit-identical, and their gradient is exactly 0 (§7)."""
    student, ref, mask, seed = pair
    garbage = torch.tensor([float("nan"), float("inf"), float("-inf"), 3e4, -3e4])
    fill = garbage[torch.arange(student.numel()) % 5].reshape(student.shape).to(student.dtype)
    dirty_s = torch.where(mask[..., None], student, fill).requires_grad_()
    dirty_r = torch.where(mask[..., None], ref, fill.flip(-1)).requires_grad_()
    clean = mc.kl_barrier(student, ref, mask, direction, how, 0.0)
    dirty = mc.kl_barrier(dirty_s, dirty_r, mask, direction, how, 0.0)
    where = f"{how} {direction} dtype={student.dtype} seed={seed} mask={mask.tolist()}"
    assert torch.equal(clean, dirty), f"clean={clean} dirty={dirty}; {where}"
    gs, gr = grads_of(dirty, dirty_s, dirty_r)
    for name, g in (("student", gs), ("ref", gr)):
        assert bool((g[~mask] == 0).all()), f"{name} gradient where masked {g[~mask]}; {where}"
        assert all_finite(g), f"{name} gradient {g}; {where}"


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("garbage", [float("nan"), float("inf"), -float("inf"), 1e30])
def test_aggregate_never_reads_masked_values(how, garbage):
    """aggregate_kl over a mask: garbage (NaN, ±inf, 1e30) at masked-out positions leaves the
    aggregate bitwise unchanged, and their gradient is exactly 0 with every gradient finite
    (§7; a masked mean written as sum(kl·mask)/sum(mask) turns 0·NaN into NaN)."""
    g = torch.Generator().manual_seed(5)
    kl = torch.rand(3, 7, generator=g)
    mask = torch.rand(3, 7, generator=g) < 0.6
    mask[0, 0] = mask[1, 3] = False
    dirty = torch.where(mask, kl, torch.full_like(kl, garbage)).requires_grad_()
    clean = kl.clone().requires_grad_()
    a_clean, a_dirty = mc.aggregate_kl(clean, how, mask), mc.aggregate_kl(dirty, how, mask)
    assert torch.equal(a_dirty, a_clean), f"{how}: {a_dirty} != {a_clean} with {garbage}"
    (g_dirty,), (g_clean,) = grads_of(a_dirty, dirty), grads_of(a_clean, clean)
    assert all_finite(g_dirty) and bool((g_dirty[~mask] == 0).all()), (
        f"{how}: gradient {g_dirty} with {garbage} where masked")
    assert torch.equal(g_dirty, g_clean), f"{how}: gradient moved with {garbage}"


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("direction", ["fwd", "rev"])
def test_barrier_is_a_hinge_at_tau(how, direction):
    """kl_barrier = weight·relu(agg − tau): exactly 0 with zero gradient when agg < tau, and
    above tau equal to weight·(agg − tau) with gradient weight·∇agg (§7)."""
    student = random_logp((2, 6, 9), seed=8).requires_grad_()
    ref = random_logp((2, 6, 9), seed=9)
    mask = torch.tensor([[True] * 6, [True, False] * 3])
    p, q = (ref, student) if direction == "fwd" else (student, ref)
    kl = mc.kl_per_position(p, q)
    agg = mc.aggregate_kl(kl, how, mask)
    (g_agg,) = grads_of(agg, student)
    a = agg.item()
    where = f"{how} {direction} agg={a}"
    assert a > 0.05, where

    below = mc.kl_barrier(student, ref, mask, direction, how, tau=1.5 * a, weight=3.0)
    (g_below,) = grads_of(below, student)
    assert below.item() == 0.0 and bool((g_below == 0).all()), f"below tau: {below}; {where}"

    for tau, weight in ((0.0, 1.0), (0.5 * a, 3.0), (0.9 * a, 0.25)):
        out = mc.kl_barrier(student, ref, mask, direction, how, tau, weight)
        (g,) = grads_of(out, student)
        want = weight * (a - tau)
        case = f"tau={tau} weight={weight} {where}"
        assert close(out.item(), want, rtol=1e-5, atol=1e-7), f"{out} want {want}; {case}"
        torch.testing.assert_close(g, weight * g_agg, msg=lambda m, case=case: f"{m}; {case}")


# --- bad input -------------------------------------------------------------------------------

_P = random_logp((2, 3, 4), seed=10)
_Q = random_logp((2, 3, 4), seed=11)
_M = torch.ones(2, 3, dtype=torch.bool)
_NAN = _P.clone().index_put_((torch.tensor(1), torch.tensor(2), torch.tensor(0)),
                             torch.tensor(float("nan")))


@pytest.mark.parametrize(
    "call,error,needle",
    [
        (lambda: mc.kl_per_position(_P, _Q[:, :2]), ValueError, r"shape"),
        (lambda: mc.kl_per_position(_P.long(), _Q), TypeError, r"logp_p.*dtype|logp_p.*float"),
        (lambda: mc.kl_per_position(_P, _NAN), ValueError, r"logp_q.*\[1, 2, 0\]"),
        (lambda: mc.kl_per_position(_P, _Q.clone().fill_(float("-inf"))), ValueError, r"logp_q"),
        (lambda: mc.kl_per_position(_P.tolist(), _Q), TypeError, r"logp_p"),
        (lambda: mc.kl_per_position(_P[..., :0], _Q[..., :0]), ValueError, r"vocab"),
        (lambda: mc.aggregate_kl(torch.ones(3), "median"), ValueError, r"how.*median"),
        (lambda: mc.aggregate_kl(torch.ones(3, dtype=torch.int64), "mean"), TypeError, r"kl"),
        (lambda: mc.aggregate_kl(torch.tensor([0.0, float("nan")]), "max"), ValueError,
         r"kl\[1\]"),
        (lambda: mc.aggregate_kl(torch.ones(3), "mean", torch.ones(4, dtype=torch.bool)),
         ValueError, r"mask"),
        (lambda: mc.aggregate_kl(torch.ones(3), "mean", torch.ones(3)), TypeError, r"mask.*bool"),
        (lambda: mc.kl_barrier(_P, _Q, _M, "forward", "mean", 0.0), ValueError,
         r"direction.*forward"),
        (lambda: mc.kl_barrier(_P, _Q, _M, "fwd", "avg", 0.0), ValueError, r"how.*avg"),
        (lambda: mc.kl_barrier(_P, _Q[:, :, :3], _M, "fwd", "mean", 0.0), ValueError,
         r"logp_student.*logp_ref|shape"),
        (lambda: mc.kl_barrier(_P.int(), _Q, _M, "fwd", "mean", 0.0), TypeError, r"logp_student"),
        (lambda: mc.kl_barrier(_P, _NAN, _M, "rev", "mean", 0.0), ValueError, r"logp_ref"),
        (lambda: mc.kl_barrier(_P, _Q, _M[:, :2], "fwd", "mean", 0.0), ValueError, r"mask"),
        (lambda: mc.kl_barrier(_P, _Q, _M, "fwd", "mean", float("nan")), ValueError, r"tau"),
        (lambda: mc.kl_barrier(_P, _Q, _M, "fwd", "mean", -0.5), ValueError, r"tau"),
        (lambda: mc.kl_barrier(_P, _Q, _M, "fwd", "mean", 0.0, -1.0), ValueError, r"weight"),
        (lambda: mc.kl_barrier(_P, _Q, _M, "fwd", "mean", "0.1"), TypeError, r"tau"),
    ],
)
def test_bad_input_raises_typed_errors(call, error, needle):
    """Mismatched shapes, unknown how/direction, non-float log-probs, NaN, a mask that does not
    fit, and a bad tau/weight raise ValueError/TypeError naming the argument and value (§4)."""
    with pytest.raises(error, match=needle):
        call()
