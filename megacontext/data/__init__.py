"""Byte-level corpora, windows and the synthetic long-range task (contract §16)."""

from .corpus import (
    DEFAULT_VAL_FRACTION,
    CorpusError,
    Document,
    Split,
    is_validation,
    load_documents,
    path_documents,
    pydoc_documents,
    split_documents,
    stdlib_documents,
)
from .long_range import LongRangeExample, LongRangeTask
from .windows import WindowSampler, step_seed, validation_windows

__all__ = [
    "DEFAULT_VAL_FRACTION",
    "CorpusError",
    "Document",
    "LongRangeExample",
    "LongRangeTask",
    "Split",
    "WindowSampler",
    "is_validation",
    "load_documents",
    "path_documents",
    "pydoc_documents",
    "split_documents",
    "stdlib_documents",
    "step_seed",
    "validation_windows",
]
