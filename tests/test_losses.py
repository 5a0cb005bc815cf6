"""Base losses: closed-form values, gradient signs, count-derived weights, edge batches, training runs.

Every expected value is written out here with plain math/numpy from the papers' formulas; the
implementation's helpers are never called to build an expectation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

import hightpr.losses
from hightpr.errors import HightprError
from hightpr.losses import (
    BCE,
    CE,
    LDAM,
    MSFE,
    AsymmetricFocalBCE,
    AsymmetricMarginBCE,
    BaseLoss,
    ClassBalancedBCE,
    ClassBalancedCE,
    FocalCE,
    MiniBatchAUC,
    SymmetricFocalBCE,
    SymmetricMarginBCE,
    WeightedBCE,
)
from hightpr.module import HighTPRModule
from tests.conftest import CONF_PATH

CONF_LOSS = CONF_PATH / "loss"
LOSS_NAMES = sorted(p.stem for p in CONF_LOSS.glob("*.yaml"))  # every `loss=<name>`
COUNTS = [300, 20]  # [negatives, positives]: class ratio N = 15
S = [2.0, -1.0, 0.5, -0.3, 1.2]  # scores
Y = [1, 0, 0, 1, 0]  # labels
BINARY = ["bce", "s_ml", "a_ml", "s_fl", "a_fl", "wbce", "cbbce", "msfe", "mbauc"]
MULTI = ["ce", "fl", "cbce", "ldam"]


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def ce_np(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample softmax cross-entropy, -log(exp z_y / sum_c exp z_c)."""
    z = np.asarray(z, dtype=np.float64)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return -np.log(p[np.arange(len(y)), y])


def value(loss: torch.nn.Module, scores=S, labels=Y) -> float:
    """The loss on a 1-logit head (binary losses) or the 2-logit head [0, s] (the others)."""
    s = torch.tensor(scores, dtype=torch.float64)
    logits = s[:, None] if type(loss).num_logits == 1 else torch.stack([torch.zeros_like(s), s], 1)
    return float(loss(logits, torch.tensor(labels, dtype=torch.float64)))


def loss_class(name: str) -> type[BaseLoss]:
    """The class `loss=<name>` builds: its config's `_target_`, as `hightpr.build.build_loss` reads it."""
    return get_class(OmegaConf.load(CONF_LOSS / f"{name}.yaml")._target_)


def make(name: str, counts=COUNTS, **hp) -> torch.nn.Module:
    return loss_class(name)(class_counts=counts, **hp)


# -- closed forms: binary ------------------------------------------------------------------------
def test_bce_closed_form():
    terms = [-math.log(sig(s)) if y else -math.log(1 - sig(s)) for s, y in zip(S, Y, strict=True)]
    assert value(BCE()) == pytest.approx(sum(terms) / 5, rel=1e-9)


def test_s_ml_closed_form():
    m = 0.7
    terms = [-math.log(sig(s - m)) if y else -math.log(1 - sig(s + m)) for s, y in zip(S, Y, strict=True)]
    assert value(SymmetricMarginBCE(m=m)) == pytest.approx(sum(terms) / 5, rel=1e-9)


def test_a_ml_closed_form():
    m = 2.0
    terms = [-math.log(sig(s - m)) if y else -math.log(1 - sig(s)) for s, y in zip(S, Y, strict=True)]
    assert value(AsymmetricMarginBCE(m=m)) == pytest.approx(sum(terms) / 5, rel=1e-9)


def test_s_fl_closed_form():
    g = 2.0
    terms = [-((1 - sig(s)) ** g) * math.log(sig(s)) if y else -(sig(s) ** g) * math.log(1 - sig(s))
             for s, y in zip(S, Y, strict=True)]
    assert value(SymmetricFocalBCE(gamma=g)) == pytest.approx(sum(terms) / 5, rel=1e-9)


