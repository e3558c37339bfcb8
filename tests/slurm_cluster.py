"""A throw-away Slurm cluster on this machine for the real-Slurm tests (needs root and Debian's
`slurm-wlm` + `munge`).

`SlurmCluster(workdir).start()` writes a `slurm.conf`, starts munged, slurmctld and one slurmd per
node in the foreground as child processes, and waits until every node is idle; `stop()` ends each
daemon by its own pid. Everything (config, state, spool, logs, munge key and socket) lives under
`workdir`, so nothing of the machine's own `/etc` is touched.

Single node: `NodeName=localhost` on 127.0.0.1 (the hostname is not `localhost`, hence `slurmd -N`).
Two nodes: the cluster makes a bridge (10.77.S.1, slurmctld) in the test's network namespace and one
network namespace per node, joined to the bridge by a veth pair whose inner end is `dm0` (10.77.S.11,
10.77.S.12; S and the names derive from the pid, so two test runs do not collide); each slurmd runs
inside its namespace, so the job steps it starts reach the other node only through these addresses.
Traffic never leaves the interfaces made here.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "ip", "nsenter")
NODE_IFACE = "dm0"  # the same name inside every node's namespace (names are per namespace)


def missing_binaries() -> list[str]:
    """The Slurm / munge / iproute2 programs this cluster needs that are not installed."""
    return [name for name in DAEMONS if shutil.which(name) is None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class Node:
    name: str
    addr: str
    netns: str | None = None  # None: the node runs in the test's own network namespace


class SlurmCluster:
    """Start/stop a private Slurm cluster of one node (default) or two nodes in network namespaces."""

    def __init__(self, workdir: Path, nodes: int = 1, cpus: int = 2, cred_expire_s: int = 10) -> None:
        """`cpus` per node may exceed the machine's (config_overrides): jobs then share cores."""
        self.workdir = Path(workdir)
        self.cpus = cpus
        self.cred_expire_s = cred_expire_s
        tag, subnet = f"dm{os.getpid() % 10000}", f"10.77.{os.getpid() % 250 + 1}"
        self.bridge = f"{tag}br"
        if nodes == 1:
            self.nodes = [Node("localhost", "127.0.0.1")]
            self.ctld_addr = "127.0.0.1"
        else:
            self.nodes = [Node(f"n{i + 1}", f"{subnet}.{11 + i}", f"{tag}n{i + 1}") for i in range(nodes)]
            self.ctld_addr = f"{subnet}.1"
        self._procs: list[tuple[str, subprocess.Popen]] = []
        self._links: list[str] = []

    @property
    def conf(self) -> Path:
        return self.workdir / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands (sbatch, squeue, ...) and for `demakeup submit`."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout_s: float = 30.0) -> "SlurmCluster":
        """Write the config, start the daemons and wait for idle nodes; cleans up if anything fails."""
        try:
            self._prepare_dirs()
            if self.nodes[0].netns:
                self._make_network()
            self._start_munge()
            self._write_conf()
            self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)], self.workdir / "slurmctld.log")
            for node in self.nodes:
                cmd = ["slurmd", "-D", "-N", node.name, "-f", str(self.conf)]
                if node.netns:  # nsenter, unlike `ip netns exec`, keeps the mounts (/sys/fs/cgroup for slurmd)
                    cmd = ["nsenter", f"--net=/run/netns/{node.netns}", *cmd]
                self._spawn(f"slurmd-{node.name}", cmd, self.workdir / f"slurmd-{node.name}.log")
            self._wait_idle(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Cancel the cluster's jobs, end every daemon it started (by pid, newest first), remove its network."""
        if any(name == "slurmctld" and proc.poll() is None for name, proc in self._procs):
            self._cancel_jobs()
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
        for cmd in reversed(self._links):
            subprocess.run(cmd.split(), capture_output=True, check=False)
        self._links.clear()

    def logs(self) -> str:
        """The tail of every daemon log, for assertion messages."""
        parts = []
        for log in sorted(self.workdir.glob("*.log")):
            parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))
        return "\n".join(parts)

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- pieces ----------------------------------------------------------------------------------
    def _prepare_dirs(self) -> None:
        for sub in ("state", "munge", *(f"spool/{node.name}" for node in self.nodes)):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        # munged refuses a socket folder that others can write to, and needs to be reached by all.
        os.chmod(self.workdir / "munge", 0o755)

    def _start_munge(self) -> None:
        munge = self.workdir / "munge"
        key = munge / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o600)
        self._spawn(
            "munged",
            ["munged", "-F", "--force", f"--socket={munge / 'munge.socket'}", f"--key-file={key}",
             f"--pid-file={munge / 'munged.pid'}", f"--seed-file={munge / 'munged.seed'}",
             f"--log-file={self.workdir / 'munged.log'}"],
            self.workdir / "munged.out",
        )
        self._wait_for(lambda: (munge / "munge.socket").exists(), 10, "munged socket")

    def _make_network(self) -> None:
        self._run(f"ip link add name {self.bridge} type bridge", undo=f"ip link del {self.bridge}")
        self._run(f"ip addr add {self.ctld_addr}/24 dev {self.bridge}")
        self._run(f"ip link set {self.bridge} up")
        for i, node in enumerate(self.nodes):
            outer = f"{self.bridge}{i}"
            self._run(f"ip netns add {node.netns}", undo=f"ip netns del {node.netns}")
            self._run(f"ip link add {outer} type veth peer name {NODE_IFACE} netns {node.netns}",
                      undo=f"ip link del {outer}")
            self._run(f"ip link set {outer} master {self.bridge} up")
            self._run(f"ip -n {node.netns} addr add {node.addr}/24 dev {NODE_IFACE}")
            self._run(f"ip -n {node.netns} link set {NODE_IFACE} up")
            self._run(f"ip -n {node.netns} link set lo up")

    def _write_conf(self) -> None:
        w = self.workdir
        node_lines = "\n".join(
            f"NodeName={n.name} NodeAddr={n.addr} CPUs={self.cpus} RealMemory=2000 State=UNKNOWN" for n in self.nodes
        )
        # Namespaced slurmds each own their namespace's port; in one namespace it must be free here.
        slurmd_port = 6818 if self.nodes[0].netns else _free_port()
        self.conf.write_text(f"""\
ClusterName=demakeuptest
SlurmctldHost=localhost({self.ctld_addr})
SlurmctldPort={_free_port()}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={w / 'munge' / 'munge.socket'},cred_expire={self.cred_expire_s}
StateSaveLocation={w / 'state'}
SlurmdSpoolDir={w / 'spool'}/%n
SlurmctldPidFile={w / 'slurmctld.pid'}
SlurmdPidFile={w / 'spool'}/slurmd.%n.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=10
MinJobAge=600
SlurmdTimeout=60
InactiveLimit=0
{node_lines}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _cancel_jobs(self, timeout_s: float = 30.0) -> None:
        """A job left running (a failed test) would outlive slurmd: its processes are slurmstepd's."""
        def queued() -> list[str]:
            out = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True, text=True)
            return out.stdout.split()

        jobs = queued()
        if jobs:
            subprocess.run(["scancel", *jobs], env=self.env, capture_output=True)
            deadline = time.monotonic() + timeout_s
            while queued() and time.monotonic() < deadline:
                time.sleep(0.5)

    def _wait_idle(self, timeout_s: float) -> None:
        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], env=self.env, capture_output=True, text=True)
            states = [line.split()[1] for line in out.stdout.splitlines() if line.strip()]
            return len(states) == len(self.nodes) and all(s == "idle" for s in states)

        self._wait_for(idle, timeout_s, "idle Slurm nodes")

    def _wait_for(self, check, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}\n{self.logs()}")
            if check():
                return
            time.sleep(0.2)
        raise TimeoutError(f"no {what} after {timeout_s} s\n{self.logs()}")

    def _spawn(self, name: str, cmd: list[str], log: Path) -> None:
        with open(log, "ab") as out:
            self._procs.append((name, subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)))

    def _run(self, cmd: str, undo: str | None = None) -> None:
        result = subprocess.run(cmd.split(), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"`{cmd}` failed: {result.stderr.strip()} (network namespaces need root with "
                               "CAP_NET_ADMIN, e.g. a privileged container)")
        if undo:
            self._links.append(undo)
