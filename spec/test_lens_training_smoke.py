"""End-to-end lens supervision smoke (contract §6): synthetic counterfactual utilities ->
lens_targets_from_utilities -> lens_loss -> a tiny linear scorer trained with Adam; held-out
scores must rank like their targets. A flipped sign anywhere in that chain (targets, a loss
term, the scorer's use of the loss) turns the correlation negative or destroys it."""

import torch
import torch.nn.functional as F

from spec import strategies as S
from spec.implementation import mc

CFG = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=4)
T = 164
# 4 LOD2 gists (expand only), 4 groups of LOD1 gists (expand and collapse), 8 groups of LOD0
# tokens (collapse only), and the protected tail [160, 164) (no legal action: masked).
ENTRIES = ([(2, s) for s in range(0, 64, 16)] + [(1, s) for s in range(64, 128, 4)]
           + [(0, t) for t in range(128, T)])
N_FEATURES = 3
PRICE = 0.02  # nats per slot
STEPS = 200


def test_linear_scorer_trained_on_synthetic_utilities_ranks_like_its_targets():
    """After 200 Adam steps on 2 snapshots, the Spearman correlation of held-out scores over
    the mask exceeds 0.8 both with their targets and with the signed utility the spec computes
    itself from the same synthetic ΔNLLs (so a sign flipped inside the target builder shows),
    and exceeds 0.5 in every snapshot."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    wc = S.make_wc(ENTRIES)
    wc.validate(CFG, T)
    n, K = len(wc), CFG.block_size
    _, group_id = mc.legal_actions(wc, T, CFG)
    in_group = group_id >= 0
    n_groups = int(group_id.max()) + 1
    w_true = torch.randn(N_FEATURES, generator=gen)  # hidden relevance direction

    def group_mean(v):  # [N, F] -> [N, F], the mean over the entry's sibling group (0 if none)
        sums = torch.zeros(n_groups, v.shape[1]).index_add_(0, group_id[in_group], v[in_group])
        out = torch.zeros_like(v)
        out[in_group] = sums[group_id[in_group]] / K
        return out

    def snapshot():
        x = torch.randn(n, N_FEATURES, generator=gen)  # [N, F] entry content
        x_group = group_mean(x)  # [N, F] what a collapse would merge (LensNet sees context)
        relevance = x @ w_true  # [N]
        group_relevance = x_group @ w_true  # [N]
        slots = PRICE * (K - 1)
        # Relevant content pays for its expansion; irrelevant groups are cheap to collapse.
        expand_gain = slots + F.softplus(relevance)
        collapse_loss = torch.where(in_group, slots - F.softplus(-group_relevance),
                                    float("nan"))
        targets, mask = mc.lens_targets_from_utilities(wc, expand_gain, collapse_loss, T, CFG,
                                                       PRICE)
        # The same §6 arithmetic done here, independently: what the scores should rank like.
        truth = (torch.where(wc.lods > 0, F.softplus(relevance), 0.0)
                 - torch.where(in_group, F.softplus(-group_relevance), 0.0))
        assert torch.equal(mask, (wc.lods > 0) | in_group), mask.tolist()
        # Per-level linear features: [x, x_group, 1] routed by the entry's level.
        level = F.one_hot(wc.lods, CFG.max_lod + 1).float()  # [N, L]
        base = torch.cat([x, x_group, torch.ones(n, 1)], dim=1)  # [N, 2F+1]
        feats = (base[:, None, :] * level[:, :, None]).reshape(n, -1)  # [N, L(2F+1)]
        return feats, targets, mask, truth

    train = [snapshot() for _ in range(2)]
    held_out = [snapshot() for _ in range(3)]
    weight = torch.zeros(train[0][0].shape[1], requires_grad=True)
    opt = torch.optim.Adam([weight], lr=0.05)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = sum(mc.lens_loss(torch.tanh(f @ weight), t, m, wc, CFG).total
                   for f, t, m, _ in train)
        loss.backward()
        opt.step()

    with torch.no_grad():
        scores = torch.stack([torch.tanh(f @ weight) for f, _, _, _ in held_out])  # [B, N]
    targets, mask, truth = (torch.stack([c[k] for c in held_out]) for k in (1, 2, 3))
    pooled = mc.spearman_corr(scores.flatten(), targets.flatten(), mask.flatten()).item()
    vs_truth = mc.spearman_corr(scores.flatten(), truth.flatten(), mask.flatten()).item()
    per_snapshot = mc.spearman_corr(scores, targets, mask)
    telemetry = mc.lens_telemetry(scores, targets, mask)
    msg = (f"pooled spearman={pooled:.3f} vs truth={vs_truth:.3f} "
           f"per snapshot={per_snapshot.tolist()} telemetry={telemetry} weight={weight.tolist()}")
    assert pooled > 0.8, msg
    assert vs_truth > 0.8, msg
    assert bool((per_snapshot > 0.5).all()), msg
