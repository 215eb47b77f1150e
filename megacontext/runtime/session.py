"""`MegaContextSession`: the runtime loop ingest -> gist -> score -> focus -> decode (contract §11).

    session = MegaContextSession(cfg, base, gistnet=None, lensnet=None, policy="lens", seed=0)
    session.ingest(ids)          # embed, append to the tree (gists as spans complete), refocus
    session.nll(future_ids)      # loss@H of the next H tokens given the current WC (no change)
    session.generate(n, ...)     # sampled decode, ingesting every sampled token
    session.records              # one RefocusRecord per refocus, for telemetry (§14)

Cadence: the WC is refocused once per completed K-token block (`kind="refocus"`). An
`ingest` that ends inside a block may leave more than W_max entries (the partial block's
tokens are appended to the tail); the session then applies forced collapses only
(`kind="overflow"`: the policy's rebuild for window/recency, `focus_step` with all-zero
scores otherwise, which triggers neither expansions nor voluntary collapses). So after every
`ingest` the WC is valid and within budget.

Policies (one interface, `POLICIES`):
    window   the last W_max tokens at LOD0 and nothing older (a plain model with that context)
    recency  `build_working_context(T, cfg)` (the baseline WC)
    lens     LensNet scores -> `focus_step`
    random   seeded uniform(-1, 1) scores -> `focus_step` (the floor)
    oracle   scores from counterfactual ΔNLL on the next `horizon` tokens (§12) -> `focus_step`
             (the ceiling; needs the future: `ingest(ids, future=...)`)
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..controller.allocator import Action, focus_step
from ..controller.config import MCConfig
from ..controller.working_context import (
    WorkingContext,
    append_tokens,
    as_numpy,
    build_working_context,
)
from ..device import HOST
from ..errors import ConfigError, InputError, InputTypeError, check_int
from ..models.lensnet import LensNet, lens_features, lens_tail
from ..models.tree import MegaContextTree
from ..supervision.lens_targets import lens_targets_from_utilities
from .horizon import base_logits, check_ids, device_of, embed_ids, loss_at_h_batch
from .labels import label_snapshot

POLICIES = ("window", "recency", "lens", "random", "oracle")


@dataclass
class RefocusRecord:
    """What one refocus did (contract §11, consumed by telemetry §14). Times in ms."""

    step: int  # 0, 1, ... over the session's records
    kind: str  # "refocus" (a completed K-block) or "overflow" (forced collapses only)
    T: int  # tokens in the tree
    N: int  # entries in the WC after the step
    n_before: int  # entries before the step
    actions: list[Action]
    action_ages: list[int]  # residency of each entry changed (collapse: every member)
    entries_per_lod: list[int]  # after the step, index = lod
    score_mean: float  # of the scores the allocator saw (NaN: no scores)
    score_abs_mean: float
    score_std: float
    score_min: float
    score_max: float
    gather_ms: float
    lens_ms: float
    allocator_ms: float
    base_ms: float  # base-model time since the previous record (nll, generate, oracle)
    scores: torch.Tensor | None = field(default=None, repr=False)  # [n_before] float32
    wc_before: WorkingContext | None = field(default=None, repr=False)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


class MegaContextSession:
    """A streaming MegaContext session over one history (contract §11).

    cfg: MCConfig (its budget W_max must hold the protected tail; MCConfig checks that).
    base: TinyGPT or any model with `embed(ids[n]) -> [n, E]` and
        `base(inputs[B, L, E], positions=[B, L]) -> logits [B, L, V]` (or `.logits`).
    gistnet: a `GistNet` (or any `(children [B, K, E], lod) -> [B, E]`); None: mean gists.
    lensnet: a `LensNet` with `d_in == E` (required for policy "lens").
    policy: one of POLICIES; seed: the random policy's generator seed.
    horizon: tokens of lookahead the oracle labels with (H of §12).
    cached_projections: policy "lens" scores from the tree's cached LensNet input projections
        (`tree.gather(wc, lensnet=...)`, contract §10; the same scores as the plain path, which
        `cached_projections=False` selects). Scoring runs without autograd either way.
    Errors: InputTypeError / InputError / ConfigError naming the argument.
    """

    def __init__(self, cfg: MCConfig, base, gistnet=None, lensnet=None, policy: str = "lens",
                 seed: int = 0, horizon: int = 64, cached_projections: bool = True):
        if not isinstance(cfg, MCConfig):
            raise InputTypeError(f"cfg must be an MCConfig, got {type(cfg).__name__}")
        if policy not in POLICIES:
            raise InputError(f"policy must be one of {POLICIES}, got {policy!r}")
        if not (callable(getattr(base, "embed", None)) and callable(base)):
            raise InputTypeError(f"base must have embed(ids) and be callable (the TinyGPT "
                                 f"contract), got {type(base).__name__}")
        self.seed = check_int("seed", seed, minimum=0)
        if not isinstance(cached_projections, bool):
            raise InputTypeError(f"cached_projections must be a bool, got {cached_projections!r}")
        self.cached_projections = cached_projections
        self.horizon = check_int("horizon", horizon, minimum=1)
        self.cfg, self.base, self.gistnet, self.lensnet, self.policy = (
            cfg, base, gistnet, lensnet, policy)
        self.vocab_size = getattr(getattr(base, "cfg", None), "vocab_size", None)
        with torch.no_grad():
            probe = embed_ids(base, torch.zeros(1, dtype=torch.int64, device=HOST))
        self.dim, self.dtype = int(probe.shape[1]), probe.dtype
        if gistnet is not None:
            gdim = getattr(getattr(gistnet, "cfg", None), "dim", self.dim)
            gk = getattr(getattr(gistnet, "cfg", None), "block_size", cfg.block_size)
            if gdim != self.dim:
                raise InputError(f"gistnet has dim={gdim} but base embeds to width {self.dim}")
            if gk != cfg.block_size:
                raise InputError(f"gistnet has block_size={gk} but cfg.block_size="
                                 f"{cfg.block_size}")
        if policy == "lens" and lensnet is None:
            raise InputError("policy 'lens' needs a lensnet")
        if lensnet is not None:
            if not isinstance(lensnet, LensNet):
                raise InputTypeError(f"lensnet must be a LensNet, got {type(lensnet).__name__}")
            if lensnet.cfg.d_in != self.dim:
                raise InputError(f"lensnet has d_in={lensnet.cfg.d_in} but base embeds to width "
                                 f"{self.dim}")
        gist_fn = None
        if gistnet is not None:
            gdev = device_of(gistnet)

            def gist_fn(children, lod):  # children from the host tree; the gists go back there
                with torch.no_grad():
                    return gistnet(children.to(gdev), lod).to(HOST)
        self.tree = MegaContextTree(cfg, self.dim, gist_fn, dtype=self.dtype)
        self.wc = WorkingContext.from_numpy(np.zeros(0), np.zeros(0))
        self.records: list[RefocusRecord] = []
        self._rng = torch.Generator().manual_seed(self.seed)
        self._base_ms = 0.0
        # the oracle's lookahead: the tokens after those being ingested (see `ingest`)
        self._pending: torch.Tensor = torch.zeros(0, dtype=torch.int64, device=HOST)

    # --- state ------------------------------------------------------------------------------

    @property
    def T(self) -> int:
        """Tokens ingested so far."""
        return self.tree.num_tokens

    def lod_counts(self) -> list[int]:
        return torch.bincount(self.wc.lods, minlength=self.cfg.max_lod + 1).tolist()

    # --- ingest -----------------------------------------------------------------------------

    @torch.no_grad()
    def ingest(self, ids: torch.Tensor, future: torch.Tensor | None = None) -> list[RefocusRecord]:
        """Append tokens `ids[n]` (int64); refocus at every completed K-block. Returns the
        records made. `future` (oracle only): tokens known to follow `ids`, the lookahead."""
        ids = check_ids("ids", ids, self.vocab_size)
        if future is not None:
            future = check_ids("future", future, self.vocab_size)
        K = self.cfg.block_size
        made = []
        pos = 0
        emb = embed_ids(self.base, ids).to(self.dtype)
        while pos < ids.shape[0]:
            m = min(ids.shape[0] - pos, K - self.T % K)
            T0 = self.T
            self.tree.append(emb[pos: pos + m])
            self.wc = append_tokens(self.wc, T0, m, self.cfg)
            pos += m
            if self.T % K == 0:
                rest = ids[pos:] if future is None else torch.cat([ids[pos:], future])
                self._pending = rest[: self.horizon]
                made.append(self._refocus("refocus"))
        if len(self.wc) > self.cfg.budget:
            made.append(self._refocus("overflow"))
        return made

    def _refocus(self, kind: str) -> RefocusRecord:
        cfg, T, before = self.cfg, self.T, self.wc
        gather_ms = lens_ms = 0.0
        scores = None
        t0 = time.perf_counter()
        if self.policy == "window" or self.policy == "recency":
            new = self._window(before) if self.policy == "window" else build_working_context(
                T, cfg)
            actions = diff_actions(before, new, cfg)
        else:
            if kind == "overflow":
                scores = torch.zeros(len(before), dtype=torch.float32, device=HOST)
            elif self.policy == "lens":
                with torch.no_grad():
                    t1 = time.perf_counter()
                    cached = self.cached_projections
                    x = (self.tree.gather(before, lensnet=self.lensnet) if cached
                         else self.tree.gather(before))
                    tail = lens_tail(self.lensnet, self.tree)
                    ldev = device_of(self.lensnet)
                    gather_ms = _ms(t1)
                    t1 = time.perf_counter()
                    scores = self.lensnet(x.to(ldev), lens_features(before, T, cfg).to(ldev),
                                          tail=None if tail is None else tail.to(ldev),
                                          projected=cached).float().to(HOST)
                    lens_ms = _ms(t1)
            elif self.policy == "random":
                scores = torch.rand(len(before), generator=self._rng, device=HOST) * 2 - 1
            else:  # oracle
                t1 = time.perf_counter()
                scores = self._oracle_scores(before)
                lens_ms = _ms(t1)
            t0 = time.perf_counter()
            new, actions = focus_step(before, scores, T, cfg)
        allocator_ms = _ms(t0)
        self.wc = new
        rec = RefocusRecord(
            step=len(self.records), kind=kind, T=T, N=len(new), n_before=len(before),
            actions=actions, action_ages=action_ages(before, actions, cfg),
            entries_per_lod=self.lod_counts(), **score_summary(scores),
            gather_ms=gather_ms, lens_ms=lens_ms, allocator_ms=allocator_ms,
            base_ms=self._base_ms, scores=scores, wc_before=before,
        )
        self._base_ms = 0.0
        self.records.append(rec)
        return rec

    def _window(self, wc: WorkingContext) -> WorkingContext:
        """The last min(T, W_max) tokens at LOD0; survivors age by one step."""
        T, W = self.T, self.cfg.budget
        s = max(T - W, 0)
        res = np.zeros(T - s, dtype=np.int64)
        old_starts, old_res = as_numpy(wc.starts), as_numpy(wc.residency)
        keep = old_starts >= s
        res[old_starts[keep] - s] = old_res[keep] + 1
        return WorkingContext.from_numpy(np.zeros(T - s), np.arange(s, T), res)

    def _oracle_scores(self, wc: WorkingContext) -> torch.Tensor:
        future = self._pending
        if future.shape[0] == 0:
            raise InputError("the oracle policy needs lookahead at every refocus: pass the "
                             "tokens that follow as ingest(ids, future=...)")
        t0 = time.perf_counter()
        labels = label_snapshot(self.base, self.tree, wc, self.T, future, self.cfg)
        self._base_ms += _ms(t0)
        targets, _ = lens_targets_from_utilities(wc, labels.expand_gain, labels.collapse_loss,
                                                 self.T, self.cfg, price=0.0)
        return targets.float()

    # --- loss@H and decoding ----------------------------------------------------------------

    @torch.no_grad()
    def nll(self, ids: torch.Tensor) -> float:
        """loss@H: mean NLL (nats/token) of `ids[H]`, the next H tokens, given the current WC
        (teacher forcing). Leaves the tree, the WC and the records untouched. Needs T >= 1."""
        ids = check_ids("ids", ids, self.vocab_size, min_length=1)
        if self.T < 1:
            raise InputError("nll needs at least one ingested token to predict from (T = 0)")
        t0 = time.perf_counter()
        out = loss_at_h_batch(self.base, [self.tree.gather(self.wc)],
                              [self.wc.positions(self.cfg)], self.T, ids)
        self._base_ms += _ms(t0)
        return float(out[0])

    @torch.no_grad()
    def next_logits(self) -> torch.Tensor:
        """[V] float32 logits for token T given the current WC."""
        if self.T < 1:
            raise InputError("next_logits needs at least one ingested token (T = 0)")
        t0 = time.perf_counter()
        x = self.tree.gather(self.wc)[None]
        pos = self.wc.positions(self.cfg).to(torch.float64)[None]
        dev = device_of(self.base)
        out = base_logits(self.base, x.to(dev), pos.to(dev))[0, -1].float().cpu()
        self._base_ms += _ms(t0)
        return out

    @torch.no_grad()
    def generate(self, n: int, temperature: float = 1.0, top_k: int | None = None,
                 seed: int = 0) -> torch.Tensor:
        """Sample `n` tokens [n] int64, ingesting each (refocus included) before the next.

        temperature > 0 samples from softmax(logits / temperature); 0 takes the argmax.
        top_k: keep only the k most likely tokens (None: all). Needs T >= 1.
        """
        n = check_int("n", n, minimum=0)
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not (
                temperature >= 0 and np.isfinite(temperature)):
            raise InputError(f"temperature must be a finite number >= 0, got {temperature!r}")
        if top_k is not None:
            top_k = check_int("top_k", top_k, minimum=1)
        g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
        out = torch.empty(n, dtype=torch.int64, device=HOST)
        for i in range(n):
            logits = self.next_logits()
            if top_k is not None and top_k < logits.shape[0]:
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if temperature == 0:
                tok = int(torch.argmax(logits))
            else:
                probs = torch.softmax(logits.double() / temperature, dim=0)
                tok = int(torch.multinomial(probs, 1, generator=g))
            out[i] = tok
            self.ingest(out[i: i + 1])
        return out


# --- record helpers -----------------------------------------------------------------------


def score_summary(scores: torch.Tensor | None) -> dict[str, float]:
    nan = float("nan")
    if scores is None or scores.numel() == 0:
        return dict(score_mean=nan, score_abs_mean=nan, score_std=nan, score_min=nan,
                    score_max=nan)
    s = scores.double()
    return dict(score_mean=float(s.mean()), score_abs_mean=float(s.abs().mean()),
                score_std=float(s.std(unbiased=False)), score_min=float(s.min()),
                score_max=float(s.max()))


def action_ages(wc: WorkingContext, actions: list[Action], cfg: MCConfig) -> list[int]:
    """Residency (age in focus steps) of every entry of `wc` an action changed: the gist for an
    expand, every member for a collapse, the entry for an evict. Entries created earlier in
    the same step (a cascaded collapse's parent) do not appear in `wc` and are skipped."""
    starts, lods, res = as_numpy(wc.starts), as_numpy(wc.lods), as_numpy(wc.residency)
    ages = []
    for a in actions:
        r = int(np.searchsorted(starts, a.start))
        if r >= len(starts) or starts[r] != a.start or lods[r] != a.lod:
            continue
        n = cfg.block_size if a.kind == "collapse" else 1
        ages.extend(int(x) for x in res[r: r + n])
    return ages


def diff_actions(old: WorkingContext, new: WorkingContext, cfg: MCConfig) -> list[Action]:
    """Actions that turn `old` into `new` for rebuilding policies (window, recency): old gists
    whose span `new` shows finer -> expand; new gists not in `old` -> collapse of their
    children's level; old entries whose span `new` does not reach -> evict."""
    o_l, o_s = as_numpy(old.lods), as_numpy(old.starts)
    n_l, n_s = as_numpy(new.lods), as_numpy(new.starts)
    old_set = set(zip(o_l.tolist(), o_s.tolist(), strict=True))
    new_set = set(zip(n_l.tolist(), n_s.tolist(), strict=True))
    s0 = int(n_s[0]) if len(n_s) else 1 << 62
    out = []
    for lod, start in zip(o_l.tolist(), o_s.tolist(), strict=True):
        if (lod, start) in new_set:
            continue
        if start + cfg.span(lod) <= s0:
            out.append(Action("evict", lod, start))
        elif lod > 0:
            j = int(np.searchsorted(n_s, start, side="right")) - 1
            if j >= 0 and n_l[j] < lod:
                out.append(Action("expand", lod, start))
    for lod, start in zip(n_l.tolist(), n_s.tolist(), strict=True):
        if lod > 0 and (lod, start) not in old_set:
            out.append(Action("collapse", lod - 1, start))
    return out


def with_budget(cfg: MCConfig, budget: int) -> MCConfig:
    """`cfg` with another budget (ConfigError naming it if below the protected tail)."""
    try:
        return dataclasses.replace(cfg, budget=budget)
    except ConfigError as e:
        raise ConfigError(f"budget={budget}: {e}") from None


# --- loss@H over a stream (evaluate, run) ---------------------------------------------------


def check_horizon(ids: torch.Tensor, T: int, H: int) -> tuple[int, int]:
    """T >= 1 history tokens and H >= 1 horizon tokens must both fit in `ids`."""
    T = check_int("T", T, minimum=1)
    H = check_int("H", H, minimum=1)
    if T + H > ids.shape[0]:
        raise InputError(f"horizon H={H} after T={T} tokens runs past the end of the "
                         f"{ids.shape[0]} tokens given (only {max(ids.shape[0] - T, 0)} remain)")
    return T, H


@torch.no_grad()
def full_context_nll(base, ids: torch.Tensor, T: int, H: int) -> float:
    """loss@H of `ids[T:T+H]` given the whole history `ids[:T]` at positions 0..T-1 (nats/token):
    the upper bound every policy is compared with. InputError if T + H > len(ids)."""
    ids = check_ids("ids", ids, getattr(getattr(base, "cfg", None), "vocab_size", None))
    T, H = check_horizon(ids, T, H)
    emb = embed_ids(base, ids[:T])
    return float(loss_at_h_batch(base, [emb], [torch.arange(T, device=HOST)], T, ids[T: T + H])[0])


@torch.no_grad()
def policy_nll(cfg: MCConfig, base, ids: torch.Tensor, T: int, H: int, policy: str,
               gistnet=None, lensnet=None, seed: int = 0, chunk: int | None = None) -> float:
    """loss@H of `ids[T:T+H]` after a fresh session with `policy` ingested `ids[:T]` (in chunks
    of `chunk` tokens, default K). The oracle sees `ids[T:T+H]` as lookahead.
    InputError if T + H > len(ids)."""
    ids = check_ids("ids", ids, getattr(getattr(base, "cfg", None), "vocab_size", None))
    T, H = check_horizon(ids, T, H)
    s = MegaContextSession(cfg, base, gistnet, lensnet, policy=policy, seed=seed, horizon=H)
    step = cfg.block_size if chunk is None else check_int("chunk", chunk, minimum=1)
    for i in range(0, T, step):
        j = min(i + step, T)
        s.ingest(ids[i:j], future=ids[j: T + H] if policy == "oracle" else None)
    return s.nll(ids[T: T + H])
