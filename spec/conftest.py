"""Spec-suite plumbing (contract §2): the implementation under test, a port's xfails file,
failures that name the spec rule, a reproduce line on failure, golden fixtures.

- The implementation (MEGACONTEXT_IMPL, MEGACONTEXT_IMPL_PATH; see spec/implementation.py) is
  imported at configure time: a bad name or path is a one-line usage error.
- `--xfails-file FILE` (format in spec/xfails.py): a missing or unreadable file is a one-line
  usage error; listed tests are strict xfails; every line that is wrong (covers no collected
  test, unknown part, stale `unimplemented:` declaration, ...) becomes a failing item named
  after its `file:line`.
- A spec that fails with an exception other than an assertion (a raw torch RuntimeError, an
  AttributeError from the implementation's return value, a wrong error type) is reported as
  "spec rule violated: <first sentence of the spec's docstring>" with the original exception.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.errors import HypothesisException

from spec import implementation, parts, xfails
from spec.golden import GoldenText

_state = pytest.StashKey["_PortRun"]()


class _PortRun:
    """What this run tests against, read once at configure time."""

    def __init__(self, config: pytest.Config):
        self.config = config
        path = config.getoption("--xfails-file")
        self.xfails: xfails.XfailsFile | None = None
        self.xfails_abs: str | None = None
        if path:
            try:
                self.xfails = xfails.read(path)
            except xfails.XfailsFileError as err:
                raise pytest.UsageError(str(err)) from None
            self.xfails_abs = str(Path(path).resolve())
            implementation.declare_unimplemented(xfails.unimplemented_names(self.xfails))
        try:
            self.module = implementation.load()
        except implementation.ImplementationImportError as err:
            raise pytest.UsageError(str(err)) from None

    def environment(self) -> str:
        """The environment assignments that select this implementation, shell-quoted."""
        env = []
        if os.environ.get("MEGACONTEXT_IMPL"):
            env.append(f"MEGACONTEXT_IMPL={shlex.quote(implementation.IMPL_NAME)}")
        if implementation.IMPL_PATH:
            resolved = str(Path(implementation.IMPL_PATH).expanduser().resolve())
            env.append(f"MEGACONTEXT_IMPL_PATH={shlex.quote(resolved)}")
        return " ".join(env)

    def reproduce(self, nodeid: str) -> str:
        """A command that reruns one spec under the same implementation, profile and file."""
        # --hypothesis-verbosity/--hypothesis-explain load a derived "<name>-with-..." profile
        profile = settings.get_current_profile_name().split("-with-")[0]
        rootdir = str(self.config.rootpath)
        cmd = [f"cd {shlex.quote(rootdir)} &&"]
        if self.environment():
            cmd.append(self.environment())
        cmd += ["pytest", shlex.quote(nodeid), f"--hypothesis-profile={profile}"]
        seed = self.config.getoption("--hypothesis-seed", None)
        if seed is not None:
            cmd.append(f"--hypothesis-seed={seed}")
        if self.xfails_abs:
            cmd.append(f"--xfails-file={shlex.quote(self.xfails_abs)}")
        line = " ".join(cmd)
        line += f"\n# implementation: {implementation.IMPL_NAME} from {implementation.origin()}"
        if not settings.default.derandomize and seed is None:
            line += (f"\n# profile {profile} draws random examples: this failure may need the "
                     "@reproduce_failure blob above, or --hypothesis-profile=ci")
        return line


def pytest_configure(config):
    config.stash[_state] = _PortRun(config)


def pytest_report_header(config):
    run = config.stash[_state]
    how = f" ({run.environment()})" if run.environment() else " (the default)"
    lines = [
        f"megacontext implementation under test: {implementation.IMPL_NAME} from "
        f"{implementation.origin()}{how}",
        f"hypothesis profile: {settings.get_current_profile_name()}",
    ]
    if run.xfails is not None:
        xf = run.xfails
        lines.append(f"xfails file: {run.xfails_abs} ({len(xf.tests)} test lines, "
                     f"{len(xf.parts)} unimplemented parts)")
    return lines


class XfailsLineProblem(pytest.Item):
    """A failing item standing for one wrong line of the xfails file."""

    def __init__(self, *, line: xfails.Line, message: str, **kwargs):
        super().__init__(**kwargs)
        self.line, self.message = line, message

    def runtest(self):
        raise pytest.fail.Exception(self.text(), pytrace=False)

    def text(self) -> str:
        return f"{self.line.where}: {self.message}"

    def repr_failure(self, excinfo, style=None):
        return self.text()

    def reportinfo(self):
        return self.path, self.line.lineno - 1, f"xfails file line {self.line.lineno}"


def _arg_nodeids(config) -> list[str]:
    """The run's positional arguments as node-id prefixes relative to the rootdir."""
    out = []
    for arg in config.args:
        path, sep, rest = str(arg).partition("::")
        full = (config.invocation_params.dir / path).resolve()
        try:
            rel = full.relative_to(config.rootpath).as_posix()
        except ValueError:
            continue
        rel = "" if rel == "." else rel
        out.append(rel + sep + rest)
    return out