def test_a_fl_closed_form():
    g = 0.5
    terms = [-math.log(sig(s)) if y else -(sig(s) ** g) * math.log(1 - sig(s))
             for s, y in zip(S, Y, strict=True)]
    assert value(AsymmetricFocalBCE(gamma=g)) == pytest.approx(sum(terms) / 5, rel=1e-9)


def test_focal_with_gamma_zero_is_bce():
    assert value(SymmetricFocalBCE(gamma=0)) == pytest.approx(value(BCE()), rel=1e-12)
    assert value(AsymmetricFocalBCE(gamma=0)) == pytest.approx(value(BCE()), rel=1e-12)


def test_wbce_closed_form():
    c = 1 / 3
    w_pos = c * 300 / 20  # c * N
    terms = [-w_pos * math.log(sig(s)) if y else -math.log(1 - sig(s)) for s, y in zip(S, Y, strict=True)]
    assert value(WeightedBCE(c=c, class_counts=COUNTS)) == pytest.approx(sum(terms) / 5, rel=1e-9)


def test_cbbce_closed_form():
    b = 0.99
    raw = [(1 - b) / (1 - b**300), (1 - b) / (1 - b**20)]
    raw_terms = [-raw[1] * math.log(sig(s)) if y else -raw[0] * math.log(1 - sig(s))
                 for s, y in zip(S, Y, strict=True)]
    # default: the raw weights of the official ALM code
    assert value(ClassBalancedBCE(beta=b, class_counts=COUNTS)) == pytest.approx(sum(raw_terms) / 5, rel=1e-6)
    w = [2 * r / sum(raw) for r in raw]  # Cui et al.: normalised to sum to the number of classes
    terms = [-w[1] * math.log(sig(s)) if y else -w[0] * math.log(1 - sig(s))
             for s, y in zip(S, Y, strict=True)]
    normalised = ClassBalancedBCE(beta=b, normalize=True, class_counts=COUNTS)
    assert value(normalised) == pytest.approx(sum(terms) / 5, rel=1e-6)


@pytest.mark.parametrize(("beta", "expected"), [
    # (1 - beta) / (1 - beta^n) for n = 4410 negatives and n = 44 positives, worked out to 40 digits:
    # 0.99^4410 = 5.64e-20, 0.99^44 = 0.6426116021; 0.9999^4410 = 0.6433785190, 0.9999^44 = 0.9956094468
    (0.99, [0.0100000000000000000006, 0.0279807628292692526]),
    (0.9999, [0.000280409356476220640, 0.0227761730131843120]),
])
def test_cbbce_raw_weights_by_hand(beta, expected):
    cb = ClassBalancedBCE(beta=beta, class_counts=[4410, 44])
    np.testing.assert_allclose(cb.class_weight.numpy(), expected, rtol=1e-6)
    # normalize=true only rescales them to sum to 2
    cb_norm = ClassBalancedBCE(beta=beta, normalize=True, class_counts=[4410, 44])
    normalised = np.array(expected) * 2 / sum(expected)
    np.testing.assert_allclose(cb_norm.class_weight.numpy(), normalised, rtol=1e-6)


def test_cbbce_config_uses_the_raw_weights():
    cfg = OmegaConf.load(CONF_LOSS / "cbbce.yaml")
    assert cfg.normalize is False


def test_cbce_weight_scale_cancels_in_its_weighted_mean():
    # CB-CE is reduced by sum(w_y l) / sum(w_y): raw or normalised weights give the same value
    b = 0.999
    raw = np.array([(1 - b) / (1 - b**n) for n in COUNTS3])[Y3]
    expected = (raw * ce_np(Z3, Y3)).sum() / raw.sum()
    assert mc_value(ClassBalancedCE(beta=b, class_counts=COUNTS3)) == pytest.approx(expected, rel=1e-6)


