"""Model vectors (contract §8): lensnet.json, gistnet.json, tiny_gpt.json, lens_gated.json.

Each file holds small configs, seeded float32-exact weights by name (torch state_dict keys),
inputs and expected outputs. LensNet's scores come from an independent float64 numpy
formulation (written the plain way from the definitions); the other models' outputs from the
reference run in float64 on the same float32-exact weights and inputs. A float32 port meets
the stated tolerance.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..controller.config import MCConfig
from ..controller.working_context import build_working_context
from ..errors import MegaContextError
from ..models.gistnet import GistNet, GistNetConfig
from ..models.lens_gated import LensGatedAttention, LensGatedBlock, LensGatedConfig
from ..models.lensnet import LensNet, LensNetConfig, lens_features
from ..models.tiny_gpt import TinyGPT, TinyGPTConfig, rope_tables
from .encoding import ERROR_KINDS, error_json, header, tensor

LINEAR = ("Linear layers: <name>.weight [out, in] and <name>.bias [out] (when present); "
          "y = x @ weight^T + bias")
LAYER_NORM = ("LayerNorm <name>.weight, <name>.bias [d]: (x - mean) / sqrt(var + 1e-5) * weight "
              "+ bias over the last axis, var biased (divide by d)")
GELU = "gelu(x) = 0.5 * x * (1 + erf(x / sqrt(2))) (exact, not the tanh approximation)"
MODEL_TOL = {"outputs": {"rtol": 1e-4, "atol": 1e-4,
                         "meaning": "|got - expected| <= atol + rtol*|expected|, got from a "
                                    "float32 model on the file's weights"}}


def f32_exact(rng: np.random.Generator, shape, scale: float, offset: float = 0.0) -> np.ndarray:
    return (offset + scale * rng.standard_normal(shape)).astype(np.float32).astype(np.float64)


def weights_for(module: torch.nn.Module, rng: np.random.Generator, scale: float = 0.3,
                skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Seeded float32-exact values for every state_dict entry (LayerNorm gains around 1)."""
    out = {}
    for name, t in sorted(module.state_dict().items()):
        if name in skip or not t.is_floating_point():
            continue
        is_gain = name.endswith(".weight") and ("ln" in name.split(".")[-2]
                                                or "norm" in name.split(".")[-2])
        out[name] = f32_exact(rng, tuple(t.shape), 0.2 if is_gain else scale,
                              1.0 if is_gain else 0.0)
    return out


def load(module: torch.nn.Module, weights: dict[str, np.ndarray], dtype=torch.float64):
    module.to(dtype)
    state = module.state_dict()
    for name, value in weights.items():
        state[name] = torch.from_numpy(value).to(dtype)
    module.load_state_dict(state)
    return module


def weights_json(weights: dict[str, np.ndarray]) -> dict:
    return {name: tensor(v, "float32") for name, v in weights.items()}


def error_case(name: str, description: str, function: str, inputs: dict, call,
               argument: str) -> dict:
    """A case whose call must fail: the reference's error kind, and the argument at fault."""
    try:
        call()
    except MegaContextError as err:
        return {"name": name, "description": description, "function": function,
                "tolerance": "outputs", "inputs": inputs, "error": error_json(err, argument)}
    raise AssertionError(f"{name}: the reference raised nothing")


# --- LensNet ---------------------------------------------------------------------------------

INSIDE_ONE = 1.0 - 2.0**-24


def layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def linear(P, name, x):
    y = x @ P[f"{name}.weight"].T
    return y + P[f"{name}.bias"] if f"{name}.bias" in P else y


def softmax(logits, ok):
    logits = np.where(ok, logits, -np.inf)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def attention(P, name, q_in, kv_in, key_ok, H):
    """Multi-head cross-attention: q_in [Q, d] attends over kv_in [M, d] where key_ok [M]."""
    d = q_in.shape[-1]
    dh = d // H
    q = linear(P, f"{name}.q", q_in).reshape(-1, H, dh).transpose(1, 0, 2)  # [H, Q, dh]
    k = linear(P, f"{name}.k", kv_in).reshape(-1, H, dh).transpose(1, 0, 2)
    v = linear(P, f"{name}.v", kv_in).reshape(-1, H, dh).transpose(1, 0, 2)
    a = softmax(q @ k.transpose(0, 2, 1) / np.sqrt(dh), key_ok[None, None, :])  # [H, Q, M]
    return linear(P, f"{name}.o", (a @ v).transpose(1, 0, 2).reshape(-1, d))


