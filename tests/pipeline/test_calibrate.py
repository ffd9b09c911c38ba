"""`counterfactory calibrate`: thresholds that agree with hand-written verdicts, worked out by hand here from the
manifest's own scores (never by the code under test), per attribute value, with too-few and not-available said."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.commands import cli
from pipeline.commands.calibrate import ALL, CHECKS, best_threshold, calibrate, member_decisions
from pipeline.config.loading import load_config
from pipeline.output.storage import Storage
from pipeline.review.catalog import Catalog
from pipeline.review.verdicts import VerdictStore
from schemas.records import SOURCE_COLUMNS

REPO = Path(__file__).resolve().parents[2]
CHECK = {c.name: c for c in CHECKS}
JUDGE = ("judge_attribute", "judge_concept", "judge_scene")


def _cli(capsys, *args: str) -> SimpleNamespace:
    code = cli.main([*args])
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)


def _in_shards(out: Path) -> list[dict]:
    return [r for r in pq.read_table(out / "manifest").to_pylist() if r["shard"] is not None]


def _groups(row: dict) -> list[str]:
    return [f"{a}={v}" for a, v in json.loads(row["attributes"]).items()]


def _flat(node: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


@pytest.fixture()
def copy(mini_output, tmp_path) -> Path:
    """The mini output as written before the judge (schema 3, no judge columns) and delta_l present but null (tomorrow's, judge off)."""
    out = tmp_path / "out"
    shutil.copytree(mini_output, out)
    for path in sorted((out / "manifest").glob("*.parquet")):
        table = pq.read_table(path)
        # as a schema-3 manifest written before the judge: no judge columns, none of schema 4's source columns
        table = table.drop_columns([c for c in (*JUDGE, *SOURCE_COLUMNS) if c in table.column_names])
        table = table.set_column(table.schema.get_field_index("schema_version"), "schema_version",
                                 pa.array([3] * table.num_rows, table.schema.field("schema_version").type))
        if "delta_l" in table.column_names:
            table = table.drop_columns(["delta_l"])
        table = table.append_column(pa.field("delta_l", pa.float32()), pa.nulls(table.num_rows, pa.float32()))
        pq.write_table(table, path)
    return out


def test_best_threshold_by_hand():
    minimum, maximum = CHECK["image_image"], CHECK["delta_l"]
    # scores .1 reject, .2 accept, .3 reject, .4 accept: t=.15 and t=.35 each get 3 of 4 right, pass-all 2 of 4
    samples = [(0.1, False), (0.2, True), (0.3, False), (0.4, True)]
    assert best_threshold(minimum, samples, None)[::2] == (pytest.approx(0.15), 0.75)  # no config: the lowest
    assert best_threshold(minimum, samples, 0.5)[0] == pytest.approx(0.35)  # the one closest to the config's
    assert best_threshold(minimum, samples, 0.2)[0] == pytest.approx(0.15)
    # a maximum on |score|: |-1|, 2 accepted, |-5|, 7 rejected -> between 2 and 5, every verdict right
    t, text, agreement = best_threshold(maximum, [(-1.0, True), (2.0, True), (-5.0, False), (7.0, False)], None)
    assert 2.0 < t < 5.0 and agreement == 1.0 and float(text) == t
    # all accepted under a maximum: the candidate above the highest |score| wins
    assert best_threshold(maximum, [(-3.0, True), (1.0, True), (0.5, False)], None)[0] > 3.0
    # two close scores: written with enough decimals to stay strictly between them
    t, text, _ = best_threshold(minimum, [(0.91381, False), (0.91383, True)], None)
    assert 0.91381 < float(text) < 0.91383 and t == float(text)


def test_calibrates_image_image_overall_and_per_value(copy, tmp_path, capsys):
    rows = _in_shards(copy)
    values = sorted({r["image_image"] for r in rows})
    genders = {g for r in rows for g in _groups(r) if g.startswith("gender=")}
    assert len(genders) == 2

    def splits_every_gender(hi: float) -> bool:
        return all(len({r["image_image"] >= hi for r in rows if g in _groups(r)}) == 2 for g in genders)

    # the cut: accept exactly the members whose image_image is at least `hi`, reject those at most `lo`
    middle = len(values) // 2
    lo, hi = next((values[i], values[i + 1]) for i in sorted(range(len(values) - 1), key=lambda i: abs(i - middle))
                  if splits_every_gender(values[i + 1]))
    ann = VerdictStore(Storage(str(copy)), "ann")
    for r in rows:
        ann.add(r["set_id"], r["member_id"], "accept" if r["image_image"] >= hi else "reject", None)
    sizes = {g: sum(g in _groups(r) for r in rows) for r in rows for g in _groups(r)}
    needed = min(sizes[g] for g in genders)
    small = sorted(g for g, n in sizes.items() if n < needed)
    assert small, "the mini output has groups smaller than a gender's (race values on race_gender)"

    fragment_file = tmp_path / "calibrated.yaml"
    done = _cli(capsys, "calibrate", str(copy), "--min-verdicts", str(needed), "--write", str(fragment_file))
    assert done.returncode == 0, done.stderr
    fragment = yaml.safe_load(fragment_file.read_text())
    threshold = fragment["filter"]["thresholds"]["image_image"]
    assert lo < threshold < hi
    found = {(r.check, r.group): r for r in calibrate(str(copy), needed).results}
    overall = found[("image_image", ALL)]
    assert overall.agreement == 1.0 and overall.verdicts == len(rows) and overall.threshold == threshold
    line = next(x for x in done.stdout.splitlines() if x.startswith("image_image") and f" {ALL} " in x)
    assert f" {len(rows)} " in line and overall.text in line and " 1.00 " in line
    for g in genders:  # each gender's own cut: its highest reject and lowest accept
        lo_g = max(r["image_image"] for r in rows if g in _groups(r) and r["image_image"] < hi)
        hi_g = min(r["image_image"] for r in rows if g in _groups(r) and r["image_image"] >= hi)
        result = found[("image_image", g)]
        assert lo_g < result.threshold < hi_g and result.agreement == 1.0 and result.verdicts == sizes[g]
        assert f"# {g}: {result.text} (agreement 1.00 on {sizes[g]} verdicts)" in fragment_file.read_text()
    for g in small:
        too_few = f"{sizes[g]} verdicts: too few to set a threshold (needs {needed})"
        assert found[("image_image", g)].threshold is None and too_few in done.stdout
    # a null score skips the row: the identity member has no directional
    assert found[("directional", ALL)].verdicts == sum(r["directional"] is not None for r in rows)
    assert "judge_concept     not available: no judge_concept column in the manifest" in done.stdout
    assert "delta_l           not available: no score for any of the" in done.stdout
    assert "filter.judge.thresholds.judge_concept not set: not available" in fragment_file.read_text()
    # the fragment is a config override the loader takes as it is
    loaded = load_config(REPO / "configs" / "mini.yaml", _flat(fragment)).config
    assert loaded.filter.thresholds.image_image == threshold
    assert set(_flat(fragment)) <= {f"filter.thresholds.{n}" for n in ("text_image", "directional", "image_image",
                                                                       "attribute_margin")}


def test_the_majority_decides_a_tie_is_dropped_and_a_set_verdict_counts_for_each_member(copy):
    rows = _in_shards(copy)
    set_id = rows[0]["set_id"]
    first, second = sorted(r["member_id"] for r in rows if r["set_id"] == set_id)[:2]
    storage = Storage(str(copy))
    VerdictStore(storage, "ann").add(set_id, None, "accept", None)
    VerdictStore(storage, "bob").add(set_id, first, "reject", "blurry")
    members = Catalog(storage).members_of()
    decided, ties, reviewers = member_decisions(storage, members)
    assert (set_id, first) not in decided and ties == 1  # ann accept, bob reject
    assert decided[(set_id, second)] == "accept" and reviewers == ["ann", "bob"]
    VerdictStore(storage, "cy").add(set_id, first, "reject", None)
    decided, ties, _ = member_decisions(storage, members)
    assert decided[(set_id, first)] == "reject" and ties == 0
    assert len(decided) == len(members[set_id])


def test_too_few_verdicts_by_default_and_bad_input_is_one_line(copy, tmp_path, capsys):
    refused = _cli(capsys, "calibrate", str(copy))
    assert refused.returncode == 4 and "no reviews/ folder" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0
    missing = _cli(capsys, "calibrate", str(tmp_path / "nowhere"))
    assert missing.returncode == 5 and "no such output folder" in missing.stderr
    rows = _in_shards(copy)[:12]
    ann = VerdictStore(Storage(str(copy)), "ann")
    for n, r in enumerate(rows):
        ann.add(r["set_id"], r["member_id"], "accept" if n % 2 else "reject", None)
    done = _cli(capsys, "calibrate", str(copy))
    assert done.returncode == 0, done.stderr
    assert f"{len(rows)} verdicts: too few to set a threshold (needs 20)" in done.stdout
    assert yaml.safe_load(done.stdout.split("\n\n", 1)[1]) == {}  # no threshold set: an empty fragment
