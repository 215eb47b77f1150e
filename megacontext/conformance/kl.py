"""KL vectors (contract §7): golden/vectors/kl.json.

Values come from a float64 numpy computation written from the definitions below, independent
of megacontext's KL code; barrier gradients from float64 torch autograd through the same
definitions. Error cases are what the reference raises.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import MegaContextError
from ..supervision.kl import kl_barrier
from .encoding import ERROR_KINDS, header, tensor

HOWS = ("mean", "rmse", "p95", "max")

DEFINITIONS = {
    "function": "a case checks kl_per_position(logp_p, logp_q), aggregate_kl(kl, how, mask) "
                "and kl_barrier(logp_student, logp_ref, mask, direction, how, tau, weight) in "
                "both directions; build each input tensor in its dtype (values are exact "
                "there); '-inf' marks probability 0",
    "renormalization": "each input is first renormalized over the vocabulary (last axis) in "
                       "float32: lp = log_softmax(logp)",
    "kl_per_position": "KL(p||q) = sum over the vocabulary of exp(lp) * (lp - lq), a term being "
                       "0 where exp(lp) = 0; result float32, shape = the input shape without "
                       "its last axis",
    "fwd": "KL(ref || student): kl_per_position(logp_ref, logp_student)",
    "rev": "KL(student || ref): kl_per_position(logp_student, logp_ref)",
    "selection": "aggregates run over the positions where mask is true, flattened across all "
                 "leading dimensions (batch and positions alike)",
    "mean": "sum / n",
    "rmse": "sqrt(sum of squares / n), no epsilon; its gradient at 0 is 0",
    "p95": "sort the n values ascending as v[0..n-1]; lo = (19*(n-1)) div 20, f = ((19*(n-1)) "
           "mod 20) / 20; p95 = v[lo] + f*(v[lo+1] - v[lo]) (v[lo] when f = 0)",
    "max": "largest value",
    "empty": "no selected position: every aggregate is exactly 0, with zero gradient",
    "barrier": "weight * max(aggregate - tau, 0), float32; its gradient is 0 where aggregate "
               "<= tau",
    "barrier_grad": "d barrier / d logp_student and d barrier / d logp_ref (through the "
                    "renormalization), given only for aggregators whose selected KLs are "
                    "separated by > 1e-4 (p95 and max are not differentiable at ties), and not for "
                    "KLs below float32 resolution (tiny_kl); zero at "
                    "'-inf' inputs and at unselected positions",
    "errors": "non-float inputs -> InputTypeError; shapes that differ, NaN or +inf inputs, a "
              "position whose inputs are all -inf, an unknown how or direction, a mask that "
              "does not fit, tau or weight negative or not finite, an infinite KL at a "
              "selected position -> InputError; `argument` names the argument at fault",
}

TOLERANCES = {
    "values": {"rtol": 1e-5, "atol": 1e-6,
               "meaning": "|got - expected| <= atol + rtol*|expected|, got computed in float32"},
    "grad_float32": {"rtol": 1e-4, "atol": 1e-5, "meaning": "gradients of float32 inputs"},
    "grad_bfloat16": {"rtol": 1e-2, "atol": 1e-5, "meaning": "gradients of bfloat16 inputs "
                      "(the gradient's dtype is the input's)"},
    "grad_float16": {"rtol": 2e-3, "atol": 1e-5, "meaning": "gradients of float16 inputs"},
}


# --- float64 definitions ---------------------------------------------------------------------


def log_softmax64(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1, keepdims=True)
    return x - (top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True)))


def kl64(logp_p: np.ndarray, logp_q: np.ndarray) -> np.ndarray:
    lp, lq = log_softmax64(logp_p), log_softmax64(logp_q)
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (lp - lq), 0.0)
    return terms.sum(axis=-1)


def agg64(v: np.ndarray, how: str) -> float:
    if v.size == 0:
        return 0.0
    return float({"mean": v.mean, "max": v.max, "rmse": lambda: np.sqrt((v**2).mean()),
                  "p95": lambda: np.quantile(v, 0.95, method="linear")}[how]())


def barrier_grads(student, ref, mask, direction, how, tau, weight):
    """(d/d student, d/d ref) of the barrier, float64 autograd through the definitions."""
    s = torch.from_numpy(student).requires_grad_(True)
    r = torch.from_numpy(ref).requires_grad_(True)

    def lsm(x):
        return torch.log_softmax(x, dim=-1)

    ls, lr = lsm(s), lsm(r)
    lp, lq = (lr, ls) if direction == "fwd" else (ls, lr)
    pos = torch.isfinite(lp)
    lp0, lq0 = torch.where(pos, lp, 0.0), torch.where(pos, lq, 0.0)
    kl = torch.where(pos, lp0.exp() * (lp0 - lq0), 0.0).sum(-1)[torch.from_numpy(mask)]
    if kl.numel() == 0:
        agg = (s.sum() + r.sum()) * 0.0
    elif how == "rmse":
        agg = torch.linalg.vector_norm(kl) / float(np.sqrt(kl.numel()))
    else:
        agg = {"mean": kl.mean, "max": kl.amax,
               "p95": lambda: torch.quantile(kl, 0.95)}[how]()
    out = weight * torch.relu(agg - tau)
    gs, gr = torch.autograd.grad(out, (s, r), allow_unused=True)
    return torch.nan_to_num(gs, nan=0.0), torch.nan_to_num(gr, nan=0.0)


# --- cases -----------------------------------------------------------------------------------


def rounded_to(x: np.ndarray, dtype: str) -> np.ndarray:
    return torch.from_numpy(np.asarray(x, dtype=np.float64)).to(getattr(torch, dtype)).double() \
        .numpy()


def case(name, description, student, ref, mask, tau, weight, dtype="float32", grads=True):
    student, ref = rounded_to(student, dtype), rounded_to(ref, dtype)
    mask = np.asarray(mask, dtype=bool)
    expected = {}
    for direction, (p, q) in {"fwd": (ref, student), "rev": (student, ref)}.items():
        kl = kl64(p, q)
        sel = kl[mask]
        agg = {how: agg64(sel, how) for how in HOWS}
        gaps = np.diff(np.sort(sel))
        ok = [how for how in HOWS if grads and (
              how in ("mean", "rmse") or sel.size <= 1 or bool((gaps > 1e-4).all())
              or np.ptp(sel) == 0)]
        grad_out = {}
        for how in ok:
            gs, gr = barrier_grads(student, ref, mask, direction, how, tau, weight)
            grad_out[how] = {"logp_student": tensor(gs, expected=True),
                          "logp_ref": tensor(gr, expected=True)}
        expected[direction] = {
            "kl_per_position": tensor(kl, expected=True),
            "aggregate": {how: float(tensor([a], expected=True)["data"][0])
                          for how, a in agg.items()},
            "barrier": {how: float(tensor([weight * max(a - tau, 0.0)], expected=True)
                                   ["data"][0]) for how, a in agg.items()},
            "barrier_grad": grad_out,
        }
    return {"name": name, "description": description, "function": "kl",
            "tolerance": {"default": "values", "barrier_grad": f"grad_{dtype}"},
            "inputs": {"logp_student": tensor(student, dtype), "logp_ref": tensor(ref, dtype),
                       "mask": tensor(mask), "tau": tau, "weight": weight},
            "expected": expected}


def error_case(name, description, student, ref, mask, direction, how, tau, weight, argument):
    s = torch.tensor(student)
    r = torch.tensor(ref)
    m = torch.tensor(mask)
    try:
        kl_barrier(s, r, m, direction, how, tau, weight)
    except MegaContextError as err:
        kind = next(c.__name__ for c in type(err).__mro__ if c.__name__ in ERROR_KINDS)
    else:
        raise AssertionError(f"{name}: no error raised")
    return {"name": name, "description": description, "function": "kl_barrier",
            "tolerance": "values",
            "inputs": {"logp_student": tensor(s), "logp_ref": tensor(r), "mask": tensor(m),
                       "direction": direction, "how": how, "tau": tau, "weight": weight},
            "error": {"kind": kind, "argument": argument}}


def log_probs(rng, shape, scale):
    return log_softmax64(scale * rng.standard_normal(shape))


def build_cases() -> list:
    rng = np.random.default_rng(2025)
    cases = [case(
        "asymmetric_small", "hand-picked distributions: fwd and rev differ clearly",
        np.log([[[0.90, 0.05, 0.05], [0.50, 0.49, 0.01], [0.2, 0.3, 0.5]]]),
        np.log([[[0.34, 0.33, 0.33], [0.10, 0.10, 0.80], [0.2, 0.3, 0.5]]]),
        [[True, True, True]], tau=0.1, weight=2.0)]
    s, r = log_probs(rng, (2, 4, 5), 2.0), log_probs(rng, (2, 4, 5), 2.0)
    cases.append(case(
        "batch_with_padding_mask", "5 of 8 positions selected across a batch of 2 (flattened); "
        "p95 interpolates at h = 0.95*4 = 3.8",
        s, r, [[True, True, True, False], [True, True, False, False]], tau=0.3, weight=1.5))
    ref = log_probs(rng, (1, 21, 6), 1.0)
    student = log_softmax64(ref + 0.05 * rng.standard_normal((1, 21, 6)))
    student[0, 10] = log_softmax64(np.where(np.arange(6) == np.argmin(ref[0, 10]), 0.0, -12.0))
    cases.append(case(
        "coherent_with_one_loop_position", "20 coherent positions and one where the student "
        "loops on a token the reference finds improbable; 21 positions so p95 = sorted[19]",
        student, ref, [[True] * 21], tau=1.0, weight=1.0))
    same = log_probs(rng, (1, 3, 4), 1.0)
    cases.append(case("identical", "KL = 0 everywhere: every aggregate, barrier and gradient "
                      "is 0 (rmse has no epsilon and no NaN gradient at 0)",
                      same, same.copy(), [[True, True, True]], tau=0.0, weight=1.0))
    cases.append(case("all_masked", "no position selected: every aggregate is exactly 0",
                      log_probs(rng, (1, 3, 4), 1.0), log_probs(rng, (1, 3, 4), 1.0),
                      [[False, False, False]], tau=0.0, weight=1.0))
    s, r = log_probs(rng, (1, 2, 4), 1.0), log_probs(rng, (1, 2, 4), 1.0)
    s[..., 3], r[..., 3] = -np.inf, -np.inf
    s, r = log_softmax64(s), log_softmax64(r)
    cases.append(case("shared_zero_probability_token", "token 3 has probability 0 ('-inf') in "
                      "both: it contributes 0", s, r, [[True, True]], tau=0.05, weight=1.0))
    for dtype in ("bfloat16", "float16"):
        s, r = log_probs(rng, (1, 4, 5), 1.5), log_probs(rng, (1, 4, 5), 1.5)
        cases.append(case(
            f"{dtype}_inputs", f"inputs rounded to {dtype}: their probabilities no longer sum to "
            "1 and are renormalized (log_softmax) in float32", s, r,
            [[True, True, False, True]], tau=0.2, weight=1.0, dtype=dtype))
    cases.append(case(
        "unnormalized_logits", "raw logits: the KL is that of the distributions they define",
        3.0 * rng.standard_normal((1, 3, 4)) + 5.0, 3.0 * rng.standard_normal((1, 3, 4)) - 2.0,
        [[True, True, True]], tau=0.5, weight=1.0))
    # edge magnitudes
    cases.append(case(
        "huge_logits", "logits of magnitude ~3e4: near one-hot distributions, KLs in the "
        "thousands (float32 log_softmax must not overflow)",
        3e4 * rng.standard_normal((1, 3, 5)), 3e4 * rng.standard_normal((1, 3, 5)),
        [[True, True, True]], tau=10.0, weight=0.5))
    base = log_probs(rng, (1, 4, 6), 1.0)
    tiny = base.copy()
    tiny[..., 0] += 2.0**-12 * np.array([1.0, 2.0, 3.0, 4.0])
    cases.append(case(
        "tiny_kl", "inputs differing by 2**-12 .. 2**-10 in one logit: KLs ~1e-8 .. 1e-6 "
        "(rmse squares them to ~1e-16 .. 1e-12: no epsilon may swamp them)", tiny, base,
        [[True, True, True, True]], tau=0.0, weight=1.0, grads=False))
    wide = log_softmax64(np.array([[[0.0, -60.0, -80.0, -100.0], [0.0, 0.0, -90.0, -90.0]]]))
    wide2 = log_softmax64(np.array([[[0.0, -50.0, -100.0, -80.0], [0.0, -1.0, -70.0, -95.0]]]))
    cases.append(case(
        "probabilities_near_underflow", "log-probabilities down to -100 (p ~ 4e-44, subnormal "
        "in float32): their terms vanish without NaN", wide, wide2, [[True, True]], tau=0.0,
        weight=1.0))
    one = log_probs(rng, (1, 1, 3), 1.0)
    cases.append(case("one_position", "n = 1: p95 = max = mean = rmse = the KL",
                      one, log_probs(rng, (1, 1, 3), 1.0), [[True]], tau=0.0, weight=3.0))
    # errors
    p = [[[-1.0, -0.5], [-0.2, -2.0]]]
    m = [[True, True]]
    cases += [
        error_case("error_nan_input", "a NaN in logp_ref", p, [[[-1.0, float("nan")],
                   [-0.2, -2.0]]], m, "fwd", "mean", 0.0, 1.0, "logp_ref"),
        error_case("error_shape_mismatch", "vocabularies of 2 and 3",
                   p, [[[-1.0, -0.5, -1.0], [-0.2, -2.0, -1.0]]], m, "fwd", "mean", 0.0, 1.0,
                   "logp_ref"),
        error_case("error_unknown_direction", "direction 'forward'", p, p, m, "forward",
                   "mean", 0.0, 1.0, "direction"),
        error_case("error_unknown_how", "how 'median'", p, p, m, "fwd", "median", 0.0, 1.0,
                   "how"),
        error_case("error_negative_tau", "tau -0.5", p, p, m, "fwd", "mean", -0.5, 1.0, "tau"),
        error_case("error_negative_weight", "weight -1", p, p, m, "fwd", "mean", 0.0, -1.0,
                   "weight"),
        error_case("error_mask_shape", "a mask of 3 positions for 2", p, p, [[True] * 3],
                   "fwd", "mean", 0.0, 1.0, "mask"),
        error_case("error_infinite_kl", "fwd: the student gives probability 0 where the "
                   "reference does not", [[[0.0, float("-inf")]]], [[[-0.5, -0.9]]], [[True]],
                   "fwd", "max", 0.0, 1.0, "logp_student"),
    ]
    return cases


def build_document() -> dict:
    doc = header("KL substitutability and the KL barrier", "contract §7", DEFINITIONS,
                 TOLERANCES, ERROR_KINDS)
    doc["cases"] = build_cases()
    return doc
