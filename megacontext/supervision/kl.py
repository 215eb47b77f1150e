"""KL substitutability and the KL barrier (contract §7).

Per-position KL is summed over the vocabulary; a scalar is then aggregated over positions with
`mean | rmse | p95 | max`. The same two functions serve as GistNet's substitutability loss
(KL(raw ‖ gist) over a horizon H) and as a keep-alive hinge barrier that holds a tuned model near
its reference.

Numerics (seed 003 records each trap):
- every reduction runs in float32 whatever the input dtype, and every result is float32:
  fp16 cannot hold an rmse epsilon of 1e-8 (it rounds to 0) and torch.quantile rejects bf16/fp16;
- rmse has no epsilon at all: sqrt(mean(kl²)) is exactly 0 at zero KL, and its gradient there is
  defined as 0 (the subgradient of a norm at 0) instead of the 0/0 that autograd would produce;
  it is evaluated as m·sqrt(mean((kl/m)²)) with m = max|kl|, so the squares of tiny or huge
  KLs neither underflow nor overflow in float32 and mean <= rmse <= max holds as computed;
- an empty selection (all-false mask, zero positions) aggregates to exactly 0 with a zero,
  NaN-free gradient for every aggregator;
- p95 is linear interpolation between order statistics (torch.quantile's default): with the n
  selected values sorted ascending v[0] <= ... <= v[n-1], h = 0.95·(n-1) is split exactly in
  integers as lo = (19·(n-1)) // 20 and f = ((19·(n-1)) % 20) / 20, and
  p95 = v[lo] + f·(v[lo+1] - v[lo]) (just v[lo] when f == 0).

Log-probabilities are renormalized in float32 (`log_softmax` over the vocabulary) before use, so
low-precision inputs whose rounded probabilities do not sum to 1 still give KL >= 0 (up to
float32 rounding, which is passed through, never clamped); unnormalized logits give the KL of the
distributions they define. `-inf` marks a zero-probability token and contributes exactly 0 to
the sum; NaN and `+inf` are errors.

Aggregation flattens every leading dimension: `aggregate_kl` over a [B, T] tensor (batch ×
positions) is one statistic over all selected positions of all sequences, as if they were one
long sequence — not a mean of per-sequence statistics. For per-sequence values, call it per row.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from ..errors import InputError, InputTypeError

AGGREGATORS = ("mean", "rmse", "p95", "max")
DIRECTIONS = ("fwd", "rev")  # fwd = KL(ref ‖ student), rev = KL(student ‖ ref)


# --- argument checks ---------------------------------------------------------------------------


def _check_float_tensor(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputTypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def _check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_real(name: str, value, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise InputError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}")
    return value


def _position_mask(mask, positions: torch.Size, device: torch.device, of: str) -> torch.Tensor:
    """The bool mask broadcast to the positions shape (all true when mask is None)."""
    if mask is None:
        return torch.ones(positions, dtype=torch.bool, device=device)
    if not isinstance(mask, torch.Tensor):
        raise InputTypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise InputTypeError(f"mask must have dtype torch.bool, got {mask.dtype}")
    if mask.device != device:
        raise InputError(f"mask is on {mask.device}, {of} on {device}")
    try:
        ok = torch.broadcast_shapes(mask.shape, positions) == positions
    except RuntimeError:
        ok = False
    if not ok:
        raise InputError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the positions shape "
            f"{tuple(positions)} of {of}"
        )
    return mask.expand(positions)


def _first_index(bad: torch.Tensor) -> tuple[int, ...]:
    return tuple(bad.nonzero()[0].tolist())


def _check_log_probs(name: str, x: torch.Tensor, selected: torch.Tensor) -> None:
    """No NaN or +inf, and not every token -inf, at any selected position (x: [..., V])."""
    with torch.no_grad():
        bad = (torch.isnan(x) | (x == float("inf"))) & selected.unsqueeze(-1)
        if bool(bad.any()):
            idx = _first_index(bad)
            raise InputError(
                f"{name} must not hold NaN or +inf; {name}{list(idx)} = {x[idx].item()}"
            )
        empty = (x == float("-inf")).all(dim=-1) & selected
        if bool(empty.any()):
            idx = _first_index(empty)
            raise InputError(
                f"{name}{list(idx)} is -inf for every token: not a distribution over the vocabulary"
            )


def _check_pair(logp_p, logp_q, name_p: str, name_q: str) -> None:
    _check_float_tensor(name_p, logp_p)
    _check_float_tensor(name_q, logp_q)
    if logp_p.shape != logp_q.shape:
        raise InputError(
            f"{name_p} and {name_q} must have the same shape [..., V], got "
            f"{tuple(logp_p.shape)} and {tuple(logp_q.shape)}"
        )
    if logp_p.device != logp_q.device:
        raise InputError(f"{name_p} is on {logp_p.device}, {name_q} on {logp_q.device}")
    if logp_p.ndim == 0 or logp_p.shape[-1] == 0:
        raise InputError(
            f"{name_p} and {name_q} need a non-empty vocabulary dimension last ([..., V]), got "
            f"shape {tuple(logp_p.shape)}"
        )


# --- the arithmetic (unchecked, float32) -------------------------------------------------------


def _kl_rows(logp_p: torch.Tensor, logp_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per row in float32: [..., V] -> [...]."""
    lp = F.log_softmax(logp_p.float(), dim=-1)  # renormalize: rounding in low precision
    lq = F.log_softmax(logp_q.float(), dim=-1)
    p = lp.exp()
    support = p > 0
    # q = 0 where p > 0: the KL is +inf. Build that value outside the graph so the backward
    # of every other row (and of this one, masked out later) never meets 0·inf = NaN.
    infinite = (support & (lq == float("-inf"))).any(dim=-1)  # [...]
    finite_terms = support & (lq > float("-inf"))
    # 0·log 0 = 0; substitute zeros before the product so no 0·(-inf) reaches the backward.
    diff = torch.where(finite_terms, lp, 0.0) - torch.where(finite_terms, lq, 0.0)
    kl = (p * diff).sum(dim=-1)
    return torch.where(infinite, float("inf"), kl)


