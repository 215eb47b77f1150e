"""Alternating training of GistNet, LensNet and LoRA (contract §13).

    result = train(cfg, run_dir)                   # warm start, then cfg.cycles x (B1, B2, B3)
    result = train(cfg, run_dir, resume=ckpt_dir)  # continue after any phase checkpoint

Phases, in order (a phase with `steps = 0` is skipped):

    warm_gist  GistNet  substitutability on spans the RECENCY WC holds as gists
    warm_lens  LensNet  lens_loss on labels made under the recency policy
    b1         GistNet  substitutability on spans the LENS policy's WC holds as gists
    b2         LensNet  lens_loss on labels regenerated on-policy after B1
    b3         LoRA     task NLL@H on the lens policy's WCs + keep_alive x substitutability

Frozen means frozen: in a phase only its module's parameters require gradients and only they
are in the optimizer; the base model's own weights never train. Substitutability of a gist
entry (lod l, start s) of a snapshot WC: the base reads the WC with the span's K**l raw token
embeddings in place of the entry (the reference, no gradient) and with the gist recomputed by
GistNet from those tokens (the student); `kl_per_position` over the H horizon positions in the
configured direction, reduced by `aggregate_kl(how)` [nats].

Gists are a function of GistNet's weights: every snapshot (tree) and every label pool records
the GistNet version (sha256 of its weights) that built it; using one after GistNet changed
raises `StaleGistError`. Snapshots are rebuilt from the text at every step, so after B1 every
tree in use is re-gisted by construction, and B2's labels are regenerated after B1.

Determinism: every phase draws from its own generator seeded by (seed, phase index), so a run
resumed from the checkpoint of phase i repeats phases i+1.. bit for bit (same thread count).

Under torchrun (contract §13.3): each phase's step loss is one `PhaseLoss` forward wrapped in
DistributedDataParallel (gloo); rank r takes the batch items and labels the label snapshots
whose index is ≡ r mod world, the label shards are gathered, and only rank 0 writes.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from ..controller.config import MCConfig
from ..controller.lod_map import render_lod_map
from ..device import HOST, resolve_device
from ..errors import ConfigError, InputError, InvariantError, MegaContextError
from ..models.causal_lensnet import CausalLensNet
from ..models.gistnet import GistNet, GistNetConfig
from ..models.lensnet import LensNet, LensNetConfig, lens_features, lens_tail
from ..models.tiny_gpt import LoRALinear, TinyGPT, TinyGPTConfig
from ..runtime.horizon import device_of
from ..runtime.labels import best_variant_labels, label_snapshot
from ..runtime.session import MegaContextSession, policy_nll
from ..supervision.kl import aggregate_kl, kl_per_position
from ..supervision.lens_loss import LensLossWeights, lens_loss
from ..supervision.lens_targets import lens_targets_from_utilities
from ..supervision.telemetry import spearman_corr
from .phase_store import (
    CheckpointError,
    load_phase_checkpoint,
    read_manifest,
    save_phase_checkpoint,
    state_sha256,
)
from .text import Windows, split_windows, training_windows
from .train_config import (
    PHASE_NAMES,
    TrainConfig,
    config_sha256,
    config_to_dict,
    save_train_config,
)

PHASE_MODULE = {"warm_gist": "gistnet", "warm_lens": "lensnet", "b1": "gistnet",
                "b2": "lensnet", "b3": "lora"}
MODULES = ("gistnet", "lensnet", "lora")


class StaleGistError(InputError):
    """A tree or label pool built by another GistNet version than the current one."""


class PolarityAlarm(MegaContextError):
    """The score/target Spearman correlation stayed negative over the alarm window (seed 000's
    flipped-polarity failure) and the config asked the run to stop."""


# --- models -------------------------------------------------------------------------------


@dataclass
class Models:
    base: TinyGPT  # frozen weights + LoRA adapters (up = 0 until B3 trains them)
    gistnet: GistNet
    lensnet: LensNet

    def params(self, which: str) -> list[nn.Parameter]:
        if which == "lora":
            return [p for _, p in lora_named(self.base)]
        return list(getattr(self, which).parameters())

    def state(self, which: str) -> dict[str, torch.Tensor]:
        if which == "lora":
            return {n: p.detach() for n, p in lora_named(self.base)}
        return getattr(self, which).state_dict()

    def load_state(self, which: str, sd: dict[str, torch.Tensor]) -> None:
        if which == "lora":
            named = dict(lora_named(self.base))
            if set(named) != set(sd):
                raise CheckpointError(f"LoRA tensors {sorted(sd)} do not match the model's "
                                      f"{sorted(named)}")
            with torch.no_grad():
                for n, p in named.items():
                    p.copy_(sd[n])
        else:
            getattr(self, which).load_state_dict(sd)


def lora_named(base: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in base.named_parameters() if n.endswith((".down", ".up"))]


def base_frozen_sha(base: nn.Module) -> str:
    """sha256 of the base's own (non-LoRA) weights: never changed by training."""
    return state_sha256({n: p for n, p in base.named_parameters()
                         if not n.endswith((".down", ".up"))})


def gist_version(gistnet: GistNet) -> str:
    """The GistNet version gists are stamped with: sha256 of its weights (16 hex digits)."""
    return state_sha256(gistnet.state_dict())[:16]


