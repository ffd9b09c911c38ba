import math
import random

import pytest
import torch

from pipeline.trainers.debias import MIN_SHARE, Prediction, asd_loss, max_skew_at_k, resample_epoch, sample_skew, skew_table


def test_skew_by_hand():
    # 4 chef samples, 2 female 2 male; the model calls 3 of them chefs: both males and one female.
    preds = [
        Prediction("chef", {"gender": "male"}, True), Prediction("chef", {"gender": "male"}, True),
        Prediction("chef", {"gender": "female"}, True), Prediction("chef", {"gender": "female"}, False),
    ]
    table = skew_table(preds)
    assert table["chef"][("gender", "male")] == pytest.approx(math.log((2 / 3) / (2 / 4)))
    assert table["chef"][("gender", "female")] == pytest.approx(math.log((1 / 3) / (2 / 4)))
    never = skew_table([Prediction("nurse", {"gender": "male"}, False), Prediction("nurse", {"gender": "female"}, True)])
    assert never["nurse"][("gender", "male")] == pytest.approx(math.log(MIN_SHARE / 0.5))


def test_sample_skew_takes_the_largest_magnitude_with_its_sign():
    table = {"chef": {("gender", "female"): -0.4, ("race", "asian"): 0.7, ("race", "black"): -0.9}}
    assert sample_skew(table, "chef", {"gender": "female", "race": "asian"}) == 0.7
    assert sample_skew(table, "chef", {"gender": "female", "race": "black"}) == -0.9
    assert sample_skew(table, "nurse", {"gender": "female"}) == 0.0


def test_resampler_expected_counts():
    # Non-positive skews: kept, |skew| accumulates; 0.6 + 0.6 passes tau2=1 once -> one extra copy of
    # sample 1 (accumulator 0.2); + 0.5 = 0.7; + 0.3 = 1.0 -> one extra copy of sample 3.
    assert resample_epoch([-0.6, -0.6, -0.5, -0.3], random.Random(0)) == [0, 1, 1, 2, 3, 3]
    # A positive skew of 1 is dropped with probability 1 / (1 + 1) = 0.5.
    kept = sum(len(resample_epoch([1.0], random.Random(seed))) for seed in range(4000))
    assert kept / 4000 == pytest.approx(0.5, abs=0.03)
    kept = sum(len(resample_epoch([3.0], random.Random(seed))) for seed in range(4000))
    assert kept / 4000 == pytest.approx(1 - 3 / 4, abs=0.03)


def test_asd_loss_matches_the_formula():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 2, -100], [-100, 4, 0]])
    skews = [0.5, -1.0]
    ce = [
        (torch.nn.functional.cross_entropy(logits[0, :2], labels[0, :2])).item(),
        (torch.nn.functional.cross_entropy(logits[1, 1:], labels[1, 1:])).item(),
    ]
    expected = (math.exp(-0.5) * ce[0] + math.exp(1.0) * ce[1]) / 2
    assert asd_loss(logits, labels, skews).item() == pytest.approx(expected, rel=1e-5)


def test_max_skew_at_k_by_hand():
    # 6 images, 3 male + 3 female; the top 3 by similarity are 2 male, 1 female.
    scores = [0.9, 0.8, 0.1, 0.7, 0.2, 0.3]
    labels = ["male", "male", "male", "female", "female", "female"]
    worst, skews = max_skew_at_k(scores, labels, k=3)
    assert skews["male"] == pytest.approx(math.log((2 / 3) / 0.5))
    assert skews["female"] == pytest.approx(math.log((1 / 3) / 0.5))
    assert worst == pytest.approx(math.log(4 / 3))
    fair, _ = max_skew_at_k([0.9, 0.1, 0.8, 0.2], ["a", "a", "b", "b"], k=2)
    assert fair == pytest.approx(0.0)
    with pytest.raises(ValueError):
        max_skew_at_k(scores, labels, k=7)
