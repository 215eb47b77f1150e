"""The port workflow works exactly as README.md writes it (contract §2).

The fixture ports under tests/ports/ are copied to tmp_path (outside the repository) and the
README's port command, taken verbatim from between its markers, is run on a few spec files in
a subprocess: only the port name, its directory, the spec selection (`spec` -> a small subset)
and `-n auto` (-> `-n 0`) are substituted. The xfails file's parsing and matching are checked
in-process below.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spec import parts, xfails

ROOT = Path(__file__).resolve().parents[1]
PORTS = Path(__file__).resolve().parent / "ports"
LEGALITY = "spec/test_legality.py"
SUBSET = [LEGALITY, "spec/test_lod_maps.py"]
BROKEN = [  # what broken_port's xfails.txt lists
    f"{LEGALITY}::test_groups_are_whole_aligned_complete_unprotected_sibling_runs",
    f"{LEGALITY}::test_legal_actions_accepts_over_budget_wc",
    f"{LEGALITY}::test_legal_actions_example",
]


def readme_command() -> list[str]:
    """The port command between the README's markers, as argv (env assignments included)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- port-command:start -->\n```bash\n(.*?)\n```\n<!-- port-command:end -->", text, re.S)
    assert block, "README.md lost its port-command markers"
    return shlex.split(block.group(1))


def copy_port(tmp_path, port) -> Path:
    """tests/ports/<port> copied to tmp_path/<port>; returns the copy."""
    return Path(shutil.copytree(PORTS / port, tmp_path / port))