def load_base_checkpoint(path: str, device: torch.device = HOST) -> TinyGPT:
    """The pretrained base TinyGPT of a `megacontext pretrain` run or checkpoint directory
    (`training.pretrain.load_base`), on `device`."""
    from .pretrain import load_base
    return load_base(path, device)[0]


def add_lora(base: TinyGPT, cfg: TrainConfig) -> None:
    """LoRA on qkv and proj of the first or last `n_blocks` blocks; everything else frozen."""
    L = len(base.blocks)
    if cfg.lora.n_blocks > L:
        raise ConfigError(f"lora.n_blocks = {cfg.lora.n_blocks}: the base has only {L} blocks")
    idx = range(cfg.lora.n_blocks) if cfg.lora.blocks == "first" else range(
        L - cfg.lora.n_blocks, L)
    for p in base.parameters():
        p.requires_grad_(False)
    alpha = cfg.lora.alpha or None
    for i in idx:
        attn = base.blocks[i].attn
        for name in ("qkv", "proj"):
            setattr(attn, name, LoRALinear(getattr(attn, name), cfg.lora.rank, alpha))


def pretrain_base(base: TinyGPT, cfg: TrainConfig, windows: Windows) -> None:
    """A few full-context steps on the training text (tiny runs only; real runs load a base)."""
    b = cfg.base
    g = torch.Generator().manual_seed(cfg.seed * 7919 + 17)
    opt = torch.optim.AdamW(base.parameters(), lr=b.pretrain_lr, betas=(0.9, 0.95))
    for _ in range(b.pretrain_steps):
        batch = torch.stack([windows.sample(g)[: b.pretrain_context + 1]
                             for _ in range(b.pretrain_batch)]).to(device_of(base))
        out = base(batch[:, :-1], targets=batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        out.nll.mean().backward()
        torch.nn.utils.clip_grad_norm_(base.parameters(), 1.0)
        opt.step()


# Pretrained tiny bases, keyed by everything that determines them (a pure cache: the golden
# runs of contract §15 share one base instead of pretraining it once per feature).
_BASE_CACHE: dict[str, dict[str, torch.Tensor]] = {}


def build_models(cfg: TrainConfig, train_windows: Windows, device: torch.device = HOST
                 ) -> Models:
    """The base (loaded, or made and briefly pretrained) with LoRA, GistNet and LensNet, all
    made on `device` (contract §13.4), seeded by cfg.seed."""
    torch.manual_seed(cfg.seed)
    if cfg.base.checkpoint:
        base = load_base_checkpoint(cfg.base.checkpoint, device)
    else:
        with torch.device(device):
            base = TinyGPT(TinyGPTConfig(n_layer=cfg.base.n_layer, n_head=cfg.base.n_head,
                                         n_embd=cfg.base.n_embd))
        if cfg.base.pretrain_steps and cfg.base.pretrain_context + 1 > train_windows.length:
            raise ConfigError(f"base.pretrain_context = {cfg.base.pretrain_context} must be < "
                              f"history + horizon = {train_windows.length}")
        key = json.dumps([config_to_dict(cfg.base), config_to_dict(cfg.data), cfg.seed,
                          cfg.history + cfg.horizon, torch.get_num_threads(), str(device)])
        if key not in _BASE_CACHE:
            pretrain_base(base, cfg, train_windows)
            _BASE_CACHE[key] = {k: v.clone() for k, v in base.state_dict().items()}
        base.load_state_dict(_BASE_CACHE[key])
    torch.manual_seed(cfg.seed + 1)
    add_lora(base, cfg)
    E = base.cfg.n_embd
    gc, lc = cfg.gistnet, cfg.lensnet
    lens_cls = CausalLensNet if lc.causal else LensNet  # the causal ablation (contract §16.2)
    with torch.device(device):
        gistnet = GistNet(GistNetConfig(dim=E, block_size=cfg.mc.block_size,
                                        n_layers=gc.n_layers, n_heads=gc.n_heads,
                                        mlp_ratio=gc.mlp_ratio, levels=cfg.mc.max_lod,
                                        shared=gc.shared))
        lensnet = lens_cls(LensNetConfig(d_in=E, width=lc.width, n_heads=lc.n_heads,
                                         n_latents=lc.n_latents,
                                         slot_mlp_ratio=lc.slot_mlp_ratio))
    return Models(base.eval(), gistnet.eval(), lensnet.eval())


# --- snapshots ------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """A session's state after `T` tokens, the next H tokens, and the GistNet version of its
    tree's gists."""

    session: MegaContextSession
    future: torch.Tensor  # [H] int64
    gist_version: str

    @property
    def tree(self):
        return self.session.tree

    @property
    def wc(self):
        return self.session.wc

    @property
    def T(self) -> int:
        return self.session.T


def take_snapshot(cfg: TrainConfig, models: Models, ids: torch.Tensor, policy: str,
                  seed: int) -> Snapshot:
    """Stream `ids[:history]` through a fresh session (refocus per K-block), keep ids[history:]."""
    s = MegaContextSession(cfg.mc, models.base, models.gistnet, models.lensnet, policy=policy,
                           seed=seed, horizon=cfg.horizon)
    K = cfg.mc.block_size
    for i in range(0, cfg.history, K):
        s.ingest(ids[i: min(i + K, cfg.history)])
    return Snapshot(s, ids[cfg.history: cfg.history + cfg.horizon], gist_version(models.gistnet))


def check_version(what: str, version: str, models: Models) -> None:
    now = gist_version(models.gistnet)
    if version != now:
        raise StaleGistError(f"{what} was built by GistNet version {version}, but GistNet is now "
                             f"{now}: re-gist it (mixing gist versions is never silent)")


def horizon_logits(base: TinyGPT, seqs: list[tuple[torch.Tensor, torch.Tensor]], T: int,
                   future: torch.Tensor) -> torch.Tensor:
    """[B, H, V] float32 logits, on the base's device, predicting `future[H]` after each
    (vectors [N, E], positions [N]) context (differentiable; right padded, the causal mask
    keeps padding unread). Inputs may be on the host: they move to the base's device."""
    H, dev = future.shape[0], device_of(base)
    q = base.embed(future[: H - 1].to(dev))  # [H-1, E]
    qpos = torch.arange(T, T + H - 1, dtype=torch.float64, device=dev)
    xs = [torch.cat([v.to(dev), q]) for v, _ in seqs]
    ps = [torch.cat([p.to(dev, torch.float64), qpos]) for _, p in seqs]
    x, pos = pad_sequence(xs, batch_first=True), pad_sequence(ps, batch_first=True)
    logits = base(x, positions=pos).logits  # [B, L, V]
    rows = torch.stack([torch.arange(v.shape[0] - 1, v.shape[0] - 1 + H, device=dev)
                        for v, _ in seqs])
    return logits[torch.arange(len(seqs), device=dev)[:, None], rows].float()


def span_gist(gistnet: GistNet, tree, lod: int, start: int, cfg: MCConfig) -> torch.Tensor:
    """[E] the gist of [start, start + K**lod) recomputed from its raw tokens (differentiable)."""
    K = cfg.block_size
    x = tree.level(0)[start: start + cfg.span(lod)].to(device_of(gistnet))  # host -> GistNet's
    for level in range(1, lod + 1):
        x = gistnet(x.reshape(-1, K, x.shape[-1]), level)
    return x[0]


def substitutability(cfg: TrainConfig, models: Models, snap: Snapshot, g: torch.Generator,
                     prev: GistNet | None = None) -> tuple[torch.Tensor, dict] | None:
    """(loss, metrics) over up to `spans_per_snapshot` gist entries of the snapshot's WC, or
    None when the WC holds no gist."""
    check_version("the snapshot's tree", snap.gist_version, models)
    mc, lc = cfg.mc, cfg.loss
    lods = snap.wc.lods
    rows = torch.nonzero(lods >= 1).flatten()
    if rows.numel() == 0:
        return None
    draw = torch.randperm(rows.numel(), generator=g, device=HOST)
    pick = rows[draw[: lc.spans_per_snapshot]].sort().values
    dev = device_of(models.base)  # the tree is host data; the contexts are built on the device
    vec = snap.tree.gather(snap.wc).to(dev)
    pos = snap.wc.positions(mc).to(torch.float64)
    students, refs, gists, prev_gists = [], [], [], []
    for r in pick.tolist():
        lod, start = int(lods[r]), int(snap.wc.starts[r])
        gist = span_gist(models.gistnet, snap.tree, lod, start, mc)
        gists.append(gist)
        if prev is not None:
            with torch.no_grad():
                prev_gists.append(span_gist(prev, snap.tree, lod, start, mc))
        raw = snap.tree.level(0)[start: start + mc.span(lod)].to(dev)
        raw_pos = torch.arange(start, start + mc.span(lod), dtype=torch.float64, device=HOST)
        students.append((torch.cat([vec[:r], gist[None].to(dev), vec[r + 1:]]), pos))
        refs.append((torch.cat([vec[:r], raw, vec[r + 1:]]),
                     torch.cat([pos[:r], raw_pos, pos[r + 1:]])))
    with torch.no_grad():
        logp_raw = F.log_softmax(horizon_logits(models.base, refs, snap.T, snap.future), -1)
    logp_gist = F.log_softmax(horizon_logits(models.base, students, snap.T, snap.future), -1)
    if lc.kl_direction == "fwd":
        kl = kl_per_position(logp_raw, logp_gist)  # [S, H] KL(raw || gist)
    else:
        kl = kl_per_position(logp_gist, logp_raw)
    loss = aggregate_kl(kl, lc.kl_how)
    m = {"kl": float(loss.detach())}
    if lc.boundary > 0:
        edge = aggregate_kl(kl[:, : mc.block_size], lc.kl_how)
        loss = loss + lc.boundary * edge
        m["kl_edge"] = float(edge.detach())
    if prev is not None and lc.stability > 0:
        stab = (torch.stack(gists) - torch.stack(prev_gists)).pow(2).mean()
        loss = loss + lc.stability * stab
        m["stability"] = float(stab.detach())
    return loss, m


# --- lens labels ----------------------------------------------------------------------------


@dataclass
class LensItem:
    wc: object
    T: int
    x: torch.Tensor  # [N, E] gathered vectors
    feats: torch.Tensor  # [N, 3]
    tail: torch.Tensor | None  # [G, E]
    targets: torch.Tensor  # [N] float32
    mask: torch.Tensor  # [N] bool
    weight: float


@dataclass
class LabelPool:
    items: list[LensItem]
    gist_version: str
    stamp: dict  # the checkpoints (sha256) and policy that made the labels


def lens_item(snap_tree, wc, T, mc, targets, mask, weight, legality_mask: bool,
              lensnet: LensNet) -> LensItem:
    targets = targets.to(torch.float32)
    if not legality_mask:  # the ablation: every entry supervised, 0 where nothing was measured
        targets = torch.where(mask, targets, torch.zeros_like(targets))
        mask = torch.ones_like(mask)
    dev = device_of(lensnet)  # an item lives where LensNet trains on it
    tail = lens_tail(lensnet, snap_tree)
    return LensItem(wc, T, snap_tree.gather(wc).to(dev), lens_features(wc, T, mc).to(dev),
                    None if tail is None else tail.to(dev), targets.to(dev), mask.to(dev),
                    float(weight))


def make_labels(cfg: TrainConfig, models: Models, windows: Windows, policy: str, n: int,
                g: torch.Generator, phase: str) -> LabelPool:
    """Label `n` fresh snapshots under `policy` with the current models (contract §12).

    Under torchrun every rank draws the same n (seed, window) pairs, labels only the snapshots
    whose index is ≡ rank mod world, and the shards are gathered (in index order) so every rank
    holds the same pool as a single process; the stamp then records `labelled_by_rank` (the
    snapshot indices each rank reported labelling) (contract §13.3).
    """
    rank, world = dist_info()
    per_snap: list[list[LensItem] | None] = []
    for i in range(n):
        seed = int(torch.randint(2**31, (1,), generator=g, device=HOST))
        ids = windows.sample(g)
        if i % world != rank:  # another rank's share (the draws above keep every rank in step)
            per_snap.append(None)
            continue
        snap = take_snapshot(cfg, models, ids, policy, seed)
        per_snap.append(label_items(cfg, models, snap, seed))
    stamp = {"phase": phase, "policy": policy, "base_sha256": base_frozen_sha(models.base),
             "lora_sha256": state_sha256(models.state("lora")),
             "gistnet_sha256": state_sha256(models.state("gistnet")),
             "lensnet_sha256": state_sha256(models.state("lensnet")),
             "target_mode": cfg.loss.target_mode, "snapshots": n}
    if world > 1:
        shards = all_gather_object([(i, its) for i, its in enumerate(per_snap) if its is not None])
        per_snap = [None] * n
        for shard in shards:
            for i, its in shard:
                per_snap[i] = its
        stamp["labelled_by_rank"] = [[i for i, _ in shard] for shard in shards]
        missing = [i for i, its in enumerate(per_snap) if its is None]
        if missing:
            raise InvariantError(f"label snapshots {missing} were labelled by no rank")
    items = [it for its in per_snap for it in its]
    return LabelPool(items, gist_version(models.gistnet), stamp)


def label_items(cfg: TrainConfig, models: Models, snap: Snapshot, seed: int) -> list[LensItem]:
    """The lens items of one snapshot: one (utilities) or one per variant (best_variants)."""
    mc, lc = cfg.mc, cfg.loss
    if lc.target_mode == "utilities":
        lab = label_snapshot(models.base, snap.tree, snap.wc, snap.T, snap.future, mc,
                             max_candidates=lc.max_candidates, seed=seed)
        t, m = lens_targets_from_utilities(snap.wc, lab.expand_gain, lab.collapse_loss,
                                           snap.T, mc, lc.price)
        return [lens_item(snap.tree, snap.wc, snap.T, mc, t, m, 1.0, lc.legality_mask,
                          models.lensnet)]
    b = best_variant_labels(models.base, snap.tree, snap.wc, snap.T, snap.future, mc,
                            n_variants=lc.n_variants, seed=seed)
    w = b.weights.tolist() if lc.variant_weights else [1.0] * len(b.variants)
    return [lens_item(snap.tree, v, snap.T, mc, t, m, wt, lc.legality_mask, models.lensnet)
            for v, t, m, wt in zip(b.variants, b.targets, b.masks, w, strict=True)]


def lens_weights(cfg: TrainConfig) -> LensLossWeights:
    return LensLossWeights(**dataclasses.asdict(cfg.loss.lens))


def lens_batch_loss(cfg: TrainConfig, models: Models, pool: LabelPool, g: torch.Generator,
                    batch: int) -> tuple[torch.Tensor, dict]:
    check_version("the label pool", pool.gist_version, models)
    w = lens_weights(cfg)
    pick = torch.randint(len(pool.items), (batch,), generator=g, device=HOST).tolist()
    rank, world = dist_info()
    if world > 1:  # this rank's share (items ≡ rank mod world) of the global weighted mean,
        # x world because DDP averages the ranks' gradients (contract §13.3)
        wall = sum(pool.items[i].weight for i in pick)
        mine = pick[rank::world]
        total = sum(pool.items[i].weight * lens_loss(
            models.lensnet(pool.items[i].x, pool.items[i].feats, tail=pool.items[i].tail),
            pool.items[i].targets, pool.items[i].mask, pool.items[i].wc, cfg.mc, w).total
            for i in mine)
        return total * (world / wall), {}
    total, wsum = 0.0, 0.0
    terms = {"reg": 0.0, "pref": 0.0, "rank": 0.0, "budget": 0.0}
    ss, ts = [], []
    for i in pick:
        it = pool.items[i]
        s = models.lensnet(it.x, it.feats, tail=it.tail)
        out = lens_loss(s, it.targets, it.mask, it.wc, cfg.mc, w)
        total = total + it.weight * out.total
        wsum += it.weight
        for k in terms:
            terms[k] += it.weight * float(getattr(out, k).detach())
        ss.append(s.detach()[it.mask])
        ts.append(it.targets[it.mask])
    m = {f"lens_{k}": v / wsum for k, v in terms.items()}
    s_all, t_all = torch.cat(ss).to(HOST), torch.cat(ts).to(HOST)  # telemetry is host work
    m["spearman"] = float(spearman_corr(s_all, t_all)) if s_all.numel() > 1 else math.nan
    m["score_abs_mean"] = float(s_all.abs().mean()) if s_all.numel() else math.nan
    m["score_std"] = float(s_all.std(unbiased=False)) if s_all.numel() else math.nan
    return total / wsum, m


# --- distributed (torchrun; gloo on CPU) ------------------------------------------------------


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def maybe_init_distributed() -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1). The reference trainer keeps
    every tensor on the CPU, so the backend is gloo."""
    import torch.distributed as dist
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and \
            not dist.is_initialized():
        dist.init_process_group("gloo")


def all_gather_object(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] (every rank gets the list); [obj] outside torchrun."""
    import torch.distributed as dist
    _, world = dist_info()
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def all_reduce_int(n: int) -> int:
    """The sum of `n` over the ranks (n itself outside torchrun)."""
    import torch.distributed as dist
    if dist_info()[1] == 1:
        return n
    t = torch.tensor([n], dtype=torch.int64, device=HOST)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item())


