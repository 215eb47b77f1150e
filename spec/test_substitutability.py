"""GistNet's substitutability loss (contract §7, seed 001): the aggregated KL(raw ‖ gist) between
the base model's next-token distributions with a span's raw tokens and with its gist in their
place, over the first H positions after the span. Model-agnostic: it takes log-probabilities
[..., P, V], so any model (and the training loop) can use it directly."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spec import strategies as S
from spec.implementation import mc

HOWS = ("mean", "rmse", "p95", "max")


def kl64(logp_p, logp_q):
    lp, lq = logp_p.detach().double().log_softmax(-1), logp_q.detach().double().log_softmax(-1)
    p = lp.exp()
    return torch.where(p > 0, p * (lp - lq), 0.0).sum(-1)


def agg64(v, how):
    v = np.asarray(v, dtype=np.float64)
    if v.size == 0:
        return 0.0
    return {"mean": v.mean, "max": v.max, "rmse": lambda: np.sqrt((v**2).mean()),
            "p95": lambda: np.quantile(v, 0.95)}[how]()


@given(S.log_prob_pairs(), st.sampled_from(HOWS), st.integers(1, 6))
def test_loss_is_aggregated_kl_raw_to_gist_over_the_horizon(pair, how, horizon):
    """substitutability_loss(raw, gist, mask, how, horizon) = aggregate over the selected
    positions among the first `horizon` of KL(raw ‖ gist) per position, float32, with a finite
    gradient into the gist's log-probs (§7)."""
    raw, gist, mask, seed = pair
    P = raw.shape[-2]
    horizon = min(horizon, P) if P else None
    gist = gist.requires_grad_()
    out = mc.substitutability_loss(raw, gist, mask, how, horizon)
    H = P if horizon is None else horizon
    want = agg64(kl64(raw, gist)[:, :H][mask[:, :H]].numpy(), how)
    where = f"{how} H={horizon} dtype={raw.dtype} shape={tuple(raw.shape)} seed={seed} " \
            f"mask={mask.tolist()}"
    assert out.dtype == torch.float32, f"dtype {out.dtype}; {where}"
    assert abs(out.item() - want) <= 5e-6 + 5e-5 * abs(want), f"{out.item()} want {want}; {where}"
    (g,) = torch.autograd.grad(out, gist)
    assert bool(torch.isfinite(g).all()), f"gradient {g}; {where}"
    assert bool((g[:, H:] == 0).all()), f"positions past the horizon got gradient; {where}"


def test_direction_is_raw_to_gist():
    """The loss is KL(raw ‖ gist) (the field notes' KL(full ‖ replaced)), not KL(gist ‖ raw):
    on an asymmetric pair it matches the former and differs from the latter (§7, seed 001)."""
    raw = torch.tensor([[[0.90, 0.05, 0.05], [0.6, 0.3, 0.1]]]).log()
    gist = torch.tensor([[[0.34, 0.33, 0.33], [0.1, 0.1, 0.8]]]).log()
    got = mc.substitutability_loss(raw, gist).item()
    forward, backward = kl64(raw, gist).mean().item(), kl64(gist, raw).mean().item()
    assert abs(got - forward) < 1e-5 < abs(got - backward), \
        f"got {got}; KL(raw‖gist)={forward} KL(gist‖raw)={backward}"


@pytest.mark.parametrize("how", HOWS)
def test_perfect_stand_in_and_empty_selection_give_zero(how):
    """A gist whose predictions equal raw's over the horizon scores exactly 0 with a finite
    gradient, whatever happens after the horizon; an all-false mask gives exactly 0 (§7)."""
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(2, 8, 10, generator=g).log_softmax(-1).to(torch.bfloat16)
    gist = raw.clone()
    gist[:, 5:] = torch.randn(2, 3, 10, generator=g).log_softmax(-1).to(torch.bfloat16)
    gist.requires_grad_()
    out = mc.substitutability_loss(raw, gist, None, how, horizon=5)
    (grad,) = torch.autograd.grad(out, gist)
    assert out.item() == 0.0 and bool(torch.isfinite(grad).all()), f"{how}: {out} grad {grad}"
    assert mc.substitutability_loss(raw, gist, None, how, horizon=6).item() > 0, how
    empty = mc.substitutability_loss(raw, gist, torch.zeros(2, 8, dtype=torch.bool), how)
    assert empty.item() == 0.0, f"{how}: empty mask gave {empty}"


_R = torch.zeros(2, 4, 5).log_softmax(-1)


@pytest.mark.parametrize(
    "kwargs,error,needle",
    [
        (dict(horizon=5), ValueError, r"horizon.*5"),
        (dict(horizon=0), ValueError, r"horizon.*0"),
        (dict(horizon=2.0), TypeError, r"horizon"),
        (dict(how="median"), ValueError, r"how.*median"),
        (dict(mask=torch.ones(2, 5, dtype=torch.bool)), ValueError, r"mask"),
        (dict(logp_gist=_R[:, :3]), ValueError, r"logp_raw.*logp_gist|shape"),
        (dict(logp_gist=_R.long()), TypeError, r"logp_gist"),
        (dict(logp_raw=_R[0, 0], logp_gist=_R[0, 0]), ValueError, r"\[\.\.\., P, V\]"),
    ],
)
def test_bad_input_raises_typed_errors(kwargs, error, needle):
    """A horizon beyond the positions given (never silently trimmed), a bad `how`, a mask or
    tensors that do not fit raise ValueError/TypeError naming the argument (§4)."""
    args = dict(logp_raw=_R, logp_gist=_R.clone()) | kwargs
    with pytest.raises(error, match=needle):
        mc.substitutability_loss(**args)
