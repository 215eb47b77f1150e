"""Spec-suite plumbing: xfails for ports, a reproduce line on failure, golden fixtures."""

import os
from pathlib import Path

import pytest

from spec.golden import GoldenText
from spec.implementation import IMPL_NAME


def _read_xfails(path: str) -> list[str]:
    lines = Path(path).read_text().splitlines()
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]


def pytest_collection_modifyitems(config, items):
    path = config.getoption("--xfails-file")
    if not path:
        return
    ids = _read_xfails(path)
    for item in items:
        if any(item.nodeid == i or item.nodeid.startswith(i) for i in ids):
            item.add_marker(pytest.mark.xfail(reason=f"listed in {path}", strict=False))


def pytest_report_header(config):
    return f"megacontext implementation under test: {IMPL_NAME} (MEGACONTEXT_IMPL)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and "spec" in Path(str(item.fspath)).parts:
        profile = os.environ.get("MEGACONTEXT_HYPOTHESIS_PROFILE", "ci")
        report.sections.append((
            "reproduce",
            f"MEGACONTEXT_IMPL={IMPL_NAME} MEGACONTEXT_HYPOTHESIS_PROFILE={profile} "
            f"pytest '{item.nodeid}'",
        ))
    return report


@pytest.fixture
def golden(snapshot):
    """A syrupy snapshot stored as text under golden/<spec module>/."""
    return snapshot.use_extension(GoldenText)
