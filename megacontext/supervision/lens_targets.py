"""LensNet supervision targets (contract §6): signed per-entry utilities with legality masks.

Polarity: a positive target means "more detail here is worth it" (expand), a negative one
"less detail is fine" (collapse the entry's sibling group). Every function returns
`(targets[N], mask[N])`: `mask[i]` says entry i carries a target; where it is false the target
is exactly 0 (never NaN), so downstream arithmetic stays NaN-free.

Legality is structural and comes from `legal_actions` (hysteresis does not apply to
supervision): LOD0 entries never get an expand term; LOD-max, protected-tail and partial-block
entries, and any entry outside a collapsible sibling group, never get a collapse term. A
collapse term is a property of a group, so it lands on all K members of the group that
`legal_actions` reports and on nothing else (block-aligned broadcast).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..controller.config import MCConfig
from ..controller.legality import legal_actions
from ..controller.working_context import WorkingContext, as_numpy, check_working_context
from ..errors import InputError, InputTypeError, check_tensor


def check_number(name: str, value, *, minimum: float | None = None) -> float:
    """A finite real number (Python int/float or a 0-d floating/integer tensor)."""
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputTypeError(f"{name} must be a real number, got {type(value).__name__} "
                             f"{value!r}")
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {value!r}")
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value!r}")
    return float(value)


def _check_utility(name: str, value, n: int) -> torch.Tensor:
    """A floating [N] tensor whose entries are finite or NaN ("not measured"); no infinities."""
    check_tensor(name, value, ndim=1, floating=True, length=n, length_of="wc")
    bad = torch.isinf(value)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise InputError(f"{name}[{i}] = {value[i].item()}: utilities must be finite, or NaN "
                         f"for 'not measured'")
    return value


def lens_targets_from_utilities(
    wc: WorkingContext,
    expand_gain: torch.Tensor,
    collapse_loss: torch.Tensor,
    T: int,
    cfg: MCConfig,
    price: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets from counterfactual ΔNLL utilities (contract §6 "Utilities").

    expand_gain[i]   NLL reduction from expanding entry i (NaN: not measured).
    collapse_loss[i] NLL increase from collapsing i's sibling group (NaN: not measured). It is a
                     property of the group: a value measured on any member is broadcast to all
                     K members; members that carry values must agree exactly (InputError if
                     not: a pipeline that measured one group twice differently has a bug).
    price            nats per slot, >= 0; an action moves K-1 slots.

    U_exp = expand_gain - price·(K-1);  U_col = price·(K-1) - collapse_loss
    target = max(U_exp, 0)·[expand legal and measured] - max(U_col, 0)·[collapse legal and
    measured];  mask = at least one legal term was measured.

    Values measured for illegal actions (an expand gain on an LOD0 entry, a collapse loss on an
    entry outside every collapsible group) are ignored: contract §6.1 defines targets over the
    legal, measured terms only. Targets have dtype promote(float32, inputs); 0 where masked.
    """
    check_working_context(wc, T, cfg, check_budget=False)
    n = len(wc)
    _check_utility("expand_gain", expand_gain, n)
    _check_utility("collapse_loss", collapse_loss, n)
    price = check_number("price", price, minimum=0.0)
    dtype = torch.promote_types(torch.promote_types(expand_gain.dtype, collapse_loss.dtype),
                                torch.float32)
    gain = expand_gain.detach().to(dtype)  # [N]
    loss = collapse_loss.detach().to(dtype)  # [N]

    expand_ok, group_id = legal_actions(wc, T, cfg)
    slot_value = price * (cfg.block_size - 1)

    # Expand term: legal (a gist) and measured.
    has_exp = expand_ok & ~torch.isnan(gain)
    u_exp = torch.where(has_exp, gain - slot_value, 0.0)

    # Collapse term: one value per group, from whichever members carry it, on all K members.
    group_loss = group_values(loss, group_id, "collapse_loss")  # [G], NaN: not measured
    in_group = group_id >= 0
    member_loss = torch.full_like(loss, math.nan)
    member_loss[in_group] = group_loss[group_id[in_group]]
    has_col = ~torch.isnan(member_loss)
    u_col = torch.where(has_col, slot_value - member_loss, 0.0)

    mask = has_exp | has_col
    targets = u_exp.clamp(min=0) - u_col.clamp(min=0)
    return torch.where(mask, targets, 0.0), mask


def group_values(values: torch.Tensor, group_id: torch.Tensor, name: str) -> torch.Tensor:
    """[G] the value each group's members carry (NaN where none does); members must agree."""
    in_group = group_id >= 0
    n_groups = int(group_id.max()) + 1 if bool(in_group.any()) else 0
    measured = in_group & ~torch.isnan(values)
    idx, vals = group_id[measured], values[measured]
    hi = torch.full((n_groups,), -math.inf, dtype=values.dtype, device=values.device)
    lo = torch.full((n_groups,), math.inf, dtype=values.dtype, device=values.device)
    hi = hi.scatter_reduce(0, idx, vals, "amax")
    lo = lo.scatter_reduce(0, idx, vals, "amin")
    seen = torch.zeros(n_groups, dtype=torch.bool, device=values.device).index_fill_(0, idx, True)
    bad = seen & (hi != lo)
    if bool(bad.any()):
        g = int(bad.nonzero()[0])
        members = (group_id == g).nonzero().flatten()
        shown = {int(i): values[i].item() for i in members if not torch.isnan(values[i])}
        raise InputError(
            f"{name} disagrees within sibling group {g} (entries {int(members[0])}.."
            f"{int(members[-1])}): {shown}; a group's collapse is one action with one value"
        )
    return torch.where(seen, hi, math.nan)