def test_msfe_closed_form():
    p = [sig(s) for s in S]
    fne = np.mean([0.5 * (1 - pi) ** 2 for pi, y in zip(p, Y, strict=True) if y])
    fpe = np.mean([0.5 * pi**2 for pi, y in zip(p, Y, strict=True) if not y])
    assert value(MSFE()) == pytest.approx(fpe**2 + fne**2, rel=1e-9)
    # MFE = FPE + FNE = the mean of the two per-class mean squared errors
    mse_pos = np.mean([(1 - pi) ** 2 for pi, y in zip(p, Y, strict=True) if y])
    mse_neg = np.mean([pi**2 for pi, y in zip(p, Y, strict=True) if not y])
    assert value(MSFE(squared=False)) == pytest.approx((mse_pos + mse_neg) / 2, rel=1e-9)


def test_mbauc_closed_form():
    pos = [s for s, y in zip(S, Y, strict=True) if y]
    neg = [s for s, y in zip(S, Y, strict=True) if not y]
    pairs = [(1 - (sig(a) - sig(b))) ** 2 for a in pos for b in neg]
    assert value(MiniBatchAUC()) == pytest.approx(sum(pairs) / 6, rel=1e-9)
    pairs_logit = [(1 - (a - b)) ** 2 for a in pos for b in neg]
    assert value(MiniBatchAUC(score="logit")) == pytest.approx(sum(pairs_logit) / 6, rel=1e-9)


@pytest.mark.parametrize("name", BINARY)
def test_binary_losses_on_a_two_logit_head_use_z1_minus_z0(name):
    loss = make(name)
    s = torch.tensor(S, dtype=torch.float64)
    y = torch.tensor(Y, dtype=torch.float64)
    two = torch.stack([0.3 - s / 2, 0.3 + s / 2], 1)  # z1 - z0 = s, shifted: only the difference counts
    assert float(loss(two, y)) == pytest.approx(float(loss(s[:, None], y)), rel=1e-9)
    assert float(loss(s, y)) == pytest.approx(float(loss(s[:, None], y)), rel=1e-12)  # 1-d logits


# -- closed forms: multi-class -------------------------------------------------------------------
Z3 = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0], [0.0, -2.0, 3.0]])
Y3 = np.array([0, 2, 1, 2])
COUNTS3 = [500, 50, 5]


def mc_value(loss: torch.nn.Module, z=Z3, y=Y3) -> float:
    return float(loss(torch.tensor(z, dtype=torch.float64), torch.tensor(y)))


def test_ce_closed_form():
    assert mc_value(CE()) == pytest.approx(ce_np(Z3, Y3).mean(), rel=1e-9)


def test_fl_closed_form():
    g = 2.0
    ce = ce_np(Z3, Y3)
    p_y = np.exp(-ce)
    assert mc_value(FocalCE(gamma=g)) == pytest.approx(np.mean((1 - p_y) ** g * ce), rel=1e-9)


def test_cbce_closed_form():
    b = 0.999
    raw = np.array([(1 - b) / (1 - b**n) for n in COUNTS3])
    w = raw / raw.sum() * 3
    wy = w[Y3]
    expected = (wy * ce_np(Z3, Y3)).sum() / wy.sum()
    assert mc_value(ClassBalancedCE(beta=b, class_counts=COUNTS3)) == pytest.approx(expected, rel=1e-6)


def test_ldam_closed_form_multiclass():
    max_m, s = 0.5, 30.0
    m = np.array([n ** -0.25 for n in COUNTS3])
    m = m * max_m / m.max()
    cos = np.tanh(Z3)  # cosine-like logits in (-1, 1)
    shifted = cos.copy()
    shifted[np.arange(4), Y3] -= m[Y3]
    expected = ce_np(s * shifted, Y3).mean()
    assert mc_value(LDAM(max_m=max_m, s=s, class_counts=COUNTS3), z=cos) == pytest.approx(expected, rel=1e-6)