def _within(prefix: str, text: str) -> bool:
    """True if the run argument `prefix` selects everything the xfails line `text` can cover,
    so that line must cover some collected test."""
    return (prefix == "" or text == prefix
            or any(text.startswith(prefix + s) for s in ("::", "[", "/")))


def _path_exists(rootdir: Path, line: xfails.TestLine) -> bool:
    part = line.path_part()
    if line.prefix is not None and "::" not in line.text and "[" not in line.text:
        return any(rootdir.glob(part + "*"))
    return (rootdir / part).exists()


def pytest_collectreport(report):
    """Remember spec modules skipped whole at import time (a part declared unimplemented)."""
    if report.skipped and report.nodeid.endswith(".py"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped_modules[report.nodeid] = reason.removeprefix("Skipped: ")


_skipped_modules: dict[str, str] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    run = config.stash[_state]
    xf = run.xfails
    if xf is None:
        return
    nodeids = [item.nodeid for item in items]
    for item in items:
        for line in xf.tests:
            if line.covers(item.nodeid):
                item.add_marker(pytest.mark.xfail(
                    reason=f"listed at {line.where}: `{line.text}`", strict=True))
                break
    problems = list(xf.problems)
    args = _arg_nodeids(config)
    for line in xf.tests:
        if not _path_exists(config.rootpath, line):
            problems.append((line, f"`{line.text}`: no such spec file or directory under "
                                   f"{config.rootpath}"))
        elif any(_within(a, line.text) for a in args) and not any(map(line.covers, nodeids)):
            skipped = _skipped_modules.get(line.path_part())
            problems.append((line, xfails.unmatched_message(line, nodeids) if skipped is None
                             else f"`{line.text}` matches no collected test: its file was "
                                  f"skipped ({skipped})"))
    for line in xf.parts:
        provided = [n for n in parts.names_of(line.text) if hasattr(run.module, n)]
        if provided:
            problems.append((line, (
                f"`unimplemented: {line.text}` but {implementation.IMPL_NAME} provides "
                f"{', '.join(provided)}; declare only what is missing (one public name per "
                "line if part of a topic is implemented)")))
    problems.sort(key=lambda p: p[0].lineno)
    items[:0] = [
        XfailsLineProblem.from_parent(
            session, name=f"{Path(xf.path).name}:{line.lineno}",
            nodeid=f"{Path(xf.path).name}:{line.lineno}", path=Path(run.xfails_abs),
            line=line, message=message)
        for line, message in problems
    ]


def _rule(item) -> str:
    """The rule a spec checks: the first sentence of its docstring (else its class's, else its
    module's, as for a stateful machine's runTest), else its name."""
    for obj in (getattr(item, "obj", None), getattr(item, "cls", None),
                getattr(item, "module", None)):
        doc = getattr(obj, "__doc__", None)
        if doc and doc.strip():
            paragraph = " ".join(doc.strip().split("\n\n")[0].split())
            return re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0]
    return item.name


def _is_assertion(exc: BaseException) -> bool:
    """A failure the spec itself reports (an assertion, pytest.fail/skip/xfail, a hypothesis
    usage or health-check error) rather than an exception out of the implementation."""
    if isinstance(exc, BaseExceptionGroup):  # hypothesis: several distinct failures
        return all(_is_assertion(e) for e in exc.exceptions)
    return isinstance(exc, AssertionError | pytest.fail.Exception | pytest.skip.Exception
                      | pytest.xfail.Exception | HypothesisException)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if not report.failed or isinstance(item, XfailsLineProblem):
        return report
    exc = call.excinfo.value if call.excinfo is not None else None
    longrepr = report.longrepr
    if exc is not None and not _is_assertion(exc) and hasattr(longrepr, "reprcrash"):
        rule = _rule(item)
        first = (str(exc).splitlines() or [""])[0]
        original = f"{type(exc).__name__}: {first}"
        if longrepr.reprcrash is not None:
            longrepr.reprcrash.message = f"spec rule violated: {rule} ({original})"
        longrepr.addsection("spec rule violated", f"{rule}\n{original}")
    report.sections.append(("reproduce", item.config.stash[_state].reproduce(item.nodeid)))
    return report


@pytest.fixture
def golden(snapshot):
    """A syrupy snapshot stored as text under golden/<spec module>/."""
    return snapshot.use_extension(GoldenText)
