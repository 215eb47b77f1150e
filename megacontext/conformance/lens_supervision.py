"""Lens supervision vectors (contract §6): golden/vectors/lens_supervision.json.

Every case names the public function, its config, working context and inputs, and the
expected outputs that this reference produced. Inputs are float32-exact; expected outputs are
computed by the reference in float64 from those inputs (and rounded to 12 significant digits
by the writer), so a float32 port meets the stated tolerance. Written by
`python -m megacontext.conformance --write`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..controller.config import MCConfig
from ..controller.working_context import WorkingContext
from ..errors import MegaContextError
from ..supervision.lens_loss import LensLossWeights, lens_loss
from ..supervision.lens_targets import (
    lens_targets_from_best,
    lens_targets_from_utilities,
    variant_weights,
)
from .encoding import ERROR_KINDS, decode, error_json, header, rounded, tensor

NAN = math.nan

DEFINITIONS = {
    "wc": "a working context {lods, starts, residency}; sibling groups, expand legality "
          "(expand_ok) and group_id are those of legal_actions (controller.json)",
    "cfg": "MCConfig fields; only block_size K, max_lod and recent_tokens matter here",
    "lens_targets_from_utilities": [
        "inputs expand_gain [N], collapse_loss [N] (float, finite or 'nan' = not measured), "
        "price (nats per slot, >= 0); outputs targets [N] float, mask [N] bool",
        "collapse_loss is a property of a group: a value measured on any member of a group of "
        "legal_actions is that group's value, on all K members; members that carry values must "
        "agree exactly (InputError on collapse_loss otherwise); values on entries in no group "
        "and expand gains on LOD0 entries are ignored",
        "U_exp = expand_gain - price*(K-1) where expand_ok and measured; U_col = price*(K-1) - "
        "group value where in a group whose value is measured",
        "target = max(U_exp, 0) - max(U_col, 0) over the terms present; mask = at least one "
        "term present; target 0 where mask is false",
    ],
    "lens_targets_from_best": [
        "inputs best_wc (a valid WC over the same T), delta_loss (finite; only |delta_loss| is "
        "used); outputs targets [N] float32, mask [N] bool",
        "for entry i over [s, e): j = the best entry holding token s. finer: j exists and "
        "lods_best[j] < lods[i], or no best entry holds s (evicted) but some best entry starts "
        "inside [s, e). coarser: j exists and lods_best[j] > lods[i]",
        "finer (and expand_ok) -> +tanh(|delta_loss|); a group of legal_actions any of whose "
        "members is coarser -> -tanh(|delta_loss|) on all its members; elsewhere target 0 and "
        "mask false",
    ],
    "lens_loss": [
        "inputs scores [N] (finite), targets [N] (finite where mask), mask [N] bool, weights "
        "(LensLossWeights: reg, pref, rank, budget, temperature, margin, target_scale, "
        "collapse_weight, eps); T = the end of wc's last entry; outputs the five scalars "
        "total, reg, pref, rank, budget and grad_total = d total / d scores [N]",
        "over the n masked entries i (s = score, t = target), c_i = collapse_weight if t < 0 "
        "else 1; n' = max(n, 1)",
        "reg = sum c*(s - tanh(t/target_scale))^2 / n'",
        "pref = sum c*softplus(-sign(t)*s/temperature)*|t| / n', softplus(x) = ln(1 + e^x), "
        "sign(0) = 0",
        "rank: sort the masked entries by (t, s) ascending (stable; ties keep position order) "
        "as e_0..e_{n-1}; for every stride d = 1, 2, 4, ... < n and every k < n - d, the pair "
        "(lo = e_k, hi = e_{k+d}) counts if t_hi > t_lo; rank = sum over counted pairs of "
        "max(margin - (s_hi - s_lo), 0) * (c_lo + c_hi)/2, divided by max(#pairs, 1)",
        "budget: P = sum (K-1)*[expand_ok]*max(s, 0); Q = sum (K-1)/K*[group_id >= 0]*"
        "max(-s, 0); budget = ((P - Q) / (P + Q + eps))^2",
        "total = reg_w*reg + pref_w*pref + rank_w*rank + budget_w*budget (the weights' fields "
        "reg, pref, rank, budget); unmasked entries get exactly zero gradient; an empty mask "
        "gives 0 for every term and a zero gradient",
        "grad_total: the derivative of total with respect to each score, with the pairs, "
        "the weights c and the targets held fixed (the sort is not differentiated); the "
        "derivative of max(x, 0) is 1 for x > 0 and 0 for x <= 0 (so a score of exactly 0 "
        "adds nothing to the budget term's gradient, and a rank hinge exactly at its margin "
        "nothing to the rank term's)",
        "computed in float32 (or float64 for float64 inputs)",
    ],
    "variant_weights": "inputs losses [V] (finite), baseline_loss (a number, or null = the "
                       "largest loss); output [V]: 1 + max(baseline - loss, 0)",
}

TOLERANCES = {"values": {"rtol": 1e-5, "atol": 1e-6,
                         "meaning": "|got - expected| <= atol + rtol*|expected| for floats, "
                                    "computed in float32; masks exactly"}}


def f32(xs) -> dict:
    """An input tensor of float32 values (NaN allowed: 'not measured')."""
    return tensor(np.asarray(xs, dtype=np.float32), "float32")


def out(t: torch.Tensor):
    """An expected value: a rounded float for a 0-d tensor, else a tensor."""
    if t.ndim == 0:
        return rounded(float(t.detach().double()))
    if t.dtype == torch.bool:
        return tensor(t)
    return tensor(t.detach().double(), expected=True)


def values(t: dict) -> torch.Tensor:
    """float64 tensor of an input tensor."""
    return torch.from_numpy(decode(t))


def wc_of(entries) -> WorkingContext:
    return WorkingContext.from_numpy([e[0] for e in entries], [e[1] for e in entries])


def wc_json(entries) -> dict:
    n = len(entries)
    return {"lods": tensor(np.array([e[0] for e in entries], dtype=np.int64).reshape(n)),
            "starts": tensor(np.array([e[1] for e in entries], dtype=np.int64).reshape(n)),
            "residency": tensor(np.zeros(n, dtype=np.int64))}


def cfg_json(cfg: MCConfig) -> dict:
    return dataclasses.asdict(cfg)


# --- the scenarios --------------------------------------------------------------------------

CFG_A = MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=6)
T_A = 37
# LOD1 gists 0..16 (group 0 = entries 0..3; entry 4 alone), LOD0 20..36 (groups 1, 2 =
# entries 5..12; the block [28, 32) touches the tail [31, 37); 36 is a partial block).
WC_A = [(1, 0), (1, 4), (1, 8), (1, 12), (1, 16)] + [(0, t) for t in range(20, 37)]

CFG_B = MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=4)
T_B = 68
WC_B = ([(2, 0)] + [(1, s) for s in (16, 20, 24, 28)] + [(1, s) for s in (32, 36, 40)]
        + [(0, t) for t in range(44, 68)])
BEST_B = [(1, 4), (1, 8), (1, 12), (2, 16), (2, 32)] + [(0, t) for t in range(48, 68)]


def utility_case(name, description, cfg, T, entries, gain, loss, price):
    case = {
        "name": name, "description": description, "function": "lens_targets_from_utilities",
        "tolerance": "values",
        "inputs": {"wc": wc_json(entries), "T": T, "cfg": cfg_json(cfg),
                   "expand_gain": f32(gain), "collapse_loss": f32(loss), "price": price},
    }
    inp = case["inputs"]
    try:
        t, m = lens_targets_from_utilities(wc_of(entries), values(inp["expand_gain"]),
                                           values(inp["collapse_loss"]), T, cfg, price)
        case["expected"] = {"targets": out(t), "mask": out(m)}
    except MegaContextError as err:
        case["error"] = error_json(err, "collapse_loss")
    return case


def best_case(name, description, cfg, T, entries, best, delta):
    t, m = lens_targets_from_best(wc_of(entries), wc_of(best), delta, T, cfg)
    return {
        "name": name, "description": description, "function": "lens_targets_from_best",
        "tolerance": "values",
        "inputs": {"wc": wc_json(entries), "T": T, "cfg": cfg_json(cfg),
                   "best_wc": wc_json(best), "delta_loss": delta},
        "expected": {"targets": out(t), "mask": out(m)},
    }


def loss_case(name, description, cfg, T, entries, scores, targets, mask, weights):
    case = {
        "name": name, "description": description, "function": "lens_loss",
        "tolerance": "values",
        "inputs": {"wc": wc_json(entries), "cfg": cfg_json(cfg), "scores": f32(scores),
                   "targets": f32(targets), "mask": tensor(np.asarray(mask, dtype=bool)),
                   "weights": dataclasses.asdict(weights)},
    }
    inp = case["inputs"]
    s = values(inp["scores"]).requires_grad_(True)
    res = lens_loss(s, values(inp["targets"]), torch.tensor(mask), wc_of(entries), cfg, weights)
    res.total.backward()
    case["expected"] = {k: out(v) for k, v in res._asdict().items()}
    case["expected"]["grad_total"] = out(s.grad)
    return case


def weights_case(name, description, losses, baseline):
    w = variant_weights(values(f32(losses)), baseline)
    return {
        "name": name, "description": description, "function": "variant_weights",
        "tolerance": "values",
        "inputs": {"losses": f32(losses), "baseline_loss": baseline},
        "expected": {"weights": out(w)},
    }


def build_cases() -> list[dict]:
    n_a = len(WC_A)
    cases = []

    gain, loss = [NAN] * n_a, [NAN] * n_a
    gain[0], loss[2], gain[4], loss[4], gain[5], loss[7], loss[14] = 1.0, 0.1, 0.2, 0.0, 5.0, \
        0.5, 0.0
    cases.append(utility_case(
        "utilities_mixed", "expand (entry 0), a collapse loss on one member broadcast to its "
        "group (0..3), a measured expand not worth its slots (4: target 0, mask set), ignored "
        "illegal values (expand on LOD0 entry 5, collapse on lone gist 4 and on tail-touching "
        "entry 14), a collapse not worth it (group 1: target 0, mask set)",
        CFG_A, T_A, WC_A, gain, loss, 0.1))
    cases.append(utility_case(
        "utilities_all_nan", "nothing measured: empty mask, targets all 0",
        CFG_A, T_A, WC_A, [NAN] * n_a, [NAN] * n_a, 0.1))
    gain, loss = [NAN] * n_a, [NAN] * n_a
    gain[1], loss[3] = 0.4, 0.05
    for i in range(5, 9):
        loss[i] = 0.0
    cases.append(utility_case(
        "utilities_price_zero", "price 0: every measured gain is a positive term, every "
        "measured collapse loss > 0 gives no collapse term (target 0 where only it is measured)",
        CFG_A, T_A, WC_A, gain, loss, 0.0))
    gain = [2.0, -1.0] + [NAN] * 2 + [0.5] + [NAN] * 6 + [0.0] + [NAN] * (n_a - 12)
    loss = [NAN] * n_a
    loss[9], loss[10] = 0.25, 0.25
    cases.append(utility_case(
        "utilities_group_carried_twice", "two members of group 2 carry the same collapse loss "
        "(allowed); negative and zero gains", CFG_A, T_A, WC_A, gain, loss, 0.05))
    loss = [NAN] * n_a
    loss[0], loss[2] = 0.1, 0.2
    cases.append(utility_case(
        "utilities_error_disagreeing_group", "two members of group 0 carry different collapse "
        "losses: a ValueError (InputError), nothing is averaged silently",
        CFG_A, T_A, WC_A, [NAN] * n_a, loss, 0.1))

    cases.append(best_case(
        "best_mixed", "best expands the LOD2 gist at 0 (finer, its first block evicted in best: "
        "evicted tokens carry no evidence), collapses group 16..28 (coarser: all four), covers "
        "32..47 with one LOD2 gist (LOD1 32, 36, 40 have no legal group: masked; the LOD0 group "
        "44..47 is labelled); delta_loss negative (its sign is ignored)",
        CFG_B, T_B, WC_B, BEST_B, -0.5))
    cases.append(best_case("best_identical", "identical variant: empty mask",
                           CFG_B, T_B, WC_B, WC_B, 1.0))
    cases.append(best_case(
        "best_reverse", "the same pair with roles swapped: LOD2 16 and 32 are finer in best "
        "(+); LOD1 4, 8, 12 are coarser in best but their group lost its first member to "
        "eviction, so no legal collapse: masked", CFG_B, T_B, BEST_B, WC_B, 2.0))

    g = torch.Generator().manual_seed(4)
    scores = (torch.rand(n_a, generator=g) * 2 - 1).tolist()
    targets = (torch.randn(n_a, generator=g) * 0.8).tolist()
    mask = (torch.rand(n_a, generator=g) < 0.7).tolist()
    targets = [t if m else NAN for t, m in zip(targets, mask, strict=True)]
    cases.append(loss_case(
        "loss_default_weights", "seeded random scores and targets, NaN targets where the mask "
        "is off (they get exactly zero gradient)", CFG_A, T_A, WC_A, scores, targets, mask,
        LensLossWeights()))
    cases.append(loss_case(
        "loss_empty_mask", "empty mask: every term exactly 0, zero gradient",
        CFG_A, T_A, WC_A, scores, [NAN] * n_a, [False] * n_a, LensLossWeights()))
    m = math.tanh(0.5)
    n_b = len(WC_B)
    tb, _ = lens_targets_from_best(wc_of(WC_B), wc_of(BEST_B), 0.5, T_B, CFG_B)
    mb = [bool(x != 0) for x in tb.tolist()]
    sb = [0.3 * math.sin(3 * i) for i in range(n_b)]
    cases.append(loss_case(
        "loss_best_variant_ties", f"best-variant targets (two values, ±tanh(0.5) = ±{m:.4f}: "
        "runs of ties for the rank pairs), collapse_weight 2, margin 0.2, temperature 0.25",
        CFG_B, T_B, WC_B, sb, [t if k else NAN for t, k in zip(tb.tolist(), mb, strict=True)],
        mb, LensLossWeights(collapse_weight=2.0, margin=0.2, temperature=0.25)))
    cases.append(loss_case(
        "loss_rank_only_misordered", "rank term alone on targets [2, 1, 1, 0, -1] with "
        "scores in reverse order", CFG_A, T_A, WC_A,
        [-0.5, 0.0, 0.1, 0.4, 0.9] + [0.0] * (n_a - 5),
        [2.0, 1.0, 1.0, 0.0, -1.0] + [NAN] * (n_a - 5), [True] * 5 + [False] * (n_a - 5),
        LensLossWeights(reg=0.0, pref=0.0, rank=1.0, budget=0.0, margin=0.1)))
    bal = [0.0] * n_a
    bal[4] = 0.6  # lone LOD1 gist: asks for 3 slots
    for i in range(5, 9):
        bal[i] = -0.6  # group 1 (LOD0): frees 3 slots shared by 4 members
    cases.append(loss_case(
        "loss_budget_balanced", "budget alone: one gist at +0.6 and one group of four at "
        "-0.6 balance exactly (P = Q = 1.8), budget ~0", CFG_A, T_A, WC_A, bal, [0.0] * n_a,
        [True] * n_a, LensLossWeights(reg=0.0, pref=0.0, rank=0.0, budget=1.0)))
    cases.append(loss_case(
        "loss_scaled_targets", "target_scale 2 and large utilities (regression pulls toward "
        "tanh(t/2)), temperature 2", CFG_A, T_A, WC_A, scores,
        [3.0 * t if k else NAN for t, k in zip(targets, mask, strict=True)], mask,
        LensLossWeights(target_scale=2.0, temperature=2.0, rank=0.0)))

    cases.append(weights_case("variant_weights_default", "baseline = the worst variant's loss",
                              [1.0, 2.0, 1.5, 2.0, 0.25], None))
    cases.append(weights_case("variant_weights_baseline", "an explicit baseline (e.g. the "
                              "recency WC's loss): variants worse than it weigh 1",
                              [1.0, 2.0, 1.5, 0.25], 1.75))
    return cases


def build_document() -> dict:
    doc = header("lens supervision: targets, the LensNet loss, variant weights",
                 "contract §6 (lens supervision); §3 (sibling groups, legality)", DEFINITIONS,
                 TOLERANCES, ERROR_KINDS)
    doc["cases"] = build_cases()
    return doc