def _aggregate(kl: torch.Tensor, how: str) -> torch.Tensor:
    """One float32 statistic of the selected values kl [n] (any n, including 0)."""
    kl = kl.float()
    n = kl.numel()
    if n == 0:
        return kl.sum()  # exactly 0, still attached to the graph: its gradient is zero
    if how == "mean":
        return kl.mean()
    if how == "max":
        return kl.amax()  # ties share the gradient
    if how == "rmse":
        # m·sqrt(mean((kl/m)²)) with m = max|kl| (a constant: the expression is homogeneous,
        # so the gradient is exact) keeps the squares from underflowing (1e-30² is 0 in
        # float32) or overflowing, and keeps the sqrt argument >= 1/n, away from sqrt'(0).
        scale = kl.detach().abs().amax()
        nonzero = scale > 0
        scale = torch.where(nonzero, scale, 1.0)
        mean_sq = (kl / scale).square().mean()
        # All zeros: take the 0 branch; the sqrt branch sees 1, not 0, so its backward
        # is not the inf·0 = NaN that the naive sqrt(mean(kl²)) gives at zero KL.
        return torch.where(nonzero, scale * torch.where(nonzero, mean_sq, 1.0).sqrt(), 0.0)
    if how == "p95":
        v = kl.sort().values
        lo, rem = divmod(19 * (n - 1), 20)  # h = 0.95·(n-1) = lo + rem/20, exactly
        if rem == 0:
            return v[lo]
        return v[lo] + (rem / 20) * (v[lo + 1] - v[lo])
    raise AssertionError(how)  # unreachable: callers check `how`


# --- public API --------------------------------------------------------------------------------


def kl_per_position(logp_p: torch.Tensor, logp_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) = Σ_vocab p·(log p − log q) at every position, in float32.

    logp_p, logp_q: [..., V] log-probabilities (renormalized in float32; -inf = probability 0),
    any floating dtype, same shape. Returns float32 [...]. The value is +inf where q gives
    probability 0 to a token that p does not.
    """
    _check_pair(logp_p, logp_q, "logp_p", "logp_q")
    every = torch.ones(logp_p.shape[:-1], dtype=torch.bool, device=logp_p.device)
    _check_log_probs("logp_p", logp_p, every)
    _check_log_probs("logp_q", logp_q, every)
    return _kl_rows(logp_p, logp_q)  # [...]


def aggregate_kl(kl: torch.Tensor, how: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One float32 scalar from per-position values kl [...] over the positions where mask is true.

    how: "mean" | "rmse" (sqrt of the mean square, no epsilon) | "p95" (linear interpolation,
    see the module docstring) | "max". mask: bool, broadcastable to kl's shape; None = all.
    Leading dimensions are flattened (one statistic over all selected positions). Masked-out
    values are never read (they may hold anything, NaN included) and get zero gradient; an
    empty selection gives exactly 0 with a zero gradient. Selected values must be finite.
    """
    _check_float_tensor("kl", kl)
    _check_choice("how", how, AGGREGATORS)
    selected = _position_mask(mask, kl.shape, kl.device, "kl")
    values = kl[selected]  # [n]
    with torch.no_grad():
        bad = ~torch.isfinite(values)
        if bool(bad.any()):
            k = int(bad.nonzero()[0])
            idx = selected.nonzero()[k].tolist()
            raise InputError(
                f"kl must be finite at selected positions; kl{idx} = {values[k].item()}"
            )
    return _aggregate(values, how)


