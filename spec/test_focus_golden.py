"""Golden LOD maps of the focus allocator (contract §5, §9): canonical scenarios run for a few
focus steps, each step's actions and map pinned in golden/test_focus_golden/. A change in what
the allocator focuses on shows up as a reviewed diff.

Actions are written `+L@s` (expand the LOD-L gist at s), `-L@s` (collapse the LOD-L group
starting at s), `xL@s` (evict the LOD-L entry at s)."""

import pytest
import torch

from spec.implementation import mc

# K=8: an LOD1 gist spans 8 tokens, LOD2 64; one map character per 8 tokens.
BASE = dict(block_size=8, max_lod=2, budget=64, recent_tokens=16, expand_threshold=0.1,
            collapse_threshold=0.1, swap_margin=0.2, min_residency=1, max_actions=8)
MARK = {"expand": "+", "collapse": "-", "evict": "x"}


def show_actions(actions) -> str:
    return " ".join(f"{MARK[a.kind]}{a.lod}@{a.start}" for a in actions) or "(none)"


def recency_field(wc, T, cfg, needle=None, needle_score=0.9):
    """Scores from -0.6 (oldest) to 0 (newest); entries overlapping `needle` get needle_score."""
    starts, ends = wc.starts.double(), wc.ends(cfg).double()
    x = -0.6 * (1.0 - starts / max(T, 1))
    if needle is not None:
        x[(starts < needle[1]) & (ends > needle[0])] = needle_score
    return x.float()


def session(cfg, T, wc, field, steps, title):
    """Run `steps` focus steps with scores `field(wc, step)`; the golden text of it all."""
    lines = [title, f"cfg: {cfg}", "step 0 (input)", mc.render_lod_map(wc, T, cfg)]
    for step in range(1, steps + 1):
        wc, actions = mc.focus_step(wc, field(wc, step), T, cfg)
        wc.validate(cfg, T)
        lines += [f"step {step}: {show_actions(actions)}", mc.render_lod_map(wc, T, cfg)]
    return "\n".join(lines)


def needle():
    cfg = mc.MCConfig(**BASE)
    T = 1000
    wc = mc.build_working_context(T, cfg)
    return session(cfg, T, wc, lambda w, _: recency_field(w, T, cfg, needle=(128, 192)), 5,
                   "needle: tokens [128, 192) score 0.9, the rest -0.6 (oldest) .. 0 (newest); "
                   "the needle is expanded, swapped against the lowest-scoring groups (old "
                   "history is all LOD2 already), until no group is left to pay for it")


def negative_field():
    cfg = mc.MCConfig(**{**BASE, "budget": 96})
    T = 1000
    wc = mc.build_working_context(T, cfg)
    return session(cfg, T, wc, lambda w, _: torch.full((len(w),), -0.5), 6,
                   "uniformly negative field (-0.5): voluntary collapses (at most max_actions a "
                   "step, only of groups old enough) down to the coarsest tiling")


def forced_by_append():
    cfg = mc.MCConfig(**BASE)
    T = 1000
    wc = mc.build_working_context(T, cfg)
    wc = mc.append_tokens(wc, T, 40, cfg)
    T += 40
    return session(cfg, T, wc, lambda w, _: recency_field(w, T, cfg), 2,
                   "40 tokens appended past the budget: forced collapses of the lowest-scoring "
                   "(oldest) groups, ignoring max_actions and residency")


def forced_cascade_and_eviction():
    cfg = mc.MCConfig(**{**BASE, "budget": 24})
    T = 1000
    wc = mc.build_working_context(T, cfg)  # already evicted: the coarsest tiling is 30
    wc = mc.append_tokens(wc, T, 100, cfg)
    T += 100
    return session(cfg, T, wc, lambda w, _: torch.zeros(len(w)), 1,
                   "100 tokens appended to an evicted WC: forced collapses cascade to LOD2, then "
                   "the oldest entries are evicted, just enough")


def adversarial():
    cfg = mc.MCConfig(**{**BASE, "min_residency": 2})
    T = 600
    wc = mc.build_working_context(T, cfg)
    wc = mc.WorkingContext(wc.lods, wc.starts, wc.residency + 2)

    def flip(w, step):
        return torch.full((len(w),), 1.0 if step % 2 else -1.0)

    return session(cfg, T, wc, flip, 8,
                   "adversarial: every score +1 on odd steps, -1 on even steps; with "
                   "min_residency=2 no entry changes again within 2 steps (no thrash)")


def one_keeper_per_group(wc, T, cfg):
    """-0.3 (newest) to -0.6 (oldest), but +0.05 on the first of every K aligned siblings."""
    x = recency_field(wc, T, cfg) * 0.5 - 0.3
    x[(wc.starts // wc.spans(cfg)) % cfg.block_size == 0] = 0.05
    return x


def max_versus_mean():
    text, T = [], 1000
    for how in ("mean", "max"):
        cfg = mc.MCConfig(**{**BASE, "budget": 96, "block_score": how, "min_residency": 0})
        wc = mc.build_working_context(T, cfg)
        text.append(session(cfg, T, wc, lambda w, _, c=cfg: one_keeper_per_group(w, T, c), 2,
                            f"block_score={how}: one member of every group at +0.05, the rest "
                            f"-0.3 .. -0.6; mean collapses them, max keeps them"))
    return "\n\n".join(text)


SCENARIOS = {
    "needle": needle,
    "negative_field": negative_field,
    "forced_by_append": forced_by_append,
    "forced_cascade_and_eviction": forced_cascade_and_eviction,
    "adversarial_no_thrash": adversarial,
    "block_score_max_vs_mean": max_versus_mean,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_golden_focus_maps(name, golden):
    """The allocator's actions and LOD maps on canonical scenarios match golden/ (§5, §9)."""
    assert SCENARIOS[name]() == golden
