"""A real single-node Slurm on this machine for tests: munged, slurmctld and slurmd from Debian's slurm-wlm and
munge, each with its own socket, ports, state directories and key under a temp dir, stopped by pid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.ray_cluster import free_port

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sacct", "scontrol")


def find(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)),
                                      None)


def missing() -> list[str]:
    return [name for name in DAEMONS if name != "sacct" and find(name) is None]


SLURM_CONF = """\
ClusterName=cftest
SlurmctldHost={host}({addr})
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
SchedulerType=sched/builtin
SlurmdTimeout=300
InactiveLimit=0
KillWait=10
# The test declares more CPUs than the machine has (so that Ray can only have counted them from Slurm).
SlurmdParameters=config_overrides
NodeName={host} NodeAddr={addr} CPUs={cpus} State=UNKNOWN
PartitionName=cftest Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    def __init__(self, cpus: int = 2):
        self.root = Path(tempfile.mkdtemp(prefix="cfslurm-", dir="/tmp"))  # short: munge's socket path
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.pids: list[int] = []

    def _daemon(self, *argv: str) -> None:
        result = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{argv[0]}: {result.stdout}{result.stderr}"

    def start(self) -> "LocalSlurm":
        munge = self.root / "munge"
        munge.mkdir(mode=0o700)
        key = munge / "munge.key"
        self._daemon(find("mungekey"), "--create", f"--keyfile={key}")
        self._daemon(find("munged"), f"--socket={munge}/munge.socket", f"--key-file={key}",
                     f"--log-file={munge}/munged.log", f"--pid-file={munge}/munged.pid",
                     f"--seed-file={munge}/munged.seed", "--force")
        self.pids.append(self._read_pid(munge / "munged.pid"))
        for sub in ("state", "spool"):
            (self.root / sub).mkdir()
        self.conf.write_text(SLURM_CONF.format(
            host=self.host, addr="127.0.0.1", ctld_port=free_port(), d_port=free_port(), root=self.root,
            cpus=self.cpus, user=os.environ.get("USER") or "root"))
        self._daemon(find("slurmctld"), "-f", str(self.conf), "-i")  # -i: no earlier state to recover
        self.pids.append(self._read_pid(self.root / "slurmctld.pid"))
        self._daemon(find("slurmd"), "-f", str(self.conf), "-N", self.host)
        self.pids.append(self._read_pid(self.root / "slurmd.pid"))
        deadline = time.time() + 60
        while time.time() < deadline:
            state = subprocess.run([find("scontrol"), "show", "node", self.host], env=self.env,
                                   capture_output=True, text=True).stdout
            if "State=IDLE" in state:
                return self
            time.sleep(1)
        raise AssertionError(f"the Slurm node never became idle:\n{state}\n{self.logs()}")

    @staticmethod
    def _read_pid(path: Path, wait: float = 30) -> int:
        deadline = time.time() + wait
        while time.time() < deadline:
            if path.exists() and path.read_text().strip():
                return int(path.read_text().split()[0])
            time.sleep(0.2)
        raise AssertionError(f"no pid file {path}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.root.rglob("*.log")))

    def sbatch(self, *args: str, cwd: Path, env: dict) -> str:
        result = subprocess.run([find("sbatch"), "--parsable", *args], cwd=cwd, env={**env, **self._slurm_env()},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr + self.logs()
        return result.stdout.strip().split(";")[0]

    def _slurm_env(self) -> dict:
        return {"SLURM_CONF": str(self.conf)}

    def wait(self, job_id: str, timeout: float) -> str:
        """The job's final state (COMPLETED, FAILED, ...), from scontrol while slurmctld remembers it."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            shown = subprocess.run([find("scontrol"), "show", "job", job_id], env=self.env, capture_output=True,
                                   text=True).stdout
            state = next((w.split("=", 1)[1] for w in shown.split() if w.startswith("JobState=")), "")
            if state and state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
                return state
            time.sleep(2)
        subprocess.run([find("scancel") or "scancel", job_id], env=self.env)
        raise AssertionError(f"job {job_id} still {state} after {timeout} s\n{self.logs()}")

    def stop(self) -> None:
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
