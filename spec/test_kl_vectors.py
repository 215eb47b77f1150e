"""Language-neutral golden vectors for KL and the barrier (contract §7): golden/vectors/kl.json
holds inputs, float64 expected outputs for each direction and aggregator, and the tolerance;
the implementation under test must reproduce them. The file documents its own definitions so a
port (JAX, C++, Rust) can check itself against it without Python."""

import json
from pathlib import Path

import pytest
import torch

from spec.implementation import mc

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "golden" / "vectors" / "kl.json").read_text()
)
TOL = VECTORS["tolerance"]
CASES = {c["name"]: c for c in VECTORS["cases"]}


def decode(values, dtype: str) -> torch.Tensor:
    """A nested list ('-inf' strings = -inf) as a tensor of the case's dtype (values are exact)."""
    def floats(x):
        return [floats(v) for v in x] if isinstance(x, list) else float(x)

    return torch.tensor(floats(values), dtype=torch.float64).to(getattr(torch, dtype))


def check(got: torch.Tensor, want, what: str) -> None:
    want = torch.tensor(want, dtype=torch.float64)
    assert got.dtype == torch.float32, f"{what}: result dtype {got.dtype}, want float32"
    torch.testing.assert_close(got.double(), want, rtol=TOL["rtol"], atol=TOL["atol"],
                               msg=lambda m: f"{what}: {m}\ngot {got.tolist()}\nwant "
                                             f"{want.tolist()}")


def test_vectors_cover_every_aggregator_direction_and_dtype():
    """The golden file exercises fwd and rev, all four aggregators, an empty mask, a shared
    zero-probability token, and fp32, bf16 and fp16 inputs (§7)."""
    dtypes = {c["dtype"] for c in CASES.values()}
    assert {"float32", "bfloat16", "float16"} <= dtypes, dtypes
    assert any(not any(sum(c["mask"], [])) for c in CASES.values()), "no empty-mask case"
    for c in CASES.values():
        assert set(c["expected"]) == {"fwd", "rev"}, c["name"]
        for d in ("fwd", "rev"):
            assert set(c["expected"][d]["aggregate"]) == {"mean", "rmse", "p95", "max"}, c["name"]


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("direction", ["fwd", "rev"])
def test_golden_vectors(name, direction):
    """kl_per_position, aggregate_kl and kl_barrier reproduce golden/vectors/kl.json within its
    tolerance, for every case, direction and aggregator (§7)."""
    case = CASES[name]
    student = decode(case["logp_student"], case["dtype"])
    ref = decode(case["logp_ref"], case["dtype"])
    mask = torch.tensor(case["mask"], dtype=torch.bool)
    expected = case["expected"][direction]
    p, q = (ref, student) if direction == "fwd" else (student, ref)
    kl = mc.kl_per_position(p, q)
    check(kl, expected["kl_per_position"], f"{name} {direction} kl_per_position")
    for how, want in expected["aggregate"].items():
        check(mc.aggregate_kl(kl, how, mask), want, f"{name} {direction} aggregate_kl {how}")
        got = mc.kl_barrier(student, ref, mask, direction, how, case["tau"], case["weight"])
        check(got, expected["barrier"][how],
              f"{name} {direction} kl_barrier {how} tau={case['tau']} weight={case['weight']}")
