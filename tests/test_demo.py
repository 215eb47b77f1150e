"""The demo explains what it prints: a legend for the LOD-map characters, and a line whenever
the working context no longer holds the oldest history (reference internals, not contract)."""

import io

import torch

from megacontext import MCConfig, build_working_context
from megacontext.commands.demo import LEGEND, eviction_note, run_demo, section_baseline


def test_demo_starts_with_a_legend_of_every_map_character(monkeypatch):
    """Every character render_lod_map can print ('.', digits, ',', ' ') is explained first."""
    monkeypatch.setattr("megacontext.commands.demo.SECTIONS", [])
    out = io.StringIO()
    run_demo(seed=0, out=out)
    text = out.getvalue()
    assert text.startswith(LEGEND), text
    for char in (".", "1", "2", ",", " "):
        assert f"'{char}'" in text, (char, text)
    assert "evicted" in text and "T=" in text and "N=" in text and "K=" in text, text


def test_eviction_is_announced_exactly_when_history_is_evicted():
    """No note while the WC covers [0, T); once the oldest tokens are evicted, the note names
    the evicted range [0, s) and its block count."""
    cfg = MCConfig(block_size=4, max_lod=2, budget=8, recent_tokens=4)
    for T in (0, 5, 40):
        wc = build_working_context(T, cfg)
        assert int(wc.starts[0]) == 0 if len(wc) else True
        assert eviction_note(wc, T, cfg) is None, T
    T = 200
    wc = build_working_context(T, cfg)
    s = int(wc.starts[0])
    assert s > 0
    note = eviction_note(wc, T, cfg)
    assert note is not None and f"tokens [0, {s})" in note and f"({-(-s // 4)} blocks)" in note


def test_baseline_section_says_when_history_is_evicted():
    """Of the baseline's four histories only the last (80k tokens, budget 256) evicts: exactly
    one eviction line, right after that map."""
    out = io.StringIO()
    section_baseline(torch.Generator().manual_seed(0), out)
    lines = out.getvalue().splitlines()
    notes = [i for i, ln in enumerate(lines) if "history evicted" in ln]
    assert len(notes) == 1, lines
    assert "tokens=80000" in lines[notes[0] + 1], lines[notes[0]:notes[0] + 2]
