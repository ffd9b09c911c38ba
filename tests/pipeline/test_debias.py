import csv
import math
import random
from pathlib import Path

import pytest
import torch

from pipeline.trainers.debias import Prediction, asd_loss, max_skew_at_k, resample_epoch, sample_skew, skew_table


def chef_pool() -> list[Prediction]:
    # 4 chef samples, 2 female 2 male; the model calls 3 of them chefs: both males and one female.
    return [
        Prediction("chef", {"gender": "male"}, True), Prediction("chef", {"gender": "male"}, True),
        Prediction("chef", {"gender": "female"}, True), Prediction("chef", {"gender": "female"}, False),
    ]


def test_skew_by_hand_without_smoothing():
    table = skew_table(chef_pool(), alpha=0)
    assert table["chef"][("gender", "male")] == pytest.approx(math.log((2 / 3) / (2 / 4)))
    assert table["chef"][("gender", "female")] == pytest.approx(math.log((1 / 3) / (2 / 4)))


def test_skew_by_hand_with_add_one_smoothing():
    # positive shares (2 + 1) / (3 + 2) = 0.6 and (1 + 1) / (3 + 2) = 0.4 against pool shares of 0.5
    table = skew_table(chef_pool())
    assert table["chef"][("gender", "male")] == pytest.approx(math.log(1.2))
    assert table["chef"][("gender", "female")] == pytest.approx(math.log(0.8))


def test_a_model_that_never_or_always_says_yes_has_no_skew():
    # 20 samples, 10 per value; the 1e-6 floor used to give ln(1e-6 / 0.5) = -13.1 to every value here
    balanced = [{"gender": "male"}] * 10 + [{"gender": "female"}] * 10
    for answer in (False, True):
        table = skew_table([Prediction("nurse", a, answer) for a in balanced])
        assert table["nurse"] == {("gender", "male"): pytest.approx(0.0), ("gender", "female"): pytest.approx(0.0)}


def test_skew_is_clipped_to_the_configured_range():
    # 99 male, 1 female; only the female is called a nurse: unsmoothed, ln(1 / 0.01) = 4.6 and ln(0) = -inf
    pool = [Prediction("nurse", {"gender": "male"}, False)] * 99 + [Prediction("nurse", {"gender": "female"}, True)]
    table = skew_table(pool, alpha=0, skew_range=(-3.0, 3.0))
    assert table["nurse"] == {("gender", "male"): -3.0, ("gender", "female"): 3.0}
    assert skew_table(pool, alpha=0, skew_range=(-2.0, 2.0))["nurse"][("gender", "female")] == 2.0


def test_shares_are_taken_per_attribute_over_the_samples_that_carry_it():
    # 20 gender-axis samples (yes for 6 of 10 of each value) and 30 race-axis samples (yes for 3 of 10 of each):
    # no attribute bias within either axis. Pooled over all 50, gender got +0.357 and race -0.336.
    pool = []
    for value in ("male", "female"):
        pool += [Prediction("doctor", {"gender": value}, i < 6) for i in range(10)]
    for value in ("white", "black", "asian"):
        pool += [Prediction("doctor", {"race": value}, i < 3) for i in range(10)]
    for alpha in (0, 1):
        table = skew_table(pool, alpha=alpha)
        assert len(table["doctor"]) == 5 and all(v == pytest.approx(0.0) for v in table["doctor"].values())


def test_sample_skew_takes_the_largest_magnitude_with_its_sign():
    table = {"chef": {("gender", "female"): -0.4, ("race", "asian"): 0.7, ("race", "black"): -0.9}}
    assert sample_skew(table, "chef", {"gender": "female", "race": "asian"}) == 0.7
    assert sample_skew(table, "chef", {"gender": "female", "race": "black"}) == -0.9
    assert sample_skew(table, "nurse", {"gender": "female"}) == 0.0


def test_resampler_expected_counts():
    # Non-positive skews: kept, |skew| accumulates; 0.6 + 0.6 passes tau2=1 once -> one extra copy of
    # sample 1 (accumulator 0.2); + 0.5 = 0.7; + 0.3 = 1.0 -> one extra copy of sample 3.
    assert resample_epoch([-0.6, -0.6, -0.5, -0.3], random.Random(0), shuffle=False) == [0, 1, 1, 2, 3, 3]
    assert sorted(resample_epoch([-0.6, -0.6, -0.5, -0.3], random.Random(0))) == [0, 1, 1, 2, 3, 3]
    # A positive skew of 1 is dropped with probability 1 / (1 + 1) = 0.5.
    kept = sum(len(resample_epoch([1.0], random.Random(seed))) for seed in range(4000))
    assert kept / 4000 == pytest.approx(0.5, abs=0.03)
    kept = sum(len(resample_epoch([3.0], random.Random(seed))) for seed in range(4000))
    assert kept / 4000 == pytest.approx(1 - 3 / 4, abs=0.03)