def lensnet64(P, x, features, mask, tail, tail_mask, n_heads):
    """Scores [N] of one sample, float64, as the definitions describe LensNet."""
    ln = lambda name, t: layer_norm(t, P[f"{name}.weight"], P[f"{name}.bias"])
    h = linear(P, "in_proj", x) + features @ P["feat_proj.weight"].T
    hn = np.where(mask[:, None], ln("norm_entries", h), 0.0)
    slots = np.concatenate([P["latents"], linear(P, "in_proj", tail) + P["tail_embed"]])
    slots = slots + attention(P, "read", ln("norm_read", slots), hn, mask, n_heads)
    hidden = linear(P, "slot_mlp.0", ln("norm_slot_mlp", slots))
    gelu = 0.5 * hidden * (1 + np.vectorize(math.erf)(hidden / np.sqrt(2)))
    slots = slots + linear(P, "slot_mlp.2", gelu)
    slot_ok = np.concatenate([np.ones(len(P["latents"]), dtype=bool), tail_mask])
    z = h + attention(P, "write", hn, ln("norm_write", slots), slot_ok, n_heads)
    u = linear(P, "head", ln("norm_out", z))[:, 0]
    return np.where(mask, np.tanh(u) * INSIDE_ONE, 0.0)


def features64(lods, starts, T, K):
    span = float(K) ** lods
    return np.stack([lods, np.log(span), np.log1p(T - (starts + span))], axis=1)


LENSNET_DEFINITIONS = {
    "lens_features": "per entry [lod, ln(K**lod), ln(1 + T - end)], end = start + K**lod; "
                     "float32 [N, 3]; the WC is validated (budget not enforced)",
    "weights": "by name (torch state_dict keys); " + LINEAR + "; " + LAYER_NORM,
    "attention": "multi-head cross-attention <name> with Linear layers <name>.q, <name>.k, "
                 "<name>.v, <name>.o (width -> width); heads split the projected width into "
                 "n_heads contiguous blocks of width/n_heads (head h = columns h*dh .. "
                 "(h+1)*dh - 1); logits q.k / sqrt(dh); masked keys are excluded from the "
                 "softmax; the heads' outputs are concatenated in head order before <name>.o",
    "entries": "h = in_proj(x) + features @ feat_proj.weight^T (no bias); hn = "
               "norm_entries(h), zero where mask is false",
    "slots": "rows in order: latents [n_latents, width], then in_proj(tail) + tail_embed "
             "(one slot per tail gist, in tail order)",
    "read": "slots += read(q = norm_read(slots), kv = hn, keys = the real entries)",
    "slot_mlp": "slots += slot_mlp.2(gelu(slot_mlp.0(norm_slot_mlp(slots)))); " + GELU,
    "write": "z = h + write(q = hn, kv = norm_write(slots), keys = latents and the tail gists "
             "where tail_mask)",
    "score": "tanh(head(norm_out(z))[0]) * (1 - 2**-24), float32; 0 where mask is false",
    "inputs": "x [B, N, d_in], features [B, N, 3] (lens_features of each sample's WC, padded "
              "with zeros), mask [B, N], tail [B, G, d_in], tail_mask [B, G]; padded entries "
              "hold zeros",
}


