"""Controller conformance vectors (contract §3, §5, §9, §17): the implementation under test
reproduces every case of golden/vectors/controller.json exactly — working contexts built and
appended, legality, group scores, focus steps and multi-step sessions (the golden focus
scenarios with their scores included), LOD maps, and each validation error with its kind and
offending index."""

import pytest

from spec.implementation import mc
from spec.vectors import as_tensor, assert_equal, cases, load, raises, wc_of

FILE = "controller.json"
DOC = load(FILE)


def cfg_of(d: dict):
    return mc.MCConfig(**d)


def wc_dict(wc) -> dict:
    return {"lods": wc.lods, "starts": wc.starts, "residency": wc.residency}


def check_wc(got, expected: dict, what: str) -> None:
    for key in ("lods", "starts", "residency"):
        assert_equal(getattr(got, key), expected[key], f"{what}: {key}")


def actions_of(actions) -> list:
    return [[a.kind, int(a.lod), int(a.start)] for a in actions]


def call(case: dict):
    """Run one (non-session) case; returns {output name: value}."""
    fn, inp = case["function"], case["inputs"]
    if fn == "block_scores":
        return {"block_scores": mc.block_scores(as_tensor(inp["scores"]),
                                                as_tensor(inp["group_id"]), inp["how"])}
    cfg = cfg_of(inp["cfg"])
    if fn == "build_working_context":
        return {"wc": mc.build_working_context(inp["T"], cfg)}
    wc, T = wc_of(inp["wc"]), inp["T"]
    if fn == "append_tokens":
        return {"wc": mc.append_tokens(wc, T, inp["n"], cfg)}
    if fn == "legal_actions":
        ok, gid = mc.legal_actions(wc, T, cfg)
        return {"expand_ok": ok, "group_id": gid}
    if fn == "focus_step":
        new, actions = mc.focus_step(wc, as_tensor(inp["scores"]), T, cfg)
        return {"wc": new, "actions": actions_of(actions)}
    if fn == "render_lod_map":
        return {"text": mc.render_lod_map(wc, T, cfg)}
    if fn == "validate":
        wc.validate(cfg, T)
        return {}
    raise AssertionError(f"unknown function {fn!r} in {FILE}")


def check_outputs(got: dict, expected: dict, what: str) -> None:
    assert set(got) == set(expected), f"{what}: outputs {sorted(got)} vs {sorted(expected)}"
    for key, want in expected.items():
        if key == "wc":
            check_wc(got[key], want, f"{what} wc")
        else:
            assert_equal(got[key], want, f"{what} {key}")


def test_vector_file_covers_every_controller_function():
    """controller.json has cases (and error cases) for every controller function, multi-step
    sessions, and every golden focus scenario of spec/test_focus_golden.py."""
    functions = {c["function"] for c in DOC["cases"]}
    assert functions == {"build_working_context", "append_tokens", "legal_actions",
                         "block_scores", "focus_step", "render_lod_map", "validate",
                         "session"}, functions
    errored = {c["function"] for c in DOC["cases"] if "error" in c}
    assert errored >= {"build_working_context", "append_tokens", "block_scores",
                       "focus_step", "validate"}, errored
    golden = {c["name"] for c in DOC["cases"] if c["name"].startswith("golden_")}
    assert len(golden) >= 6, golden
    kinds = {c["error"]["kind"] for c in DOC["cases"] if "error" in c}
    assert kinds >= {"LevelError", "AlignmentError", "ContiguityError", "CoverageError",
                     "TailError", "BudgetError", "InputError"}, kinds


@pytest.mark.parametrize("case", cases(FILE))
def test_controller_vector(case):
    """Each case's outputs equal the stored ones exactly, or the call raises the stored error
    kind naming the argument (invariant errors: the stored offending index); a session runs
    its steps in order, each step checked (§3, §5, §9)."""
    what = case["name"]
    if "error" in case:
        raises(case["error"], lambda: call(case))
        return
    if case["function"] != "session":
        check_outputs(call(case), case["expected"], what)
        return
    inp = case["inputs"]
    cfg, wc, T = cfg_of(inp["cfg"]), wc_of(inp["wc"]), inp["T"]
    for i, step in enumerate(case["steps"]):
        where = f"{what} step {i} ({step['function']})"
        if step["function"] == "append_tokens":
            wc = mc.append_tokens(wc, T, step["inputs"]["n"], cfg)
            T += step["inputs"]["n"]
            check_outputs({"wc": wc, "T": T}, step["expected"], where)
        else:
            wc, actions = mc.focus_step(wc, as_tensor(step["inputs"]["scores"]), T, cfg)
            check_outputs({"wc": wc, "actions": actions_of(actions),
                           "lod_map": mc.render_lod_map(wc, T, cfg)}, step["expected"], where)
