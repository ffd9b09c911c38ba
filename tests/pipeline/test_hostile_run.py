"""Hostile inputs through the whole pipeline: ``verify`` passes, and each input is in the manifest with the
status and reason written out for it by hand (tests.hostile_inputs), the counts in stats.json counted by hand.

All three go through the local executor: the same listing, stages and shard writer as ``counterfactory run``,
without paying for a Ray run each, since the inputs are on trial here, not the executor (the Ray path's
duplicates and error rows are the end-to-end tests'). The folder is the corpus of tests/stages/test_hostile_seeds.py;
the parquet list is on a bucket (moto's S3 server) and names local files, a metadata URL and a device."""

import io
import json
import os

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.commands import cli
from pipeline.config.loading import load_config
from pipeline.execution.local import run_local
from pipeline.output.verify import verify_output
from tests.conftest import REPO
from tests.helpers import png_bytes
from tests.hostile_inputs import EPS, HOSTILE_FOLDER, write_hostile_folder, write_hostile_tar

QUICK = [  # one axis, one candidate, a few small steps: the inputs are on trial here, not the models
    "plan.axes=[gender]", "plan.candidates_per_set=1", "edit.steps=2", "edit.resolution=32",
    "input.min_side=8", "input.max_pixels=250000",
]
OUTSIDE = "is outside what this list may name"
# header_big.png is over Pillow's limit: Pillow warns, as it should, and ingest refuses it (over max_pixels)
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def run_here(input_kind: str, path, out, *extra: str) -> None:
    overrides = cli.parse_overrides(QUICK + [f"input.kind={input_kind}", f"input.path={path}", *extra])
    run_local(load_config(REPO / "configs" / "mini.yaml", overrides), str(out))


def seeds_in_manifest(out) -> list[dict]:
    """One entry per input, in seed_index order, with its seed status and the reasons given for it."""
    by_seed: dict[int, dict] = {}
    for row in pq.read_table(out / "manifest").to_pylist():
        entry = by_seed.setdefault(row["seed_index"], {"uri": row["source_uri"], "member": row["source_member"],
                                                      "seed_status": row["seed_status"], "reasons": set()})
        entry["reasons"].add(row["reason"] or "")
    assert sorted(by_seed) == list(range(len(by_seed)))  # no gap: no input vanished
    return [by_seed[i] for i in sorted(by_seed)]


def check(out, expected: list[tuple[str, str, str | None]], key) -> None:
    """``expected``: (name, seed status, a reason it must give) per input in listing order; ``key`` names a seed."""
    assert verify_output(str(out))[0] == []
    seeds = seeds_in_manifest(out)
    assert [key(s) for s in seeds] == [name for name, _, _ in expected]
    for seed, (name, status, reason) in zip(seeds, expected):
        assert seed["seed_status"] == status, (name, seed)
        if reason is not None:
            assert any(reason in r for r in seed["reasons"]), (name, reason, seed["reasons"])
    stats = json.loads((out / "stats.json").read_text())["seeds"]
    counted = {"ok": sum(s == "ok" for _, s, _ in expected), "error": sum(s == "error" for _, s, _ in expected)}
    assert stats == {"total": len(expected), **counted}


def test_a_folder_of_hostile_files_is_accounted_for_file_by_file(tiny_cache, tmp_path):
    root = write_hostile_folder(tmp_path)
    out = tmp_path / "out"
    run_here("folder", root, out)
    # listing order: the names' bytes sorted. The copy of copy_a.png: the local executor claims seeds in the same
    # registry as a Ray run (one dedupe rule), so the seed itself is a duplicate of copy_a.png's, before any edit
    names = [n.decode("utf-8", "backslashreplace") for n in sorted(os.listdir(os.fsencode(root)))]
    expected = [(name, "ok" if HOSTILE_FOLDER[name] is None else "error", HOSTILE_FOLDER[name]) for name in names]
    copy_b = names.index("copy_b.png")
    expected[copy_b] = ("copy_b.png", "error", f"duplicate: same image as seed_index {names.index('copy_a.png')}")
    assert sum(status == "ok" for _, status, _ in expected) == 9 and len(expected) == 24  # counted by hand
    check(out, expected, key=lambda s: os.path.basename(s["uri"]))


def test_a_parquet_list_on_a_bucket_is_accounted_for_row_by_row(tiny_cache, s3_endpoint, tmp_path):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="hostile")
    large = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(large, "PNG")
    assert len(large.getvalue()) > 20_000
    for key, body in (("good.png", png_bytes(48, 48, (90, 60, 30))), ("text.jpg", b"not an image"),
                      ("eps.jpg", EPS), ("large.png", large.getvalue())):
        s3.put_object(Bucket="hostile", Key=f"l/{key}", Body=body)
    paths = ["good.png", "missing.png", None, "text.jpg", "/etc/hostname", "file:///etc/passwd",
             "http://169.254.169.254/latest/meta-data/", "/dev/zero", "eps.jpg", "large.png"]
    listed = io.BytesIO()
    pq.write_table(pa.table({"path": paths, "concept": ["chef"] + [None] * 9}), listed)
    s3.put_object(Bucket="hostile", Key="l/seeds.parquet", Body=listed.getvalue())
    out = tmp_path / "out"
    run_here("parquet", "s3://hostile/l/seeds.parquet", out, "input.max_bytes=20000")
    expected = [
        ("s3://hostile/l/good.png", "ok", None),
        ("s3://hostile/l/missing.png", "error", "cannot read input"),
        ("", "error", "no path given"),
        ("s3://hostile/l/text.jpg", "error", "not a decodable image"),
        ("/etc/hostname", "error", f"path /etc/hostname {OUTSIDE}"),
        ("file:///etc/passwd", "error", f"path file:///etc/passwd {OUTSIDE}"),
        (paths[6], "error", f"path {paths[6]} {OUTSIDE}"),
        ("/dev/zero", "error", f"path /dev/zero {OUTSIDE}"),
        ("s3://hostile/l/eps.jpg", "error", "image format EPS (by its first bytes) is not accepted"),
        ("s3://hostile/l/large.png", "error", f"input is {len(large.getvalue())} bytes, over input.max_bytes=20000"),
    ]
    check(out, expected, key=lambda s: s["uri"])


def test_a_webdataset_tar_is_accounted_for_member_by_member(tiny_cache, tmp_path):
    members = write_hostile_tar(tmp_path / "seeds-000000.tar")
    out = tmp_path / "out"
    run_here("webdataset", tmp_path / "seeds-000000.tar", out, "input.max_bytes=20000")
    expected = [(member, "ok" if reason is None else "error", reason) for member, reason in members]
    assert [status for _, status, _ in expected].count("ok") == 2 and len(expected) == 12  # counted by hand
    check(out, expected, key=lambda s: s["member"])


@pytest.fixture(autouse=True)
def _quiet(capsys):
    yield  # the run prints its summary; keep test output readable
