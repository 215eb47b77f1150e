"""`megacontext demo`: a synthetic, seeded session that shows what the controller does.

Each section is a function taking `(rng, out)`; later features add sections to `SECTIONS`.
"""

from __future__ import annotations

import time
from typing import TextIO

import torch

from ..controller.allocator import focus_step
from ..controller.config import MCConfig
from ..controller.lod_map import render_lod_map
from ..controller.working_context import WorkingContext, append_tokens, build_working_context
from ..models.lensnet import LensNet, LensNetConfig, lens_features
from ..models.tree import MegaContextTree

DEMO_CFG = MCConfig(block_size=16, max_lod=2, budget=256, recent_tokens=48)
DEMO_DIM = 64


LEGEND = (
    "How to read an LOD map (contract §9): the first line is T=<tokens in the history> "
    "N=<entries>/<budget> K=<block size>;\n"
    "then one character per K-token block of the history, oldest first, 128 blocks per line:\n"
    "  '.'  a block of raw tokens (LOD0)\n"
    "  '1'  a block under an LOD1 gist (one vector for K tokens); '2' under an LOD2 gist "
    "(one vector for K*K tokens)\n"
    "  ','  the trailing partial block (raw tokens; no gist until its K tokens are complete)\n"
    "  ' '  an evicted block: still in the tree, no longer in the working context\n"
)


def eviction_note(wc: WorkingContext, T: int, cfg: MCConfig) -> str | None:
    """A line saying which history the WC no longer holds, or None if it covers all of it."""
    first = int(wc.starts[0]) if len(wc) else T
    if first == 0:
        return None
    return (f"   history evicted: tokens [0, {first}) ({-(-first // cfg.block_size)} blocks) are "
            f"no longer in the working context; they stay in the tree. (Eviction happens only "
            f"when even the coarsest tiling exceeds budget={cfg.budget} entries.)")


def show_map(wc: WorkingContext, T: int, cfg: MCConfig, out: TextIO) -> None:
    """The LOD map, and a line saying so when history is evicted."""
    print(render_lod_map(wc, T, cfg), file=out)
    note = eviction_note(wc, T, cfg)
    if note:
        print(note, file=out)


def summary(wc: WorkingContext, T: int, cfg: MCConfig) -> str:
    """One line: tokens, entries/budget, entries per level."""
    per_lod = torch.bincount(wc.lods, minlength=cfg.max_lod + 1).tolist() if len(wc) else []
    levels = " ".join(f"LOD{lod}={n}" for lod, n in enumerate(per_lod))
    covered = int(wc.ends(cfg)[-1] - wc.starts[0]) if len(wc) else 0
    return f"tokens={T} entries={len(wc)}/{cfg.budget} {levels} covered={covered}"


def section_baseline(rng: torch.Generator, out: TextIO) -> None:
    """Ingest a synthetic history into the tree and show the recency baseline as it grows."""
    cfg = DEMO_CFG
    tree = MegaContextTree(cfg, DEMO_DIM)
    print(f"== recency baseline  ({cfg})", file=out)
    for T in (100, 1_500, 12_000, 80_000):
        n = T - tree.num_tokens
        tree.append(torch.randn(n, DEMO_DIM, generator=rng))
        wc = build_working_context(T, cfg)
        wc.validate(cfg, T)
        vectors = tree.gather(wc)  # [N, D] what the base model would read
        show_map(wc, T, cfg, out)
        print(f"   {summary(wc, T, cfg)} gathered={tuple(vectors.shape)}\n", file=out)