def test_ldam_closed_form_binary():
    # binary = 2 classes [negatives, positives]: the rare positives get the larger margin
    n_neg, n_pos = COUNTS
    m_pos = 0.5
    m_neg = 0.5 * (n_neg / n_pos) ** -0.25
    z = np.array([[0.2, 0.6], [0.1, -0.4], [-0.3, 0.3]])
    y = np.array([1, 0, 0])
    shifted = z - np.array([[0, m_pos], [m_neg, 0], [m_neg, 0]])
    expected = ce_np(10.0 * shifted, y).mean()
    loss = LDAM(s=10.0, class_counts=COUNTS)
    got = float(loss(torch.tensor(z), torch.tensor(y, dtype=torch.float32)))  # binary labels arrive as float
    assert got == pytest.approx(expected, rel=1e-6)


def test_ldam_deferred_reweighting():
    b = 0.9999
    raw = np.array([(1 - b) / (1 - b**n) for n in COUNTS3])
    w = (raw / raw.sum() * 3)[Y3]
    m = np.array([n ** -0.25 for n in COUNTS3])
    m = m * 0.5 / m.max()
    cos = np.tanh(Z3)
    shifted = cos.copy()
    shifted[np.arange(4), Y3] -= m[Y3]
    per_sample = ce_np(30.0 * shifted, Y3)
    loss = LDAM(drw_epoch=3, class_counts=COUNTS3)
    for epoch, expected in [(0, per_sample.mean()), (2, per_sample.mean()),
                            (3, (w * per_sample).sum() / w.sum()), (10, (w * per_sample).sum() / w.sum())]:
        loss.on_train_epoch_start(epoch)
        assert mc_value(loss, z=cos) == pytest.approx(expected, rel=1e-6), epoch


def test_module_forwards_the_epoch_to_the_loss():
    loss = LDAM(drw_epoch=0, class_counts=COUNTS)
    module = HighTPRModule(model=torch.nn.Linear(4, 2), loss=loss, optimizer=torch.optim.SGD)
    assert not loss.reweight
    module.on_train_epoch_start()  # current_epoch is 0 outside a Trainer
    assert loss.reweight


def test_ce_family_on_binary_labels_matches_bce():
    # a 2-logit softmax CE on [0, s] is BCE on s
    assert value(CE()) == pytest.approx(value(BCE()), rel=1e-9)
    assert value(FocalCE(gamma=2)) == pytest.approx(value(SymmetricFocalBCE(gamma=2)), rel=1e-9)


# -- S-ML, A-ML, S-FL, A-FL on a multi-class head (ALM appendix A.2, Table 7) ---------------------
# 3 samples x 3 classes; class 2 is the rare one (counts [100, 30, 5]); m = 0.5, gamma = 2.
Z_HAND = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.3], [0.2, -0.4, 0.1]]
Y_HAND = [0, 1, 2]
COUNTS_HAND = [100, 30, 5]
# Worked out by hand (math.exp / math.log on each row), CE(z, y) = -log(e^{z_y} / sum_c e^{z_c}):
#   S-ML, true logit minus m:  a: CE([1.5, 0.5, -1.0], 0) = 0.3715390319
#                              b: CE([0.0, 0.5, 0.3], 1)  = 0.8859393177
#                              c: CE([0.2, -0.4, -0.4], 2) = 1.3408049286     mean 0.8660944261
#   A-ML, margin on class 2 only: a: CE(a, 0) = 0.2413112967, b: CE(b, 1) = 0.6229740119,
#                              c: 1.3408049286 (as S-ML)                      mean 0.7350300791
#   A-FL, p_y = 0.7855970346 (a), 0.5363469611 (b), 0.3687721423 (c):
#                              a: (1 - p)^2 CE = 0.0110927501, b: 0.1339233028,
#                              c (rare, plain CE): 0.9975763263               mean 0.3808641264
HAND_VALUES = {"s_ml": 0.8660944261, "a_ml": 0.7350300791, "a_fl": 0.3808641264}


def hand_value(name: str, **hp) -> float:
    loss = make(name, counts=COUNTS_HAND, **({"m": 0.5} if "ml" in name else {"gamma": 2.0}), **hp)
    return float(loss(torch.tensor(Z_HAND, dtype=torch.float64), torch.tensor(Y_HAND)))


