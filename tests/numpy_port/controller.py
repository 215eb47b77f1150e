"""An independent numpy port of the megacontext controller, written from the definitions in
golden/vectors/controller.json alone (it imports neither megacontext nor torch).

It exists to prove that the vector files suffice to build a port (contract §17): the checker
(`check.py`) runs it against every controller vector. Plain loops over Python lists, chosen
for legibility over speed; a WC is a dict of three int64 arrays {lods, starts, residency}.
"""

from __future__ import annotations

import numpy as np


class PortError(Exception):
    """An error of a kind named in the vector file's error_kinds."""

    def __init__(self, kind: str, argument: str, index: int | None = None):
        super().__init__(f"{kind} ({argument}, index {index})")
        self.kind, self.argument, self.index = kind, argument, index


# --- basics ----------------------------------------------------------------------------------


def span(cfg: dict, lod: int) -> int:
    return cfg["block_size"] ** lod


def tail_start(cfg: dict, T: int) -> int:
    return max(T - cfg["recent_tokens"], 0)


def make_wc(lods, starts, residency=None) -> dict:
    lods = np.asarray(lods, dtype=np.int64).reshape(-1)
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    res = np.zeros_like(lods) if residency is None else np.asarray(residency, dtype=np.int64)
    return {"lods": lods, "starts": starts, "residency": res.reshape(-1)}


def check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise PortError("InputError", name)
    return int(value)


# --- validate --------------------------------------------------------------------------------


def validate(wc: dict, T, cfg: dict, check_budget: bool = True) -> None:
    """The checks of the `validate` definition, in its order."""
    T = check_count("T", T)
    lods = [int(v) for v in wc["lods"]]
    starts = [int(v) for v in wc["starts"]]
    res = [int(v) for v in wc["residency"]]
    n = len(lods)
    if n == 0:
        if T > 0:
            raise PortError("CoverageError", "wc", None)
        return
    if any(r < 0 for r in res):
        raise PortError("InputError", "residency")
    for i, lod in enumerate(lods):
        if lod < 0 or lod > cfg["max_lod"]:
            raise PortError("LevelError", "wc", i)
    ends = [s + span(cfg, lod) for s, lod in zip(starts, lods, strict=True)]
    for i in range(n):
        if starts[i] % span(cfg, lods[i]) != 0:
            raise PortError("AlignmentError", "wc", i)
    for i in range(n):
        if lods[i] > 0 and ends[i] > T:
            raise PortError("LevelError", "wc", i)
    for i in range(1, n):
        if ends[i - 1] != starts[i]:
            raise PortError("ContiguityError", "wc", i)
    if starts[0] < 0:
        raise PortError("CoverageError", "wc", 0)
    if ends[-1] != T:
        raise PortError("CoverageError", "wc", n - 1)
    f = first_in_tail(ends, T, cfg)
    for i in range(f, n):
        if lods[i] > 0:
            raise PortError("TailError", "wc", i)
    if check_budget and n > cfg["budget"]:
        raise PortError("BudgetError", "wc", cfg["budget"])


def first_in_tail(ends: list[int], T: int, cfg: dict) -> int:
    ts = tail_start(cfg, T)
    return next((i for i, e in enumerate(ends) if e > ts), len(ends))


# --- the recency baseline and appending ------------------------------------------------------


