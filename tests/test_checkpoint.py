"""Checkpoints (contract §13): round trip, atomicity, integrity, kind/config mismatch."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

from megacontext.errors import InputError
from megacontext.models.tiny_gpt import TinyGPT, TinyGPTConfig
from megacontext.training import checkpoint as ck
from megacontext.training.checkpoint import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    checkpoint_sha256,
    load_checkpoint,
    save_checkpoint,
)

CFG = {"model": {"n_layer": 1, "n_embd": 16}, "seed": 0}


def tiny(seed: int = 0) -> TinyGPT:
    torch.manual_seed(seed)
    return TinyGPT(TinyGPTConfig(n_layer=1, n_head=2, n_embd=16))


def manifest(**extra) -> dict:
    return {"kind": "test", "config": CFG, "step": 3, "metrics": {"val_nll": 1.25}} | extra


def test_round_trip_weights_manifest_and_file_digests(tmp_path):
    model, extra = tiny(), {"a.b": torch.arange(5.0), "step": torch.tensor(7.0)}
    path = save_checkpoint(tmp_path / "ck", {"model": model}, manifest(note="x"),
                           state_dicts={"optimizer": extra})
    states, man = load_checkpoint(path)
    assert set(states) == {"model", "optimizer"}
    for k, v in model.state_dict().items():  # tied lm_head/wte included
        assert torch.equal(states["model"][k], v), k
    assert torch.equal(states["optimizer"]["a.b"], extra["a.b"])
    assert man["kind"] == "test" and man["config"] == CFG and man["step"] == 3
    assert man["metrics"] == {"val_nll": 1.25} and man["note"] == "x"
    assert man["format"] == "megacontext-checkpoint/1" and man["created_at"].endswith("Z")
    for fn, info in man["files"].items():
        data = (path / fn).read_bytes()
        assert info == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}, fn
    fresh = tiny(seed=1)
    fresh.load_state_dict(states["model"])
    x = torch.randint(256, (1, 8))
    assert torch.equal(fresh(x).logits, model(x).logits)


def test_manifest_errors(tmp_path):
    with pytest.raises(InputError, match="'files' is written by save_checkpoint"):
        save_checkpoint(tmp_path / "c", {"m": tiny()}, manifest(files={}))
    with pytest.raises(InputError, match=r"manifest\['kind'\]"):
        save_checkpoint(tmp_path / "c", {"m": tiny()}, {"config": {}})
    with pytest.raises(InputError, match="not a valid file stem"):
        save_checkpoint(tmp_path / "c", {"../m": tiny()}, manifest())
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing")
    assert not (tmp_path / "c").exists()


def test_corrupt_file_is_a_typed_error_naming_it(tmp_path):
    path = save_checkpoint(tmp_path / "ck", {"model": tiny()}, manifest())
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match=r"model\.safetensors.*sha256.*corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointCorruptError):
        checkpoint_sha256(path)
    f.unlink()
    with pytest.raises(CheckpointCorruptError, match="missing"):
        load_checkpoint(path)


def test_other_kind_or_config_is_a_typed_error_naming_file_and_key(tmp_path):
    path = save_checkpoint(tmp_path / "ck", {"model": tiny()}, manifest())
    with pytest.raises(CheckpointMismatchError, match=r"manifest\.json.*kind 'test', "
                                                      r"expected 'tiny_gpt_base'"):
        load_checkpoint(path, kind="tiny_gpt_base")
    other = {"model": {"n_layer": 2, "n_embd": 16}, "seed": 0}
    with pytest.raises(CheckpointMismatchError,
                       match=r"manifest\.json.*model\.n_layer: expected 2, found 1"):
        load_checkpoint(path, config=other)
    load_checkpoint(path, kind="test", config=json.loads(json.dumps(CFG)))  # equal: fine


def test_checkpoint_sha256_names_weights_and_config_not_time(tmp_path):
    a = save_checkpoint(tmp_path / "a", {"model": tiny()}, manifest())
    b = save_checkpoint(tmp_path / "b", {"model": tiny()}, manifest(step=9, metrics={}))
    c = save_checkpoint(tmp_path / "c", {"model": tiny(seed=1)}, manifest())
    d = save_checkpoint(tmp_path / "d", {"model": tiny()}, manifest(config={"seed": 1}))
    digest = checkpoint_sha256(a)
    (tmp_path / "run").mkdir()
    os.rename(a, tmp_path / "run" / "checkpoint")  # a run directory names its checkpoint
    assert checkpoint_sha256(tmp_path / "run") == digest
    assert load_checkpoint(tmp_path / "run")[1]["step"] == 3
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert checkpoint_sha256(b) == digest
    assert checkpoint_sha256(c) != digest and checkpoint_sha256(d) != digest


def test_overwrite_is_atomic_when_a_write_crashes(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "ck", {"model": tiny(0)}, manifest(step=1))
    real_write = ck._write_file
    calls = []

    def crash_on_second_file(p, data):
        calls.append(p)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        real_write(p, data)

    monkeypatch.setattr(ck, "_write_file", crash_on_second_file)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, {"model": tiny(1), "other": tiny(2)}, manifest(step=2))
    monkeypatch.undo()
    states, man = load_checkpoint(path)
    assert man["step"] == 1 and set(states) == {"model"}
    assert torch.equal(states["model"]["wte.weight"], tiny(0).wte.weight)
    assert sorted(os.listdir(tmp_path)) == ["ck"]  # no temp directory left behind


def test_crash_between_the_renames_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "ck", {"model": tiny(0)}, manifest(step=1))
    real_rename = os.rename
    calls = []

    def crash_on_second_rename(a, b):
        calls.append((a, b))
        if len(calls) == 2:  # old moved aside, new not yet in place
            raise OSError("power cut (simulated)")
        real_rename(a, b)

    monkeypatch.setattr(ck.os, "rename", crash_on_second_rename)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, {"model": tiny(1)}, manifest(step=2))
    monkeypatch.undo()
    assert not path.exists()
    _, man = load_checkpoint(path)  # found under .ck.previous, complete and verified
    assert man["step"] == 1
    save_checkpoint(path, {"model": tiny(1)}, manifest(step=2))  # restores, then replaces
    _, man = load_checkpoint(path)
    assert man["step"] == 2 and sorted(os.listdir(tmp_path)) == ["ck"]
