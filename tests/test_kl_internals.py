"""Internals of megacontext.supervision.kl that the spec does not pin: the exact p95 split, the
gradient of each aggregator, the scaled rmse at the float32 extremes, and error
messages' indices."""

import pytest
import torch

from megacontext.errors import InputError
from megacontext.supervision import kl as K


@pytest.mark.parametrize("n", list(range(1, 45)) + [97, 1000])
def test_p95_integer_split_equals_torch_quantile(n):
    x = torch.rand(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    got = K._aggregate(x.float(), "p95").double()
    want = torch.quantile(x.float().double(), 0.95)
    assert abs(got.item() - want.item()) <= 1e-6 * max(1.0, abs(want.item())), (n, got, want)


def test_p95_gradient_lands_on_the_two_order_statistics():
    n = 5  # h = 0.95 * 4 = 3.8: 0.2 to the 4th smallest, 0.8 to the largest
    x = torch.tensor([0.5, 3.0, 0.1, 2.0, 1.0], requires_grad=True)
    (g,) = torch.autograd.grad(K._aggregate(x, "p95"), x)
    torch.testing.assert_close(g, torch.tensor([0.0, 0.8, 0.0, 0.2, 0.0]))
    assert n == x.numel()


def test_rmse_gradient_is_the_analytic_one():
    x = torch.tensor([0.5, 3.0, 0.1, 2.0], dtype=torch.float32, requires_grad=True)
    r = K._aggregate(x, "rmse")
    (g,) = torch.autograd.grad(r, x)
    torch.testing.assert_close(g, x.detach() / (x.numel() * r.detach()))


@pytest.mark.parametrize("value", [1e-30, 1e-20, 1.0, 1e20, 3e37])
def test_rmse_neither_underflows_nor_overflows(value):
    x = torch.full((8,), value).index_fill(0, torch.tensor([3]), value / 2)
    want = ((x.double() ** 2).mean().sqrt()).item()
    got = K._aggregate(x, "rmse").item()
    assert abs(got - want) <= 1e-6 * want, (value, got, want)


def test_zero_probability_branches_have_finite_gradients():
    lp = torch.tensor([[0.0, float("-inf"), -1.0], [float("-inf"), 0.0, -3.0]], requires_grad=True)
    lq = torch.tensor([[-1.0, float("-inf"), 0.0], [-2.0, -0.1, float("-inf")]], requires_grad=True)
    kl = K._kl_rows(lp, lq)
    # row 1: q gives probability 0 to a token p gives probability > 0 -> +inf, not NaN
    assert torch.isfinite(kl[0]) and kl[1] == float("inf"), kl
    g_p, g_q = torch.autograd.grad(kl[0], (lp, lq))
    assert torch.isfinite(g_p).all() and torch.isfinite(g_q).all(), (g_p, g_q)


def test_float64_input_gives_float32_result():
    kl = torch.rand(3, 4, dtype=torch.float64)
    for how in K.AGGREGATORS:
        assert K.aggregate_kl(kl, how).dtype == torch.float32


def test_row_mask_broadcasts_over_the_batch():
    kl = torch.tensor([[1.0, 2.0, 30.0], [3.0, 4.0, 50.0]])
    got = K.aggregate_kl(kl, "max", torch.tensor([True, True, False]))
    assert got.item() == 4.0


def test_errors_report_indices_in_the_callers_coordinates():
    kl = torch.tensor([[1.0, float("nan"), 0.0], [0.0, 0.0, float("nan")]])
    mask = torch.tensor([[True, False, True], [True, True, True]])
    with pytest.raises(InputError, match=r"kl\[1, 2\]"):
        K.aggregate_kl(kl, "mean", mask)
    lp = torch.zeros(2, 3, 4).log_softmax(-1)
    bad = lp.clone()
    bad[1, 2, 3] = float("inf")
    with pytest.raises(InputError, match=r"logp_ref\[1, 2, 3\] = inf"):
        K.kl_barrier(lp, bad, None, "fwd", "mean", 0.0)
    # the same value at a masked-out position is never read
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[1, 2] = False
    assert K.kl_barrier(lp, bad, mask, "fwd", "mean", 0.0).item() == 0.0


def test_validation_does_not_build_a_graph_through_checks():
    lp = torch.randn(4, 6).log_softmax(-1).requires_grad_()
    out = K.kl_barrier(lp, torch.randn(4, 6).log_softmax(-1), None, "rev", "rmse", 0.0)
    out.backward()
    assert lp.grad is not None and torch.isfinite(lp.grad).all()
