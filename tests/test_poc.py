"""`megacontext poc --small` end to end (contract §16): the report's structure (sections,
criteria, table columns; not its numbers), resumable stages, and bad configs. One tiny seeded
run per module (a few seconds of CPU)."""

import io
import json
import re

import pytest

from megacontext.errors import ConfigError
from megacontext.poc import run_poc, small_config
from megacontext.poc.config import load_poc_config, poc_config_from_dict
from megacontext.poc.report import PLOTS

SECTIONS = [
    "# MegaContext proof of concept", "## Setup", "## Criteria", "## Which part is responsible",
    "## Loss@H vs budget: coding", "## Loss@H vs budget: prose", "## Long-range retrieval",
    "## Swap rate and residency", "## Latency", "## Ablations", "## Plots",
]
CRITERIA = [
    "ΔNLL@H vs full context, coding (nats/byte)", "ΔNLL@H vs full context, prose (nats/byte)",
    "latency overhead (focus per block / K decode steps)",
    "swap rate, coding (actions/block)", "mean residency, coding (focus steps)",
    "swap rate, prose (actions/block)", "mean residency, prose (focus steps)",
    "ablation costs measurably: learned, GistNet untrained",
    "ablation costs measurably: learned, LensNet untrained",
    "ablation costs measurably: learned, no LoRA",
    "long-range: share of recency's gap to full context closed by learned (answer NLL)",
    "learned beats mean gists + recency, coding", "learned beats mean gists + recency, prose",
]
TABLE_HEADS = [
    "| criterion | measured | limit | holds |",
    "| system | B=32 (1/4) | B=64 (1/2) |",
    "| system | answer NLL | exact match |",
    "| system | corpus | swap rate | expands/block | mean residency | mean abs score |",
    "| metric | value |",
    "| ablation | corpus | loss@H | cost vs learned |",
]
SYSTEMS = ["sliding window", "recency (learned gists)", "mean gists + recency", "random",
           "learned (lens)", "oracle"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("poc")
    out = io.StringIO()
    report = run_poc(small_config(), d, progress=False, out=out)
    return d, report, out.getvalue()


def table_rows(text: str, head: str) -> list[list[str]]:
    lines = text.splitlines()
    i = lines.index(head)
    rows = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split("|")])
    return rows


def test_report_structure(run):
    """The report has every section, criterion and table of contract §16 (structure only)."""
    d, report, _ = run
    text = report.read_text()
    headings = [ln for ln in text.splitlines() if ln.startswith("#")]
    assert headings == SECTIONS, headings
    for head in TABLE_HEADS:
        assert head in text, f"missing table header {head!r}"
    crit = table_rows(text, TABLE_HEADS[0])
    assert [r[0] for r in crit] == CRITERIA, [r[0] for r in crit]
    assert all(r[3] in ("yes", "**no**", "n/a") for r in crit), crit
    loss_rows = [r[0] for r in table_rows(text, TABLE_HEADS[1])]
    assert loss_rows == SYSTEMS, loss_rows
    lr = [r[0] for r in table_rows(text, TABLE_HEADS[2])]
    assert lr[:1] == ["full context"] and set(SYSTEMS) <= set(lr), lr
    for png in PLOTS:
        assert (d / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"]({png})" in text


def test_report_numbers_come_from_the_summary(run):
    """Every learned-vs-full ΔNLL in the criteria table is the summary's value."""
    d, report, _ = run
    summary = json.loads((d / "eval" / "summary.json").read_text())
    text = report.read_text()
    for corpus in ("coding", "prose"):
        cell = summary["table"][corpus]["learned"][str(summary["meta"]["working_budget"])]
        row = next(r for r in table_rows(text, TABLE_HEADS[0]) if r[0].endswith(
            f"{corpus} (nats/byte)"))
        assert float(re.split(r" ± ", row[1])[0]) == pytest.approx(cell["delta"], abs=6e-4), (
            row, cell)


def test_rerun_skips_finished_stages(run):
    """A second run with the same config measures nothing again and rewrites the same report."""
    d, report, _ = run
    before = report.read_text()
    cells = (d / "eval" / "cells.json").stat().st_mtime_ns
    out = io.StringIO()
    run_poc(small_config(), d, progress=False, out=out)
    log = out.getvalue()
    for stage in ("pretrain", "train", "evaluate"):
        assert f"[poc] {stage}: done" in log, log
    assert (d / "eval" / "cells.json").stat().st_mtime_ns == cells
    assert report.read_text() == before


def test_a_run_dir_of_another_config_is_refused(run):
    d, _, _ = run
    import dataclasses

    cfg = small_config()
    other = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, seed=1))
    with pytest.raises(ConfigError, match="stage 'evaluate' was made with another config"):
        run_poc(other, d, progress=False, out=io.StringIO())


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="eval.nonsense"):
        poc_config_from_dict({"eval": {"nonsense": 1}})
    with pytest.raises(ConfigError, match="pretrain.data.context"):
        poc_config_from_dict({"pretrain": {"data": {"context": 256}},
                              "train": {"history": 1024, "horizon": 64}})
    with pytest.raises(ConfigError, match="unknown config key 'bogus'"):
        poc_config_from_dict({"bogus": 1})
    with pytest.raises(ConfigError, match="eval.working_budget"):
        poc_config_from_dict({"eval": {"working_budget": "x/y"}})
    p = tmp_path / "c.toml"
    p.write_text("[eval\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_poc_config(p)


def test_default_config_file_loads():
    """configs/poc.toml is a valid config whose base reads history + horizon in distribution."""
    from pathlib import Path

    cfg = load_poc_config(Path(__file__).resolve().parents[1] / "configs" / "poc.toml")
    assert cfg.pretrain.data.context >= cfg.train.history + cfg.train.horizon
