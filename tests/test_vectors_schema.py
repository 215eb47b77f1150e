"""The vector files themselves (contract §17): every file under golden/vectors/ follows the one
schema (golden/vectors/schema.json, JSON Schema draft 2020-12, plus what JSON Schema cannot
say), and regenerating it with `python -m megacontext.conformance --write` changes no byte."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import jsonschema
import pytest

from megacontext.conformance.__main__ import main as generate_main
from megacontext.conformance.encoding import dumps
from megacontext.conformance.generate import GENERATORS

VECTOR_DIR = Path(__file__).resolve().parents[1] / "golden" / "vectors"
SCHEMA = json.loads((VECTOR_DIR / "schema.json").read_text())
FILES = sorted(p.name for p in VECTOR_DIR.glob("*.json") if p.name != "schema.json")
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def schema_errors(doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:160]}"
            for e in VALIDATOR.iter_errors(doc)]


def tensors(x, path=""):
    """Every (path, tensor) inside a JSON value."""
    if isinstance(x, dict):
        if "dtype" in x:
            yield path, x
            return
        for k, v in x.items():
            yield from tensors(v, f"{path}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from tensors(v, f"{path}/{i}")


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_every_vector_file_has_a_generator():
    """The files on disk are exactly the generator's files: none is stale or hand-made."""
    assert FILES == sorted(GENERATORS), f"{FILES} vs {sorted(GENERATORS)}"


@pytest.mark.parametrize("name", FILES)
def test_vector_file_follows_the_schema(name):
    """The file validates against schema.json, and: its `file` is its name; every tensor holds
    prod(shape) values; case names are unique; every tolerance a case names and every error
    kind it raises is defined in the file."""
    doc = json.loads((VECTOR_DIR / name).read_text())
    errors = schema_errors(doc)
    assert not errors, f"{name}: {errors[:5]}"
    assert doc["file"] == name
    for path, t in tensors(doc["cases"]):
        assert len(t["data"]) == math.prod(t["shape"]), (
            f"{name}{path}: {len(t['data'])} values for shape {t['shape']}")
    names = [c["name"] for c in doc["cases"]]
    assert len(names) == len(set(names)), f"{name}: duplicate case names"
    for c in doc["cases"]:
        tol = c["tolerance"]
        for t in ([tol] if isinstance(tol, str) else tol.values()):
            assert t in doc["tolerances"], f"{name} {c['name']}: tolerance {t!r} undefined"
        errs = [c.get("error")] + [s.get("error") for s in c.get("steps", [])]
        for e in filter(None, errs):
            assert e["kind"] in doc["error_kinds"], f"{name} {c['name']}: kind {e['kind']}"


def minimal_doc() -> dict:
    return {"schema": "megacontext-vectors/1", "file": "x.json", "topic": "t",
            "contract": "contract §17", "generated_by": "g", "encoding": "e",
            "definitions": {"f": "a definition"},
            "tolerances": {"exact": {"rtol": 0.0, "atol": 0.0}},
            "error_kinds": {"InputError": "bad value"},
            "cases": [{"name": "c", "description": "d", "function": "f", "tolerance": "exact",
                       "inputs": {"x": {"dtype": "float32", "shape": [2],
                                        "data": [1.5, "nan"]}},
                       "expected": {"y": 1.0}}]}


@pytest.mark.parametrize("breakage", [
    "nan_as_null", "nan_as_NaN_string", "tensor_without_shape", "int_tensor_with_float",
    "expected_and_error", "unknown_error_kind", "no_definitions", "extra_top_level_key",
])
def test_schema_rejects_what_it_forbids(breakage):
    """The minimal document validates; each single breakage of the rules is rejected (the
    schema is not vacuous)."""
    assert schema_errors(minimal_doc()) == []
    doc = copy.deepcopy(minimal_doc())
    case = doc["cases"][0]
    x = case["inputs"]["x"]
    if breakage == "nan_as_null":
        x["data"][1] = None
    elif breakage == "nan_as_NaN_string":
        x["data"][1] = "NaN"
    elif breakage == "tensor_without_shape":
        del x["shape"]
    elif breakage == "int_tensor_with_float":
        x["dtype"] = "int64"
        x["data"] = [1, 2.5]
    elif breakage == "expected_and_error":
        case["error"] = {"kind": "InputError", "argument": "x"}
    elif breakage == "unknown_error_kind":
        del case["expected"]
        case["error"] = {"kind": "ValueError", "argument": "x"}
    elif breakage == "no_definitions":
        del doc["definitions"]
    elif breakage == "extra_top_level_key":
        doc["notes"] = "free text"
    assert schema_errors(doc), f"{breakage} was accepted"


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_regeneration_is_byte_identical(name, tmp_path):
    """`python -m megacontext.conformance --write --out DIR` writes exactly the committed
    bytes (expected floats are rounded to 12 digits and the formatter is fixed)."""
    assert generate_main(["--write", "--out", str(tmp_path), "--only", name]) == 0
    fresh, committed = (tmp_path / name).read_bytes(), (VECTOR_DIR / name).read_bytes()
    if fresh != committed:
        a, b = committed.decode().splitlines(), fresh.decode().splitlines()
        line = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                    min(len(a), len(b)))
        pytest.fail(f"{name} differs from a fresh generation at line {line + 1}: regenerate "
                    f"with `python -m megacontext.conformance --write` and review the diff")


def test_formatter_is_stable_and_spells_specials_one_way():
    """dumps() renders a document the same way twice, with specials as strings and no bare
    NaN/Infinity tokens (which are not JSON)."""
    doc = {"t": {"dtype": "float64", "shape": [3], "data": [0.1, "nan", "-inf"]}, "x": [1, 2]}
    text = dumps(doc)
    assert text == dumps(json.loads(text))
    assert "NaN" not in text and "Infinity" not in text
    with pytest.raises(ValueError):
        dumps({"bad": math.nan})


def test_golden_sessions_are_the_golden_focus_maps():
    """controller.json's golden_* sessions are the scenarios of golden/test_focus_golden/: the
    actions and LOD map of every focus step appear, in order, in the golden text file."""
    doc = json.loads((VECTOR_DIR / "controller.json").read_text())
    golden_dir = VECTOR_DIR.parent / "test_focus_golden"
    mark = {"expand": "+", "collapse": "-", "evict": "x"}
    sessions = [c for c in doc["cases"] if c["name"].startswith("golden_")]
    covered = set()
    for case in sessions:
        scenario = case["name"].removeprefix("golden_")
        if scenario.startswith("block_score_"):
            scenario = "block_score_max_vs_mean"
        covered.add(scenario)
        text = (golden_dir / f"test_golden_focus_maps[{scenario}].txt").read_text()
        step = 0
        for s in case["steps"]:
            if s["function"] != "focus_step":
                continue
            step += 1
            acts = " ".join(f"{mark[k]}{lod}@{start}" for k, lod, start in
                            s["expected"]["actions"]) or "(none)"
            block = f"step {step}: {acts}\n{s['expected']['lod_map']}"
            assert block in text, f"{case['name']} step {step} not in the golden map:\n{block}"
    on_disk = {p.name.split("[")[1].split("]")[0] for p in golden_dir.glob("*.txt")}
    assert covered == on_disk, f"sessions {sorted(covered)} vs golden maps {sorted(on_disk)}"
