"""A private one-node Slurm cluster for the tests: munged, slurmctld and slurmd of Debian's packages.

Everything lives in one folder (config, state, spool, logs, the munge key and socket, its own ports), so
it neither needs nor touches a system-wide Slurm or munge. The node declares 8 CPUs, 64 GB and one GPU
(`SlurmdParameters=config_overrides`, a count-only GRES) whatever the machine has, so the shipped job
script's resource requests are accepted unchanged; with one GPU, GPU jobs run one at a time. slurmd is
started under `nice -n 19`, and Slurm passes its niceness on to the jobs (PropagatePrioProcess=0).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo")
INSTALL = "apt-get install -y slurm-wlm munge"


def missing_tools() -> list[str]:
    return [t for t in DAEMONS + CLIENTS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]


def install_if_possible() -> str | None:
    """Install Debian's slurm-wlm and munge when root with apt-get and they are missing; returns why not."""
    if not missing_tools():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"needs {', '.join(missing_tools())} (as root: {INSTALL})"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True, timeout=600)
    proc = subprocess.run(["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"], env=env, capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0 or missing_tools():
        return f"could not install slurm-wlm and munge ({proc.stderr.strip().splitlines()[-1:]}); run {INSTALL}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.socket = self.root / "munge" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: list[subprocess.Popen] = []

    # ------------------------------------------------------------------------------------------ set-up
    def _write_config(self) -> None:
        for d in ("state", "spool", "logs", "munge"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(128))
        os.chmod(key, 0o400)
        r = self.root
        self.conf.write_text(f"""\
ClusterName=panthertest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/logs/slurmctld.log
SlurmdLogFile={r}/logs/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
PlugStackConfig=/dev/null
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
ReturnToService=2
PropagatePrioProcess=0
KillWait=5
MinJobAge=600
SchedulerParameters=sched_interval=2
NodeName={self.host} NodeAddr=127.0.0.1 CPUs=8 Boards=1 SocketsPerBoard=1 CoresPerSocket=8 ThreadsPerCore=1 \
RealMemory=64000 Gres=gpu:1 State=UNKNOWN
PartitionName=test Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        (self.root / "gres.conf").write_text(f"AutoDetect=off\nNodeName={self.host} Name=gpu File=/dev/null\n")

    def start(self, timeout: float = 60) -> "SlurmCluster":
        self._write_config()
        m = self.root / "munge"
        self.procs.append(subprocess.Popen(
            [_sbin("munged"), "--foreground", "--force", f"--socket={self.socket}", f"--key-file={m / 'munge.key'}",
             f"--pid-file={m / 'munged.pid'}", f"--seed-file={m / 'munged.seed'}", f"--log-file={m / 'munged.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        self._wait(lambda: self.socket.exists(), timeout, "munged did not create its socket")
        self.procs.append(subprocess.Popen([_sbin("slurmctld"), "-D", "-i", "-f", str(self.conf)], env=self.env,
                                           stdout=open(self.root / "logs" / "slurmctld.out", "w"),
                                           stderr=subprocess.STDOUT))
        self.procs.append(subprocess.Popen(["nice", "-n", "19", _sbin("slurmd"), "-D", "-f", str(self.conf)],
                                           env=self.env, stdout=open(self.root / "logs" / "slurmd.out", "w"),
                                           stderr=subprocess.STDOUT))
        self._wait(self._node_ready, timeout, "the node did not become idle")
        return self

    def _node_ready(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip()
        return out.startswith("idle")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited with {p.returncode}: {self.logs()}")
            time.sleep(0.5)
        raise RuntimeError(f"{what} within {timeout} s: {self.logs()}")

    def logs(self) -> str:
        parts = []
        for f in sorted((self.root / "logs").glob("*")) + [self.root / "munge" / "munged.log"]:
            if f.is_file():
                parts.append(f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()

    # ------------------------------------------------------------------------------------------ use
    def run(self, *cmd: str, check: bool = True, env: dict | None = None, cwd: Path | None = None):
        proc = subprocess.run([str(c) for c in cmd], env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=120, cwd=cwd)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {proc.returncode}: {proc.stderr}\n{self.logs()}")
        return proc

    def jobs(self) -> dict[str, str]:
        """{job id (array tasks as JOB_INDEX): state} of the jobs slurmctld still knows."""
        out = self.run("squeue", "-h", "-t", "all", "-r", "-o", "%i %T", check=False).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def wait_all(self, timeout: float) -> dict[str, str]:
        """Wait until no job is pending or running; return the final states."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.jobs()
            if states and not any(s in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING") for s in states.values()):
                return states
            time.sleep(1)
        raise RuntimeError(f"jobs still running after {timeout} s: {self.jobs()}\n{self.logs()}")