def lensnet_document() -> dict:
    config = dict(d_in=8, width=8, n_heads=2, n_latents=2, slot_mlp_ratio=2)
    wc_config = dict(block_size=4, max_lod=2, budget=24, recent_tokens=5)
    histories, n_tail = (90, 37), 3
    rng = np.random.default_rng(20261121)
    shapes = {k: tuple(v.shape) for k, v in LensNet(LensNetConfig(**config)).state_dict().items()}
    P = {}
    for name, shape in sorted(shapes.items()):
        if name.startswith("norm") and name.endswith(".weight"):
            P[name] = f32_exact(rng, shape, 0.2, 1.0)
        else:
            P[name] = f32_exact(rng, shape, 0.5)
    cfg = MCConfig(**wc_config)
    wcs = [build_working_context(T, cfg) for T in histories]
    N, B, d_in = max(len(wc) for wc in wcs), len(wcs), config["d_in"]
    x = f32_exact(rng, (B, N, d_in), 1.0)
    features = np.zeros((B, N, 3))
    mask = np.zeros((B, N), dtype=bool)
    cases = []
    for b, (wc, T) in enumerate(zip(wcs, histories, strict=True)):
        lods, starts = wc.lods.numpy(), wc.starts.numpy()
        f64 = features64(lods, starts, T, cfg.block_size)
        features[b, : len(wc)] = f64.astype(np.float32)
        mask[b, : len(wc)] = True
        cases.append({"name": f"lens_features_T{T}", "description": "the features of the "
                      f"baseline WC of T={T}", "function": "lens_features",
                      "tolerance": "features",
                      "inputs": {"wc": {"lods": tensor(wc.lods), "starts": tensor(wc.starts),
                                        "residency": tensor(wc.residency)},
                                 "T": T, "cfg": dataclasses.asdict(cfg)},
                      "expected": {"features": tensor(f64, expected=True)}})
    x[~mask] = 0.0
    tail = f32_exact(rng, (B, n_tail, d_in), 1.0)
    tail_mask = np.array([[True, True, True], [True, False, True]])
    scores = np.stack([lensnet64(P, x[b], features[b], mask[b], tail[b], tail_mask[b],
                                 config["n_heads"]) for b in range(B)])
    cases.append({
        "name": "padded_batch_with_tail", "description": "a batch of two WCs (T=90 and a "
        "shorter, padded T=37) with three tail gists, one masked in the second sample",
        "function": "LensNet", "tolerance": "scores",
        "inputs": {"config": config, "weights": weights_json(P),
                   "x": tensor(x, "float32"), "features": tensor(features, "float32"),
                   "mask": tensor(mask), "tail": tensor(tail, "float32"),
                   "tail_mask": tensor(tail_mask)},
        "expected": {"scores": tensor(scores, expected=True)}})
    wc = wcs[1]
    try:
        lens_features(wc, 36, cfg)
    except MegaContextError as err:
        cases.append({"name": "lens_features_error_wrong_T", "description": "the WC ends at "
                      "37 but T = 36", "function": "lens_features", "tolerance": "features",
                      "inputs": {"wc": {"lods": tensor(wc.lods), "starts": tensor(wc.starts),
                                        "residency": tensor(wc.residency)},
                                 "T": 36, "cfg": dataclasses.asdict(cfg)},
                      "error": error_json(err, "wc")})
    doc = header("LensNet: features and scores", "contract §8", LENSNET_DEFINITIONS,
                 {"scores": {"rtol": 0.0, "atol": 1e-4, "meaning": "|got - expected| <= atol, "
                             "scores from a float32 model"},
                  "features": {"rtol": 0.0, "atol": 1e-6, "meaning": "float32 features"}},
                 ERROR_KINDS)
    doc["cases"] = cases
    return doc


# --- GistNet ---------------------------------------------------------------------------------