# --- the phases -----------------------------------------------------------------------------


def lr_at(step: int, steps: int, lr: float, min_lr: float, warmup: int) -> float:
    """Linear warmup over `warmup` steps, then cosine from lr to min_lr at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    rest = max(steps - warmup - 1, 1)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(step - warmup, rest) / rest))


@dataclass(frozen=True)
class Phase:
    index: int  # position in the run's phase list
    key: str  # warm_gist | warm_lens | b1 | b2 | b3
    cycle: int  # 0 for the warm start

    @property
    def label(self) -> str:
        return f"{self.index:02d}-{self.key}" + (f"-c{self.cycle}" if self.cycle else "")

    @property
    def module(self) -> str:
        return PHASE_MODULE[self.key]


def phase_plan(cfg: TrainConfig) -> list[Phase]:
    """The run's phases (those with steps > 0). ConfigError when nothing would train."""
    keys = [("warm_gist", 0), ("warm_lens", 0)]
    keys += [(k, c) for c in range(1, cfg.cycles + 1) for k in ("b1", "b2", "b3")]
    plan = [(k, c) for k, c in keys if getattr(cfg.phases, k).steps > 0]
    if not plan:
        zero = [f"phases.{k}.steps" for k in PHASE_NAMES]
        raise ConfigError(f"nothing to train: {', '.join(zero)} are all 0 (or cycles = 0 and "
                          f"the warm start is off)")
    return [Phase(i, k, c) for i, (k, c) in enumerate(plan)]


