"""On Ray a run writes each shard as its seeds finish, while later seeds are still being edited (issue 34): not
every shard at the end of the run, which a run stopped early would have lost."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.config.loading import load_config
from pipeline.execution.run import run_pipeline
from schemas.layout import MANIFEST_DIR
from stages.edit import registry
from tests.conftest import REPO
from tests.helpers import noise_image
from tests.pipeline.test_backend_registry import TintEditor

SEEDS, SEEDS_PER_SHARD, EDIT_SECONDS = 12, 2, 1.0


class SlowTintEditor(TintEditor):
    """The test tint backend, ``seconds`` slower a set; notes when it begins each set's edit in the file ``log``
    (set on a subclass made per test, which travels to the editor actor with the class)."""

    backend = "slow_tint"
    log: str = ""
    seconds: float = 0.0

    def edit_set(self, row: dict) -> list[dict]:
        with open(self.log, "a") as notes:
            notes.write(f"{time.time()} {row['seed_index']}\n")
        time.sleep(self.seconds)
        return super().edit_set(row)


@pytest.fixture
def slow_editor(tmp_path):
    log = tmp_path / "edit-starts.txt"
    registry.register(type("SlowTintEditor", (SlowTintEditor,), {"log": str(log), "seconds": EDIT_SECONDS}))
    yield log
    del registry.BACKENDS["slow_tint"]


def test_shards_are_written_while_later_seeds_are_still_being_edited(local_ray, slow_editor, tmp_path):
    folder = tmp_path / "seeds" / "chef"
    folder.mkdir(parents=True)
    for i in range(SEEDS):
        noise_image(i).save(folder / f"seed{i:02d}.png")
    # mini.yaml's CPU stages, each in a pool of its own as on a cluster (not the mini config's fused pools), one set
    # per batch after the planner (a stage waits for a whole batch of rows); one axis of 2 members, 1 candidate:
    # 12 sets of 1 s edits
    loaded = load_config(REPO / "configs" / "mini.yaml", {
        "input.path": str(folder.parent), "edit.backend": "slow_tint", "concept.model": None, "ray.fuse": [],
        "plan.axes": ["gender"], "plan.candidates_per_set": 1, "shards.seeds_per_shard": SEEDS_PER_SHARD,
        "edit.resources.batch_size": 1, "filter.resources.batch_size": 1, "encode.resources.batch_size": 1})
    out = tmp_path / "out"
    summary = run_pipeline(loaded, output=str(out), log=lambda line: None, report=False)

    assert len(summary.shards) == SEEDS // SEEDS_PER_SHARD
    starts = sorted(float(line.split()[0]) for line in slow_editor.read_text().splitlines())
    assert len(starts) == SEEDS  # one set a seed, each edited once
    first_shard = min(path.stat().st_mtime for path in (out / MANIFEST_DIR).iterdir())
    # Before: all six manifests appeared after the last edit had begun (and ended). Now the first is out while
    # at least a whole shard's worth of seeds has yet to begin its edit.
    assert sum(start > first_shard for start in starts) >= SEEDS_PER_SHARD
