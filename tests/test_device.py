"""Devices (contract §13.4): `resolve_device` names what it refuses; the POC study (every
stage: pretrain, retrieval, train, evaluate) runs with a foreign default device and on a
simulated accelerator, so no tensor is made on the wrong device and no host tensor meets a
device tensor; on a CUDA machine it runs on the GPU."""

import io
import json
import math
from pathlib import Path

import pytest
import torch

from megacontext.device import HOST, autocast, resolve_device
from megacontext.device_sim import SIM, simulated_device
from megacontext.errors import InputError, InputTypeError
from megacontext.models.tiny_gpt import TinyGPT, TinyGPTConfig
from megacontext.poc import run_poc, small_config
from megacontext.poc.config import poc_config_from_dict, poc_config_to_dict


def lean_config():
    """`small_config` cut to one run of every code path (the simulation costs ~0.1 ms per op):
    3 pretraining steps, retrieval with a plain-text batch, a 64-byte history, one step on one
    snapshot per phase, one coding window at one budget, no causal run."""
    d = poc_config_to_dict(small_config())
    d["pretrain"]["train"].update(steps=3, warmup_steps=1)
    d["retrieval"]["text_batch"] = 1  # the plain-text batches of retrieval tuning too
    d["train"].update(history=64)
    d["train"]["data"]["long_range_fraction"] = 0.0
    d["train"]["mc"].update(budget=32, recent_tokens=8)
    for phase in d["train"]["phases"].values():
        phase.update(steps=1, snapshots=1)
    d["eval"].update(coding_windows=1, prose_windows=0, long_range_examples=0,
                     causal_lensnet=False, budgets=["1/2"], working_budget="1/2")
    return poc_config_from_dict(d)


def cells_of(run_dir) -> dict:
    return json.loads((run_dir / "eval" / "cells.json").read_text())["cells"]


def test_auto_is_cuda_when_present_else_the_cpu():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want
    assert resolve_device(None).type == want
    assert resolve_device("cpu") == HOST == resolve_device(torch.device("cpu"))


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "", "meta", "mps"])
def test_an_unknown_device_is_an_input_error_naming_it(name):
    with pytest.raises(InputError, match=repr(name).replace("(", r"\(")):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_on_a_machine_without_it_is_an_input_error(name):
    with pytest.raises(InputError, match="CUDA is not available"):
        resolve_device(name)


@pytest.mark.parametrize("value", [0, 1.5, ["cpu"]])
def test_a_device_that_is_not_a_name_is_an_input_type_error(value):
    with pytest.raises(InputTypeError, match=type(value).__name__):
        resolve_device(value)


