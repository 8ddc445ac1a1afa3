"""A one-node SLURM for the tests: munged, slurmctld and slurmd (Debian's munge and
slurm-wlm), configured in a temporary directory, run as root, stopped by their pids."""
import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "scancel")

CONFIG = """\
ClusterName=dist-nn-test
SlurmctldHost={host}
FirstJobId={first_job}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


def missing():
    """Why a SLURM cannot be brought up here (None when it can)."""
    if os.geteuid() != 0:
        return "the SLURM tests run the daemons as root"
    absent = [d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()]
    if absent:
        return f"not installed: {absent} (apt-get install slurm-wlm munge)"
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, root):
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.env = dict(os.environ, SLURM_CONF=str(self.root / "slurm.conf"))
        self.pid_files = []

    def start(self):
        root = self.root
        for sub in ("state", "spool"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)  # munged insists on private directories for its key
        key = root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._daemon("munged", "--force", f"--key-file={key}", f"--socket={root}/munge.socket",
                     f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log",
                     f"--seed-file={root}/munged.seed", pid_file=root / "munged.pid")
        (root / "slurm.conf").write_text(CONFIG.format(
            host=self.host, root=root, ctld_port=free_port(), slurmd_port=free_port(),
            cpus=os.cpu_count(), first_job=random.randrange(10**4, 10**7)))  # no clash of
        # job ids (and so of PMI2 rendezvous) with any job left from another cluster
        self._daemon("slurmctld", pid_file=root / "slurmctld.pid")
        self._daemon("slurmd", pid_file=root / "slurmd.pid")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            if state == "idle":
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the test SLURM did not come up (node state {state!r}); see "
                           f"{root}/slurmctld.log and slurmd.log")

    def _daemon(self, name, *args, pid_file):
        subprocess.run([name, *args], env=self.env, check=True, capture_output=True)
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text().strip()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not write {pid_file}")
            time.sleep(0.1)
        self.pid_files.append(pid_file)

    def stop(self):
        """Cancel the jobs, stop the daemons, and kill whatever of this cluster is left."""
        self.run("scancel", "--user=root", check=False)
        deadline = time.monotonic() + 30
        while self.run("squeue", "-h", check=False).stdout.strip() and \
                time.monotonic() < deadline:
            time.sleep(0.5)
        for pid_file in reversed(self.pid_files):
            try:
                os.kill(int(pid_file.read_text().strip()), 15)
            except (OSError, ValueError):
                pass
        marker = f"SLURM_CONF={self.env['SLURM_CONF']}".encode()
        for entry in Path("/proc").iterdir():  # job steps and tasks inherit the config path
            try:
                if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                    os.kill(int(entry.name), 9)
            except OSError:
                pass

    def run(self, *command, check=True, env=None, **kwargs):
        return subprocess.run(command, env=env or self.env, capture_output=True, text=True,
                              check=check, **kwargs)

    def job_state(self, job):
        out = self.run("scontrol", "show", "job", str(job), check=False).stdout
        fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
        return fields.get("JobState"), fields

    def wait(self, job, states=("COMPLETED",), timeout=300):
        """Wait for the job to reach one of `states` (failing fast on a final other one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state, fields = self.job_state(job)
            if state in states:
                return fields
            if state in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
                raise AssertionError(f"job {job} ended {state}: {fields}")
            time.sleep(0.5)
        raise TimeoutError(f"job {job} still {state} after {timeout} s")
