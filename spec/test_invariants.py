"""WorkingContext.validate: every invariant of contract §3 is checked, each by its own
InvariantError subclass naming the first offending entry."""

import pytest
import torch
from hypothesis import given

from spec import strategies as S
from spec.implementation import mc

# K=4, LOD2 spans 16 tokens, protected tail of 6 tokens; a generous budget unless noted.
CFG = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=6)
T = 37  # tail = [31, 37); blocks [28, 32) touch it; [36, 37) is a partial block


def base_entries():
    return S.coarsest_tiling(CFG, T)  # [(2,0), (1,16), (1,20), (1,24), (0,28), ..., (0,36)]


def broken_cases():
    e = base_entries()
    tok = e.index((0, 30))
    yield "gap", e[:tok] + e[tok + 1:], T, CFG, mc.ContiguityError, tok
    yield "overlap", e[:tok] + [(0, 29)] + e[tok:], T, CFG, mc.ContiguityError, tok
    swapped = e[:tok] + [e[tok + 1], e[tok]] + e[tok + 2:]
    yield "unsorted", swapped, T, CFG, mc.ContiguityError, tok
    misaligned = [(0, 0), (0, 1), (1, 2)] + [(0, t) for t in range(6, T)]
    yield "misaligned_start", misaligned, T, CFG, mc.AlignmentError, 2
    yield "lod_above_max", [(3, 0)] + e[1:], T, CFG, mc.LevelError, 0
    yield "lod_negative", e[:tok] + [(-1, 30)] + e[tok + 1:], T, CFG, mc.LevelError, tok
    no_tail = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=0)
    incomplete = [(2, 0), (1, 16), (1, 20), (1, 24), (1, 28), (1, 32), (1, 36)]
    yield "gist_over_incomplete_span", incomplete, T, no_tail, mc.LevelError, 6
    in_tail = [(2, 0), (1, 16), (1, 20), (1, 24), (1, 28)] + [(0, t) for t in range(32, T)]
    yield "tail_not_lod0", in_tail, T, CFG, mc.TailError, 4
    small = mc.MCConfig(block_size=4, max_lod=2, budget=16, recent_tokens=6)
    yield "over_budget", [(0, t) for t in range(T)], T, small, mc.BudgetError, 16
    yield "ends_before_T", e[:-1], T, CFG, mc.CoverageError, len(e) - 2
    yield "ends_after_T", e + [(0, T)], T, CFG, mc.CoverageError, len(e)
    yield "starts_below_zero", [(0, -1)] + e[:], T, CFG, mc.CoverageError, 0


CASES = list(broken_cases())


@pytest.mark.parametrize("name,entries,T_,cfg,error,index", CASES, ids=[c[0] for c in CASES])
def test_each_broken_invariant_raises_its_own_error(name, entries, T_, cfg, error, index):
    """A WC breaking exactly one invariant raises exactly that invariant's error subclass."""
    wc = S.make_wc(entries)
    with pytest.raises(mc.InvariantError) as info:
        wc.validate(cfg, T_)
    assert type(info.value) is error, (
        f"{name}: expected {error.__name__}, got {type(info.value).__name__}: {info.value}\n"
        f"{S.describe(cfg, T_, wc)}"
    )
    assert info.value.index == index, (
        f"{name}: error names entry {info.value.index}, the first offending entry is {index}"
    )


def test_empty_wc_with_history_is_a_coverage_error():
    """T > 0 tokens and no entries: the history is not covered."""
    wc = S.make_wc([])
    with pytest.raises(mc.CoverageError):
        wc.validate(CFG, 5)
    wc.validate(CFG, 0)  # an empty history needs no entries


def test_invariant_errors_are_value_errors():
    """Every invariant error is an InvariantError and a ValueError (catchable generically)."""
    for cls in (mc.BudgetError, mc.ContiguityError, mc.AlignmentError, mc.LevelError,
                mc.CoverageError, mc.TailError):
        assert issubclass(cls, mc.InvariantError) and issubclass(cls, ValueError), cls


@given(S.cases())
def test_valid_working_contexts_validate(case):
    """Any refinement of the coarsest legal tiling within budget is a valid WC."""
    cfg, T, wc = case
    wc.validate(cfg, T)


@given(S.cases())
def test_spans_ends_positions(case):
    """span = K**lod, end = start + span, position = start + span // 2 (a gist's centre)."""
    cfg, T, wc = case
    spans = torch.tensor([cfg.block_size**lod for lod in wc.lods.tolist()], dtype=torch.int64)
    assert torch.equal(wc.spans(cfg), spans), S.describe(cfg, T, wc)
    assert torch.equal(wc.ends(cfg), wc.starts + spans), S.describe(cfg, T, wc)
    assert torch.equal(wc.positions(cfg), wc.starts + spans // 2), S.describe(cfg, T, wc)
    lod0 = wc.lods == 0
    assert torch.equal(wc.positions(cfg)[lod0], wc.starts[lod0]), "a token's position is its index"


@pytest.mark.parametrize(
    "kwargs,error,needle",
    [
        (dict(lods=[0.0], starts=[0], residency=[0]), TypeError, "lods"),
        (dict(lods=[0], starts=[0], residency=[0, 0]), ValueError, "residency"),
        (dict(lods=[[0]], starts=[[0]], residency=[[0]]), ValueError, "lods"),
    ],
)
def test_bad_working_context_fields_raise(kwargs, error, needle):
    """Wrong dtype, mismatched lengths or shapes raise a typed error naming the field."""
    tensors = {k: torch.tensor(v) for k, v in kwargs.items()}
    with pytest.raises(error, match=needle):
        mc.WorkingContext(**tensors)


def test_non_tensor_field_raises_type_error():
    with pytest.raises(TypeError, match="starts"):
        mc.WorkingContext(torch.zeros(1, dtype=torch.int64), [0], torch.zeros(1, dtype=torch.int64))


@pytest.mark.parametrize("bad_T,error", [(-1, ValueError), (3.0, TypeError), ("3", TypeError)])
def test_bad_history_length_raises(bad_T, error):
    """validate(cfg, T) with a negative or non-int T raises a typed error naming T."""
    wc = S.make_wc([(0, 0), (0, 1), (0, 2)])
    with pytest.raises(error, match="T"):
        wc.validate(CFG, bad_T)


def test_negative_residency_raises():
    wc = S.make_wc([(0, 0), (0, 1), (0, 2)], residency=[0, -1, 0])
    with pytest.raises(ValueError, match=r"residency\[1\]"):
        wc.validate(CFG, 3)
