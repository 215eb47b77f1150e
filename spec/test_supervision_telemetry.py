"""Supervision telemetry (issue 4; contract §6 polarity): Pearson / Spearman correlation and sign
agreement between scores and targets over the mask, per snapshot and mean/max/min over a batch,
score histogram, mean |score| and score std — what a training run logs to see polarity drift.
Undefined statistics are NaN and batch aggregates skip them."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from scipy.stats import rankdata

from spec import strategies as S
from spec.implementation import mc


def masked_pairs(scores, targets, mask):
    """float64 numpy (s, t) over the mask, skipping NaN targets (not measured)."""
    s, t = scores.double().numpy(), targets.double().numpy()
    keep = mask.numpy() & ~np.isnan(t)
    return s[keep], t[keep]


def ref_pearson(s, t):
    if s.size < 2 or s.max() == s.min() or t.max() == t.min():
        return math.nan
    sc, tc = s - s.mean(), t - t.mean()
    return float((sc * tc).sum() / math.sqrt((sc * sc).sum() * (tc * tc).sum()))


def ref_sign_agreement(s, t):
    use = t != 0
    return float((np.sign(s[use]) == np.sign(t[use])).mean()) if use.any() else math.nan


def same(a, b, tol=1e-6):
    return (math.isnan(a) and math.isnan(b)) or (not math.isnan(a) and not math.isnan(b)
                                                 and abs(a - b) <= tol)


@given(S.telemetry_batches())
def test_per_snapshot_statistics_match_their_definitions(batch):
    """Per row: Pearson, Spearman (Pearson of average ranks) and sign agreement over the
    masked entries with a measured target equal the textbook definitions; NaN when undefined
    (< 2 entries or a constant side; no non-zero target for sign agreement)."""
    scores, targets, mask = batch
    pear = mc.pearson_corr(scores, targets, mask)
    spear = mc.spearman_corr(scores, targets, mask)
    agree = mc.sign_agreement(scores, targets, mask)
    assert pear.shape == spear.shape == agree.shape == (scores.shape[0],)
    for b in range(scores.shape[0]):
        s, t = masked_pairs(scores[b], targets[b], mask[b])
        expected = (ref_pearson(s, t),
                    ref_pearson(rankdata(s), rankdata(t)) if s.size else math.nan,
                    ref_sign_agreement(s, t))
        got = (pear[b].item(), spear[b].item(), agree[b].item())
        msg = f"row {b}: got {got} expected {expected}\ns={s.tolist()}\nt={t.tolist()}"
        assert all(same(g, e) for g, e in zip(got, expected, strict=True)), msg
        # one snapshot [N] gives the same as its row in the batch
        one = mc.pearson_corr(scores[b], targets[b], mask[b])
        assert one.shape == () and same(one.item(), got[0]), msg


@given(S.telemetry_batches())
def test_flipping_the_scores_flips_every_correlation(batch):
    """Negating the scores negates Pearson and Spearman: the telemetry sees polarity."""
    scores, targets, mask = batch
    for fn in (mc.pearson_corr, mc.spearman_corr):
        a, b = fn(scores, targets, mask), fn(-scores, targets, mask)
        assert all(same(x, -y) for x, y in zip(a.tolist(), b.tolist(), strict=True)), (
            f"{fn.__name__}: {a.tolist()} vs flipped {b.tolist()}")


@given(S.telemetry_batches())
def test_batch_summary_aggregates_defined_snapshots_only(batch):
    """corr_mean/max/min (and spearman_*, sign_agree_*) aggregate the per-snapshot values,
    skipping undefined (NaN) ones and counting the defined; score stats pool the masked scores."""
    scores, targets, mask = batch
    out = mc.lens_telemetry(scores, targets, mask)
    for key, fn in (("corr", mc.pearson_corr), ("spearman", mc.spearman_corr),
                    ("sign_agree", mc.sign_agreement)):
        v = [x for x in fn(scores, targets, mask).tolist() if not math.isnan(x)]
        exp = ((sum(v) / len(v), max(v), min(v)) if v else (math.nan,) * 3)
        got = (out[f"{key}_mean"], out[f"{key}_max"], out[f"{key}_min"])
        msg = f"{key}: got {got} expected {exp} from {v}; telemetry={out}"
        assert all(same(g, e, 1e-9) for g, e in zip(got, exp, strict=True)), msg
        assert out[f"{key}_defined"] == len(v), msg
    pooled = scores[mask].double().numpy()
    exp_abs = float(np.abs(pooled).mean()) if pooled.size else math.nan
    exp_std = float(pooled.std()) if pooled.size else math.nan
    assert same(out["mean_abs_score"], exp_abs, 1e-9) and same(out["score_std"], exp_std, 1e-9), (
        f"telemetry={out} expected mean_abs={exp_abs} std={exp_std}")


def test_telemetry_detects_the_field_notes_polarity_bug():
    """Scores that follow the targets give corr_mean near +1 and sign agreement 1; the same
    scores with a flipped sign (the recorded bug) give corr_mean near -1 and agreement 0."""
    g = torch.Generator().manual_seed(0)
    targets = torch.randn(8, 50, generator=g)
    scores = torch.tanh(targets + 0.1 * torch.randn(8, 50, generator=g))
    mask = torch.rand(8, 50, generator=g) < 0.8
    good, bad = mc.lens_telemetry(scores, targets, mask), mc.lens_telemetry(-scores, targets, mask)
    assert good["corr_mean"] > 0.9 and good["sign_agree_min"] > 0.9, good
    assert bad["corr_mean"] < -0.9 and bad["sign_agree_max"] < 0.1, bad
    assert good["corr_defined"] == 8 == bad["corr_defined"], (good, bad)


def test_undefined_statistics_are_nan_not_zero():
    """An empty mask, a single entry or a constant side give NaN, never an invented 0."""
    s, t = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1.0, 0.0, -1.0])
    none = torch.zeros(3, dtype=torch.bool)
    one = torch.tensor([True, False, False])
    for m in (none, one):
        assert math.isnan(mc.pearson_corr(s, t, m).item())
        assert math.isnan(mc.spearman_corr(s, t, m).item())
    assert math.isnan(mc.pearson_corr(torch.full((3,), 0.1), t).item())
    assert math.isnan(mc.sign_agreement(s, torch.zeros(3)).item())
    mean_abs, std = mc.score_stats(s, none)
    assert math.isnan(mean_abs.item()) and math.isnan(std.item())
    out = mc.lens_telemetry(s, t, none)
    assert out["corr_defined"] == 0 and math.isnan(out["corr_mean"]), out


@given(S.telemetry_batches())
def test_histogram_counts_every_masked_score_once(batch):
    """Counts sum to the number of masked scores (edge bins are open-ended: nothing dropped),
    edges are bins+1 equal steps over [lo, hi], each in-range score in the bin holding it."""
    scores, _, mask = batch
    counts, edges = mc.score_histogram(scores, mask, bins=8)
    x = scores[mask].double().numpy()
    assert counts.shape == (8,) and edges.shape == (9,) and int(counts.sum()) == x.size, (
        f"counts={counts.tolist()} n={x.size}")
    assert torch.allclose(edges, torch.linspace(-1, 1, 9, dtype=torch.float64))
    inner = edges[1:-1].numpy()
    expected = np.bincount(np.searchsorted(inner, x, side="right"), minlength=8)
    assert counts.tolist() == expected.tolist(), (counts.tolist(), expected.tolist(), x.tolist())


def test_histogram_example():
    """4 bins on [-1, 1]: -2 (below: first bin), 0, 0.5, 1.0 (the closed top edge), 3 (above)."""
    counts, edges = mc.score_histogram(torch.tensor([-2.0, 0.0, 0.5, 1.0, 3.0]), bins=4)
    assert counts.tolist() == [1, 0, 1, 3], counts.tolist()
    assert edges.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]


def test_telemetry_rejects_bad_input():
    """NaN scores and mismatched shapes raise typed errors naming the argument."""
    with pytest.raises(ValueError, match="scores"):
        mc.pearson_corr(torch.tensor([0.1, math.nan]), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="targets"):
        mc.spearman_corr(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="mask"):
        mc.sign_agreement(torch.zeros(3), torch.zeros(3), torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="bins"):
        mc.score_histogram(torch.zeros(3), bins=0)
