"""Internals of the training cycle: gist-version stamping, the LR schedule, the phase plan."""

import json
import math

import pytest
import torch

from megacontext.training import cycle
from megacontext.training.train_config import train_config_from_dict
from spec.test_training import TINY


@pytest.fixture(scope="module")
def setup():
    cfg = train_config_from_dict(TINY)
    train_w, _ = cycle.split_windows("synthetic", cfg.seed, 8192, 0.05, cfg.history + cfg.horizon)
    return cfg, cycle.build_models(cfg, train_w), train_w


def test_a_tree_from_another_gistnet_version_is_a_stale_gist_error(setup):
    cfg, models, windows = setup
    g = torch.Generator().manual_seed(0)
    snap = cycle.take_snapshot(cfg, models, windows.sample(g), "recency", 0)
    assert cycle.substitutability(cfg, models, snap, g) is not None
    with torch.no_grad():
        p = next(models.gistnet.parameters())
        p.add_(1e-3)
    try:
        with pytest.raises(cycle.StaleGistError, match="re-gist"):
            cycle.substitutability(cfg, models, snap, g)
        pool = cycle.LabelPool([], snap.gist_version, {})
        with pytest.raises(cycle.StaleGistError, match="label pool"):
            cycle.lens_batch_loss(cfg, models, pool, g, 1)
    finally:
        with torch.no_grad():
            p.sub_(1e-3)


def test_lr_warms_up_linearly_then_follows_a_cosine_to_min_lr():
    lrs = [cycle.lr_at(s, 10, 1.0, 0.1, 2) for s in range(10)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0, lrs
    assert math.isclose(lrs[2], 1.0) and math.isclose(lrs[-1], 0.1), lrs
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False)), lrs


def test_phase_plan_skips_zero_step_phases_and_labels_cycles():
    data = dict(TINY, cycles=2, phases={"warm_lens": {"steps": 0}})
    plan = cycle.phase_plan(train_config_from_dict(data))
    assert [p.label for p in plan] == ["00-warm_gist", "01-b1-c1", "02-b2-c1", "03-b3-c1",
                                       "04-b1-c2", "05-b2-c2", "06-b3-c2"]


def _lens_only(**extra):
    from spec.test_training_golden import FEATURES
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    data.update(FEATURES["target_mode_utilities"])
    data.update(extra)
    return train_config_from_dict(data)


def test_polarity_alarm_warns_loudly_and_can_stop_the_run(tmp_path):
    # this tiny lens run's Spearman is negative at some step (its golden line shows -0.43)
    with pytest.warns(UserWarning, match="POLARITY ALARM"):
        cycle.train(_lens_only(polarity_window=1), tmp_path / "warn")
    rows = [json.loads(x) for x in (tmp_path / "warn" / "metrics.jsonl").read_text().splitlines()]
    alarms = [r for r in rows if r.get("alarm") == "polarity"]
    assert alarms and all(r["spearman"] < 0 for r in alarms), rows
    with pytest.raises(cycle.PolarityAlarm, match="stop_on_polarity"), \
            pytest.warns(UserWarning, match="POLARITY ALARM"):
        cycle.train(_lens_only(polarity_window=1, stop_on_polarity=True), tmp_path / "stop")


def test_report_writes_every_plot_as_png(tmp_path):
    from megacontext.commands.report import report
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    data["phases"] = {k: {"steps": 0} for k in ("warm_gist", "warm_lens", "b1", "b2", "b3")}
    data["phases"]["warm_lens"] = dict(TINY["phases"]["warm_lens"])
    data["eval_windows"] = 1
    cycle.train(train_config_from_dict(data), tmp_path)
    paths = report(tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        ["losses.png", "loss_at_h.png", "loss_vs_budget.png", "lens.png", "swap_residency.png",
         "scores.png", "lod_over_time.png"])
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
    with pytest.raises(cycle.InputError, match="metrics.jsonl"):
        report(tmp_path / "report")


def test_a_fresh_run_never_overwrites_phase_checkpoints_and_report_wants_a_train_dir(tmp_path):
    """Training again into a directory that holds phase checkpoints is an InputError (resume
    instead); `report` on a directory whose metrics are not a train run's is an InputError."""
    from megacontext.commands.report import report

    cfg = _lens_only()
    cycle.train(cfg, tmp_path / "run")
    with pytest.raises(cycle.InputError, match="already holds phase checkpoints"):
        cycle.train(cfg, tmp_path / "run")
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.jsonl").write_text('{"event": "refocus", "T": 32}\n')
    with pytest.raises(cycle.InputError, match="not a `megacontext train` run directory"):
        report(other)


def test_training_text_splits_real_text_as_pretraining_does(tmp_path):
    """The trainer's train / validation documents are the corpus split of `megacontext.data`
    (so it never evaluates on text its base was pretrained on), and a split that leaves no
    validation document is a ConfigError naming the source, never a silent fallback."""
    from megacontext.data import load_documents, split_documents
    from megacontext.training.text import split_windows

    for i in range(40):
        (tmp_path / f"f{i:02d}.txt").write_bytes(bytes([97 + i % 26]) * 300)
    train, val = split_windows(str(tmp_path), 0, 0, 0.2, 64)
    split = split_documents(load_documents([str(tmp_path)]), 0.2)
    assert [d.name for d in val.docs] == [d.name for d in split.validation]
    assert [d.name for d in train.docs] == [d.name for d in split.train]
    with pytest.raises(cycle.ConfigError, match="data.source"):
        split_windows(str(tmp_path / "f00.txt"), 0, 0, 0.2, 64)


def test_long_range_training_windows_put_the_answer_at_the_horizon():
    """With data.long_range_fraction, that share of training draws are long-range examples
    whose query ends exactly at the history (the answer opens the horizon, real text closes
    it); at 0 the draws are the plain windows, unchanged (contract §13.3)."""
    import torch

    from megacontext.data.long_range import query_bytes
    from megacontext.errors import ConfigError
    from megacontext.training.text import MixedWindows, training_windows

    def cfg(**data):
        d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
        d.update(history=96, horizon=16)
        d["data"] = dict(d["data"], **data)
        return train_config_from_dict(d)

    plain, _ = training_windows(cfg())
    assert not isinstance(plain, MixedWindows)
    mixed, _ = training_windows(cfg(long_range_fraction=0.5, long_range_records=2,
                                    long_range_value_len=4))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    draws = [mixed.sample(g1) for _ in range(40)]
    assert all(w.shape == (112,) for w in draws)
    long = [bytes(w.tolist()) for w in draws if b"<<" in bytes(w[:96].tolist())]
    assert 8 <= len(long) <= 32, len(long)  # about half of 40
    for t in long:
        key = t[96 - 4: 96 - 2]
        assert t[96 - 7: 96] == query_bytes(key), t[80:]
        assert t[:96].count(b"<<" + key + b": " + t[96:100] + b">>") == 1, t
        assert t[100:103] == b">>\n"
    assert torch.equal(plain.sample(g2), training_windows(cfg())[0].sample(
        torch.Generator().manual_seed(0)))
    with pytest.raises(ConfigError, match="long_range_value_len = 20 > horizon = 16"):
        training_windows(cfg(long_range_fraction=0.5, long_range_value_len=20))
    with pytest.raises(ConfigError, match="data.long_range_fraction"):
        cfg(long_range_fraction=1.5)
