"""GistNet, TinyGPT (with LoRA) and the lens-gated attention and block in numpy float64,
written from the definitions in golden/vectors/{gistnet,tiny_gpt,lens_gated}.json alone (no
megacontext, no torch). W is the case's weights: name -> float64 array."""

from __future__ import annotations

import math

import numpy as np

from tests.numpy_port.controller import PortError

_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def linear(W, name, x):
    if f"{name}.base.weight" in W:  # a LoRA-wrapped layer
        return (x @ W[f"{name}.base.weight"].T
                + W[f"{name}.lora_scale"] * (x @ W[f"{name}.down"].T) @ W[f"{name}.up"].T)
    y = x @ W[f"{name}.weight"].T
    return y + W[f"{name}.bias"] if f"{name}.bias" in W else y


def layer_norm(W, name, x):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * W[f"{name}.weight"] + W[f"{name}.bias"]


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def heads(x, H):
    """[B, T, E] -> [B, H, T, E/H] (contiguous column blocks in head order)."""
    B, T, E = x.shape
    return x.reshape(B, T, H, E // H).transpose(0, 2, 1, 3)


def merge(y):
    B, H, T, D = y.shape
    return y.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def rope_tables(positions, hd, base):
    """cos, sin [B, 1, T, hd/2] for positions [B, T]."""
    inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = positions[:, None, :, None] * inv
    return np.cos(ang), np.sin(ang)


# --- GistNet ---------------------------------------------------------------------------------


def gistnet(cfg, W, children, lod):
    if not 1 <= lod <= cfg["levels"]:
        raise PortError("InputError", "lod")
    if children.ndim != 3 or children.shape[1:] != (cfg["block_size"], cfg["dim"]):
        raise PortError("InputError", "children")
    H, D = cfg["n_heads"], cfg["dim"]
    x = children + (W["level_embed"][lod - 1] if cfg["shared"] else 0.0)
    enc = "encoders.0" if cfg["shared"] else f"encoders.{lod - 1}"
    h = x + W[f"{enc}.pos"]
    for i in range(cfg["n_layers"]):
        b = f"{enc}.blocks.{i}"
        qkv = linear(W, f"{b}.qkv", layer_norm(W, f"{b}.ln_1", h))
        q, k, v = (heads(qkv[..., j * D:(j + 1) * D], H) for j in range(3))
        att = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(D // H))
        h = h + linear(W, f"{b}.proj", merge(att @ v))
        h = h + linear(W, f"{b}.fc_out", gelu(linear(W, f"{b}.fc_in",
                                                     layer_norm(W, f"{b}.ln_2", h))))
    kv = linear(W, f"{enc}.kv", layer_norm(W, f"{enc}.ln_pool", h))
    k, v = heads(kv[..., :D], H), heads(kv[..., D:], H)  # [B, H, K, D/H]
    q = W[f"{enc}.query"][None, :, None, :]  # [1, H, 1, D/H]
    pooled = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(D // H)) @ v  # [B, H, 1, D/H]
    return linear(W, f"{enc}.out", pooled.reshape(pooled.shape[0], D))


# --- TinyGPT ---------------------------------------------------------------------------------


def tiny_gpt(cfg, W, tokens=None, embeddings=None, positions=None, targets=None):
    V, E, H = cfg["vocab_size"], cfg["n_embd"], cfg["n_head"]
    if tokens is not None and tokens.size and (tokens.min() < 0 or tokens.max() >= V):
        raise PortError("InputError", "tokens")
    if positions is not None and not np.isfinite(positions).all():
        raise PortError("InputError", "positions")
    if targets is not None and ((targets < -1) | (targets >= V)).any():
        raise PortError("InputError", "targets")
    x = W["wte.weight"][tokens] if tokens is not None else embeddings
    B, T, _ = x.shape
    if positions is None:
        positions = np.arange(T, dtype=np.float64)
    positions = np.broadcast_to(positions, (B, T)).astype(np.float64)
    hd = E // H
    cos, sin = rope_tables(positions, hd, cfg["rope_base"])
    causal = np.tril(np.ones((T, T), dtype=bool))
    for i in range(cfg["n_layer"]):
        b = f"blocks.{i}"
        qkv = linear(W, f"{b}.attn.qkv", layer_norm(W, f"{b}.ln_1", x))
        q, k, v = (heads(qkv[..., j * E:(j + 1) * E], H) for j in range(3))
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        s = np.where(causal, q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd), -np.inf)
        x = x + linear(W, f"{b}.attn.proj", merge(softmax(s) @ v))
        x = x + linear(W, f"{b}.mlp.fc_out", gelu(linear(W, f"{b}.mlp.fc_in",
                                                         layer_norm(W, f"{b}.ln_2", x))))
    logits = layer_norm(W, "ln_f", x) @ W["wte.weight"].T
    out = {"logits": logits}
    if targets is not None:
        z = logits - logits.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        safe = np.where(targets < 0, 0, targets)
        nll = -np.take_along_axis(logp, safe[..., None], -1)[..., 0]
        out["nll"] = np.where(targets < 0, 0.0, nll)
    return out


def with_lora(W, lora):
    """Mark each LoRA-wrapped layer with its scale alpha / r (alpha null: r)."""
    if lora is None:
        return W
    W = dict(W)
    scale = (lora["alpha"] if lora["alpha"] is not None else lora["rank"]) / lora["rank"]
    for name in [n[: -len(".base.weight")] for n in W if n.endswith(".base.weight")]:
        W[f"{name}.lora_scale"] = scale
    return W


# --- lens-gated ------------------------------------------------------------------------------


def lens_gated_config(cfg):
    if cfg["n_embd"] % cfg["n_head"]:
        raise PortError("ConfigError", "n_head")
    hidden = cfg["mlp_ratio"] * cfg["n_embd"]
    if hidden <= 0 or hidden != int(hidden):
        raise PortError("ConfigError", "mlp_ratio")
    return cfg


def lens_gated_attention(cfg, W, x, prefix="", cos=None, sin=None):
    E, H = cfg["n_embd"], cfg["n_head"]
    D = E // H
    qkv = linear(W, f"{prefix}qkv", x)
    q, k, v = (heads(qkv[..., j * E:(j + 1) * E], H) for j in range(3))
    if cos is not None:
        q, k = rope(q, cos, sin), rope(k, cos, sin)
    S = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D)  # [B, H, T, T]
    enabled = np.array([True, cfg["reciprocity"], cfg["discoverability"]])
    if enabled[1:].any():
        g = np.where(enabled, W[f"{prefix}gates"], -np.inf)
        w = softmax(g)  # [H, 3]
    else:
        w = np.tile([1.0, 0.0, 0.0], (H, 1))
    logits = w[None, :, 0, None, None] * S
    if cfg["reciprocity"]:
        logits = logits + w[None, :, 1, None, None] * S.transpose(0, 1, 3, 2)
    if cfg["discoverability"]:
        d = np.einsum("bhtd,hd->bht", k, W[f"{prefix}u"])
        logits = logits + w[None, :, 2, None, None] * d[:, :, None, :]
    T = x.shape[1]
    logits = np.where(np.tril(np.ones((T, T), dtype=bool)), logits, -np.inf)
    return linear(W, f"{prefix}proj", merge(softmax(logits) @ v))


def lens_gated_block(cfg, W, x, cos, sin):
    a = lens_gated_attention(cfg, W, layer_norm(W, "ln_1", x), "attn.", cos, sin)
    h_attn = x + a
    h = linear(W, "mlp.fc_in", layer_norm(W, "ln_2", h_attn))
    if cfg["context"] != "off":
        c = (linear(W, "mlp.ctx_up", linear(W, "mlp.ctx_down", a))
             if cfg["context"] == "low_rank" else linear(W, "mlp.ctx_proj", a))
        h = (1 - cfg["context_alpha"]) * h + cfg["context_alpha"] * c
    m = linear(W, "mlp.fc_out", gelu(h))
    if not cfg["route_gate"]:
        return h_attn + m
    g = 1 / (1 + math.exp(-(float(W["route_raw"][0]) + float(W["route_bias"][0]))))
    return x + g * a + (1 - g) * m
