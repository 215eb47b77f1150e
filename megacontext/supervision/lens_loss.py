"""The LensNet loss (contract §6): regression + preference + rank + budget over masked entries.

    total = w_reg·reg + w_pref·pref + w_rank·rank + w_budget·budget

Per masked entry i with score s, target t and weight c = collapse_weight if t < 0 else 1
(n = number of masked entries):

    reg    = Σ c·(s - tanh(t/scale))² / n              pulls s toward tanh(t/scale)
    pref   = Σ c·softplus(-sign(t)·s/τ)·|t| / n        Bradley–Terry: pushes s toward sign(t)
    rank   = Σ_pairs c̄·relu(margin - (s_hi - s_lo)) / #pairs      higher target, higher score
    budget = ((P - Q) / (P + Q + eps))²                in [0, 1): expand vs collapse slot flow

Rank pairs (deterministic, O(n log n)): sort the masked entries by (target, score) ascending
and pair sorted positions k and k + d for every stride d in 1, 2, 4, ... < n, keeping the pairs
whose targets differ (hi = the later one, its target strictly larger); c̄ is the mean of the
pair's two c. Sorting ties by score makes stride 1 pair the highest-scored entry of one target
value with the lowest-scored of the next, so the rank term is zero exactly when every pair of
masked entries with t_i > t_j already has s_i - s_j >= margin; the doubling strides give runs
of equal targets (best-variant targets have two values) O(n) cross pairs instead of one.

Budget slot costs: a positive score asks to expand, which costs K-1 slots, so
P = Σ (K-1)·[expand legal]·relu(s); a negative score asks to collapse the entry's group, which
frees K-1 slots shared by its K members, so Q = Σ (K-1)/K·[in a group]·relu(-s). Entries on
which the asked action is illegal weigh nothing. collapse_weight does not apply to budget.

Everything is computed in promote(float32, scores, targets) whatever the input dtype (bf16
scores train fine; their gradient comes back as bf16). An empty mask gives exactly 0 for
every term, finite and differentiable with a zero gradient; masked-out entries get exactly
zero gradient, whatever their targets hold (NaN there is allowed: "not measured").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..controller.config import MCConfig
from ..controller.legality import legal_actions
from ..controller.working_context import WorkingContext, check_working_context
from ..errors import ConfigError, InputError, InputTypeError, check_tensor


@dataclass(frozen=True)
class LensLossWeights:
    reg: float = 1.0  # weight of the regression term
    pref: float = 1.0  # weight of the Bradley–Terry preference term
    rank: float = 0.5  # weight of the pairwise rank hinge
    budget: float = 0.1  # weight of the zero-sum budget regularizer
    temperature: float = 0.5  # τ of the preference term (> 0)
    margin: float = 0.1  # hinge margin of the rank term (>= 0)
    target_scale: float = 1.0  # regression pulls s toward tanh(t / target_scale) (> 0)
    collapse_weight: float = 1.0  # scales reg, pref (and rank pairs) on negative targets
    eps: float = 1e-6  # keeps the budget ratio finite when every score is 0 (> 0)

    def __post_init__(self):
        positive = ("temperature", "target_scale", "eps")
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"LensLossWeights.{f.name} must be a finite number, got {v!r}")
            if f.name in positive and v <= 0:
                raise ConfigError(f"LensLossWeights.{f.name} must be > 0, got {v}")
            if v < 0:
                raise ConfigError(f"LensLossWeights.{f.name} must be >= 0, got {v}")


class LensLoss(NamedTuple):
    total: torch.Tensor  # 0-d, the weighted sum
    reg: torch.Tensor  # 0-d, unweighted terms
    pref: torch.Tensor
    rank: torch.Tensor
    budget: torch.Tensor


def lens_loss(
    scores: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    wc: WorkingContext,
    cfg: MCConfig,
    weights: LensLossWeights = LensLossWeights(),  # noqa: B008 (frozen, immutable)
) -> LensLoss:
    """The LensNet loss of one snapshot (see the module docstring for every term).

    scores [N] floating, finite (the LensNet output for `wc`); targets [N] floating, finite
    where `mask` is set; mask [N] bool. `wc` is validated (budget not enforced) and T is the end
    of its last entry (the coverage invariant); it supplies legality and slot costs.
    """
    if not isinstance(wc, WorkingContext):
        raise InputTypeError(f"wc must be a WorkingContext, got {type(wc).__name__}")
    if not isinstance(cfg, MCConfig):
        raise InputTypeError(f"cfg must be an MCConfig, got {type(cfg).__name__}")
    if not isinstance(weights, LensLossWeights):
        raise InputTypeError(f"weights must be a LensLossWeights, got {type(weights).__name__}")
    n_all = len(wc)
    # T = end of the last entry (coverage); the level is clipped only so that an invalid WC
    # reaches validation, which names the real problem.
    last_lod = min(max(int(wc.lods[-1]), 0), cfg.max_lod) if n_all else 0
    T = int(wc.starts[-1]) + cfg.span(last_lod) if n_all else 0
    check_working_context(wc, T, cfg, check_budget=False)
    check_tensor("scores", scores, ndim=1, floating=True, length=n_all, length_of="wc",
                 finite=True)
    check_tensor("targets", targets, ndim=1, floating=True, length=n_all, length_of="wc")
    check_tensor("mask", mask, ndim=1, dtype=torch.bool, length=n_all, length_of="wc")
    bad = mask & ~torch.isfinite(targets)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise InputError(f"targets[{i}] = {targets[i].item()} where mask[{i}] is set: a masked "
                         f"target must be finite")

    dtype = torch.promote_types(torch.promote_types(scores.dtype, targets.dtype), torch.float32)
    K = cfg.block_size
    expand_ok, group_id = legal_actions(wc, T, cfg)  # host: the WC's structure
    expand_ok, group_id = expand_ok.to(scores.device), group_id.to(scores.device)
    idx = mask.nonzero().flatten()  # [n] masked entries; index_select gives others zero grad
    s = scores.to(dtype).index_select(0, idx)  # [n]
    t = targets.detach().to(dtype).index_select(0, idx)  # [n]
    c = torch.where(t < 0, weights.collapse_weight, 1.0).to(dtype)  # [n]
    n = max(idx.shape[0], 1)

    reg = (c * (s - torch.tanh(t / weights.target_scale)) ** 2).sum() / n
    pref = (c * F.softplus(-torch.sign(t) * s / weights.temperature) * t.abs()).sum() / n
    rank = rank_hinge(s, t, c, weights.margin)

    expand_cost = ((K - 1) * expand_ok.to(dtype)).index_select(0, idx)  # [n]
    collapse_cost = ((K - 1) / K * (group_id >= 0).to(dtype)).index_select(0, idx)  # [n]
    P = (expand_cost * F.relu(s)).sum()
    Q = (collapse_cost * F.relu(-s)).sum()
    budget = ((P - Q) / (P + Q + weights.eps)) ** 2

    total = (weights.reg * reg + weights.pref * pref + weights.rank * rank
             + weights.budget * budget)
    return LensLoss(total, reg, pref, rank, budget)


def sort_for_rank(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """[n] indices ordering the entries by (target, score) ascending (stable)."""
    by_score = torch.argsort(s.detach(), stable=True)
    return by_score[torch.argsort(t[by_score], stable=True)]


def rank_pairs(t: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo[P], hi[P]) indices into t/s of the rank pairs (module docstring): t[hi] > t[lo].

    Spells the pair set out; `rank_hinge` computes the same sum with strided slices."""
    n, order = t.shape[0], sort_for_rank(t, s)
    lo, hi, d = [], [], 1
    while d < n:
        a, b = order[: n - d], order[d:]
        keep = t[b] > t[a]
        lo.append(a[keep])
        hi.append(b[keep])
        d *= 2
    if not lo:
        empty = torch.zeros(0, dtype=torch.int64, device=t.device)
        return empty, empty.clone()
    return torch.cat(lo), torch.cat(hi)


def rank_hinge(s: torch.Tensor, t: torch.Tensor, c: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean hinge relu(margin - (s_hi - s_lo)) over the rank pairs, weighted by mean c.

    Works on the (t, s)-sorted sequence: the pairs at stride d are its slices [d:] and [:-d],
    so there is one gather and no index lists (O(n log n) arithmetic, O(n) memory per stride).
    """
    n = s.shape[0]
    order = sort_for_rank(t, s)
    ss, ts, cs = s[order], t[order], c[order]  # [n] sorted by (t, s)
    total = s.sum() * 0  # keeps the graph (and dtype) when there are no pairs
    count, d = 0, 1
    while d < n:
        used = (ts[d:] > ts[: n - d]).to(s.dtype)  # [n-d] pair has distinct targets
        hinge = F.relu(margin - (ss[d:] - ss[: n - d])) * (cs[d:] + cs[: n - d]) / 2
        total = total + (hinge * used).sum()
        count += int(used.sum())
        d *= 2
    return total / max(count, 1)
