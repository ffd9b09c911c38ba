"""A first run's output, as `make demo` shows it to a newcomer: the project's progress and summary only, no line
that reads as an error or a warning about their setup (Ray's, or the tiny-model build's)."""

import os
import re
import subprocess
import sys

from tests.conftest import REPO

# The project's own stderr lines: its notes ("counterfactory: wrote mini-000000.tar ...") and progress lines.
PROJECT_LINE = re.compile(r"(counterfactory|progress): \S")
# Kept on purpose: Ray Data's warning that its first operator has waited 60 s for resources, the one sign of a
# run that would hang. A machine busy with other work shows it for a while (seen here under a load of 40).
HANG_WARNING = re.compile(r".* WARNING resource_manager\.py:\d+ -- Cluster resources are not enough to run any task")


def test_a_first_run_prints_only_the_projects_progress_and_summary(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") or k == "RAY_USAGE_STATS_ENABLED"}
    # A fresh clone: no tiny models yet, no Ray token of the user's own, Ray started by the run.
    env.update(COUNTERFACTORY_CACHE=str(tmp_path / "cache"), HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    # All of `make demo`'s run: some of Ray Data's warnings come only after 30 s of a run.
    run = subprocess.run([sys.executable, "-m", "pipeline", "run", "configs/mini.yaml", "--output",
                          str(tmp_path / "out")], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    foreign = [line for line in run.stderr.splitlines()
               if line.strip() and not PROJECT_LINE.match(line) and not HANG_WARNING.match(line)]
    assert foreign == [], "\n".join(foreign)
    assert "seeds:      7 listed, 6 decoded, 1 errors" in run.stdout  # configs/mini_seeds: 7 files, one broken
    assert any(line.startswith("progress: seeds 7/7") for line in run.stderr.splitlines()), run.stderr[-2000:]


NATIVE_WRITER = """
import os, sys
from pipeline.commands.native_log import native_stderr_to_file
try:
    with native_stderr_to_file() as path:
        os.write(2, b"[2026-12-02 19:33:37,829 E 8060 8060] core_worker.cc:2465: native\\n")
        print("progress: python", file=sys.stderr)
        print(path)
        if sys.argv[1] == "fail":
            raise RuntimeError("boom")
except RuntimeError:
    print("counterfactory: failed", file=sys.stderr)
os.write(2, b"after\\n")
"""


def test_native_writes_to_stderr_go_to_a_file_kept_only_when_the_run_fails(tmp_path):
    ok = subprocess.run([sys.executable, "-c", NATIVE_WRITER, "ok"], cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert ok.stderr == "progress: python\nafter\n"
    assert not os.path.exists(ok.stdout.strip())
    failed = subprocess.run([sys.executable, "-c", NATIVE_WRITER, "fail"], cwd=REPO, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    kept = failed.stdout.strip()
    assert failed.stderr == (f"progress: python\ncounterfactory: Ray's native log lines of this run are in {kept}\n"
                             "counterfactory: failed\nafter\n")
    with open(kept) as handle:
        assert handle.read() == "[2026-12-02 19:33:37,829 E 8060 8060] core_worker.cc:2465: native\n"
    os.unlink(kept)
