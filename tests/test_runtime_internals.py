"""Runtime internals and commands: run / label / evaluate on tiny inputs, telemetry contents,
label-table resume, and the typed one-line errors of the commands."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
import torch

import megacontext as mc
from megacontext.cli import main
from megacontext.runtime.labels import candidate_actions
from megacontext.runtime.session import diff_actions
from megacontext.runtime.telemetry import label_metrics

SMALL = ["--block-size", "4", "--budget", "24", "--recent-tokens", "8", "--horizon", "8",
         "--no-progress"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "sample.py"
    p.write_bytes((b"def f(x):\n    return x * 2  # doubled\n" * 8)[:300])
    return p


def test_run_prints_maps_and_metrics_and_writes_telemetry(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", str(text_file), "--policy", "random", "--every", "96", "--labels",
               "--max-candidates", "40", "--out", str(out), *SMALL])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert text.count("T=") >= 2 and "N=" in text and "swap_rate" in text, text
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    events = {x["event"] for x in lines}
    assert events == {"refocus", "eval", "summary"}, events
    ref = [x for x in lines if x["event"] == "refocus"]
    for key in ("swap_rate", "mean_residency", "token_budget_utilization", "latency_ms/gather",
                "latency_ms/lens", "latency_ms/allocator", "latency_ms/base", "tokens_per_step",
                "entries_per_lod", "score_abs_mean", "score_std"):
        assert key in ref[0], key
    assert sum(1 for x in ref if x["kind"] == "refocus") == 300 // 4
    ev = [x for x in lines if x["event"] == "eval"]
    assert all(x["loss_at_h"] > 0 for x in ev)
    assert any("lod_delta/1" in x and "adv_delta_mean" in x for x in ev), ev
    summary = lines[-1]
    actions = pq.read_table(out / "actions.parquet")
    assert actions.num_rows == summary["actions"] == sum(x["actions"] for x in ref)


def test_run_lens_policy_logs_score_target_correlations(text_file, tmp_path, capsys):
    out = tmp_path / "lens"
    rc = main(["run", str(text_file), "--policy", "lens", "--every", "128", "--labels",
               "--max-candidates", "6", "--out", str(out), *SMALL])
    assert rc == 0, capsys.readouterr()
    ev = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()
          if '"eval"' in x]
    assert any("pearson" in x and "spearman" in x for x in ev), ev


def test_label_command_writes_tables_and_resumes(text_file, tmp_path, capsys):
    out = tmp_path / "labels"
    args = ["label", str(text_file), "--out", str(out), "--warmup", "64", "--stride", "64",
            "--max-candidates", "5", *SMALL]
    assert main(args) == 0
    parts = sorted((out / "labels").glob("*.parquet"))
    assert len(parts) == 4, parts  # T = 64, 128, 192, 256 (+8 <= 300)
    cfg = mc.MCConfig(block_size=4, budget=24, recent_tokens=8)
    first = mc.read_labels(out, cfg)
    stamp = {p.name: os.stat(p).st_mtime_ns for p in parts}
    parts[2].unlink()  # a crash lost snapshot 2: a rerun writes it and nothing else
    capsys.readouterr()
    assert main(args) == 0
    assert "3 already written" in capsys.readouterr().out
    again = mc.read_labels(out, cfg)
    for p in sorted((out / "labels").glob("*.parquet")):
        if p.name != parts[2].name:
            assert os.stat(p).st_mtime_ns == stamp[p.name], f"{p.name} was rewritten"
    assert [s.snapshot_id for s in again] == [0, 1, 2, 3]
    a, b = first[2], again[2]
    assert a.wc == b.wc and torch.equal(a.expand_gain.nan_to_num(9), b.expand_gain.nan_to_num(9))
    capsys.readouterr()
    other = [a if a != "5" else "6" for a in args]  # --max-candidates 6: another setup
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "max_candidates: directory has 5, requested 6" in err, err


def test_evaluate_writes_a_markdown_table(text_file, tmp_path, capsys):
    md = tmp_path / "eval.md"
    rc = main(["evaluate", str(text_file), "--history", "128", "--horizon", "16",
               "--block-size", "4", "--recent-tokens", "8", "--budgets", "1/8,32",
               "--policies", "full,window,recency,random", "--windows-per-file", "2",
               "--no-progress", "--out", str(md)])
    assert rc == 0
    text = md.read_text()
    assert "| full context (128) |" in text and "| random |" in text and "B=16 (1/8)" in text
    raw = json.loads(md.with_suffix(".json").read_text())
    assert len(raw["results"]["recency@32"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["run", "MISSING", *SMALL], "not a readable file"),
    (["run", "FILE", "--block-size", "4", "--budget", "4", "--recent-tokens", "8"],
     "smaller than the protected tail"),
    (["label", "FILE", "--out", "X", "--warmup", "4000", *SMALL], "no snapshot fits"),
    (["evaluate", "FILE", "--history", "4000", "--no-progress"], "no FILE holds"),
    (["evaluate", "FILE", "--budgets", "x", "--no-progress"], "--budgets"),
])
def test_commands_fail_with_one_line_errors(argv, message, text_file, tmp_path, capsys):
    argv = [str(text_file) if a == "FILE" else str(tmp_path / "x") if a == "X" else a
            for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_diff_actions_names_the_recency_rebuild():
    """Going from the baseline at T to the baseline at T + K: the newly collapsed groups show as
    collapses, and applying nothing else is needed to account for the new gists."""
    cfg = mc.MCConfig(block_size=4, budget=12, recent_tokens=4)
    old = mc.append_tokens(mc.build_working_context(40, cfg), 40, 4, cfg)
    new = mc.build_working_context(44, cfg)
    acts = diff_actions(old, new, cfg)
    new_gists = {(int(a), int(b)) for a, b in zip(new.lods, new.starts, strict=True) if a > 0}
    old_gists = {(int(a), int(b)) for a, b in zip(old.lods, old.starts, strict=True) if a > 0}
    assert {(a.lod + 1, a.start) for a in acts if a.kind == "collapse"} == new_gists - old_gists


def test_label_metrics_lod_delta_is_the_mean_collapse_delta():
    torch.manual_seed(0)
    base = mc.TinyGPT(mc.TinyGPTConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    cfg = mc.MCConfig(block_size=4, budget=28, recent_tokens=6)
    ids = torch.randint(0, 64, (160,))
    s = mc.MegaContextSession(cfg, base, policy="random")
    s.ingest(ids[:150])
    lab = mc.label_snapshot(base, s.tree, s.wc, s.T, ids[150:], cfg)
    m = label_metrics(lab, cfg)
    cands = candidate_actions(s.wc, s.T, cfg)
    d1 = [float(d) for c, d in zip(cands, lab.delta_nll, strict=True)
          if c.kind == "collapse" and c.lod == 0]
    assert d1 and abs(m["lod_delta/1"] - sum(d1) / len(d1)) < 1e-12
    assert abs(m["lod_loss/1"] - (lab.base_nll + m["lod_delta/1"])) < 1e-12


def test_a_crash_while_writing_a_part_leaves_no_part_and_no_temp_file(tmp_path, monkeypatch):
    """Parts are written to a temporary file and renamed: a write that dies half-way leaves
    neither a truncated part (which resume would take for finished) nor a stray temp file."""
    import pyarrow as pa

    from megacontext.runtime import tables

    def dying_write(table, where):
        with open(where, "wb") as f:
            f.write(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(tables.pq, "write_table", dying_write)
    target = tmp_path / "labels" / "00000000.parquet"
    with pytest.raises(KeyboardInterrupt):
        tables.write_table_atomic(pa.table({"x": [1]}), target)
    assert not target.exists() and list(target.parent.iterdir()) == []
    assert not tables.is_labeled(tmp_path, 0)
