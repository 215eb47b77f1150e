"""Perf gates for the models (contract §10; issue 6), as ratios measured in the same run.

- LensNet forward at N = 1k, 8k, 32k, d_in = 768, fp32 and bf16 (absolute times: information).
  The absolute 3 ms target is replaced by the floor-relative gate of the whole focus step
  (benchmarks/test_floor_perf.py).
- Gates: t(8k) / t(1k) <= 14 and LensNet at 8k >= 20x faster than a two-layer
  full-self-attention transformer of the same width (the in-run reference), both as
  single-thread CPU-time ratios (robust on a shared machine; see the test). Linear cost gives
  t(8k)/t(1k) <= 8 plus cache effects (measured 5.1-7.3 on the 2-core EPYC, idle and busy);
  anything quadratic in N gives ~64. The former limit of 9 left a margin of 1.2x over the
  measured 7.34; 12 left 1.59x over the 7.53 measured in a later CI run, so 14 (>= 1.85x), which
  still fails a quadratic term by ~4.5x. The speedup
  measures ~110-120x (margin ~5x).
- GistNet throughput in blocks/s at D = 768 (information), and a gate: batching many blocks
  costs less per block than one block at a time. At D = 768 a single block is already a
  32 x 768 GEMM, so batching buys only ~2x in wall time (measured 1.35-2.35x with two threads
  on the shared machine, up to 20x when a descheduled thread stalls the one-block calls): the
  former 2x limit there flipped in 10 of 21 runs. The gate measures what batching must remove,
  the per-call cost, where it is not drowned by the GEMMs: D = 64, single-thread CPU time,
  where batching measures ~3.4x (fp32) and ~6.7x (bf16). A GistNet that loops over blocks
  internally measures ~1.0x (it is the one-at-a-time path), so the gate is 2x.

Gate timings are the minimum of interleaved repetitions under torch.inference_mode (medians
are printed and kept in extra_info too, with the thread count). Under `pytest -n auto`
pytest-benchmark is disabled: every test runs once at a small size, untimed, as a smoke test,
and asserts nothing about speed.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch
import torch.nn as nn

import megacontext as mc

D_IN = 768
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SCALING_MAX = 14.0
BATCHING_MIN = 2.0
GATE_DIM = 64  # GistNet width of the batching gate
SPEEDUP_MIN = 20.0


def timed(fns: dict, rounds: int, warmup: int = 2, clock=time.perf_counter) -> dict:
    """{name: (min, median)} seconds per call, the functions run interleaved so load drifts
    hit all of them. Gates use the minimum: other processes only ever add time (on a shared
    2-core machine a descheduled worker thread can stall a single op for milliseconds)."""
    with torch.inference_mode():
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        samples = {k: [] for k in fns}
        for _ in range(rounds):
            for k, fn in fns.items():
                t0 = clock()
                fn()
                samples[k].append(clock() - t0)
    return {k: (min(v), statistics.median(v)) for k, v in samples.items()}


def lens_inputs(n: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g).to(dtype)  # vectors gathered from a tree in `dtype`
    features = torch.rand(n, 3, generator=g) * torch.tensor([2.0, 7.0, 12.0])
    return x, features


def make_lensnet(dtype: torch.dtype):
    torch.manual_seed(0)
    return mc.LensNet(mc.LensNetConfig(d_in=D_IN)).to(dtype).eval()


class FullAttentionReference(nn.Module):
    """The in-run reference: LensNet's input projection, then two pre-norm transformer layers
    with full (non-causal) self-attention over all N entries at LensNet's width, then the same
    LayerNorm + tanh head. Quadratic in N."""

    def __init__(self, d_in: int, width: int, n_heads: int):
        super().__init__()
        self.in_proj = nn.Linear(d_in, width)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, n_heads, 4 * width, dropout=0.0, batch_first=True,
                                       norm_first=True)
            for _ in range(2)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 1)

    def forward(self, x):  # [B, N, d_in] -> [B, N]
        h = self.in_proj(x)
        for layer in self.layers:
            h = layer(h)
        return torch.tanh(self.head(self.norm(h))[..., 0].float())


@pytest.mark.parametrize("n", [1024, 8192, 32768])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_lensnet_forward(benchmark, n, dtype):
    """LensNet forward at N entries (information; the gates are below)."""
    dt = DTYPES[dtype]
    net = make_lensnet(dt)
    x, f = lens_inputs(n if not benchmark.disabled else 256, dt)
    benchmark.extra_info.update(threads=torch.get_num_threads(), n=n, dtype=dtype)

    def forward():
        with torch.inference_mode():
            return net(x, f)

    scores = benchmark.pedantic(forward, rounds=3 if n > 8192 else 10, warmup_rounds=1)
    assert scores.shape == (x.shape[0],)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_lensnet_is_linear_and_beats_full_attention(benchmark, gate, dtype):
    """Gates (same run): t(8k)/t(1k) <= 14 and the full-attention reference at 8k is >= 20x
    slower than LensNet at 8k. Both ratios compare single-thread CPU time (time.thread_time
    with torch on one thread): on a shared machine wall time with two threads depends on when
    the other thread gets scheduled, CPU time does not, and neither ratio depends on threads.
    Wall times with the default threads are reported alongside."""
    dt = DTYPES[dtype]
    net = make_lensnet(dt)
    ref = FullAttentionReference(D_IN, net.cfg.width, net.cfg.n_heads).to(dt).eval()
    small, large = (1024, 8192) if not benchmark.disabled else (64, 128)
    x1, f1 = lens_inputs(small, dt)
    x8, f8 = lens_inputs(large, dt)

    def lens8():
        with torch.inference_mode():
            return net(x8, f8)

    benchmark.pedantic(lens8, rounds=5, warmup_rounds=1)
    if benchmark.disabled:
        with torch.inference_mode():
            ref(x8[None])
        return
    wall = timed({"lens1k": lambda: net(x1, f1), "lens8k": lens8}, rounds=15)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cpu = timed({"lens1k": lambda: net(x1, f1), "lens8k": lens8}, rounds=20,
                    clock=time.thread_time)
        cpu_ref = timed({"ref8k": lambda: ref(x8[None])}, rounds=1, warmup=0,
                        clock=time.thread_time)["ref8k"][0]
    finally:
        torch.set_num_threads(threads)
    l1, l8 = cpu["lens1k"][0], cpu["lens8k"][0]
    scaling, speedup = l8 / l1, cpu_ref / l8
    benchmark.extra_info.update(
        threads=threads, scaling_8k_over_1k=scaling, speedup_vs_reference=speedup,
        cpu_1thread_ms={"lens1k": 1e3 * l1, "lens8k": 1e3 * l8, "reference8k": 1e3 * cpu_ref},
        wall_ms_min_median={k: [1e3 * v[0], 1e3 * v[1]] for k, v in wall.items()},
    )
    print(f"\n[{dtype}] wall, {threads} threads, min (median): LensNet 1k "
          f"{1e3 * wall['lens1k'][0]:.2f} ({1e3 * wall['lens1k'][1]:.2f}) ms, 8k "
          f"{1e3 * wall['lens8k'][0]:.2f} ({1e3 * wall['lens8k'][1]:.2f}) ms\n"
          f"[{dtype}] CPU time, 1 thread, min: LensNet 1k {1e3 * l1:.2f} ms, 8k {1e3 * l8:.2f} ms "
          f"(x{scaling:.2f}); full-attention reference 8k {1e3 * cpu_ref:.0f} ms (LensNet "
          f"{speedup:.0f}x faster)")
    gate(f"LensNet {dtype} t(8192)/t(1024)", scaling, SCALING_MAX, at_least=False)
    gate(f"LensNet {dtype} speedup over full attention at 8k", speedup, SPEEDUP_MIN,
         at_least=True, unit="x")


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_gistnet_throughput(benchmark, gate, report, dtype):
    """GistNet blocks/s at D=768, K=32 on a batch of 64 blocks (information), and the gate:
    at D = GATE_DIM, a batch of 64 blocks costs >= BATCHING_MIN x less per block than one block
    at a time, in single-thread CPU time (see the module docstring)."""
    dt = DTYPES[dtype]
    torch.manual_seed(0)
    net = mc.GistNet(mc.GistNetConfig(dim=D_IN, block_size=32)).to(dt).eval()
    B = 64 if not benchmark.disabled else 2
    blocks = torch.randn(B, 32, D_IN).to(dt)

    def batched():
        with torch.inference_mode():
            return net(blocks, 1)

    if benchmark.disabled:
        benchmark.pedantic(batched, rounds=1)
        return
    # One thread: with two, a busy machine stalls the one-block calls for ~0.5 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        benchmark.pedantic(batched, rounds=2, warmup_rounds=1)
        t = timed({"batched": batched, "one": lambda: net(blocks[:1], 1)}, rounds=2, warmup=1,
                  clock=time.thread_time)
        small = mc.GistNet(mc.GistNetConfig(dim=GATE_DIM, block_size=32)).to(dt).eval()
        few = torch.randn(B, 32, GATE_DIM).to(dt)
        gated = timed({"batched": lambda: small(few, 1), "one": lambda: small(few[:1], 1)},
                      rounds=15, clock=time.thread_time)
    finally:
        torch.set_num_threads(threads)
    per_block_batched, per_block_one = t["batched"][0] / B, t["one"][0]
    benchmark.extra_info.update(threads=1, blocks_per_s=1 / per_block_batched,
                                blocks_per_s_one_at_a_time=1 / per_block_one)
    report(f"[{dtype}] GistNet D={D_IN}: {1 / per_block_batched:.0f} blocks/s batched x{B}, "
           f"{1 / per_block_one:.0f} blocks/s one at a time (1 thread, CPU time, best of 2)")
    t = gated
    gate(f"GistNet {dtype} D={GATE_DIM} batched speedup per block",
         t["one"][0] / (t["batched"][0] / B), BATCHING_MIN, at_least=True, unit="x")
