"""Run the numpy port against every case of golden/vectors/controller.json.

    python -m tests.numpy_port.check [PATH]

Reads only the vector file (json + numpy; no megacontext, no torch). Every output is compared
exactly (the file's tolerance is "exact"); an error case must raise a PortError of the stated
kind naming the stated argument (and index, for invariant kinds). Exit status 1 on any
failure, each failure printed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from tests.numpy_port import controller as port

DEFAULT = Path(__file__).resolve().parents[2] / "golden" / "vectors" / "controller.json"
SPECIALS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
NUMPY = {"float64": np.float64, "float32": np.float32, "float16": np.float16,
         "int64": np.int64, "bool": np.bool_}


def array(t: dict) -> np.ndarray:
    """A schema tensor as a numpy array of its dtype."""
    data = [SPECIALS[v] if isinstance(v, str) else v for v in t["data"]]
    return np.array(data, dtype=NUMPY[t["dtype"]]).reshape(t["shape"])


def wc_of(d: dict) -> dict:
    return {k: array(d[k]) for k in ("lods", "starts", "residency")}


def same(got, want) -> bool:
    if isinstance(want, dict) and "dtype" in want:
        w = array(want)
        g = np.asarray(got)
        return g.shape == w.shape and (g.dtype == bool) == (w.dtype == bool) and \
            bool(np.array_equal(g, w))
    return got == want


def compare(got: dict, expected: dict, where: str) -> list[str]:
    out = []
    if set(got) != set(expected):
        return [f"{where}: outputs {sorted(got)}, expected {sorted(expected)}"]
    for key, want in expected.items():
        if key == "wc":
            for k in ("lods", "starts", "residency"):
                if not same(got["wc"][k], want[k]):
                    out.append(f"{where}: wc.{k} = {np.asarray(got['wc'][k]).tolist()}, "
                               f"expected {want[k]['data']}")
        elif not same(got[key], want):
            out.append(f"{where}: {key} = {got[key]!r}, expected {want!r}")
    return out


def run(case: dict) -> dict:
    fn, inp = case["function"], case["inputs"]
    if fn == "block_scores":
        return {"block_scores": port.block_scores(array(inp["scores"]), array(inp["group_id"]),
                                                  inp["how"])}
    cfg = inp["cfg"]
    if fn == "build_working_context":
        return {"wc": port.build_working_context(inp["T"], cfg)}
    wc, T = wc_of(inp["wc"]), inp["T"]
    if fn == "append_tokens":
        return {"wc": port.append_tokens(wc, T, inp["n"], cfg)}
    if fn == "legal_actions":
        ok, gid = port.legal_actions(wc, T, cfg)
        return {"expand_ok": ok, "group_id": gid}
    if fn == "focus_step":
        new, actions = port.focus_step(wc, array(inp["scores"]), T, cfg)
        return {"wc": new, "actions": actions}
    if fn == "render_lod_map":
        return {"text": port.render_lod_map(wc, T, cfg)}
    if fn == "validate":
        port.validate(wc, T, cfg)
        return {}
    raise KeyError(f"unknown function {fn!r}")


def check_case(case: dict) -> tuple[int, list[str]]:
    """(number of checks made, failures) for one case."""
    where = case["name"]
    if "error" in case:
        want = case["error"]
        try:
            run(case)
        except port.PortError as err:
            got = (err.kind, err.argument, err.index if "index" in want else None)
            exp = (want["kind"], want["argument"], want.get("index"))
            return 1, [] if got == exp else [f"{where}: raised {got}, expected {exp}"]
        return 1, [f"{where}: no error, expected {want}"]
    if case["function"] != "session":
        return len(case["expected"]), compare(run(case), case["expected"], where)
    inp = case["inputs"]
    cfg, wc, T = inp["cfg"], wc_of(inp["wc"]), inp["T"]
    checks, failures = 0, []
    for i, step in enumerate(case["steps"]):
        at = f"{where} step {i} ({step['function']})"
        if step["function"] == "append_tokens":
            wc = port.append_tokens(wc, T, step["inputs"]["n"], cfg)
            T += step["inputs"]["n"]
            got = {"wc": wc, "T": T}
        else:
            wc, actions = port.focus_step(wc, array(step["inputs"]["scores"]), T, cfg)
            got = {"wc": wc, "actions": actions, "lod_map": port.render_lod_map(wc, T, cfg)}
        checks += len(step["expected"])
        failures += compare(got, step["expected"], at)
    return checks, failures


def check_file(path: Path = DEFAULT) -> tuple[int, int, list[str]]:
    """(cases, checks, failures) of the port against one controller vector file."""
    doc = json.loads(Path(path).read_text())
    checks, failures = 0, []
    for case in doc["cases"]:
        try:
            c, f = check_case(case)
        except Exception as err:  # a crash is a failure, not a skip
            c, f = 1, [f"{case['name']}: {type(err).__name__}: {err}"]
        checks += c
        failures += f
    return len(doc["cases"]), checks, failures


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else DEFAULT
    cases, checks, failures = check_file(path)
    for f in failures:
        print("FAIL", f)
    leaked = sorted(m for m in ("torch", "megacontext") if m in sys.modules)
    print(f"{path.name}: {cases} cases, {checks} checks, {len(failures)} failures; "
          f"modules imported from the reference stack: {leaked or 'none'}")
    return 1 if failures or leaked else 0


if __name__ == "__main__":
    raise SystemExit(main())
