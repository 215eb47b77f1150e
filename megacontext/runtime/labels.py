"""Counterfactual ΔNLL labels for LensNet (contract §12).

For a snapshot (tree, WC, T) and the next H tokens, every candidate action gives a variant WC:
one expand of a legal gist, or one collapse of a legal sibling group (the budget is not
enforced: the slot price of §6 charges for it). ΔNLL = loss@H(variant) − loss@H(snapshot);
`expand_gain[i] = −ΔNLL(expand i)`, `collapse_loss[member] = ΔNLL(collapse group)` on every
member, NaN where unmeasured — exactly what `lens_targets_from_utilities` takes.

Variants run through the base in batches (`horizon.loss_at_h_batch`: right padding under the
causal mask). The snapshot itself rides in the first batch, so base_nll and the variants'
losses come from the same kind of forward.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..controller.allocator import focus_step
from ..controller.config import MCConfig
from ..controller.legality import legal_actions
from ..controller.working_context import WorkingContext, as_numpy, check_working_context
from ..device import HOST
from ..errors import InputError, InputTypeError, check_int
from ..models.tree import MegaContextTree
from ..supervision.lens_targets import lens_targets_from_best, variant_weights
from .horizon import check_ids, collapse_variant, embed_ids, expand_variant, loss_at_h_batch

EXPAND, COLLAPSE = "expand", "collapse"


@dataclass(frozen=True)
class Candidate:
    """One candidate action: `row` is the gist's row (expand) or the group's first row."""

    kind: str  # "expand" | "collapse"
    row: int
    lod: int  # the gist's level (expand) or the members' level (collapse)
    start: int  # first token covered by the gist / the group


def candidate_actions(
    wc: WorkingContext, T: int, cfg: MCConfig, max_candidates: int | None = None, seed: int = 0
) -> list[Candidate]:
    """Every structurally legal action on `wc` (expands in row order, then collapses).

    With more than `max_candidates` legal actions, a seeded uniform sample of that many (kept
    in the same order). Legality is `legal_actions`' (hysteresis is not a label's concern).
    """
    expand_ok, group_id = legal_actions(wc, T, cfg)
    lods, starts = as_numpy(wc.lods), as_numpy(wc.starts)
    out = [Candidate(EXPAND, int(r), int(lods[r]), int(starts[r]))
           for r in np.flatnonzero(as_numpy(expand_ok))]
    gid = as_numpy(group_id)
    heads = np.flatnonzero((gid >= 0) & np.r_[True, gid[1:] != gid[:-1]])
    out += [Candidate(COLLAPSE, int(r), int(lods[r]), int(starts[r])) for r in heads]
    if max_candidates is not None:
        max_candidates = check_int("max_candidates", max_candidates, minimum=1)
        if len(out) > max_candidates:
            g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
            keep = torch.randperm(len(out), generator=g, device=HOST)[:max_candidates].sort().values
            out = [out[i] for i in keep.tolist()]
    return out


def variant_of(wc: WorkingContext, cand: Candidate, cfg: MCConfig) -> WorkingContext:
    """The variant WC of one candidate action."""
    if cand.kind == EXPAND:
        return expand_variant(wc, cand.row, cfg)
    if cand.kind == COLLAPSE:
        return collapse_variant(wc, cand.row, cfg)
    raise InputError(f"candidate kind must be 'expand' or 'collapse', got {cand.kind!r}")


def variant_inputs(tree: MegaContextTree, wc_vec: torch.Tensor, wc_pos: torch.Tensor,
                   cand: Candidate, cfg: MCConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(vectors [N', E], positions [N']) of a variant, spliced from the snapshot's gathered
    vectors and the tree (no re-validation, no full re-gather)."""
    K, r = cfg.block_size, cand.row
    if cand.kind == EXPAND:
        child = cfg.span(cand.lod - 1)
        first = cand.start // child
        mid = tree.level(cand.lod - 1)[first: first + K]  # [K, E]
        mid_pos = cand.start + child * torch.arange(K, dtype=torch.int64, device=HOST) + child // 2
        return (torch.cat([wc_vec[:r], mid, wc_vec[r + 1:]]),
                torch.cat([wc_pos[:r], mid_pos, wc_pos[r + 1:]]))
    parent = cand.lod + 1
    span = cfg.span(parent)
    mid = tree.level(parent)[cand.start // span: cand.start // span + 1]  # [1, E]
    mid_pos = torch.tensor([cand.start + span // 2], dtype=torch.int64, device=HOST)
    return (torch.cat([wc_vec[:r], mid, wc_vec[r + K:]]),
            torch.cat([wc_pos[:r], mid_pos, wc_pos[r + K:]]))


@dataclass
class SnapshotLabels:
    """The labels of one snapshot. Tensors are float64; NaN = not measured."""

    wc: WorkingContext
    T: int
    H: int
    base_nll: float  # loss@H of the snapshot itself, nats/token
    candidates: list[Candidate]
    delta_nll: torch.Tensor  # [C] loss@H(variant) - base_nll, per candidate
    expand_gain: torch.Tensor  # [N] -ΔNLL(expand i) on measured gists, NaN elsewhere
    collapse_loss: torch.Tensor  # [N] ΔNLL(collapse group) on every measured member, NaN elsewhere


def utilities(wc: WorkingContext, candidates: list[Candidate], delta: torch.Tensor,
              cfg: MCConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(expand_gain[N], collapse_loss[N]) float64 from per-candidate ΔNLL; NaN where unmeasured."""
    n = len(wc)
    gain = torch.full((n,), math.nan, dtype=torch.float64, device=HOST)
    loss = torch.full((n,), math.nan, dtype=torch.float64, device=HOST)
    for c, d in zip(candidates, delta.tolist(), strict=True):
        if c.kind == EXPAND:
            gain[c.row] = -d
        else:
            loss[c.row: c.row + cfg.block_size] = d
    return gain, loss


def _check_snapshot(base, tree, wc, T, future, cfg):
    if not isinstance(cfg, MCConfig):
        raise InputTypeError(f"cfg must be an MCConfig, got {type(cfg).__name__}")
    if not isinstance(tree, MegaContextTree):
        raise InputTypeError(f"tree must be a MegaContextTree, got {type(tree).__name__}")
    T = check_int("T", T, minimum=1)
    if T != tree.num_tokens:
        raise InputError(f"T={T} but the tree holds {tree.num_tokens} tokens")
    check_working_context(wc, T, cfg, check_budget=False)
    vocab = getattr(getattr(base, "cfg", None), "vocab_size", None)
    check_ids("future", future, vocab, min_length=1)
    return T


@torch.no_grad()
def label_snapshot(
    base,
    tree: MegaContextTree,
    wc: WorkingContext,
    T: int,
    future: torch.Tensor,
    cfg: MCConfig,
    max_candidates: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
) -> SnapshotLabels:
    """ΔNLL of every candidate action on `wc` for the horizon `future[H]` (contract §12).

    tree: holds exactly T tokens; wc: valid for T (budget not enforced); future: [H] int64, the
    tokens T .. T+H-1. `batch_size` variants per forward (1 = one at a time; the results agree
    to float tolerance). Raises InputError / InputTypeError naming the bad argument.
    """
    T = _check_snapshot(base, tree, wc, T, future, cfg)
    cands = candidate_actions(wc, T, cfg, max_candidates, seed)
    wc_vec = tree.gather(wc)
    wc_pos = wc.positions(cfg)
    vecs, poss = [wc_vec], [wc_pos]
    for c in cands:
        v, p = variant_inputs(tree, wc_vec, wc_pos, c, cfg)
        vecs.append(v)
        poss.append(p)
    emb = embed_ids(base, future)
    losses = loss_at_h_batch(base, vecs, poss, T, future, emb, batch_size)
    base_nll = float(losses[0])
    delta = losses[1:] - losses[0]
    gain, loss = utilities(wc, cands, delta, cfg)
    return SnapshotLabels(wc, T, int(future.shape[0]), base_nll, cands, delta, gain, loss)


@dataclass
class BestVariantLabels:
    """Best-variant supervision (contract §6/§12): per variant, its WC, loss@H, targets, mask
    and weight. targets/mask come from `lens_targets_from_best(variant, best, Δ, T, cfg)`."""

    variants: list[WorkingContext]
    losses: torch.Tensor  # [V] float64 loss@H
    best: int
    targets: list[torch.Tensor]
    masks: list[torch.Tensor]
    weights: torch.Tensor  # [V] variant_weights(losses)


@torch.no_grad()
def best_variant_labels(
    base,
    tree: MegaContextTree,
    wc: WorkingContext,
    T: int,
    future: torch.Tensor,
    cfg: MCConfig,
    n_variants: int = 8,
    seed: int = 0,
    batch_size: int = 32,
) -> BestVariantLabels:
    """V seeded random focus variants of `wc` (focus_step on uniform(-1, 1) scores, hysteresis
    off, budget enforced), their loss@H in batches, and best-variant targets for each.
    Variant 0 is `wc` itself."""
    T = _check_snapshot(base, tree, wc, T, future, cfg)
    n_variants = check_int("n_variants", n_variants, minimum=1)
    g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    free = dataclasses.replace(cfg, min_residency=0)
    variants = [wc]
    for _ in range(n_variants - 1):
        scores = torch.rand(len(wc), generator=g, dtype=torch.float64, device=HOST) * 2 - 1
        variants.append(focus_step(wc, scores, T, free)[0])
    losses = loss_at_h_batch(base, [tree.gather(v) for v in variants],
                             [v.positions(cfg) for v in variants], T, future,
                             embed_ids(base, future), batch_size)
    best = int(torch.argmin(losses))
    targets, masks = [], []
    for v, loss in zip(variants, losses.tolist(), strict=True):
        t, m = lens_targets_from_best(v, variants[best], loss - float(losses[best]), T, cfg)
        targets.append(t)
        masks.append(m)
    return BestVariantLabels(variants, losses, best, targets, masks, variant_weights(losses))
