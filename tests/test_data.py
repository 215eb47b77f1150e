"""Byte corpus, split, window loader and the long-range task (contract §16). Tiny, seeded."""

from __future__ import annotations

import hashlib

import pytest
import torch

from megacontext.data import (
    CorpusError,
    Document,
    LongRangeTask,
    WindowSampler,
    is_validation,
    load_documents,
    path_documents,
    pydoc_documents,
    split_documents,
    stdlib_documents,
    validation_windows,
)
from megacontext.data.long_range import ALPHABET, query_bytes, record_bytes
from megacontext.errors import InputError


def docs_of(n: int, size: int = 300, seed: int = 0) -> list[Document]:
    g = torch.Generator().manual_seed(seed)
    return [Document(f"d/{i:04d}.py", bytes(torch.randint(32, 127, (size + i,), generator=g)
                                              .tolist())) for i in range(n)]


# --- split ----------------------------------------------------------------------------------


def test_split_rule_is_the_documented_hash():
    for name in ("stdlib/os.py", "pydoc/assert", "x/y/z.txt", "é/ü"):
        h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
        assert is_validation(name, 0.3) == (h < int(0.3 * 2**64)), name


def test_split_is_deterministic_disjoint_and_order_free():
    docs = docs_of(400, size=2)
    a = split_documents(docs, 0.1)
    b = split_documents(list(reversed(docs)), 0.1)
    assert a == b
    names_t, names_v = {d.name for d in a.train}, {d.name for d in a.validation}
    assert not names_t & names_v
    assert names_t | names_v == {d.name for d in docs}
    # ~10% go to validation: binomial(400, 0.1) has sd 6
    assert 16 <= len(a.validation) <= 64, len(a.validation)
    # removing documents never moves the others (the split depends on the name only)
    sub = split_documents(docs[::3], 0.1)
    assert {d.name for d in sub.validation} == names_v & {d.name for d in docs[::3]}


def test_split_errors():
    with pytest.raises(InputError, match="val_fraction"):
        split_documents(docs_of(5), 1.5)
    with pytest.raises(CorpusError, match="validation"):
        split_documents(docs_of(1), 0.01)  # one document cannot be split by file


# --- sources --------------------------------------------------------------------------------


def test_stdlib_source_skips_site_packages_tests_and_pydoc_data(tmp_path):
    for rel in ("os.py", "json/decoder.py", "site-packages/pkg/m.py", "test/test_os.py",
                "idlelib/idle_test/t.py", "pydoc_data/topics.py", "json/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(rel.encode())
    names = [d.name for d in stdlib_documents(root=tmp_path)]
    assert names == ["stdlib/json/decoder.py", "stdlib/os.py"], names
    with_tests = [d.name for d in stdlib_documents(include_tests=True, root=tmp_path)]
    assert "stdlib/test/test_os.py" in with_tests and "stdlib/idlelib/idle_test/t.py" in with_tests


def test_pydoc_source_is_one_document_per_topic():
    from pydoc_data.topics import topics

    docs = pydoc_documents()
    assert len(docs) == len(topics) and docs[0].name.startswith("pydoc/")
    assert docs[0].data == topics[docs[0].name.removeprefix("pydoc/")].encode()


def test_path_source_directory_file_and_errors(tmp_path):
    (tmp_path / "corpus" / "sub").mkdir(parents=True)
    (tmp_path / "corpus" / "a.txt").write_bytes(b"alpha")
    (tmp_path / "corpus" / "sub" / "b.md").write_bytes(b"\xff\x00beta")  # bytes are bytes
    docs = load_documents([str(tmp_path / "corpus")])
    assert [(d.name, d.data) for d in docs] == [("corpus/a.txt", b"alpha"),
                                                ("corpus/sub/b.md", b"\xff\x00beta")]
    assert [d.name for d in path_documents(tmp_path / "corpus", "*.md")] == ["corpus/sub/b.md"]
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 150_000)
    pieces = path_documents(big)
    assert [d.name for d in pieces] == ["big.txt@0", "big.txt@65536", "big.txt@131072"]
    assert b"".join(d.data for d in pieces) == big.read_bytes()

    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="empty"):
        load_documents([str(tmp_path / "empty")])
    with pytest.raises(CorpusError, match=r"matches pattern '\*\.rst'"):
        path_documents(tmp_path / "corpus", "*.rst")
    with pytest.raises(CorpusError, match="neither a file nor a directory"):
        load_documents([str(tmp_path / "missing")])
    with pytest.raises(CorpusError, match="two documents are named"):
        load_documents([str(tmp_path / "corpus"), str(tmp_path / "corpus")])


