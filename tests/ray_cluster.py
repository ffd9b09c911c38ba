"""A real multi-node Ray cluster on this machine for tests: a head and worker nodes started with
``ray start``, token authentication on, its own temp dir, stopped without touching any other Ray."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalCluster:
    def __init__(self, root: Path):
        self.root = root
        # Ray puts unix sockets under its temp dir: keep the path short (sockets allow ~107 bytes).
        self.temp_dir = Path(tempfile.mkdtemp(prefix="cfray-", dir="/tmp"))
        self.token_file = root / "auth_token"
        self.token_file.write_text(secrets.token_hex(32))
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        bin_dir = os.path.dirname(sys.executable)
        self.env = {
            **os.environ,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_file),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
            self.env.pop(key, None)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def ray(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["ray", *args], env=env or self.env, capture_output=True, text=True, timeout=timeout)

    @staticmethod
    def node_ports() -> list[str]:
        """Fresh ports for a node's agents: their defaults (52365, 10001, ...) may be taken by another Ray
        on this machine, and an agent that cannot bind leaves the job API with no agent to run jobs."""
        flags = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
                 "runtime-env-agent-port", "node-manager-port", "object-manager-port")
        return [f"--{flag}={free_port()}" for flag in flags]

    def start(self, worker_cpus: float, worker_gpus: float, workers: int = 1) -> "LocalCluster":
        head = self.ray(
            "start", "--head", f"--port={self.gcs_port}", "--num-cpus=1", "--num-gpus=0",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}", "--include-dashboard=true",
            f"--ray-client-server-port={free_port()}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
            *self.node_ports(),
        )
        assert head.returncode == 0, head.stdout + head.stderr
        for _ in range(workers):
            worker = self.ray(
                "start", f"--address=127.0.0.1:{self.gcs_port}", f"--num-cpus={worker_cpus}",
                f"--num-gpus={worker_gpus}", "--disable-usage-stats", *self.node_ports(),
            )
            assert worker.returncode == 0, worker.stdout + worker.stderr
        deadline = time.time() + 90
        while time.time() < deadline and len(self.nodes()) < 1 + workers:
            time.sleep(1)
        return self

    def submit(self, *args: str, timeout: float = 500) -> subprocess.CompletedProcess:
        """``ray job submit``; retried while the head's job agent is still starting (busy machines)."""
        deadline = time.time() + 120
        while True:
            result = self.ray("job", "submit", "--address", self.dashboard, *args, timeout=timeout)
            if "No available agent to submit job" not in result.stdout + result.stderr or time.time() > deadline:
                return result
            time.sleep(3)

    def nodes(self) -> list[dict]:
        import json

        result = self.ray("list", "nodes", "--address", self.dashboard, "--format", "json")
        return json.loads(result.stdout) if result.returncode == 0 else []

    def stop(self) -> None:
        """Stop this cluster's processes only (``ray stop`` would stop every Ray on the machine)."""
        markers = (str(self.temp_dir), f":{self.gcs_port}")
        spare = {os.getpid()} | {p.pid for p in psutil.Process().parents()}
        roots = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                cmdline = " ".join(proc.info["cmdline"] or [])
                if proc.pid not in spare and any(m in cmdline for m in markers):
                    roots.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        victims = {p.pid: p for p in roots}
        for proc in roots:
            try:
                victims.update({c.pid: c for c in proc.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
        for proc in victims.values():
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(list(victims.values()), timeout=10)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)
