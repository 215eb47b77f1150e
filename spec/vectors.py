"""Reading golden/vectors/*.json (contract §17) for the spec suite: tensors, tolerances, errors.

Only the public API of the implementation under test is used (`mc`): the error kinds of a
file are looked up by name on it, and a working context is built with `mc.WorkingContext`.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import pytest
import torch

from spec.implementation import mc

VECTOR_DIR = Path(__file__).resolve().parents[1] / "golden" / "vectors"
SPECIALS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
INVARIANT_KINDS = ("LevelError", "AlignmentError", "ContiguityError", "CoverageError",
                   "TailError", "BudgetError")


@cache
def load(name: str) -> dict:
    return json.loads((VECTOR_DIR / name).read_text())


def cases(name: str, function: str | None = None):
    """pytest params of a file's cases (optionally of one function), with the case names as
    ids."""
    doc = load(name)
    chosen = [c for c in doc["cases"] if function is None or c["function"] == function]
    return [pytest.param(c, id=c["name"]) for c in chosen]


def as_tensor(t: dict, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A schema tensor as a torch tensor of its own dtype (or `dtype`)."""
    kind = t["dtype"]
    if kind == "bool":
        out = torch.tensor(t["data"], dtype=torch.bool)
    elif kind == "int64":
        out = torch.tensor(t["data"], dtype=torch.int64)
    else:
        vals = [SPECIALS[v] if isinstance(v, str) else v for v in t["data"]]
        out = torch.tensor(vals, dtype=torch.float64).to(getattr(torch, kind))
    out = out.reshape(t["shape"])
    return out if dtype is None else out.to(dtype)


def wc_of(d: dict):
    return mc.WorkingContext(as_tensor(d["lods"]), as_tensor(d["starts"]),
                             as_tensor(d["residency"]))


def tolerance(doc: dict, case: dict, output: str) -> dict:
    name = case["tolerance"]
    if isinstance(name, dict):
        name = name.get(output, name["default"])
    return doc["tolerances"][name]


def assert_close(got, expected, tol: dict, what: str) -> None:
    """|got - expected| <= atol + rtol*|expected| elementwise (NaN matches NaN); a scalar
    expected value is a JSON number or special string."""
    if isinstance(expected, dict):
        want = as_tensor(expected, torch.float64)
    else:
        want = torch.tensor(SPECIALS.get(expected, expected) if isinstance(expected, str)
                            else expected, dtype=torch.float64)
    got = torch.as_tensor(got).detach().to(torch.float64)
    assert tuple(got.shape) == tuple(want.shape), (
        f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    ok = torch.isclose(got, want, rtol=tol["rtol"], atol=tol["atol"], equal_nan=True)
    if not bool(ok.all()):
        bad = (~ok).flatten().nonzero()[0].item()
        raise AssertionError(
            f"{what}: element {bad} is {got.flatten()[bad].item()!r}, expected "
            f"{want.flatten()[bad].item()!r} (rtol {tol['rtol']}, atol {tol['atol']}); "
            f"{int((~ok).sum())} of {ok.numel()} elements differ")


def assert_equal(got, expected, what: str) -> None:
    """Exact equality: tensors by value and dtype kind, anything else by ==."""
    if isinstance(expected, dict) and "dtype" in expected:
        want = as_tensor(expected)
        got = torch.as_tensor(got)
        assert tuple(got.shape) == tuple(want.shape), (
            f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        same_kind = (got.dtype == torch.bool) == (want.dtype == torch.bool)
        assert same_kind and bool((got.to(torch.float64) == want.to(torch.float64)).all()), (
            f"{what}: got {got.tolist()}, expected {want.tolist()}")
    else:
        assert got == expected, f"{what}: got {got!r}, expected {expected!r}"


def raises(error: dict, call) -> None:
    """`call()` raises the file's error kind (looked up on mc), naming the argument: the
    argument's name appears in the message of an InputError / InputTypeError / ConfigError, and an
    invariant error carries the stated `index`."""
    kind = getattr(mc, error["kind"])
    with pytest.raises(kind) as info:
        call()
    if error["kind"] in INVARIANT_KINDS:
        assert info.value.index == error.get("index"), (
            f"{error['kind']} index {info.value.index}, expected {error.get('index')}: "
            f"{info.value}")
    elif error["kind"] in ("InputError", "InputTypeError", "ConfigError"):
        assert error["argument"] in str(info.value), (
            f"the message {str(info.value)!r} does not name the argument {error['argument']!r}")
