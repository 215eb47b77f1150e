"""Training cycle (contract §13): frozen means frozen, bit-identical resume, typed bad input.

Every spec runs one tiny seeded config (synthetic text, a 16-wide base pretrained for a few
steps, history 64, K = 4): seconds in all, single-threaded so results are bit-reproducible.
"""

import dataclasses

import pytest
import torch

from spec.implementation import mc

TINY = {
    "seed": 3, "history": 64, "horizon": 4, "cycles": 1, "threads": 1,
    "mc": {"block_size": 4, "max_lod": 2, "budget": 16, "recent_tokens": 8, "max_actions": 4},
    "base": {"checkpoint": "", "n_layer": 1, "n_head": 2, "n_embd": 16, "pretrain_steps": 150,
             "pretrain_context": 32, "pretrain_batch": 8, "pretrain_lr": 1e-2},
    "data": {"source": "synthetic", "synthetic_bytes": 8192},
    "gistnet": {"n_heads": 2}, "lensnet": {"width": 16, "n_heads": 2, "n_latents": 2},
    "lora": {"rank": 4, "n_blocks": 1},
    "loss": {"spans_per_snapshot": 2, "max_candidates": 8, "price": 0.002},
    "phases": {k: {"steps": 2, "batch": 1, "snapshots": 2, "warmup": 1, "lr": 3e-3}
               for k in ("warm_gist", "warm_lens", "b1", "b2", "b3")},
}
MODULE_OF = {"warm_gist": "gistnet", "warm_lens": "lensnet", "b1": "gistnet", "b2": "lensnet",
             "b3": "lora"}


def tiny(**overrides):
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    data.update(overrides)
    return mc.train_config_from_dict(data)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("full")
    return mc.train(tiny(), d / "run"), d / "run"


def checkpoints(run_dir):
    return sorted(p for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith("."))


def base_weights(models):
    return {n: p.detach().clone() for n, p in models.base.named_parameters()
            if not n.endswith((".down", ".up"))}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_frozen_modules_are_bitwise_unchanged_and_the_trained_one_changes(full_run, tmp_path):
    """In every phase the frozen modules' parameters are bitwise unchanged and the trained
    module's are changed; the base's own weights never change (contract §13)."""
    result, run_dir = full_run
    start = mc.train(tiny(), None, stop_after=0).models  # the models before any phase
    before = {"gistnet": start.gistnet.state_dict(), "lensnet": start.lensnet.state_dict(),
              "lora": {n: p.detach() for n, p in start.base.named_parameters()
                       if n.endswith((".down", ".up"))}}
    ckpts = checkpoints(run_dir)
    assert [c.name.split("-")[1] for c in ckpts] == ["warm_gist", "warm_lens", "b1", "b2", "b3"]
    for ckpt in ckpts:
        after, manifest = mc.load_phase_checkpoint(ckpt)
        trained = MODULE_OF[manifest["phase"]]
        for name in ("gistnet", "lensnet", "lora"):
            if name == trained:
                assert not same(before[name], after[name]), (
                    f"{ckpt.name}: the trained module {name} did not change")
            else:
                changed = [k for k in after[name] if not torch.equal(before[name][k],
                                                                     after[name][k])]
                assert not changed, f"{ckpt.name}: frozen module {name} changed: {changed}"
        before = after
    assert same(base_weights(start), base_weights(result.models)), "the base's weights changed"


def test_resume_from_any_phase_checkpoint_is_bit_identical(full_run, tmp_path):
    """Resuming from any phase checkpoint reproduces the uninterrupted run bit for bit, and an
    interrupted run keeps every checkpoint it wrote (contract §13)."""
    result, run_dir = full_run
    final, _ = mc.load_phase_checkpoint(checkpoints(run_dir)[-1])
    cut = mc.train(tiny(), tmp_path / "cut", stop_after=2)
    kept = checkpoints(tmp_path / "cut")
    assert len(kept) == 2 and len(cut.phases) == 2, [c.name for c in kept]
    for ckpt in checkpoints(run_dir)[1:-1] + kept[-1:]:
        out = tmp_path / f"resumed-{ckpt.parent.parent.name}-{ckpt.name}"
        resumed = mc.train(tiny(), out, resume=ckpt)
        got, _ = mc.load_phase_checkpoint(checkpoints(out)[-1])
        for name in ("gistnet", "lensnet", "lora"):
            diff = [k for k in final[name] if not torch.equal(final[name][k], got[name][k])]
            assert not diff, f"resumed from {ckpt.name}: {name} differs in {diff}"
        assert resumed.phases[-1].metrics == result.phases[-1].metrics


def test_unknown_and_mistyped_keys_are_config_errors_naming_the_key(tmp_path):
    """An unknown key, a mistyped value or an impossible value is a ConfigError naming the
    dotted key; a TOML file's errors name the file too (contract §13)."""
    with pytest.raises(mc.ConfigError, match=r"phases\.b1\.stepz"):
        tiny(phases={"b1": {"stepz": 1}})
    with pytest.raises(mc.ConfigError, match=r"loss\.legality_mask"):
        tiny(loss={"legality_mask": 1})
    with pytest.raises(mc.ConfigError, match=r"lora\.rank"):
        tiny(lora={"rank": 2})
    with pytest.raises(mc.ConfigError, match=r"loss\.target_mode"):
        tiny(loss={"target_mode": "oracle"})
    bad = tmp_path / "bad.toml"
    bad.write_text("history = 64\nhorizn = 4\n")
    with pytest.raises(mc.ConfigError, match=r"bad\.toml.*horizn"):
        mc.load_train_config(bad)


def test_config_round_trips_through_toml(tmp_path):
    """The resolved config written next to the checkpoints reads back equal (contract §13)."""
    cfg = tiny()
    mc.save_train_config(cfg, tmp_path / "c.toml")
    assert mc.load_train_config(tmp_path / "c.toml") == cfg


def test_nothing_to_train_is_a_config_error():
    """A config whose phases all have zero steps is a ConfigError naming the steps keys."""
    off = {k: {"steps": 0} for k in ("warm_gist", "warm_lens", "b1", "b2", "b3")}
    with pytest.raises(mc.ConfigError, match=r"nothing to train.*phases\.b1\.steps"):
        mc.train(tiny(phases=off), None)


def test_resume_from_another_config_names_the_file_and_key(full_run):
    """Resuming from a checkpoint of another config is a CheckpointError naming the manifest
    file and the differing key."""
    _, run_dir = full_run
    ckpt = checkpoints(run_dir)[0]
    other = dataclasses.replace(tiny(), horizon=5)
    with pytest.raises(mc.CheckpointError, match=r"manifest\.json.*horizon"):
        mc.train(other, None, resume=ckpt)
