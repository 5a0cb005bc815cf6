"""Ranking with a gradient: blackbox differentiation of the rank "solver" (Vlastelica et al.).

Forward: rk(a)_i = 1 + #{j : a_j > a_i} (RankReg Eq. 2), rank 1 = the highest score.
Backward: the gradient of a piecewise-affine interpolation of L(rk(a)) (Vlastelica et al.,
ICLR 2020; ranking as in Rolinek et al., CVPR 2020):

    a' = a + gamma * dL/drk,        dL/da = -(rk(a) - rk(a')) / gamma

Raising a sample whose rank is penalised moves it past its neighbours within reach; the
gradient tells each sample how its rank changed. `gamma` (the interpolation strength) trades
faithfulness to the piecewise-constant rank for informative gradients: with a small gamma only
samples within gamma * dL/drk of a neighbour receive a gradient.

Ties: no order-based tie-breaking is needed because Eq. 2 is used literally: tied scores share
the best rank of their group (1 + the number of strictly larger scores; "1224" ranking). The
result is deterministic and independent of the order of the list.
"""

from __future__ import annotations

import torch


def _ranks(a: torch.Tensor) -> torch.Tensor:
    """rk(a) = 1 + #{j: a_j > a_i} along the last dim, as float (O(n log n), on a's device)."""
    n = a.shape[-1]
    sorted_a = torch.sort(a, dim=-1).values
    # number of elements <= a_i, so n - that = number strictly greater
    not_greater = torch.searchsorted(sorted_a.contiguous(), a.contiguous(), right=True)
    return (n - not_greater + 1).to(a.dtype)


class _BlackboxRank(torch.autograd.Function):
    """rk(a) / scale with the blackbox-differentiation backward (scale = n for normalised ranks)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, interpolation: float, normalize: bool) -> torch.Tensor:
        scale = float(a.shape[-1]) if normalize else 1.0
        r = _ranks(a) / scale
        ctx.save_for_backward(a, r)
        ctx.interpolation, ctx.scale = interpolation, scale
        return r

    @staticmethod
    def backward(ctx, grad_r: torch.Tensor):
        a, r = ctx.saved_tensors
        gamma = ctx.interpolation
        r_perturbed = _ranks(a + gamma * grad_r) / ctx.scale
        return (r_perturbed - r) / gamma, None, None  # = -(rk(a) - rk(a')) / gamma


def rank(scores: torch.Tensor, interpolation: float = 2.0, normalize: bool = False) -> torch.Tensor:
    """Ranks of `scores` along the last dim (1 = highest), differentiable by blackbox differentiation.

    scores: [..., n] float. interpolation: gamma > 0 of the backward (RankReg's `reg.interpolation`).
    normalize: return rk / n in (0, 1]; the blackbox perturbation then uses dL/d(rk / n), so gamma
    is measured against normalised ranks (as RankSim's ranker, which RankReg builds on).
    Tied scores share the best rank of their group (see the module docstring).
    """
    if interpolation <= 0:
        raise ValueError(f"interpolation (gamma) must be > 0, got {interpolation}")
    if not scores.is_floating_point():
        raise TypeError(f"rank needs float scores, got {scores.dtype}")
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()  # ranks above 256 are not representable in half precision
    if scores.shape[-1] == 0:
        return scores.clone()
    return _BlackboxRank.apply(scores, float(interpolation), bool(normalize))
