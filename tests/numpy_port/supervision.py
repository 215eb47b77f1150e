"""Lens supervision in numpy, written from the definitions in
golden/vectors/lens_supervision.json alone (no megacontext, no torch): targets from utilities
and from the best variant, the loss terms and the gradient of the total (by hand, with the
file's conventions at kinks), variant weights."""

from __future__ import annotations

import math

import numpy as np

from tests.numpy_port.controller import PortError, legal_actions, span


def targets_from_utilities(wc, expand_gain, collapse_loss, T, cfg, price):
    ok, gid = legal_actions(wc, T, cfg)
    K = cfg["block_size"]
    n = len(gid)
    slot_value = price * (K - 1)
    group_val: dict[int, float] = {}
    for i in range(n):
        g, v = int(gid[i]), float(collapse_loss[i])
        if g < 0 or math.isnan(v):
            continue
        if g in group_val and group_val[g] != v:
            raise PortError("InputError", "collapse_loss")
        group_val[g] = v
    targets, mask = np.zeros(n), np.zeros(n, dtype=bool)
    for i in range(n):
        t, present = 0.0, False
        if ok[i] and not math.isnan(float(expand_gain[i])):
            t += max(float(expand_gain[i]) - slot_value, 0.0)
            present = True
        if gid[i] >= 0 and int(gid[i]) in group_val:
            t -= max(slot_value - group_val[int(gid[i])], 0.0)
            present = True
        targets[i], mask[i] = (t if present else 0.0), present
    return targets, mask


def targets_from_best(wc, best, delta, T, cfg):
    ok, gid = legal_actions(wc, T, cfg)
    legal_actions(best, T, cfg)
    lods, starts = [int(v) for v in wc["lods"]], [int(v) for v in wc["starts"]]
    blods, bstarts = [int(v) for v in best["lods"]], [int(v) for v in best["starts"]]
    bends = [s + span(cfg, lod) for s, lod in zip(bstarts, blods, strict=True)]
    n, mag = len(lods), math.tanh(abs(delta))
    finer, coarser = [False] * n, [False] * n
    for i in range(n):
        s, e = starts[i], starts[i] + span(cfg, lods[i])
        j = next((j for j in range(len(blods)) if bstarts[j] <= s < bends[j]), None)
        if j is not None:
            finer[i], coarser[i] = blods[j] < lods[i], blods[j] > lods[i]
        else:
            finer[i] = any(s <= b < e for b in bstarts)
    collapsed_groups = {int(gid[i]) for i in range(n) if coarser[i] and gid[i] >= 0}
    targets, mask = np.zeros(n), np.zeros(n, dtype=bool)
    for i in range(n):
        if finer[i] and ok[i]:
            targets[i], mask[i] = mag, True
        if gid[i] >= 0 and int(gid[i]) in collapsed_groups:
            targets[i], mask[i] = -mag, True
    return targets, mask


def softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def lens_loss(scores, targets, mask, wc, cfg, w) -> dict:
    lods, starts = [int(v) for v in wc["lods"]], [int(v) for v in wc["starts"]]
    T = starts[-1] + span(cfg, lods[-1]) if lods else 0
    ok, gid = legal_actions(wc, T, cfg)
    K = cfg["block_size"]
    idx = [i for i in range(len(mask)) if mask[i]]
    s = [float(scores[i]) for i in idx]
    t = [float(targets[i]) for i in idx]
    c = [w["collapse_weight"] if v < 0 else 1.0 for v in t]
    n, n1 = len(idx), max(len(idx), 1)
    g = [0.0] * n  # d total / d s, per masked entry
    sign = lambda v: (v > 0) - (v < 0)
    step = lambda v: 1.0 if v > 0 else 0.0  # derivative of max(v, 0); 0 at the kink

    reg = 0.0
    for k in range(n):
        e = s[k] - math.tanh(t[k] / w["target_scale"])
        reg += c[k] * e * e / n1
        g[k] += w["reg"] * 2 * c[k] * e / n1
    pref = 0.0
    for k in range(n):
        z = -sign(t[k]) * s[k] / w["temperature"]
        pref += c[k] * softplus(z) * abs(t[k]) / n1
        sig = 1 / (1 + math.exp(-z))
        g[k] += w["pref"] * c[k] * abs(t[k]) * sig * (-sign(t[k]) / w["temperature"]) / n1
    order = sorted(range(n), key=lambda k: (t[k], s[k], k))
    pairs, d, hinge, dh = [], 1, 0.0, [0.0] * n
    while d < n:
        for k in range(n - d):
            lo, hi = order[k], order[k + d]
            if t[hi] > t[lo]:
                pairs.append((lo, hi))
        d *= 2
    for lo, hi in pairs:
        m = w["margin"] - (s[hi] - s[lo])
        cw = (c[lo] + c[hi]) / 2
        hinge += max(m, 0.0) * cw
        dh[hi] -= step(m) * cw
        dh[lo] += step(m) * cw
    rank = hinge / max(len(pairs), 1)
    for k in range(n):
        g[k] += w["rank"] * dh[k] / max(len(pairs), 1)
    a = [(K - 1) * float(ok[i]) for i in idx]
    b = [(K - 1) / K * float(gid[i] >= 0) for i in idx]
    P = sum(ak * max(sk, 0.0) for ak, sk in zip(a, s, strict=True))
    Q = sum(bk * max(-sk, 0.0) for bk, sk in zip(b, s, strict=True))
    r, den = P - Q, P + Q + w["eps"]
    budget = (r / den) ** 2
    dB_dP, dB_dQ = 2 * r * (den - r) / den**3, -2 * r * (den + r) / den**3
    for k in range(n):
        g[k] += w["budget"] * (dB_dP * a[k] * step(s[k]) - dB_dQ * b[k] * step(-s[k]))
    total = w["reg"] * reg + w["pref"] * pref + w["rank"] * rank + w["budget"] * budget
    grad = np.zeros(len(scores))
    for k, i in enumerate(idx):
        grad[i] = g[k]
    return {"total": total, "reg": reg, "pref": pref, "rank": rank, "budget": budget,
            "grad_total": grad}


def variant_weights(losses, baseline):
    ref = max(losses) if baseline is None else baseline
    return np.array([1.0 + max(ref - v, 0.0) for v in losses], dtype=np.float64)