@pytest.mark.parametrize("name", sorted(HAND_VALUES))
def test_margin_and_focal_losses_on_a_multiclass_head_by_hand(name):
    assert hand_value(name) == pytest.approx(HAND_VALUES[name], abs=1e-9)
    if name.startswith("a_"):  # the rare class given explicitly: the same
        assert hand_value(name, rare_classes=[2]) == pytest.approx(HAND_VALUES[name], abs=1e-9)


def test_asymmetric_losses_follow_the_given_rare_classes():
    # rare = class 0: A-ML shifts sample a only (CE([1.5, 0.5, -1.0], 0) = 0.3715390319)
    # (b and c pay plain CE: 0.6229740119 and CE([0.2, -0.4, 0.1], 2) = 0.9975763263)
    expected = (0.3715390319 + 0.6229740119 + 0.9975763263) / 3
    assert hand_value("a_ml", rare_classes=[0]) == pytest.approx(expected, abs=1e-9)
    # every class rare: A-ML is S-ML and A-FL is CE
    assert hand_value("a_ml", rare_classes=[0, 1, 2]) == pytest.approx(HAND_VALUES["s_ml"], abs=1e-9)
    z, y = torch.tensor(Z_HAND, dtype=torch.float64), torch.tensor(Y_HAND)
    assert hand_value("a_fl", rare_classes=[0, 1, 2]) == pytest.approx(float(CE()(z, y)), rel=1e-12)


def test_symmetric_focal_on_a_multiclass_head_is_fl():
    z, y = torch.tensor(Z_HAND, dtype=torch.float64), torch.tensor(Y_HAND)
    expected = float(FocalCE(gamma=2.0)(z, y))
    assert float(SymmetricFocalBCE(gamma=2.0)(z, y)) == pytest.approx(expected, rel=1e-12)


def test_rare_classes_default_to_the_smallest_training_class():
    assert make("a_ml", counts=[4900, 490, 49]).rare == [2]
    assert make("a_fl", counts=[500, 5, 5, 50]).rare == [1, 2]  # ties: all of them
    assert make("a_ml").rare is None  # two-class data: the binary form favours y = 1
    with pytest.raises(HightprError, match="rare classes"):
        AsymmetricMarginBCE()(torch.zeros(2, 3), torch.tensor([0, 2]))
    with pytest.raises(HightprError, match="loss.rare_classes"):
        make("a_fl", counts=COUNTS_HAND, rare_classes=[3])


def test_heads_of_the_losses_with_both_forms():
    for name in ("s_ml", "a_ml", "s_fl", "a_fl"):
        assert loss_class(name).logits_for(2) == 1 and loss_class(name).logits_for(10) == 10
    for name in ("bce", "wbce", "cbbce", "msfe", "mbauc"):
        assert loss_class(name).logits_for(10) == 1
    for name in MULTI:
        assert loss_class(name).logits_for(2) == 2 and loss_class(name).logits_for(10) == 10


@pytest.mark.parametrize("name", ["s_ml", "a_ml", "s_fl", "a_fl"])
def test_multiclass_forms_raise_the_true_logit(name):
    z = torch.tensor(np.tanh(Z3), requires_grad=True)
    (grad,) = torch.autograd.grad(make(name, counts=COUNTS3)(z, torch.tensor(Y3)), z)
    true = torch.nn.functional.one_hot(torch.tensor(Y3), 3).bool()
    assert (grad[true] < 0).all() and (grad[~true] > 0).all(), grad


@pytest.mark.parametrize("name", ["s_ml", "a_ml", "s_fl", "a_fl"])
def test_multiclass_forms_on_edge_batches(name):
    loss = make(name, counts=COUNTS_HAND)
    extreme = torch.tensor([[1e4, -1e4, 0.0], [0.0, 1e4, -1e4], [-1e4, 0.0, 1e4]])
    batches = [(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)), (extreme, torch.tensor([1, 0, 2]))]
    for z, y in batches:
        z = z.clone().requires_grad_()
        out = loss(z, y)
        (grad,) = torch.autograd.grad(out, z)
        assert torch.isfinite(out) and torch.isfinite(grad).all(), (name, out, grad)
    z = torch.tensor(Z_HAND)
    assert loss(z.bfloat16(), torch.tensor(Y_HAND)).dtype == torch.float32


