"""The differentiable rank: forward = RankReg Eq. 2, backward = blackbox differentiation."""

from __future__ import annotations

import itertools

import pytest
import torch

from hightpr.regularizers.ranking import rank


def brute_force_ranks(values: list[float]) -> list[int]:
    """rk_i = 1 + #{j : a_j > a_i}, by counting every pair."""
    return [1 + sum(1 for b in values if b > a) for a in values]


@pytest.mark.parametrize("n", [1, 2, 7, 64, 301])
def test_forward_equals_brute_force_count_with_ties(n):
    g = torch.Generator().manual_seed(n)
    a = torch.randint(0, max(2, n // 3), (n,), generator=g).float()  # many ties
    assert rank(a, 2.0).tolist() == brute_force_ranks(a.tolist())


def test_ties_share_the_best_rank_and_do_not_depend_on_order():
    a = torch.tensor([3.0, 1.0, 3.0, 2.0, 5.0, 3.0])
    assert rank(a).tolist() == [2, 6, 2, 5, 1, 2]
    for perm in itertools.permutations(range(6), 6):
        p = torch.tensor(perm)
        assert torch.equal(rank(a[p]), rank(a)[p])


def test_rows_are_ranked_independently_and_normalised_by_length():
    a = torch.tensor([[0.1, 0.3, 0.2, 0.0], [4.0, 4.0, -1.0, 9.0]])
    assert rank(a).tolist() == [[3, 1, 2, 4], [2, 2, 4, 1]]
    assert torch.allclose(rank(a, normalize=True), rank(a) / 4)


def test_half_precision_scores_get_exact_ranks():
    a = torch.arange(600, dtype=torch.float32).to(torch.bfloat16)  # ties above 256
    r = rank(a)
    assert r.dtype == torch.float32  # 599 is not a bfloat16 number
    assert r.tolist() == brute_force_ranks(a.float().tolist())


def test_backward_is_the_blackbox_interpolation_worked_by_hand():
    # raw ranks, loss = rk_5^2 (the last sample); dL/drk = (0, ..., 0, 2 * 6 = 12)
    a = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0], requires_grad=True)
    r = rank(a, interpolation=1.0)
    (r[5] ** 2).backward()
    # a' = a + 1 * 12 e_5 = (6,5,4,3,2,13): rk(a') = (2,3,4,5,6,1); grad = -(rk(a) - rk(a')) / 1
    assert a.grad.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, -5.0]


def test_backward_scales_with_the_interpolation_and_normalisation():
    # normalised ranks, gamma = 50, loss = r_5 (dL/dr = 1): a' = a + 50 e_5 -> top of the list;
    # r goes 6/6 -> 1/6 for the last sample and +1/6 for every other: grad = -(r - r') / 50
    a = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0], requires_grad=True)
    rank(a, interpolation=50.0, normalize=True)[5].backward()
    expected = [(1 / 6) / 50] * 5 + [-(5 / 6) / 50]
    assert a.grad.tolist() == pytest.approx(expected)


def test_small_interpolation_only_reaches_close_neighbours():
    # gamma * dL/drk = 0.5 * 1: the last sample passes 1.2 only (gap 0.2), not 2.0 (gap 1.0)
    a = torch.tensor([2.0, 1.2, 1.0], requires_grad=True)
    rank(a, interpolation=0.5)[2].backward()
    assert a.grad.tolist() == pytest.approx([0.0, 2.0, -2.0])


def test_invalid_arguments():
    with pytest.raises(ValueError, match="interpolation"):
        rank(torch.zeros(3), 0.0)
    with pytest.raises(TypeError, match="float"):
        rank(torch.zeros(3, dtype=torch.long))
    assert rank(torch.zeros(0)).shape == (0,)
