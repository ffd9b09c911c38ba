"""Test set-up: offline Hugging Face, no network beyond this machine, tiny models, one local Ray."""

from __future__ import annotations

import os

# Read by huggingface_hub at import time: before any test module imports it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Read by OpenMP when torch loads: its threads sleep at a barrier instead of spinning. The two xdist workers each run
# two-thread PyTorch on two cores, and spinning threads wait out the one descheduled: two mini editors at once took
# 0.73-0.81 s a set each, against 0.145 s alone and 0.255 s each with this (0.265 s alone). Subprocesses and the
# local Rays' workers inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import ipaddress
import socket
from pathlib import Path

import pytest
from hypothesis import settings

from pipeline.testing import tiny_models  # noqa: F401 (registers tiny:NAME model references)

# Property tests draw the same examples on every run (a red CI must be reproducible); the "thorough"
# profile (HYPOTHESIS_PROFILE=thorough) searches far wider when changing the code they cover.
settings.register_profile("default", derandomize=True, deadline=None)
settings.register_profile("thorough", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parents[1]


def _local_addresses() -> set[str]:
    found = {"127.0.0.1", "::1", "localhost", socket.gethostname()}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(info[4][0])
    except OSError:
        pass
    return found


_LOCAL = _local_addresses()
_real_connect = socket.socket.connect


def _guarded_connect(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            local = ipaddress.ip_address(host).is_loopback or host in _LOCAL
        except ValueError:
            local = host in _LOCAL
        if not local:
            raise OSError(f"tests may not reach the network (tried {host}:{address[1]})")
    return _real_connect(sock, address)


socket.socket.connect = _guarded_connect


# The modules with a test that needs the session's Ray (``local_ray``, or an output made on it). ``make test``
# (``pytest -n 2 --dist loadscope``) runs all of them on one xdist worker, so the session's Ray and its outputs
# are made once; every other module is a scope of its own, so its module fixtures are made once too.
# (Written out, not read from markers: xdist's ``loadgroup`` groups by rewriting node ids, which pytest 9.2
# ignores, pytest-dev/pytest-xdist#1386, and the controller that schedules never collects the tests.)
RAY_MODULES = frozenset(f"tests/{name}.py" for name in (
    "pipeline/test_calibrate", "pipeline/test_consumers", "pipeline/test_end_to_end", "pipeline/test_exports",
    "pipeline/test_generate_run", "pipeline/test_job_submission", "pipeline/test_ray_executor",
    "pipeline/test_resume_and_faults", "pipeline/test_review", "pipeline/test_review_browser",
    "pipeline/test_streaming", "pipeline/test_trainers", "test_docs"))


def _module(nodeid: str) -> str:
    return nodeid.split("::")[0]


def pytest_collection_modifyitems(config, items):
    """A module that needs the session's Ray but is not in RAY_MODULES would start a second Ray, with its own
    session outputs, on the other worker: refused here, so the list cannot fall behind the tests."""
    unlisted = sorted({_module(item.nodeid) for item in items if "local_ray" in item.fixturenames} - RAY_MODULES)
    if unlisted:
        raise pytest.UsageError(f"tests/conftest.py: add {', '.join(unlisted)} to RAY_MODULES (they use local_ray)")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadscope`` with the RAY_MODULES as one scope and every other module a scope of its own."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SessionRayScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = _module(nodeid)
            return "ray" if module in RAY_MODULES else module

    return SessionRayScheduling(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    node.workerinput["counterfactory_dist"] = node.config.getvalue("dist")  # for the check in local_ray


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """The tiny models, built once per test session into a private cache (one for all of a session's xdist
    workers: the first to take the lock builds them)."""
    import fcntl

    given = os.environ.get("COUNTERFACTORY_TEST_CACHE")
    if given:
        cache = Path(given)
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        cache = tmp_path_factory.getbasetemp().parent / "tiny-models"  # the workers' base temps share a parent
    else:
        cache = tmp_path_factory.mktemp("tiny-models")
    os.environ["COUNTERFACTORY_CACHE"] = str(cache)
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".build-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in tiny_models.BUILDERS:
            tiny_models.build(name, tiny_models.default_cache_dir())
    return tiny_models.default_cache_dir()


@pytest.fixture(scope="session")
def tiny(tiny_cache) -> dict[str, str]:
    return {name: str(tiny_cache / name) for name in tiny_models.BUILDERS}


@pytest.fixture(scope="session")
def taxonomy():
    from pipeline.config.taxonomy import load_taxonomy

    return load_taxonomy(REPO / "configs" / "taxonomy.yaml")


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint on loopback (moto's server) for the session. Its address and test credentials are in
    the environment before Ray starts, so the session's workers read s3:// seeds the way a cluster's do."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}")
    yield os.environ["AWS_ENDPOINT_URL"]
    server.stop()


@pytest.fixture(scope="session")
def local_ray(tiny_cache, s3_endpoint, request, tmp_path_factory):
    """One local Ray for the session; stages get fractional CPUs so 2 cores never deadlock.

    It declares one logical GPU (this machine has none) so that GPU stages are scheduled as on a
    cluster; their models still run on the CPU because torch finds no CUDA device.
    """
    import ray

    from pipeline.config.sections import RayConfig
    from pipeline.execution.ray_executor import init_ray

    _one_worker_on_the_session_ray(request.config, tmp_path_factory)
    init_ray(RayConfig(num_cpus=2, num_gpus=1))
    yield ray
    ray.shutdown()


def _one_worker_on_the_session_ray(config, tmp_path_factory) -> None:
    """Under ``--dist loadscope`` only one xdist worker may start the session's Ray: a second would double every
    session output's run (as the silently ignored ``loadgroup`` marks once did)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or getattr(config, "workerinput", {}).get("counterfactory_dist") != "loadscope":
        return
    claim = tmp_path_factory.getbasetemp().parent / "session-ray-worker"
    try:
        with open(claim, "x") as handle:
            handle.write(worker)
    except FileExistsError:
        pytest.fail(f"{worker} is starting a second session Ray ({claim.read_text()} has one): "
                    "tests/conftest.py's scheduling is not in effect")


@pytest.fixture(scope="session")
def mini_seeds(tmp_path_factory) -> Path:
    """The shipped mini seeds plus a renamed copy of one of them (a duplicate by content)."""
    import shutil

    root = tmp_path_factory.mktemp("mini-seeds") / "seeds"
    shutil.copytree(REPO / "configs" / "mini_seeds", root)
    shutil.copy(root / "chef" / "seed0.png", root / "chef" / "seed9_copy.png")
    return root


# The model stages ask for fractions of the session's logical GPU, as on a cluster (one batch a task, one
# queued per actor); in mini.yaml's two fused pools, 0.25 and 0.5 + 0.25 of it.
MINI_GPUS = {"edit.resources.num_gpus": 0.5, "filter.resources.num_gpus": 0.25, "caption.resources.num_gpus": 0.25}


@pytest.fixture(scope="session")
def mini_output(local_ray, mini_seeds, tmp_path_factory) -> Path:
    """The shipped mini-run (configs/mini.yaml with its report) over the mini seeds and a duplicate, its model
    stages on fractions of a GPU: made once per session, read by every test of what users do with an output."""
    from pipeline.config.loading import load_config
    from pipeline.execution.run import run_pipeline

    out = tmp_path_factory.mktemp("mini-run") / "out"
    loaded = load_config(REPO / "configs" / "mini.yaml", {"input.path": str(mini_seeds), **MINI_GPUS})
    run_pipeline(loaded, output=str(out), log=lambda line: None)
    return out


@pytest.fixture(scope="session")
def mini_generate_output(local_ray, tmp_path_factory) -> Path:
    """The shipped generate-mode mini-run's output (configs/mini_generate.yaml), made once per session."""
    from pipeline.config.loading import load_config
    from pipeline.execution.run import run_pipeline

    out = tmp_path_factory.mktemp("mini-generate") / "out"
    run_pipeline(load_config(REPO / "configs" / "mini_generate.yaml"), output=str(out), report=False,
                 log=lambda line: None)
    return out