GISTNET_DEFINITIONS = {
    "config": "GistNetConfig fields: dim D, block_size K, n_layers, n_heads H, mlp_ratio, "
              "levels, shared",
    "weights": "by name (torch state_dict keys); " + LINEAR + "; " + LAYER_NORM + "; shared: "
               "one encoder encoders.0 and level_embed [levels, D]; not shared: encoders.<l-1> "
               "for level l and no level_embed",
    "forward": "children [B, K, D], lod in 1..levels -> gists [B, D]: x = children (+ "
               "level_embed[lod-1] when shared); encoder = encoders.0 if shared else "
               "encoders.<lod-1>; h = x + encoder.pos; each block; pooled",
    "block": "blocks.<i>: x = x + proj(attn(ln_1(x))); x = x + fc_out(gelu(fc_in(ln_2(x)))); "
             + GELU,
    "self_attention": "qkv(x) [B, K, 3D] is split on its last axis into q, k, v (in that "
                      "order, D each), each then into H contiguous heads of D/H; non-causal "
                      "softmax(q.k / sqrt(D/H)) v per head; heads concatenated in order",
    "expected": "lod<l>: forward(children, l), gists [B, D]",
    "errors": "error cases give the config, children and a lod and no weights (the error does "
              "not depend on them): a lod outside 1..levels -> InputError (lod); children not "
              "[B, block_size, dim] -> InputError (children)",
    "pooling": "k, v = kv(ln_pool(h)) split into k (first D) and v (next D), each into H heads; "
               "head j's query is query[j] [D/H]; pooled_j = softmax_k(query[j].k_jk / "
               "sqrt(D/H)) v_jk; gist = out(concat_j pooled_j)",
}


def gistnet_document() -> dict:
    cases = []
    for seed, shared in ((1, True), (2, False)):
        cfg = GistNetConfig(dim=8, block_size=4, n_layers=2, n_heads=2, mlp_ratio=2, levels=2,
                            shared=shared)
        rng = np.random.default_rng(300 + seed)
        net = GistNet(cfg)
        W = weights_for(net, rng, 0.4)
        load(net, W)
        children = f32_exact(rng, (3, 4, 8), 1.0)
        expected = {}
        for lod in (1, 2):
            with torch.no_grad():
                expected[f"lod{lod}"] = tensor(net(torch.from_numpy(children), lod),
                                               expected=True)
        cases.append({
            "name": "shared" if shared else "per_level",
            "description": f"shared={shared}: three blocks of K=4 children to LOD1 and to LOD2 "
                           "gists", "function": "GistNet", "tolerance": "outputs",
            "inputs": {"config": dataclasses.asdict(cfg), "weights": weights_json(W),
                       "children": tensor(children, "float32")},
            "expected": expected})
    cfg = GistNetConfig(dim=8, block_size=4, n_layers=1, n_heads=2, levels=2)
    kids = np.zeros((1, 4, 8))
    cases.append(error_case("error_lod_above_levels", "lod 3 with levels = 2", "GistNet",
                            {"config": dataclasses.asdict(cfg),
                             "children": tensor(kids, "float32"), "lod": 3},
                            lambda: GistNet(cfg)(torch.zeros(1, 4, 8), 3), "lod"))
    cases.append(error_case("error_children_shape", "children [1, 3, 8] for block_size 4",
                            "GistNet", {"config": dataclasses.asdict(cfg),
                                        "children": tensor(np.zeros((1, 3, 8)), "float32"),
                                        "lod": 1},
                            lambda: GistNet(cfg)(torch.zeros(1, 3, 8), 1), "children"))
    doc = header("GistNet: K vectors -> 1 gist", "contract §8", GISTNET_DEFINITIONS, MODEL_TOL,
                 ERROR_KINDS)
    doc["cases"] = cases
    return doc


# --- TinyGPT ---------------------------------------------------------------------------------

