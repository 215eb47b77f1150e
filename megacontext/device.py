"""Where tensors live: the compute device of a run, and host tensors (contract §13.4).

Training and evaluation place a model on one compute device (`resolve_device`: "auto" picks CUDA
when one is present, else the CPU). Host data (bytes -> ids, LOD maps, the controller's state,
the tree of gists in the runtime) stays on the CPU and meets the model through `.to(device)`
at the edges, so every tensor a compute path makes names its device: `HOST` for host data, an
input's or parameter's device for the rest. tests/test_device.py checks that rule by running
the POC study on the CPU with `meta` as the default device.

    dev = resolve_device("auto")            # torch.device("cuda") or torch.device("cpu")
    with autocast(dev, "bfloat16"): ...      # bf16 autocast on dev's type, or nothing
"""

from __future__ import annotations

import contextlib

import torch

from .errors import InputError, InputTypeError

HOST = torch.device("cpu")
DTYPES = ("float32", "bfloat16")
_simulating = False  # set by device_sim.simulated_device(): "meta" then stands for a GPU


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The torch.device named by `device`: "auto" (or None) = "cuda" when
    `torch.cuda.is_available()`, else "cpu"; otherwise "cpu", "cuda" or "cuda:N". Raises
    InputTypeError for a non-string, InputError naming the value for an unknown device, one
    this machine does not have, or "mps" (no float64 there)."""
    if device is None or device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else HOST
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device)
        except RuntimeError as e:
            raise InputError(f"device must be 'auto' or a torch device such as 'cpu' or "
                             f"'cuda:0', got {device!r} ({e})") from None
    else:
        raise InputTypeError(f"device must be a str or torch.device, got "
                             f"{type(device).__name__}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(dev)!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {str(dev)!r}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        raise InputError(f"device {str(dev)!r}: not supported (the reference computes rotary "
                         f"angles and validation sums in float64, which MPS lacks)")
    elif dev.type == "meta" and _simulating:
        pass
    elif dev.type != "cpu":
        raise InputError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return dev


def autocast(device: torch.device, dtype: str):
    """A context: bf16 autocast on `device`'s type for dtype "bfloat16", nothing for
    "float32". Raises InputError for another dtype."""
    if dtype == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if dtype == "float32":
        return contextlib.nullcontext()
    raise InputError(f"dtype must be one of {DTYPES}, got {dtype!r}")
