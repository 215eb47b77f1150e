"""KL conformance vectors (contract §7, §17): the implementation under test reproduces
golden/vectors/kl.json — per-position KL, every aggregator and the barrier in both directions,
the barrier's gradient with respect to both inputs, edge magnitudes (huge logits, tiny KLs,
probabilities near underflow), fp32/bf16/fp16 inputs, and each error kind naming its
argument — within the file's own tolerances."""

import pytest
import torch

from spec.implementation import mc
from spec.vectors import as_tensor, assert_close, cases, load, raises, tolerance

FILE = "kl.json"
DOC = load(FILE)
HOWS = ("mean", "rmse", "p95", "max")


def test_vectors_cover_every_aggregator_direction_dtype_and_gradient():
    """The file exercises fwd and rev, all four aggregators with gradients, an empty mask, a
    shared zero-probability token, huge and tiny magnitudes, fp32/bf16/fp16 inputs and errors."""
    ok = [c for c in DOC["cases"] if "expected" in c]
    assert {c["inputs"]["logp_student"]["dtype"] for c in ok} >= {"float32", "bfloat16",
                                                                   "float16"}
    assert any(not any(c["inputs"]["mask"]["data"]) for c in ok), "no empty-mask case"
    for c in ok:
        assert set(c["expected"]) == {"fwd", "rev"}, c["name"]
        for d in ("fwd", "rev"):
            assert set(c["expected"][d]["aggregate"]) == set(HOWS), c["name"]
    graded = {how for c in ok for d in ("fwd", "rev") for how in c["expected"][d]["barrier_grad"]}
    assert graded == set(HOWS), graded
    assert sum("error" in c for c in DOC["cases"]) >= 6


@pytest.mark.parametrize("direction", ["fwd", "rev"])
@pytest.mark.parametrize("case", cases(FILE, "kl"))
def test_kl_vector(case, direction):
    """kl_per_position, aggregate_kl, kl_barrier and the barrier's gradients match the case
    within its tolerances (float32 results) (§7)."""
    inp, want = case["inputs"], case["expected"][direction]
    name = f"{case['name']} {direction}"
    student, ref = as_tensor(inp["logp_student"]), as_tensor(inp["logp_ref"])
    mask = as_tensor(inp["mask"])
    p, q = (ref, student) if direction == "fwd" else (student, ref)
    kl = mc.kl_per_position(p, q)
    assert kl.dtype == torch.float32, f"{name}: kl dtype {kl.dtype}"
    tol = tolerance(DOC, case, "values")
    assert_close(kl, want["kl_per_position"], tol, f"{name} kl_per_position")
    for how in HOWS:
        assert_close(mc.aggregate_kl(kl, how, mask), want["aggregate"][how], tol,
                     f"{name} aggregate_kl {how}")
        s = student.clone().requires_grad_(True)
        r = ref.clone().requires_grad_(True)
        out = mc.kl_barrier(s, r, mask, direction, how, inp["tau"], inp["weight"])
        assert_close(out, want["barrier"][how], tol, f"{name} kl_barrier {how}")
        if how in want["barrier_grad"]:
            out.backward()
            gtol = tolerance(DOC, case, "barrier_grad")
            for arg, t in (("logp_student", s), ("logp_ref", r)):
                grad = t.grad if t.grad is not None else t.detach() * 0
                assert_close(grad, want["barrier_grad"][how][arg], gtol,
                             f"{name} d kl_barrier({how}) / d {arg}")




@pytest.mark.parametrize("case", cases(FILE, "kl_barrier"))
def test_kl_error_vector(case):
    """Bad input raises the stored error kind, naming the argument (§4, §7)."""
    inp = case["inputs"]
    raises(case["error"], lambda: mc.kl_barrier(
        as_tensor(inp["logp_student"]), as_tensor(inp["logp_ref"]), as_tensor(inp["mask"]),
        inp["direction"], inp["how"], inp["tau"], inp["weight"]))