TINY_GPT_DEFINITIONS = {
    "config": "TinyGPTConfig fields (block_factory null: the standard block); LoRA as "
              "add_lora(rank, targets, alpha) wraps the Linear layers of those attribute names",
    "weights": "by name (torch state_dict keys); " + LINEAR + " (TinyGPT's Linear layers have "
               "no bias); " + LAYER_NORM + "; lm_head.weight is wte.weight (tied; only "
               "wte.weight is stored); a LoRA-wrapped layer <name> stores <name>.base.weight, "
               "<name>.down [r, in], <name>.up [out, r]: y = x @ base^T + (alpha / r) * "
               "(x @ down^T) @ up^T",
    "forward": "inputs: token ids [B, T] (x = wte.weight[ids]) or embeddings [B, T, E]; "
               "positions [T] or [B, T] (default 0..T-1), any real values; for each block "
               "x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)); logits = ln_f(x) @ wte.weight^T",
    "rope": "head width hd = E / n_head; inv_freq[i] = rope_base ** (-2i / hd), i = 0..hd/2-1; "
            "angle = position * inv_freq computed in float64, then cos and sin cast to the "
            "model dtype; a query/key head vector x = [x1, x2] (halves of hd/2) becomes "
            "[x1*cos - x2*sin, x1*sin + x2*cos]",
    "attention": "qkv(x) [B, T, 3E] split into q, k, v (E each) and each into n_head "
                 "contiguous heads of hd; rope on q and k; causal softmax(q.k / sqrt(hd)) v "
                 "over entries j <= i (entry order, not position order); heads concatenated "
                 "in order, then proj",
    "mlp": "fc_out(gelu(fc_in(x))), " + GELU,
    "errors": "error cases give the config and the offending inputs, no weights: a token id "
              "outside [0, vocab_size) -> InputError (tokens); a target outside [0, V) and not "
              "-1 -> InputError (targets); a non-finite position -> InputError (positions)",
    "nll": "targets [B, T] int64, -1 = none: nll = -log_softmax(logits)[target] in float32, 0 "
           "where target = -1",
}


def tiny_gpt_document() -> dict:
    cases = []
    for seed, lora in ((1, None), (2, (2, 4.0)), (3, (1, None))):
        cfg = TinyGPTConfig(vocab_size=11, n_layer=2, n_head=2, n_embd=8, mlp_ratio=2)
        rng = np.random.default_rng(500 + seed)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = TinyGPT(cfg)
            lora_spec = None
            if lora is not None:
                rank, alpha = lora
                targets = ("qkv", "proj") if seed == 2 else ("fc_in",)
                model.add_lora(rank, targets=targets, alpha=alpha)
                lora_spec = {"rank": rank, "targets": list(targets), "alpha": alpha}
        W = weights_for(model, rng, 0.4, skip=("lm_head.weight",))
        W["lm_head.weight"] = W["wte.weight"]
        load(model, W)
        del W["lm_head.weight"]
        ids = rng.integers(0, 11, (2, 6))
        targets = rng.integers(0, 11, (2, 6))
        targets[0, 2] = -1
        if seed == 1:
            positions = np.array([0.0, 1.0, 2.5, 4.0, 35.5, 36.0])
            pos_note = "non-integer positions (gist centres)"
        elif seed == 2:
            positions = np.array([[0, 1, 2, 3, 4, 5], [2.0**31 - 3, 2.0**31 - 1.5, 2.0**31,
                                                       2.0**31 + 0.5, 2.0**31 + 2, 2.0**31 + 7]])
            pos_note = "per-sample positions, the second around 2**31 (float64 angles)"
        else:
            positions = None
            pos_note = "default positions 0..T-1"
        with torch.no_grad():
            out = model(torch.from_numpy(ids),
                        None if positions is None else torch.from_numpy(positions),
                        torch.from_numpy(targets))
        inputs = {"config": {k: v for k, v in dataclasses.asdict(cfg).items()
                             if k != "block_factory"},
                  "lora": lora_spec, "weights": weights_json(W), "tokens": tensor(ids)}
        if positions is not None:
            inputs["positions"] = tensor(positions, "float64")
        inputs["targets"] = tensor(targets)
        cases.append({"name": f"tiny_gpt_{'lora_' if lora else ''}{seed}",
                      "description": f"two sequences of 6 tokens; {pos_note}; LoRA "
                                     f"{lora_spec}", "function": "TinyGPT",
                      "tolerance": "outputs", "inputs": inputs,
                      "expected": {"logits": tensor(out.logits, expected=True),
                                   "nll": tensor(out.nll, expected=True)}})
    # embeddings instead of ids, over the first model's weights
    first = cases[0]["inputs"]
    cfg = TinyGPTConfig(vocab_size=11, n_layer=2, n_head=2, n_embd=8, mlp_ratio=2)
    model = TinyGPT(cfg)
    W = {k: np.asarray(v["data"], dtype=np.float64).reshape(v["shape"])
         for k, v in first["weights"].items()}
    load(model, {**W, "lm_head.weight": W["wte.weight"]})
    rng = np.random.default_rng(599)
    emb = f32_exact(rng, (1, 5, 8), 1.0)
    pos = np.array([[16.0, 48.0, 64.5, 65.0, 66.0]])
    with torch.no_grad():
        out = model(torch.from_numpy(emb), torch.from_numpy(pos))
    cases.append({"name": "tiny_gpt_embeddings", "description": "input embeddings [1, 5, 8] "
                  "(a WC's gathered vectors) at gist-centre positions; no targets",
                  "function": "TinyGPT", "tolerance": "outputs",
                  "inputs": {"config": first["config"], "lora": None,
                             "weights": first["weights"], "embeddings": tensor(emb, "float32"),
                             "positions": tensor(pos, "float64")},
                  "expected": {"logits": tensor(out.logits, expected=True)}})
    small = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "block_factory"}
    bad_ids = np.array([[1, 11, 2]])
    cases.append(error_case("error_token_outside_vocab", "token id 11 with vocab_size 11",
                            "TinyGPT", {"config": small, "lora": None,
                                        "tokens": tensor(bad_ids)},
                            lambda: TinyGPT(cfg)(torch.from_numpy(bad_ids)), "tokens"))
    ok_ids = np.array([[1, 2, 3]])
    bad_t = np.array([[1, -2, 3]])
    cases.append(error_case("error_target_below_minus_one", "target -2 (-1 is 'none')",
                            "TinyGPT", {"config": small, "lora": None,
                                        "tokens": tensor(ok_ids), "targets": tensor(bad_t)},
                            lambda: TinyGPT(cfg)(torch.from_numpy(ok_ids), None,
                                                 torch.from_numpy(bad_t)), "targets"))
    bad_pos = np.array([0.0, np.nan, 2.0])
    cases.append(error_case("error_nan_position", "a NaN position", "TinyGPT",
                            {"config": small, "lora": None, "tokens": tensor(ok_ids),
                             "positions": tensor(bad_pos, "float64")},
                            lambda: TinyGPT(cfg)(torch.from_numpy(ok_ids),
                                                 torch.from_numpy(bad_pos)), "positions"))
    doc = header("TinyGPT (with LoRA)", "contract §8", TINY_GPT_DEFINITIONS, MODEL_TOL,
                 ERROR_KINDS)
    doc["cases"] = cases
    return doc


