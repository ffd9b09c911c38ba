"""Human review: verdicts saved per reviewer, agreement measured by the published formulas, and `review apply`
rewriting only what changed, deterministically, with the consumers' own reader seeing the result."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from pipeline.commands import cli
from pipeline.output.state import OutputRefused
from pipeline.output.storage import Storage
from pipeline.output.verify import verify_output
from pipeline.review.agreement import agreement, cohen_kappa, fleiss_kappa
from pipeline.review.apply import apply_review
from pipeline.review.verdicts import VerdictStore, output_verdicts
from stages.utils import faults

REPO = Path(__file__).resolve().parents[2]


def test_cohen_kappa_matches_the_worked_example():
    # Cohen's kappa, Wikipedia's worked example: 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> 0.4
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert cohen_kappa(["accept"] * 4, ["accept"] * 4) is None  # chance agreement 1: undefined


def test_fleiss_kappa_matches_fleiss_1971_table():
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories -> 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)


def test_agreement_uses_shared_sets_and_lists_disagreements():
    decisions = {"ann": {"a": "accept", "b": "reject", "c": "accept"},
                 "bob": {"a": "accept", "b": "accept", "d": "reject"}}
    found = agreement(decisions)
    assert found["method"] == "Cohen's kappa" and found["shared_sets"] == 2
    assert [d["set_id"] for d in found["disagreements"]] == ["b"]
    three = agreement({**decisions, "cy": {"a": "accept", "b": "reject"}})
    assert three["method"] == "Fleiss' kappa" and three["shared_sets"] == 2


def _write_verdicts(root: str, reviewer: str, set_ids: list[str]) -> None:
    store = VerdictStore(Storage(root), reviewer)
    for set_id in set_ids:
        store.add(set_id, None, "accept", None)


def test_concurrent_writers_lose_no_verdict(tmp_path):
    sets = [f"set{i}" for i in range(25)]
    context = multiprocessing.get_context("spawn")
    jobs = [context.Process(target=_write_verdicts, args=(str(tmp_path), reviewer, [f"{s}-{n}" for s in sets]))
            for n, reviewer in enumerate(["ann", "ann", "bob"])]  # two servers for ann at once, and bob
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(60)
        assert job.exitcode == 0
    rows = output_verdicts(Storage(str(tmp_path)))
    assert sum(r["reviewer"] == "ann" for r in rows) == 50
    assert sum(r["reviewer"] == "bob" for r in rows) == 25


def test_undo_brings_back_the_earlier_verdict(tmp_path):
    store = VerdictStore(Storage(str(tmp_path)), "ann")
    store.add("s-gender", None, "accept", None)
    store.add("s-gender", None, "reject", "artifacts or distortion")
    assert store.undo()["verdict"] == "reject"
    assert [r["verdict"] for r in store.rows()] == ["accept"]


@pytest.fixture()
def reviewed_copy(mini_output, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(mini_output, out)
    return out


def _fingerprint(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def _accepted_set(out: Path) -> tuple[str, list[str], str]:
    rows = [r for name in sorted((out / "manifest").glob("*.parquet")) for r in pq.read_table(name).to_pylist()]
    row = next(r for r in rows if r["status"] == "accepted")
    members = sorted({r["member_id"] for r in rows if r["set_id"] == row["set_id"] and r["status"] == "accepted"})
    return row["set_id"], members, row["shard"]


def _member_keys(out: Path) -> set[str]:
    urls = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    return {sample["__key__"] for sample in wds.WebDataset(urls, shardshuffle=False)}


def _hugging_face_reads(out: Path, cache: Path) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """What a user loading the output with HF datasets gets: member key -> sample JSON, set id -> its member keys."""
    import datasets

    def load(family: str, name: str):
        files = [str(p) for p in sorted((out / family).glob("*.tar"))]
        return datasets.load_dataset("webdataset", data_files={"train": files}, split="train", cache_dir=str(cache / name))

    members = {row["__key__"]: row["json"] for row in load("shards", "members")}
    sets = {row["__key__"]: [m["key"] for m in row["json"]["members"]] for row in load("sets", "sets")}
    return members, sets


def _manifest_shipped(out: Path) -> tuple[set[str], set[str]]:
    """Member keys and set ids the manifest says are in the shards (accepted, and not emptied by review)."""
    rows = [r for r in pq.read_table(out / "manifest").to_pylist() if r["status"] == "accepted" and r["shard"]]
    return {r["sample_key"] for r in rows}, {r["set_id"] for r in rows}


def test_apply_removes_a_vetoed_set_deterministically_and_a_withdrawn_veto_restores_it(reviewed_copy, tmp_path):
    out = reviewed_copy
    original = _fingerprint(out)
    set_id, members, tar = _accepted_set(out)
    other_tar = next(p.name for p in (out / "shards").glob("*.tar") if p.name != tar)
    store = VerdictStore(Storage(str(out)), "ann")
    store.add(set_id, members[0], "reject", "artifacts or distortion")

    result = apply_review(str(out))
    keys = _member_keys(out)
    assert not any(k.startswith(f"{set_id}-") for k in keys)  # mini filter needs every member: the set goes
    assert result.shards_rewritten == [tar] and result.sets_vetoed == 1
    assert verify_output(str(out))[0] == []
    after = _fingerprint(out)
    assert after[f"shards/{other_tar}"] == original[f"shards/{other_tar}"]  # untouched shard, same bytes
    manifest = pq.read_table(out / "manifest" / tar.replace(".tar", ".parquet")).to_pylist()
    vetoed = [r for r in manifest if r["set_id"] == set_id and r["status"] == "accepted"]
    assert {r["review_verdict"] for r in vetoed} == {"reject"} and all(r["shard"] is None for r in vetoed)
    assert "ann: artifacts or distortion" in next(r for r in vetoed if r["member_id"] == members[0])["review_reason"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["review"]["sets_vetoed"] == 1 and stats["review"]["reviewers"] == ["ann"]
    assert sum(json.loads((out / "sizes.json").read_text()).values()) == len(keys)
    assert "emptied 1 sets" in (out / "README.md").read_text()
    # the rewritten tars as a user's reader sees them: exactly what the manifest ships, the vetoed set gone
    members, sets = _hugging_face_reads(out, tmp_path / "hf-vetoed")
    shipped_members, shipped_sets = _manifest_shipped(out)
    assert set(members) == shipped_members == keys and set(sets) == shipped_sets and set_id not in sets
    assert sorted(k for ks in sets.values() for k in ks) == sorted(members)
    assert all(m["set_id"] != set_id for m in members.values())

    apply_review(str(out))
    assert _fingerprint(out) == after  # applying twice changes nothing

    store.undo()
    apply_review(str(out))
    restored = _fingerprint(out)
    assert restored[f"shards/{tar}"] == original[f"shards/{tar}"]
    assert restored[f"sets/{tar}"] == original[f"sets/{tar}"]
    assert verify_output(str(out))[0] == []
    members, sets = _hugging_face_reads(out, tmp_path / "hf-restored")
    assert set_id in sets and sorted(k for k in members if k.startswith(f"{set_id}-")) == sorted(sets[set_id])
    assert (set(members), set(sets)) == _manifest_shipped(out)


def test_majority_keeps_a_member_one_of_two_reviewers_rejects(reviewed_copy):
    out = reviewed_copy
    set_id, members, _ = _accepted_set(out)
    VerdictStore(Storage(str(out)), "ann").add(set_id, members[0], "reject", "attribute not changed")
    VerdictStore(Storage(str(out)), "bob").add(set_id, None, "accept", None)
    result = apply_review(str(out), policy="majority")
    assert result.sets_vetoed == 0 and any(k.startswith(f"{set_id}-") for k in _member_keys(out))
    assert apply_review(str(out), policy="any-reject").sets_vetoed == 1


def _cli(capsys, *args: str) -> SimpleNamespace:
    """The CLI in this process (it is the console script, test_cli shows): exit code, stdout, stderr."""
    code = cli.main([*args])
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)


def test_cli_refuses_an_unknown_set_in_one_line_and_prints_agreement(reviewed_copy, tmp_path, capsys):
    out = reviewed_copy
    set_id, members, _ = _accepted_set(out)
    bad = tmp_path / "team.csv"
    bad.write_text("set_id,member_id,verdict,reason,reviewer\nnot-a-set,,reject,blurry,cy\n")
    before = _fingerprint(out)
    refused = _cli(capsys, "review", "apply", str(out), "--verdicts", str(bad))
    assert refused.returncode == 4
    assert refused.stderr.strip().count("\n") == 0 and "unknown set 'not-a-set'" in refused.stderr
    assert _fingerprint(out) == before

    good = tmp_path / "team2.csv"
    good.write_text(f"set_id,member_id,verdict,reason,reviewer\n{set_id},,accept,,cy\n{set_id},{members[0]},reject,"
                    "blurry,dee\n")
    VerdictStore(Storage(str(out)), "cy").add(set_id, None, "accept", None)
    applied = _cli(capsys, "review", "apply", str(out), "--verdicts", str(good))
    assert applied.returncode == 0, applied.stderr
    assert "1 set(s)" in applied.stdout
    VerdictStore(Storage(str(out)), "dee").add(set_id, members[0], "reject", "blurry")
    stats = _cli(capsys, "review", str(out), "--stats")
    assert stats.returncode == 0, stats.stderr
    assert "Cohen's kappa" in stats.stdout and f"{set_id}: cy accept, dee reject (blurry)" in stats.stdout


def test_a_given_verdicts_file_is_kept_for_later_applies_and_min_members_is_the_filters_rule(reviewed_copy, tmp_path):
    out = reviewed_copy
    run = json.loads((out / "run.json").read_text())
    run["config"]["filter"]["min_members"] = 3  # more than a gender set has: the filter asks for all of them
    (out / "run.json").write_text(json.dumps(run))
    assert apply_review(str(out)).sets_vetoed == 0  # no verdict, nothing removed

    set_id, members, _ = _accepted_set(out)
    team = tmp_path / "team.csv"
    team.write_text(f"set_id,member_id,verdict,reason,reviewer,time\n{set_id},{members[0]},reject,blurry,cy,"
                    "2026-01-02\n")
    assert apply_review(str(out), files=[str(team)]).sets_vetoed == 1
    team.unlink()
    assert apply_review(str(out)).sets_vetoed == 1  # the file's verdicts were kept in reviews/imported/
    row = next(r for r in pq.read_table(out / "manifest").to_pylist()
               if r["set_id"] == set_id and r["member_id"] == members[0] and r["status"] == "accepted")
    assert row["review_votes"] == "cy reject (blurry)"


def test_the_server_takes_writes_only_as_json_from_a_loopback_host(mini_output):
    from pipeline.review.server import create_app

    client = create_app(str(mini_output), "ann").test_client()
    set_id = client.get("/api/state").get_json()["sets"][0]["set_id"]
    assert client.post("/api/verdict", data={"set_id": set_id, "verdict": "reject"}).status_code == 403  # a form
    assert client.get("/api/state", headers={"Host": "evil.example:8765"}).status_code == 403  # DNS rebinding
    assert client.post("/api/undo", json={}, headers={"Origin": "http://evil.example"}).status_code == 403
    assert not (mini_output / "reviews").exists()


def _accepted_sets_of(out: Path, tar: str) -> list[str]:
    rows = pq.read_table(out / "manifest" / tar.replace(".tar", ".parquet")).to_pylist()
    return sorted({r["set_id"] for r in rows if r["shard"] is not None})


def test_an_apply_killed_between_the_tars_and_the_manifest_is_finished_by_the_next(reviewed_copy, tmp_path):
    out = reviewed_copy
    original = _fingerprint(out)
    set_id, members, tar = _accepted_set(out)
    store = VerdictStore(Storage(str(out)), "ann")
    store.add(set_id, members[0], "reject", "artifacts or distortion")
    marker = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), faults.ENV: f"crash:review_apply:{marker}"}
    killed = subprocess.run([sys.executable, "-m", "pipeline", "review", "apply", str(out)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == 17 and marker.exists(), killed.stderr  # os._exit at the fault point
    manifest = f"manifest/{tar.replace('.tar', '.parquet')}"
    after_kill = _fingerprint(out)
    assert after_kill[f"shards/{tar}"] != original[f"shards/{tar}"] and after_kill[manifest] == original[manifest]
    assert verify_output(str(out))[0] != []  # the tars renamed, the manifest not written: what the kill left

    store.undo()  # the veto withdrawn: the manifest is as the run wrote it, the tars are not
    apply_review(str(out))
    assert verify_output(str(out))[0] == []
    restored = _fingerprint(out)
    assert restored[f"shards/{tar}"] == original[f"shards/{tar}"] and restored[f"sets/{tar}"] == original[f"sets/{tar}"]
    assert {f"{set_id}-{m}" for m in members} <= _member_keys(out)  # webdataset sees the set again
    assert not (out / "reviews" / "apply-pending.json").exists()


def test_originals_a_later_run_made_stale_are_refreshed_not_rebuilt_from(reviewed_copy, mini_output, tmp_path):
    # An earlier, smaller run: its shard lacked set `added`; a review apply kept that shard under originals/.
    set_id, _, tar = _accepted_set(reviewed_copy)
    added, vetoed = [s for s in _accepted_sets_of(reviewed_copy, tar) if s != set_id][:2]
    VerdictStore(Storage(str(reviewed_copy)), "ann").add(added, None, "reject", "stands in for a seed not yet listed")
    apply_review(str(reviewed_copy))
    smaller = {folder: (reviewed_copy / folder / tar).read_bytes() for folder in ("shards", "sets")}
    # The larger run rewrote the shard (all its sets, a fresh manifest); the old copies are still there.
    out = tmp_path / "rerun"
    shutil.copytree(mini_output, out)
    for folder, data in smaller.items():
        (out / "reviews" / "originals" / folder).mkdir(parents=True, exist_ok=True)
        (out / "reviews" / "originals" / folder / tar).write_bytes(data)
    VerdictStore(Storage(str(out)), "bob").add(vetoed, None, "reject", "blurry")
    apply_review(str(out))
    assert verify_output(str(out))[0] == []
    keys = _member_keys(out)
    assert any(k.startswith(f"{added}-") for k in keys) and not any(k.startswith(f"{vetoed}-") for k in keys)
    for folder in ("shards", "sets"):  # refreshed from the run's tar in place
        assert (out / "reviews" / "originals" / folder / tar).read_bytes() == (mini_output / folder / tar).read_bytes()


def test_originals_that_match_no_record_are_refused_in_one_line(reviewed_copy):
    out = reviewed_copy
    set_id, members, tar = _accepted_set(out)
    store = VerdictStore(Storage(str(out)), "ann")
    store.add(set_id, members[0], "reject", "blurry")
    apply_review(str(out))
    other = next(p.name for p in (out / "shards").glob("*.tar") if p.name != tar)
    (out / "reviews" / "originals" / "shards" / tar).write_bytes((out / "shards" / other).read_bytes())
    before = _fingerprint(out)
    store.undo()
    with pytest.raises(OutputRefused) as refused:
        apply_review(str(out))
    assert f"reviews/originals/shards/{tar}" in str(refused.value) and "\n" not in str(refused.value)
    assert {k: v for k, v in _fingerprint(out).items() if not k.startswith("reviews/")} == {
        k: v for k, v in before.items() if not k.startswith("reviews/")}


def test_two_verdicts_files_of_one_name_are_both_kept(reviewed_copy, tmp_path):
    out = reviewed_copy
    set_id, members, tar = _accepted_set(out)
    other = next(s for s in _accepted_sets_of(out, tar) if s != set_id)
    files = []
    for folder, target in (("team_a", set_id), ("team_b", other)):
        (tmp_path / folder).mkdir()
        files.append(tmp_path / folder / "verdicts.csv")
        files[-1].write_text(f"set_id,member_id,verdict,reason,reviewer\n{target},,reject,blurry,{folder}\n")
    assert apply_review(str(out), files=[str(f) for f in files]).sets_vetoed == 2
    for f in files:
        f.unlink()
    assert apply_review(str(out)).sets_vetoed == 2  # both files' verdicts were kept in reviews/imported/
    assert len(list((out / "reviews" / "imported").glob("*.parquet"))) == 2
