"""Local Beam services for the portable and Dask runners, started and stopped by PID.

``portable_service()`` starts Beam's local job service and an external SDK
worker pool (the cross-process path Flink, Spark and Dataflow also use);
``dask_cluster(n)`` starts a dask scheduler and ``n`` single-thread worker
processes.  Each is a context manager yielding the runner flags to pass to
``python -m pipeline`` / ``pipeline.pairs``, listening on 127.0.0.1 only,
ready when it yields, and stopped on exit.  Used by
tests/test_pipeline_runners.py and bench/runners_bench.py.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} not listening on 127.0.0.1:{port} after {timeout}s")


class Services:
    """Processes started with this interpreter, this checkout first on the
    import path and this venv's ``python`` first on PATH (the worker pool
    starts workers as ``python``); stopped by PID."""

    def __init__(self, log_dir: str | None = None):
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="beam-services-"))
        self.procs: list[subprocess.Popen] = []
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                    "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=5)         # a dask process may linger reconnecting: then it is killed
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def portable_service(log_dir: str | None = None) -> Iterator[list[str]]:
    """Job service + external worker pool → PortableRunner flags."""
    services = Services(log_dir)
    job_port, pool_port = free_port(), free_port()
    try:
        job = services.start("job_service", "-m", "apache_beam.runners.portability.local_job_service_main",
                             "--port", str(job_port))
        pool = services.start("worker_pool", "-m", "apache_beam.runners.worker.worker_pool_main",
                              "--service_port", str(pool_port))
        wait_for_port(job_port, job, "job service")
        wait_for_port(pool_port, pool, "worker pool")
        yield ["--runner=portable", f"--job_endpoint=127.0.0.1:{job_port}", "--environment_type=EXTERNAL",
               f"--environment_config=127.0.0.1:{pool_port}"]
    finally:
        services.stop()


@contextlib.contextmanager
def dask_cluster(workers: int = 2, log_dir: str | None = None) -> Iterator[list[str]]:
    """dask scheduler + ``workers`` worker processes (1 thread each) → DaskRunner flags."""
    from distributed import Client

    services = Services(log_dir)
    port = free_port()
    try:
        scheduler = services.start("scheduler", "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                   "--port", str(port), "--dashboard-address", "127.0.0.1:0", "--no-show")
        wait_for_port(port, scheduler, "dask scheduler")
        address = f"tcp://127.0.0.1:{port}"
        for i in range(workers):
            services.start(f"worker{i}", "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                           "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1", "--no-nanny")
        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
        yield ["--runner=dask", f"--dask_client_address={address}", f"--dask_npartitions={workers}"]
    finally:
        for client in list(Client._instances):  # the DaskRunner leaves its client open
            client.close()
        services.stop()