@pytest.mark.parametrize("command", [
    ["pretrain", "--steps", "1", "--no-progress"],
    ["train", str(Path(__file__).parents[1] / "configs" / "train.toml"), "--no-progress"],
    ["poc", "--small", "--no-progress"],
])
def test_a_device_this_machine_lacks_is_a_one_line_cli_error(command, tmp_path, capsys):
    from megacontext.cli import main

    out = tmp_path / "run"
    where = ["--run-dir", str(out)] if command[0] == "pretrain" else ["--out", str(out)]
    rc = main([*command, *where, "--device", "tpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "'tpu'" in err[0], (command, rc, err)
    assert not out.exists()


def test_autocast_takes_float32_or_bfloat16_only():
    with autocast(HOST, "float32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(HOST, "bfloat16"):
        assert torch.is_autocast_enabled("cpu")
    with pytest.raises(InputError, match="'float16'"):
        autocast(HOST, "float16")


def test_tiny_gpt_makes_its_positions_where_its_parameters_are():
    """TinyGPT's default positions and rotary tables are made on the parameters' device, not
    the default one (a CPU `arange` meeting CUDA activations is the bug this names)."""
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=256)).eval()
    ids = torch.arange(12)[None]
    want = model(ids).logits
    with torch.device("meta"):  # anything made without a device now lands on meta
        got = model(ids).logits
    assert got.device == HOST and torch.equal(got, want)


def test_the_simulated_device_fails_where_cuda_would_and_hands_back_zeros():
    """`device_sim` (contract §13.4): a host tensor meeting a device tensor raises; values
    that come back to the host come back as zeros; `resolve_device` takes SIM only inside."""
    from megacontext.device_sim import SIM, simulated_device

    with simulated_device() as dev:
        assert dev == SIM and resolve_device(SIM) == SIM
        w = torch.ones(3, 3, device=dev)
        with pytest.raises(RuntimeError, match="device"):
            w @ torch.ones(3)  # the missing .to(device)
        with pytest.raises(RuntimeError, match="device"):
            torch.nn.functional.linear(torch.ones(2, 3), w)  # meta kernels accept this one
        with pytest.raises(RuntimeError, match="device"):
            torch.nn.functional.embedding(torch.zeros(2, dtype=torch.int64), w)
        y = w @ torch.ones(3).to(dev)
        assert torch.equal(y.cpu(), torch.zeros(3)) and float(y.sum()) == 0.0
        assert y.to("cpu", torch.float64).dtype == torch.float64 and y.tolist() == [0.0] * 3
        host = torch.ones(3)
        host[:] = y  # a device -> host copy
        assert torch.equal(host, torch.zeros(3))
        assert (w + torch.tensor(2.0)).is_meta  # a 0-dim host scalar may meet any device
    with pytest.raises(InputError, match="'meta'"):
        resolve_device("meta")


def test_every_stage_makes_its_tensors_on_a_named_device(tmp_path):
    """Every tensor a stage makes names its device (contract §13.4): with `meta` as torch's
    default device, a tensor made without one lands on meta and fails the run; the study
    still runs to its report on the CPU, every cell finite."""
    torch.set_default_device("meta")
    try:
        report = run_poc(lean_config(), tmp_path, progress=False, out=io.StringIO(),
                         device="cpu")
    finally:
        torch.set_default_device(None)
    cells = cells_of(tmp_path)
    assert cells and all(math.isfinite(c["loss"]) for c in cells.values()), cells
    assert report.is_file()


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_on_a_simulated_device_no_host_tensor_meets_a_device_tensor(tmp_path):
    """Placement (contract §13.4): with the device simulated (`device_sim`: meta stands for a
    GPU; values that come back to the host are zeros) every stage runs to the end, so no op
    of pretrain, retrieval, the trainer's phases or the evaluation mixes a host tensor with a
    device tensor."""
    out = io.StringIO()
    with simulated_device():
        run_poc(lean_config(), tmp_path, progress=False, out=out, device=SIM)
    stages = json.loads((tmp_path / "stages.json").read_text())
    assert {stages[s]["device"] for s in ("pretrain", "retrieval", "train")} == {"meta"}, stages
    assert cells_of(tmp_path) and "[poc] device: meta" in out.getvalue()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_study_runs_on_cuda(tmp_path):
    """`device="cuda"` (contract §13.4): every stage's models run on the GPU; the report is
    written and every cell is finite."""
    report = run_poc(small_config(), tmp_path, progress=False, out=io.StringIO(),
                     device="cuda")
    stages = json.loads((tmp_path / "stages.json").read_text())
    assert {stages[s]["device"] for s in ("pretrain", "retrieval", "train", "train_causal")
            } == {"cuda"}, stages
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["meta"]["device"] == "cuda"
    bad = {k: c["loss"] for k, c in cells_of(tmp_path).items() if not math.isfinite(c["loss"])}
    assert not bad, bad
    assert "device: cuda" in report.read_text()


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_the_runtime_hands_back_host_tensors_from_modules_on_the_device():
    """The runtime (contract §13.4) runs each module on its device and keeps what it returns
    on the host: embeddings, the tree's gists and projections, refocus scores, logits."""
    import megacontext as mc
    from megacontext.runtime.horizon import embed_ids

    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=12, recent_tokens=4)
    with simulated_device() as dev, torch.device(dev):
        base = mc.TinyGPT(mc.TinyGPTConfig(vocab_size=256, n_layer=1, n_head=2, n_embd=16))
        gistnet = mc.GistNet(mc.GistNetConfig(dim=16, block_size=4, n_heads=2, levels=2))
        lensnet = mc.LensNet(mc.LensNetConfig(d_in=16, width=16, n_heads=2, n_latents=2))
        s = mc.MegaContextSession(cfg, base.eval(), gistnet.eval(), lensnet.eval(),
                                  policy="lens")
        ids = torch.arange(40, device=HOST) % 256
        assert embed_ids(base, ids).device == HOST
        s.ingest(ids)
        scored = [r.scores for r in s.records if r.scores is not None]
        assert scored and {t.device for t in scored} == {HOST}
        assert {s.tree.level(lod).device for lod in range(3)} == {HOST}
        assert s.next_logits().device == HOST
        assert isinstance(s.nll(ids[:4]), float)