def phase_seed(seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{index}".encode()).digest()[:7], "big")


def set_trainable(models: Models, module: str) -> list[nn.Parameter]:
    for m in (models.gistnet, models.lensnet, models.base):
        for p in m.parameters():
            p.requires_grad_(False)
    params = models.params(module)
    if not params:
        raise ConfigError(f"phase trains {module!r}, which has no parameters")
    for p in params:
        p.requires_grad_(True)
    return params


@dataclass
class StepInputs:
    """What one optimizer step of a phase reads: this rank's snapshots (with their own
    generators) or, in a lens phase, the label pool and the phase generator the batch is
    drawn from. `count` is the number of batch items with a loss over ALL ranks."""

    snaps: list[tuple[Snapshot, torch.Generator]]
    tokens: int
    count: int
    batch: int
    g: torch.Generator | None = None
    pool: LabelPool | None = None
    prev: GistNet | None = None


def phase_inputs(cfg: TrainConfig, models: Models, phase: Phase, windows: Windows,
                 g: torch.Generator, batch: int, pool: LabelPool | None,
                 prev: GistNet | None) -> StepInputs:
    """Draw one step's batch. Every rank draws the same seeds and windows; rank r builds only
    the snapshots whose batch index is ≡ r mod world (contract §13.3)."""
    if phase.module == "lensnet":
        return StepInputs([], 0, batch, batch, g=g, pool=pool)
    policy = "recency" if phase.key == "warm_gist" else "lens"
    rank, world = dist_info()
    snaps, tokens = [], 0
    for b in range(batch):
        seed = int(torch.randint(2**31, (1,), generator=g, device=HOST))
        ids = windows.sample(g)
        if b % world != rank:
            continue
        gb = torch.Generator().manual_seed(seed)  # the snapshot's own draws (span picks)
        snaps.append((take_snapshot(cfg, models, ids, policy, seed), gb))
        tokens += cfg.history + cfg.horizon
    # a GistNet phase has a loss only on snapshots whose WC holds a gist
    mine = len(snaps) if phase.module == "lora" else sum(
        1 for s, _ in snaps if bool((s.wc.lods >= 1).any()))
    return StepInputs(snaps, tokens, all_reduce_int(mine), batch, prev=prev)


class PhaseLoss(nn.Module):
    """One phase's whole step loss as ONE forward (every GistNet / LensNet / base call of the
    step inside it), so DistributedDataParallel sees one forward per backward.

    `trained` (the registered submodule) is the phase's module: GistNet, LensNet, or the base
    with its LoRA adapters (the only base parameters that require gradients; DDP ignores the
    frozen ones). forward(StepInputs) -> (loss: scalar float32 tensor or None, metrics).

    Single process: the mean over the batch items that have a loss (bit-identical to the
    pre-DDP trainer). World w > 1: this rank's sum x w / (items with a loss on all ranks), so
    DDP's gradient average over ranks is the full-batch mean's gradient (contract §13.3).
    """

    def __init__(self, cfg: TrainConfig, models: Models, phase: Phase):
        super().__init__()
        self.cfg, self.models, self.phase = cfg, models, phase
        self.trained = models.base if phase.module == "lora" else getattr(models, phase.module)

    def forward(self, inp: StepInputs) -> tuple[torch.Tensor | None, dict]:
        cfg, models = self.cfg, self.models
        if self.phase.module == "lensnet":
            return lens_batch_loss(cfg, models, inp.pool, inp.g, inp.batch)
        _, world = dist_info()
        losses, metrics = [], {}
        for snap, gb in inp.snaps:
            if self.phase.module == "gistnet":
                out = substitutability(cfg, models, snap, gb, inp.prev)
                if out is None:
                    continue
                loss, m = out
            else:  # lora: task NLL@H on the policy's WC + a weak keep-alive
                check_version("the snapshot's tree", snap.gist_version, models)
                vec = snap.tree.gather(snap.wc)
                logits = horizon_logits(models.base, [(vec, snap.wc.positions(cfg.mc))],
                                        snap.T, snap.future)
                task = F.cross_entropy(logits[0], snap.future.to(logits.device))
                loss, m = task, {"task_nll": float(task.detach())}
                if cfg.loss.keep_alive > 0:
                    keep = substitutability(cfg, models, snap, gb)
                    if keep is not None:
                        loss = loss + cfg.loss.keep_alive * keep[0]
                        m["keep_alive_kl"] = keep[1]["kl"]
            losses.append(loss)
            for k, v in m.items():
                metrics[k] = metrics.get(k, 0.0) + v / inp.batch
        if world == 1:
            return (torch.stack(losses).mean() if losses else None), metrics
        if not losses:  # other ranks have items: join the backward with a zero that reads the
            # level-1 GistNet every gist uses (DDP then sums this rank's exact zeros)
            snap = inp.snaps[0][0]
            x = snap.tree.level(0)[: cfg.mc.block_size].to(device_of(models.gistnet))
            return models.gistnet(x[None], 1).sum() * 0.0, metrics
        return torch.stack(losses).sum() * (world / inp.count), metrics


def wrap_distributed(module: PhaseLoss) -> nn.Module:
    """`module` itself in a single process; under torchrun a DistributedDataParallel around it
    (gloo). find_unused_parameters for GistNet (a step may only use some levels' weights) and
    LensNet (its tail weights go unused when a WC has no tail gists); not for LoRA."""
    if dist_info()[1] == 1:
        return module
    return nn.parallel.DistributedDataParallel(
        module, broadcast_buffers=False,
        find_unused_parameters=module.phase.module != "lora")


@dataclass
class PhaseResult:
    phase: Phase
    steps: int
    metrics: dict
    checkpoint: Path | None
    label_stamp: dict | None = None


def run_phase(cfg: TrainConfig, models: Models, phase: Phase, windows: Windows,
              log, progress: bool) -> PhaseResult:
    pc = getattr(cfg.phases, phase.key)
    g = torch.Generator().manual_seed(phase_seed(cfg.seed, phase.index))
    pool = prev = None
    if phase.module == "lensnet":
        policy = "recency" if phase.key == "warm_lens" else "lens"
        pool = make_labels(cfg, models, windows, policy, pc.snapshots, g, phase.label)
    if phase.module == "gistnet" and cfg.loss.stability > 0:
        prev = copy.deepcopy(models.gistnet).requires_grad_(False)
    params = set_trainable(models, phase.module)
    _, world = dist_info()
    step_loss = wrap_distributed(PhaseLoss(cfg, models, phase))
    opt = torch.optim.AdamW(params, lr=pc.lr, betas=(0.9, 0.95), weight_decay=pc.weight_decay)
    bar = _bar(pc.steps, phase.label, progress)
    t0, tokens, last = time.perf_counter(), 0, {}
    recent: list[float] = []  # Spearman of the last polarity_window lens steps
    for step in range(pc.steps):
        lr = lr_at(step, pc.steps, pc.lr, pc.min_lr, pc.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        inp = phase_inputs(cfg, models, phase, windows, g, pc.batch, pool, prev)
        tokens += inp.tokens
        # no item with a loss on any rank: no forward, no step (on every rank alike)
        loss, m = step_loss(inp) if inp.count else (None, {})
        if loss is not None:
            loss.backward()  # under DDP the gradients are averaged over the ranks here
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, pc.grad_clip))
            opt.step()
            if world > 1:  # rank 0 logs the global batch's metrics, as one process would
                merged: dict = {}
                for d in all_gather_object({"loss": float(loss.detach()) / world, **m}):
                    for k, v in d.items():
                        merged[k] = merged.get(k, 0.0) + v
                m = {"loss": merged.pop("loss"), "grad_norm": gnorm, **merged}
            else:
                m = {"loss": float(loss.detach()), "grad_norm": gnorm, **m}
        elapsed = time.perf_counter() - t0
        row = {"phase": phase.label, "module": phase.module, "step": step, "lr": lr,
               "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0, **m}
        if "spearman" in m and math.isfinite(m["spearman"]):
            recent = (recent + [m["spearman"]])[-cfg.polarity_window:]
            if len(recent) == cfg.polarity_window and sum(recent) / len(recent) < 0:
                msg = (f"POLARITY ALARM in {phase.label} step {step}: mean score/target "
                       f"Spearman over the last {len(recent)} steps is "
                       f"{sum(recent) / len(recent):+.3f} < 0 (LensNet scores anti-correlate "
                       f"with their targets: flipped utility polarity?)")
                row["alarm"] = "polarity"
                log(row)
                warnings.warn(msg, stacklevel=2)
                if cfg.stop_on_polarity:
                    bar.close()
                    raise PolarityAlarm(msg + "; stop_on_polarity = true stopped the run")
                recent = []
        if "alarm" not in row:
            log(row)
        last = m
        bar.set_postfix({k: f"{v:.4g}" for k, v in m.items() if k in (
            "loss", "kl", "task_nll", "spearman")} | {"tok/s": f"{row['tokens_per_s']:.0f}"})
        bar.update(1)
    bar.close()
    del step_loss  # a DDP wrapper's reducer hooks must not outlive its phase
    for p in params:
        p.requires_grad_(False)
    return PhaseResult(phase, pc.steps, last, None, pool.stamp if pool else None)


class _NoBar:
    def set_postfix(self, *a, **k):
        pass

    def update(self, n=1):
        pass

    def close(self):
        pass


def _bar(total: int, desc: str, progress: bool):
    if not progress:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="step", leave=True)


