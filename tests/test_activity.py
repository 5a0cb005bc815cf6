"""Regulariser activity: the term against the base loss, read back from a run's csv log."""

from __future__ import annotations

import pytest

from hightpr.regularizers.activity import activity, summarise

# the layout Lightning's CSVLogger writes: validation and training rows of an epoch apart
LOG = """epoch,reg/mu,reg/lambda_mean,step,train/base_loss,train/reg_term,val/auc
0,,,9,,,0.7
0,1e-07,2e-06,9,0.5,0.001,
1,,,19,,,0.8
1,2e-07,4e-06,19,0.4,-0.008,
2,,,29,,,0.9
2,4e-07,8e-06,29,0.2,0.003,
"""


def test_activity_reads_term_base_and_state_per_epoch(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(LOG)
    got = activity(path)
    # |term| / base by hand: 0.001/0.5 = 0.002, 0.008/0.4 = 0.02, 0.003/0.2 = 0.015
    assert got["epochs"] == 3
    assert got["ratio_max"] == pytest.approx(0.02) and got["ratio_last"] == pytest.approx(0.015)
    assert got["ratio_mean"] == pytest.approx((0.002 + 0.02 + 0.015) / 3)
    assert got["base_mean"] == pytest.approx(1.1 / 3) and got["term_mean"] == pytest.approx(-0.004 / 3)
    assert got["mu_last"] == pytest.approx(4e-7) and got["lambda_mean_last"] == pytest.approx(8e-6)
    assert got["active"] is True                     # one epoch reached 1%


def test_a_term_below_one_percent_throughout_is_inactive_and_no_term_is_none(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(LOG.replace("-0.008", "0.003").replace("0.2,0.003", "0.2,0.0019"))   # max 0.95%
    assert activity(path)["active"] is False
    zero = tmp_path / "zero.csv"
    zero.write_text("epoch,step,train/base_loss,train/reg_term\n0,9,0.5,0.0\n1,19,0.4,0.0\n")
    assert activity(zero) is None and activity(tmp_path / "absent.csv") is None


def test_an_ensemble_is_active_when_any_member_was():
    quiet = {"ratio_max": 0.001, "ratio_mean": 0.0005, "active": False}
    loud = {"ratio_max": 0.5, "ratio_mean": 0.1, "active": True}
    assert summarise([quiet, quiet])["active"] is False
    got = summarise([quiet, loud, None])
    assert got == {"members": 2, "above_floor": False, "ratio_max": 0.5, "ratio_mean": pytest.approx(0.05025),
                   "active": True}
    assert summarise([None]) is None
