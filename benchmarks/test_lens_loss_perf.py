"""Perf gate for the lens loss (issue 4, contract §6): vectorized, O(N log N) in the entries.

The gate is a ratio measured in one run: lens_loss forward + backward at N ≈ 8192 entries over
the same at N ≈ 1024, single-threaded. O(N log N) predicts about 10×, a quadratic pair set 64×;
the gate is 16× (fixed per-call overhead only lowers the ratio). Absolute times are printed
for information.
"""

import time

import torch

import megacontext as mc

RATIO_MAX = 16.0


def make_case(budget: int):
    """A recency-baseline WC filling `budget` slots (K=32), random scores/targets, 80% mask."""
    cfg = mc.MCConfig(budget=budget)
    T = 400_000
    wc = mc.build_working_context(T, cfg)
    g = torch.Generator().manual_seed(0)
    n = len(wc)
    scores = (torch.rand(n, generator=g) * 2 - 1).requires_grad_(True)
    targets = torch.randn(n, generator=g)
    mask = torch.rand(n, generator=g) < 0.8
    return scores, targets, mask, wc, cfg


def loss_step(case) -> None:
    scores, targets, mask, wc, cfg = case
    scores.grad = None
    mc.lens_loss(scores, targets, mask, wc, cfg).total.backward()


def best_time(fn, repeat: int = 15) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def test_lens_loss_cost_grows_like_n_log_n(benchmark, gate):
    # One intra-op thread: the gate is about the algorithm, and on a shared 2-core machine
    # torch's thread pool turns other processes' load into 10x noise on 8k-element ops.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_gate(benchmark, gate)
    finally:
        torch.set_num_threads(threads)


def run_gate(benchmark, gate):
    big, small = make_case(8192), make_case(1024)
    assert len(big[3]) > 8000 and len(small[3]) > 900, (len(big[3]), len(small[3]))
    benchmark(loss_step, big)
    if benchmark.disabled:  # under xdist: run once as smoke, no timing
        return
    t_small = best_time(lambda: loss_step(small))
    t_big = min(benchmark.stats.stats.min, best_time(lambda: loss_step(big)))
    ratio = t_big / t_small
    print(f"\nlens_loss fwd+bwd: N={len(big[3])} {t_big * 1e3:.2f} ms, "
          f"N={len(small[3])} {t_small * 1e3:.2f} ms, ratio {ratio:.1f} (gate <= {RATIO_MAX})")
    gate("lens_loss t(8192)/t(1024)", ratio, RATIO_MAX, at_least=False)
