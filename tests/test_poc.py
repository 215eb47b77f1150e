"""`megacontext poc --small` end to end (contract §16): the report's structure (sections,
criteria, table columns; not its numbers), resumable stages, and bad configs. One tiny seeded
run per module (a few seconds of CPU)."""

import io
import json
import math
import re

import pytest
import torch

from megacontext.errors import ConfigError, InputError
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
    "swap rate, coding (policy-chosen actions/block)", "mean residency, coding (focus steps)",
    "swap rate, prose (policy-chosen actions/block)", "mean residency, prose (focus steps)",
    "ablation costs measurably: learned, GistNet untrained",
    "ablation costs measurably: learned, LensNet untrained",
    "ablation costs measurably: learned, no LoRA",
    "non-causal LensNet's ΔNLL@H lower than causal's, coding",
    "non-causal LensNet's ΔNLL@H lower than causal's, prose",
    "long-range: share of recency's gap to full context closed by learned (answer NLL)",
    "learned beats mean gists + recency, coding", "learned beats mean gists + recency, prose",
]
TABLE_HEADS = [
    "| criterion | measured | limit | holds |",
    "| system | B=32 (1/4) | B=64 (1/2) |",
    "| system | answer NLL | exact match | in focus | NLL in focus | NLL out of focus "
    "| other record in focus |",
    "| system | corpus | actions/block | policy actions/block | expands/block | mean residency "
    "| mean abs score |",
    "| metric | value |",
    "| ablation | corpus | loss@H | cost vs learned |",
]
ABLATION_NAMES = ["learned, GistNet untrained", "learned, LensNet untrained", "learned, no LoRA",
                  "learned LensNet over mean gists", "learned, LensNet without tail gists",
                  "learned with a causal LensNet (own run)"]
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
    abl = table_rows(text, TABLE_HEADS[5])
    assert [r[0] for r in abl] == [a for a in ABLATION_NAMES for _ in range(3)], abl
    assert [r[1] for r in abl] == ["coding", "prose", "long_range"] * len(ABLATION_NAMES), abl
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


def test_swap_rates_policy_chosen_within_all(run):
    """For the focus_step systems the policy-chosen swap rate is a number <= the all-actions
    rate, and the criterion row shows both, judging the policy-chosen one (contract §16.2)."""
    d, report, _ = run
    summary = json.loads((d / "eval" / "summary.json").read_text())
    w = str(summary["meta"]["working_budget"])
    text = report.read_text()
    for corpus in ("coding", "prose"):
        for sysname in ("learned", "random", "no_tail"):
            c = summary["table"][corpus][sysname][w]
            assert 0 <= c["policy_swap_rate"] <= c["swap_rate"], (corpus, sysname, c)
        rec = summary["table"][corpus]["recency"][w]["policy_swap_rate"]
        assert math.isnan(rec), rec  # a rebuilt WC has no forced/chosen split
        c = summary["table"][corpus]["learned"][w]
        row = next(r for r in table_rows(text, TABLE_HEADS[0])
                   if r[0] == f"swap rate, {corpus} (policy-chosen actions/block)")
        want = (f"{c['policy_swap_rate']:.3f} (all actions incl. forced: "
                f"{c['swap_rate']:.3f})")
        assert row[1] == want, (row, c)
        assert row[3] == ("yes" if c["policy_swap_rate"] <= 0.25 else "**no**"), (row, c)


