"""Protocol details of the papers' setups: ResNet-32 with option-A shortcuts, RankReg's ranked score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hightpr.models import resnet10, resnet32
from hightpr.models.resnet import PadShortcut
from hightpr.regularizers import RankReg
from tests.conftest import CONF_PATH


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- ResNet-32, option A (He et al. arXiv:1512.03385 §4.2; Cao et al.'s long-tailed CIFAR code) ---------
def resnet32_count_by_hand(num_classes: int) -> int:
    """Conv k x k: c_in c_out k^2 weights (no bias); BatchNorm: 2c; linear: 64 C + C; option A: 0."""
    count = 3 * 16 * 9 + 2 * 16  # stem: 3x3 conv 3 -> 16, BN
    c_in = 16
    for width in (16, 32, 64):
        for _ in range(5):  # two 3x3 convs and two BNs per BasicBlock
            count += c_in * width * 9 + 2 * width + width * width * 9 + 2 * width
            c_in = width
    return count + 64 * num_classes + num_classes


def test_resnet32_option_a_has_the_known_parameter_count():
    assert resnet32_count_by_hand(10) == 464_154  # He et al.'s CIFAR ResNet-32: 0.46M
    assert n_params(resnet32(num_logits=10)) == 464_154
    assert n_params(resnet32(num_logits=100)) == resnet32_count_by_hand(100)
    # option B adds the two projections: 1x1 conv 16 -> 32 + BN(32), 1x1 conv 32 -> 64 + BN(64)
    assert n_params(resnet32(num_logits=10, shortcut="B")) == 464_154 + (16 * 32 + 64) + (32 * 64 + 128)


def test_option_a_shortcut_is_parameter_free_and_pads_zeros():
    model = resnet32(num_logits=10)
    pads = [m for m in model.modules() if isinstance(m, PadShortcut)]
    assert len(pads) == 2 and all(n_params(m) == 0 for m in pads)  # one per width change
    x = torch.randn(2, 16, 8, 8)
    out = pads[0](x)  # 16 -> 32 channels, stride 2
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])  # identity, subsampled
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0  # zero channels on both sides
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet10_keeps_its_projection_shortcuts():
    model = resnet10(width=8)
    assert not any(isinstance(m, PadShortcut) for m in model.modules())
    assert any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())


def test_resnet32_config_selects_option_a():
    with initialize_config_dir(config_dir=str(CONF_PATH), version_base="1.3"):
        cfg = compose("config", overrides=["model=resnet32"])
        assert cfg.model.shortcut == "A"
        assert n_params(instantiate(cfg.model, num_logits=10)) == 464_154
        cfg = compose("config", overrides=["model=resnet32", "model.shortcut=B"])
        assert n_params(instantiate(cfg.model, num_logits=10)) == 466_906
    with pytest.raises(ValueError, match="model.shortcut"):
        resnet32(shortcut="C")


# -- RankReg: ranking the logit or its sigmoid (reg.score) -------------------------------------------
# Binary list s = [2.0, -1.0, 0.5, 0.3, -0.2], positives 0 and 3, squared penalty on ranks / 5:
# ranks 1, 5, 2, 3, 4 -> r = [.2, 1, .4, .6, .8], l_reg = (.2^2 + .6^2) / 2 = 0.2 for both scores,
# dL/dr = [.2, 0, 0, .6, 0]. Blackbox backward with gamma = 2 (a' = a + 2 dL/dr, dL/da = (r' - r) / 2):
#   logit: a' = [2.4, -1, .5, 1.5, -.2], ranks 1, 5, 3, 2, 4 -> dL/ds = [0, 0, .1, -.1, 0]
#   prob:  a = sigmoid(s) = [.8807970780, .2689414214, .6224593312, .5744425168, .4501660027],
#          a' = [1.2808, .2689, .6225, 1.7744, .4502], ranks 2, 5, 3, 1, 4 -> dL/da = [.1, 0, .1, -.2, 0],
#          dL/ds = dL/da * a (1 - a) = [.0104993585, 0, .0235003712, -.0488916623, 0]
S_RANK = [2.0, -1.0, 0.5, 0.3, -0.2]
Y_RANK = [1, 0, 0, 1, 0]
GRADS = {"logit": [0.0, 0.0, 0.1, -0.1, 0.0],
         "prob": [0.0104993585, 0.0, 0.0235003712, -0.0488916623, 0.0]}


@pytest.mark.parametrize("score", ["logit", "prob"])
def test_rankreg_score_ranks_the_logit_or_its_sigmoid(score):
    reg = RankReg(interpolation=2.0, score=score)
    s = torch.tensor(S_RANK, dtype=torch.float64, requires_grad=True)
    term = reg(s[:, None], s, torch.tensor(Y_RANK), torch.arange(5))
    assert term.item() == pytest.approx(0.2, abs=1e-12)  # same ranks: same value
    (grad,) = torch.autograd.grad(term, s)
    assert grad.tolist() == pytest.approx(GRADS[score], abs=1e-9)  # gamma acts on different values
    assert reg.epoch_log()["pos_rank_mean"].item() == pytest.approx((0.2 + 0.6) / 2)


def test_rankreg_score_leaves_multiclass_lists_on_probabilities():
    logits = torch.tensor([[1.0, 0.2, 2.0], [0.5, 0.1, -1.0], [0.0, 3.0, 1.0], [2.0, 1.0, 2.5]])
    y = torch.tensor([2, 0, 1, 2])
    values = [RankReg(critical_classes=[2], score=score)(logits, logits[:, 2], y, torch.arange(4)).item()
              for score in ("logit", "prob")]
    assert values[0] == values[1]


def test_rankreg_score_is_checked():
    with pytest.raises(ValueError, match="reg.score"):
        RankReg(score="probability")
    assert RankReg().score == "logit"


# -- multi-class S-ML, A-ML, A-FL train on long-tailed data (ALM Table 7) ---------------------------
@pytest.mark.parametrize("loss", ["s_ml", "a_ml", "a_fl"])
def test_binary_family_losses_train_on_long_tailed_data(train, loss):
    r = train("dataset=tiny_cifar10_lt", "experiment=long_tailed", f"loss={loss}", "trainer.max_epochs=1",
              "model.width=4")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.metrics["task"] == {"kind": "multiclass", "num_classes": 10, "critical_classes": [9]}
    logits = np.load(r.run_dir / "logits_test.npz")["logits"]
    assert logits.shape[1] == 10 and 0.0 <= r.metrics["test"]["accuracy"] <= 1.0


# -- the official optimizer and its optional schedule ------------------------------------------------
def test_plateau_halves_the_rate_after_patience_epochs_without_a_higher_auc():
    from hightpr.schedulers import on_plateau

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    config = on_plateau(opt, patience=2)
    assert (config["monitor"], config["interval"]) == ("val/auc", "epoch")
    rates = []
    for auc in (0.80, 0.85, 0.84, 0.85, 0.83, 0.90, 0.89, 0.88, 0.87):
        config["scheduler"].step(auc)
        rates.append(opt.param_groups[0]["lr"])
    # best 0.85 at the 2nd step; the 3rd, 4th (0.85 is not above 0.85 * (1 + 1e-4)) and 5th are bad:
    # the 5th halves the rate; 0.90 is a new best, then three bad steps halve it again
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 5e-4, 2.5e-4])


def test_the_official_optimizer_trains_with_the_plateau_schedule(train):
    r = train("optimizer=sgd_official", "scheduler=plateau", "scheduler.patience=0")
    assert r.returncode == 0, r.stderr[-3000:]
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(r.run_dir / "config_resolved.yaml")
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (1e-3, 0.9, 2e-4)
