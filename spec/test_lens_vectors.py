"""Lens supervision conformance vectors (contract §6, §17): the implementation under test
reproduces golden/vectors/lens_supervision.json — targets and masks from utilities and from
the best variant, every loss term and its gradient, variant weights, and the error kind with
its argument — within the file's tolerance, from float32 inputs."""

import pytest
import torch

from spec.implementation import mc
from spec.vectors import (
    as_tensor,
    assert_close,
    assert_equal,
    cases,
    load,
    raises,
    tolerance,
    wc_of,
)

FILE = "lens_supervision.json"
DOC = load(FILE)


def run(case):
    inp, fn = case["inputs"], case["function"]
    if fn == "variant_weights":
        return {"weights": mc.variant_weights(as_tensor(inp["losses"]), inp["baseline_loss"])}
    cfg = mc.MCConfig(**inp["cfg"])
    wc = wc_of(inp["wc"])
    if fn == "lens_targets_from_utilities":
        t, m = mc.lens_targets_from_utilities(wc, as_tensor(inp["expand_gain"]),
                                              as_tensor(inp["collapse_loss"]), inp["T"], cfg,
                                              inp["price"])
        return {"targets": t, "mask": m}
    if fn == "lens_targets_from_best":
        t, m = mc.lens_targets_from_best(wc, wc_of(inp["best_wc"]), inp["delta_loss"],
                                         inp["T"], cfg)
        return {"targets": t, "mask": m}
    if fn == "lens_loss":
        scores = as_tensor(inp["scores"]).requires_grad_(True)
        res = mc.lens_loss(scores, as_tensor(inp["targets"]), as_tensor(inp["mask"]), wc, cfg,
                           mc.LensLossWeights(**inp["weights"]))
        res.total.backward()
        return {**res._asdict(), "grad_total": scores.grad}
    raise AssertionError(f"unknown function {fn!r} in {FILE}")


def test_vector_file_covers_every_supervision_function():
    """Every supervision function has cases (a dozen or more in all), each term of the loss is
    defined in the file, and an error case names its argument."""
    functions = {c["function"] for c in DOC["cases"]}
    assert functions == {"lens_targets_from_utilities", "lens_targets_from_best", "lens_loss",
                         "variant_weights"}, functions
    assert len(DOC["cases"]) >= 12
    text = " ".join(DOC["definitions"]["lens_loss"])
    for term in ("reg =", "pref =", "rank:", "budget:", "total ="):
        assert term in text, f"lens_loss definition lacks {term!r}"
    assert any("error" in c for c in DOC["cases"])


@pytest.mark.parametrize("case", cases(FILE))
def test_lens_supervision_vector(case):
    """Each case's outputs match within tolerance (masks exactly), or the call raises the
    stored error kind naming the argument (§6)."""
    if "error" in case:
        raises(case["error"], lambda: run(case))
        return
    got = run(case)
    assert set(got) >= set(case["expected"]), sorted(got)
    for key, want in case["expected"].items():
        what = f"{case['name']} {key}"
        if isinstance(want, dict) and want["dtype"] == "bool":
            assert_equal(got[key], want, what)
        else:
            assert_close(got[key], want, tolerance(DOC, case, key), what)
            assert not isinstance(got[key], torch.Tensor) or got[key].is_floating_point()
