"""Training text for the cycle (contract §13, §16): byte documents split by file.

Real text comes from the corpus of `megacontext.data` (the same documents, names and
train / validation split as base pretraining, so the trainer never evaluates on text the base
was trained on); "synthetic" is a seeded key=value text for tiny runs and tests. Windows of
`length` bytes are drawn seeded from either.
"""

from __future__ import annotations

import torch

from ..data.corpus import CorpusError, Document, load_documents, split_documents
from ..data.long_range import LongRangeTask
from ..device import HOST
from ..errors import ConfigError, InputError


def synthetic_text(n_bytes: int, seed: int) -> bytes:
    """Seeded records `key=value;` with look-ups `key?value;` of earlier keys: the value of a
    look-up is predictable only from context that may lie far back (long-range structure)."""
    g = torch.Generator().manual_seed(seed)
    alphabet = b"abcdefghijklmnopqrstuvwxyz"
    out, seen = bytearray(), []
    while len(out) < n_bytes:
        if seen and float(torch.rand(1, generator=g, device=HOST)) < 0.4:
            k, v = seen[int(torch.randint(len(seen), (1,), generator=g, device=HOST))]
            out += k + b"?" + v + b";\n"
        else:
            idx = torch.randint(len(alphabet), (6,), generator=g, device=HOST).tolist()
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
                                  dtype=torch.float64, device=HOST)

    def sample(self, g: torch.Generator) -> torch.Tensor:
        """[length] int64 bytes: a document drawn in proportion to its window count, then an
        offset uniformly."""
        i = int(torch.multinomial(self.sizes, 1, generator=g))
        off = int(torch.randint(int(self.sizes[i]), (1,), generator=g, device=HOST))
        data = self.docs[i].data[off: off + self.length]
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64)


class MixedWindows:
    """Training windows where a `fraction` of draws are long-range examples (`task`, each of
    `windows.length` bytes): `sample(g)` draws u ~ U[0, 1) from g, then either
    `task.example(i)` with i drawn from g, or `windows.sample(g)`."""

    def __init__(self, windows: Windows, task: LongRangeTask, fraction: float):
        self.windows, self.task, self.fraction = windows, task, float(fraction)
        self.length = windows.length
        self.docs = windows.docs

    def sample(self, g: torch.Generator) -> torch.Tensor:
        if float(torch.rand(1, generator=g, device=HOST)) < self.fraction:
            i = int(torch.randint(2**31 - 1, (1,), generator=g, device=HOST))
            return torch.tensor(list(self.task.example(i).text), dtype=torch.int64, device=HOST)
        return self.windows.sample(g)


def training_windows(cfg) -> tuple[Windows | MixedWindows, Windows]:
    """(train, validation) windows of history + horizon bytes for a `TrainConfig`: the split
    of `split_windows`, with `data.long_range_fraction` of the training draws replaced by
    long-range examples whose query ends exactly at the history (contract §13.3, §16.1).
    Raises ConfigError when the horizon cannot hold the answer (and its '>>\\n' close)."""
    d, length = cfg.data, cfg.history + cfg.horizon
    train, val = split_windows(d.source, cfg.seed, d.synthetic_bytes, d.val_fraction, length)
    if d.long_range_fraction == 0:
        return train, val
    after = cfg.horizon - d.long_range_value_len
    if after < 0:
        raise ConfigError(f"data.long_range_value_len = {d.long_range_value_len} > horizon = "
                          f"{cfg.horizon}: the answer must fit the horizon")
    try:
        task = LongRangeTask(train.docs, length=length, n_records=d.long_range_records,
                             key_len=d.long_range_key_len, value_len=d.long_range_value_len,
                             plant_within=d.long_range_plant_within, seed=cfg.seed,
                             after=after)
    except InputError as e:
        raise ConfigError(f"data.long_range_fraction = {d.long_range_fraction}: the task does "
                          f"not fit history = {cfg.history}, horizon = {cfg.horizon}: {e}"
                          ) from None
    return MixedWindows(train, task, d.long_range_fraction), val


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
