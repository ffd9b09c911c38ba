"""Hostile inputs through the whole pipeline: ``verify`` passes, and every input is accounted for in the manifest
(inputs == seeds processed + seeds in error). The folder corpus goes through ``counterfactory run`` on Ray (exit 0);
the parquet list and the tar through the local executor: the same listing, stages and shard writer, without
paying for a Ray run each, since the executor is not what is on trial here."""

import io
import json
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.commands import cli
from pipeline.config.loading import load_config
from pipeline.execution.local import run_local
from pipeline.output.verify import verify_output
from tests.conftest import REPO
from tests.helpers import HOSTILE_FOLDER_ERRORS, png_bytes, write_hostile_folder

QUICK = [  # one axis, one candidate, a few small steps: the inputs are on trial here, not the models
    "plan.axes=[gender]", "plan.candidates_per_set=1", "edit.steps=2", "edit.resolution=32",
    "input.min_side=8", "input.max_pixels=250000",
]


def run(input_kind: str, path, out) -> int:
    overrides = QUICK + [f"input.kind={input_kind}", f"input.path={path}"]
    args = ["run", str(REPO / "configs" / "mini.yaml"), "--output", str(out), "--no-report"]
    return cli.main(args + [arg for o in overrides for arg in ("--set", o)])


def run_here(input_kind: str, path, out) -> None:
    overrides = cli.parse_overrides(QUICK + [f"input.kind={input_kind}", f"input.path={path}"])
    run_local(load_config(REPO / "configs" / "mini.yaml", overrides), str(out))


def seeds_in_manifest(out) -> dict[int, dict]:
    """One entry per input (seed_index) with its seed status and the reasons given for it."""
    by_seed: dict[int, dict] = {}
    for row in pq.read_table(out / "manifest").to_pylist():
        entry = by_seed.setdefault(row["seed_index"], {"uri": row["source_uri"], "member": row["source_member"],
                                                      "seed_status": row["seed_status"], "reasons": set()})
        entry["reasons"].add(row["reason"] or "")
    return by_seed


def check_accounted(out, inputs: int) -> dict[int, dict]:
    assert verify_output(str(out))[0] == []
    seeds = seeds_in_manifest(out)
    assert sorted(seeds) == list(range(inputs))  # no input vanished
    processed = [s for s in seeds.values() if s["seed_status"] == "ok"]
    errors = [s for s in seeds.values() if s["seed_status"] == "error"]
    assert len(processed) + len(errors) == inputs
    for seed in errors:
        assert all(seed["reasons"]), seed  # every error row says why
    stats = json.loads((out / "stats.json").read_text())
    assert stats["seeds"]["total"] == inputs
    return seeds


def test_a_folder_of_hostile_files_runs_to_exit_0_with_every_file_accounted_for(local_ray, tmp_path):
    root = write_hostile_folder(tmp_path)
    out = tmp_path / "out"
    assert run("folder", root, out) == 0
    seeds = check_accounted(out, len(os.listdir(root)))
    by_name = {os.path.basename(s["uri"]): s for s in seeds.values()}
    for name, reason in HOSTILE_FOLDER_ERRORS.items():
        assert by_name[name]["seed_status"] == "error" and any(reason in r for r in by_name[name]["reasons"]), name
    # the same image under two names: generated once, the copy recorded as a duplicate of the first
    copies = [by_name["copy_a.png"], by_name["copy_b.png"]]
    assert [any("duplicate: same image as seed_index" in r for r in c["reasons"]) for c in copies] == [False, True]
    assert [c["seed_status"] for c in copies] == ["ok", "error"]
    for name in ("alpha.png", "palette.png", "cmyk.jpg", "sixteen.png", "gray.png", "latin1-\\xe9t\\xe9.png"):
        assert by_name[name]["seed_status"] == "ok", name


def test_a_parquet_list_with_missing_paths_and_null_rows_is_accounted_for(tiny_cache, tmp_path):
    (tmp_path / "good.png").write_bytes(png_bytes(48, 48, (90, 60, 30)))
    (tmp_path / "text.jpg").write_bytes(b"not an image")
    table = pa.table({"path": ["good.png", "missing.png", None, "text.jpg", str(tmp_path)],
                      "concept": ["chef", None, None, "chef", None]})
    pq.write_table(table, tmp_path / "seeds.parquet")
    out = tmp_path / "out"
    run_here("parquet", tmp_path / "seeds.parquet", out)
    seeds = check_accounted(out, 5)
    assert [seeds[i]["seed_status"] for i in range(5)] == ["ok", "error", "error", "error", "error"]
    assert any("no path given" in r for r in seeds[2]["reasons"])


def test_a_webdataset_tar_with_a_sample_without_an_image_is_accounted_for(tiny_cache, tmp_path):
    good = io.BytesIO()
    Image.new("RGB", (40, 40), (20, 120, 40)).save(good, "JPEG")
    members = [("a001.jpg", good.getvalue()), ("a001.txt", b"a man at a desk"),
               ("a002.txt", b"a caption whose image is missing"), ("a003.jpg", b"garbage bytes")]
    with tarfile.open(tmp_path / "seeds-000000.tar", "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "out"
    run_here("webdataset", tmp_path / "seeds-000000.tar", out)
    seeds = check_accounted(out, 3)
    assert [seeds[i]["seed_status"] for i in range(3)] == ["ok", "error", "error"]
    assert any("has no image" in r for r in seeds[1]["reasons"])


@pytest.fixture(autouse=True)
def _quiet(capsys):
    yield  # the run prints its summary; keep test output readable
