"""The working context (WC): what the frozen base model sees, and its invariants (contract §3).

A WC is three parallel int64 tensors: `lods[N]`, `starts[N]`, `residency[N]`. Entry i covers
tokens `[starts[i], starts[i] + K**lods[i])`; every entry costs one slot of the budget. The
vectors themselves live in the `MegaContextTree` and are gathered on demand.

Checks and constructions run on numpy views of the (CPU) tensors: at N = 8192 a numpy pass
costs about a microsecond where a torch op costs several, and the focus step is budgeted at
half a millisecond in all.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ..device import HOST
from ..errors import (
    AlignmentError,
    BudgetError,
    ContiguityError,
    CoverageError,
    InputError,
    InputTypeError,
    LevelError,
    TailError,
    check_int,
)
from .config import MCConfig


def as_numpy(t: torch.Tensor) -> np.ndarray:
    """A numpy view of an int64 CPU tensor (a copy only if it lives elsewhere)."""
    try:
        return t.numpy()  # the common case, half the cost of detach().cpu().numpy()
    except (RuntimeError, TypeError):  # requires grad, or not on the CPU
        return t.detach().cpu().numpy()


@dataclass(frozen=True, eq=False)
class WorkingContext:
    """What the base model sees: N entries, each one slot of the budget (contract §3, §4.3).

    Fields (each a 1-D torch.int64 tensor of length N, entries in position order):
      lods       [N] level of detail of each entry: 0 = one token, l >= 1 = one gist covering
                 K**l tokens.
      starts     [N] first token each entry covers (tokens); entry i covers
                 [starts[i], starts[i] + K**lods[i]).
      residency  [N] focus steps since the entry was created (0 for a new entry; hysteresis
                 lets an entry be acted on only once residency >= MCConfig.min_residency).

    Construction checks types and shapes only (InputTypeError for a non-tensor or a dtype other
    than int64, InputError for a non-1-D field or mismatched lengths, naming the field); the six
    invariants are checked by `validate(cfg, T)` and by every operation that takes a WC.
    `spans`, `ends`, `positions` derive [N] int64 tensors; two WCs are equal when all three
    fields are equal. Vectors are not stored here: `MegaContextTree.gather(wc)` fetches them.
    """

    lods: torch.Tensor  # [N] int64, level of detail of each entry
    starts: torch.Tensor  # [N] int64, first token covered
    residency: torch.Tensor  # [N] int64, focus steps since the entry was created

    def __post_init__(self):
        n = None
        for name in ("lods", "starts", "residency"):
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor):
                raise InputTypeError(
                    f"WorkingContext.{name} must be a torch.Tensor, got {type(t).__name__}"
                )
            if t.dtype != torch.int64:
                raise InputTypeError(f"WorkingContext.{name} must be int64, got {t.dtype}")
            if t.ndim != 1:
                raise InputError(
                    f"WorkingContext.{name} must be 1-D, got shape {tuple(t.shape)}"
                )
            if n is None:
                n = t.shape[0]
            elif t.shape[0] != n:
                raise InputError(
                    f"WorkingContext.{name} has length {t.shape[0]}, expected {n} "
                    f"(the length of lods)"
                )

    @classmethod
    def from_numpy(cls, lods, starts, residency=None) -> WorkingContext:
        """A WC over int64 arrays (copied only if not already contiguous int64)."""
        lods = np.ascontiguousarray(lods, dtype=np.int64)
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        res = np.zeros_like(lods) if residency is None else residency
        res = np.ascontiguousarray(res, dtype=np.int64)
        return cls(torch.from_numpy(lods), torch.from_numpy(starts), torch.from_numpy(res))

    @classmethod
    def _from_trusted(cls, lods: np.ndarray, starts: np.ndarray, residency: np.ndarray):
        """A WC over arrays the caller built itself: contiguous int64, 1-D, of one length.

        Skips `__post_init__`'s re-checks (several µs of tensor attribute reads per call); for
        internal callers (the focus step) only — everything else goes through the checks.
        """
        wc = object.__new__(cls)
        object.__setattr__(wc, "lods", torch.from_numpy(lods))
        object.__setattr__(wc, "starts", torch.from_numpy(starts))
        object.__setattr__(wc, "residency", torch.from_numpy(residency))
        return wc

    def __len__(self) -> int:
        return self.lods.shape[0]

    def __eq__(self, other) -> bool:
        if not isinstance(other, WorkingContext):
            return NotImplemented
        return (
            torch.equal(self.lods, other.lods)
            and torch.equal(self.starts, other.starts)
            and torch.equal(self.residency, other.residency)
        )

    __hash__ = None

    def __repr__(self) -> str:
        counts = torch.bincount(self.lods.clamp(min=0)).tolist() if len(self) else []
        return f"WorkingContext(N={len(self)}, entries_per_lod={counts})"

    def spans(self, cfg: MCConfig) -> torch.Tensor:
        """[N] tokens covered by each entry: `K**lod`."""
        return torch.from_numpy(cfg.block_size ** as_numpy(self.lods))

    def ends(self, cfg: MCConfig) -> torch.Tensor:
        """[N] one past the last token covered by each entry."""
        return self.starts + self.spans(cfg)

    def positions(self, cfg: MCConfig) -> torch.Tensor:
        """[N] RoPE position: a token's index; a gist's span centre `start + span // 2`."""
        return self.starts + self.spans(cfg) // 2

    def validate(self, cfg: MCConfig, T: int) -> None:
        """Raise the `InvariantError` subclass of the first broken invariant (contract §3)."""
        validate_arrays(as_numpy(self.lods), as_numpy(self.starts), as_numpy(self.residency),
                        T, cfg)


def span_table(cfg: MCConfig) -> np.ndarray:
    """[max_lod + 1] int64: `span(l) = K**l` for every level (indexed by lod). Read-only."""
    return _span_table(cfg.block_size, cfg.max_lod)


@functools.lru_cache(maxsize=64)
def _span_table(K: int, max_lod: int) -> np.ndarray:
    table = K ** np.arange(max_lod + 1, dtype=np.int64)
    table.flags.writeable = False
    return table


def is_multiple(values: np.ndarray, divisors: np.ndarray, K: int) -> np.ndarray:
    """`values % divisors == 0` for divisors that are powers of K.

    int64 division has no SIMD path and costs ~20 µs at N = 8192; for a power-of-two K (the
    default) a bit mask gives the same answer ~10x faster.
    """
    if K & (K - 1) == 0:
        return (values & (divisors - 1)) == 0
    return values % divisors == 0


def misaligned_any(starts: np.ndarray, spans: np.ndarray, K: int) -> bool:
    """Whether any start is not a multiple of its span (spans are powers of K)."""
    if K & (K - 1) == 0:
        low = spans - 1
        low &= starts  # in place: one temporary fewer to allocate and stream through cache
        return np.count_nonzero(low) > 0  # faster than .any() (no ufunc reduction)
    return bool((starts % spans).any())


def validate_arrays(
    lods: np.ndarray,
    starts: np.ndarray,
    residency: np.ndarray,
    T: int,
    cfg: MCConfig,
    *,
    check_budget: bool = True,
) -> np.ndarray:
    """Check every invariant of contract §3, in a fixed order, naming the first offending entry.

    Order: level range, alignment, complete span, contiguity, coverage, tail, budget — so a WC
    breaking exactly one invariant always reports that one. Returns the entries' spans [N]
    (callers that go on to use them save a pass). Each check first asks a cheap question
    (a min/max, one comparison of whole arrays) and builds the per-entry mask that names the
    offender only when that question fails.
    """
    return validate_layout(lods, starts, residency, T, cfg, check_budget=check_budget)[0]


class Layout(NamedTuple):
    """What validating a WC computes on the way, for callers that go on to use it."""

    spans: np.ndarray  # [N] K**lods
    ends: np.ndarray  # [N] starts + spans
    # The first row whose entry reaches into the protected tail (N if none): rows from there
    # on are LOD0 tokens in no sibling group, so no gist or group member is there.
    first_in_tail: int
    head_min_residency: int  # min(residency[:first_in_tail]); 0 if first_in_tail == 0


def validate_layout(
    lods: np.ndarray,
    starts: np.ndarray,
    residency: np.ndarray,
    T: int,
    cfg: MCConfig,
    *,
    check_budget: bool = True,
) -> Layout:
    """`validate_arrays`, returning what it learnt about a valid WC as a `Layout`."""
    T = check_int("T", T, minimum=0)
    if not isinstance(cfg, MCConfig):
        raise InputTypeError(f"cfg must be an MCConfig, got {type(cfg).__name__}")
    K, max_lod = cfg.block_size, cfg.max_lod
    n = lods.shape[0]
    if n == 0:
        if T > 0:
            raise CoverageError(f"the WC is empty but the tree holds T={T} tokens", None)
        return Layout(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0, 0)

    # Fast path for the common, valid case: one pass per question, and none of the per-entry
    # masks. Contiguity, a first start >= 0 and a last end == T imply every gist's span is
    # complete; the lods' uint64 view is > max_lod for negative lods too.
    # The residency minimum is taken in two parts, before and in the tail (see `Layout`).
    if lods.view(np.uint64).max() <= max_lod:
        spans = span_table(cfg)[lods]
        ends = starts + spans
        first_in_tail = int(ends.searchsorted(cfg.tail_start(T), "right"))
        head_min = int(residency[:first_in_tail].min()) if first_in_tail else 0
        if (head_min >= 0 and (first_in_tail == n or residency[first_in_tail:].min() >= 0)
                and starts[0] >= 0 and ends[-1] == T
                and not np.count_nonzero(ends[:-1] != starts[1:])
                and not misaligned_any(starts, spans, K)
                and not np.count_nonzero(lods[first_in_tail:])
                and (not check_budget or n <= cfg.budget)):
            return Layout(spans, ends, first_in_tail, head_min)

    # Something is wrong: the checks in their fixed order, naming the first offender.
    if residency.min() < 0:
        i = int(np.argmax(residency < 0))
        raise InputError(f"residency[{i}] = {residency[i]} is negative")

    if lods.min() < 0 or lods.max() > max_lod:
        i = int(np.argmax((lods < 0) | (lods > max_lod)))
        raise LevelError(f"entry {i} has lod {lods[i]} outside [0, {max_lod}]", i)

    spans = span_table(cfg)[lods]
    aligned = is_multiple(starts, spans, K)
    if not aligned.all():
        i = int(np.argmax(~aligned))
        raise AlignmentError(
            f"entry {i} (lod {lods[i]}) starts at {starts[i]}, not a multiple of span {spans[i]}",
            i,
        )

    ends = starts + spans
    if ends.max() > T:  # only then can a gist run past the history
        bad = (lods > 0) & (ends > T)
        if bad.any():
            i = int(np.argmax(bad))
            raise LevelError(
                f"entry {i} is an LOD{lods[i]} gist over [{starts[i]}, {ends[i]}), an incomplete "
                f"span (T={T}): a gist exists only once its whole span is in the tree",
                i,
            )

    if n > 1 and not np.array_equal(ends[:-1], starts[1:]):
        i = int(np.argmax(ends[:-1] != starts[1:])) + 1
        prev_start, prev_end, s = starts[i - 1], ends[i - 1], starts[i]
        kind = "unsorted" if s < prev_start else ("overlap" if s < prev_end else "gap")
        raise ContiguityError(
            f"{kind}: entry {i} starts at {s} but entry {i - 1} covers "
            f"[{prev_start}, {prev_end})",
            i,
        )

    if starts[0] < 0:
        raise CoverageError(f"entry 0 starts at {starts[0]} < 0", 0)
    if ends[-1] != T:
        raise CoverageError(
            f"the last entry {n - 1} ends at {ends[-1]}, but the history ends at T={T}",
            n - 1,
        )

    # Entries are now sorted and contiguous, so those reaching into the tail are a suffix.
    tail = cfg.tail_start(T)
    first = int(np.searchsorted(ends, tail, side="right"))
    if lods[first:].any():
        i = first + int(np.argmax(lods[first:] > 0))
        raise TailError(
            f"entry {i} is an LOD{lods[i]} gist over [{starts[i]}, {ends[i]}) inside the "
            f"protected tail [{tail}, {T})",
            i,
        )

    if check_budget and n > cfg.budget:
        raise BudgetError(f"N = {n} entries exceed the budget {cfg.budget}", cfg.budget)
    return Layout(spans, ends, first, int(residency[:first].min()) if first else 0)


def check_working_context(wc, T, cfg: MCConfig, *, check_budget: bool = True) -> np.ndarray:
    """Type-check `wc` and validate it (the entry check of every public operation).

    Returns the entries' spans [N] as a numpy array.
    """
    if not isinstance(wc, WorkingContext):
        raise InputTypeError(f"wc must be a WorkingContext, got {type(wc).__name__}")
    return validate_arrays(as_numpy(wc.lods), as_numpy(wc.starts), as_numpy(wc.residency), T, cfg,
                    check_budget=check_budget)


# --- the recency baseline -------------------------------------------------------------------


def coarsest_tiling(T: int, cfg: MCConfig) -> tuple[np.ndarray, np.ndarray]:
    """(lods, starts) of the coarsest legal tiling of `[0, T)`, before any eviction.

    Blocks that touch the protected tail, and the partial trailing block, stay LOD0; the
    K-aligned history before them is covered by the largest aligned gists that fit.
    """
    K = cfg.block_size
    a0 = K * (cfg.tail_start(T) // K)  # first token of the LOD0 region
    lods, starts, p = [], [], 0
    for lod in range(cfg.max_lod, 0, -1):
        span = cfg.span(lod)
        count = (a0 - p) // span
        lods.append(np.full(count, lod, dtype=np.int64))
        starts.append(p + span * np.arange(count, dtype=np.int64))
        p += count * span
    lods.append(np.zeros(T - a0, dtype=np.int64))
    starts.append(np.arange(a0, T, dtype=np.int64))
    return np.concatenate(lods), np.concatenate(starts)


def build_working_context(T: int, cfg: MCConfig) -> WorkingContext:
    """The recency baseline: coarsest legal tiling, then expand newest-first while it fits.

    If even the coarsest tiling exceeds the budget, the oldest entries are evicted (they stay
    in the tree) and nothing is expanded. All entries get residency 0.
    """
    T = check_int("T", T, minimum=0)
    if not isinstance(cfg, MCConfig):
        raise InputTypeError(f"cfg must be an MCConfig, got {type(cfg).__name__}")
    K, budget = cfg.block_size, cfg.budget
    lods, starts = coarsest_tiling(T, cfg)
    n = lods.shape[0]
    if n > budget:
        return WorkingContext.from_numpy(lods[n - budget:], starts[n - budget:])

    # Expand the newest gist while the K-1 extra slots fit. `stack` holds the gists, oldest
    # first; everything after the top of the stack is LOD0 up to T.
    n_gists = int((lods > 0).sum())
    stack = list(zip(lods[:n_gists].tolist(), starts[:n_gists].tolist(), strict=True))
    while stack and n + K - 1 <= budget:
        lod, start = stack.pop()
        n += K - 1
        if lod > 1:
            child = cfg.span(lod - 1)
            stack.extend((lod - 1, start + j * child) for j in range(K))
    lod0_from = stack[-1][1] + cfg.span(stack[-1][0]) if stack else 0
    g_lods = np.array([e[0] for e in stack], dtype=np.int64)
    g_starts = np.array([e[1] for e in stack], dtype=np.int64)
    return WorkingContext.from_numpy(
        np.concatenate([g_lods, np.zeros(T - lod0_from, dtype=np.int64)]),
        np.concatenate([g_starts, np.arange(lod0_from, T, dtype=np.int64)]),
    )


def append_tokens(wc: WorkingContext, T: int, n: int, cfg: MCConfig) -> WorkingContext:
    """Append LOD0 entries for the new tokens `[T, T + n)` with residency 0.

    `wc` must be a valid WC for `T` tokens except that it may already exceed the budget; the
    result may exceed the budget too, until the next focus step collapses it back.
    """
    n = check_int("n", n, minimum=0)
    check_working_context(wc, T, cfg, check_budget=False)
    new = torch.arange(T, T + n, dtype=torch.int64, device=HOST)
    zeros = torch.zeros(n, dtype=torch.int64, device=HOST)
    return WorkingContext(
        torch.cat([wc.lods, zeros]),
        torch.cat([wc.starts, new]),
        torch.cat([wc.residency, zeros]),
    )
