"""Reference internals behind the foundation API (not part of the contract)."""

import io

import torch
from hypothesis import given

from megacontext import MCConfig, MegaContextTree
from megacontext.cli import main
from megacontext.controller.working_context import coarsest_tiling
from spec import strategies as S


@given(S.configs())
def test_vectorized_coarsest_tiling_matches_the_scan(cfg):
    """The closed-form coarsest tiling equals the spec's left-to-right greedy scan."""
    for T in (0, 1, cfg.block_size, 3 * S.span(cfg, cfg.max_lod) + 7):
        lods, starts = coarsest_tiling(T, cfg)
        got = list(zip(lods.tolist(), starts.tolist(), strict=True))
        assert got == S.coarsest_tiling(cfg, T), (cfg, T)


def test_tree_buffers_grow_without_losing_vectors():
    """Many small appends (buffer regrowth) give the same levels as one big append."""
    cfg = MCConfig(block_size=4, max_lod=3, budget=64)
    x = torch.randn(1000, 3, generator=torch.Generator().manual_seed(1))
    one, many = MegaContextTree(cfg, 3), MegaContextTree(cfg, 3)
    one.append(x)
    for chunk in torch.split(x, 7):
        many.append(chunk)
    for lod in range(4):
        torch.testing.assert_close(one.level(lod), many.level(lod))


def test_demo_runs_and_is_deterministic_in_its_maps(capsys):
    """`megacontext demo` exits 0 and prints the same LOD maps for the same seed."""
    assert main(["demo", "--seed", "3"]) == 0
    first = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("T=")]
    assert main(["demo", "--seed", "3"]) == 0
    second = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("T=")]
    assert first and first == second


def test_demo_section_baseline_gathers_the_wc():
    from megacontext.commands.demo import section_baseline

    out = io.StringIO()
    section_baseline(torch.Generator().manual_seed(0), out)
    text = out.getvalue()
    headers = [ln for ln in text.splitlines() if ln.startswith("T=")]
    summaries = [ln for ln in text.splitlines() if "gathered=(" in ln]
    assert len(headers) == len(summaries) == 4, text
    for header, line in zip(headers, summaries, strict=True):
        n = header.split()[1].removeprefix("N=").split("/")[0]
        assert f"gathered=({n}, " in line, (header, line)