def kl_barrier(
    logp_student: torch.Tensor,
    logp_ref: torch.Tensor,
    mask: torch.Tensor | None,
    direction: str,
    how: str,
    tau: float,
    weight: float = 1.0,
) -> torch.Tensor:
    """weight · relu(aggregate_kl(KL per position, how, mask) − tau), a float32 scalar.

    direction: "fwd" = KL(ref ‖ student), "rev" = KL(student ‖ ref). logp_*: [..., V], same
    shape; mask: bool broadcastable to the positions shape [...], None = all positions. Only
    selected positions are read (padding may hold anything) and only they get gradient. tau
    (>= 0) is on the scale of the chosen aggregator: rmse, p95 and max run far above mean on
    the same KLs, so retune tau when changing `how` (seed 003). Below tau the barrier is 0
    with zero gradient; above it, it grows linearly with slope weight (>= 0). An infinite KL
    at a selected position (the divergence's q gives probability 0 where p does not) raises an
    InputError naming the position instead of feeding inf/NaN into training.
    """
    _check_pair(logp_student, logp_ref, "logp_student", "logp_ref")
    _check_choice("direction", direction, DIRECTIONS)
    _check_choice("how", how, AGGREGATORS)
    tau = _check_real("tau", tau, minimum=0.0)
    weight = _check_real("weight", weight, minimum=0.0)
    divergence = _masked_kl(logp_student, logp_ref, mask, direction, how)
    return weight * F.relu(divergence - tau)


def substitutability_loss(
    logp_raw: torch.Tensor,
    logp_gist: torch.Tensor,
    mask: torch.Tensor | None = None,
    how: str = "mean",
    horizon: int | None = None,
) -> torch.Tensor:
    """GistNet's substitutability loss: aggregated KL(raw ‖ gist) over the horizon, float32.

    logp_raw / logp_gist: [..., P, V] the base model's next-token log-probabilities at the P
    positions after a span, with the span's raw tokens in context and with its gist in their
    place. horizon: use the first H of the P positions (H <= P; None = all P; the field notes
    use H = 32–128). mask: bool broadcastable to [..., P] (e.g. padding). Model-agnostic: pass
    `logp_raw.detach()` when the raw pass is a fixed target. Zero when the gist is a perfect
    stand-in.
    """
    _check_pair(logp_raw, logp_gist, "logp_raw", "logp_gist")
    _check_choice("how", how, AGGREGATORS)
    if logp_raw.ndim < 2:
        raise InputError(
            f"logp_raw and logp_gist must be [..., P, V] (positions, vocabulary), got shape "
            f"{tuple(logp_raw.shape)}"
        )
    positions = logp_raw.shape[:-1]
    selected = _position_mask(mask, positions, logp_raw.device, "logp_raw")
    if horizon is not None:
        if isinstance(horizon, bool) or not isinstance(horizon, int):
            raise InputTypeError(f"horizon must be an int or None, got {horizon!r}")
        if not 1 <= horizon <= positions[-1]:
            raise InputError(
                f"horizon must be in [1, P={positions[-1]}] (positions given), got {horizon}"
            )
        in_horizon = torch.arange(positions[-1], device=logp_raw.device) < horizon  # [P]
        selected = selected & in_horizon
    # fwd with ref = raw: KL(raw ‖ gist), the divergence of the gist's predictions from raw's.
    return _masked_kl(logp_gist, logp_raw, selected, "fwd", how, names=("logp_gist", "logp_raw"))


def _masked_kl(logp_student, logp_ref, mask, direction, how, names=("logp_student", "logp_ref")):
    """Aggregated KL in `direction` over the selected positions (arguments already checked)."""
    name_s, name_r = names
    selected = _position_mask(mask, logp_student.shape[:-1], logp_student.device, name_s)
    _check_log_probs(name_s, logp_student, selected)
    _check_log_probs(name_r, logp_ref, selected)
    student, ref = logp_student[selected], logp_ref[selected]  # [n, V]: masked never read
    if direction == "fwd":
        kl, p_name, q_name = _kl_rows(ref, student), name_r, name_s
    else:
        kl, p_name, q_name = _kl_rows(student, ref), name_s, name_r
    with torch.no_grad():
        infinite = torch.isinf(kl)
        if bool(infinite.any()):
            k = int(infinite.nonzero()[0])
            idx = tuple(selected.nonzero()[k].tolist())
            raise InputError(
                f"KL is infinite at position {list(idx)}: {q_name} gives probability 0 to a token "
                f"that {p_name} does not (direction={direction!r})"
            )
    return _aggregate(kl, how)