def test_asymmetric_configs_take_the_datasets_critical_classes():
    with initialize_config_dir(config_dir=str(CONF_PATH), version_base="1.3"):
        for name in ("a_ml", "a_fl"):
            cfg = compose("config", overrides=[f"loss={name}", "dataset=cifar10_lt"])
            assert list(cfg.loss.rare_classes) == [9]
            assert compose("config", overrides=[f"loss={name}"]).loss.rare_classes is None


# -- gradient signs ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BINARY + MULTI)
def test_gradient_pushes_positives_up_and_negatives_down(name):
    gen = torch.Generator().manual_seed(0)
    s = (torch.rand(16, generator=gen, dtype=torch.float64) * 2 - 1).requires_grad_()  # in cosine range
    y = torch.tensor([1, 0, 0, 1] * 4, dtype=torch.float64)
    loss = make(name)
    logits = s[:, None] if type(loss).num_logits == 1 else torch.stack([-s / 2, s / 2], 1)
    (grad,) = torch.autograd.grad(loss(logits, y), s)
    assert (grad[y == 1] < 0).all(), grad
    assert (grad[y == 0] > 0).all(), grad


@pytest.mark.parametrize("name", ["ce", "fl", "cbce", "ldam"])
def test_multiclass_gradient_raises_the_true_logit(name):
    z = torch.tensor(np.tanh(Z3), requires_grad=True)
    (grad,) = torch.autograd.grad(make(name, counts=COUNTS3)(z, torch.tensor(Y3)), z)
    true = torch.nn.functional.one_hot(torch.tensor(Y3), 3).bool()
    assert (grad[true] < 0).all() and (grad[~true] > 0).all(), grad


# -- weights follow the class counts -------------------------------------------------------------
def test_wbce_positive_weight_is_c_times_class_ratio():
    one_pos = ([0.4], [1])
    bce = value(BCE(), *one_pos)
    for counts, c in [([300, 20], 1.0), ([300, 20], 2 / 3), ([4410, 44], 1 / 3), ([100, 100], 1.0)]:
        got = value(WeightedBCE(c=c, class_counts=counts), *one_pos)
        assert got == pytest.approx(c * counts[0] / counts[1] * bce, rel=1e-9)
    one_neg = ([0.4], [0])
    negatives_unweighted = value(WeightedBCE(c=0.5, class_counts=[4410, 44]), *one_neg)
    assert negatives_unweighted == pytest.approx(value(BCE(), *one_neg))


@pytest.mark.parametrize("beta", [0.99, 0.999, 0.9999])
def test_class_balanced_weights_follow_counts(beta):
    counts = [4410, 44]
    raw = np.array([(1 - beta) / (1 - beta**n) for n in counts])
    cb = ClassBalancedBCE(beta=beta, class_counts=counts)
    np.testing.assert_allclose(cb.class_weight.numpy(), raw, rtol=1e-6)
    assert cb.class_weight[1] > cb.class_weight[0]  # the rare positives weigh more
    cb_norm = ClassBalancedBCE(beta=beta, normalize=True, class_counts=counts)
    np.testing.assert_allclose(cb_norm.class_weight.numpy(), raw / raw.sum() * 2, rtol=1e-6)
    cbce = ClassBalancedCE(beta=beta, class_counts=COUNTS3)
    raw3 = np.array([(1 - beta) / (1 - beta**n) for n in COUNTS3])
    np.testing.assert_allclose(cbce.class_weight.numpy(), raw3 / raw3.sum() * 3, rtol=1e-6)
    assert float(cbce.class_weight.sum()) == pytest.approx(3.0)
    assert list(cbce.class_weight.argsort()) == [0, 1, 2]  # rarer class, larger weight


