"""Base pretraining (contract §13): config files, schedule, resume bit-identity, CLI errors.

Every run here is a tiny seeded config on a tiny corpus (well under a second each).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math

import pytest
import torch

from megacontext.cli import main
from megacontext.errors import ConfigError, InputError
from megacontext.training import (
    CheckpointError,
    CheckpointMismatchError,
    PretrainConfig,
    TrainConfig,
    load_base,
    load_checkpoint,
    lr_at,
    pretrain,
    validation_nll,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    g = torch.Generator().manual_seed(0)
    for i in range(12):
        words = torch.randint(0, 20, (300,), generator=g).tolist()
        (root / f"f{i:02d}.py").write_text("".join(f"v{w} = {w}\n" for w in words))
    return str(root)


def tiny_cfg(corpus: str, **train) -> PretrainConfig:
    return PretrainConfig.from_dict({
        "model": {"n_layer": 1, "n_head": 2, "n_embd": 16},
        "data": {"sources": [corpus], "context": 32, "val_fraction": 0.3, "val_windows": 4},
        "train": {"batch_size": 2, "steps": 6, "warmup_steps": 2, "evals": 2, "threads": 1,
                  "dtype": "float32"} | train,
    })


def run(cfg, run_dir, **kw):
    return pretrain(cfg, run_dir, progress=False, out=io.StringIO(), **kw)


# --- config ---------------------------------------------------------------------------------


def test_config_toml_round_trip_and_unknown_keys(tmp_path, corpus):
    cfg = tiny_cfg(corpus, lr=2.5e-3, min_lr=1e-5)
    cfg.to_toml(tmp_path / "c.toml")
    assert PretrainConfig.from_toml(tmp_path / "c.toml") == cfg
    assert PretrainConfig.from_toml(_write(tmp_path, "[train]\nlr = 1\n")).train.lr == 1.0
    with pytest.raises(ConfigError, match="unknown config key 'train.lrr'"):
        PretrainConfig.from_toml(_write(tmp_path, "[train]\nlrr = 0.1\n"))
    with pytest.raises(ConfigError, match="unknown config key 'optim'"):
        PretrainConfig.from_toml(_write(tmp_path, "[optim]\nlr = 0.1\n"))
    with pytest.raises(ConfigError, match="'train.steps' must be an int, got 'ten'"):
        PretrainConfig.from_toml(_write(tmp_path, "[train]\nsteps = 'ten'\n"))
    with pytest.raises(ConfigError, match="'train.dtype'"):
        PretrainConfig.from_toml(_write(tmp_path, "[train]\ndtype = 'float16'\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        PretrainConfig.from_toml(_write(tmp_path, "[train\n"))
    with pytest.raises(ConfigError, match="n_embd=30 must split into n_head=4"):
        PretrainConfig.from_dict({"model": {"n_embd": 30, "n_head": 4}})


def _write(tmp_path, text):
    p = tmp_path / "x.toml"
    p.write_text(text)
    return p


def test_lr_schedule_warmup_then_cosine_to_min_lr():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(1.0) and lrs[99] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[10 + 89 // 2] == pytest.approx(0.55, abs=0.02)


# --- runs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_resume_is_bit_identical_to_the_uninterrupted_run(tmp_path, corpus, dtype):
    cfg = tiny_cfg(corpus, dtype=dtype)
    full = run(cfg, tmp_path / "full")
    part = run(cfg, tmp_path / "part", stop_after=3)
    assert part["step"] == 3 and part["stopped"] == "stop_after=3"
    rest = run(cfg, tmp_path / "part", resume=True)
    assert rest["step"] == full["step"] == 6 and rest["stopped"] is None
    a, ma = load_checkpoint(tmp_path / "full" / "checkpoint")
    b, mb = load_checkpoint(tmp_path / "part" / "checkpoint")
    for name in ("model", "optimizer"):
        assert a[name].keys() == b[name].keys()
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
    assert ma["metrics"]["val_nll"] == mb["metrics"]["val_nll"]
    assert [r["step"] for r in ma["curve"]] == [0, 3, 6]
    assert [r["step"] for r in mb["curve"]] == [0, 3, 6]  # the stop's point is not repeated
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["val_nll"] for x in lines] == [r["val_nll"] for r in ma["curve"]]
    assert ma["curve"][-1]["val_nll"] < ma["curve"][0]["val_nll"]  # it learns


def test_load_base_gives_the_recorded_validation_nll(tmp_path, corpus):
    from megacontext.data import load_documents, split_documents, validation_windows

    cfg = tiny_cfg(corpus)
    run(cfg, tmp_path / "r")
    model, manifest = load_base(tmp_path / "r")
    assert not model.training and manifest["step"] == 6
    split = split_documents(load_documents([corpus]), 0.3)
    x, y = validation_windows(split.validation, 32, 4)
    assert validation_nll(model, x, y) == pytest.approx(manifest["metrics"]["val_nll"], abs=1e-6)
    assert load_base(tmp_path / "r" / "checkpoint")[1]["step"] == 6


def test_run_directory_rules(tmp_path, corpus):
    cfg = tiny_cfg(corpus, steps=2, evals=1)
    with pytest.raises(CheckpointError, match="no checkpoint in run directory"):
        run(cfg, tmp_path / "r", resume=True)
    run(cfg, tmp_path / "r")
    with pytest.raises(InputError, match="already holds a checkpoint"):
        run(cfg, tmp_path / "r")
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=2e-3))
    with pytest.raises(CheckpointMismatchError, match=r"config\.toml.*train\.lr"):
        run(other, tmp_path / "r", resume=True)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "manifest.json").write_text(json.dumps({"format": "nope"}))
    with pytest.raises(CheckpointError, match="not a megacontext-checkpoint/1 manifest"):
        load_base(tmp_path / "x")


def test_time_budget_resolves_the_step_count_and_stops(tmp_path, corpus):
    cfg = tiny_cfg(corpus, steps=10_000, warmup_steps=3)
    out = run(cfg, tmp_path / "r", minutes=0.005)  # 0.3 s
    resolved = PretrainConfig.from_toml(tmp_path / "r" / "config.toml")
    assert resolved.train.steps == out["steps"] and out["steps"] < 10_000
    assert out["step"] <= out["steps"]
    _, man = load_checkpoint(tmp_path / "r" / "checkpoint")
    assert man["step"] == out["step"] and man["config"]["train"]["steps"] == out["steps"]
    assert math.isfinite(man["metrics"]["val_nll"])


# --- CLI ------------------------------------------------------------------------------------


def test_cli_errors_are_one_line_and_status_2(tmp_path, corpus, capsys):
    bad = _write(tmp_path, "[train]\nwarmup = 3\n")
    assert main(["pretrain", "--config", str(bad), "--run-dir", str(tmp_path / "r")]) == 2
    assert "unknown config key 'train.warmup'" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["pretrain", "--corpus", str(tmp_path / "empty"),
                 "--run-dir", str(tmp_path / "r")]) == 2
    assert "is empty" in capsys.readouterr().err
    for argv in (["--minutes", "0"], ["--minutes", "inf"], ["--steps", "0"], ["--seed", "-1"]):
        with pytest.raises(SystemExit) as e:
            main(["pretrain", *argv])
        assert e.value.code == 2
        assert "error: argument" in capsys.readouterr().err


def test_cli_runs_writes_config_and_resumes(tmp_path, corpus, capsys):
    cfg_path = tmp_path / "tiny.toml"
    tiny_cfg(corpus).to_toml(cfg_path)
    r = str(tmp_path / "r")
    assert main(["pretrain", "--config", str(cfg_path), "--run-dir", r, "--no-progress",
                 "--stop-after", "3"]) == 0
    assert main(["pretrain", "--run-dir", r, "--resume", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "done: step 6/6" in out.out and "resuming" in out.err
    assert main(["pretrain", "--write-config", str(tmp_path / "d.toml")]) == 0
    assert PretrainConfig.from_toml(tmp_path / "d.toml") == PretrainConfig()


# --- init from another base (context extension) ----------------------------------------------


def test_init_starts_from_the_given_base_and_checks_its_model(tmp_path, corpus):
    """train.init loads another base's weights before step 0 (so the step-0 validation NLL on
    the same windows equals that base's), a longer context included; a base of another model
    shape is a CheckpointMismatchError naming the key."""
    run(tiny_cfg(corpus), tmp_path / "short")
    short, _ = load_base(tmp_path / "short")
    longer = dataclasses.replace(tiny_cfg(corpus, init=str(tmp_path / "short")),
                                 data=dataclasses.replace(tiny_cfg(corpus).data, context=48))
    result = run(longer, tmp_path / "long", stop_after=1)
    fresh = run(dataclasses.replace(longer, train=dataclasses.replace(longer.train, init="")),
                tmp_path / "fresh", stop_after=1)
    from megacontext.data import load_documents, split_documents, validation_windows

    split = split_documents(load_documents([corpus]), 0.3)
    vx, vy = validation_windows(split.validation, 48, 4)
    want = validation_nll(short, vx, vy)
    assert math.isclose(result["curve"][0]["val_nll"], want, abs_tol=1e-5), (result["curve"], want)
    assert not math.isclose(fresh["curve"][0]["val_nll"], want, abs_tol=1e-3)
    wider = PretrainConfig.from_dict(longer.to_dict() | {"model": {"n_layer": 1, "n_head": 2,
                                                                   "n_embd": 32}})
    with pytest.raises(CheckpointMismatchError, match="n_embd"):
        run(wider, tmp_path / "wider")
