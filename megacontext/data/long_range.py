"""The synthetic long-range task (contract §16): key -> value records planted early in real text,
one of them queried at the end.

An example is exactly `length` bytes:

    filler text with n_records records  b"\\n<<KEY: VALUE>>\\n"  inserted in its first
    `plant_within` fraction (each at the byte after a newline when there is one), then the
    query  b"\\n<<KEY: "  for one of the planted keys, then that key's VALUE (the answer).

Keys and values are drawn from `ALPHABET` (A-Z, 0-9), keys distinct within an example, so a
model that has not read the record is right on a value byte with probability 1/36. The filler is
`length - overhead` consecutive bytes of one document (drawn like a training window). Example i
is a pure function of (documents, parameters, seed, i), so a benchmark is reproducible and can be
resumed at any index. Score it on the answer span `[answer_start, answer_end)`: greedy decoding
from `prompt` (exact match of `answer`), or the NLL of the answer bytes under teacher forcing.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InputError, check_int
from .corpus import Document
from .windows import WindowSampler, step_seed

ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def record_bytes(key: bytes, value: bytes) -> bytes:
    return b"\n<<" + key + b": " + value + b">>\n"


def query_bytes(key: bytes) -> bytes:
    return b"\n<<" + key + b": "


@dataclass(frozen=True)
class LongRangeExample:
    """`text` (bytes, len == length); the answer is text[answer_start:answer_end] == value."""

    text: bytes
    answer_start: int
    answer_end: int
    key: bytes
    value: bytes
    record_starts: tuple[int, ...]  # byte offset of each planted record in `text`, ascending
    queried: int  # which record (index into record_starts) the query asks for

    @property
    def prompt(self) -> bytes:
        return self.text[: self.answer_start]

    @property
    def answer(self) -> bytes:
        return self.text[self.answer_start: self.answer_end]


class LongRangeTask:
    """Seeded generator of `LongRangeExample`s over real text; `example(i)` for i >= 0.

    Raises InputError if the records and query leave no room for filler
    (`length <= n_records * (key_len + value_len + 8) + key_len + 4 + value_len`), or for
    a plant_within outside (0, 1]; CorpusError if no document holds the filler.
    """

    def __init__(
        self,
        docs: Sequence[Document],
        length: int = 4096,
        n_records: int = 4,
        key_len: int = 6,
        value_len: int = 8,
        plant_within: float = 0.25,
        seed: int = 0,
    ):
        self.length = check_int("length", length, minimum=1)
        self.n_records = check_int("n_records", n_records, minimum=1)
        self.key_len = check_int("key_len", key_len, minimum=1)
        self.value_len = check_int("value_len", value_len, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        if isinstance(plant_within, bool) or not isinstance(plant_within, int | float) \
                or not 0.0 < plant_within <= 1.0:
            raise InputError(f"plant_within must be in (0, 1], got {plant_within!r}")
        if n_records > len(ALPHABET) ** key_len:
            raise InputError(f"n_records={n_records} distinct keys do not exist with "
                             f"key_len={key_len}")
        self.plant_within = float(plant_within)
        overhead = (n_records * len(record_bytes(b"k" * key_len, b"v" * value_len))
                    + len(query_bytes(b"k" * key_len)) + value_len)
        self.filler_len = length - overhead
        if self.filler_len < 1:
            raise InputError(f"length={length} leaves no room for filler: the records and "
                             f"query take {overhead} bytes")
        # the filler is a window of filler_len bytes: window = filler_len - 1, plus its target
        self._sampler = WindowSampler(docs, max(self.filler_len - 1, 1), 1, seed)

    def example(self, index: int) -> LongRangeExample:
        index = check_int("index", index, minimum=0)
        rng = random.Random(step_seed(self.seed, index))
        start = int(self._sampler.starts(index)[0])
        filler = bytes(self._sampler.data[start:start + self.filler_len].tolist())
        keys: list[bytes] = []
        while len(keys) < self.n_records:
            key = bytes(rng.choice(ALPHABET) for _ in range(self.key_len))
            if key not in keys:
                keys.append(key)
        values = [bytes(rng.choice(ALPHABET) for _ in range(self.value_len)) for _ in keys]
        limit = max(1, int(self.plant_within * self.filler_len))
        cuts = []
        for _ in keys:
            pos = rng.randrange(limit)
            nl = filler.find(b"\n", pos, limit)
            cuts.append(nl + 1 if nl >= 0 else pos)
        cuts.sort()
        queried = rng.randrange(self.n_records)
        parts, record_starts, prev, offset = [], [], 0, 0
        for cut, key, value in zip(cuts, keys, values, strict=True):
            parts.append(filler[prev:cut])
            offset += cut - prev
            record_starts.append(offset)
            rec = record_bytes(key, value)
            parts.append(rec)
            offset += len(rec)
            prev = cut
        parts.append(filler[prev:])
        parts.append(query_bytes(keys[queried]))
        parts.append(values[queried])
        text = b"".join(parts)
        assert len(text) == self.length, (len(text), self.length)
        return LongRangeExample(text, self.length - self.value_len, self.length, keys[queried],
                                values[queried], tuple(record_starts), queried)