# --- windows --------------------------------------------------------------------------------


def test_window_batches_are_a_function_of_seed_and_step():
    docs = docs_of(6)
    a, b = WindowSampler(docs, 32, 5, seed=3), WindowSampler(docs, 32, 5, seed=3)
    for step in (0, 1, 17):
        xa, ya = a.batch(step)
        xb, yb = b.batch(step)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a.batch(0)[0], a.batch(1)[0])
    assert not torch.equal(a.batch(0)[0], WindowSampler(docs, 32, 5, seed=4).batch(0)[0])
    # resumable by position: iterate(start=k) begins with batch k
    it = a.iterate(start=7)
    assert torch.equal(next(it)[0], a.batch(7)[0]) and torch.equal(next(it)[0], a.batch(8)[0])


def test_windows_lie_inside_one_document_and_targets_are_shifted():
    docs = docs_of(4, size=40)  # sizes 40..43: windows of 39 bytes + target fit with few starts
    s = WindowSampler(docs, 39, 64, seed=0)
    x, y = s.batch(0)
    assert x.shape == y.shape == (64, 39) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x, y, strict=True):
        window = bytes(row_x.tolist()) + bytes([int(row_y[-1])])
        assert any(window in d.data for d in docs), window


def test_every_valid_window_start_is_reachable():
    docs = [Document("a", b"0123456789"), Document("b", b"abcdefghijkl")]
    s = WindowSampler(docs, 8, 200, seed=1)
    firsts = {bytes(r[:1].tolist()) for r in s.batch(0)[0]}
    assert firsts == {b"0", b"1", b"a", b"b", b"c", b"d"}, firsts  # 2 + 4 starts


def test_window_longer_than_every_document_is_an_error():
    with pytest.raises(CorpusError, match=r"window=303 needs documents of at least 304 bytes.*"
                                          r"longest of 3 is 'd/0002.py' with 302 bytes"):
        WindowSampler(docs_of(3, size=300), 303, 1)
    with pytest.raises(InputError, match="batch_size"):
        WindowSampler(docs_of(2), 8, 0)


