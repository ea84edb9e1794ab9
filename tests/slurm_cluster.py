"""A throwaway one-host SLURM cluster with two compute nodes, for tests.

    cluster = SlurmCluster(tmp_dir, nodes=2).start()   # munged, slurmctld, 2 x slurmd
    job = cluster.submit(script_path)                   # sbatch --parsable
    cluster.wait(job, "COMPLETED")
    cluster.stop()                                      # only the daemons started here, by PID

Everything lives under `tmp_dir`: slurm.conf (used through SLURM_CONF), a private
munge key and socket, state, spool, pid and log files. The daemons run in the
foreground as children of this process, so stopping them needs nothing but their
PIDs. Both nodes are slurmd processes on this host with NodeAddr=127.0.0.1 and
their own ports. `ensure_installed()` installs the Debian packages when missing.

Run it by hand:  python tests/slurm_cluster.py   (starts, shows sinfo, stops)
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel", "sinfo", "munged")


class SlurmUnavailable(RuntimeError):
    """SLURM cannot run on this machine (the message says why)."""


def _which(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)


def ensure_installed(timeout: int = 900) -> None:
    """Install slurmctld, slurmd, slurm-client and munge with apt-get unless already present."""
    if all(_which(b) for b in BINARIES):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable("SLURM is not installed and installing it needs root")
    if not shutil.which("apt-get"):
        raise SlurmUnavailable("SLURM is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    missing = [b for b in BINARIES if not _which(b)]
    if missing:
        raise SlurmUnavailable(f"installed {' '.join(PACKAGES)} but {', '.join(missing)} still missing")


def _die_with_parent() -> None:
    """Daemons get SIGTERM if this process dies without calling stop() (PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SlurmCluster:
    def __init__(self, root: str | Path, nodes: int = 2, cpus_per_node: int = 1, partition: str = "test"):
        self.root = Path(root).resolve()
        self.nodes = [f"zn{i + 1}" for i in range(nodes)]
        self.cpus = cpus_per_node
        self.partition = partition
        self.procs: list[subprocess.Popen] = []
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # -- lifecycle ------------------------------------------------------------
    def start(self, timeout: float = 60) -> "SlurmCluster":
        if os.geteuid() != 0:
            raise SlurmUnavailable("the test cluster's slurmd must run as root (it starts jobs as their user)")
        ensure_installed()
        for d in ("state", "log", "run", "munge"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            (self.root / "spool" / node).mkdir(parents=True, exist_ok=True)
        try:
            self._start_munge()
            self._write_conf()
            self._spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld")
            for node in self.nodes:
                self._spawn(["slurmd", "-D", "-N", node, "-f", str(self.conf)], f"slurmd-{node}")
            self._wait_nodes_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM each daemon started here (slurmd first, munged last), SIGKILL after 10 s."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _spawn(self, cmd: list[str], name: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        proc = subprocess.Popen([_which(cmd[0]) or cmd[0], *cmd[1:]], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        proc.name = name
        self.procs.append(proc)

    def _start_munge(self) -> None:
        d = self.root / "munge"
        os.chmod(d, 0o700)
        key = d / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o400)
        self.munge_socket = d / "munge.socket"
        self._spawn(["munged", "-F", "--force", f"--key-file={key}", f"--socket={self.munge_socket}",
                     f"--pid-file={d / 'munged.pid'}", f"--log-file={self.root / 'log' / 'munged.log'}",
                     f"--seed-file={d / 'munged.seed'}"], "munged")
        deadline = time.time() + 20
        while not self.munge_socket.exists():
            if self.procs[-1].poll() is not None:
                raise SlurmUnavailable("munged exited: " + self._tail("munged.log") + self._tail("munged.out"))
            if time.time() > deadline:
                raise SlurmUnavailable("munged did not create its socket within 20 s")
            time.sleep(0.05)

    def _write_conf(self) -> None:
        r = self.root
        ctld_port, *node_ports = _free_ports(1 + len(self.nodes))
        host = socket.gethostname().split(".")[0]
        nodes = "\n".join(f"NodeName={n} NodeAddr=127.0.0.1 NodeHostname={host} Port={p} CPUs={self.cpus} "
                          f"RealMemory=1000 State=UNKNOWN" for n, p in zip(self.nodes, node_ports))
        self.conf.write_text(f"""\
ClusterName=zhtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}/%n
SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}
SlurmdPidFile={r / 'run'}/slurmd-%n.pid
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log'}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/linear
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=10
InactiveLimit=0
{nodes}
PartitionName={self.partition} Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE State=UP
""", encoding="utf-8")

    def _tail(self, name: str, n: int = 400) -> str:
        path = self.root / "log" / name
        return path.read_text(errors="replace")[-n:] if path.is_file() else ""

    def _wait_nodes_idle(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while True:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise SlurmUnavailable(f"{proc.name} exited with {proc.returncode}: "
                                           + self._tail(f"{proc.name}.log") + self._tail(f"{proc.name}.out"))
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], env=self.env, capture_output=True,
                                 text=True).stdout.split()
            states = dict(zip(out[::2], out[1::2]))
            if all(states.get(n) == "idle" for n in self.nodes):
                return
            if time.time() > deadline:
                raise SlurmUnavailable(f"nodes not idle after {timeout:.0f} s: {states}; "
                                       + self._tail("slurmctld.log"))
            time.sleep(0.3)

    # -- jobs -------------------------------------------------------------------
    def run(self, *cmd: str, check: bool = True) -> str:
        proc = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
        return proc.stdout

    def submit(self, script: str | Path, *args: str) -> str:
        return self.run("sbatch", "--parsable", *args, str(script)).strip().split(";")[0]

    def job(self, job_id: str) -> dict:
        """`scontrol show job` as a dict (State, RestartCnt, ExitCode, NodeList, ...)."""
        out = self.run("scontrol", "-o", "show", "job", job_id)
        return dict(item.split("=", 1) for item in out.split() if "=" in item)

    def state(self, job_id: str) -> str:
        return self.job(job_id).get("JobState", "?")

    def wait(self, job_id: str, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"),
             timeout: float = 300, poll: float = 0.5) -> str:
        states = (states,) if isinstance(states, str) else tuple(states)
        deadline = time.time() + timeout
        while True:
            state = self.state(job_id)
            if state in states:
                return state
            if time.time() > deadline:
                raise TimeoutError(f"job {job_id} still {state} after {timeout:.0f} s")
            time.sleep(poll)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="slurm-") as tmp, SlurmCluster(tmp) as c:
        print(c.run("sinfo", "-N", "-l"))
