"""Training text for the cycle (contract §13, §16): byte documents split by file.

Real text comes from the corpus of `megacontext.data` (the same documents, names and
train / validation split as base pretraining, so the trainer never evaluates on text the base
was trained on); "synthetic" is a seeded key=value text for tiny runs and tests. Windows of
`length` bytes are drawn seeded from either.
"""

from __future__ import annotations

import torch

from ..data.corpus import CorpusError, Document, load_documents, split_documents
from ..errors import ConfigError, InputError


def synthetic_text(n_bytes: int, seed: int) -> bytes:
    """Seeded records `key=value;` with look-ups `key?value;` of earlier keys: the value of a
    look-up is predictable only from context that may lie far back (long-range structure)."""
    g = torch.Generator().manual_seed(seed)
    alphabet = b"abcdefghijklmnopqrstuvwxyz"
    out, seen = bytearray(), []
    while len(out) < n_bytes:
        if seen and float(torch.rand(1, generator=g)) < 0.4:
            k, v = seen[int(torch.randint(len(seen), (1,), generator=g))]
            out += k + b"?" + v + b";\n"
        else:
            idx = torch.randint(len(alphabet), (6,), generator=g).tolist()
            k, v = bytes(alphabet[i] for i in idx[:3]), bytes(alphabet[i] for i in idx[3:])
            seen.append((k, v))
            seen = seen[-64:]
            out += k + b"=" + v + b";\n"
    return bytes(out[:n_bytes])


def load_docs(source: str, seed: int, synthetic_bytes: int) -> list[Document]:
    """Documents of `source` ("synthetic", or any source of `megacontext.data.load_documents`:
    "stdlib", "pydoc", a directory or a file), sorted by name."""
    if source == "synthetic":
        return [Document(f"synthetic-{i:02d}",
                         synthetic_text(synthetic_bytes // 16, seed * 1000 + i))
                for i in range(16)]
    try:
        return load_documents((source,))
    except CorpusError as e:
        raise ConfigError(f"data.source = {source!r}: {e}") from None


class Windows:
    """Seeded windows of `length` bytes from documents at least that long."""

    def __init__(self, docs: list[Document], length: int, what: str):
        self.docs = [d for d in docs if len(d.data) >= length]
        self.length = length
        if not self.docs:
            longest = max((len(d.data) for d in docs), default=0)
            raise InputError(f"no {what} document holds a window of {length} bytes (history + "
                             f"horizon); the longest has {longest}")
        self.sizes = torch.tensor([len(d.data) - length + 1 for d in self.docs],
                                  dtype=torch.float64)

    def sample(self, g: torch.Generator) -> torch.Tensor:
        """[length] int64 bytes: a document drawn in proportion to its window count, then an
        offset uniformly."""
        i = int(torch.multinomial(self.sizes, 1, generator=g))
        off = int(torch.randint(int(self.sizes[i]), (1,), generator=g))
        data = self.docs[i].data[off: off + self.length]
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64)


def split_windows(source: str, seed: int, synthetic_bytes: int, val_fraction: float,
                  length: int) -> tuple[Windows, Windows]:
    """(train, validation) windows; the synthetic source validates on its last document."""
    docs = load_docs(source, seed, synthetic_bytes)
    if source == "synthetic":
        train, val = docs[:-1], docs[-1:]
    else:
        try:
            split = split_documents(docs, val_fraction)
        except CorpusError as e:
            raise ConfigError(f"data.source = {source!r}, data.val_fraction = {val_fraction}: "
                              f"{e}") from None
        train, val = list(split.train), list(split.validation)
    return Windows(train, length, "training"), Windows(val, length, "validation")
