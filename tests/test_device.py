"""Devices (contract §13.4): `resolve_device` names what it refuses, and a model made on one
device computes there whatever the default device is. The whole study's device rule is
checked in tests/test_poc.py (`test_every_tensor_names_its_device`)."""

import pytest
import torch

from megacontext.device import HOST, autocast, resolve_device
from megacontext.errors import InputError, InputTypeError
from megacontext.models.tiny_gpt import TinyGPT, TinyGPTConfig


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
        y = w @ torch.ones(3).to(dev)
        assert torch.equal(y.cpu(), torch.zeros(3)) and float(y.sum()) == 0.0
        assert y.to("cpu", torch.float64).dtype == torch.float64 and y.tolist() == [0.0] * 3
        host = torch.ones(3)
        host[:] = y  # a device -> host copy
        assert torch.equal(host, torch.zeros(3))
        assert (w + torch.tensor(2.0)).is_meta  # a 0-dim host scalar may meet any device
    with pytest.raises(InputError, match="'meta'"):
        resolve_device("meta")
