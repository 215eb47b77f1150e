"""A port's xfails file: the specs it is known to fail and the parts it does not implement.

Format (contract §2), one entry per line; `#` starts a comment (at the start of a line or after
whitespace); blank lines are ignored:

  spec/test_kl.py::test_p95[float16]   one test, by its exact pytest id
  spec/test_kl.py::test_p95            a pytest node id: every test `pytest <line>` would run
  spec/test_kl.py                      (a function with all its [...] parametrizations, a
                                       class, a file, a directory)
  spec/test_kl.py::test_barrier_*      trailing `*`: every test id starting with the text
                                       before it (the only wildcard)
  unimplemented: models                a part the port lacks: a topic or one public name
                                       (see spec/parts.py)

Ids are written as pytest prints them, relative to the repository root. Every test a line
covers is marked xfail(strict=True): if it passes, the run fails naming the line. A test line
that covers no collected test, a malformed line, a duplicate line, an unknown part and a part
declared unimplemented that the implementation does provide are each reported as a failing
item naming `file:line`. This module is pure: parsing and matching, no pytest state.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from spec import parts

_COMMENT = re.compile(r"(^|\s)#")
_UNIMPLEMENTED = re.compile(r"^unimplemented\s*:\s*(.*)$")


class XfailsFileError(Exception):
    """The xfails file cannot be read; the message is one line."""


@dataclass(frozen=True)
class Line:
    """One meaningful line: `text` as written (comment and whitespace stripped)."""

    path: str  # the file as given on the command line, for messages
    lineno: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}"


@dataclass(frozen=True)
class TestLine(Line):
    __test__ = False  # not a pytest test class

    @property
    def prefix(self) -> str | None:
        """The text before a trailing `*`, or None for a node-id line."""
        return self.text[:-1] if self.text.endswith("*") else None

    def covers(self, nodeid: str) -> bool:
        """True if this line covers the test `nodeid`: the exact id, a node id above it
        (directory, file, class, or function without its [...] parameters), or a prefix."""
        if self.prefix is not None:
            return nodeid.startswith(self.prefix)
        t = self.text
        return nodeid == t or any(nodeid.startswith(t + sep) for sep in ("::", "[", "/"))

    def path_part(self) -> str:
        """The file or directory this line points into (the part before `::`, `[` or `*`)."""
        return re.split(r"::|\[|\*", self.text, maxsplit=1)[0]


@dataclass(frozen=True)
class PartLine(Line):
    """`unimplemented: <part>`; `text` is the part."""


@dataclass
class XfailsFile:
    path: str
    tests: list[TestLine]
    parts: list[PartLine]
    problems: list[tuple[Line, str]]  # lines wrong on their own, found while parsing


def read(path: str) -> XfailsFile:
    """Parse an xfails file. Raises XfailsFileError (one line) if it cannot be read as text."""
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise XfailsFileError(f"--xfails-file {path}: no such file") from None
    except IsADirectoryError:
        raise XfailsFileError(f"--xfails-file {path}: is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise XfailsFileError(f"--xfails-file {path}: cannot read it ({err})") from None
    out = XfailsFile(path, [], [], [])
    seen: dict[str, Line] = {}
    for lineno, full in enumerate(raw.splitlines(), start=1):
        m = _COMMENT.search(full)
        text = (full[:m.start()] if m else full).strip()
        if not text:
            continue
        part = _UNIMPLEMENTED.match(text)
        line: Line
        if part:
            line = PartLine(path, lineno, part.group(1).strip())
        else:
            line = TestLine(path, lineno, text)
        if text in seen:
            out.problems.append((line, f"duplicate of line {seen[text].lineno}"))
            continue
        seen[text] = line
        if isinstance(line, PartLine):
            if not line.text or " " in line.text:
                out.problems.append((line, "expected `unimplemented: <topic or public name>`"))
                continue
            try:
                parts.names_of(line.text)
            except KeyError as err:
                out.problems.append((line, f"unknown part: {err.args[0]}"))
                continue
            out.parts.append(line)
        elif any(c.isspace() for c in text):
            out.problems.append((line, "a test id has no whitespace (one id per line)"))
        elif "*" in text[:-1]:
            out.problems.append((line, "only a trailing `*` is a wildcard"))
        else:
            out.tests.append(line)
    return out


def unimplemented_names(xf: XfailsFile) -> dict[str, str]:
    """Public name -> skip reason, for every name a part line covers."""
    out: dict[str, str] = {}
    for line in xf.parts:
        for name in parts.names_of(line.text):
            out.setdefault(
                name, f"not implemented: {name} (declared at {line.where}: "
                f"`unimplemented: {line.text}`)"
            )
    return out


def unmatched_message(line: TestLine, nodeids: list[str]) -> str:
    """Why `line` covers none of `nodeids`, with the closest ids as a hint."""
    msg = f"`{line.text}` matches no collected test"
    base = {n.split("[", 1)[0] for n in nodeids}
    near = difflib.get_close_matches(line.text, sorted(base | set(nodeids)), n=3, cutoff=0.6)
    if line.prefix is None and any(n.startswith(line.text) for n in nodeids):
        msg += f" (a prefix needs a trailing `*`: `{line.text}*`)"
    elif near:
        msg += " (closest: " + ", ".join(f"`{n}`" for n in near) + ")"
    return msg
