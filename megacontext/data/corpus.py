"""A byte-level corpus from text every Python install ships, split by file (contract §16).

Sources (each yields `Document`s; a document is one file or one topic, its bytes as-is):
  "stdlib"  the standard library's `*.py` files under `sysconfig.get_paths()["stdlib"]`
            (coding; never `site-packages` nor `pydoc_data`; test suites only with
            `include_tests`),
  "pydoc"   `pydoc_data.topics.topics` (prose; one document per topic),
  a path    a directory (every file matching `pattern`, recursively) or one text file.
Nothing is downloaded. Bytes are bytes: any file is valid input (vocab 256).

Train / validation split (contract §16): by document name, never by random order. A document
goes to validation iff the first 8 bytes of sha256(name), read as a big-endian integer, are
below `val_fraction * 2**64`. The name is source-relative ("stdlib/json/decoder.py",
"pydoc/assert", "<dir name>/<relative path>"), so the split of a file does not depend on where
Python is installed, on the order files are listed, or on which other files exist. A single
named file is cut into pieces of `FILE_PIECE_BYTES` bytes ("name@offset") that split the same way.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, InputTypeError

DEFAULT_VAL_FRACTION = 0.05
FILE_PIECE_BYTES = 64 * 1024
TEST_DIRS = frozenset({"test", "tests", "idle_test"})
# installed packages are not the standard library; pydoc_data/topics.py holds the "pydoc"
# source's prose as one huge literal, which would leak validation topics into training
SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "pydoc_data"})


class CorpusError(InputError):
    """A corpus that cannot be built: empty directory, no matching file, nothing to sample."""


@dataclass(frozen=True)
class Document:
    """One file (or topic): `name` is source-relative and decides the split; `data` its bytes."""

    name: str
    data: bytes

    def __len__(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class Split:
    """Documents by split, each list sorted by name."""

    train: tuple[Document, ...]
    validation: tuple[Document, ...]

    def summary(self) -> str:
        def size(docs):
            return f"{len(docs)} documents, {sum(len(d) for d in docs):,} bytes"

        return f"train: {size(self.train)}; validation: {size(self.validation)}"


# --- sources --------------------------------------------------------------------------------


def stdlib_documents(include_tests: bool = False, root: str | os.PathLike | None = None):
    """The standard library's `*.py` files as documents named "stdlib/<relative path>".

    root: the standard library directory (default `sysconfig.get_paths()["stdlib"]`).
    Skips `site-packages` (installed packages, not the standard library), `pydoc_data` (the
    "pydoc" source's prose as a Python literal) and, unless
    `include_tests`, every file under a directory named test, tests or idle_test.
    """
    root = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise CorpusError(f"stdlib root {str(root)!r} is not a directory")
    docs = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if SKIP_DIRS.intersection(parts[:-1]):
            continue
        if not include_tests and TEST_DIRS.intersection(parts[:-1]):
            continue
        docs.append(Document("stdlib/" + "/".join(parts), path.read_bytes()))
    if not docs:
        raise CorpusError(f"no *.py files found under the stdlib root {str(root)!r}")
    return docs


def pydoc_documents():
    """`pydoc_data.topics.topics` (the language reference's prose): one document per topic,
    named "pydoc/<topic>", its text UTF-8 encoded."""
    from pydoc_data.topics import topics

    return [Document(f"pydoc/{k}", topics[k].encode("utf-8")) for k in sorted(topics)]


def path_documents(path: str | os.PathLike, pattern: str = "*"):
    """Documents from a directory (every file whose name matches `pattern`, recursively; named
    "<dir name>/<relative path>") or from one file (pieces of FILE_PIECE_BYTES bytes named
    "<file name>@<offset>", so that it can be split by name).

    Raises CorpusError for a missing path, an empty directory or one with no matching file.
    """
    p = Path(path)
    if p.is_file():
        data = p.read_bytes()
        if not data:
            raise CorpusError(f"corpus file {str(p)!r} is empty")
        return [Document(f"{p.name}@{i}", data[i:i + FILE_PIECE_BYTES])
                for i in range(0, len(data), FILE_PIECE_BYTES)]
    if not p.is_dir():
        raise CorpusError(f"corpus path {str(p)!r} is neither a file nor a directory")
    files = sorted(f for f in p.rglob("*") if f.is_file())
    if not files:
        raise CorpusError(f"corpus directory {str(p)!r} is empty")
    matching = [f for f in files if fnmatch.fnmatch(f.name, pattern)]
    if not matching:
        raise CorpusError(f"no file in corpus directory {str(p)!r} matches pattern {pattern!r} "
                          f"({len(files)} files, e.g. {files[0].name!r})")
    base = p.resolve().name or "root"
    return [Document(f"{base}/" + "/".join(f.relative_to(p).parts), f.read_bytes())
            for f in matching]


def load_documents(
    sources: Sequence[str] = ("stdlib", "pydoc"),
    include_tests: bool = False,
    pattern: str = "*",
) -> list[Document]:
    """Documents of every source ("stdlib", "pydoc" or a path), sorted by name.

    Raises CorpusError if two sources yield the same document name or a source yields nothing.
    """
    if isinstance(sources, str) or not isinstance(sources, Sequence):
        raise InputTypeError(f"sources must be a list of strings, got {sources!r}")
    if not sources:
        raise CorpusError("sources is empty: name at least one of 'stdlib', 'pydoc' or a path")
    docs: list[Document] = []
    for i, src in enumerate(sources):
        if not isinstance(src, str | os.PathLike):
            raise InputTypeError(f"sources[{i}] must be a string, got {src!r}")
        if src == "stdlib":
            docs += stdlib_documents(include_tests)
        elif src == "pydoc":
            docs += pydoc_documents()
        else:
            docs += path_documents(src, pattern)
    docs.sort(key=lambda d: d.name)
    for a, b in zip(docs, docs[1:], strict=False):
        if a.name == b.name:
            raise CorpusError(f"two documents are named {a.name!r}: sources {list(sources)!r} "
                              f"overlap")
    return docs


# --- split ----------------------------------------------------------------------------------


def is_validation(name: str, val_fraction: float = DEFAULT_VAL_FRACTION) -> bool:
    """True iff sha256(name)'s first 8 bytes (big-endian) < val_fraction * 2**64 (§16)."""
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
    return h < int(val_fraction * 2**64)


def split_documents(docs: Iterable[Document], val_fraction: float = DEFAULT_VAL_FRACTION) -> Split:
    """Split documents by name hash (see `is_validation`); both parts sorted by name.

    Raises InputError for val_fraction outside (0, 1), CorpusError if either part is empty.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) \
            or not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    docs = sorted(docs, key=lambda d: d.name)
    train = tuple(d for d in docs if not is_validation(d.name, val_fraction))
    val = tuple(d for d in docs if is_validation(d.name, val_fraction))
    if not train or not val:
        raise CorpusError(
            f"split of {len(docs)} documents at val_fraction={val_fraction} leaves "
            f"{len(train)} train and {len(val)} validation documents; both must be non-empty "
            f"(add files, or change val_fraction)"
        )
    return Split(train, val)
