"""ALM: the Eq. 5 penalty, the multipliers and mu schedule, the multi-class constraints, a real run."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hightpr.errors import HightprError
from hightpr.regularizers import ALMRegularizer, MultiClassALMRegularizer, alm_penalty
from hightpr.regularizers.alm import default_mu_cap
from tests.conftest import CONF_PATH

CONF_DIR = str(CONF_PATH)


def per_negative_penalty(pos: torch.Tensor, neg: torch.Tensor, mu: float, delta: float) -> torch.Tensor:
    """Test-only alternative of §4.2: one constraint per *negative* k,
    r_k = sum_j max(0, delta - (s_j - s_k)), penalty mu sum_k r_k^2 / (2|P||N|) (lambda = 0)."""
    r = (delta - (pos[:, None] - neg[None, :])).clamp_min(0).sum(dim=0)
    return mu * r.square().sum() / (2 * len(pos) * len(neg))


def loop_reference(logits, y, critical, lambdas_by_row, mu, delta, variant):
    """Eq. 6 / Eq. 7 written literally with Python loops (test-only)."""
    rows = range(len(y))
    owners = [j for j in rows if int(y[j]) in critical]
    others = [k for k in rows if int(y[k]) not in critical]
    q_sq = lin = 0.0
    for j in owners:
        c = int(y[j])
        q = 0.0
        for k in others:
            i = int(y[k])
            q += max(0.0, delta - (float(logits[j, c]) - float(logits[k, c])))
            if variant == "m2":
                q += max(0.0, float(logits[j, i]) - float(logits[k, i]) + delta)
        q_sq += q * q
        lin += float(lambdas_by_row[j]) * q
    n_pairs = max(len(owners) * len(others), 1)
    return mu * q_sq / (2 * n_pairs) + lin / n_pairs


def make_batch(scores, labels, ids=None):
    scores = torch.tensor(scores, dtype=torch.float32, requires_grad=True)
    y = torch.tensor(labels, dtype=torch.float32)
    ids = torch.arange(len(labels)) if ids is None else torch.tensor(ids)
    return scores[:, None], scores, y, ids


def step(reg, scores, labels, ids):
    """One training step as the module drives it: forward, backward, after_step."""
    logits, s, y, ids = make_batch(scores, labels, ids)
    term = reg(logits, s, y, ids)
    term.backward()
    reg.after_step({"y": y, "id": ids}, logits.detach(), s.detach())
    return term


# -- the penalty ------------------------------------------------------------------------------
def test_penalty_matches_hand_computation():
    pos = torch.tensor([2.0, 0.5], requires_grad=True)
    neg = torch.tensor([1.0, 0.0, 1.5])
    lambdas = torch.tensor([0.3, 1.0])
    loss, q = alm_penalty(pos, neg, lambdas, mu=0.2, delta=1.0)
    # q_1 = max(0, 1-(2-1)) + max(0, 1-(2-0)) + max(0, 1-(2-1.5)) = 0 + 0 + 0.5 = 0.5
    # q_2 = max(0, 1-(0.5-1)) + max(0, 1-(0.5-0)) + max(0, 1-(0.5-1.5)) = 1.5 + 0.5 + 2 = 4
    assert q.tolist() == pytest.approx([0.5, 4.0])
    # |P||N| = 6: 0.2 (0.25 + 16) / (2*6) + (0.3*0.5 + 1.0*4) / 6 = 0.2708333 + 0.6916667
    assert loss.item() == pytest.approx(0.2 * 16.25 / 12 + 4.15 / 6) == pytest.approx(0.9625)
    loss.backward()
    # d/ds_1 = -(mu q_1 + lambda_1) * (#active hinges = 1) / 6; d/ds_2 = -(mu q_2 + lambda_2) * 3 / 6
    assert pos.grad.tolist() == pytest.approx([-(0.2 * 0.5 + 0.3) / 6, -(0.2 * 4 + 1.0) * 3 / 6])


def test_penalty_matches_loops_on_random_batch():
    g = torch.Generator().manual_seed(0)
    pos, neg, lam = torch.randn(5, generator=g), torch.randn(17, generator=g), torch.rand(5, generator=g)
    loss, q = alm_penalty(pos, neg, lam, mu=0.7, delta=0.3)
    q_ref = [sum(max(0.0, 0.3 - (float(p) - float(n))) for n in neg) for p in pos]
    ref = (0.7 * sum(v * v for v in q_ref) / 2 + sum(float(l) * v for l, v in zip(lam, q_ref, strict=True)))
    assert q.tolist() == pytest.approx(q_ref, rel=1e-5)
    assert loss.item() == pytest.approx(ref / (5 * 17), rel=1e-5)


@pytest.mark.parametrize("n_pos, n_neg", [(0, 4), (3, 0), (0, 0)])
def test_penalty_is_zero_in_graph_without_pairs(n_pos, n_neg):
    pos = torch.randn(n_pos, requires_grad=True)
    neg = torch.randn(n_neg, requires_grad=True)
    loss, q = alm_penalty(pos, neg, torch.ones(n_pos), mu=1.0, delta=0.5)
    assert loss.item() == 0.0 and q.shape == (n_pos,) and loss.requires_grad
    loss.backward()


@pytest.mark.parametrize("order", ["nnpnnnpppn", "nnpnnpnppn", "npnnnpnppn"])
def test_asymmetry_of_section_4_2(order):
    """Scores 0..9 in the given order (low to high). Per-positive constraint (Eq. 5): moving the
    lowest positive up one place lowers the penalty more than moving the highest negative down one
    place; the per-negative alternative prefers the opposite."""

    def split(o):
        s = torch.arange(len(o), dtype=torch.float32)
        pos = torch.tensor([c == "p" for c in o])
        return s[pos], s[~pos]

    def swapped(o, i):
        chars = list(o)
        chars[i], chars[i + 1] = chars[i + 1], chars[i]
        return "".join(chars)

    low_pos, high_neg = order.index("p"), order.rindex("n")
    assert order[low_pos + 1] == "n" and order[high_neg - 1] == "p"
    orders = {"start": order, "pos_up": swapped(order, low_pos), "neg_down": swapped(order, high_neg - 1)}
    ours = {k: alm_penalty(*split(o), torch.zeros(order.count("p")), 1.0, 0.0)[0].item()
            for k, o in orders.items()}
    alt = {k: per_negative_penalty(*split(o), 1.0, 0.0).item() for k, o in orders.items()}
    assert ours["start"] - ours["pos_up"] > ours["start"] - ours["neg_down"] > 0
    assert alt["start"] - alt["neg_down"] > alt["start"] - alt["pos_up"] > 0
    if order == "nnpnnnpppn":
        # q = (13, 3, 2, 1) -> (9, 3, 2, 1) or (12, 2, 1, 0); |P||N| = 24
        assert ours["start"] == pytest.approx(183 / 48)
        assert ours["start"] - ours["pos_up"] == pytest.approx(88 / 48)
        assert ours["start"] - ours["neg_down"] == pytest.approx(34 / 48)


# -- the binary regulariser -------------------------------------------------------------------
def test_regularizer_equals_penalty_on_shuffled_batch():
    g = torch.Generator().manual_seed(1)
    reg = ALMRegularizer(num_sample_ids=100, mu0=0.5, delta=0.2)
    reg.lambdas.copy_(torch.rand(100, generator=g))
    scores = torch.randn(12, generator=g, requires_grad=True)
    y = torch.tensor([0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], dtype=torch.float32)
    ids = torch.randperm(100, generator=g)[:12]
    term = reg(scores[:, None], scores, y, ids)
    pos = y > 0.5
    ref, _ = alm_penalty(scores[pos], scores[~pos], reg.lambdas[ids[pos]], 0.5, 0.2)
    assert term.item() == pytest.approx(ref.item(), rel=1e-6)
    (g1,) = torch.autograd.grad(term, scores)
    (g2,) = torch.autograd.grad(ref, scores)
    assert torch.allclose(g1, g2)


def test_score_prob_uses_sigmoid():
    reg = ALMRegularizer(num_sample_ids=4, mu0=1.0, delta=0.1, score="prob")
    logits, s, y, ids = make_batch([0.0, 2.0, -1.0, 1.0], [1, 0, 0, 1])
    p = torch.sigmoid(s.detach())
    ref, _ = alm_penalty(p[y > 0.5], p[y < 0.5], torch.zeros(2), 1.0, 0.1)
    assert reg(logits, s, y, ids).item() == pytest.approx(ref.item())


def test_lambda_accumulates_per_id_across_steps_and_epochs():
    mu, delta = 0.5, 1.0
    reg = ALMRegularizer(num_sample_ids=10, mu0=mu, delta=delta)
    reg.on_train_epoch_start(0)
    # step 1: positive id 7 (score 0) vs negatives ids 2, 3 (scores 0.5, -2): q_7 = 1.5 + 0 = 1.5
    t1 = step(reg, [0.0, 0.5, -2.0], [1, 0, 0], [7, 2, 3])
    assert t1.item() == pytest.approx(mu * 1.5**2 / (2 * 2))  # old lambda (0) used in the loss
    assert reg.lambdas[7].item() == pytest.approx(mu * 1.5)
    # step 2, same epoch: positive id 4 (q = max(0, 1 - (1 - 0.2)) = 0.2); id 7 is not in the batch
    step(reg, [1.0, 0.2], [1, 0], [4, 9])
    assert reg.lambdas[4].item() == pytest.approx(mu * 0.2)
    assert reg.lambdas[7].item() == pytest.approx(mu * 1.5)
    # next epoch: id 7 again (score 0 vs 3): q = 4; the loss uses lambda_7 = 0.75, then lambda_7 += 2
    reg.on_train_epoch_start(1)
    t3 = step(reg, [3.0, 0.0], [0, 1], [5, 7])
    assert t3.item() == pytest.approx((mu * 16 / 2 + 0.75 * 4) / 1)
    assert reg.lambdas[7].item() == pytest.approx(mu * (1.5 + 4.0))
    assert reg.lambdas[[2, 3, 5, 9]].tolist() == [0.0] * 4  # negatives own no multiplier
    assert reg.seen.nonzero().flatten().tolist() == [4, 7]


def test_epoch_log_statistics():
    reg = ALMRegularizer(num_sample_ids=10, mu0=0.5, delta=1.0)
    reg.on_train_epoch_start(0)
    step(reg, [0.0, 0.5, -2.0], [1, 0, 0], [7, 2, 3])  # q_7 = 1.5
    step(reg, [3.0, 0.1], [1, 0], [4, 9])  # q_4 = 0: satisfied
    step(reg, [1.0, 2.0], [1, 1], [1, 6])  # no negatives: not counted, lambda unchanged
    log = {k: v.item() for k, v in reg.epoch_log().items()}
    assert log["mu"] == pytest.approx(0.5) and log["active"] == 1.0
    assert log["violation_mean"] == pytest.approx(1.5 / 2)
    assert log["satisfied_frac"] == pytest.approx(0.5)
    assert log["lambda_max"] == pytest.approx(0.75)
    assert log["lambda_mean"] == pytest.approx(0.75 / 4)  # ids 1, 4, 6, 7 own a constraint
    reg.on_train_epoch_start(1)
    assert reg.epoch_log()["violation_mean"].item() == 0.0


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0]])
def test_batch_with_one_class_contributes_zero(labels):
    reg = ALMRegularizer(num_sample_ids=5, mu0=1.0, delta=1.0, lambda0=0.3)
    term = step(reg, [0.1, -0.4, 0.9], labels, [0, 1, 2])
    assert term.item() == 0.0
    assert reg.lambdas.tolist() == pytest.approx([0.3] * 5)
    assert reg.epoch_log()["satisfied_frac"].item() == 0.0


def test_state_dict_round_trip():
    reg = ALMRegularizer(num_sample_ids=8, mu0=0.5, delta=1.0)
    step(reg, [0.0, 0.5, 2.0], [1, 0, 1], [3, 1, 6])
    reg.on_validation_end(0.8)
    reg.on_validation_end(0.7)
    buf = io.BytesIO()
    torch.save(reg.state_dict(), buf)
    assert set(reg.state_dict()) == {"lambdas", "seen", "mu", "ref_metric", "mu_validations", "mu_frozen"}
    fresh = ALMRegularizer(num_sample_ids=8, mu0=0.5, delta=1.0)
    fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    for name in ("lambdas", "seen", "mu", "ref_metric", "mu_validations", "mu_frozen"):
        assert torch.equal(getattr(fresh, name), getattr(reg, name)), name
    assert fresh.mu.item() == pytest.approx(1.0) and fresh.lambdas[3].item() == pytest.approx(0.75)


def test_a_checkpoint_with_the_old_name_ref_auc_still_loads():
    reg = ALMRegularizer(num_sample_ids=4, mu0=0.5, delta=1.0)
    old = dict(reg.state_dict())
    old["ref_auc"] = torch.tensor(0.8125, dtype=torch.float64)
    del old["ref_metric"]
    reg.load_state_dict(old)          # strict: no missing or unexpected key
    assert reg.ref_metric.item() == 0.8125


# -- mu schedule and warm-up ------------------------------------------------------------------
def run_schedule(aucs, **kwargs):
    reg = ALMRegularizer(num_sample_ids=1, **kwargs)
    mus = []
    for auc in aucs:
        reg.on_validation_end(auc)
        mus.append(reg.mu.item())
    return mus


AUCS = [0.50, 0.60, 0.55, 0.55, 0.70, 0.60, 0.50, 0.40, 0.45]


def test_mu_schedule_follows_algorithm_1():
    # first value only sets the reference; mu grows when the AUC is below the previous one
    mus = run_schedule(AUCS, mu0=1.0, rho=2.0, mu_cap=8.0)
    assert mus == [1, 1, 2, 2, 2, 4, 8, 8, 8]


def test_mu_schedule_variants():
    # against the best so far (0.6, then 0.7): every validation below the best grows mu
    assert run_schedule(AUCS, mu0=1.0, rho=3.0, mu_cap=1e9, mu_compare="best") == [1, 1, 3, 9, 9, 27, 81, 243,
                                                                                      729]
    # with a margin (official code: 0.05), only drops larger than the margin count
    assert run_schedule(AUCS, mu0=1.0, rho=2.0, mu_cap=1e9, mu_margin=0.06) == [1, 1, 1, 1, 1, 2, 4, 8, 8]


# The official rule (salusanga/alm-dnn, utils/train_test_CIFAR.py, ALM from epoch 0), by hand:
# epoch 0 ignored; epoch 1 sets the reference; epoch 2 grows mu whatever the AUC; from epoch 3 on,
# mu grows only when the AUC is more than 0.05 below the previous epoch's.
OFFICIAL = [
    # (val AUC, mu after this epoch): mu0 = 1, rho = 2, no effective cap
    (0.60, 1),   # epoch 0: ignored
    (0.70, 1),   # epoch 1: reference 0.70
    (0.72, 2),   # epoch 2: unconditional growth although the AUC improved
    (0.69, 2),   # drop 0.03 <= 0.05
    (0.60, 4),   # drop 0.09
    (0.58, 4),   # drop 0.02
    (0.50, 8),   # drop 0.08
    (0.80, 8),   # rise
    (0.70, 16),  # drop 0.10
    (0.66, 16),  # drop 0.04
]


def test_official_mu_schedule_on_a_scripted_sequence():
    mus = run_schedule([a for a, _ in OFFICIAL], mu0=1.0, rho=2.0, mu_cap=1e9, mu_schedule="official")
    assert mus == [mu for _, mu in OFFICIAL]
    # Algorithm 1 on the same sequence (every drop counts, the first validation is the reference)
    paper = run_schedule([a for a, _ in OFFICIAL], mu0=1.0, rho=2.0, mu_cap=1e9)
    assert paper == [1, 1, 1, 2, 4, 8, 16, 16, 32, 64]


def test_official_mu_schedule_margin_is_a_strict_drop_of_more_than_0_05():
    assert ALMRegularizer(num_sample_ids=1, mu_schedule="official").mu_margin == 0.05
    assert ALMRegularizer(num_sample_ids=1).mu_margin == 0.0
    # 0.85 -> 0.80 is exactly 0.05 lower: not a drop; 0.80 -> 0.7499 is
    assert run_schedule([0.5, 0.9, 0.85, 0.80, 0.7499], mu0=1.0, rho=2.0, mu_cap=1e9,
                        mu_schedule="official") == [1, 1, 2, 2, 4]


def test_official_mu_schedule_stops_at_the_cap_and_at_auc_one():
    # cap 4: growth to 8 would pass it, so mu is set to 4 and never changes again
    assert run_schedule([0.5, 0.6, 0.55, 0.40, 0.30, 0.10, 0.01], mu0=1.0, rho=2.0, mu_cap=4.0,
                        mu_schedule="official") == [1, 1, 2, 4, 4, 4, 4]
    # cap 3: the official order checks the cap before the drop, so mu jumps to 3 without a drop
    assert run_schedule([0.5, 0.6, 0.55, 0.56, 0.10], mu0=1.0, rho=2.0, mu_cap=3.0,
                        mu_schedule="official") == [1, 1, 2, 3, 3]
    # validation AUC 1.0 from epoch 2 on freezes mu (at epoch 2: before its unconditional growth)
    assert run_schedule([0.9, 0.95, 1.0, 0.5, 0.1], mu0=1.0, rho=2.0, mu_cap=1e9,
                        mu_schedule="official") == [1, 1, 1, 1, 1]
    # AUC 1.0 at epoch 1 only sets the reference
    assert run_schedule([0.9, 1.0, 0.99, 0.5], mu0=1.0, rho=2.0, mu_cap=1e9,
                        mu_schedule="official") == [1, 1, 2, 4]


def test_official_mu_schedule_after_warm_up_has_no_unconditional_growth():
    # the official continue-training branch: the first ALM epoch sets the reference, then drops only
    reg = ALMRegularizer(num_sample_ids=1, mu0=1.0, rho=2.0, mu_cap=1e9, warmup_epochs=2,
                         mu_schedule="official")
    mus = []
    for epoch, auc in enumerate([0.9, 0.1, 0.70, 0.68, 0.60, 0.61]):
        reg.on_train_epoch_start(epoch)
        reg.on_validation_end(auc)
        mus.append(reg.mu.item())
    assert mus == [1, 1, 1, 1, 2, 2]


def test_official_mu_schedule_resumes_from_a_checkpoint():
    aucs = [a for a, _ in OFFICIAL]
    reg = ALMRegularizer(num_sample_ids=1, mu0=1.0, rho=2.0, mu_cap=1e9, mu_schedule="official")
    for auc in aucs[:3]:
        reg.on_validation_end(auc)
    fresh = ALMRegularizer(num_sample_ids=1, mu0=1.0, rho=2.0, mu_cap=1e9, mu_schedule="official")
    fresh.load_state_dict(reg.state_dict())
    mus = []
    for auc in aucs[3:]:
        fresh.on_validation_end(auc)
        mus.append(fresh.mu.item())
    assert mus == [mu for _, mu in OFFICIAL[3:]]


def test_mu_schedule_settings_are_checked():
    with pytest.raises(HightprError, match="mu_schedule"):
        ALMRegularizer(num_sample_ids=1, mu_schedule="algorithm1")
    with pytest.raises(HightprError, match="mu_compare=best"):
        ALMRegularizer(num_sample_ids=1, mu_schedule="official", mu_compare="best")


def test_default_mu_cap():
    assert default_mu_cap(1e-4, 2.0) == pytest.approx(1e-4 * 32)
    assert default_mu_cap(1e-3, 3.0) == pytest.approx(1e-3 * 27)
    reg = ALMRegularizer(num_sample_ids=1, mu0=1e-5, rho=2.0)
    assert reg.mu_cap == pytest.approx(3.2e-4)
    falling = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    assert run_schedule(falling, mu0=1e-5, rho=2.0)[-1] == pytest.approx(3.2e-4)
    with pytest.raises(HightprError):
        ALMRegularizer(num_sample_ids=1, mu0=1.0, mu_cap=0.5)


def test_warmup_keeps_the_constraint_off():
    reg = ALMRegularizer(num_sample_ids=4, mu0=1.0, delta=1.0, warmup_epochs=2)
    for epoch in (0, 1):
        reg.on_train_epoch_start(epoch)
        term = step(reg, [0.0, 1.0], [1, 0], [0, 1])
        assert term.item() == 0.0 and term.requires_grad
        reg.on_validation_end(0.9 - 0.1 * epoch)
        assert reg.epoch_log()["active"].item() == 0.0
    assert reg.lambdas.abs().sum().item() == 0.0 and reg.mu.item() == 1.0
    assert math.isnan(reg.ref_metric.item())
    reg.on_train_epoch_start(2)
    assert step(reg, [0.0, 1.0], [1, 0], [0, 1]).item() == pytest.approx(1.0 * 2.0**2 / 2)
    assert reg.lambdas[0].item() == pytest.approx(2.0)
    reg.on_validation_end(0.5)  # first active validation: reference only
    reg.on_validation_end(0.4)
    assert reg.mu.item() == pytest.approx(2.0)


# -- multi-class ------------------------------------------------------------------------------
HAND_LOGITS = torch.tensor([
    [1.2, 2.2, 2.0],  # a, critical class 2, id 10
    [1.5, 0.0, 1.8],  # b, class 0
    [0.2, 2.5, 0.5],  # c, class 1
    [0.0, 0.0, 1.0],  # d, critical class 2, id 13
])
HAND_Y = torch.tensor([2, 0, 1, 2])


@pytest.mark.parametrize("variant, expected", [("m1", 0.26), ("m2", 0.36)])
def test_multiclass_hand_computation(variant, expected):
    """delta = 0.5, mu = 1, lambda_a = 0.5, lambda_d = 0; |P||N| = 2*2 = 4.
    Eq. 6: q_a = max(0, .5-(2-1.8)) + max(0, .5-(2-.5)) = 0.3; q_d = max(0, .5-(1-1.8)) + 0 = 1.3.
    Eq. 7 adds, for a: max(0, 1.2-1.5+.5) + max(0, 2.2-2.5+.5) = 0.4 (q_a = 0.7); for d: 0 + 0.
    m1: (0.5 (0.09 + 1.69) + 0.5*0.3) / 4 = 0.26; m2: (0.5 (0.49 + 1.69) + 0.5*0.7) / 4 = 0.36."""
    reg = MultiClassALMRegularizer(num_sample_ids=20, critical_classes=[2], variant=variant, mu0=1.0,
                                   delta=0.5)
    reg.lambdas[10] = 0.5
    logits = HAND_LOGITS.clone().requires_grad_(True)
    ids = torch.tensor([10, 11, 12, 13])
    term = reg(logits, logits[:, 2], HAND_Y, ids)
    assert term.item() == pytest.approx(expected)
    term.backward()
    reg.after_step({}, logits.detach(), logits.detach()[:, 2])
    q_a = 0.3 if variant == "m1" else 0.7
    assert reg.lambdas[[10, 11, 12, 13]].tolist() == pytest.approx([0.5 + q_a, 0.0, 0.0, 1.3])


@pytest.mark.parametrize("variant", ["m1", "m2"])
@pytest.mark.parametrize("score", ["logit", "prob"])
def test_multiclass_several_critical_classes_match_loops(variant, score):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(24, 6, generator=g)
    y = torch.randint(0, 6, (24,), generator=g)
    y[:3] = torch.tensor([4, 5, 0])
    critical = [4, 5]
    reg = MultiClassALMRegularizer(num_sample_ids=24, critical_classes=critical, variant=variant, mu0=0.3,
                                   delta=0.1, score=score)
    reg.lambdas.copy_(torch.rand(24, generator=g))
    ids = torch.arange(24)
    out = logits.softmax(dim=1) if score == "prob" else logits
    ref = loop_reference(out, y, critical, reg.lambdas, 0.3, 0.1, variant)
    assert reg(logits, logits[:, 4], y, ids).item() == pytest.approx(ref, rel=1e-5)


def test_multiclass_single_critical_class_reduces_to_binary():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(16, 4, generator=g)
    y = torch.randint(0, 4, (16,), generator=g)
    reg = MultiClassALMRegularizer(num_sample_ids=16, critical_classes=[3], mu0=0.2, delta=0.1)
    crit = y == 3
    ref, _ = alm_penalty(logits[crit, 3], logits[~crit, 3], torch.zeros(int(crit.sum())), 0.2, 0.1)
    assert reg(logits, logits[:, 3], y, torch.arange(16)).item() == pytest.approx(ref.item(), rel=1e-6)


def test_multiclass_without_critical_samples_is_zero():
    reg = MultiClassALMRegularizer(num_sample_ids=4, critical_classes=[2], variant="m2", mu0=1.0)
    logits = torch.randn(3, 3, requires_grad=True)
    term = reg(logits, logits[:, 2], torch.tensor([0, 1, 0]), torch.arange(3))
    assert term.item() == 0.0
    term.backward()


# -- configs and a real run -------------------------------------------------------------------
@pytest.mark.parametrize("name, cls, variant", [("alm", ALMRegularizer, None),
                                                ("alm_m1", MultiClassALMRegularizer, "m1"),
                                                ("alm_m2", MultiClassALMRegularizer, "m2")])
def test_configs_instantiate(name, cls, variant):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"reg={name}"])
        reg = instantiate(cfg.reg, num_sample_ids=50)
        assert type(reg) is cls and reg.mu_cap == pytest.approx(default_mu_cap(reg.mu0, reg.rho))
        if variant:
            assert reg.variant == variant and reg.critical.tolist() == [1]
            cfg = compose("config", overrides=[f"reg={name}", "+dataset.critical_classes=[8,9]"])
            assert instantiate(cfg.reg, num_sample_ids=5).critical.tolist() == [8, 9]


def test_config_selects_the_mu_schedule():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        reg = instantiate(compose("config", overrides=["reg=alm"]).reg, num_sample_ids=5)
        assert (reg.mu_schedule, reg.mu_margin, reg.mu_compare) == ("paper", 0.0, "previous")
        cfg = compose("config", overrides=["reg=alm_m1", "reg.mu_schedule=official"])
        reg = instantiate(cfg.reg, num_sample_ids=5)
        assert (reg.mu_schedule, reg.mu_margin) == ("official", 0.05)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_steps_on_cuda_without_host_sync():
    dev = torch.device("cuda")
    reg = MultiClassALMRegularizer(num_sample_ids=1000, critical_classes=[1, 2], variant="m2", mu0=0.1)
    reg = reg.to(dev)
    logits = torch.randn(64, 5, device=dev, requires_grad=True)
    y = torch.randint(0, 5, (64,), device=dev)
    ids = torch.randperm(1000, device=dev)[:64]
    reg.on_train_epoch_start(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        term = reg(logits, logits[:, 1], y, ids)
        term.backward()
        reg.after_step({}, logits.detach(), logits.detach()[:, 1])
        logs = reg.epoch_log()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(v.device.type == "cuda" for v in logs.values())
    assert reg.lambdas.device.type == "cuda" and reg.lambdas.sum().item() > 0


def test_training_run_logs_and_checkpoints_alm_state(train):
    res = train("reg=alm", "reg.mu0=0.1", "reg.delta=1.0")
    assert res.returncode == 0, res.stderr[-3000:]
    log = pd.read_csv(res.run_dir / "csv" / "metrics.csv")
    keys = ["reg/mu", "reg/lambda_mean", "reg/lambda_max", "reg/violation_mean", "reg/satisfied_frac",
            "reg/active"]
    assert set(keys) <= set(log.columns)
    rows = log.dropna(subset=["reg/mu"])
    assert len(rows) == 2 and (rows["reg/active"] == 1).all()
    assert (rows["reg/lambda_max"] > 0).all() and (rows["reg/violation_mean"] > 0).all()
    # metrics.json records how active the term was: |term| / base per epoch, from the same log
    train_rows = log.dropna(subset=["train/reg_term"])
    ratios = (train_rows["train/reg_term"].abs() / train_rows["train/base_loss"]).tolist()
    np.testing.assert_allclose(train_rows["train/reg_ratio"], ratios, rtol=1e-5)   # logged per epoch too
    act = res.metrics["regularizer_activity"]
    assert act["epochs"] == 2 and act["ratio_max"] == pytest.approx(max(ratios))
    assert act["ratio_last"] == pytest.approx(ratios[-1])
    assert act["mu_last"] == pytest.approx(rows["reg/mu"].iloc[-1])
    assert act["active"] == (max(ratios) >= 0.01)

    ckpt = torch.load(res.metrics["best_checkpoint"], map_location="cpu", weights_only=False)
    state = {k.removeprefix("reg."): v for k, v in ckpt["state_dict"].items() if k.startswith("reg.")}
    assert set(state) == {"lambdas", "seen", "mu", "ref_metric", "mu_validations", "mu_frozen"}
    assert state["lambdas"].max() > 0 and state["seen"].any()
    assert not ((state["lambdas"] > 0) & ~state["seen"]).any()  # only constraint owners carry one
    fresh = ALMRegularizer(num_sample_ids=len(state["lambdas"]), mu0=0.1, delta=1.0)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.lambdas, state["lambdas"]) and torch.equal(fresh.seen, state["seen"])


def test_training_run_with_warmup(train):
    res = train("reg=alm", "reg.mu0=0.1", "reg.warmup_epochs=1")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = pd.read_csv(res.run_dir / "csv" / "metrics.csv").dropna(subset=["reg/mu"])
    assert rows["reg/active"].tolist() == [0.0, 1.0]
    assert rows["reg/lambda_max"].tolist()[0] == 0.0 and rows["reg/lambda_max"].tolist()[1] > 0