def test_forced_actions_are_those_of_an_all_quiet_step():
    """`forced_actions` (the leading actions while N > budget) equals the action count of
    focus_step on the same WC with all-zero scores (which triggers no expansion, swap or
    voluntary collapse), on every refocus of a random-policy session (contract §5.1)."""
    import torch

    import megacontext as mc
    from megacontext.poc.evaluation import forced_actions

    torch.manual_seed(0)
    base = mc.TinyGPT(mc.TinyGPTConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    cfg = mc.MCConfig(block_size=4, budget=20, recent_tokens=4, min_residency=1)
    s = mc.MegaContextSession(cfg, base, policy="random")
    s.ingest(torch.randint(0, 64, (200,)))
    recs = [r for r in s.records if r.kind == "refocus"]
    got = [forced_actions(r, cfg.budget, cfg.block_size) for r in recs]
    want = [len(mc.focus_step(r.wc_before, torch.zeros(r.n_before), r.T, cfg)[1]) for r in recs]
    assert got == want, (got, want)
    assert sum(got) > 0 and sum(len(r.actions) for r in recs) > sum(got), (
        got, [len(r.actions) for r in recs])


def test_at_full_detail_is_every_byte_raw():
    """`at_full_detail(wc, span)` is True exactly when every byte of the span lies in a LOD0
    entry of the WC, checked against a per-byte coverage map on every span of a random-policy
    session's WCs (the long-range "in focus" column, contract §16.2)."""
    import megacontext as mc
    from megacontext.poc.evaluation import at_full_detail

    torch.manual_seed(1)
    base = mc.TinyGPT(mc.TinyGPTConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    cfg = mc.MCConfig(block_size=4, budget=20, recent_tokens=4, min_residency=1)
    s = mc.MegaContextSession(cfg, base, policy="random")
    seen = set()
    for _ in range(6):
        s.ingest(torch.randint(0, 64, (16,)))
        lod = torch.empty(s.T, dtype=torch.int64)
        for start, level in zip(s.wc.starts.tolist(), s.wc.lods.tolist(), strict=True):
            lod[start: start + cfg.block_size ** level] = level
        for a in range(s.T):
            for b in range(a + 1, min(a + 9, s.T) + 1):
                want = bool((lod[a:b] == 0).all())
                got = at_full_detail(s.wc, (a, b))
                assert got == want, (s.wc.starts.tolist(), s.wc.lods.tolist(), (a, b), got)
                seen.add(want)
    assert seen == {True, False}, seen
    for bad in ((3, 3), (5, 2), (-1, 4)):
        with pytest.raises(InputError, match=re.escape(f"got {bad!r}")):
            at_full_detail(s.wc, bad)


def test_long_range_in_focus_is_summarised_and_reported(run):
    """Every session system's long-range cell says whether the queried value ended in focus;
    the summary's share and split NLLs are consistent with the cells, and the report's
    long-range table shows the share (contract §16.2)."""
    d, report, _ = run
    summary = json.loads((d / "eval" / "summary.json").read_text())
    cells = json.loads((d / "eval" / "cells.json").read_text())["cells"]
    w = str(summary["meta"]["working_budget"])
    rows = {r[0]: r for r in table_rows(report.read_text(), TABLE_HEADS[2])}
    for sysname, name in (("recency", "recency (learned gists)"), ("learned", "learned (lens)"),
                          ("random", "random")):
        mine = [c for k, c in cells.items() if k.startswith("long_range/")
                and k.endswith(f"/{sysname}/{w}")]
        assert mine and all(isinstance(c["in_focus"], bool) for c in mine), mine
        assert all(isinstance(c["other_in_focus"], bool) for c in mine), mine
        c = summary["table"]["long_range"][sysname][w]
        share = sum(x["in_focus"] for x in mine) / len(mine)
        assert c["in_focus"] == pytest.approx(share), (sysname, c, share)
        parts = [(x["loss"], x["in_focus"]) for x in mine]
        hit = [v for v, f in parts if f]
        if hit:
            assert c["loss_in_focus"] == pytest.approx(sum(hit) / len(hit)), (sysname, c)
        assert rows[name][3] == f"{share:.2f}", (rows[name], share)
    full = cells[next(k for k in cells if k.startswith("long_range/") and "/full/" in k)]
    assert "in_focus" not in full, full


def test_measure_reports_the_queried_and_other_records_in_focus(run):
    """`measure` marks the queried value and the other records' values in focus exactly when
    the final working context holds them at LOD0: a sliding window as wide as the history holds
    every byte raw, a narrow one holds none of the early records (contract §16.2)."""
    from megacontext.poc.evaluation import long_range_task, measure
    from megacontext.poc.pipeline import load_systems

    d, _, _ = run
    cfg = small_config()
    stages = json.loads((d / "stages.json").read_text())
    systems = load_systems(cfg, stages["pretrain"]["artifact"], stages["train"]["artifact"])
    T, H = cfg.train.history, 8
    ex = long_range_task(cfg).example(0)
    ids = torch.tensor(list(ex.text))
    others = tuple(v for k, v in enumerate(ex.record_values) if k != ex.queried)
    assert others and ex.record_value[1] <= T - cfg.train.mc.recent_tokens, ex
    for budget, want in ((T, True), (cfg.train.mc.recent_tokens, False)):
        item = {"system": "window", "budget": budget, "T": T, "H": H}
        c = measure(item, systems, ids, cfg, record=ex.record_value, others=others)
        assert c["in_focus"] is want and c["other_in_focus"] is want, (budget, c)
    item = {"system": "window", "budget": T, "T": T, "H": H}
    c = measure(item, systems, ids, cfg, record=ex.record_value)
    assert c["in_focus"] and not c["other_in_focus"], c
    with pytest.raises(InputError, match="others=.* needs record"):
        measure(item, systems, ids, cfg, others=others)


def test_summary_splits_long_range_answers_by_focus():
    """`summarize` gives each long-range system the share of examples with the queried value in
    focus and the mean answer NLL over those and over the rest (hand-made cells)."""
    from megacontext.poc.evaluation import eval_items, summarize

    cfg = small_config()
    items = eval_items(cfg)
    cells = {}
    for k, it in enumerate(items):
        cells[it["key"]] = {"loss": float(k % 7), "exact": False}
        if it["corpus"] == "long_range" and it["system"] != "full":
            cells[it["key"]]["in_focus"] = k % 3 == 0
            cells[it["key"]]["other_in_focus"] = k % 2 == 0
    table = summarize(items, cells, cfg, {})["table"]["long_range"]
    checked = 0
    for sysname, by_budget in table.items():
        for b, c in by_budget.items():
            mine = [cells[it["key"]] for it in items if it["corpus"] == "long_range"
                    and it["system"] == sysname and str(it["budget"] or "full") == b]
            if sysname == "full":
                assert "in_focus" not in c, c
                continue
            hit = [x["loss"] for x in mine if x["in_focus"]]
            miss = [x["loss"] for x in mine if not x["in_focus"]]
            assert c["in_focus"] == pytest.approx(len(hit) / len(mine)), (sysname, c, mine)
            other = sum(x["other_in_focus"] for x in mine) / len(mine)
            assert c["other_in_focus"] == pytest.approx(other), (sysname, c, mine)
            for key, vals in (("loss_in_focus", hit), ("loss_out_of_focus", miss)):
                want = sum(vals) / len(vals) if vals else math.nan
                assert c[key] == pytest.approx(want, nan_ok=True), (sysname, key, c, mine)
            checked += 0 < len(hit) < len(mine)
    assert checked, "no system had a mix of in- and out-of-focus examples"


@pytest.mark.parametrize("in_focus, other, nll_in, nll_out, want", [
    (0.2, 0.1, 0.1, 6.0, ["the focus"]),
    (0.2, 0.6, 0.1, 6.0, ["the focus", "finds records but not the queried key"]),
    (0.2, 0.1, 0.1, 9.0, ["the focus", "detail spent on the wrong records"]),
    (0.8, 0.1, 5.0, 6.0, ["the base"]),
    (0.8, 0.1, 0.1, 6.0, []),
])
def test_long_range_attribution_names_the_part(in_focus, other, nll_in, nll_out, want):
    """The long-range attribution names the focus (in focus < 1/2), a key-blind focus (another
    record in focus more often than the queried one), the detail spent elsewhere (out-of-focus
    answer NLL above recency's) and the base (in-focus answer NLL above the midpoint of
    recency's and full context's), each exactly when its rule holds (§16.2)."""
    from megacontext.poc.report import attribution

    def cell(loss, **kw):
        return {"loss": loss, "vs_learned": 0.0, "n": 4} | kw

    work = "128"
    lr = {"full": {"full": cell(0.4)}, "recency": {work: cell(7.0, in_focus=0.0)},
          "mean_recency": {work: cell(7.0, in_focus=0.0)},
          "learned": {work: cell(5.0, in_focus=in_focus, loss_in_focus=nll_in,
                                 loss_out_of_focus=nll_out, other_in_focus=other)}}
    summary = {"meta": {"working_budget": 128, "long_range": {"n_records": 4}},
               "table": {"long_range": lr}}
    line = attribution(summary)[-1]
    assert line.startswith("- long_range, where the answer comes from"), line
    named = line.split("Responsible: ")[1]
    for part in ("the focus", "finds records but not the queried key",
                 "detail spent on the wrong records", "the base"):
        assert (part in named) == (part in want), (part, named)


def test_the_causal_ablation_is_its_own_trained_causal_system(run):
    """The causal row comes from the train-causal run, whose LensNet is a CausalLensNet and
    whose weights differ from the non-causal run's (contract §16.2)."""
    from megacontext.models.causal_lensnet import CausalLensNet
    from megacontext.poc.pipeline import load_systems

    d, _, _ = run
    stages = json.loads((d / "stages.json").read_text())
    assert "train-causal" in stages["train_causal"]["artifact"], stages
    systems = load_systems(small_config(), stages["pretrain"]["artifact"],
                           stages["train"]["artifact"], stages["train_causal"]["artifact"])
    policy, _, _, lens = systems.spec("causal")
    assert policy == "lens" and type(lens) is CausalLensNet
    assert type(systems.lensnet) is not CausalLensNet
    assert any(not torch.equal(a, b) for a, b in zip(
        lens.state_dict().values(), systems.lensnet.state_dict().values(), strict=True))


def test_rerun_skips_finished_stages(run):
    """A second run with the same config measures nothing again and rewrites the same report."""
    d, report, _ = run
    before = report.read_text()
    cells = (d / "eval" / "cells.json").stat().st_mtime_ns
    out = io.StringIO()
    run_poc(small_config(), d, progress=False, out=out)
    log = out.getvalue()
    for stage in ("pretrain", "retrieval", "train", "train_causal", "evaluate"):
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
    # retrieval tuning, the trainer's long-range draws and the evaluation share one task
    with pytest.raises(ConfigError, match="retrieval.key_len = 3.*eval.key_len = 2"):
        poc_config_from_dict({"retrieval": {"key_len": 3}})
    with pytest.raises(ConfigError, match="train.data.long_range_key_len = 6"):
        poc_config_from_dict({"train": {"data": {"long_range_key_len": 6}}})
    with pytest.raises(ConfigError, match="retrieval.window"):
        poc_config_from_dict({"retrieval": {"window": 0}})
    poc_config_from_dict({"retrieval": {"copy_steps": 0, "short_steps": 0, "long_steps": 0,
                                        "key_len": 3}})  # switched off: not checked
    p = tmp_path / "c.toml"
    p.write_text("[eval\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_poc_config(p)


def test_default_config_file_loads():
    """configs/poc.toml is a valid config whose base reads history + horizon in distribution."""
    from pathlib import Path

    cfg = load_poc_config(Path(__file__).resolve().parents[1] / "configs" / "poc.toml")
    assert cfg.pretrain.data.context >= cfg.train.history + cfg.train.horizon


def test_no_tail_lensnet_scores_as_tail_none():
    """The no_tail ablation's LensNet scores exactly as its source LensNet with tail=None, gets
    no tail from `lens_tail` and refuses one passed anyway (the tail does change the source's
    scores)."""
    import torch

    from megacontext.errors import InputError
    from megacontext.models.lensnet import LensNet, LensNetConfig, lens_tail
    from megacontext.poc.evaluation import NoTailLensNet

    torch.manual_seed(0)
    lens = LensNet(LensNetConfig(d_in=16)).eval()
    with torch.no_grad():
        for p in lens.parameters():
            p.normal_(0, 0.3)
    x, f, tail = torch.randn(10, 16), torch.randn(10, 3), torch.randn(3, 16)
    no_tail = NoTailLensNet.from_lensnet(lens)
    with torch.no_grad():
        got = no_tail(x, f, tail=lens_tail(no_tail, tree=None))
        assert torch.equal(got, lens(x, f)), (got, lens(x, f))
        assert not torch.equal(got, lens(x, f, tail=tail))
        with pytest.raises(InputError, match="tail"):
            no_tail(x, f, tail=tail)
