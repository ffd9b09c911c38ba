"""The output lock: exclusive between processes racing for it, alive while its holder loads models, taken over
only once its holder is gone; on a local folder and on a real S3 endpoint (moto's server on loopback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.output.lock import OutputLock, OutputRefused
from pipeline.output.lock_files import S3LockFile, lock_file
from pipeline.output.storage import Storage
from schemas.layout import LOCK_FILE
from tests.conftest import REPO

ROUNDS, RACERS = 8, 6

RACER = r"""
import sys, time
from pipeline.output.lock import OutputLock, OutputRefused
from pipeline.output.storage import Storage
out, start, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
won = []
for r in range(rounds):
    begin = start + r * 0.6
    while time.time() < begin:
        pass  # spin: every racer tries within the same few microseconds
    lock = OutputLock(Storage(out))
    try:
        lock.acquire()
    except OutputRefused:
        continue
    won.append(r)
    time.sleep(max(begin + 0.4 - time.time(), 0))  # held while the others try
    lock.release()
print(" ".join(map(str, won)))
"""


def test_processes_racing_for_a_free_lock_get_exactly_one_winner_each_time(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    start = time.time() + 4  # time for every interpreter to start and import
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(out), str(start), str(ROUNDS)], cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
              for _ in range(RACERS)]
    won = [r.communicate(timeout=120)[0].split() for r in racers]
    assert all(r.returncode == 0 for r in racers)
    winners = [sum(str(n) in w for w in won) for n in range(ROUNDS)]
    assert winners == [1] * ROUNDS, won
    assert not (out / LOCK_FILE).exists()


def test_a_holder_busy_for_longer_than_stale_after_keeps_its_lock(tmp_path):
    """The heartbeat runs from a thread: a run loading models for longer than stale_after still holds the lock
    against another host (the pid check applies only on the holder's own host)."""
    storage = Storage(str(tmp_path / "out"))
    first = OutputLock(storage, stale_after=0.5, host="host-a")
    first.acquire()
    time.sleep(1.5)  # "loading models": three times stale_after without writing a shard
    with pytest.raises(OutputRefused, match="being written by another run"):
        OutputLock(storage, stale_after=0.5, host="host-b").acquire()
    first.release()
    second = OutputLock(storage, stale_after=0.5, host="host-b")
    second.acquire()
    second.release()
    assert not storage.exists(LOCK_FILE)


# Seconds without a heartbeat before a lock counts as abandoned: the holder beats five times in that span, which
# even a machine under a load of 18 (both xdist workers' Ray runs) lets it do (at 0.5 s it once did not).
STALE = 3.0
HOLDER = r"""
import sys, time
STALE = float(sys.argv[2])
from pipeline.output.lock import OutputLock
from pipeline.output.storage import Storage
OutputLock(Storage(sys.argv[1]), stale_after=STALE, host="host-x").acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_the_lock_of_a_killed_holder_on_another_host_is_taken_over_once_its_heartbeat_stops(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(STALE)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout.readline().strip() == "held"
    time.sleep(STALE * 1.5)  # alive, beating: longer than stale_after, so only its heartbeats keep the lock
    storage = Storage(str(out))
    with pytest.raises(OutputRefused, match="host-x"):
        OutputLock(storage, stale_after=STALE, host="host-c").acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    time.sleep(STALE * 1.2)  # no heartbeat for longer than stale_after
    taker = OutputLock(storage, stale_after=STALE, host="host-c")
    taker.acquire()
    assert json.loads(storage.read_bytes(LOCK_FILE))["host"] == "host-c"
    taker.release()


def test_a_holder_whose_lock_was_taken_over_stops_at_its_next_shard(tmp_path):
    storage = Storage(str(tmp_path / "out"))
    lock = OutputLock(storage, stale_after=0.25)
    lock.acquire()
    lock.heartbeat()  # still ours: nothing happens
    storage.write_atomic(json.dumps({"token": "other", "host": "elsewhere", "pid": 1,
                                     "heartbeat": time.time()}).encode(), LOCK_FILE)
    time.sleep(0.3)  # the next beat finds the lock changed
    with pytest.raises(OutputRefused, match="took this output's lock over"):
        lock.heartbeat()
    lock.release()
    assert json.loads(storage.read_bytes(LOCK_FILE))["token"] == "other"  # not removed: it is not ours


def test_on_s3_the_lock_is_created_and_replaced_only_on_conditions(s3_endpoint):
    host_port = s3_endpoint.split("://", 1)[1]
    uri = f"s3://locks/out?endpoint_override={host_port}&scheme=http&region=us-east-1&allow_bucket_creation=true"
    storage = Storage(uri)
    storage.fs.create_dir("locks")
    file = lock_file(storage)
    assert isinstance(file, S3LockFile)
    first = file.create(b"first")
    assert first and file.create(b"second") is None  # IfNoneMatch='*': the second creator loses
    assert file.read() == (b"first", first)
    taken = file.replace(b"taker 1", first)
    assert taken and file.replace(b"taker 2", first) is None  # IfMatch: both saw 'first', one wins
    assert file.delete(first) is False and file.read()[0] == b"taker 1"
    assert file.delete(taken) and file.read() == (None, None)

    lock = OutputLock(storage)
    lock.acquire()
    with pytest.raises(OutputRefused, match="being written by another run"):
        OutputLock(storage).acquire()
    lock.release()
    assert not storage.exists(LOCK_FILE)