def test_balanced_counts_give_equal_weights_and_margins():
    np.testing.assert_allclose(ClassBalancedBCE(normalize=True, class_counts=[50, 50]).class_weight.numpy(),
                               [1.0, 1.0])
    w = ClassBalancedBCE(class_counts=[50, 50]).class_weight
    assert w[0] == w[1]
    np.testing.assert_allclose(LDAM(class_counts=[50, 50]).margins.numpy(), [0.5, 0.5])


def test_ldam_margins_follow_counts():
    counts = [5000, 500, 50]
    ldam = LDAM(max_m=0.4, class_counts=counts)
    m = ldam.margins.numpy()
    assert m.max() == pytest.approx(0.4) and m.argmax() == 2
    # m_c proportional to n_c^(-1/4): a 10x smaller class has a 10^(1/4)x larger margin
    np.testing.assert_allclose(m[1:] / m[:-1], [10**0.25, 10**0.25], rtol=1e-6)


# -- edge batches and numerical stability -------------------------------------------------------
EDGE_BATCHES = {
    "no positives": ([0.3, -2.0, 1.0], [0, 0, 0]),
    "no negatives": ([0.3, -2.0, 1.0], [1, 1, 1]),
    "one sample": ([0.3], [1]),
    "empty": ([], []),
    "extreme logits": ([1e4, -1e4, 1e4, -1e4], [1, 1, 0, 0]),
}


@pytest.mark.parametrize("batch", list(EDGE_BATCHES))
@pytest.mark.parametrize("name", BINARY + MULTI)
def test_edge_batches_give_finite_values_and_gradients(name, batch):
    scores, labels = EDGE_BATCHES[batch]
    for dtype in (torch.float32, torch.float64):
        s = torch.tensor(scores, dtype=dtype).requires_grad_()
        loss = make(name)
        logits = s[:, None] if type(loss).num_logits == 1 else torch.stack([torch.zeros_like(s), s], 1)
        out = loss(logits, torch.tensor(labels, dtype=dtype))
        assert out.ndim == 0 and torch.isfinite(out), (name, batch, out)
        (grad,) = torch.autograd.grad(out, s)
        assert torch.isfinite(grad).all(), (name, batch, grad)


@pytest.mark.parametrize("name", BINARY + MULTI)
def test_half_precision_logits_are_scored_in_float32(name):
    s = torch.tensor(S, dtype=torch.bfloat16)
    y = torch.tensor(Y, dtype=torch.float32)
    loss = make(name)
    logits = s[:, None] if type(loss).num_logits == 1 else torch.stack([torch.zeros_like(s), s], 1)
    out = loss(logits, y)
    assert out.dtype == torch.float32
    assert float(out) == pytest.approx(float(loss(logits.float(), y)), rel=1e-6)


def test_documented_values_on_one_class_batches():
    scores, no_pos = EDGE_BATCHES["no positives"]
    assert value(MiniBatchAUC(), scores, no_pos) == 0.0  # no pair in the batch
    fpe = np.mean([0.5 * sig(s) ** 2 for s in scores])
    assert value(MSFE(), scores, no_pos) == pytest.approx(fpe**2, rel=1e-9)  # FNE of an absent class is 0
    for name in BINARY + MULTI:
        assert value(make(name), [], []) == 0.0, name


# -- configuration errors ------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "hp"), [
    ("s_ml", {"m": -0.1}), ("a_ml", {"m": float("nan")}), ("s_fl", {"gamma": -1}), ("a_fl", {"gamma": -0.5}),
    ("fl", {"gamma": -2}), ("wbce", {"c": 0}), ("wbce", {"c": -1}), ("cbbce", {"beta": 1.0}),
    ("cbbce", {"beta": 0.0}), ("cbbce", {"beta": 1.5}), ("cbce", {"beta": 1}), ("ldam", {"s": 0}),
    ("ldam", {"max_m": -0.5}), ("ldam", {"drw_beta": 1.0}), ("ldam", {"drw_epoch": -1}),
    ("mbauc", {"score": "probability"}),
])
def test_invalid_hyper_parameters_raise_a_clear_error(name, hp):
    with pytest.raises(HightprError, match=f"loss.{next(iter(hp))}"):
        make(name, **hp)


