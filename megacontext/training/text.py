"""Training text for the cycle (contract §13, §16): byte documents split by file.

The data branch's corpus module was not available to this trainer yet, so this is the small
subset the cycle needs: documents from the standard library, a directory / file, or a seeded
synthetic text; a train / validation split by a hash of each file's name; and seeded windows
of `length` bytes.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, InputError


@dataclass(frozen=True)
class Doc:
    name: str
    data: bytes


def is_validation(name: str, val_fraction: float) -> bool:
    """A file validates when the first 8 bytes of sha256(name), as a fraction, are below
    `val_fraction`: stable across machines and independent of the file list."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return h / 2**64 < val_fraction


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


def load_docs(source: str, seed: int, synthetic_bytes: int) -> list[Doc]:
    """Documents of `source` ("stdlib" | "synthetic" | a path), sorted by name."""
    if source == "synthetic":
        return [Doc(f"synthetic-{i:02d}", synthetic_text(synthetic_bytes // 16, seed * 1000 + i))
                for i in range(16)]
    if source == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        files = [p for p in root.rglob("*.py")
                 if "test" not in p.relative_to(root).parts[0] and "site-packages" not in p.parts]
    else:
        root = Path(source)
        if root.is_file():
            files, root = [root], root.parent
        elif root.is_dir():
            files = [p for p in root.rglob("*") if p.is_file()]
        else:
            raise ConfigError(f"data.source = {source!r}: no such file or directory")
    docs = [Doc(str(p.relative_to(root)), p.read_bytes()) for p in sorted(files)]
    docs = [d for d in docs if d.data]
    if not docs:
        raise ConfigError(f"data.source = {source!r}: no non-empty files")
    return docs


class Windows:
    """Seeded windows of `length` bytes from documents at least that long."""

    def __init__(self, docs: list[Doc], length: int, what: str):
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
        val = [d for d in docs if is_validation(d.name, val_fraction)]
        train = [d for d in docs if not is_validation(d.name, val_fraction)]
        if not val or not train:
            train, val = docs[:-1] or docs, docs[-1:]
    return Windows(train, length, "training"), Windows(val, length, "validation")
