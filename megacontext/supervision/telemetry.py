"""Supervision-quality telemetry: pure functions a LensNet training run logs to see polarity drift.

The field notes found a flipped polarity only because someone logged the correlation between
scores and their supervision (`corr_mean ≈ +0.95` against ΔNLL, i.e. the wrong sign). These
functions make that signal cheap: correlation and sign agreement between scores and targets
over the mask, per snapshot and as mean/max/min over a batch, plus score-distribution stats.

Conventions: inputs are `[N]` (one snapshot) or `[B, N]` (a batch, one row per snapshot) with
a bool mask of the same shape (None: every entry). Statistics are computed in float64 and
returned as float64 tensors (per-snapshot functions: shape `[]` or `[B]`). A statistic that is
undefined — fewer than two masked entries or a constant side for a correlation, no masked
entry with a non-zero target for sign agreement, no masked entry for score stats — is NaN, and
batch aggregates skip NaN snapshots (reporting how many were defined) rather than invent a 0.
Scores must be finite (a NaN score is a bug upstream, InputError as everywhere); a target may
be NaN ("not measured") and is then skipped like a masked-out entry.
"""

from __future__ import annotations

import math

import torch

from ..device import HOST
from ..errors import InputError, InputTypeError, check_tensor


def _rows(name: str, x: torch.Tensor, mask: torch.Tensor | None, other=None):
    """Check shapes; return (x [B, N] float64, mask [B, N] bool, batched?)."""
    check_tensor(name, x, floating=True, finite=name == "scores")
    if x.ndim not in (1, 2):
        raise InputError(f"{name} must be [N] or [B, N], got shape {tuple(x.shape)}")
    if other is not None:
        oname, o = other
        check_tensor(oname, o, floating=True)
        if o.shape != x.shape:
            raise InputError(f"{oname} has shape {tuple(o.shape)}, expected {tuple(x.shape)} "
                             f"(the shape of {name})")
    if mask is None:
        mask = torch.ones(x.shape, dtype=torch.bool, device=x.device)
    check_tensor("mask", mask, dtype=torch.bool)
    if mask.shape != x.shape:
        raise InputError(f"mask has shape {tuple(mask.shape)}, expected {tuple(x.shape)} "
                         f"(the shape of {name})")
    batched = x.ndim == 2
    shape = tuple(x.shape) if batched else (1, x.shape[0])
    return x.detach().to(torch.float64).reshape(shape), mask.reshape(shape), batched


def _finish(values: list[float], batched: bool) -> torch.Tensor:
    out = torch.tensor(values, dtype=torch.float64, device=HOST)  # Python floats: host values
    return out if batched else out[0]