def build_working_context(T, cfg: dict) -> dict:
    T = check_count("T", T)
    K = cfg["block_size"]
    a0 = K * (tail_start(cfg, T) // K)
    tiling, p = [], 0
    for lod in range(cfg["max_lod"], 0, -1):
        c = (a0 - p) // span(cfg, lod)
        tiling += [(lod, p + j * span(cfg, lod)) for j in range(c)]
        p += c * span(cfg, lod)
    tiling += [(0, t) for t in range(a0, T)]
    n = len(tiling)
    if n > cfg["budget"]:
        kept = tiling[n - cfg["budget"]:]
        return make_wc([e[0] for e in kept], [e[1] for e in kept])
    stack = [e for e in tiling if e[0] > 0]
    while stack and n + K - 1 <= cfg["budget"]:
        lod, s = stack.pop()
        n += K - 1
        if lod > 1:
            stack += [(lod - 1, s + j * span(cfg, lod - 1)) for j in range(K)]
    lod0_from = stack[-1][1] + span(cfg, stack[-1][0]) if stack else 0
    entries = stack + [(0, t) for t in range(lod0_from, T)]
    return make_wc([e[0] for e in entries], [e[1] for e in entries])


def append_tokens(wc: dict, T, n, cfg: dict) -> dict:
    n = check_count("n", n)
    validate(wc, T, cfg, check_budget=False)
    return {"lods": np.concatenate([wc["lods"], np.zeros(n, dtype=np.int64)]),
            "starts": np.concatenate([wc["starts"], np.arange(T, T + n, dtype=np.int64)]),
            "residency": np.concatenate([wc["residency"], np.zeros(n, dtype=np.int64)])}


# --- legality and group scores ---------------------------------------------------------------


def legal_actions(wc: dict, T, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    validate(wc, T, cfg, check_budget=False)
    K = cfg["block_size"]
    lods = [int(v) for v in wc["lods"]]
    starts = [int(v) for v in wc["starts"]]
    n = len(lods)
    ends = [s + span(cfg, lod) for s, lod in zip(starts, lods, strict=True)]
    f = first_in_tail(ends, T, cfg)
    group_id = [-1] * n
    g, i = 0, 0
    while i < n:
        lod = lods[i]
        if (lod < cfg["max_lod"] and starts[i] % span(cfg, lod + 1) == 0 and i + K - 1 < n
                and ends[i + K - 1] == starts[i] + span(cfg, lod + 1) and i + K - 1 < f):
            for j in range(i, i + K):
                group_id[j] = g
            g += 1
            i += K
        else:
            i += 1
    return (np.array([lod > 0 for lod in lods], dtype=bool).reshape(n),
            np.array(group_id, dtype=np.int64).reshape(n))


def aggregate(values: list[float], how: str) -> float:
    if how == "max":
        return max(values)
    total = 0.0
    for v in values:
        total = total + float(v)
    return total / len(values)


def check_scores(scores: np.ndarray, n: int, name: str = "scores") -> list[float]:
    if scores.ndim != 1 or scores.dtype.kind != "f":
        raise PortError("InputTypeError" if scores.dtype.kind != "f" else "InputError", name)
    if scores.shape[0] != n:
        raise PortError("InputError", name)
    if not np.isfinite(scores).all():
        raise PortError("InputError", name)
    return [float(v) for v in scores]


def block_scores(scores: np.ndarray, group_id: np.ndarray, how: str) -> np.ndarray:
    if how not in ("mean", "max"):
        raise PortError("InputError", "how")
    if group_id.dtype != np.int64:
        raise PortError("InputTypeError", "group_id")
    if group_id.ndim != 1:
        raise PortError("InputError", "group_id")
    x = check_scores(scores, group_id.shape[0])
    ids = [int(v) for v in group_id]
    if any(i < -1 for i in ids):
        raise PortError("InputError", "group_id")
    G = max(ids) + 1 if ids else 0
    members: list[list[float]] = [[] for _ in range(max(G, 0))]
    for i, g in enumerate(ids):
        if g >= 0:
            members[g].append(x[i])
    if any(not m for m in members):
        raise PortError("InputError", "group_id")
    return np.array([aggregate(m, how) for m in members], dtype=np.float64).reshape(-1)


# --- the focus step --------------------------------------------------------------------------


def focus_step(wc: dict, scores: np.ndarray, T, cfg: dict) -> tuple[dict, list]:
    validate(wc, T, cfg, check_budget=False)
    lods = [int(v) for v in wc["lods"]]
    starts = [int(v) for v in wc["starts"]]
    res = [int(v) for v in wc["residency"]]
    N = len(lods)
    x = check_scores(scores, N)
    K, budget, how = cfg["block_size"], cfg["budget"], cfg["block_score"]
    min_res = cfg["min_residency"]

    _, gid_arr = legal_actions(wc, T, cfg)
    gid = [int(v) for v in gid_arr]
    G = max(gid) + 1 if gid else 0
    heads = [gid.index(g) for g in range(G)]
    members = [list(range(h, h + K)) for h in heads]
    gs = [aggregate([x[i] for i in m], how) for m in members]
    order = sorted(range(G), key=lambda g: (gs[g], starts[heads[g]]))

    # the current WC: start -> entry {lod, res, input row or None (made in this step)}
    cur = {starts[i]: {"lod": lods[i], "res": res[i], "row": i} for i in range(N)}
    touched: set[int] = set()  # input rows that took part in an action
    actions: list = []
    n = N

    def collapse(lod: int, s: int) -> None:
        nonlocal n
        for j in range(K):
            e = cur.pop(s + j * span(cfg, lod))
            if e["row"] is not None:
                touched.add(e["row"])
        cur[s] = {"lod": lod + 1, "res": 0, "row": None}
        actions.append(["collapse", lod, s])
        n -= K - 1

    def expand(row: int) -> None:
        nonlocal n
        lod, s = lods[row], starts[row]
        del cur[s]
        touched.add(row)
        for j in range(K):
            cur[s + j * span(cfg, lod - 1)] = {"lod": lod - 1, "res": 0, "row": None}
        actions.append(["expand", lod, s])
        n += K - 1

    # 1. forced phase
    collapsed: set[int] = set()  # groups of `order` collapsed (here or by a swap)
    ptr, pool = 0, []  # pool: (score, start, lod) of cascade groups
    parent_score: dict[int, float] = {}  # start of a parent made in this phase -> its score
    while n > budget:
        A = order[ptr] if ptr < G else None
        B = min(pool) if pool else None
        if B is not None and (A is None or (B[0], B[1]) < (gs[A], starts[heads[A]])):
            pool.remove(B)
            score, s, lod = B
        elif A is not None:
            score, s, lod = gs[A], starts[heads[A]], lods[heads[A]]
            collapsed.add(A)
            ptr += 1
        else:
            break
        collapse(lod, s)
        parent_score[s] = score
        L = lod + 1
        if L < cfg["max_lod"]:
            P = span(cfg, L + 1)
            q = s // P * P
            slots = [q + j * span(cfg, L) for j in range(K)]
            if q + P <= tail_start(cfg, T) and all(t in cur and cur[t]["lod"] == L
                                                    for t in slots):
                vals = [parent_score[t] if cur[t]["row"] is None else x[cur[t]["row"]]
                        for t in slots]
                pool.append((aggregate(vals, how), q, L))
    if n > budget:
        for s in sorted(cur)[: n - budget]:
            e = cur.pop(s)
            if e["row"] is not None:
                touched.add(e["row"])
            actions.append(["evict", e["lod"], s])
        n = budget

    # 2. main phase
    left = cfg["max_actions"]
    swap = [g for g in order if g not in collapsed
            and all(res[i] >= min_res for i in members[g])]
    used: set[int] = set()
    cands = [i for i in range(N)
             if lods[i] > 0 and res[i] >= min_res and x[i] > cfg["expand_threshold"]]
    cands.sort(key=lambda i: (-x[i], starts[i]))
    for e in cands:
        if left == 0:
            break
        own = gid[e] if gid[e] >= 0 else None
        if e in touched or (own is not None and own in collapsed):
            continue
        if n > budget - (K - 1):
            g = next((g for g in swap if g not in used and g != own), None)
            if g is None or left < 2 or not (x[e] - gs[g] > cfg["swap_margin"]):
                break
            collapse(lods[heads[g]], starts[heads[g]])
            used.add(g)
            collapsed.add(g)
            left -= 1
        expand(e)
        if own is not None:
            used.add(own)
        left -= 1

    # 3. voluntary phase
    for g in swap:
        if left == 0 or not gs[g] < -cfg["collapse_threshold"]:
            break
        if g not in used:
            collapse(lods[heads[g]], starts[heads[g]])
            used.add(g)
            left -= 1

    keys = sorted(cur)
    new = make_wc([cur[s]["lod"] for s in keys], keys,
                  [0 if cur[s]["row"] is None else cur[s]["res"] + 1 for s in keys])
    return new, actions


# --- the LOD map -----------------------------------------------------------------------------


def render_lod_map(wc: dict, T, cfg: dict) -> str:
    validate(wc, T, cfg, check_budget=False)
    K = cfg["block_size"]
    lods = [int(v) for v in wc["lods"]]
    starts = [int(v) for v in wc["starts"]]
    header = f"T={T} N={len(lods)}/{cfg['budget']} K={K}"
    chars = []
    n_blocks = -(-T // K)
    for b in range(n_blocks):
        last = min((b + 1) * K, T) - 1
        i = int(np.searchsorted(np.array(starts, dtype=np.int64), last, side="right")) - 1
        if i < 0 or last >= starts[i] + span(cfg, lods[i]):
            chars.append(" ")
        elif T % K and b == n_blocks - 1:
            chars.append(",")
        elif lods[i] == 0:
            chars.append(".")
        else:
            chars.append(str(lods[i]))
    body = "".join(chars)
    return "\n".join([header] + [body[i:i + 128] for i in range(0, len(body), 128)])