def test_validation_windows_are_deterministic_and_capped():
    docs = docs_of(5, size=100)
    x1, y1 = validation_windows(docs, 16, max_windows=7)
    x2, _ = validation_windows(list(docs), 16, max_windows=7)
    assert x1.shape == (7, 16) and torch.equal(x1, x2) and torch.equal(x1[:, 1:], y1[:, :-1])
    full, _ = validation_windows(docs, 16, max_windows=10_000)
    assert len(full) == sum((len(d) - 1) // 16 for d in docs)


# --- the long-range task --------------------------------------------------------------------


def test_long_range_examples_are_seeded_and_answer_recoverable():
    docs = [Document(f"f{i}", b"".join(b"line %d of file %d\n" % (j, i) for j in range(300)))
            for i in range(3)]
    task = LongRangeTask(docs, length=1024, n_records=3, key_len=4, value_len=6,
                         plant_within=0.25, seed=5)
    ex = task.example(2)
    assert ex == task.example(2)
    assert ex != task.example(3)
    assert ex != LongRangeTask(docs, 1024, 3, 4, 6, 0.25, seed=6).example(2)
    assert len(ex.text) == 1024 and ex.answer == ex.value and ex.answer_end == 1024
    assert ex.prompt.endswith(query_bytes(ex.key)) and len(ex.value) == 6
    assert set(ex.key) <= set(ALPHABET) and set(ex.value) <= set(ALPHABET)
    # the answer is recoverable from the prompt: the queried key's record is planted early, once
    rec = record_bytes(ex.key, ex.value)
    assert ex.prompt.count(rec) == 1
    assert ex.text.find(rec) == ex.record_starts[ex.queried]
    # planted in the first quarter of the filler (offsets count the records before them)
    in_filler = [s - i * len(rec) for i, s in enumerate(ex.record_starts)]
    assert max(in_filler) <= 0.25 * task.filler_len, (in_filler, task.filler_len)
    # a reader that looks the key up in the prompt answers correctly
    start = ex.prompt.index(b"\n<<" + ex.key + b": ") + len(ex.key) + 5
    assert ex.prompt[start:start + 6] == ex.answer
    # record_value locates those bytes: the value right after the record's "\n<<KEY: "
    assert ex.record_value == (start, start + 6), (ex.record_value, start)
    assert ex.text[slice(*ex.record_value)] == ex.value
    for (a, b), st in zip(ex.record_values, ex.record_starts, strict=True):
        key = ex.text[st + 3: st + 7]
        assert ex.text[st: b + 3] == record_bytes(key, ex.text[a:b]), (st, a, b)
    # the rest is real text: removing the records leaves a contiguous piece of one document
    filler = ex.prompt[: -len(query_bytes(ex.key))]
    for s in sorted(ex.record_starts, reverse=True):
        filler = filler[:s] + filler[s + len(rec):]
    assert any(filler in d.data for d in docs)


def test_long_range_queries_in_turn_and_text_after_the_last_answer():
    """n_queries distinct keys are asked in turn (each answer closed by '>>\\n'), and `after`
    bytes (the close, then the filler document's next bytes) follow the last answer."""
    docs = [Document(f"f{i}", b"".join(b"line %d of file %d\n" % (j, i) for j in range(300)))
            for i in range(3)]
    task = LongRangeTask(docs, length=1024, n_records=4, key_len=2, value_len=8,
                         plant_within=0.25, seed=1, n_queries=3, after=40)
    for i in range(5):
        ex = task.example(i)
        assert len(ex.text) == 1024 and len(ex.answer_spans) == 3, ex.answer_spans
        assert len(set(ex.queries)) == 3 and ex.queried == ex.queries[-1]
        assert ex.answer_spans[-1] == (ex.answer_start, ex.answer_end) == (1024 - 40 - 8,
                                                                            1024 - 40)
        for (a, b), q in zip(ex.answer_spans, ex.queries, strict=True):
            key = ex.text[ex.record_starts[q] + 3: ex.record_starts[q] + 5]
            value = ex.text[ex.record_starts[q] + 7: ex.record_starts[q] + 15]
            assert ex.text[a - 7: a] == query_bytes(key) and ex.text[a:b] == value, (i, q)
            assert ex.text[b: b + 3] == b">>\n"
        rest = ex.text[ex.answer_end + 3:]
        assert len(rest) == 37 and any(rest in d.data for d in docs)
    single = LongRangeTask(docs, 1024, 4, 2, 8, 0.25, seed=1)  # n_queries=1, after=0
    ex = single.example(0)
    assert ex.answer_spans == ((1016, 1024),) and ex.queries == (ex.queried,)


def test_long_range_errors():
    docs = docs_of(2, size=500)
    with pytest.raises(InputError, match="length=40 leaves no room for filler"):
        LongRangeTask(docs, length=40, n_records=2)
    with pytest.raises(InputError, match="plant_within"):
        LongRangeTask(docs, length=400, plant_within=0.0)
    with pytest.raises(InputError, match="n_queries=3 > n_records=2"):
        LongRangeTask(docs, length=400, n_records=2, n_queries=3)
    with pytest.raises(InputError, match="after=2"):
        LongRangeTask(docs, length=400, after=2)
    with pytest.raises(CorpusError, match="longest"):
        LongRangeTask(docs, length=4096)  # filler longer than every document
