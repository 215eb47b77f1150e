"""Controller vectors (contract §3, §5, §9): golden/vectors/controller.json.

Every controller function of the public API as data: `build_working_context`,
`append_tokens`, `legal_actions`, `block_scores`, `focus_step` (single steps, multi-step
sessions with `append_tokens` between steps, and every golden focus scenario with its scores),
`render_lod_map`, and `WorkingContext.validate` error cases. The reference computes every
expected output; all of them are exact (integers, booleans, text, float64 group scores that
are sums of float32 inputs), so the tolerance is zero. The definitions below are written so
that a port can be built from them alone (tests/numpy_port/ is one).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..controller.allocator import block_scores, focus_step
from ..controller.config import MCConfig
from ..controller.legality import legal_actions
from ..controller.lod_map import render_lod_map
from ..controller.working_context import WorkingContext, append_tokens, build_working_context
from ..errors import MegaContextError
from .encoding import ERROR_KINDS, error_json, header, tensor

FILE = "controller.json"

DEFINITIONS = {
    "config": "cfg holds every MCConfig field: block_size K, max_lod, budget (slots), "
              "recent_tokens, expand_threshold, collapse_threshold, swap_margin, "
              "min_residency, max_actions, block_score ('mean' or 'max')",
    "span": "span(l) = K**l tokens; an entry (lod, start) covers [start, start + span(lod)); "
            "end = start + span(lod); every entry costs one slot",
    "tail_start": "tail_start(T) = max(T - recent_tokens, 0); the protected tail is "
                  "[tail_start(T), T)",
    "wc": "a working context: {lods, starts, residency}, int64 tensors of one length N, entries "
          "in position order",
    "action": "[kind, lod, start], kind 'expand' | 'collapse' | 'evict'; lod and start name what "
              "was acted on before the action: the gist expanded, the collapsed group's level "
              "and first start, the evicted entry",
    "validate": [
        "checks run in this order and the first failure is the error (its kind, the argument "
        "'wc' or 'T', and for invariant kinds the index of the offending entry):",
        "0. T is an integer >= 0, else InputError (argument T)",
        "1. an empty WC with T > 0: CoverageError (index null); an empty WC with T = 0 is "
        "valid",
        "2. residency[i] < 0 for some i: InputError (argument residency), the first such i",
        "3. lods[i] < 0 or lods[i] > max_lod: LevelError, the first such i",
        "4. starts[i] mod span(lods[i]) != 0: AlignmentError, the first such i",
        "5. lods[i] > 0 and end[i] > T (a gist over an incomplete span): LevelError, first i",
        "6. end[i-1] != starts[i] for some i >= 1: ContiguityError, index the first such i",
        "7. starts[0] < 0: CoverageError index 0; end[N-1] != T: CoverageError index N-1",
        "8. let f = the first i with end[i] > tail_start(T) (N if none); lods[i] > 0 for some "
        "i >= f: TailError, the first such i",
        "9. N > budget: BudgetError, index = budget (skipped by append_tokens, legal_actions, "
        "render_lod_map, focus_step: they accept a WC over budget)",
    ],
    "build_working_context": [
        "the recency baseline, every residency 0; T integer >= 0 (InputError on T otherwise)",
        "coarsest tiling: a0 = K * floor(tail_start(T) / K); p = 0; for l = max_lod down to 1: "
        "c = floor((a0 - p) / span(l)) gists (l, p), (l, p + span(l)), ... ; p += c * span(l); "
        "then one LOD0 entry per token of [a0, T)",
        "if that tiling has N > budget: keep only its last `budget` entries (the oldest are "
        "evicted) and stop",
        "else: keep a stack of the tiling's gists, oldest at the bottom; while the stack is not "
        "empty and N + K - 1 <= budget: pop the newest gist (l, s), N += K - 1, and if l > 1 "
        "push its children (l-1, s + j*span(l-1)) for j = 0..K-1 in that order (the newest "
        "child ends on top); an LOD1 gist's children are tokens and join the LOD0 suffix",
        "result: the stack's gists bottom to top, then one LOD0 entry per token from the end "
        "of the top gist (0 if the stack is empty) to T",
    ],
    "append_tokens": "wc valid for T except the budget (validate 0-8), n integer >= 0 "
                     "(InputError on n otherwise); result: wc followed by n LOD0 entries "
                     "(0, T + j) with residency 0, j = 0..n-1; the WC may exceed the budget",
    "legal_actions": [
        "wc valid for T except the budget; returns expand_ok [N] bool and group_id [N] int64",
        "expand_ok[i] = lods[i] > 0",
        "sibling group: entries i..i+K-1 with lods[i] = l < max_lod, starts[i] mod span(l+1) "
        "= 0, i + K - 1 < N and end[i+K-1] = starts[i] + span(l+1) (they are the K level-l "
        "children of one parent span, all present), and i + K - 1 < f (f from validate step 8: "
        "the group ends at or before tail_start(T))",
        "groups are numbered 0, 1, ... in position order; group_id[i] is the group of entry i, "
        "-1 if i is in none",
    ],
    "block_scores": [
        "inputs scores [N] (float, finite), group_id [N] int64, how 'mean' | 'max'; output "
        "[G] float64, G = max(group_id) + 1 (0 when N = 0 or every id is -1)",
        "mean: s = 0.0 (float64); for each member i in position order s = s + float64(scores[i]); "
        "result s / count (float64 division); max: the largest member score",
        "errors: how not 'mean'/'max' -> InputError (how); group_id not a 1-D int64 tensor -> "
        "InputTypeError / InputError (group_id); scores not 1-D floating of length N -> "
        "InputError / InputTypeError (scores); a non-finite score -> InputError (scores); an id "
        "< -1 -> InputError (group_id); an id in 0..G-1 with no member -> InputError (group_id)",
    ],
    "focus_step": [
        "inputs wc (valid for T except the budget), scores [N] (floating, finite, length N: "
        "InputError on scores otherwise), T, cfg; returns (new wc, actions in the order applied)",
        "numbers: scores are converted exactly to float64 and every comparison and group score "
        "is float64 (thresholds are compared as given, e.g. a float32 score 0.1000000015 "
        "exceeds expand_threshold 0.1)",
        "groups: the sibling groups of legal_actions on the input wc, with scores gs[g] = "
        "block_scores(scores, group_id, block_score)[g]; order = the groups sorted by "
        "(gs, first start) ascending",
        "collapsing a group (lod l, members' first start s): its K members are replaced by one "
        "parent (l + 1, s) with residency 0; N -= K - 1; action [collapse, l, s]",
        "expanding a gist (l, s): it is replaced by K children (l - 1, s + j*span(l-1)), "
        "j = 0..K-1, each with residency 0; N += K - 1; action [expand, l, s]",
        "1. forced phase, only while N > budget: keep a pointer into `order` and a pool of "
        "cascade groups. Each round: A = the next group of `order` (if any), B = the cascade "
        "group with the smallest (score, start) (if any). Collapse B if it exists and (A does "
        "not or (score_B, start_B) < (gs_A, start_A) compared as pairs); else collapse A and "
        "advance the pointer; if neither exists, leave the loop. Thresholds, residency and "
        "max_actions are ignored. After collapsing a group into a parent (l+1, s) with the "
        "group's score: if l+1 < max_lod, let P = span(l+2), q = floor(s / P) * P; if q + P <= "
        "tail_start(T) and every slot q + j*span(l+1) (j = 0..K-1) now holds an entry of level "
        "l+1, those K entries form a cascade group (lod l+1, start q) added to the pool, its "
        "score the block score (block_score rule, members in position order) of the members' "
        "values: a parent made in this phase counts with the score of the group it replaced, "
        "any other member with its own input score",
        "   then, if still N > budget: evict the oldest N - budget entries of the current WC, "
        "oldest first, action [evict, lod, start] each (lod as the entry is now)",
        "2. main phase: left = max_actions. Swap groups: the groups of `order` not collapsed in "
        "phase 1 whose K members all have residency >= min_residency, in `order` order. Expand "
        "candidates: input entries with lod > 0, residency >= min_residency and score > "
        "expand_threshold, sorted by score descending, ties by start ascending. For each "
        "candidate e in turn: stop the phase if left = 0; let own = e's group (or none); skip e "
        "if it took part in an action of phase 1 (collapsed or evicted) or own was collapsed; "
        "if N > budget - (K - 1) (no room): take the first swap group g in order that is not "
        "used and is not own; stop the phase if there is none, or left < 2, or not "
        "(score_e - gs_g > swap_margin); else collapse g (mark it used, left -= 1). Then expand "
        "e, mark own used (if any), left -= 1",
        "3. voluntary phase: for each swap group g in order: stop if left = 0 or not "
        "gs_g < -collapse_threshold; if g is not used, collapse it, mark it used, left -= 1",
        "result: the entries in position order; an entry made by an action (a parent, a "
        "child) has residency 0, every other surviving entry its input residency + 1",
    ],
    "render_lod_map": [
        "wc valid for T except the budget; the text, lines joined by a single newline, no "
        "trailing newline",
        "line 1: 'T=<T> N=<N>/<budget> K=<K>'",
        "then one character per block b = 0..ceil(T/K)-1 (block b covers [b*K, min((b+1)*K, "
        "T))), in lines of at most 128 characters (none when T = 0): find the entry holding "
        "the block's last token; ' ' if no entry does (evicted), else ',' for a trailing "
        "partial block (T mod K != 0, the last block), else '.' for an LOD0 entry and the "
        "digit l for an LOD-l gist",
    ],
    "session": [
        "state (wc, T) starts from the case's inputs; steps run in order, each reading the "
        "current state",
        "focus_step step: inputs scores; (wc, actions) = focus_step(wc, scores, T, cfg); "
        "expected: wc, actions and lod_map = render_lod_map(new wc, T, cfg)",
        "append_tokens step: inputs n; wc = append_tokens(wc, T, n, cfg); T += n; expected: "
        "wc and T",
    ],
}

TOLERANCES = {"exact": {"rtol": 0.0, "atol": 0.0,
                        "meaning": "every output equals the expected value exactly"}}


# --- encoding helpers ------------------------------------------------------------------------


def cfg_json(cfg: MCConfig) -> dict:
    return dataclasses.asdict(cfg)


def wc_json(wc: WorkingContext) -> dict:
    return {"lods": tensor(wc.lods), "starts": tensor(wc.starts),
            "residency": tensor(wc.residency)}


def wc_arrays(lods, starts, residency=None) -> WorkingContext:
    lods = np.asarray(lods, dtype=np.int64)
    res = np.zeros_like(lods) if residency is None else np.asarray(residency, dtype=np.int64)
    return WorkingContext.from_numpy(lods, np.asarray(starts, dtype=np.int64), res)


def actions_json(actions) -> list:
    return [[a.kind, int(a.lod), int(a.start)] for a in actions]


def case(name, description, function, inputs, call, argument=None):
    """A case whose expected output (or error) the reference produces by `call()`."""
    c = {"name": f"{function}_{name}", "description": description, "function": function,
         "tolerance": "exact", "inputs": inputs}
    try:
        c["expected"] = call()
    except MegaContextError as err:
        if argument is None:
            raise
        c["error"] = error_json(err, argument)
    return c


def f32_scores(values) -> torch.Tensor:
    return torch.tensor(np.asarray(values, dtype=np.float32))


# --- per-function cases ----------------------------------------------------------------------

K4 = MCConfig(block_size=4, max_lod=2, budget=24, recent_tokens=5, min_residency=1,
              max_actions=4)
K3 = MCConfig(block_size=3, max_lod=3, budget=20, recent_tokens=4, min_residency=0,
              max_actions=3, block_score="max")


def build_cases() -> list:
    out = []
    plans = [
        ("empty_history", 0, K4), ("short_history_all_lod0", 5, K4),
        ("one_block_before_tail", 9, K4), ("T_not_multiple_of_K", 37, K4),
        ("needs_lod2", 90, K4), ("exactly_fills_budget", 40, MCConfig(block_size=4, max_lod=2,
                                                                       budget=16, recent_tokens=4)),
        ("one_slot_short_of_an_expansion", 40, MCConfig(block_size=4, max_lod=2, budget=15,
                                                         recent_tokens=4)),
        ("budget_forces_eviction", 300, MCConfig(block_size=4, max_lod=2, budget=12,
                                                 recent_tokens=6)),
        ("budget_equals_tail", 50, MCConfig(block_size=4, max_lod=2, budget=6, recent_tokens=6)),
        ("non_power_of_two_K_three_levels", 100, K3),
        ("zero_recent_tokens", 64, MCConfig(block_size=4, max_lod=2, budget=10, recent_tokens=0)),
        ("positions_past_2_31", 2**31 + 5, MCConfig(block_size=2**11, max_lod=2, budget=600,
                                                     recent_tokens=3)),
    ]
    for name, T, cfg in plans:
        wc = build_working_context(T, cfg)
        out.append(case(name, f"build_working_context(T={T})", "build_working_context",
                        {"T": T, "cfg": cfg_json(cfg)}, lambda wc=wc: {"wc": wc_json(wc)}))
    out.append(case("error_negative_T", "T = -1", "build_working_context",
                    {"T": -1, "cfg": cfg_json(K4)},
                    lambda: build_working_context(-1, K4), argument="T"))
    return out


def append_cases() -> list:
    out = []
    for name, T, n, cfg in [("append_zero", 37, 0, K4), ("append_one", 37, 1, K4),
                            ("append_past_budget", 90, 30, K4), ("append_to_empty", 0, 6, K4)]:
        wc = build_working_context(T, cfg)
        wc = WorkingContext(wc.lods, wc.starts, wc.residency + 3)
        out.append(case(name, f"append {n} tokens to the baseline WC of T={T} (residency 3)",
                        "append_tokens", {"wc": wc_json(wc), "T": T, "n": n,
                                          "cfg": cfg_json(cfg)},
                        lambda wc=wc, T=T, n=n, cfg=cfg: {"wc": wc_json(
                            append_tokens(wc, T, n, cfg))}))
    wc = build_working_context(37, K4)
    out.append(case("error_negative_n", "n = -1", "append_tokens",
                    {"wc": wc_json(wc), "T": 37, "n": -1, "cfg": cfg_json(K4)},
                    lambda: append_tokens(wc, 37, -1, K4), argument="n"))
    out.append(case("error_wrong_T", "the WC ends at 37 but T = 38", "append_tokens",
                    {"wc": wc_json(wc), "T": 38, "n": 1, "cfg": cfg_json(K4)},
                    lambda: append_tokens(wc, 38, 1, K4), argument="wc"))
    return out


def legal_wcs() -> list:
    """(name, description, wc, T, cfg) of WCs with groups of every kind."""
    over = append_tokens(build_working_context(90, K4), 90, 30, K4)
    mixed = wc_arrays([2, 1, 1, 1, 1, 1, 1] + [0] * 9 + [0] * 6,
                      [0, 16, 20, 24, 28, 32, 36] + list(range(40, 49)) + list(range(49, 55)))
    return [
        ("baseline_T90", "the baseline WC of T=90", build_working_context(90, K4), 90, K4),
        ("over_budget_after_append", "30 tokens appended past the budget: LOD0 groups appear",
         over, 120, K4),
        ("mixed_levels", "an LOD1 group 16..28, a lone pair of LOD1 gists (32, 36) and LOD0 "
         "groups, one touching the tail", mixed, 55, K4),
        ("non_power_of_two_K", "K=3, max_lod 3", build_working_context(100, K3), 100, K3),
        ("empty", "T = 0", build_working_context(0, K4), 0, K4),
    ]


def legal_cases() -> list:
    out = []
    for name, desc, wc, T, cfg in legal_wcs():
        def call(wc=wc, T=T, cfg=cfg):
            ok, gid = legal_actions(wc, T, cfg)
            return {"expand_ok": tensor(ok), "group_id": tensor(gid)}
        out.append(case(name, desc, "legal_actions",
                        {"wc": wc_json(wc), "T": T, "cfg": cfg_json(cfg)}, call))
    return out


def block_score_cases() -> list:
    rng = np.random.default_rng(12)
    out = []
    gid = torch.tensor([0, 0, 0, 0, -1, 1, 1, 1, 1, -1, 2, 2, 2, 2], dtype=torch.int64)
    scores = f32_scores(rng.uniform(-1, 1, gid.shape[0]))
    for how in ("mean", "max"):
        out.append(case(f"three_groups_{how}", f"three groups of 4, entries in none, how={how}",
                        "block_scores",
                        {"scores": tensor(scores), "group_id": tensor(gid), "how": how},
                        lambda how=how: {"block_scores": tensor(
                            block_scores(scores, gid, how))}))
    # a sum whose value depends on the order of additions (left to right in float64)
    cancel = torch.tensor([1e8, 1.0, -1e8, 1e-8], dtype=torch.float32)
    g1 = torch.zeros(4, dtype=torch.int64)
    out.append(case("summation_order", "float32 scores 1e8, 1, -1e8, 1e-8: the float64 sum "
                    "left to right is exactly 1 + 1e-8 rounded once per addition",
                    "block_scores", {"scores": tensor(cancel), "group_id": tensor(g1),
                                     "how": "mean"},
                    lambda: {"block_scores": tensor(block_scores(cancel, g1, "mean"))}))
    s64 = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    g3 = torch.tensor([0, 0, 0], dtype=torch.int64)
    out.append(case("float64_scores", "float64 scores are used as they are", "block_scores",
                    {"scores": tensor(s64), "group_id": tensor(g3), "how": "mean"},
                    lambda: {"block_scores": tensor(block_scores(s64, g3, "mean"))}))
    none = torch.full((3,), -1, dtype=torch.int64)
    out.append(case("no_groups", "every id -1: an empty result", "block_scores",
                    {"scores": tensor(s64), "group_id": tensor(none), "how": "max"},
                    lambda: {"block_scores": tensor(block_scores(s64, none, "max"))}))
    bad = [
        ("error_nan_score", torch.tensor([0.1, float("nan"), 0.3]), g3, "mean", "scores"),
        ("error_inf_score", torch.tensor([0.1, float("inf"), 0.3]), g3, "max", "scores"),
        ("error_length_mismatch", torch.tensor([0.1, 0.2]), g3, "mean", "scores"),
        ("error_id_below_minus_one", s64, torch.tensor([0, -2, 0]), "mean", "group_id"),
        ("error_group_without_member", s64, torch.tensor([0, 2, 2]), "mean", "group_id"),
        ("error_unknown_how", s64, g3, "median", "how"),
    ]
    for name, s, g, how, arg in bad:
        out.append(case(name, f"a bad {arg}", "block_scores",
                        {"scores": tensor(s), "group_id": tensor(g), "how": how},
                        lambda s=s, g=g, how=how: block_scores(s, g, how), argument=arg))
    return out


def focus_inputs(wc, scores, T, cfg) -> dict:
    return {"wc": wc_json(wc), "scores": tensor(scores), "T": T, "cfg": cfg_json(cfg)}


def focus_call(wc, scores, T, cfg):
    def call():
        new, actions = focus_step(wc, scores, T, cfg)
        return {"wc": wc_json(new), "actions": actions_json(actions)}
    return call


def with_residency(wc, r) -> WorkingContext:
    return WorkingContext(wc.lods, wc.starts, torch.full_like(wc.lods, r))


def focus_cases() -> list:
    out = []
    cfg = MCConfig(block_size=4, max_lod=2, budget=40, recent_tokens=4, min_residency=1,
                   max_actions=4)
    T = 90
    base = with_residency(build_working_context(T, cfg), 1)
    n = len(base)
    roomy = dataclasses.replace(cfg, budget=200)
    edge = [
        ("score_just_above_threshold", "float32(0.1) = 0.100000001 > 0.1: the gist expands",
         0.1, roomy),
        ("score_just_below_threshold", "0.099999994 (the float32 below 0.1): no action",
         float(np.nextafter(np.float32(0.1), np.float32(0))), roomy),
        ("residency_at_min_residency", "residency 1 = min_residency: the gist may act",
         0.5, roomy),
        ("residency_at_min_residency_swap", "residency 1 = min_residency, budget full: the "
         "gist swaps against the lowest group", 0.5, cfg),
    ]
    for name, desc, val, c in edge:
        s = np.zeros(n, dtype=np.float32)
        s[0] = val
        sc = torch.from_numpy(s)
        out.append(case(name, desc, "focus_step", focus_inputs(base, sc, T, c),
                        focus_call(base, sc, T, c)))
    young = with_residency(base, 0)
    s = np.zeros(n, dtype=np.float32)
    s[0] = 0.5
    sc = torch.from_numpy(s)
    out.append(case("residency_below_min_residency", "residency 0 < min_residency 1: no "
                    "action", "focus_step", focus_inputs(young, sc, T, roomy),
                    focus_call(young, sc, T, roomy)))
    # max_actions exactly used up, and one short
    rng = np.random.default_rng(5)
    s = rng.uniform(0.2, 0.9, n).astype(np.float32)
    sc = torch.from_numpy(s)
    for m in (1, 2, 3):
        c = dataclasses.replace(cfg, max_actions=m, budget=200)
        out.append(case(f"max_actions_{m}", f"many gists worth expanding, max_actions={m}",
                        "focus_step", focus_inputs(base, sc, T, c), focus_call(base, sc, T, c)))
    # swap margin boundary: candidate 0.5, groups at exactly 0.5 - 0.25 and a bit lower
    full = MCConfig(block_size=4, max_lod=2, budget=len(base), recent_tokens=4,
                    min_residency=0, swap_margin=0.25)
    _, gid = legal_actions(base, T, full)
    for name, gval, desc in [("swap_at_margin", 0.25, "score - group_score = 0.25 = "
                              "swap_margin, not greater: no swap"),
                             ("swap_past_margin", 0.2421875, "score - group_score = 0.2578125 "
                              "> 0.25: the swap happens")]:
        s = np.where(gid.numpy() >= 0, 0.75, 0.0).astype(np.float32)
        s[gid.numpy() == int(gid.max())] = gval
        s[0] = 0.5
        sc = torch.from_numpy(s)
        out.append(case(name, desc, "focus_step", focus_inputs(base, sc, T, full),
                        focus_call(base, sc, T, full)))
    # forced collapses that cascade, with scores that decide between a cascade group (scored
    # with its new parent's group score) and an input group
    for seed in (1, 3, 8):
        out.append(sweep_case(f"forced_cascade_scored_seed{seed}", seed, "append 5..30 "
                              "tokens past a small budget: forced collapses cascade, random "
                              "scores decide the order", residency=False))
    # a seeded sweep over configs, residencies, budgets and score patterns
    for seed in range(1000, 1024):
        out.append(sweep_case(f"sweep_seed{seed}", seed, "seeded sweep: random K, levels, "
                              "budget, thresholds, residencies, appended tokens and scores"))
    # errors
    bad = [("error_nan_score", torch.full((n,), float("nan")), "scores"),
           ("error_short_scores", torch.zeros(n - 1), "scores")]
    for name, sc, arg in bad:
        out.append(case(name, f"bad {arg}", "focus_step", focus_inputs(base, sc, T, cfg),
                        lambda sc=sc: focus_step(base, sc, T, cfg), argument=arg))
    return out


def sweep_case(name: str, seed: int, description: str, residency: bool = True) -> dict:
    """One focus step on a seeded random configuration (see the callers)."""
    rng = np.random.default_rng(seed)
    if residency:
        K = int(rng.integers(2, 5))
        cfg = MCConfig(block_size=K, max_lod=int(rng.integers(1, 4)),
                       budget=int(rng.integers(6, 30)), recent_tokens=int(rng.integers(0, 6)),
                       expand_threshold=float(rng.choice([0.0, 0.1, 0.25])),
                       collapse_threshold=float(rng.choice([0.0, 0.1, 0.25])),
                       swap_margin=float(rng.choice([0.0, 0.2, 0.5])),
                       min_residency=int(rng.integers(0, 3)),
                       max_actions=int(rng.integers(1, 6)),
                       block_score=str(rng.choice(["mean", "max"])))
    else:
        K = int(rng.integers(2, 4))
        cfg = MCConfig(block_size=K, max_lod=3, budget=int(rng.integers(8, 16)),
                       recent_tokens=2, min_residency=0, max_actions=2)
    T = int(rng.integers(0, 12 * K * K))
    wc = build_working_context(T, cfg)
    n = int(rng.integers(0, 3 * K)) if residency else int(rng.integers(5, 30))
    wc = append_tokens(wc, T, n, cfg)
    T += n
    if residency:
        wc = WorkingContext(wc.lods, wc.starts,
                            torch.from_numpy(rng.integers(0, 4, len(wc)).astype(np.int64)))
    x = rng.uniform(-1, 1, len(wc))
    if residency and seed % 3 == 0:
        x = np.round(x * 2) / 2  # ties
    scores = torch.from_numpy(x.astype(np.float32))
    c = case(name, description, "focus_step", focus_inputs(wc, scores, T, cfg),
             focus_call(wc, scores, T, cfg))
    return c


def lod_map_cases() -> list:
    out = []
    wide = MCConfig(block_size=2, max_lod=3, budget=400, recent_tokens=3)
    items = [
        ("partial_block", build_working_context(37, K4), 37, K4, "a trailing partial block"),
        ("evicted", build_working_context(300, MCConfig(block_size=4, max_lod=2, budget=12,
                                                        recent_tokens=6)), 300,
         MCConfig(block_size=4, max_lod=2, budget=12, recent_tokens=6), "evicted blocks"),
        ("wraps_at_128", build_working_context(601, wide), 601, wide,
         "301 blocks: three lines"),
        ("empty", build_working_context(0, K4), 0, K4, "T = 0: the header alone"),
        ("three_levels_K3", build_working_context(100, K3), 100, K3, "K=3, levels 0..3"),
    ]
    for name, wc, T, cfg, desc in items:
        out.append(case(name, desc, "render_lod_map",
                        {"wc": wc_json(wc), "T": T, "cfg": cfg_json(cfg)},
                        lambda wc=wc, T=T, cfg=cfg: {"text": render_lod_map(wc, T, cfg)}))
    return out


def validate_cases() -> list:
    """One WC per check of the validate order, each breaking exactly that check."""
    c = MCConfig(block_size=4, max_lod=2, budget=12, recent_tokens=4)
    T = 24
    # valid: LOD1 0..16, tokens 16..23 -> 4 + 8 = 12 entries
    good = ([1, 1, 1, 1] + [0] * 8, [0, 4, 8, 12] + list(range(16, 24)))
    items = [
        ("valid", "a valid WC", good, None, T, c),
        ("negative_residency", "residency[2] = -1", good, [0, 0, -1] + [0] * 9, T, c),
        ("lod_above_max", "entry 1 at lod 3 > max_lod",
         ([1, 3, 1, 1] + [0] * 8, good[1]), None, T, c),
        ("misaligned", "entry 1 (LOD1) starts at 5",
         ([1, 1, 1] + [0] * 9, [0, 5, 9] + list(range(13, 22))), None, 22, c),
        ("incomplete_gist", "the last entry is an LOD1 gist over [24, 28) with T = 26",
         ([1, 1, 1, 1, 1, 1, 1], [0, 4, 8, 12, 16, 20, 24]), None, 26, c),
        ("gap", "entry 4 starts at 17 after [12, 16)",
         ([1, 1, 1, 1] + [0] * 7, [0, 4, 8, 12] + list(range(17, 24))), None, T, c),
        ("overlap", "entry 2 starts inside entry 1",
         ([0, 1, 0], [0, 0, 4]), None, 5, MCConfig(block_size=4, max_lod=2, budget=12,
                                                   recent_tokens=0)),
        ("does_not_reach_T", "the entries end at 24, T = 25", good, None, 25, c),
        ("gist_in_tail", "an LOD1 gist over [20, 24) inside the tail [20, 24)",
         ([1, 1, 1, 1, 0, 0, 0, 0, 1], [0, 4, 8, 12, 16, 17, 18, 19, 20]), None, T, c),
        ("over_budget", "13 entries, budget 12",
         ([1, 1, 1] + [0] * 12, [0, 4, 8] + list(range(12, 24))), None, T, c),
        ("empty_with_history", "no entries, T = 3", ([], []), None, 3, c),
        ("negative_T", "T = -1", ([], []), None, -1, c),
    ]
    out = []
    for name, desc, (lods, starts), res, TT, cfg in items:
        wc = wc_arrays(lods, starts, res)
        arg = "T" if TT < 0 else ("residency" if res is not None else "wc")
        out.append(case(name, desc, "validate", {"wc": wc_json(wc), "T": TT,
                                                 "cfg": cfg_json(cfg)},
                        lambda wc=wc, TT=TT, cfg=cfg: wc.validate(cfg, TT) or {},
                        argument=arg))
    return out


# --- sessions --------------------------------------------------------------------------------


def session_case(name, description, cfg, T, wc, plan) -> dict:
    """plan: a list of ('focus', scores_fn(wc, T, step)) or ('append', n)."""
    steps = []
    state_wc, state_T = wc, T
    for i, (kind, arg) in enumerate(plan):
        if kind == "append":
            state_wc = append_tokens(state_wc, state_T, arg, cfg)
            state_T += arg
            steps.append({"function": "append_tokens", "inputs": {"n": arg},
                          "expected": {"wc": wc_json(state_wc), "T": state_T}})
        else:
            scores = arg(state_wc, state_T, i)
            state_wc, actions = focus_step(state_wc, scores, state_T, cfg)
            steps.append({"function": "focus_step", "inputs": {"scores": tensor(scores)},
                          "expected": {"wc": wc_json(state_wc),
                                       "actions": actions_json(actions),
                                       "lod_map": render_lod_map(state_wc, state_T, cfg)}})
    return {"name": name, "description": description, "function": "session",
            "tolerance": "exact", "inputs": {"wc": wc_json(wc), "T": T, "cfg": cfg_json(cfg)},
            "steps": steps}


def golden_sessions() -> list:
    """The scenarios of spec/test_focus_golden.py (golden/test_focus_golden/), as data."""
    base = dict(block_size=8, max_lod=2, budget=64, recent_tokens=16, expand_threshold=0.1,
                collapse_threshold=0.1, swap_margin=0.2, min_residency=1, max_actions=8)

    def recency(wc, T, cfg, needle=None, needle_score=0.9):
        starts, ends = wc.starts.double(), wc.ends(cfg).double()
        x = -0.6 * (1.0 - starts / max(T, 1))
        if needle is not None:
            x[(starts < needle[1]) & (ends > needle[0])] = needle_score
        return x.float()

    out = []
    cfg = MCConfig(**base)
    out.append(session_case(
        "golden_needle", "needle: tokens [128, 192) score 0.9, the rest -0.6 (oldest) .. 0 "
        "(newest)", cfg, 1000, build_working_context(1000, cfg),
        [("focus", lambda w, T, _: recency(w, T, cfg, needle=(128, 192)))] * 5))
    c2 = MCConfig(**{**base, "budget": 96})
    out.append(session_case(
        "golden_negative_field", "uniformly negative field (-0.5): voluntary collapses",
        c2, 1000, build_working_context(1000, c2),
        [("focus", lambda w, T, _: torch.full((len(w),), -0.5))] * 6))
    out.append(session_case(
        "golden_forced_by_append", "40 tokens appended past the budget: forced collapses",
        cfg, 1000, build_working_context(1000, cfg),
        [("append", 40)] + [("focus", lambda w, T, _: recency(w, T, cfg))] * 2))
    c3 = MCConfig(**{**base, "budget": 24})
    out.append(session_case(
        "golden_forced_cascade_and_eviction", "100 tokens appended to an evicted WC: forced "
        "collapses cascade to LOD2, then the oldest entries are evicted", c3, 1000,
        build_working_context(1000, c3),
        [("append", 100), ("focus", lambda w, T, _: torch.zeros(len(w)))]))
    c4 = MCConfig(**{**base, "min_residency": 2})
    w4 = with_residency(build_working_context(600, c4), 2)
    out.append(session_case(
        "golden_adversarial_no_thrash", "every score +1 on odd steps, -1 on even steps, "
        "min_residency 2", c4, 600, w4,
        [("focus", lambda w, T, i: torch.full((len(w),), 1.0 if (i + 1) % 2 else -1.0))] * 8))
    for how in ("mean", "max"):
        c5 = MCConfig(**{**base, "budget": 96, "block_score": how, "min_residency": 0})

        def keeper(w, T, _, c=c5):
            x = recency(w, T, c) * 0.5 - 0.3
            x[(w.starts // w.spans(c)) % c.block_size == 0] = 0.05
            return x
        out.append(session_case(
            f"golden_block_score_{how}", f"block_score={how}: one member of every group at "
            "+0.05, the rest -0.3 .. -0.6", c5, 1000, build_working_context(1000, c5),
            [("focus", keeper)] * 2))
    return out


def random_sessions() -> list:
    """Seeded sessions with appends between steps, over several configs."""
    out = []
    configs = [
        ("k4_mean", MCConfig(block_size=4, max_lod=2, budget=24, recent_tokens=5,
                             min_residency=1, max_actions=3), 70),
        ("k3_max_three_levels", MCConfig(block_size=3, max_lod=3, budget=22, recent_tokens=4,
                                         min_residency=0, max_actions=4, block_score="max",
                                         swap_margin=0.1), 120),
        ("k2_tight", MCConfig(block_size=2, max_lod=3, budget=9, recent_tokens=3,
                              min_residency=2, max_actions=2, expand_threshold=0.0,
                              collapse_threshold=0.0, swap_margin=0.0), 40),
        ("k5_roomy", MCConfig(block_size=5, max_lod=2, budget=60, recent_tokens=7,
                              min_residency=0, max_actions=6), 160),
    ]
    for seed, (name, cfg, T) in enumerate(configs):
        rng = np.random.default_rng(100 + seed)

        def scores(w, T, i, rng=rng):
            n = len(w)
            kind = i % 3
            if kind == 0:
                x = rng.uniform(-1, 1, n)
            elif kind == 1:  # a hot region, cold elsewhere
                x = np.full(n, -0.4) + rng.uniform(-0.1, 0.1, n)
                lo = int(rng.integers(0, max(n - 3, 1)))
                x[lo:lo + 3] = 0.8
            else:
                x = np.round(rng.uniform(-1, 1, n) * 4) / 4  # ties
            return torch.from_numpy(x.astype(np.float32))

        plan = []
        for i in range(8):
            plan.append(("focus", scores))
            if i % 2 == 1:
                plan.append(("append", int(rng.integers(1, 2 * cfg.block_size + 3))))
        out.append(session_case(f"random_{name}", "seeded random scores (uniform, a hot "
                                "region, quarter-step ties) with appends between steps",
                                cfg, T, build_working_context(T, cfg), plan))
    return out


def build_document() -> dict:
    doc = header("the controller: working contexts, legality, group scores, the focus "
                 "allocator, LOD maps", "contract §3, §4, §5, §9", DEFINITIONS, TOLERANCES,
                 ERROR_KINDS)
    doc["cases"] = (build_cases() + append_cases() + legal_cases() + block_score_cases()
                    + focus_cases() + lod_map_cases() + validate_cases() + golden_sessions()
                    + random_sessions())
    return doc