# --- probes (golden maps, reports) -----------------------------------------------------------


@torch.no_grad()
def probe_maps(cfg: TrainConfig, models: Models, n: int = 2, seed: int = 1234,
               windows: Windows | None = None) -> list[tuple[str, float]]:
    """(LOD map (contract §9), loss@H in nats/token) the lens policy ends with on `n` fixed
    validation windows (drawn with `seed`; default: cfg's validation text). The golden
    gating snapshots of contract §15 are these."""
    if windows is None:
        _, windows = split_windows(cfg.data.source, cfg.seed, cfg.data.synthetic_bytes,
                                   cfg.data.val_fraction, cfg.history + cfg.horizon)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        snap = take_snapshot(cfg, models, windows.sample(g), "lens", 0)
        out.append((render_lod_map(snap.wc, snap.T, cfg.mc), snap.session.nll(snap.future)))
    return out


@torch.no_grad()
def evaluate(cfg: TrainConfig, models: Models, windows: Windows, n: int, budget: int | None = None,
             seed: int = 4321, policies=("lens", "recency", "random")) -> dict:
    """Mean loss@H per policy (nats/token) on `n` fixed validation windows, with the lens
    policy's swap rate (actions per refocus) and mean residency of changed entries."""
    mc = cfg.mc if budget is None else dataclasses.replace(cfg.mc, budget=budget)
    g = torch.Generator().manual_seed(seed)
    wins = [windows.sample(g) for _ in range(n)]
    out = {}
    for pol in policies:
        vals = [policy_nll(mc, models.base, w, cfg.history, cfg.horizon, pol,
                           models.gistnet, models.lensnet, seed=i) for i, w in enumerate(wins)]
        out[f"loss_at_h/{pol}"] = sum(vals) / len(vals)
    acts, ages, refocus = 0, [], 0
    for w in wins:
        s = MegaContextSession(mc, models.base, models.gistnet, models.lensnet, "lens")
        for i in range(0, cfg.history, cfg.mc.block_size):
            s.ingest(w[i: i + cfg.mc.block_size])
        for r in s.records:
            if r.kind == "refocus":
                refocus += 1
                acts += len(r.actions)
                ages += r.action_ages
    out["swap_rate"] = acts / max(refocus, 1)
    out["mean_residency"] = sum(ages) / len(ages) if ages else math.nan
    return out


