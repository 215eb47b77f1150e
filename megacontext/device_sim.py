"""Check a code path's device placement on a machine without a GPU (contract §13.4).

`simulated_device()` lends PyTorch's `meta` device the one behaviour of an accelerator that
placement bugs trip over: its tensors hold no data on the host. Run a path with its models and
batches on `SIM` ("meta") and host data on the CPU, and every op that mixes a host tensor with
a device tensor raises, as on CUDA ("Tensor on device meta is not on the expected device
cpu!"). Where a value legitimately comes back to the host (`.cpu()`, `.to("cpu")`, `.item()`,
`float()`, `.tolist()`, `.numpy()`, copying into a host tensor), the simulation hands back
zeros of the right shape and dtype, so the path runs on to its end. The numbers are garbage;
what the run proves is that every tensor meets only tensors on its own device.

    with simulated_device():
        run_poc(small_config(), run_dir, device=SIM)   # raises at the first misplaced tensor

What it cannot see: CUDA-only behaviour (kernels, autocast dtypes, memory, timing) and a host
value that should have been computed on the device but never meets a device tensor.
"""

from __future__ import annotations

import contextlib

import torch
import torch.fx.experimental._config as fx_config
from torch.overrides import TorchFunctionMode

from . import device as _device

SIM = torch.device("meta")

# the ways a device value reaches the host as data
_SYNC = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__float__,
         torch.Tensor.__int__, torch.Tensor.__bool__, torch.Tensor.__index__}


def _host_zeros(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.zeros(t.shape, dtype=dtype or t.dtype, device="cpu")


def _to_target(args, kwargs) -> tuple[torch.device | None, torch.dtype | None]:
    """(device, dtype) a `Tensor.to(...)` call asks for (None: unchanged)."""
    dev, dtype = kwargs.get("device"), kwargs.get("dtype")
    for a in args[1:]:
        if isinstance(a, str | torch.device):
            dev = a
        elif isinstance(a, torch.dtype):
            dtype = a
        elif isinstance(a, torch.Tensor):
            dev, dtype = a.device, a.dtype
    return (torch.device(dev) if dev is not None else None), dtype


class _SimulatedDevice(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        t = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if t is not None and t.is_meta:
            if func in _SYNC:
                return func(_host_zeros(t), *args[1:], **kwargs)
            if func is torch.Tensor.cpu:
                return _host_zeros(t)
            if func is torch.Tensor.to:
                dev, dtype = _to_target(args, kwargs)
                if dev is not None and dev.type == "cpu":
                    return _host_zeros(t, dtype)
        if t is not None and not t.is_meta and func in (torch.Tensor.__setitem__,
                                                         torch.Tensor.copy_):
            src = args[2] if func is torch.Tensor.__setitem__ else args[1]
            if isinstance(src, torch.Tensor) and src.is_meta:  # device -> host copy
                args = (*args[:-1], _host_zeros(src)) if func is torch.Tensor.__setitem__ \
                    else (t, _host_zeros(src), *args[2:])
        return func(*args, **kwargs)


@contextlib.contextmanager
def simulated_device():
    """A context in which `SIM` behaves as an accelerator for placement (module docstring) and
    `resolve_device` accepts it. Boolean-mask indexing on the device assumes every element
    selected (meta tensors have no values to count)."""
    before = fx_config.meta_nonzero_assume_all_nonzero
    fx_config.meta_nonzero_assume_all_nonzero = True
    _device._simulating = True  # resolve_device accepts SIM
    try:
        with _SimulatedDevice():
            yield SIM
    finally:
        fx_config.meta_nonzero_assume_all_nonzero = before
        _device._simulating = False
