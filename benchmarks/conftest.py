"""Perf-gate reporting (contract §10): every gate states its measured ratio and its limit,
passing or not, whatever pytest's capture settings.

A benchmark checks a gate with the `gate` fixture:

    gate("focus_step vs loop at 8k", measured=ratio, limit=15.0, at_least=True)

It records the gate in `benchmark.extra_info["gates"]` (kept in `--benchmark-json`), prints
it, and asserts it; the terminal summary then lists every gate of the run as

    gate <name>: measured X, limit >= Y, margin Z, PASS

where the margin is how far the measurement is from the limit, as a factor (measured / limit
for a lower bound, limit / measured for an upper bound; below 1 is a failure). Contract §10
asks limits to keep >= 1.5x margin over the slowest machine's measurement.
"""

from __future__ import annotations

import pytest

_GATES: list[dict] = []  # every gate checked in this process, in order
_REPORTS: list[str] = []  # information lines for the terminal summary (see `report`)


def check_gate(name: str, measured: float, limit: float, at_least: bool,
               info: dict | None = None, unit: str = "") -> dict:
    """Record and return one gate's outcome (the caller asserts `["passed"]`)."""
    passed = measured >= limit if at_least else measured <= limit
    margin = (measured / limit if at_least else limit / measured) if measured > 0 else float("inf")
    record = dict(name=name, measured=float(measured), limit=float(limit),
                  bound="at_least" if at_least else "at_most", margin=float(margin),
                  passed=bool(passed), unit=unit)
    if info is not None:
        info.setdefault("gates", {})[name] = record
    _GATES.append(record)
    print(f"\n{format_gate(record)}")
    return record


def format_gate(r: dict) -> str:
    op = ">=" if r["bound"] == "at_least" else "<="
    return (f"gate {r['name']}: measured {r['measured']:.3g}{r['unit']}, limit {op} "
            f"{r['limit']:.3g}{r['unit']}, margin {r['margin']:.2f}x, "
            f"{'PASS' if r['passed'] else 'FAIL'}")


@pytest.fixture
def gate(benchmark):
    """gate(name, measured, limit, at_least=..., unit="") checks one perf gate (see the
    module docstring); a failure names the measurement and the limit."""

    def check(name: str, measured: float, limit: float, *, at_least: bool, unit: str = ""):
        record = check_gate(name, measured, limit, at_least, benchmark.extra_info, unit)
        assert record["passed"], format_gate(record)
        return record

    return check


@pytest.fixture
def report():
    """report(text): print `text` and repeat it in the terminal summary (information that
    should show without `-s`, such as the floor tables)."""

    def add(text: str) -> None:
        _REPORTS.append(text)
        print(f"\n{text}")

    return add


def pytest_terminal_summary(terminalreporter):
    if _REPORTS:
        terminalreporter.section("perf report")
        for text in _REPORTS:
            terminalreporter.write_line(text)
    if not _GATES:
        return
    terminalreporter.section("perf gates (contract §10)")
    for record in _GATES:
        terminalreporter.write_line(format_gate(record))
    worst = min(_GATES, key=lambda r: r["margin"])
    terminalreporter.write_line(f"smallest margin: {worst['margin']:.2f}x ({worst['name']})")
