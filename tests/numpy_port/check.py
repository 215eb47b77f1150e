"""Run the numpy port against every case of golden/vectors/controller.json,
lens_supervision.json, gistnet.json, tiny_gpt.json and lens_gated.json.

    python -m tests.numpy_port.check

Reads only the vector files (json + numpy; no megacontext, no torch). Controller outputs are
compared exactly (the file's tolerance is "exact"), the others within the file's tolerances;
an error case must raise a PortError of the stated kind naming the stated argument (and
index, for invariant kinds). Exit status 1 on any failure, each failure printed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from tests.numpy_port import controller as port
from tests.numpy_port import models
from tests.numpy_port import supervision as sup

VECTORS = Path(__file__).resolve().parents[2] / "golden" / "vectors"
DEFAULT = VECTORS / "controller.json"
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


# --- lens supervision ------------------------------------------------------------------------


def close(got, want, tol: dict) -> bool:
    w = array(want) if isinstance(want, dict) else np.array(SPECIALS.get(want, want)
                                                           if isinstance(want, str) else want)
    g = np.asarray(got, dtype=np.float64)
    return g.shape == w.shape and bool(np.all(
        (np.abs(g - w) <= tol["atol"] + tol["rtol"] * np.abs(w)) | (np.isnan(g) & np.isnan(w))))


def run_supervision(case: dict) -> dict:
    fn, inp = case["function"], case["inputs"]
    if fn == "variant_weights":
        return {"weights": sup.variant_weights([float(v) for v in array(inp["losses"])],
                                               inp["baseline_loss"])}
    wc, cfg = wc_of(inp["wc"]), inp["cfg"]
    if fn == "lens_targets_from_utilities":
        t, m = sup.targets_from_utilities(wc, array(inp["expand_gain"]),
                                          array(inp["collapse_loss"]), inp["T"], cfg,
                                          inp["price"])
        return {"targets": t, "mask": m}
    if fn == "lens_targets_from_best":
        t, m = sup.targets_from_best(wc, wc_of(inp["best_wc"]), inp["delta_loss"], inp["T"],
                                     cfg)
        return {"targets": t, "mask": m}
    if fn == "lens_loss":
        return sup.lens_loss(array(inp["scores"]).astype(np.float64), array(inp["targets"]),
                             array(inp["mask"]), wc, cfg, inp["weights"])
    raise KeyError(f"unknown function {fn!r}")


def run_model(case: dict) -> dict:
    fn, inp = case["function"], case["inputs"]
    W = {k: array(v).astype(np.float64) for k, v in inp.get("weights", {}).items()}
    get = lambda k: array(inp[k]).astype(np.float64) if k in inp else None
    if fn == "GistNet":
        cfg, kids = inp["config"], get("children")
        if "lod" in inp:
            return {"gists": models.gistnet(cfg, W, kids, inp["lod"])}
        return {f"lod{lod}": models.gistnet(cfg, W, kids, lod) for lod in (1, 2)}
    if fn == "TinyGPT":
        W = models.with_lora(W, inp["lora"])
        tokens = array(inp["tokens"]) if "tokens" in inp else None
        targets = array(inp["targets"]) if "targets" in inp else None
        return models.tiny_gpt(inp["config"], W, tokens, get("embeddings"), get("positions"),
                               targets)
    if fn == "LensGatedConfig":
        return {"config": models.lens_gated_config(inp["config"])}
    cfg, x = inp["config"], get("x")
    if fn == "LensGatedAttention":
        return {"y": models.lens_gated_attention(cfg, W, x)}
    if fn == "LensGatedBlock":
        pos = np.broadcast_to(get("positions"), x.shape[:2])
        cos, sin = models.rope_tables(pos, cfg["n_embd"] // cfg["n_head"], inp["rope_base"])
        return {"y": models.lens_gated_block(cfg, W, x, cos, sin)}
    raise KeyError(f"unknown function {fn!r}")


def check_supervision(path: Path = VECTORS / "lens_supervision.json", runner=None):
    """(cases, checks, failures) of a numeric port (supervision by default) against a file."""
    run_supervision_or = runner or run_supervision
    doc = json.loads(Path(path).read_text())
    checks, failures = 0, []
    for case in doc["cases"]:
        where = case["name"]
        checks += 1
        try:
            if "error" in case:
                try:
                    run_supervision_or(case)
                    failures.append(f"{where}: no error, expected {case['error']}")
                except port.PortError as err:
                    want = case["error"]
                    if (err.kind, err.argument) != (want["kind"], want["argument"]):
                        failures.append(f"{where}: raised {err}, expected {want}")
                continue
            got = run_supervision_or(case)
            for key, want in case["expected"].items():
                checks += 1
                tname = case["tolerance"]
                tname = tname if isinstance(tname, str) else tname.get(key, tname["default"])
                ok = (same(got[key], want) if isinstance(want, dict) and want["dtype"] == "bool"
                      else close(got[key], want, doc["tolerances"][tname]))
                if not ok:
                    shown = want["data"] if isinstance(want, dict) else want
                    failures.append(f"{where}: {key} = {np.asarray(got[key]).tolist()}, "
                                    f"expected {shown}")
        except Exception as err:  # a crash is a failure
            failures.append(f"{where}: {type(err).__name__}: {err}")
    return len(doc["cases"]), checks, failures


def main(argv: list[str] | None = None) -> int:
    status = 0
    files = [("controller.json", check_file), ("lens_supervision.json", check_supervision)]
    files += [(f"{m}.json", lambda p: check_supervision(p, run_model))
              for m in ("gistnet", "tiny_gpt", "lens_gated")]
    for name, checker in files:
        cases, checks, failures = checker(VECTORS / name)
        for f in failures:
            print("FAIL", f)
        print(f"{name}: {cases} cases, {checks} checks, {len(failures)} failures")
        status |= bool(failures)
    leaked = sorted(m for m in ("torch", "megacontext") if m in sys.modules)
    print(f"modules imported from the reference stack: {leaked or 'none'}")
    return 1 if status or leaked else 0


if __name__ == "__main__":
    raise SystemExit(main())
