"""Typed errors and the input checks that raise them.

Every error names the argument and the offending value or index (contract §4): a port's error
messages need not match ours, but its exception types must subclass the same builtins
(``ValueError`` / ``TypeError``) and the invariant errors must be the named subclasses.
"""

from __future__ import annotations

import torch


class MegaContextError(Exception):
    """Base class of every error raised by megacontext."""


class ConfigError(MegaContextError, ValueError):
    """An `MCConfig` (or another config) that cannot work."""


class InputError(MegaContextError, ValueError):
    """A bad argument value: wrong shape, mismatched lengths, NaN/inf, out of range."""


class InputTypeError(MegaContextError, TypeError):
    """A bad argument type or dtype."""


# --- working-context invariants (contract §3); one subclass per invariant -------------------


class InvariantError(MegaContextError, ValueError):
    """A working context breaks an invariant. `index` is the first offending entry (or None)."""

    invariant = "invariant"

    def __init__(self, message: str, index: int | None = None):
        super().__init__(f"{self.invariant}: {message}")
        self.index = index


class BudgetError(InvariantError):
    """Invariant 1: `N <= budget`."""

    invariant = "budget"


class ContiguityError(InvariantError):
    """Invariant 2: entries sorted, `end[i] == start[i+1]` (no gap, no overlap)."""

    invariant = "contiguity"


class AlignmentError(InvariantError):
    """Invariant 3: `start % span(lod) == 0`."""

    invariant = "alignment"


class LevelError(InvariantError):
    """Invariant 4: `0 <= lod <= max_lod`; a gist only over a complete span."""

    invariant = "level"


class CoverageError(InvariantError):
    """Invariant 5: entries tile `[s, T)`: they end exactly at T and are non-empty when T > 0."""

    invariant = "coverage"


class TailError(InvariantError):
    """Invariant 6: every token of the protected tail `[T - recent_tokens, T)` is at LOD0."""

    invariant = "tail"


# --- argument checks ------------------------------------------------------------------------


def check_int(name: str, value, minimum: int | None = None) -> int:
    """`value` must be a Python int (bools and floats are refused) and `>= minimum`."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputTypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_tensor(
    name: str,
    value,
    *,
    ndim: int | None = None,
    dtype: torch.dtype | None = None,
    floating: bool = False,
    length: int | None = None,
    length_of: str | None = None,
    finite: bool = False,
) -> torch.Tensor:
    """Check a tensor argument; raise a typed error naming `name` and what is wrong."""
    if not isinstance(value, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.ndim != ndim:
        raise InputError(f"{name} must have {ndim} dimension(s), got shape {tuple(value.shape)}")
    if dtype is not None and value.dtype != dtype:
        raise InputTypeError(f"{name} must have dtype {dtype}, got {value.dtype}")
    if floating and not value.is_floating_point():
        raise InputTypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if length is not None and value.shape[0] != length:
        other = f" (the length of {length_of})" if length_of else ""
        raise InputError(f"{name} has length {value.shape[0]}, expected {length}{other}")
    if finite:
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            idx = int(bad.flatten().nonzero()[0])
            raise InputError(
                f"{name} must be finite; {name}[{idx}] = {value.flatten()[idx].item()}"
            )
    return value
