"""Check a code path's device placement on a machine without a GPU (contract §13.4).

`simulated_device()` lends PyTorch's `meta` device the one behaviour of an accelerator that
placement bugs trip over: its tensors hold no data on the host. Run a path with its models and
batches on `SIM` ("meta") and host data on the CPU, and every op that mixes a host tensor (not
0-dim) with a device tensor raises, as on CUDA ("Expected all tensors to be on the same
device"): meta kernels check elementwise ops themselves, and the mode checks every other op
(matmul, linear and embedding would otherwise take a host operand silently), except moves,
copies, indexing with a host index and the `*_as` methods, which CUDA allows too. Where a
value legitimately comes back to the host (`.cpu()`, `.to("cpu")`, `.item()`, `float()`,
`.tolist()`, `.numpy()`, copying into a host tensor), the simulation hands back zeros of the
right shape and dtype, so the path runs on to its end. The numbers are garbage; what the run
proves is that every tensor meets only tensors on its own device.

    with simulated_device():
        run_poc(small_config(), run_dir, device=SIM)   # raises at the first misplaced tensor

What it cannot see: CUDA-only behaviour (kernels, autocast dtypes, memory, timing), and a
value that should come back to the host but never meets a host tensor (a spec checks the
runtime's returns directly).
"""

from __future__ import annotations

import contextlib

import torch
import torch.fx.experimental._config as fx_config
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from . import device as _device

SIM = torch.device("meta")

# the ways a device value reaches the host as data
_SYNC = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__float__,
         torch.Tensor.__int__, torch.Tensor.__bool__, torch.Tensor.__index__}


# ops that may take tensors on two devices on CUDA too: moves and copies, indexing with a host
# index, and methods that read only the other tensor's shape or dtype
_MAY_MIX = {torch.Tensor.to, torch.Tensor.copy_, torch.Tensor.__setitem__,
            torch.Tensor.__getitem__, torch.Tensor.expand_as, torch.Tensor.view_as,
            torch.Tensor.reshape_as, torch.Tensor.type_as}


def _check_one_device(func, args, kwargs) -> None:
    """Raise as CUDA does when a device tensor and a host tensor (not 0-dim) meet in one op.
    Meta kernels check this for elementwise ops only; matmul, linear and embedding would
    otherwise take a host operand silently."""
    if func in _MAY_MIX:
        return
    flat, _ = tree_flatten((args, kwargs))
    tensors = [a for a in flat if isinstance(a, torch.Tensor)]
    if not any(a.is_meta for a in tensors):
        return
    host = [a for a in tensors if not a.is_meta and a.dim() > 0]
    if host:
        name = getattr(func, "__name__", repr(func))
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at "
                           f"least two devices, meta (the simulated device) and "
                           f"{host[0].device}! ({name} with a host tensor of shape "
                           f"{tuple(host[0].shape)})")


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
        _check_one_device(func, args, kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def simulated_device():
    """A context in which `SIM` behaves as an accelerator for placement (module docstring) and
    `resolve_device` accepts it. Boolean-mask indexing on the device assumes every element
    selected (meta tensors have no values to count)."""
    flag = "meta_nonzero_assume_all_nonzero"  # absent in older torch: masks then raise
    before = getattr(fx_config, flag, None)
    if before is not None:
        setattr(fx_config, flag, True)
    _device._simulating = True  # resolve_device accepts SIM
    try:
        with _SimulatedDevice():
            yield SIM
    finally:
        if before is not None:
            setattr(fx_config, flag, before)
        _device._simulating = False
