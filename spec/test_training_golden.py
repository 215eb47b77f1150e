"""Golden LOD maps gate every training feature (contract §15).

Each feature of the training cycle has a seeded, single-threaded tiny run (the config of
spec/test_training.py with only the phases the feature needs) whose golden snapshot is the LOD
maps the trained lens policy ends with on two fixed validation probes, each with its loss@H,
plus one rounded metrics line of the last phase. Any change in what a feature teaches the
controller shows up as a diff under golden/test_training_golden/, explained in its commit.
Update on purpose only: `pytest spec/test_training_golden.py --snapshot-update`.
"""

import pytest

from spec.implementation import mc
from spec.test_training import TINY

OFF = {k: {"steps": 0} for k in ("warm_gist", "warm_lens", "b1", "b2", "b3")}
LENS = {"steps": 3, "batch": 2, "snapshots": 2, "warmup": 1, "lr": 1e-2}
ONLY = {"reg": 0.0, "pref": 0.0, "rank": 0.0, "budget": 0.0}


def phases(**on):
    out = {k: dict(v) for k, v in OFF.items()}
    for k, v in on.items():
        out[k] = dict(TINY["phases"][k], **v)
    return out


def lens_only(loss=None, mc_=None):
    over = {"phases": phases(warm_lens=LENS)}
    if loss:
        over["loss"] = dict(TINY["loss"], **loss)
    if mc_:
        over["mc"] = dict(TINY["mc"], **mc_)
    return over


# feature -> config overrides of the tiny run
FEATURES = {
    "target_mode_utilities": lens_only({"target_mode": "utilities"}),
    "target_mode_best": lens_only({"target_mode": "best", "n_variants": 4}),
    "lens_term_reg": lens_only({"lens": dict(ONLY, reg=1.0)}),
    "lens_term_pref": lens_only({"lens": dict(ONLY, pref=1.0)}),
    "lens_term_rank": lens_only({"lens": dict(ONLY, rank=1.0)}),
    "lens_term_budget": lens_only({"lens": dict(ONLY, budget=1.0)}),
    "collapse_weight": lens_only({"lens": {"collapse_weight": 4.0}}),
    "legality_masking": lens_only({"legality_mask": True}),
    "variant_weights": lens_only({"target_mode": "best", "n_variants": 4,
                                  "variant_weights": True}),
    "hysteresis": {"phases": phases(b2=LENS), "mc": dict(TINY["mc"], min_residency=6)},
    "b1": {"phases": phases(b1={"steps": 3, "lr": 1e-2})},
    "b2": {"phases": phases(b2=LENS)},
    "b3": {"phases": phases(b3={"steps": 3, "lr": 1e-2})},
    "warm_start": {"phases": phases(warm_gist={"steps": 3, "lr": 1e-2}, warm_lens=LENS)},
}


def config(feature):
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    data.update(FEATURES[feature])
    return mc.train_config_from_dict(data)


def snapshot_text(cfg, result) -> str:
    lines = []
    for i, (lod_map, loss) in enumerate(mc.probe_maps(cfg, result.models, n=2)):
        lines += [f"probe {i}: loss@H = {loss:.4f} nats/token", lod_map]
    last = result.phases[-1]
    metrics = " ".join(f"{k}={v:.4f}" for k, v in sorted(last.metrics.items())
                       if isinstance(v, float))
    lines.append(f"{last.phase.label} steps={last.steps} {metrics}")
    return "\n".join(lines)


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_feature_golden(feature, golden):
    """The LOD maps and metrics a tiny run of this feature produces are the golden ones."""
    cfg = config(feature)
    assert snapshot_text(cfg, mc.train(cfg, None)) == golden


def test_resume_golden(tmp_path, golden):
    """A run resumed after its B1 checkpoint produces the golden LOD maps of the whole run."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    data["phases"] = phases(b1={"steps": 2, "lr": 1e-2}, b2=LENS)
    cfg = mc.train_config_from_dict(data)
    mc.train(cfg, tmp_path, stop_after=1)
    ckpt = next((tmp_path / "checkpoints").iterdir())
    assert snapshot_text(cfg, mc.train(cfg, tmp_path / "resumed", resume=ckpt)) == golden
