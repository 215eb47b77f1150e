"""Model conformance vectors (contract §8, §17): with the weights stored in golden/vectors/
(lensnet, gistnet, tiny_gpt, lens_gated).json, the implementation under test reproduces every
stored output — LensNet's features and scores, GistNet's gists at both levels (shared and
per-level weights), TinyGPT's logits and NLL (token ids or embeddings, non-integer positions,
positions near 2**31, LoRA adapters), and lens-gated attention and blocks (each mechanism on
or off, both context paths) — within each file's tolerance, running in float32."""

import pytest
import torch

from spec.implementation import mc
from spec.vectors import as_tensor, assert_close, cases, load, raises, tolerance, wc_of

FILES = ("lensnet.json", "gistnet.json", "tiny_gpt.json", "lens_gated.json")


def load_weights(module: torch.nn.Module, weights: dict, tied: tuple[str, ...] = ()) -> None:
    """Load the file's weights by name; every state_dict entry must be given (but `tied`)."""
    state = module.state_dict()
    missing = set(state) - set(weights) - set(tied)
    unknown = set(weights) - set(state)
    assert not missing and not unknown, f"missing {sorted(missing)}, unknown {sorted(unknown)}"
    for name, t in weights.items():
        assert tuple(state[name].shape) == tuple(t["shape"]), (
            f"{name}: shape {tuple(state[name].shape)} vs the file's {t['shape']}")
        state[name] = as_tensor(t, torch.float32)
    for name in tied:
        state.pop(name, None)
    module.load_state_dict(state, strict=False)


def run(case) -> dict:
    inp, fn = case["inputs"], case["function"]
    if fn == "lens_features":
        return {"features": mc.lens_features(wc_of(inp["wc"]), inp["T"],
                                             mc.MCConfig(**inp["cfg"]))}
    if fn == "LensNet":
        net = mc.LensNet(mc.LensNetConfig(**inp["config"]))
        load_weights(net, inp["weights"])
        f32 = {k: as_tensor(inp[k], torch.float32) for k in ("x", "features", "tail")}
        return {"scores": net(f32["x"], f32["features"], mask=as_tensor(inp["mask"]),
                              tail=f32["tail"], tail_mask=as_tensor(inp["tail_mask"]))}
    if fn == "GistNet":
        net = mc.GistNet(mc.GistNetConfig(**inp["config"]))
        children = as_tensor(inp["children"], torch.float32)
        if "lod" in inp:  # an error case: no weights
            return {"gists": net(children, inp["lod"])}
        load_weights(net, inp["weights"])
        return {f"lod{lod}": net(children, lod) for lod in (1, 2)}
    if fn == "TinyGPT":
        model = mc.TinyGPT(mc.TinyGPTConfig(**inp["config"]))
        if inp["lora"] is not None:
            lora = inp["lora"]
            model.add_lora(lora["rank"], targets=tuple(lora["targets"]), alpha=lora["alpha"])
        if "weights" in inp:  # error cases come without weights
            load_weights(model, inp["weights"], tied=("lm_head.weight",))
            assert model.lm_head.weight is model.wte.weight, "lm_head must stay tied to wte"
        x = (as_tensor(inp["tokens"]) if "tokens" in inp
             else as_tensor(inp["embeddings"], torch.float32))
        positions = as_tensor(inp["positions"]) if "positions" in inp else None
        targets = as_tensor(inp["targets"]) if "targets" in inp else None
        out = model(x, positions, targets)
        return {"logits": out.logits} | ({} if targets is None else {"nll": out.nll})
    if fn == "LensGatedConfig":
        return {"config": mc.LensGatedConfig(**inp["config"])}
    if fn in ("LensGatedAttention", "LensGatedBlock"):
        cfg = mc.LensGatedConfig(**inp["config"])
        module = getattr(mc, fn)(cfg)
        load_weights(module, inp["weights"])
        x = as_tensor(inp["x"], torch.float32)
        if fn == "LensGatedAttention":
            return {"y": module(x)}
        # the block takes rope tables [B, 1, T, D/2], built as tiny_gpt.json's "rope" defines
        D = cfg.n_embd // cfg.n_head
        inv_freq = inp["rope_base"] ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
        angles = as_tensor(inp["positions"]).expand(x.shape[0], -1)[:, None, :, None] * inv_freq
        return {"y": module(x, angles.cos().float(), angles.sin().float())}
    raise AssertionError(f"unknown function {fn!r}")


def test_every_model_has_vectors():
    """Each model file has at least one output case; LoRA, positions past 2**24 and every
    lens-gated switch appear."""
    fns = {c["function"] for f in FILES for c in load(f)["cases"]}
    assert fns >= {"lens_features", "LensNet", "GistNet", "TinyGPT", "LensGatedAttention",
                   "LensGatedBlock"}, fns
    tiny = load("tiny_gpt.json")["cases"]
    assert any(c["inputs"]["lora"] for c in tiny)
    assert any(max(abs(v) for v in c["inputs"]["positions"]["data"]) > 2**31 for c in tiny
               if "positions" in c["inputs"])


@pytest.mark.parametrize("case", [p for f in FILES for p in cases(f)])
def test_model_vector(case):
    """The stored outputs are reproduced within the file's tolerance (or the stored error is
    raised) (§8)."""
    doc = next(load(f) for f in FILES if case in load(f)["cases"])
    if "error" in case:
        raises(case["error"], lambda: run(case))
        return
    with torch.no_grad():
        got = run(case)
    assert set(got) == set(case["expected"]), f"{sorted(got)} vs {sorted(case['expected'])}"
    for key, want in case["expected"].items():
        assert_close(got[key], want, tolerance(doc, case, key), f"{case['name']} {key}")