# --- the run --------------------------------------------------------------------------------


@dataclass
class TrainResult:
    cfg: TrainConfig
    models: Models
    phases: list[PhaseResult] = field(default_factory=list)
    run_dir: Path | None = None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        out.update(_flat(v, key) if isinstance(v, dict) else {key: v})
    return out


def _checkpoint_manifest(cfg: TrainConfig, models: Models, res: PhaseResult, base_sha: str):
    return {"kind": "megacontext-train-phase", "config": config_to_dict(cfg),
            "config_sha256": config_sha256(cfg), "phase": res.phase.key,
            "phase_index": res.phase.index, "phase_label": res.phase.label,
            "cycle": res.phase.cycle, "step": res.steps, "metrics": res.metrics,
            "gist_version": gist_version(models.gistnet), "base_sha256": base_sha,
            "labels": res.label_stamp}


def check_resume(cfg: TrainConfig, directory: str | os.PathLike) -> dict:
    """The manifest of a phase checkpoint made with this exact config (CheckpointError naming
    the manifest file and the differing keys otherwise)."""
    manifest = read_manifest(directory)
    path = Path(directory) / "manifest.json"
    if manifest.get("kind") != "megacontext-train-phase":
        raise CheckpointError(f"{path}: not a training phase checkpoint "
                              f"(kind {manifest.get('kind')!r})")
    if manifest.get("config_sha256") != config_sha256(cfg):
        a, b = _flat(config_to_dict(cfg)), _flat(manifest.get("config", {}))
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise CheckpointError(f"{path}: checkpoint of another config; differing keys: "
                              f"{', '.join(diff) or '(none listed)'}")
    return manifest


