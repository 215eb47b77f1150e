"""Fixed-length byte windows for language-model training and validation (contract §16).

A window of length L is L + 1 consecutive bytes of ONE document: inputs x = bytes[0:L], targets
y = bytes[1:L+1] (int64, values 0..255). Windows never cross a document boundary, so a document
shorter than L + 1 bytes yields none.

Training batches (`WindowSampler.batch(step)`) are a pure function of (documents, L, batch
size, seed, step): every window start is drawn uniformly over all valid starts of all documents
(longer documents give more windows) with a generator seeded by `step_seed(seed, step)`. A run
that resumes at step s therefore sees exactly the batches the uninterrupted run saw.

Validation windows (`validation_windows`) are deterministic and unseeded: the non-overlapping
windows at offsets 0, L, 2L, ... of every document in name order, thinned to at most
`max_windows` evenly spaced ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import torch

from ..device import HOST
from ..errors import check_int
from .corpus import CorpusError, Document


def step_seed(seed: int, step: int) -> int:
    """A 63-bit generator seed for (seed, step): sha256 of "seed:step", first 8 bytes >> 1."""
    digest = hashlib.sha256(f"{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _eligible(docs: Sequence[Document], window: int, what: str) -> list[Document]:
    if not docs:
        raise CorpusError(f"{what}: no documents")
    ok = [d for d in docs if len(d) >= window + 1]
    if not ok:
        longest = max(docs, key=len)
        raise CorpusError(
            f"{what}: window={window} needs documents of at least {window + 1} bytes, but the "
            f"longest of {len(docs)} is {longest.name!r} with {len(longest)} bytes"
        )
    return ok


def _as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


class WindowSampler:
    """Seeded random training windows; `batch(step)` -> (x, y), each int64 [batch_size, window].

    Raises CorpusError if no document holds window + 1 bytes; InputError/InputTypeError for a
    window, batch size or seed that is not a positive int (seed: >= 0).
    """

    def __init__(self, docs: Sequence[Document], window: int, batch_size: int, seed: int = 0):
        self.window = check_int("window", window, minimum=1)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        docs = _eligible(docs, window, "training windows")
        self.data = _as_tensor(b"".join(d.data for d in docs))  # [total bytes] uint8
        lengths = torch.tensor([len(d) for d in docs], dtype=torch.int64, device=HOST)
        self.doc_start = torch.cumsum(lengths, 0) - lengths  # [D] offset of each document
        self.starts_per_doc = lengths - window  # [D] valid window starts per document (>= 1)
        self.cum_starts = torch.cumsum(self.starts_per_doc, 0)  # [D]
        self.num_windows = int(self.cum_starts[-1])
        self.num_documents = len(docs)

    def starts(self, step: int) -> torch.Tensor:
        """[batch_size] int64 offsets into `self.data` of the windows of batch `step`."""
        step = check_int("step", step, minimum=0)
        gen = torch.Generator().manual_seed(step_seed(self.seed, step))
        k = torch.randint(self.num_windows, (self.batch_size,), generator=gen,
                          device=HOST)  # global index
        doc = torch.searchsorted(self.cum_starts, k, right=True)  # [B] document of each
        before = self.cum_starts[doc] - self.starts_per_doc[doc]  # windows of earlier docs
        return self.doc_start[doc] + (k - before)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) int64 [batch_size, window]: bytes and next bytes of `batch_size` windows."""
        offsets = self.starts(step)[:, None] + torch.arange(self.window + 1,
                                                            device=HOST)  # [B, L+1]
        chunk = self.data[offsets].long()
        return chunk[:, :-1], chunk[:, 1:]

    def iterate(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches start, start + 1, ... (resume by passing the next step)."""
        step = check_int("start", start, minimum=0)
        while True:
            yield self.batch(step)
            step += 1


def validation_windows(
    docs: Sequence[Document], window: int, max_windows: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) int64 [n, window], n <= max_windows: deterministic held-out windows (see module).

    Raises CorpusError if no document holds window + 1 bytes.
    """
    window = check_int("window", window, minimum=1)
    max_windows = check_int("max_windows", max_windows, minimum=1)
    chunks = []
    for d in _eligible(docs, window, "validation windows"):
        data = _as_tensor(d.data)
        for off in range(0, len(d) - window, window):
            chunks.append(data[off:off + window + 1])
    if len(chunks) > max_windows:
        keep = torch.linspace(0, len(chunks) - 1, max_windows, device=HOST).round().long().tolist()
        chunks = [chunks[i] for i in keep]
    stacked = torch.stack(chunks).long()
    return stacked[:, :-1], stacked[:, 1:]
