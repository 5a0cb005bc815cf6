"""RankReg: the rank penalty (Eq. 4), the positive buffer (§3.5), the regulariser and a training run."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hightpr.regularizers import PositiveBuffer, RankReg, rank_penalty
from tests.conftest import CONF_PATH

CONF = str(CONF_PATH)
BUF = {"strategy": "dequeue_max", "size": 32, "in_base_loss": True}


def mask(*bits: int) -> torch.Tensor:
    return torch.tensor(bits, dtype=torch.bool)


# -- the penalty -------------------------------------------------------------------------------
def test_paper_figure_1_prefers_the_lower_fpr_at_full_tpr():
    scores = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])  # sorted: position = rank
    option1, option2 = mask(1, 0, 0, 1, 0, 0), mask(0, 1, 1, 0, 0, 0)  # same AUC (3/4 + 1 = 2 * 7/8)
    # the figure drops every normalisation: sum of squared ranks = |P| * mean
    assert 2 * rank_penalty(scores, option1, normalize=False) == 17.0  # 1 + 16
    assert 2 * rank_penalty(scores, option2, normalize=False) == 13.0  # 4 + 9
    assert rank_penalty(scores, option2) < rank_penalty(scores, option1)
    # plain ranks cannot tell them apart (1 + 4 = 2 + 3)
    assert rank_penalty(scores, option1, "linear", False) == rank_penalty(scores, option2, "linear", False)


@pytest.mark.parametrize(
    ("penalty", "expected"),
    [("linear", (0.5 + 1.0) / 2), ("squared", (0.25 + 1.0) / 2), ("cubed", (0.125 + 1.0) / 2),
     ("exp", (math.exp(0.5) + math.e) / 2)],
)
def test_each_penalty_on_normalised_ranks(penalty, expected):
    scores = torch.tensor([0.3, 0.9, 0.1, 0.5])
    positive = mask(0, 0, 1, 1)  # normalised ranks 4/4 and 2/4
    assert rank_penalty(scores, positive, penalty).item() == pytest.approx(expected)


def test_no_positive_gives_zero_without_nan():
    scores = torch.randn(10, requires_grad=True)
    loss = rank_penalty(scores, torch.zeros(10, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(scores.grad, torch.zeros(10))
    assert rank_penalty(torch.zeros(0), torch.zeros(0, dtype=torch.bool)).item() == 0.0
    with pytest.raises(ValueError, match="penalty"):
        rank_penalty(scores, torch.ones(10, dtype=torch.bool), "quartic")


def test_a_gradient_step_raises_a_low_positive_and_lowers_the_penalty():
    # one positive below five negatives (the positive is the 4th of 8 entries)
    scores = torch.tensor([0.9, 0.8, 0.7, -0.2, 0.6, 0.5, -0.4, -0.6], requires_grad=True)
    positive = mask(0, 0, 0, 1, 0, 0, 0, 0)
    before = rank_penalty(scores, positive)  # r = 6/8 -> 0.5625
    assert before.item() == pytest.approx((6 / 8) ** 2)
    before.backward()
    assert scores.grad[3] < 0  # descent raises it
    assert all(scores.grad[i] >= 0 for i in range(8) if i != 3)  # and never raises a negative
    with torch.no_grad():
        stepped = scores - 4.0 * scores.grad  # grad: -(6/8 - 1/8)/2 on it, +(1/8)/2 on the 5 above
    assert stepped[3] > scores[3]
    assert rank_penalty(stepped, positive) < before


def test_gradient_is_exactly_zero_when_positives_are_on_top():
    # positives far above the negatives and far apart: the perturbation reorders nothing
    scores = torch.tensor([-1.0, 20.0, -2.0, 10.0, -3.0, -4.0], requires_grad=True)
    positive = mask(0, 1, 0, 1, 0, 0)
    loss = rank_penalty(scores, positive, interpolation=2.0)
    loss.backward()
    assert loss.item() == pytest.approx(((1 / 6) ** 2 + (2 / 6) ** 2) / 2)
    assert torch.equal(scores.grad, torch.zeros(6))


# -- the buffer --------------------------------------------------------------------------------
def offer(buf: PositiveBuffer, ids, positive, scores, occupant_scores=None) -> None:
    """Push a batch whose inputs encode their id (x = [id, -id]), as the regulariser does."""
    ids_t = torch.tensor(ids, dtype=torch.long)
    x = torch.stack([ids_t.float(), -ids_t.float()], 1)
    if occupant_scores is not None:
        buf.refresh_scores(torch.tensor(occupant_scores))
    buf.push(x, torch.tensor(positive, dtype=torch.float), ids_t, torch.tensor(scores), mask(*positive))


def held(buf: PositiveBuffer) -> list[int]:
    x, y, ids = buf.contents()
    if buf.fill == 0:
        return []
    assert torch.equal(x[:, 0].long(), ids) and torch.equal(x[:, 1].long(), -ids)  # inputs follow ids
    assert bool((y == 1).all())
    return ids.tolist()


@pytest.mark.parametrize(
    ("strategy", "after_replace", "after_overflow"),
    [
        # occupants 1 (oldest, score .5), 2 (score .9), 4 (score .1); then 5 arrives
        ("dequeue_max", [1, 5, 4], [10, 8, 7]),  # evicts 2, the highest; keeps the 3 lowest of 7..10
        ("dequeue_min", [1, 2, 5], [9, 7, 10]),  # evicts 4, the lowest; keeps the 3 highest
        ("fifo", [5, 2, 4], [8, 9, 10]),  # evicts 1, the oldest; keeps the 3 last
    ],
)
def test_each_strategy_evicts_the_right_sample(strategy, after_replace, after_overflow):
    buf = PositiveBuffer(size=3, strategy=strategy)
    offer(buf, [1, 2, 3, 4], [1, 1, 0, 1], [0.2, 0.3, 0.4, 0.5])
    assert held(buf) == [1, 2, 4] and buf.fill == 3
    # 1 comes again (already buffered: not added twice), 6 is a negative, 5 is new
    offer(buf, [5, 6, 1], [1, 0, 1], [0.7, 0.8, 0.6], occupant_scores=[0.5, 0.9, 0.1])
    assert held(buf) == after_replace
    # negatives only: nothing changes
    offer(buf, [11, 12], [0, 0], [0.1, 0.2], occupant_scores=[0.3, 0.3, 0.3])
    assert held(buf) == after_replace
    # more new positives than the capacity: every occupant leaves, the strategy picks among them
    offer(buf, [7, 8, 9, 10], [1, 1, 1, 1], [0.3, 0.1, 0.4, 0.2], occupant_scores=[0.5, 0.5, 0.5])
    assert sorted(held(buf)) == sorted(after_overflow)


def test_fills_in_slot_order_without_repeats():
    buf = PositiveBuffer(size=4)
    assert buf.fill == 0 and buf.contents()[2].tolist() == []
    offer(buf, [3, 3, 9, 8], [1, 1, 0, 1], [0.1, 0.1, 0.2, 0.3])  # 3 twice in one batch
    assert held(buf) == [3, 8]
    offer(buf, [5], [1], [0.4], occupant_scores=[0.0, 0.0])
    assert held(buf) == [3, 8, 5] and buf.fill == 3


def reference_step(occupants: dict[int, float], stamps: dict[int, int], batch, strategy: str, size: int):
    """The rule of §3.5 one incoming positive at a time (at most `size` new positives per step)."""
    new = [(i, s) for i, p, s in batch if p and i not in occupants]
    new = list(dict(new).items())  # first occurrence of each id
    old = dict(occupants)
    evictable = sorted(old, key={"dequeue_max": lambda i: -old[i], "dequeue_min": lambda i: old[i],
                                 "fifo": lambda i: stamps[i]}[strategy])
    kept = dict(occupants)
    for i, s in new:
        if len(kept) == size:
            del kept[evictable.pop(0)]
        kept[i] = s
    return kept


@pytest.mark.parametrize("strategy", ["dequeue_max", "dequeue_min", "fifo"])
def test_random_sequence_matches_the_one_at_a_time_rule(strategy):
    rng = random.Random(strategy)
    size, buf = 5, PositiveBuffer(size=5, strategy=strategy)
    occupants: dict[int, float] = {}
    stamps: dict[int, int] = {}
    step_time = 0
    for _ in range(60):
        n = rng.randint(1, 8)
        ids = [rng.randint(0, 40) for _ in range(n)]
        labels = [1 if i % 3 == 0 else 0 for i in ids]  # a sample id keeps its label
        while sum(labels) > size:
            k = labels.index(1)
            ids.pop(k), labels.pop(k)
        scores = [rng.random() for _ in ids]
        occupant_scores = [rng.random() for _ in range(buf.fill)]
        for i, s in zip(held(buf), occupant_scores, strict=True):
            occupants[i] = s
        expected = reference_step(occupants, stamps, list(zip(ids, labels, scores, strict=True)),
                                  strategy, size)
        for j, i in enumerate(ids):
            if i in expected and i not in occupants:
                stamps.setdefault(i, step_time + j)
        step_time += len(ids)
        offer(buf, ids, labels, scores, occupant_scores=occupant_scores)
        assert sorted(held(buf)) == sorted(expected)
        assert all(i % 3 == 0 for i in held(buf))  # never a negative
        assert len(set(held(buf))) == len(held(buf)) <= size  # no duplicate, never over capacity
        occupants = {i: expected[i] for i in expected}
        stamps = {i: t for i, t in stamps.items() if i in expected}


def test_buffer_survives_a_checkpoint_round_trip(tmp_path):
    reg = RankReg(buffer={"strategy": "fifo", "size": 4, "in_base_loss": True})
    x = torch.randn(6, 3, 8, 8)
    y = torch.tensor([1.0, 0, 1, 1, 0, 0])
    reg.after_step({"x": x, "y": y, "id": torch.arange(6) + 100}, torch.randn(6, 1), torch.randn(6))
    torch.save(reg.state_dict(), tmp_path / "reg.pt")
    fresh = RankReg(buffer={"strategy": "fifo", "size": 4, "in_base_loss": True})
    assert fresh.buffer.fill == 0
    fresh.load_state_dict(torch.load(tmp_path / "reg.pt"))
    assert fresh.buffer.fill == 3
    for name in ("x", "y", "ids", "scores", "stamps", "clock"):
        assert torch.equal(getattr(fresh.buffer, name), getattr(reg.buffer, name)), name
    bx, _, bid = fresh.buffer.contents()
    assert bid.tolist() == [100, 102, 103] and torch.equal(bx, x[[0, 2, 3]])


def test_invalid_buffer_settings():
    with pytest.raises(ValueError, match="strategy"):
        PositiveBuffer(4, "lifo")
    with pytest.raises(ValueError, match="size"):
        PositiveBuffer(0)


# -- the regulariser ---------------------------------------------------------------------------
def step(reg: RankReg, batch: dict[str, torch.Tensor], logits_fn):
    """One training step as the LightningModule does it; returns (term, extended batch, n_base)."""
    ext, n_base = reg.extend_batch(batch)
    logits = logits_fn(ext["x"])
    scores = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
    term = reg(logits, scores, ext["y"], ext["id"])
    reg.after_step(ext, logits.detach(), scores.detach())
    return term, ext, n_base


@pytest.mark.parametrize("in_base_loss", [True, False])
def test_buffer_is_appended_at_the_end_and_rescored(in_base_loss):
    reg = RankReg(buffer={"strategy": "dequeue_max", "size": 2, "in_base_loss": in_base_loss})
    score_of = lambda x: x[:, :1]  # noqa: E731  the score is the first input feature
    b1 = {"x": torch.tensor([[0.1], [0.5], [0.2]]), "y": torch.tensor([0.0, 1.0, 0.0]),
          "id": torch.tensor([1, 2, 3])}
    term, ext, n_base = step(reg, b1, score_of)  # nothing buffered yet: batch alone
    assert ext is b1 and n_base == 3
    assert term.item() == pytest.approx((1 / 3) ** 2)
    b2 = {"x": torch.tensor([[0.3], [0.4]]), "y": torch.tensor([0.0, 0.0]), "id": torch.tensor([4, 5])}
    term, ext, n_base = step(reg, b2, score_of)
    assert ext["id"].tolist() == [4, 5, 2] and ext["y"].tolist() == [0.0, 0.0, 1.0]
    assert torch.equal(ext["x"][2], b1["x"][1])
    assert n_base == (3 if in_base_loss else 2)
    assert term.item() == pytest.approx((1 / 3) ** 2)  # 0.5 over 0.3, 0.4: rank 1 of 3
    assert reg.buffer.scores[0].item() == pytest.approx(0.5)


def test_binary_term_on_hand_made_two_logit_outputs():
    reg = RankReg(weight=0.5, buffer=None)
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.0, 0.5], [3.0, 1.0]], requires_grad=True)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0])
    scores = logits[:, 1] - logits[:, 0]  # 2, -1, 0.5, -2 -> positives rank 1 and 4 of 4
    term = reg(logits, scores, y, torch.arange(4))
    assert term.item() == pytest.approx(0.5 * ((1 / 4) ** 2 + 1.0) / 2)
    term.backward()
    assert logits.grad[3, 1] < 0 < logits.grad[3, 0]  # the low positive is pushed up


def softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_multiclass_ranks_by_the_critical_class_probability():
    # class-2 logits: A 1 < B 2, but class-2 probabilities: A 0.58 > B 0.05
    logits = torch.tensor([
        [0.0, 0.0, 1.0],  # A, class 2
        [5.0, 0.0, 2.0],  # B, class 2
        [0.0, 3.0, 0.0],  # class 1
        [1.0, 1.0, 1.5],  # class 0
        [0.0, 0.0, -1.0],  # class 1
    ], requires_grad=True)
    y = torch.tensor([2, 2, 1, 0, 1])
    p2 = [softmax(row)[2] for row in logits.tolist()]
    ranks = [1 + sum(q > p for q in p2) for p in p2]  # brute force
    assert ranks[0] < ranks[1]
    expected = ((ranks[0] / 5) ** 2 + (ranks[1] / 5) ** 2) / 2
    reg = RankReg(critical_classes=[2])
    term = reg(logits, torch.zeros(5), y, torch.arange(5))
    assert term.item() == pytest.approx(expected)
    term.backward()
    assert logits.grad[1, 2] < 0  # B's class-2 logit is pushed up

    # two critical classes: the mean of the two per-class terms
    p1 = [softmax(row)[1] for row in logits.tolist()]
    ranks1 = [1 + sum(q > p for q in p1) for p in p1]
    expected1 = ((ranks1[2] / 5) ** 2 + (ranks1[4] / 5) ** 2) / 2
    both = RankReg(critical_classes=[1, 2])
    term2 = both(logits, torch.zeros(5), y, torch.arange(5))
    assert term2.item() == pytest.approx((expected + expected1) / 2)

    # the multi-class buffer keeps critical samples only, whatever their critical class
    buffered = RankReg(critical_classes=[1, 2], buffer={"strategy": "dequeue_max", "size": 8})
    buffered.after_step({"x": torch.randn(5, 2), "y": y, "id": torch.arange(5)}, logits.detach(),
                        torch.zeros(5))
    assert buffered.buffer.contents()[2].tolist() == [0, 1, 2, 4]
    assert buffered.buffer.scores[:4].tolist() == pytest.approx([p2[0], p2[1], p1[2], p1[4]])


def test_no_positive_and_empty_buffer_gives_zero():
    reg = RankReg(buffer=BUF)
    logits = torch.randn(6, 1, requires_grad=True)
    term, _, _ = step(reg, {"x": torch.randn(6, 4), "y": torch.zeros(6), "id": torch.arange(6)},
                      lambda x: logits)
    term.backward()
    assert term.item() == 0.0 and torch.equal(logits.grad, torch.zeros(6, 1))
    assert reg.buffer.fill == 0


def test_epoch_log_accumulates_the_quantities():
    reg = RankReg(buffer={"strategy": "dequeue_max", "size": 4, "in_base_loss": True})
    reg.on_train_epoch_start(0)
    score_of = lambda x: x[:, :1]  # noqa: E731
    # step 1: scores .9 .1 .5 .3, positives .1 (rank 4/4) and .5 (rank 2/4)
    step(reg, {"x": torch.tensor([[0.9], [0.1], [0.5], [0.3]]), "y": torch.tensor([0.0, 1, 1, 0]),
               "id": torch.arange(4)}, score_of)
    # step 2: batch .2 .8 (negatives) + buffer .1 .5: positives rank 4/4 and 2/4 again
    step(reg, {"x": torch.tensor([[0.2], [0.8]]), "y": torch.tensor([0.0, 0.0]),
               "id": torch.tensor([7, 8])}, score_of)
    log = reg.epoch_log()
    assert log["loss"].item() == pytest.approx((1.0 + 0.25) / 2)
    assert log["pos_rank_mean"].item() == pytest.approx(0.75)
    assert log["pos_rank_worst"].item() == pytest.approx(1.0)
    assert log["buffer_fill"].item() == 2
    reg.on_train_epoch_start(1)
    assert math.isnan(reg.epoch_log()["loss"].item())


def test_invalid_regulariser_settings():
    with pytest.raises(ValueError, match="penalty"):
        RankReg(penalty="quartic")
    with pytest.raises(ValueError, match="interpolation"):
        RankReg(interpolation=0.0)


# -- configuration and a training run -------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "strategy", "size", "in_base"),
    [(["reg=rankreg"], "dequeue_max", 32, True),
     (["reg=rankreg", "reg/buffer=fifo", "reg.buffer.size=5"], "fifo", 5, True),
     (["reg=rankreg", "reg/buffer=dequeue_min", "reg.buffer.in_base_loss=false"], "dequeue_min", 32, False),
     (["reg=rankreg", "reg/buffer=none"], None, 0, False),
     (["experiment=rankreg"], "dequeue_max", 32, True)],
)
def test_config_builds_the_regulariser(overrides, strategy, size, in_base):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    reg = instantiate(cfg.reg, num_sample_ids=10)
    assert isinstance(reg, RankReg) and reg.in_base_loss == in_base
    assert (reg.penalty, reg.interpolation, reg.weight, reg.multiclass) == ("squared", 2.0, 1.0, False)
    if strategy is None:
        assert reg.buffer is None
    else:
        assert (reg.buffer.strategy, reg.buffer.size) == (strategy, size)
    if overrides[0] == "experiment=rankreg":
        assert cfg.trainer.batch_size == 32 and cfg.model.num_logits == 2


@pytest.mark.parametrize(
    "overrides", [("reg=rankreg", "reg/buffer=dequeue_max"), ("experiment=rankreg", "reg/buffer=fifo")]
)
def test_training_run_logs_the_rankreg_quantities(train, overrides):
    r = train(*overrides)
    assert r.returncode == 0, r.stderr[-3000:]
    log = pd.read_csv(r.run_dir / "csv" / "metrics.csv")
    keys = ["reg/loss", "reg/buffer_fill", "reg/pos_rank_mean", "reg/pos_rank_worst"]
    rows = log.dropna(subset=keys)
    assert len(rows) == 2  # one per epoch
    assert rows["reg/buffer_fill"].iloc[-1] == 12  # every training positive (12 < 32)
    assert ((rows["reg/loss"] > 0) & (rows["reg/loss"] <= 1)).all()
    assert ((rows["reg/pos_rank_mean"] > 0) & (rows["reg/pos_rank_worst"] <= 1)).all()
    assert (rows["reg/pos_rank_mean"] <= rows["reg/pos_rank_worst"]).all()
    state = torch.load(r.metrics["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    ids, y = state["reg.buffer.ids"], state["reg.buffer.y"]  # the buffer is in the checkpoint
    assert ids.shape == (32,) and state["reg.buffer.x"].shape == (32, 3, 32, 32)
    held = ids[ids >= 0]
    assert len(held) == len(set(held.tolist())) == 12 and bool((y[: len(held)] == 1).all())


def test_multiclass_training_run_on_long_tailed_data(train):
    r = train("dataset=tiny_cifar10_lt", "loss=ce", "reg=rankreg")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = pd.read_csv(r.run_dir / "csv" / "metrics.csv").dropna(subset=["reg/loss", "reg/buffer_fill"])
    assert len(rows) == 2 and ((rows["reg/loss"] > 0) & (rows["reg/loss"] <= 1)).all()
    state = torch.load(r.metrics["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    n = int(rows["reg/buffer_fill"].iloc[-1])
    assert n > 0 and bool((state["reg.buffer.y"][:n] == 9).all())  # the critical class only


def test_penalty_floor_is_the_least_term_over_every_order():
    """The floor by hand (positives on ranks 1 and 2 of 4: (1/16 + 4/16) / 2) and by brute force:
    the smallest l_reg over every ordering of the list's scores, for each penalty."""
    import itertools

    from hightpr.regularizers.rankreg import PENALTIES, penalty_floor, rank_penalty

    pos = torch.tensor([True, False, True, False])
    assert penalty_floor(pos, "squared").item() == pytest.approx(5 / 32)
    for penalty in PENALTIES:
        for normalize in (True, False):
            least = min(rank_penalty(torch.tensor(order, dtype=torch.float32), pos, penalty, normalize).item()
                        for order in itertools.permutations([0.0, 1.0, 2.0, 3.0]))
            assert penalty_floor(pos, penalty, normalize).item() == pytest.approx(least, rel=1e-6)
    rows = torch.tensor([[False, False, False], [True, True, False]])
    assert penalty_floor(rows, "linear").tolist() == pytest.approx([0.0, 0.5])


def test_epoch_log_reports_the_weighted_floor():
    from hightpr.regularizers import RankReg

    reg = RankReg(weight=0.5, buffer=None)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0])
    reg(torch.zeros(4, 1), torch.tensor([0.1, 0.9, 0.2, 0.3]), y, torch.arange(4))
    assert reg.epoch_log()["term_floor"].item() == pytest.approx(0.5 * (1 / 16 + 4 / 16) / 2)
