"""The synthetic long-range task (contract §16): key -> value records planted early in real text,
one of them queried at the end.

An example is exactly `length` bytes:

    filler text with n_records records  b"\\n<<KEY: VALUE>>\\n"  inserted in its first
    `plant_within` fraction (each at the byte after a newline when there is one), then the
    query  b"\\n<<KEY: "  for one of the planted keys, then that key's VALUE (the answer);
    with n_queries > 1, that many distinct keys are queried in turn, each answer closed by
    b">>\\n" before the next query; with after > 0, the last answer is followed by b">>\\n"
    and after - 3 more bytes of the filler's document (so an answer can sit at a chosen offset,
    e.g. right after a training history, with real text in the rest of the horizon).

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


CLOSE = b">>\n"  # what closes a record, and an answer that another query or text follows


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
    queried: int  # which record (index into record_starts) the last query asks for
    # every query's answer span [start, end) in text order (the last one is answer_start/end)
    # and the record each asks for
    answer_spans: tuple[tuple[int, int], ...] = ()
    queries: tuple[int, ...] = ()

    @property
    def prompt(self) -> bytes:
        return self.text[: self.answer_start]

    @property
    def answer(self) -> bytes:
        return self.text[self.answer_start: self.answer_end]

    @property
    def record_values(self) -> tuple[tuple[int, int], ...]:
        """[start, end) byte offsets in `text` of every planted record's VALUE, in record
        order (where an answer is read from: a focus policy must hold the queried one at full
        detail to copy it)."""
        head = len(query_bytes(self.key))  # "\n<<KEY: ": keys have one length
        return tuple((s + head, s + head + len(self.value)) for s in self.record_starts)

    @property
    def record_value(self) -> tuple[int, int]:
        """[start, end) of the queried record's value: `record_values[queried]`."""
        return self.record_values[self.queried]


class LongRangeTask:
    """Seeded generator of `LongRangeExample`s over real text; `example(i)` for i >= 0.

    Raises InputError if the records and queries leave no room for filler
    (`length <= n_records * (key_len + value_len + 8) + n_queries * (key_len + 4 + value_len)
    + 3 * (n_queries - 1) + after`), for a plant_within outside (0, 1], for n_queries outside
    [1, n_records], or for 0 < after < 3; CorpusError if no document holds the filler.
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
        n_queries: int = 1,
        after: int = 0,
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
        self.n_queries = check_int("n_queries", n_queries, minimum=1)
        if n_queries > n_records:
            raise InputError(f"n_queries={n_queries} > n_records={n_records}: each query asks "
                             f"for a distinct planted key")
        self.after = check_int("after", after, minimum=0)
        if 0 < after < len(CLOSE):
            raise InputError(f"after={after}: the bytes after the last answer start with "
                             f"{CLOSE!r}, so after must be 0 or >= {len(CLOSE)}")
        self.plant_within = float(plant_within)
        overhead = (n_records * len(record_bytes(b"k" * key_len, b"v" * value_len))
                    + n_queries * (len(query_bytes(b"k" * key_len)) + value_len)
                    + len(CLOSE) * (n_queries - 1) + after)
        self.filler_len = length - overhead
        self._tail_len = max(after - len(CLOSE), 0)  # document bytes after the last answer
        if self.filler_len < 1:
            raise InputError(f"length={length} leaves no room for filler: the records and "
                             f"query take {overhead} bytes")
        # the filler is a window of filler_len bytes: window = filler_len - 1, plus its target
        self._sampler = WindowSampler(docs, max(self.filler_len + self._tail_len - 1, 1), 1,
                                      seed)

    def example(self, index: int) -> LongRangeExample:
        index = check_int("index", index, minimum=0)
        rng = random.Random(step_seed(self.seed, index))
        start = int(self._sampler.starts(index)[0])
        window = bytes(self._sampler.data[start:start + self.filler_len + self._tail_len]
                       .tolist())
        filler, rest = window[: self.filler_len], window[self.filler_len:]
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
        # one query: a uniform record (the original draw); more: distinct records in turn
        asked = ([rng.randrange(self.n_records)] if self.n_queries == 1
                 else rng.sample(range(self.n_records), self.n_queries))
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
        offset += len(filler) - prev
        spans = []
        for j, q in enumerate(asked):
            if j:
                parts.append(CLOSE)
                offset += len(CLOSE)
            parts.append(query_bytes(keys[q]))
            offset += len(parts[-1])
            parts.append(values[q])
            spans.append((offset, offset + self.value_len))
            offset += self.value_len
        if self.after:
            parts += [CLOSE, rest]
        text = b"".join(parts)
        assert len(text) == self.length, (len(text), self.length)
        q = asked[-1]
        return LongRangeExample(text, spans[-1][0], spans[-1][1], keys[q], values[q],
                                tuple(record_starts), q, tuple(spans), tuple(asked))