def test_the_resampled_epoch_is_shuffled_the_same_way_for_the_same_seed():
    # 10 sets of 2 members, every member owed an extra copy: unshuffled, copies and siblings sit side by side
    skews = [-1.0] * 20
    ordered = resample_epoch(skews, random.Random(3), shuffle=False)
    assert ordered == [i for i in range(20) for _ in range(2)]
    first, again = resample_epoch(skews, random.Random(3)), resample_epoch(skews, random.Random(3))
    assert first == again and sorted(first) == ordered
    adjacent = sum(a // 2 == b // 2 for a, b in zip(first, first[1:]))  # same set (or the same sample) in a row
    assert adjacent < 10  # 39 in the unshuffled order


def test_asd_loss_sums_each_answers_tokens_and_averages_the_weighted_samples():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 2, -100], [-100, 4, 0]])
    skews = [0.5, -1.0]
    token = torch.nn.functional.log_softmax(logits, dim=-1)
    ce = [-(token[0, 0, 1] + token[0, 1, 2]).item(), -(token[1, 1, 4] + token[1, 2, 0]).item()]
    expected = (math.exp(-0.5) * ce[0] + math.exp(1.0) * ce[1]) / 2
    assert asd_loss(logits, labels, skews).item() == pytest.approx(expected, rel=1e-5)
    mean = (math.exp(-0.5) * ce[0] / 2 + math.exp(1.0) * ce[1] / 2) / 2
    assert asd_loss(logits, labels, skews, token_reduction="mean").item() == pytest.approx(mean, rel=1e-5)


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


def test_asd_command_writes_the_weights_and_copies_worked_out_by_hand(tmp_path, capsys):
    from pipeline.commands.cli import main
    from tests.helpers import set_row, write_sets

    out = tmp_path / "out"
    write_sets(out, [set_row(i, "accepted") for i in range(4)])  # 4 chef sets, male and female each
    predictions = tmp_path / "answers.csv"
    lines = ["set_id,member_id,answer"] + [f"s{i}-gender,male,yes" for i in range(4)] + \
        ["s0-gender,female,yes"] + [f"s{i}-gender,female,no" for i in (1, 2, 3)]
    predictions.write_text("\n".join(lines) + "\n")
    weights = tmp_path / "weights.csv"
    assert main(["asd", str(out), "--predictions", str(predictions), "--out", str(weights), "--seed", "7"]) == 0
    printed = capsys.readouterr().out
    # positives: 4 male, 1 female of 4 each; add-one shares (4+1)/(5+2) = 5/7 and (1+1)/7 = 2/7 against 1/2
    male, female = math.log(10 / 7), math.log(4 / 7)
    assert "gender=male" in printed and f"{male:.3f}" in printed and f"{female:.3f}" in printed
    # copies: females (Skew < 0) accumulate 0.5596 each: 1, 2 (passes 1), 1, 2 (passes 2); each male (Skew > 0)
    # is kept when its draw from Random(7), taken in manifest order, is >= Skew / (Skew + 1)
    draws = random.Random(7)
    male_copies = [int(draws.random() >= male / (male + 1)) for _ in range(4)]
    rows = list(csv.DictReader(weights.open()))
    assert [(r["set_id"], r["member_id"]) for r in rows] == [(f"s{i}-gender", m) for i in range(4) for m in ("male", "female")]
    for i in range(4):
        m, f = rows[2 * i], rows[2 * i + 1]
        assert float(m["skew"]) == pytest.approx(male) and float(m["weight"]) == pytest.approx(0.7)
        assert float(f["skew"]) == pytest.approx(female) and float(f["weight"]) == pytest.approx(1.75)
        assert int(m["copies"]) == male_copies[i] and int(f["copies"]) == [1, 2, 1, 2][i]


def test_asd_command_refuses_unknown_ids_in_one_line(tmp_path, capsys):
    from pipeline.commands.cli import main
    from tests.helpers import set_row, write_sets

    out = tmp_path / "out"
    write_sets(out, [set_row(0, "accepted")])
    predictions = tmp_path / "answers.csv"
    predictions.write_text("set_id,member_id,answer\ns0-gender,male,0.9\ns7-gender,female,0.1\ns8-age,old,1\n")
    code = main(["asd", str(out), "--predictions", str(predictions), "--out", str(tmp_path / "w.parquet")])
    err = capsys.readouterr().err
    assert code == 4 and err.count("\n") == 1 and "2 row(s)" in err and "s7-gender/female, s8-age/old" in err
    code = main(["asd", str(out), "--predictions", str(predictions), "--out", str(tmp_path / "w.csv"), "--tau2", "0"])
    err = capsys.readouterr().err
    assert code == 4 and err.strip() == "error: --tau2 0.0: must be > 0"  # not an endless accumulation loop


def test_a_killed_asd_leaves_the_earlier_weights_file_whole(tmp_path, capsys):
    import os
    import subprocess
    import sys

    import pyarrow.parquet as pq

    from pipeline.commands.cli import main
    from tests.helpers import set_row, write_sets

    out = tmp_path / "out"
    write_sets(out, [set_row(i, "accepted") for i in range(2)])
    predictions, weights = tmp_path / "answers.csv", tmp_path / "weights.parquet"
    predictions.write_text("set_id,member_id,answer\ns0-gender,male,yes\ns0-gender,female,no\n"
                           "s1-gender,male,no\ns1-gender,female,yes\n")
    command = ["asd", str(out), "--predictions", str(predictions), "--out", str(weights)]
    assert main(command) == 0
    earlier = weights.read_bytes()
    predictions.write_text(predictions.read_text().replace("s1-gender,male,no", "s1-gender,male,yes"))
    marker = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "COUNTERFACTORY_INJECT_FAULTS": f"crash:asd:{marker}"}
    killed = subprocess.run([sys.executable, "-m", "pipeline", *command], env=env, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == 17 and marker.exists(), killed.stderr  # killed with the new file not yet in place
    assert weights.read_bytes() == earlier and pq.read_table(weights).num_rows == 4
    assert main(command) == 0  # the next run replaces it, and removes what the killed one left
    capsys.readouterr()
    assert weights.read_bytes() != earlier and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