def lens_targets_from_best(
    wc: WorkingContext,
    best_wc: WorkingContext,
    delta_loss: float,
    T: int,
    cfg: MCConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets from the best (lowest-loss) variant's LOD map (contract §6 "Best variant").

    No extra ΔNLL passes: the label is the direction in which `best_wc` differs from `wc`,
    with magnitude tanh(|delta_loss|) (delta_loss = this variant's loss minus the best's; its
    sign is not used, so either convention works). Per entry i of `wc`, over its token span:

    - finer: best covers (part of) the span with entries of lower level -> +tanh(|Δ|)
      (always a legal expand: only a gist can have finer entries under it);
    - coarser: best covers the span with one entry of higher level, i.e. best collapsed i's
      group or an ancestor -> -tanh(|Δ|) on every member of i's sibling group, and only if
      `legal_actions` reports that group (a coarser entry whose siblings are not all at its
      level needs more than one collapse and is masked);
    - same level, or the whole span evicted in best -> masked.

    "Finer in part and coarser elsewhere" cannot happen between two valid WCs: spans are
    aligned powers of K, so they nest or are disjoint, and a best entry that is coarser over
    any token of i's span covers all of it. The only partial case is eviction: tokens that
    best evicted carry no evidence either way (eviction is forced and oldest-first, never a
    lens decision), so an entry whose span best covers partly with finer entries and partly not
    at all counts as finer. Both WCs are validated (budget not enforced, like legal_actions).
    """
    check_working_context(wc, T, cfg, check_budget=False)
    if not isinstance(best_wc, WorkingContext):
        raise InputTypeError(f"best_wc must be a WorkingContext, got {type(best_wc).__name__}")
    check_working_context(best_wc, T, cfg, check_budget=False)
    delta = check_number("delta_loss", delta_loss)
    magnitude = math.tanh(abs(delta))

    finer, coarser = compare_lod_maps(wc, best_wc, cfg)  # [N] bool each
    expand_ok, group_id = legal_actions(wc, T, cfg)
    finer &= expand_ok  # structurally implied; kept so the rule is local and explicit

    # A group is collapsed in best iff a member is coarser there (then all K are).
    n_groups = int(group_id.max()) + 1 if len(wc) and bool((group_id >= 0).any()) else 0
    in_group = group_id >= 0
    group_coarser = torch.zeros(n_groups, dtype=torch.bool, device=coarser.device)
    group_coarser[group_id[coarser & in_group]] = True
    collapse = torch.zeros_like(coarser)
    collapse[in_group] = group_coarser[group_id[in_group]]

    targets = torch.zeros(len(wc), dtype=torch.float32, device=finer.device)
    targets[finer] = magnitude
    targets[collapse] = -magnitude
    return targets, finer | collapse


def compare_lod_maps(
    wc: WorkingContext, best_wc: WorkingContext, cfg: MCConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """(finer[N], coarser[N]): where `best_wc` has more / less detail over each wc entry's span.

    Both WCs tile up to the same T. For entry i = [s, e): j = the best entry holding token s.
    If j exists, aligned spans nest, so j either contains [s, e) (coarser or equal) or lies
    inside it (finer). If best evicted s, best's entries that start inside [s, e) lie inside it
    (finer); if there are none, the span is wholly evicted in best (neither).
    """
    lods, starts = as_numpy(wc.lods), as_numpy(wc.starts)
    ends = starts + cfg.block_size**lods  # [N]
    b_lods, b_starts = as_numpy(best_wc.lods), as_numpy(best_wc.starts)
    nb = b_starts.shape[0]
    if nb == 0:  # T == 0: nothing to compare
        none = np.zeros(lods.shape[0], dtype=bool)
        return torch.from_numpy(none), torch.from_numpy(none.copy())
    j = np.searchsorted(b_starts, starts, side="right") - 1  # [N] best entry holding s, or -1
    covered = j >= 0
    b_lod_at_s = b_lods[np.maximum(j, 0)]  # [N]
    k = np.searchsorted(b_starts, starts, side="left")  # [N] first best entry starting >= s
    starts_inside = (k < nb) & (b_starts[np.minimum(k, nb - 1)] < ends)
    finer = np.where(covered, b_lod_at_s < lods, starts_inside)
    coarser = covered & (b_lod_at_s > lods)
    return torch.from_numpy(np.asarray(finer, dtype=bool)), torch.from_numpy(coarser)


def variant_weights(losses: torch.Tensor, baseline_loss: float | None = None) -> torch.Tensor:
    """Per-variant sample weights for best-variant supervision: `1 + max(baseline - loss, 0)`.

    A variant weighs 1 plus its improvement over the baseline (default: the worst variant's
    loss), so a better (lower-loss) variant never weighs less than a worse one: the weights are
    non-increasing in the loss. (The field notes record the opposite bug, `1 + max(loss - best,
    0)`, which let the worst variants dominate; and `1 + max(best - loss, 0)` as literally
    written there is identically 1, since no variant beats the best.) `losses` [V] floating and
    finite; returns [V] in promote(float32, losses.dtype). Use them as the weights of a weighted
    mean of per-variant lens losses.
    """
    check_tensor("losses", losses, ndim=1, floating=True, finite=True)
    dtype = torch.promote_types(losses.dtype, torch.float32)
    losses = losses.detach().to(dtype)
    if baseline_loss is None:
        if losses.shape[0] == 0:
            return losses.clone()
        ref = losses.max()
    else:
        ref = torch.tensor(check_number("baseline_loss", baseline_loss), dtype=dtype,
                           device=losses.device)
    return 1.0 + (ref - losses).clamp(min=0)