def run_readme(tmp_path, port, *, specs=SUBSET, xfails_file=True, extra_env=None):
    """Run the README's command for the port copied under tmp_path on `specs`; returns
    (exit code, stdout + stderr)."""
    argv, env = [], {k: v for k, v in os.environ.items()
                     if not k.startswith(("MEGACONTEXT_", "PYTEST_")) and k != "CI"}
    for token in readme_command():
        token = token.replace("/path/to/ports", str(tmp_path)).replace("my_port", port)
        if "=" in token and not argv and not token.startswith("-"):
            key, value = token.split("=", 1)
            env[key] = value
        elif token == "spec":
            argv += specs
        elif token == "auto" and argv[-1] == "-n":
            argv.append("0")
        else:
            argv.append(token)
    assert argv[0] == "pytest" and "--xfails-file" in argv, argv
    if not xfails_file:
        i = argv.index("--xfails-file")
        del argv[i:i + 2]
    env.update(extra_env or {}, COLUMNS="200")
    argv = [sys.executable, "-m", *argv, "-p", "no:cacheprovider"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def tmp(tmp_path):
    """tmp_path with symlinks resolved, as the run prints the paths it imported from."""
    return tmp_path.resolve()


def run_port(tmp_path, port, **kwargs):
    copy_port(tmp_path, port)
    return run_readme(tmp_path, port, **kwargs)


def test_broken_port_without_xfails_is_red_naming_the_rule(tmp):
    rc, out = run_port(tmp, "broken_port", xfails_file=False)
    assert rc == 1, out
    assert "hypothesis profile: ci" in out, out  # a port run is derandomized by default
    assert f"broken_port from {tmp}/broken_port/__init__.py" in out, out
    for nodeid in BROKEN:
        assert f"FAILED {nodeid}" in out, out
    assert "3 failed, 9 passed" in out, out
    # A raw exception from what the port returned names the spec's rule.
    assert re.search(r"-+ spec rule violated -+\nK=4, T=37, tail \[31, 37\): the block \[28, 32\) "
                     r"touches the tail and cannot collapse\.\nAttributeError: 'list' object has "
                     r"no attribute 'tolist'\n", out), out
    assert ("FAILED spec/test_legality.py::test_legal_actions_example - spec rule violated: K=4, "
            in out), out
    assert (f"cd {ROOT} && MEGACONTEXT_IMPL=broken_port MEGACONTEXT_IMPL_PATH={tmp} pytest "
            f"{BROKEN[2]} --hypothesis-profile=ci\n") in out, out


def test_broken_port_with_its_xfails_file_is_green(tmp):
    rc, out = run_port(tmp, "broken_port")
    assert rc == 0, out
    assert "9 passed, 3 xfailed" in out, out


def test_stale_typo_and_wrong_part_lines_are_red_naming_each_line(tmp):
    path = copy_port(tmp, "broken_port") / "xfails.txt"
    listed = len(path.read_text().splitlines())
    bad = [
        f"{LEGALITY}::test_expand_is_offered_exactly_for_gists",  # stale: it passes
        f"{LEGALITY}::test_legal_actions_exmaple",  # typo
        "unimplemented: LensNet",  # broken_port does provide it
        "unimplemented: modles",  # typo
    ]
    path.write_text(path.read_text() + "\n".join(bad) + "\n")
    rc, out = run_readme(tmp, "broken_port")
    assert rc == 1, out
    n = [f"{path}:{listed + i}" for i in range(1, 5)]
    assert f"[XPASS(strict)] listed at {n[0]}: `{bad[0]}`" in out, out
    assert (f"{n[1]}: `{bad[1]}` matches no collected test (closest: "
            f"`{LEGALITY}::test_legal_actions_example`") in out, out
    assert f"{n[2]}: `unimplemented: LensNet` but broken_port provides LensNet" in out, out
    assert f"{n[3]}: unknown part: 'modles' is neither a topic" in out, out
    assert "4 failed, 8 passed, 3 xfailed" in out, out


def test_controller_only_port_declaring_its_missing_parts_is_green(tmp):
    specs = [*SUBSET, "spec/test_tree.py", "spec/test_lensnet.py"]
    rc, out = run_port(tmp, "controller_only", specs=specs)
    assert rc == 0, out
    assert "error" not in out.lower().split("short test summary info")[-1], out
    assert re.search(r"12 passed, \d+ skipped", out), out
    declared = f"{tmp}/controller_only/xfails.txt:2: `unimplemented: models`"
    # test_lensnet.py and test_tree.py touch model names at import time (whole-module skips).
    assert f"not implemented: LensNetConfig (declared at {declared})" in out, out
    skipped = re.findall(r"SKIPPED \[(\d+)\] .*not implemented: \w+ \(declared at "
                         + re.escape(declared), out)
    assert sum(map(int, skipped)) >= 2, out  # both model spec modules, not one


@pytest.mark.parametrize("problem, env, message", [
    ("module", {"MEGACONTEXT_IMPL": "no_such_port"},
     "ERROR: MEGACONTEXT_IMPL=no_such_port: no module named 'no_such_port' in "
     "MEGACONTEXT_IMPL_PATH="),
    ("xfails", {}, "ERROR: --xfails-file {tmp}/controller_only/xfails.txt: no such file"),
], ids=["bad-module", "missing-xfails-file"])
def test_bad_module_or_missing_file_is_a_one_line_usage_error(tmp, problem, env, message):
    if problem == "xfails":
        (copy_port(tmp, "controller_only") / "xfails.txt").unlink()
        rc, out = run_readme(tmp, "controller_only", extra_env=env)
    else:
        rc, out = run_port(tmp, "controller_only", extra_env=env)
    assert rc == 4, out
    assert message.format(tmp=tmp) in out, out
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    assert len(out.strip().splitlines()) == 1, out


# --- the xfails file, in-process ------------------------------------------------------------


def parse(tmp_path, text):
    path = tmp_path / "xfails.txt"
    path.write_text(text)
    return xfails.read(str(path))


def test_node_id_lines_cover_parametrizations_but_are_no_raw_prefix(tmp_path):
    xf = parse(tmp_path, "spec/a.py::test_p  # all params\nspec/a.py::test_q[x-1]\nspec/b.py\n"
                         "spec/a.py::test_r*\n")
    p, q, b, r = xf.tests
    assert p.covers("spec/a.py::test_p") and p.covers("spec/a.py::test_p[fp16]")
    assert not p.covers("spec/a.py::test_pq") and not p.covers("spec/a.py::test_p2[x]")
    assert q.covers("spec/a.py::test_q[x-1]") and not q.covers("spec/a.py::test_q[x-10]")
    assert b.covers("spec/b.py::C::test") and not b.covers("spec/b.py2::test")
    assert r.covers("spec/a.py::test_r") and r.covers("spec/a.py::test_rx[1]")
    assert p.lineno == 1 and r.lineno == 4 and not xf.problems


def test_malformed_duplicate_and_unknown_lines_are_problems(tmp_path):
    xf = parse(tmp_path, "# comment\n\nspec/a.py::t*x\nspec/a.py::t\nspec/a.py::t\n"
                         "unimplemented: nope\nunimplemented: LensNet\nspec/a.py::t x\n")
    got = {line.lineno: msg for line, msg in xf.problems}
    assert set(got) == {3, 5, 6, 8}, got
    assert "trailing" in got[3] and got[5] == "duplicate of line 4" and "nope" in got[6]
    assert [p.text for p in xf.parts] == ["LensNet"]
    assert xfails.unimplemented_names(xf) == {
        "LensNet": f"not implemented: LensNet (declared at {tmp_path}/xfails.txt:7: "
                   "`unimplemented: LensNet`)"}


def test_readme_example_xfails_file_parses_cleanly(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- xfails-example:start -->\n```\n(.*?)```\n<!-- xfails-example:end -->",
                      text, re.S)
    assert block, "README.md lost its xfails-example markers"
    xf = parse(tmp_path, block.group(1))
    assert not xf.problems and len(xf.tests) == 3 and len(xf.parts) == 1, (xf.problems, xf)
    assert all((ROOT / line.path_part()).is_file() for line in xf.tests)


def test_unreadable_xfails_file_is_one_line(tmp_path):
    with pytest.raises(xfails.XfailsFileError, match=r"^--xfails-file .*: is a directory"):
        xfails.read(str(tmp_path))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(xfails.XfailsFileError, match="cannot read it"):
        xfails.read(str(tmp_path / "bin.txt"))


def test_the_rule_is_the_first_sentence_of_the_nearest_docstring():
    from types import SimpleNamespace as NS

    from spec.conftest import _rule

    def spec():
        """Every group is K consecutive entries
        (level < max_lod). Ids run 0..G-1.

        More detail."""

    module = NS(__doc__="A session keeps WCs valid.\nDetails.")
    assert _rule(NS(obj=spec, cls=None, module=module, name="t")) == (
        "Every group is K consecutive entries (level < max_lod).")
    stateful = NS(obj=NS(__doc__=None), cls=NS(__doc__=None), module=module, name="runTest")
    assert _rule(stateful) == "A session keeps WCs valid."


def test_every_public_name_sits_in_exactly_one_topic():
    import megacontext

    listed = [n for names in parts.TOPICS.values() for n in names]
    assert len(listed) == len(set(listed)), sorted(n for n in listed if listed.count(n) > 1)
    assert set(listed) == set(megacontext.__all__), (
        f"missing from spec/parts.py: {sorted(set(megacontext.__all__) - set(listed))}; "
        f"not exported: {sorted(set(listed) - set(megacontext.__all__))}")
