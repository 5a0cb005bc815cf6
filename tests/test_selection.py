"""One selection rule: the evaluator's monitor, and its tie rule (the lower validation loss, then the
earlier candidate), for everything chosen on validation (hightpr-select, the tables' grid steps)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hightpr.metrics.evaluators import (
    MONITORS,
    TIE_BREAK,
    BinaryEvaluator,
    evaluator_for,
    improves,
    monitor_name,
    monitor_value,
    selection_key,
)
from hightpr.metrics.multiclass import MulticlassEvaluator
from hightpr.task import Task

NAN = math.nan


def test_the_monitors_are_the_evaluators():
    assert MONITORS == (BinaryEvaluator.monitor, MulticlassEvaluator.monitor) == ("auc", "accuracy")
    assert TIE_BREAK == "loss"


def test_evaluator_for_builds_the_tasks_evaluator_with_its_settings():
    binary = evaluator_for(Task(), delta=0.2, threshold_rule="crc")
    assert isinstance(binary, BinaryEvaluator) and binary.monitor == "auc"
    assert (binary.delta, binary.threshold_rule) == (0.2, "crc")
    task = Task(10, (3, 1))
    multiclass = evaluator_for(task, delta=0.2)  # multi-class reports take no evaluation settings
    assert isinstance(multiclass, MulticlassEvaluator) and multiclass.monitor == "accuracy"
    assert multiclass.critical == [3, 1] and multiclass.task == task
    assert not hasattr(task, "evaluator")  # one owner: the task does not build evaluators


@pytest.mark.parametrize(("report", "prefix", "expected"), [
    ({"auc": 0.9, "accuracy": 0.8, "loss": 0.3}, "", ("auc", 0.9)),   # binary: AUC first
    ({"accuracy": 0.7, "auc_critical": 0.95}, "", ("accuracy", 0.7)),   # multi-class: accuracy
    ({"val_auc": 0.85, "test_auc": 0.99}, "val_", ("auc", 0.85)),        # a flat row (members' mean)
    ({"test_auc": 0.99}, "val_", None),
    ({}, "", None),
    (None, "", None),
])
def test_monitor_value_reads_the_first_monitor_a_report_has(report, prefix, expected):
    assert monitor_value(report, prefix) == expected


def test_monitor_name_of_columns():
    assert monitor_name(["val_loss", "val_accuracy", "val_auc"], "val_") == "auc"
    assert monitor_name(["val_loss", "val_accuracy"], "val_") == "accuracy"
    assert monitor_name(["val_loss"], "val_") is None


def test_selection_key_higher_monitor_then_lower_loss_then_earlier():
    candidates = [(0.9, 0.5), (0.95, 0.7), (0.95, 0.6), (0.95, 0.6), (NAN, 0.1), (0.95, None), (0.8, NAN)]
    order = sorted(range(len(candidates)), key=lambda i: selection_key(*candidates[i]))
    assert order == [2, 3, 1, 5, 0, 6, 4]
    assert selection_key(0.9) == selection_key(0.9, None) == selection_key(0.9, NAN)


def test_selection_key_orders_as_a_stable_pandas_sort_with_nan_last():
    """hightpr-select sorted with pandas (monitor descending, loss ascending, NaN last, stable)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = 30
        monitor = rng.choice([0.5, 0.75, 1.0, NAN], size=n)
        loss = rng.choice([0.1, 0.2, NAN], size=n)
        frame = pd.DataFrame({"m": monitor, "loss": pd.Series(loss).fillna(math.inf)})
        expected = frame.sort_values(["m", "loss"], ascending=[False, True], kind="stable").index.tolist()
        got = sorted(range(n), key=lambda i: selection_key(monitor[i], loss[i]))
        assert got == expected


def test_improves_is_the_same_order_epoch_after_epoch():
    assert improves(0.9, 0.5, 0.8, 0.1)                # a higher monitor wins whatever the loss
    assert not improves(0.8, 0.1, 0.9, 0.5)
    assert improves(0.9, 0.4, 0.9, 0.5)                # a tie: the lower validation loss
    assert not improves(0.9, 0.5, 0.9, 0.5)            # an exact tie keeps the earlier
    assert not improves(0.9, NAN, 0.9, 0.5) and not improves(0.9, None, 0.9, 0.5)
    assert improves(0.9, 0.5, 0.9, None)               # a loss beats no loss
    assert not improves(NAN, 0.1, -math.inf, 0.5)      # a NaN monitor never improves
    rng = np.random.default_rng(1)
    for _ in range(200):
        a, b = rng.choice([0.5, 0.75, 1.0], size=2), rng.choice([0.1, 0.2, NAN], size=2)
        assert improves(a[0], b[0], a[1], b[1]) == (selection_key(a[0], b[0]) < selection_key(a[1], b[1]))


def test_the_tables_select_a_grid_point_by_the_same_rule():
    from hightpr.tables.results import selection_loss, selection_value

    shared_val = {"val": {"auc": 0.91}, "member_mean": {"val_auc": 0.9, "val_loss": 0.4}}
    own_val = {"member_mean": {"val_auc": 0.88, "val_loss": 0.3}}   # members with their own splits
    multiclass = {"val": {"accuracy": 0.7}, "member_mean": {"val_accuracy": 0.69}}
    assert selection_value(shared_val) == 0.91 and selection_loss(shared_val) == 0.4
    assert selection_value(own_val) == 0.88 and selection_loss(own_val) == 0.3
    assert selection_value(multiclass) == 0.7 and selection_loss(multiclass) is None
    with pytest.raises(KeyError, match="no validation AUC or accuracy"):
        selection_value({"test": {"auc": 0.99}})