def train(cfg: TrainConfig, run_dir: str | os.PathLike | None = None,
          resume: str | os.PathLike | None = None, progress: bool = False,
          stop_after: int | None = None, device: str | torch.device = "cpu") -> TrainResult:
    """Run the warm start and `cfg.cycles` cycles (contract §13); see the module docstring.

    run_dir: where config.toml, metrics.jsonl and checkpoints/<NN-phase>/ go (None: nowhere,
    no checkpoints). resume: a phase checkpoint directory of a run with the same config; the
    run continues with the next phase. stop_after: stop after that many phases (counting from
    the first; tests use it to simulate an interruption). device (`resolve_device`): where the
    models train (contract §13.4; the trees and the controller stay on the host); under
    torchrun only the CPU ("auto" is the CPU there). Raises ConfigError / CheckpointError /
    StaleGistError naming the key or file, InputError naming a device this machine lacks.
    """
    if not isinstance(cfg, TrainConfig):
        raise InputError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    plan = phase_plan(cfg)
    torch.set_num_threads(cfg.threads)
    maybe_init_distributed()
    rank, world = dist_info()
    # "auto" under torchrun is the CPU: the ranks share gloo, not one GPU
    device = HOST if world > 1 and device in ("auto", None) else resolve_device(device)
    if world > 1 and device.type != "cpu":
        raise InputError(f"device {str(device)!r}: under torchrun the trainer runs on the CPU "
                         f"(gloo; contract §13.3)")
    for phase in plan:  # every rank needs an item of every step's batch (contract §13.3)
        batch = getattr(cfg.phases, phase.key).batch
        if batch < world:
            raise ConfigError(f"phases.{phase.key}.batch = {batch} < world size {world}: under "
                              f"torchrun every rank takes at least one item of each batch")
    run_dir = Path(run_dir) if run_dir is not None else None
    done = run_dir is not None and any((run_dir / "checkpoints").glob("*/manifest.json"))
    if resume is None and done:
        raise InputError(f"run directory {str(run_dir)!r} already holds phase checkpoints; "
                         f"resume from one (--resume DIR) or choose another directory")
    start = 0
    manifest = None
    if resume is not None:
        manifest = check_resume(cfg, resume)
        start = int(manifest["phase_index"]) + 1
    train_w, val_w = training_windows(cfg)
    models = build_models(cfg, train_w, device)
    base_sha = base_frozen_sha(models.base)
    if manifest is not None:
        if manifest.get("base_sha256") != base_sha:
            raise CheckpointError(f"{Path(resume) / 'manifest.json'}: made with another base "
                                  f"model (sha256 {manifest.get('base_sha256')}, now {base_sha})")
        tensors, _ = load_phase_checkpoint(resume)
        for name in MODULES:
            models.load_state(name, tensors[name])
    result = TrainResult(cfg, models, [], run_dir)
    writer_dir = run_dir if rank == 0 else None  # only rank 0 writes anything
    log = _logger(writer_dir, cfg.wandb and rank == 0, cfg)
    if writer_dir is not None:
        save_train_config(cfg, writer_dir / "config.toml")
    for phase in plan[start:]:
        if stop_after is not None and phase.index >= stop_after:
            break
        res = run_phase(cfg, models, phase, train_w, log, progress)
        if cfg.eval_windows:
            ev = evaluate(cfg, models, val_w, cfg.eval_windows)
            res.metrics.update({f"eval/{k}": v for k, v in ev.items()})
            log({"phase": phase.label, "module": phase.module, "step": res.steps,
                 **{f"eval/{k}": v for k, v in ev.items()}})
        if writer_dir is not None:
            manifest_extra = {"written_by_rank": rank, "world_size": dist_info()[1]}
            res.checkpoint = save_phase_checkpoint(
                writer_dir / "checkpoints" / phase.label,
                {name: models.state(name) for name in MODULES},
                _checkpoint_manifest(cfg, models, res, base_sha) | manifest_extra)
        result.phases.append(res)
    return result


def _logger(run_dir: Path | None, use_wandb: bool = False, cfg: TrainConfig | None = None):
    """JSONL rows to <run_dir>/metrics.jsonl (contract §14), and to W&B (offline unless
    WANDB_MODE says otherwise) when `use_wandb` and the package is installed."""
    wb = None
    if use_wandb:
        try:
            import wandb
        except ImportError:
            warnings.warn("wandb = true but wandb is not installed (pip install "
                          "'megacontext[wandb]'): logging to JSONL only", stacklevel=2)
        else:
            os.environ.setdefault("WANDB_MODE", "offline")
            wb = wandb.init(project="megacontext", dir=str(run_dir) if run_dir else None,
                            config=config_to_dict(cfg) if cfg else None)
    if run_dir is None and wb is None:
        return lambda row: None
    path = None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "metrics.jsonl"

    def log(row: dict) -> None:
        if path is not None:
            with open(path, "a") as f:
                f.write(json.dumps(row, allow_nan=True) + "\n")
        if wb is not None:
            wb.log({k: v for k, v in row.items() if isinstance(v, int | float)})
    return log