@pytest.mark.parametrize("name", ["wbce", "cbbce", "cbce", "ldam"])
def test_missing_or_bad_class_counts_raise_a_clear_error(name):
    with pytest.raises(HightprError, match="class_counts=datamodule.class_counts"):
        loss_class(name)()
    with pytest.raises(HightprError, match="every class"):
        make(name, counts=[100, 0])


def test_binary_count_losses_reject_multiclass_counts():
    for name in ("wbce", "cbbce"):
        with pytest.raises(HightprError, match="multi-class loss"):
            make(name, counts=COUNTS3)


def test_head_mismatch_raises_a_clear_error():
    y3 = torch.tensor(Y3)
    with pytest.raises(HightprError, match="multi-class loss"):
        BCE()(torch.zeros(4, 3), y3)
    with pytest.raises(HightprError, match="one logit per class"):
        CE()(torch.zeros(4, 1), torch.ones(4))
    with pytest.raises(HightprError, match="model.num_logits"):
        LDAM(class_counts=COUNTS3)(torch.zeros(4, 2), torch.ones(4))
    with pytest.raises(HightprError, match="model.num_logits"):
        ClassBalancedCE(class_counts=COUNTS3)(torch.zeros(4, 2), torch.ones(4))


# -- configs -------------------------------------------------------------------------------------
def test_every_loss_has_a_config_naming_its_class():
    exported = {getattr(hightpr.losses, n) for n in hightpr.losses.__all__} - {BaseLoss}
    facts = {"class_counts": COUNTS, "num_sample_ids": 320}  # `hightpr.build.DataFacts` fields
    built = set()
    for name in LOSS_NAMES:
        cfg = OmegaConf.load(CONF_LOSS / f"{name}.yaml")
        cls = get_class(cfg._target_)
        assert cls in exported, name  # a loss of `hightpr.losses`
        assert "class_counts" not in cfg  # counts come from the DataModule
        # defaults are valid: built as the wiring builds it, with the data facts the class declares
        loss = instantiate(cfg, **{fact: facts[fact] for fact in cls.data_facts})
        assert type(loss) is cls and loss.class_counts == COUNTS, name
        built.add(cls)
    assert built == exported  # and every exported loss has a config
    assert set(BINARY + MULTI) < set(LOSS_NAMES)


def test_heads_requested_by_the_losses():
    assert all(loss_class(n).num_logits == 1 and not loss_class(n).normed_head for n in BINARY)
    assert all(loss_class(n).num_logits is None for n in MULTI)
    assert LDAM.normed_head and not CE.normed_head


# -- one short training run per loss -------------------------------------------------------------
@pytest.mark.parametrize("overrides", [
    ("loss=bce",), ("loss=s_ml", "loss.m=2"), ("loss=a_ml", "loss.m=0.1"), ("loss=s_fl", "loss.gamma=2"),
    ("loss=a_fl", "loss.gamma=0.5"), ("loss=wbce", "loss.c=0.3333333333"), ("loss=cbbce", "loss.beta=0.999"),
    ("loss=msfe",), ("loss=mbauc",), ("loss=ce",), ("loss=fl", "loss.gamma=2"), ("loss=cbce",),
    ("loss=ldam", "loss.drw_epoch=1"),
], ids=lambda o: " ".join(o))
def test_training_run_per_loss(train, overrides):
    result = train(*overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("val", "test"):
        metrics = result.metrics[stage]
        assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics


def test_bad_hyper_parameter_on_the_command_line(train):
    result = train("loss=cbbce", "loss.beta=1.5")
    assert result.returncode != 0
    assert "loss.beta=1.5 is out of range" in result.stderr
