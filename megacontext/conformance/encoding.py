"""The one schema of golden/vectors/*.json (contract §17): tensors, numbers, the file writer.

    tensor   {"dtype": "float32", "shape": [2, 3], "data": [...]}   data flat, row-major;
             dtypes float64 float32 float16 bfloat16 int64 bool; a float is a JSON number or
             one of the strings "nan", "inf", "-inf" (JSON has no IEEE specials)
    number   a JSON number; an expected float is rounded to 12 significant digits
             (`expected`), so float summation order at the last bit never shows in the file

The writer (`dumps`) is a fixed formatter: keys in insertion order, one-space indentation,
every tensor and every list of scalars on one line, floats as Python's shortest round-trip
repr, a final newline. Same document, same bytes.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

SCHEMA_ID = "megacontext-vectors/1"
SIGNIFICANT = 12  # digits kept of an expected float
DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "bool")
SPECIALS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def special(x: float) -> float | str:
    """A finite float as itself; NaN and infinities as their strings."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def rounded(x: float) -> float | str:
    """An expected float to `SIGNIFICANT` digits (specials as strings; -0.0 as 0.0)."""
    if not math.isfinite(x):
        return special(x)
    return float(format(x, f".{SIGNIFICANT}g")) + 0.0


def tensor(x, dtype: str | None = None, *, expected: bool = False) -> dict:
    """Encode a torch tensor, numpy array or nested list as a schema tensor.

    `dtype` is the dtype a port builds the tensor in (default: x's own). Input tensors must be
    exactly representable in it (checked); `expected=True` rounds floats to 12 digits instead
    (expected outputs are float64 computations, compared within the file's tolerance).
    """
    if isinstance(x, torch.Tensor):
        dtype = dtype or str(x.dtype).removeprefix("torch.")
        arr = x.detach().cpu().to(torch.float64 if x.is_floating_point() else x.dtype).numpy()
    else:
        arr = np.asarray(x)
        if dtype is None:
            dtype = {"f": "float64", "i": "int64", "u": "int64", "b": "bool"}[arr.dtype.kind]
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {DTYPES}")
    shape = list(arr.shape)
    flat = arr.reshape(-1)
    if dtype == "bool":
        data = [bool(v) for v in flat.tolist()]
    elif dtype == "int64":
        data = [int(v) for v in flat.tolist()]
    else:
        vals = flat.astype(np.float64)
        if expected:
            data = [rounded(v) for v in vals.tolist()]
        else:
            exact = torch.from_numpy(vals).to(getattr(torch, dtype)).double().numpy()
            same = (exact == vals) | (np.isnan(exact) & np.isnan(vals))
            if not same.all():
                i = int(np.argmin(same))
                raise ValueError(f"input value {vals[i]!r} is not exact in {dtype}")
            data = [special(v + 0.0) for v in vals.tolist()]
    return {"dtype": dtype, "shape": shape, "data": data}


def decode(t: dict) -> np.ndarray:
    """A schema tensor as a numpy array: float64 for every float dtype, int64, bool."""
    data = t["data"]
    if t["dtype"] == "bool":
        arr = np.array(data, dtype=bool)
    elif t["dtype"] == "int64":
        arr = np.array(data, dtype=np.int64)
    else:
        arr = np.array([SPECIALS[v] if isinstance(v, str) else v for v in data], dtype=np.float64)
    return arr.reshape(t["shape"])


def is_tensor(x) -> bool:
    return isinstance(x, dict) and set(x) == {"dtype", "shape", "data"}


def _scalar_list(x) -> bool:
    return isinstance(x, list) and not any(isinstance(v, list | dict) for v in x)


def dumps(doc) -> str:
    """The fixed formatter: the bytes of a vector file."""
    return _dump(doc, 0) + "\n"


def _flat_dict(x) -> bool:
    return (isinstance(x, dict) and len(x) <= 4
            and not any(isinstance(v, list | dict) for v in x.values()))


def _dump(x, depth: int) -> str:
    if is_tensor(x) or _scalar_list(x) or _flat_dict(x):
        return json.dumps(x, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(x, dict):
        if not x:
            return "{}"
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_dump(v, depth + 1)}"
                 for k, v in x.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(x, list):
        return "[\n" + ",\n".join(inner + _dump(v, depth + 1) for v in x) + f"\n{pad}]"
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ValueError(f"a bare non-finite float {x} (use special())")
        return json.dumps(x + 0.0)
    return json.dumps(x, ensure_ascii=False)


def header(topic: str, contract: str, definitions: dict, tolerances: dict,
           error_kinds: dict | None = None) -> dict:
    """The common head of every vector file (the body adds "cases")."""
    doc = {
        "schema": SCHEMA_ID,
        "topic": topic,
        "contract": contract,
        "generated_by": "python -m megacontext.conformance --write",
        "encoding": ("tensors are {dtype, shape, data}: data flat in row-major order, floats "
                     "as JSON numbers or the strings \"nan\", \"inf\", \"-inf\"; build an input "
                     "tensor in its dtype (its values are exact there); expected floats are "
                     f"float64 results rounded to {SIGNIFICANT} significant digits; see "
                     "contract §17"),
        "definitions": definitions,
        "tolerances": tolerances,
        "error_kinds": error_kinds or {},
    }
    return doc


ERROR_KINDS = {
    "InputError": "a bad argument value (wrong shape or length, NaN/inf, out of range); a "
                  "ValueError in Python",
    "InputTypeError": "a bad argument type or dtype; a TypeError in Python",
    "ConfigError": "a configuration that cannot work; a ValueError in Python",
    "LevelError": "invariant 4 (level) broken: `index` is the first offending entry",
    "AlignmentError": "invariant 3 (alignment) broken: `index` is the first offending entry",
    "ContiguityError": "invariant 2 (contiguity) broken: `index` is the first entry that does "
                       "not start where its predecessor ends",
    "CoverageError": "invariant 5 (coverage) broken: `index` is the offending entry (null for "
                     "an empty WC over T > 0)",
    "TailError": "invariant 6 (tail) broken: `index` is the first gist reaching into the tail",
    "BudgetError": "invariant 1 (budget) broken: `index` is the first entry past the budget "
                   "(= budget)",
}


def error_json(err: Exception, argument: str) -> dict:
    """{kind, argument[, index]} of an error the reference raised: the kind is the first class
    in its hierarchy that ERROR_KINDS names; invariant errors carry the offending index."""
    kind = next(c.__name__ for c in type(err).__mro__ if c.__name__ in ERROR_KINDS)
    out = {"kind": kind, "argument": argument}
    if hasattr(err, "index") and kind not in ("InputError", "InputTypeError", "ConfigError"):
        out["index"] = err.index
    return out