def _pearson_1d(x: torch.Tensor, y: torch.Tensor) -> float:
    ok = torch.isfinite(x) & torch.isfinite(y)
    x, y = x[ok], y[ok]
    if x.shape[0] < 2 or x.max() == x.min() or y.max() == y.min():
        return math.nan  # a constant side has no correlation (and its mean may not be exact)
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((xc * xc).sum()) * float((yc * yc).sum()))
    if denom == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float((xc * yc).sum()) / denom))


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """[n] ranks 1..n of x, ties sharing the mean of their ranks (fractional ranking)."""
    n = x.shape[0]
    values, inverse, counts = torch.unique(x, sorted=True, return_inverse=True,
                                           return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # [U] 0-based rank of each value's first copy
    mean_rank = first.to(torch.float64) + (counts.to(torch.float64) + 1) / 2
    return mean_rank[inverse] if n else x.clone()


def pearson_corr(scores: torch.Tensor, targets: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pearson correlation of scores and targets over the mask, per snapshot; NaN if undefined.

    Entries whose target is not finite are skipped (NaN: not measured)."""
    s, m, batched = _rows("scores", scores, mask, ("targets", targets))
    t = targets.detach().to(torch.float64).reshape(s.shape)
    return _finish([_pearson_1d(s[b][m[b]], t[b][m[b]]) for b in range(s.shape[0])], batched)


def spearman_corr(scores: torch.Tensor, targets: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Spearman rank correlation (Pearson of average ranks) over the mask; NaN if undefined."""
    s, m, batched = _rows("scores", scores, mask, ("targets", targets))
    t = targets.detach().to(torch.float64).reshape(s.shape)
    out = []
    for b in range(s.shape[0]):
        sb, tb = s[b][m[b]], t[b][m[b]]
        ok = torch.isfinite(sb) & torch.isfinite(tb)
        out.append(_pearson_1d(average_ranks(sb[ok]), average_ranks(tb[ok])))
    return _finish(out, batched)


def sign_agreement(scores: torch.Tensor, targets: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of masked entries with a non-zero target whose score has the target's sign.

    A score of exactly 0 agrees with neither sign. NaN where no masked target is non-zero."""
    s, m, batched = _rows("scores", scores, mask, ("targets", targets))
    t = targets.detach().to(torch.float64).reshape(s.shape)
    out = []
    for b in range(s.shape[0]):
        sb, tb = s[b][m[b]], t[b][m[b]]
        use = torch.isfinite(tb) & (tb != 0)
        k = int(use.sum())
        agree = int((torch.sign(sb[use]) == torch.sign(tb[use])).sum())
        out.append(agree / k if k else math.nan)
    return _finish(out, batched)


def score_stats(scores: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean |score|, population std of score) over the mask, per snapshot; NaN if empty.

    The field notes read under-used dynamic range from these (score std ≈ 0.3)."""
    s, m, batched = _rows("scores", scores, mask)
    mean_abs, std = [], []
    for b in range(s.shape[0]):
        sb = s[b][m[b]]
        if sb.shape[0] == 0:
            mean_abs.append(math.nan)
            std.append(math.nan)
        else:
            mean_abs.append(float(sb.abs().mean()))
            std.append(float(sb.std(correction=0)))
    return _finish(mean_abs, batched), _finish(std, batched)


def score_histogram(scores: torch.Tensor, mask: torch.Tensor | None = None, bins: int = 20,
                    lo: float = -1.0, hi: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts [bins] int64, edges [bins+1] float64) of the masked scores (a batch is pooled).

    Bins are equal-width on [lo, hi), the last one closed; the two edge bins are open-ended, so
    a score below lo counts in the first bin and one above hi in the last: the counts always
    sum to the number of masked scores (nothing dropped)."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise InputError(f"bins must be a positive int, got {bins!r}")
    for name, v in (("lo", lo), ("hi", hi)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InputTypeError(f"{name} must be a finite number, got {v!r}")
    if not lo < hi:
        raise InputError(f"need lo < hi, got lo={lo} hi={hi}")
    s, m, _ = _rows("scores", scores, mask)
    x = s[m]  # [n]
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64, device=x.device)
    which = torch.bucketize(x, edges[1:-1], right=True)  # [n] in 0..bins-1
    counts = torch.bincount(which, minlength=bins)
    return counts, edges


def batch_summary(values: torch.Tensor, name: str) -> dict[str, float]:
    """{name_mean, name_max, name_min, name_defined} over the defined (non-NaN) snapshots."""
    v = values.reshape(-1)
    v = v[~torch.isnan(v)]
    if v.shape[0] == 0:
        return {f"{name}_mean": math.nan, f"{name}_max": math.nan, f"{name}_min": math.nan,
                f"{name}_defined": 0}
    return {f"{name}_mean": float(v.mean()), f"{name}_max": float(v.max()),
            f"{name}_min": float(v.min()), f"{name}_defined": int(v.shape[0])}


def lens_telemetry(scores: torch.Tensor, targets: torch.Tensor,
                   mask: torch.Tensor | None = None) -> dict[str, float]:
    """Everything above for one snapshot [N] or a batch [B, N], as a flat dict of numbers.

    Keys: corr_{mean,max,min,defined} (Pearson, per snapshot, aggregated over the batch),
    spearman_*, sign_agree_*, and mean_abs_score / score_std over all masked scores pooled.
    A healthy run has corr_mean > 0; the field notes' polarity bug shows as corr_mean < 0
    against targets (its +0.95 was measured against the loss, the opposite sign)."""
    out = {}
    out.update(batch_summary(pearson_corr(scores, targets, mask), "corr"))
    out.update(batch_summary(spearman_corr(scores, targets, mask), "spearman"))
    out.update(batch_summary(sign_agreement(scores, targets, mask), "sign_agree"))
    flat_mask = None if mask is None else mask.reshape(-1)
    mean_abs, std = score_stats(scores.reshape(-1), flat_mask)
    out["mean_abs_score"] = float(mean_abs)
    out["score_std"] = float(std)
    return out
