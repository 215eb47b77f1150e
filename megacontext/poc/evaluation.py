"""The POC evaluation (contract §16): every policy at equal budget on held-out text.

    items = eval_items(cfg)                         # what to measure, one dict per cell
    value = measure(item, systems, data, cfg)       # one cell: loss@H, actions, ages, ...
    summary = summarize(cells, cfg, meta)           # the numbers report.md is written from

Systems (all share one frozen base's weights):
    full          the frozen base reading the whole history (the upper bound)
    window        the frozen base reading the last W_max bytes (no gists)
    recency       learned GistNet gists + LoRA, the recency WC (`build_working_context`)
    mean_recency  mean-pooled gists, frozen base, recency WC (the average-pooling baseline)
    random        learned gists + LoRA, seeded random scores -> focus_step (the floor)
    learned       learned gists + LensNet + LoRA -> focus_step
    oracle        learned gists + LoRA, counterfactual ΔNLL scores on the real next H bytes
Ablations (learned policy, working budget): one module replaced by its untrained
initialisation (the same seed as training: what "frozen from the start" gives): no_gistnet,
no_lensnet, no_lora; mean_gists (learned LensNet + LoRA over mean-pooled gists); and no_tail
(the trained LensNet scoring with tail=None: its slots read the WC without the tail gists);
causal (the seed's causal-vs-non-causal question: a whole second trainer run, same seeds and
config, whose LensNet is a `CausalLensNet`; scoring the non-causal weights causally would
measure inputs they never saw, so the causal scorer is trained from scratch, and GistNet and
LoRA are trained alongside it, as the cycle alternates).

Units: loss@H in nats/byte (mean over the H horizon bytes), latency in ms, swap rate in
actions per refocus (one refocus per completed K-byte block), residency in focus steps.
Swap rate is reported twice: all actions per block, and policy-chosen (non-forced) actions
per block = all actions minus the forced ones (`forced_actions`).
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from dataclasses import dataclass

import torch

from ..data import LongRangeTask, load_documents, split_documents
from ..device import HOST
from ..errors import ConfigError, InputError
from ..models.lensnet import LensNet
from ..runtime.horizon import base_logits, device_of, embed_ids
from ..runtime.session import MegaContextSession, RefocusRecord, with_budget
from .config import LONG_RANGE_VALUE_LEN, PocConfig, parse_budget

POLICY_SYSTEMS = ("window", "recency", "mean_recency", "random", "learned")
ABLATIONS = ("no_gistnet", "no_lensnet", "no_lora", "mean_gists", "no_tail", "causal")
FOCUS_STEP_POLICIES = ("lens", "random", "oracle")  # their records' actions come from focus_step
CORPORA = ("coding", "prose")


class NoTailLensNet(LensNet):
    """The `no_tail` ablation: a LensNet with the weights of the one it is built from
    (`from_lensnet`) that reads no tail gists (`reads_tail` False: callers pass none, see
    `lens_tail`; a tail passed anyway raises InputError), so it scores as with tail=None."""

    reads_tail = False

    def forward(self, x, features, mask=None, tail=None, tail_mask=None, *, projected=False):
        if tail is not None or tail_mask is not None:
            raise InputError("tail: the no_tail ablation's LensNet reads no tail gists; pass "
                             "tail=None")
        return super().forward(x, features, mask, projected=projected)

    @classmethod
    def from_lensnet(cls, lensnet: LensNet) -> NoTailLensNet:
        with device_of(lensnet):  # made where the original lives
            out = cls(lensnet.cfg).to(lensnet.dtype)
        out.load_state_dict(lensnet.state_dict())
        return out.eval()


@dataclass
class Systems:
    """Trained and initial (untrained) modules. `init_base` has LoRA adapters at zero, so it
    computes exactly the frozen base."""

    base: torch.nn.Module
    gistnet: torch.nn.Module
    lensnet: torch.nn.Module
    init_base: torch.nn.Module
    init_gistnet: torch.nn.Module
    init_lensnet: torch.nn.Module
    causal: tuple | None = None  # (base, gistnet, CausalLensNet) of the causal trainer run

    @functools.cached_property
    def lensnet_no_tail(self) -> NoTailLensNet:
        return NoTailLensNet.from_lensnet(self.lensnet)

    def spec(self, name: str):
        """(policy, base, gistnet or None for mean gists, lensnet) of a system name."""
        s = self
        table = {
            "window": ("window", s.init_base, None, None),
            "recency": ("recency", s.base, s.gistnet, None),
            "mean_recency": ("recency", s.init_base, None, None),
            "random": ("random", s.base, s.gistnet, None),
            "learned": ("lens", s.base, s.gistnet, s.lensnet),
            "oracle": ("oracle", s.base, s.gistnet, None),
            "no_gistnet": ("lens", s.base, s.init_gistnet, s.lensnet),
            "no_lensnet": ("lens", s.base, s.gistnet, s.init_lensnet),
            "no_lora": ("lens", s.init_base, s.gistnet, s.lensnet),
            "mean_gists": ("lens", s.base, None, s.lensnet),
        }
        if name == "no_tail":
            return ("lens", s.base, s.gistnet, s.lensnet_no_tail)
        if name == "causal":
            if s.causal is None:
                raise ConfigError("system 'causal': the causal run was not loaded "
                                  "(eval.causal_lensnet = false)")
            return ("lens", *s.causal)
        return table[name]


# --- data -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def validation_documents(sources: tuple[str, ...], val_fraction: float):
    """The validation split (by file, `megacontext.data`) of `sources` (read once)."""
    return split_documents(load_documents(sources), val_fraction).validation


def _spread(ids: torch.Tensor, length: int, count: int) -> list[torch.Tensor]:
    n = ids.shape[0]
    if count == 1:
        return [ids[:length]]
    step = (n - length) / (count - 1)
    return [ids[round(i * step): round(i * step) + length] for i in range(count)]


def heldout_windows(source: str, n: int, length: int, val_fraction: float) -> list[dict]:
    """`n` windows of `length` bytes from the validation split (by file, `megacontext.data`) of
    `source`, spread over as many documents as hold one: [{name, offset, ids[length]}]."""
    if n == 0:
        return []
    docs = [d for d in validation_documents((source,), val_fraction) if len(d) >= length]
    if not docs:
        raise InputError(f"no held-out {source!r} document holds history + horizon = "
                         f"{length} bytes")
    per = -(-n // len(docs))
    out = []
    for d in docs:
        ids = torch.frombuffer(bytearray(d.data), dtype=torch.uint8).long()
        for w in _spread(ids, length, min(per, max(1, len(d) - length + 1))):
            out.append({"name": d.name, "ids": w})
    # interleave documents so the first n windows cover as many files as possible
    by_doc: dict[str, list] = {}
    for w in out:
        by_doc.setdefault(w["name"], []).append(w)
    mixed = [w for k in range(per) for ws in by_doc.values() if k < len(ws) for w in [ws[k]]]
    return mixed[:n]


def long_range_task(cfg: PocConfig) -> LongRangeTask:
    """Long-range examples of history + 8 bytes over held-out text: the query ends exactly at
    the history, the 8 answer bytes are the horizon."""
    docs = (validation_documents(("stdlib",), cfg.pretrain.data.val_fraction)
            + validation_documents(("pydoc",), cfg.pretrain.data.val_fraction))
    return LongRangeTask(docs, length=cfg.train.history + LONG_RANGE_VALUE_LEN,
                         n_records=cfg.eval.n_records, key_len=cfg.eval.key_len,
                         value_len=LONG_RANGE_VALUE_LEN, plant_within=cfg.eval.plant_within,
                         seed=cfg.eval.seed)


# --- one cell -----------------------------------------------------------------------------


def run_session(mc, base, gistnet, lensnet, policy, ids, T, H, seed) -> MegaContextSession:
    """A fresh session that ingested ids[:T] in K-byte chunks (the oracle sees ids[T:T+H])."""
    s = MegaContextSession(mc, base, gistnet, lensnet, policy=policy, seed=seed, horizon=H)
    K = mc.block_size
    for i in range(0, T, K):
        j = min(i + K, T)
        s.ingest(ids[i:j], future=ids[j: T + H] if policy == "oracle" else None)
    return s


@torch.no_grad()
def horizon_logits(base, vectors, positions, T, future) -> torch.Tensor:
    """[H, V] float32 logits predicting future[H] from a context (vectors [N, E], positions [N])
    with teacher forcing (the context is fixed for the whole horizon, as in loss@H)."""
    H = future.shape[0]
    q = embed_ids(base, future[: H - 1]).to(vectors.dtype)
    x = torch.cat([vectors, q])[None]
    pos = torch.cat([positions.to(torch.float64),
                     torch.arange(T, T + H - 1, dtype=torch.float64, device=HOST)])[None]
    n = vectors.shape[0]
    dev = device_of(base)  # the host's vectors go to the base's device, the logits come back
    return base_logits(base, x.to(dev), pos.to(dev))[0, n - 1: n - 1 + H].float().cpu()


def _score(logits: torch.Tensor, future: torch.Tensor) -> dict:
    nll = torch.nn.functional.cross_entropy(logits, future, reduction="mean")
    exact = bool((logits.argmax(-1) == future).all())
    return {"loss": float(nll), "exact": exact}


def forced_actions(rec: RefocusRecord, budget: int, block_size: int) -> int:
    """How many of a `focus_step` record's actions were forced (contract §5.1): focus_step
    applies forced collapses/evictions first, while N > budget, so they are the shortest prefix
    of `rec.actions` that brings `rec.n_before` within `budget` (a collapse turns K siblings
    into one entry, N -= K - 1; an evict removes one). The rest (expansions, swaps, voluntary
    collapses) are the policy's choice. Exact; only for focus_step policies (window/recency
    rebuild the WC and diff it, so their actions come in no such order)."""
    n, k = rec.n_before, 0
    for a in rec.actions:
        if n <= budget:
            break
        n -= block_size - 1 if a.kind == "collapse" else 1 if a.kind == "evict" else 0
        k += 1
    return k


def at_full_detail(wc, span: tuple[int, int]) -> bool:
    """Whether every byte of `span` = [start, end) is a raw (LOD0) entry of `wc`.
    Raises InputError unless 0 <= start < end (an empty span is never "in focus")."""
    start, end = span
    if not 0 <= start < end:
        raise InputError(f"span must be [start, end) with 0 <= start < end, got {span!r}")
    lods, starts = wc.lods, wc.starts
    return int(((lods == 0) & (starts >= start) & (starts < end)).sum()) == end - start


@torch.no_grad()
def measure(item: dict, systems: Systems, ids: torch.Tensor, cfg: PocConfig,
            record: tuple[int, int] | None = None,
            others: tuple[tuple[int, int], ...] = ()) -> dict:
    """One cell: `item` = {system, budget (slots or None), T, H, ...}; ids[T + H] bytes.
    Returns loss (nats/byte), exact (greedy under teacher forcing = exact match of all H
    bytes), and for session systems: refocus count, actions, forced actions (focus_step
    policies only), summed action ages, and with `record` (a long-range example's queried
    value, bytes [start, end) of the history) `in_focus`: whether the final working context
    holds all of it at full detail (LOD0), so a wrong answer with it in focus is the base's
    or the gists' doing, not the focus policy's; with `others` (the other records' values)
    `other_in_focus`: whether it holds any of those at full detail (a policy that finds
    records but not the queried key)."""
    if others and record is None:
        raise InputError(f"others={others!r} needs record (the queried value's span)")
    T, H = item["T"], item["H"]
    future = ids[T: T + H]
    if item["system"] == "full":
        base = systems.init_base
        v = embed_ids(base, ids[:T])
        return _score(horizon_logits(base, v, torch.arange(T, device=HOST), T, future), future)
    policy, base, gistnet, lensnet = systems.spec(item["system"])
    mc = with_budget(cfg.train.mc, item["budget"])
    s = run_session(mc, base, gistnet, lensnet, policy, ids, T, H, seed=item.get("seed", 0))
    out = _score(horizon_logits(base, s.tree.gather(s.wc), s.wc.positions(mc), T, future),
                 future)
    recs = [r for r in s.records if r.kind == "refocus"]
    ages = [a for r in recs for a in r.action_ages]
    scored = [r for r in recs if not math.isnan(r.score_abs_mean)]
    out.update(refocus=len(recs), actions=sum(len(r.actions) for r in recs),
               expands=sum(a.kind == "expand" for r in recs for a in r.actions),
               age_sum=sum(ages), age_n=len(ages), N=len(s.wc),
               score_abs_mean=_mean([r.score_abs_mean for r in scored]),
               score_max=max((r.score_max for r in scored), default=math.nan))
    if record is not None:
        out["in_focus"] = at_full_detail(s.wc, record)
        out["other_in_focus"] = any(at_full_detail(s.wc, span) for span in others)
    if policy in FOCUS_STEP_POLICIES:
        out["forced"] = sum(forced_actions(r, mc.budget, mc.block_size) for r in recs)
    return out


@torch.no_grad()
def measure_latency(systems: Systems, ids: torch.Tensor, cfg: PocConfig, budget: int) -> dict:
    """Per K-block cost of the learned system (ingest: embed + gist + gather + LensNet +
    focus_step) against K decode steps of the base on the same working context, timed over
    the last `eval.latency_blocks` blocks of the history. Times in ms (medians)."""
    T, K = cfg.train.history, cfg.train.mc.block_size
    n = min(cfg.eval.latency_blocks, T // K - 1)
    mc = with_budget(cfg.train.mc, budget)
    policy, base, gistnet, lensnet = systems.spec("learned")
    s = MegaContextSession(mc, base, gistnet, lensnet, policy=policy)
    start = T - n * K
    for i in range(0, start, K):
        s.ingest(ids[i: i + K])
    focus, decode, parts = [], [], []
    for i in range(start, T, K):
        t0 = time.perf_counter()
        recs = s.ingest(ids[i: i + K])
        focus.append((time.perf_counter() - t0) * 1e3)
        parts.append(sum(r.gather_ms + r.lens_ms + r.allocator_ms for r in recs))
        t0 = time.perf_counter()
        s.next_logits()
        decode.append((time.perf_counter() - t0) * 1e3)
    f, d = statistics.median(focus), statistics.median(decode)
    return {"blocks": n, "block_size": K, "focus_ms": f, "focus_step_ms": statistics.median(parts),
            "decode_ms": d, "focus_share_of_decode": f / d,
            "overhead": f / (K * d)}


# --- what to measure ------------------------------------------------------------------------


def eval_items(cfg: PocConfig) -> list[dict]:
    """Every cell, keyed: corpus windows x (full + systems x budgets + oracle + ablations),
    and long-range examples x (full + systems at the working budget + oracle)."""
    e, T, H = cfg.eval, cfg.train.history, cfg.train.horizon
    budgets = [parse_budget(b, T, "eval.budgets") for b in e.budgets]
    work = parse_budget(e.working_budget, T, "eval.working_budget")
    ablations = tuple(a for a in ABLATIONS if a != "causal" or e.causal_lensnet)
    items = []
    for corpus, n in (("coding", e.coding_windows), ("prose", e.prose_windows)):
        for w in range(n):
            base = {"corpus": corpus, "window": w, "T": T, "H": H, "seed": w}
            items.append(base | {"system": "full", "budget": None})
            for b in budgets:
                for sysname in POLICY_SYSTEMS:
                    items.append(base | {"system": sysname, "budget": b})
            for sysname in ablations:
                items.append(base | {"system": sysname, "budget": work})
            if w < e.oracle_windows:
                items.append(base | {"system": "oracle", "budget": work})
    for i in range(e.long_range_examples):
        base = {"corpus": "long_range", "window": i, "T": T, "H": LONG_RANGE_VALUE_LEN,
                "seed": i}
        items.append(base | {"system": "full", "budget": None})
        for sysname in POLICY_SYSTEMS + ablations:
            items.append(base | {"system": sysname, "budget": work})
        if i < e.oracle_windows:
            items.append(base | {"system": "oracle", "budget": work})
    for it in items:
        it["key"] = f"{it['corpus']}/{it['window']}/{it['system']}/{it['budget']}"
    return items


# --- summary ------------------------------------------------------------------------------


def _mean(v):
    return statistics.fmean(v) if v else math.nan


def _se(v):
    return statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else math.nan


def summarize(items: list[dict], cells: dict[str, dict], cfg: PocConfig, meta: dict) -> dict:
    """The numbers report.md is written from (JSON-able): mean ± s.e. loss@H per corpus x
    system x budget, ΔNLL against full context on the same windows, retrieval accuracy, swap
    rate (all actions and policy-chosen ones per block) and mean residency per system x
    budget, ablations and their cost over `learned`."""
    T = cfg.train.history
    work = parse_budget(cfg.eval.working_budget, T, "eval.working_budget")
    loss: dict = {}
    for it in items:
        c = cells[it["key"]]
        b = "full" if it["budget"] is None else str(it["budget"])
        loss.setdefault(it["corpus"], {}).setdefault(it["system"], {}).setdefault(b, []).append(
            (it["window"], c))
    table: dict = {}
    for corpus, systems in loss.items():
        full = {w: c["loss"] for w, c in systems.get("full", {}).get("full", [])}
        for sysname, by_b in systems.items():
            for b, rows in by_b.items():
                vals = [c["loss"] for _, c in rows]
                deltas = [c["loss"] - full[w] for w, c in rows if w in full]
                acts = sum(c.get("actions", 0) for _, c in rows)
                refs = sum(c.get("refocus", 0) for _, c in rows)
                age_n = sum(c.get("age_n", 0) for _, c in rows)
                age_s = sum(c.get("age_sum", 0) for _, c in rows)
                table.setdefault(corpus, {}).setdefault(sysname, {})[b] = {
                    "n": len(vals), "loss": _mean(vals), "loss_se": _se(vals),
                    "delta": _mean(deltas), "delta_se": _se(deltas),
                    "exact": _mean([float(c["exact"]) for _, c in rows]),
                    "swap_rate": acts / refs if refs else math.nan,
                    "policy_swap_rate": (acts - sum(c["forced"] for _, c in rows)) / refs
                    if refs and all("forced" in c for _, c in rows) else math.nan,
                    "expand_rate": sum(c.get("expands", 0) for _, c in rows) / refs
                    if refs else math.nan,
                    "score_abs_mean": _mean([c["score_abs_mean"] for _, c in rows
                                             if not math.isnan(c.get("score_abs_mean",
                                                                     math.nan))]),
                    "mean_residency": age_s / age_n if age_n else math.nan,
                }
                focus = [(c["in_focus"], c["loss"]) for _, c in rows if "in_focus" in c]
                if focus:  # long-range: the queried record at full detail, and answer NLL
                    hit = [v for f, v in focus if f]
                    miss = [v for f, v in focus if not f]
                    table[corpus][sysname][b].update(
                        in_focus=len(hit) / len(focus), loss_in_focus=_mean(hit),
                        loss_out_of_focus=_mean(miss),
                        other_in_focus=_mean([float(c.get("other_in_focus", math.nan))
                                              for _, c in rows if "in_focus" in c]))
    # paired differences against the learned system at the working budget (same windows)
    for corpus, systems in loss.items():
        ref = {w: c["loss"] for w, c in systems.get("learned", {}).get(str(work), [])}
        for sysname, by_b in systems.items():
            rows = by_b.get(str(work), by_b.get("full", []))
            d = [c["loss"] - ref[w] for w, c in rows if w in ref]
            cell = table[corpus][sysname].get(str(work)) or table[corpus][sysname]["full"]
            cell["vs_learned"], cell["vs_learned_se"] = _mean(d), _se(d)
    return {"meta": meta | {"working_budget": work, "history": T,
                            "horizon": cfg.train.horizon,
                            "block_size": cfg.train.mc.block_size,
                            "budgets": [parse_budget(b, T, "eval.budgets")
                                        for b in cfg.eval.budgets]},
            "table": table}
