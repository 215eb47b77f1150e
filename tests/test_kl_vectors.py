"""The generator of golden/vectors/kl.json, and a check that the committed file is what it makes.

Expected values come from a float64 numpy computation written from the definitions (contract §7),
independent of megacontext; spec/test_kl_vectors.py checks the implementation against the file.
Regenerate on purpose only, and review the diff:

    MEGACONTEXT_WRITE_VECTORS=1 .venv/bin/pytest -q tests/test_kl_vectors.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from spec.golden import render_json

PATH = Path(__file__).resolve().parents[1] / "golden" / "vectors" / "kl.json"
HOWS = ("mean", "rmse", "p95", "max")
NEG_INF = "-inf"  # JSON has no infinities: this string stands for -inf in log-prob inputs


# --- float64 reference ---------------------------------------------------------------------


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


# --- cases ---------------------------------------------------------------------------------


def rounded(x: np.ndarray, dtype: str) -> np.ndarray:
    """x rounded to `dtype` (inputs must be exactly representable there), back as float64."""
    return torch.from_numpy(x).to(getattr(torch, dtype)).double().numpy()


def case(name, note, student, ref, mask, tau, weight, dtype="float32"):
    student = rounded(np.asarray(student, float), dtype)
    ref = rounded(np.asarray(ref, float), dtype)
    mask = np.asarray(mask, bool)
    expected = {}
    for direction, (p, q) in {"fwd": (ref, student), "rev": (student, ref)}.items():
        kl = kl64(p, q)
        agg = {how: agg64(kl[mask], how) for how in HOWS}
        expected[direction] = {
            "kl_per_position": kl.tolist(),
            "aggregate": agg,
            "barrier": {how: weight * max(a - tau, 0.0) for how, a in agg.items()},
        }

    def encode(x):
        return np.where(np.isneginf(x), NEG_INF, x.astype(object)).tolist()

    return dict(name=name, note=note, dtype=dtype, shape=list(student.shape),
                logp_student=encode(student), logp_ref=encode(ref), mask=mask.tolist(),
                tau=tau, weight=weight, expected=expected)


def log_probs(rng, shape, scale):
    return log_softmax64(scale * rng.standard_normal(shape))


def build_vectors() -> dict:
    rng = np.random.default_rng(2025)
    cases = []
    cases.append(case(
        "asymmetric_small", "hand-picked distributions: fwd and rev differ clearly",
        np.log([[[0.90, 0.05, 0.05], [0.50, 0.49, 0.01], [0.2, 0.3, 0.5]]]),
        np.log([[[0.34, 0.33, 0.33], [0.10, 0.10, 0.80], [0.2, 0.3, 0.5]]]),
        [[True, True, True]], tau=0.1, weight=2.0))
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
    cases.append(case("identical", "KL = 0 everywhere: every aggregate and barrier is 0",
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
            "1 and are renormalized (log_softmax) in float32", rounded(s, dtype),
            rounded(r, dtype), [[True, True, False, True]], tau=0.2, weight=1.0, dtype=dtype))
    cases.append(case(
        "unnormalized_logits", "raw logits: the KL is that of the distributions they define",
        3.0 * rng.standard_normal((1, 3, 4)) + 5.0, 3.0 * rng.standard_normal((1, 3, 4)) - 2.0,
        [[True, True, True]], tau=0.5, weight=1.0))
    return {
        "topic": "KL substitutability and barrier (megacontext contract §7)",
        "generated_by": "tests/test_kl_vectors.py (float64 numpy, from the definitions below)",
        "encoding": "tensors are nested lists in row-major order with the given shape [..., V]; "
                    "the string '-inf' stands for negative infinity (probability 0); mask has "
                    "the positions shape (shape without V); build each input tensor in `dtype` "
                    "(every value is exactly representable there)",
        "definitions": {
            "renormalization": "each input is first renormalized over the vocabulary in "
                               "float32: lp = log_softmax(logp)",
            "kl_per_position": "KL(p||q) = sum over vocabulary of exp(lp) * (lp - lq), a term "
                               "being 0 where exp(lp) = 0; result float32",
            "fwd": "KL(ref || student): kl_per_position(logp_ref, logp_student)",
            "rev": "KL(student || ref): kl_per_position(logp_student, logp_ref)",
            "selection": "aggregates run over the positions where mask is true, flattened "
                         "across all leading dimensions (batch and positions alike)",
            "mean": "sum / n",
            "rmse": "sqrt(sum of squares / n), no epsilon",
            "p95": "sort the n values ascending as v[0..n-1]; lo = (19*(n-1)) div 20, "
                   "f = ((19*(n-1)) mod 20) / 20; p95 = v[lo] + f*(v[lo+1] - v[lo]) "
                   "(v[lo] when f = 0): linear interpolation at h = 0.95*(n-1), "
                   "as numpy.quantile / torch.quantile by default",
            "max": "largest value",
            "empty": "no selected position: every aggregate is exactly 0",
            "barrier": "weight * max(aggregate - tau, 0)",
        },
        "tolerance": {"rtol": 1e-5, "atol": 1e-6,
                      "meaning": "|got - expected| <= atol + rtol*|expected|, expected in "
                                 "float64, got computed in float32"},
        "cases": cases,
    }




def test_golden_kl_vectors_match_the_float64_generator():
    """golden/vectors/kl.json holds exactly what the independent float64 generator produces
    (set MEGACONTEXT_WRITE_VECTORS=1 to rewrite it, then review the diff)."""
    text = render_json(build_vectors())
    if os.environ.get("MEGACONTEXT_WRITE_VECTORS") == "1":
        PATH.parent.mkdir(parents=True, exist_ok=True)
        PATH.write_text(text)
    assert PATH.exists(), f"{PATH} is missing; generate it with MEGACONTEXT_WRITE_VECTORS=1"
    committed = json.loads(PATH.read_text())
    mismatch = first_mismatch(committed, json.loads(text))
    assert mismatch is None, f"{PATH} differs from the generator's output at {mismatch}"


def first_mismatch(a, b, at: str = "") -> str | None:
    """Where two JSON trees differ (floats within 1e-12 relative: libm may differ by an ulp)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{at}: keys {sorted(a)} vs {sorted(b)}"
        return next((m for k in a if (m := first_mismatch(a[k], b[k], f"{at}.{k}"))), None)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{at}: length {len(a)} vs {len(b)}"
        return next((m for i, (x, y) in enumerate(zip(a, b, strict=True))
                     if (m := first_mismatch(x, y, f"{at}[{i}]"))), None)
    if isinstance(a, float) and isinstance(b, float) and not isinstance(a, bool):
        return None if abs(a - b) <= 1e-12 * max(abs(a), abs(b), 1e-300) else f"{at}: {a} vs {b}"
    return None if a == b else f"{at}: {a!r} vs {b!r}"