# --- lens-gated attention and block ----------------------------------------------------------

LENS_GATED_DEFINITIONS = {
    "config": "LensGatedConfig fields: n_embd E, n_head H (head width D = E/H), mlp_ratio "
              "(hidden M = mlp_ratio*E), bias, reciprocity, discoverability, route_gate, "
              "route_bias_init, context ('off' | 'low_rank' | 'full_rank'), context_rank R, "
              "context_alpha",
    "weights": "by name (torch state_dict keys, including the buffer route_bias); " + LINEAR
               + "; " + LAYER_NORM,
    "attention": [
        "q, k, v = qkv(x) split on the last axis into three blocks of E (in that order), each "
        "into H contiguous heads of D; with rope (block cases) q and k are rotated as in "
        "tiny_gpt.json's 'rope' definition, from the case's positions",
        "S[i, j] = q_i . k_j / sqrt(D) per head",
        "w[h] = softmax over the enabled mechanisms (std always; rec if reciprocity; disc if "
        "discoverability) of gates[h] = [g_std, g_rec, g_disc]; a disabled mechanism's weight "
        "is exactly 0; without either mechanism there are no gates and w = [1, 0, 0]",
        "logits[i, j] = w_std*S[i, j] + w_rec*S[j, i] + w_disc*(k_j . u[h]) (terms of disabled "
        "mechanisms absent), then the causal mask (j > i excluded) AFTER mixing; softmax over "
        "j; y = att @ v; heads concatenated in order; out = proj(y)",
    ],
    "mlp": "h = fc_in(x); with context on: h = (1 - alpha)*h + alpha*c, c = ctx_up(ctx_down(a)) "
           "(low_rank) or ctx_proj(a) (full_rank), a = the attention output; mlp = "
           "fc_out(gelu(h)), " + GELU,
    "errors": "LensGatedConfig cases construct the config alone: a hidden size mlp_ratio*E "
              "that is not a whole number is rejected (ConfigError, mlp_ratio), never "
              "truncated; E not divisible by H -> ConfigError (n_head)",
    "block": "a = attn(ln_1(x)); h_attn = x + a; m = mlp(ln_2(h_attn), ctx = a); without the "
             "route gate out = h_attn + m; with it g = sigmoid(route_raw + route_bias) and "
             "out = x + g*a + (1 - g)*m",
}