def section_focus(rng: torch.Generator, out: TextIO) -> None:
    """A needle query: synthetic scores favour one old span; focus steps zoom in on it."""
    cfg = MCConfig(block_size=16, max_lod=2, budget=256, recent_tokens=48, min_residency=0,
                   max_actions=16)
    T, needle = 4_000, (1_024, 1_280)  # the question is about tokens [1024, 1280)
    wc = build_working_context(T, cfg)
    print(f"== focus steps on a needle query, tokens [{needle[0]}, {needle[1]})  ({cfg})",
          file=out)
    show_map(wc, T, cfg, out)
    mark = {"expand": "+", "collapse": "-", "evict": "x"}
    for step in range(1, 4):
        starts, ends = wc.starts.double(), wc.ends(cfg).double()
        age = 1.0 - starts / T  # older history is worth less ...
        scores = -0.5 * age + 0.05 * torch.randn(len(wc), generator=rng, dtype=torch.float64)
        scores[(starts < needle[1]) & (ends > needle[0])] = 0.9  # ... except the needle
        wc, actions = focus_step(wc, scores.float(), T, cfg)
        wc.validate(cfg, T)
        shown = " ".join(f"{mark[a.kind]}{a.lod}@{a.start}" for a in actions[:6])
        more = f" (+{len(actions) - 6} more)" if len(actions) > 6 else ""
        print(f"   step {step}: {len(actions)} actions {shown or '-'}{more}", file=out)
        show_map(wc, T, cfg, out)
    print(f"   {summary(wc, T, cfg)}  (+L@s expand, -L@s collapse a group, xL@s evict)\n",
          file=out)


def section_lensnet(rng: torch.Generator, out: TextIO) -> None:
    """Score a WC with an untrained LensNet and run focus steps on its scores, timing each."""
    cfg = MCConfig(block_size=16, max_lod=2, budget=256, recent_tokens=48, expand_threshold=0.05,
                   collapse_threshold=0.05, min_residency=1, max_actions=4)
    tree = MegaContextTree(cfg, DEMO_DIM)
    T = 6_000
    tree.append(torch.randn(T, DEMO_DIM, generator=rng))
    with torch.random.fork_rng():  # untrained weights, seeded from the demo's generator
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
        net = LensNet(LensNetConfig(d_in=DEMO_DIM, width=32, n_heads=2, n_latents=4)).eval()
    wc = build_working_context(T, cfg)
    print(f"== LensNet (untrained) + focus steps  ({cfg})", file=out)
    show_map(wc, T, cfg, out)
    for step in range(1, 5):
        n_new = 40
        tree.append(torch.randn(n_new, DEMO_DIM, generator=rng))
        wc = append_tokens(wc, T, n_new, cfg)
        T += n_new
        t0 = time.perf_counter()
        with torch.inference_mode():
            scores = net(tree.gather(wc), lens_features(wc, T, cfg))
        t1 = time.perf_counter()
        wc, actions = focus_step(wc, scores, T, cfg)
        t2 = time.perf_counter()
        kinds = {k: sum(a.kind == k for a in actions) for k in ("expand", "collapse", "evict")}
        print(f"   step {step}: +{n_new} tokens, scores in [{scores.min():+.2f}, "
              f"{scores.max():+.2f}] mean {scores.mean():+.2f}; actions {kinds}; "
              f"gather+LensNet {1e3 * (t1 - t0):.2f} ms, focus_step {1e3 * (t2 - t1):.2f} ms",
              file=out)
    wc.validate(cfg, T)
    show_map(wc, T, cfg, out)
    print(f"   {summary(wc, T, cfg)}\n", file=out)


SECTIONS = [section_baseline, section_focus, section_lensnet]


def add_arguments(parser) -> None:
    """`megacontext demo` options."""
    from ..cli import seed_type

    parser.add_argument("--seed", type=seed_type, default=0,
                        help="seed of the synthetic session, in [0, 2**63 - 1] (default 0)")


def run(args) -> int:
    run_demo(seed=args.seed)
    return 0


def run_demo(seed: int = 0, out: TextIO | None = None) -> None:
    import sys

    out = out or sys.stdout
    rng = torch.Generator().manual_seed(seed)
    print(LEGEND, file=out)
    for section in SECTIONS:
        section(rng, out)
