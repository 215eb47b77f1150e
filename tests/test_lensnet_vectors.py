"""The generator of golden/vectors/lensnet.json, and a check that the committed file is what it
makes.

Expected scores come from a float64 numpy LensNet written the plain way (explicit per-entry
query/key/value projections, no absorption, no in-place tricks), independent of megacontext
except for the parameter names and shapes; spec/test_lensnet.py checks the implementation
against the file. Regenerate on purpose only, and review the diff:

    MEGACONTEXT_WRITE_VECTORS=1 .venv/bin/pytest -q tests/test_lensnet_vectors.py
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

import megacontext
from spec.golden import render_json

PATH = Path(__file__).resolve().parents[1] / "golden" / "vectors" / "lensnet.json"
CONFIG = dict(d_in=8, width=8, n_heads=2, n_latents=2, slot_mlp_ratio=2)
WC_CONFIG = dict(block_size=4, max_lod=2, budget=24, recent_tokens=5)
HISTORIES = (90, 37)  # T of each sample; the second WC is shorter and padded
N_TAIL = 3
INSIDE_ONE = 1.0 - 2.0**-24


# --- float64 reference -------------------------------------------------------------------------


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
    """Scores [N] of one sample, float64, as contract §8 describes LensNet."""
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


# --- the vectors ---------------------------------------------------------------------------------


def features64(lods, starts, T, K):
    span = float(K) ** lods
    return np.stack([lods, np.log(span), np.log1p(T - (starts + span))], axis=1)


def f32(a):
    """Round to float32 so the file's inputs are exactly what a float32 implementation reads."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def build_vectors() -> dict:
    rng = np.random.default_rng(20261121)
    shapes = {k: tuple(v.shape) for k, v in megacontext.LensNet(
        megacontext.LensNetConfig(**CONFIG)).state_dict().items()}
    P = {}
    for name, shape in sorted(shapes.items()):
        if name.startswith("norm") and name.endswith(".weight"):
            P[name] = f32(1.0 + 0.2 * rng.standard_normal(shape))
        else:
            P[name] = f32(0.5 * rng.standard_normal(shape))
    cfg = megacontext.MCConfig(**WC_CONFIG)
    wcs = [megacontext.build_working_context(T, cfg) for T in HISTORIES]
    N, B, d_in = max(len(wc) for wc in wcs), len(wcs), CONFIG["d_in"]
    x = f32(rng.standard_normal((B, N, d_in)))
    features = np.zeros((B, N, 3))
    mask = np.zeros((B, N), dtype=bool)
    samples = []
    for b, (wc, T) in enumerate(zip(wcs, HISTORIES, strict=True)):
        lods, starts = wc.lods.numpy(), wc.starts.numpy()
        features[b, : len(wc)] = f32(features64(lods, starts, T, cfg.block_size))
        mask[b, : len(wc)] = True
        samples.append({"T": T, "lods": lods.tolist(), "starts": starts.tolist()})
    x[~mask] = 0.0
    tail = f32(rng.standard_normal((B, N_TAIL, d_in)))
    tail_mask = np.array([[True, True, True], [True, False, True]])
    scores = np.stack([lensnet64(P, x[b], features[b], mask[b], tail[b], tail_mask[b],
                                 CONFIG["n_heads"]) for b in range(B)])
    return {
        "topic": "LensNet scores (megacontext contract §8)",
        "generated_by": "tests/test_lensnet_vectors.py (float64 numpy, plain formulation)",
        "encoding": "tensors are nested lists in row-major order; weights are float32-exact; "
                    "load them by name (torch state_dict keys; Linear weights are [out, in])",
        "definitions": {
            "features": "per entry [lod, ln(K**lod), ln(1 + T - end)], end = start + K**lod",
            "entries": "h = in_proj(x) + feat_proj(features); hn = norm_entries(h), zero where "
                       "mask is false",
            "slots": "[latents; in_proj(tail) + tail_embed]",
            "attention": "multi-head cross-attention (q, k, v, o Linear layers, head width "
                         "width/n_heads, logits scaled by 1/sqrt(head width), masked keys "
                         "excluded from the softmax)",
            "read": "slots += read(q=norm_read(slots), kv=hn, keys = real entries)",
            "slot_mlp": "slots += slot_mlp.2(gelu(slot_mlp.0(norm_slot_mlp(slots)))), exact "
                        "erf GELU",
            "write": "z = h + write(q=hn, kv=norm_write(slots), keys = latents and the tail "
                     "gists where tail_mask)",
            "score": "tanh(head(norm_out(z))) * (1 - 2**-24), float32; 0 where mask is false",
            "layer_norm": "eps 1e-5, biased variance",
        },
        "tolerance": {"rtol": 0.0, "atol": 1e-4},
        "config": CONFIG,
        "wc_config": WC_CONFIG,
        "samples": samples,
        "weights": {k: {"shape": list(shapes[k]), "values": P[k].reshape(-1).tolist()}
                    for k in sorted(P)},
        "inputs": {"x": x.tolist(), "features": features.tolist(), "mask": mask.tolist(),
                   "tail": tail.tolist(), "tail_mask": tail_mask.tolist()},
        "expected_scores": scores.tolist(),
    }




def test_golden_lensnet_vectors_match_the_float64_generator():
    """golden/vectors/lensnet.json holds exactly what the independent float64 generator
    produces (set MEGACONTEXT_WRITE_VECTORS=1 to rewrite it, then review the diff)."""
    text = render_json(build_vectors())
    if os.environ.get("MEGACONTEXT_WRITE_VECTORS") == "1":
        PATH.parent.mkdir(parents=True, exist_ok=True)
        PATH.write_text(text)
    assert PATH.exists(), f"{PATH} is missing; generate it with MEGACONTEXT_WRITE_VECTORS=1"
    committed, fresh = json.loads(PATH.read_text()), json.loads(text)
    for key in fresh:
        assert committed.get(key) == fresh[key], f"{PATH}: '{key}' differs from the generator"


def test_vectors_exercise_padding_tail_masking_and_a_spread_of_scores():
    """The canonical batch has a padded sample, a masked tail gist, and scores of both signs
    well away from 0 (so a polarity or scaling bug cannot hide in the tolerance)."""
    v = build_vectors()
    mask = np.array(v["inputs"]["mask"])
    scores = np.array(v["expected_scores"])[mask]
    assert not mask.all() and not np.array(v["inputs"]["tail_mask"]).all()
    assert scores.min() < -0.2 and scores.max() > 0.2, scores
