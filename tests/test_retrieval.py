"""Retrieval tuning (contract §13.2): batches mark exactly the answer bytes, the two phases
switch as configured, the result loads as a base, and resume is bit-identical. Tiny seeded
configs on a tiny corpus (about a second each)."""

from __future__ import annotations

import io

import pytest
import torch

from megacontext.data import LongRangeTask, load_documents
from megacontext.errors import ConfigError, InputError
from megacontext.training import load_base, load_checkpoint, pretrain
from megacontext.training.retrieval import (
    RetrievalConfig,
    copy_batch,
    retrieval_batch,
    retrieval_finished,
    retrieval_tune,
)
from tests.test_pretrain import corpus, tiny_cfg  # noqa: F401  (the corpus fixture)


def tiny_retrieval(**kw) -> RetrievalConfig:
    return RetrievalConfig(**({"copy_steps": 0, "text_batch": 0, "short_steps": 4,
                               "short_length": 80, "short_batch": 2,
                               "window": 2, "long_steps": 4, "long_batch": 1,
                               "n_records": 2, "n_queries": 2, "key_len": 2, "value_len": 4,
                               "checkpoint_every": 2, "dtype": "float32", "switch_nll": 1e-6}
                              | kw))


@pytest.fixture(scope="module")
def base(corpus, tmp_path_factory):  # noqa: F811
    d = tmp_path_factory.mktemp("base")
    cfg = tiny_cfg(corpus)
    cfg = cfg.from_dict(cfg.to_dict() | {"data": cfg.to_dict()["data"] | {"context": 96}})
    pretrain(cfg, d, progress=False, out=io.StringIO())
    return d


def tune(cfg, base, run_dir, corpus, **kw):  # noqa: F811
    return retrieval_tune(cfg, base, run_dir, sources=(corpus,), val_fraction=0.3,
                          progress=False, out=io.StringIO(), **kw)


def test_batches_mark_exactly_the_answer_bytes(corpus):  # noqa: F811
    task = LongRangeTask(load_documents((corpus,)), length=121, n_records=3, key_len=2,
                         value_len=4, n_queries=3, seed=1)
    x, y, m = retrieval_batch(task, 5, 3)
    assert x.shape == y.shape == m.shape == (3, 120) and torch.equal(x[:, 1:], y[:, :-1])
    for b in range(3):
        ex = task.example(5 * 3 + b)
        want = b"".join(ex.text[a:e] for a, e in ex.answer_spans)
        assert bytes(y[b][m[b]].tolist()) == want and int(m[b].sum()) == 12


def test_phases_switch_and_the_result_loads_as_a_base(base, corpus, tmp_path):  # noqa: F811
    out = tune(tiny_retrieval(switch_nll=1e-6), base, tmp_path / "a", corpus)
    assert out["finished"] and out["long_from"] == 4 and out["step"] == 8, out  # short ran out
    fast = tune(tiny_retrieval(switch_nll=100.0), base, tmp_path / "b", corpus)
    assert fast["long_from"] == 2 and fast["step"] == 6, fast  # switched at the first window
    model, manifest = load_base(tmp_path / "a")
    assert manifest["retrieval"]["short_steps"] == 4 and manifest["finished"]
    assert retrieval_finished(tmp_path / "a")
    before, _ = load_base(base)
    assert any(not torch.equal(p, q) for p, q in zip(model.state_dict().values(),
                                                      before.state_dict().values(), strict=True))


def test_copy_phase_comes_first_and_text_windows_keep_the_lm(base, corpus, tmp_path):  # noqa: F811
    x, y, m = copy_batch(3, 7, 2, 8)
    assert x.shape == (2, 17) and torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(y[m].view(2, 8), x[:, 1:9]) and int(m.sum()) == 16  # the repeat
    out = tune(tiny_retrieval(copy_steps=2, copy_length=8, text_batch=1, switch_nll=100.0),
               base, tmp_path / "c", corpus)
    assert out["finished"] and out["long_from"] == 4 and out["step"] == 8, out
    phases = [r["phase"] for r in load_base(tmp_path / "c")[1]["curve"]]
    assert phases == ["copy", "short", "long", "long"], phases


def test_resume_is_bit_identical(base, corpus, tmp_path):  # noqa: F811
    cfg = tiny_retrieval(copy_steps=2, copy_length=8, text_batch=1)
    tune(cfg, base, tmp_path / "whole", corpus)
    part = tune(cfg, base, tmp_path / "split", corpus, stop_after=4)
    assert not part["finished"] and not retrieval_finished(tmp_path / "split")
    with pytest.raises(InputError, match="already holds a checkpoint"):
        tune(cfg, base, tmp_path / "split", corpus)
    tune(cfg, base, tmp_path / "split", corpus, resume=True)
    a, _ = load_checkpoint(tmp_path / "whole" / "checkpoint")
    b, _ = load_checkpoint(tmp_path / "split" / "checkpoint")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="retrieval.n_queries = 5"):
        RetrievalConfig(n_records=4, n_queries=5)
    with pytest.raises(ConfigError, match="retrieval.checkpoint_every = 150"):
        RetrievalConfig(window=100, checkpoint_every=150)
    with pytest.raises(ConfigError, match="retrieval.plant_within"):
        RetrievalConfig(plant_within=0.0)