def lens_gated_document() -> dict:
    variants = [
        ("attention_full", "attention", dict()),
        ("attention_reciprocity_only", "attention", dict(discoverability=False)),
        ("attention_baseline", "attention", dict(reciprocity=False, discoverability=False)),
        ("block_full_low_rank_context", "block", dict(context="low_rank", context_rank=2,
                                                      context_alpha=0.25)),
        ("block_full_rank_context_no_bias", "block", dict(context="full_rank", bias=False,
                                                          context_alpha=0.5)),
        ("block_no_route_gate", "block", dict(route_gate=False, mlp_ratio=1.5)),
    ]
    cases = []
    for seed, (name, kind, over) in enumerate(variants):
        cfg = LensGatedConfig(**{**dict(n_embd=8, n_head=2, mlp_ratio=2.0), **over})
        rng = np.random.default_rng(700 + seed)
        module = LensGatedAttention(cfg) if kind == "attention" else LensGatedBlock(cfg)
        W = weights_for(module, rng, 0.4)
        if "route_bias" in W:
            W["route_bias"] = np.array([0.75], dtype=np.float64)  # float32-exact
        load(module, W)
        x = f32_exact(rng, (2, 5, 8), 1.0)
        inputs = {"config": dataclasses.asdict(cfg), "weights": weights_json(W),
                  "x": tensor(x, "float32")}
        with torch.no_grad():
            if kind == "attention":
                y = module(torch.from_numpy(x))
            else:
                positions = np.array([0.0, 1.0, 2.0, 3.5, 8.0])
                cos, sin = rope_tables(torch.from_numpy(positions).expand(2, 5), cfg.head_dim,
                                       10_000.0, torch.float64)
                y = module(torch.from_numpy(x), cos, sin)
                inputs["positions"] = tensor(positions, "float64")
                inputs["rope_base"] = 10_000.0
        what = "LensGatedAttention" if kind == "attention" else "LensGatedBlock"
        rope = "no rope" if kind == "attention" else "rope at the positions"
        cases.append({"name": name, "description": f"{what} {over or 'defaults'}; {rope}",
                      "function": "LensGatedAttention" if kind == "attention"
                      else "LensGatedBlock", "tolerance": "outputs", "inputs": inputs,
                      "expected": {"y": tensor(y, expected=True)}})
    bad = dict(n_embd=8, n_head=2, mlp_ratio=2.3)
    cases.append(error_case("error_mlp_hidden_not_whole", "mlp_ratio 2.3 at n_embd 8: a "
                            "hidden size of 18.4 is rejected, not truncated",
                            "LensGatedConfig", {"config": bad},
                            lambda: LensGatedConfig(**bad), "mlp_ratio"))
    bad2 = dict(n_embd=8, n_head=3)
    cases.append(error_case("error_heads_do_not_divide", "n_embd 8 over 3 heads",
                            "LensGatedConfig", {"config": bad2},
                            lambda: LensGatedConfig(**bad2), "n_head"))
    doc = header("lens-gated attention and block (seed 004)", "contract §8",
                 LENS_GATED_DEFINITIONS, MODEL_TOL, ERROR_KINDS)
    doc["cases"] = cases
    return doc

