"""Data-parallel training over a real, bandwidth-limited TCP link: dist_nn against PyTorch DDP
(gloo), 1 vs 2 ranks, and bench/scaling_model.py's alpha-beta model held to that link.

    python bench/network.py [--rates 1,10,25] [--models mlp,cnn] [--compression none]
        [--steps 20] [--rounds 3] [--python PATH] [--loopback] [--smoke]

Needs root, `ip` and `tc`, PyTorch here, and a Python whose mpi4py is Open MPI's (--python,
default $DIST_NN_OPENMPI_PYTHON; the mpiexec beside it, else mpiexec.openmpi): Open MPI's TCP
transport can be pinned to one interface (MPICH's ranks on one machine use shared memory).

The link: two network namespaces joined by a veth pair, each end's egress limited by a tbf
qdisc (full duplex), rank 0 in one, rank 1 in the other; with --loopback, or where no veth
pair can be made, one namespace's limited loopback (half duplex: one queue for both ways). A
burst of 1 ms of the rate (at least 128 KiB) passes tbf unlimited, so a Python socket sends
across for 1 s first and the rate it got is printed (at high rates the CPU may be the limit).
Namespaces dnb<pid>a/b are deleted on exit and on SIGTERM/SIGHUP/SIGINT, and a killed run's by
the next run (their qdiscs and veth pair go with them; nothing outside them is touched).

Per rate: alpha and beta of Open MPI's 2-rank allreduce over the link (bench/allreduce.py's
--fit worker, on 1-16 MiB); then per model of bench/scaling.py (MLP 784-1024-1024-10, 128 per
rank; CNN, 64 per rank: weak scaling, the same for both libraries) 1 and 2 ranks of dist_nn
(mpiexec in namespace a, rank 1 entering b, `--mca btl tcp,self` on the link) and of DDP over
gloo on the same model, exported (GLOO_SOCKET_IFNAME the link). SGD as bench/scaling.py, one
thread per rank, per-rank BatchNorm in both (DDP's). dist_nn's optimizer and GradSync come from
`build.make_optimizer_and_sync` and config overrides, as the Trainer's (25 MB buckets, overlap:
each model's gradients are one bucket, started when backward ends). Reported: steps/s (median
of `rounds` runs of `steps` steps after 3 warm-up steps, one launch each); efficiency,
steps/s(2) / steps/s(1); dist_nn's exposed communication, the time per step in
GradSync.wait() (the allreduce backward did not hide), mean per step; MB/step, what rank 0's interface sent
per timed step (TCP/IP headers included); scaling_model.step_time(1-rank step, gradient bytes,
2 ranks, this link's alpha and beta, overlap) and its error, predicted / measured - 1 (the
model knows no contention: two ranks on 2 cores slow each other's compute).

--compression none,fp16,bf16,powersgd adds rows at the lowest rate on the MLP: dist_nn's
train.grad_compression (and train.powersgd_rank, --powersgd-rank); DDP's fp16_compress_hook
for fp16, "n/a" for the others (its bf16 hook
needs CUDA and NCCL; PowerSGD's hook hung here over gloo, torch 2.13, rank 0 waiting in the
allreduce the hook starts inside a future's callback).
"""
import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scaling import SGD, WARM_UP_STEPS, build, ddp_step, rounds_of  # noqa: E402
from launch import mpirun  # noqa: E402

ONE_THREAD = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")
CHILDREN = set()  # processes started and not yet reaped: ended by the cleanup


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True).stdout


class Link:
    """Namespaces a and b joined by a veth pair `nb0` (or namespace a alone, its loopback)."""

    def __init__(self, loopback=False):
        self.names = [f"dnb{os.getpid()}a", f"dnb{os.getpid()}" + ("a" if loopback else "b")]
        self.kind, self.iface, self.addresses = "loopback (half duplex)", "lo", ["127.0.0.1"] * 2

    def open(self):
        for pid in re.findall(r"^dnb(\d+)[ab]\b", sh("ip", "netns", "list"), re.M):
            if not Path(f"/proc/{pid}").exists():  # left by a killed run
                sh("ip", "netns", "del", f"dnb{pid}a", check=False)
                sh("ip", "netns", "del", f"dnb{pid}b", check=False)
        for name in set(self.names):
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        if self.names[0] == self.names[1]:
            return
        try:
            sh("ip", "link", "add", "nb0", "netns", self.names[0], "type", "veth", "peer",
               "name", "nb0", "netns", self.names[1])
            self.addresses = ["10.231.0.1", "10.231.0.2"]
            for name, address in zip(self.names, self.addresses):
                sh("ip", "-n", name, "addr", "add", f"{address}/24", "dev", "nb0")
                sh("ip", "-n", name, "link", "set", "nb0", "up")
            self.kind, self.iface = "veth pair (full duplex)", "nb0"
        except subprocess.CalledProcessError as error:
            print(f"# no veth pair ({error.stderr.strip()}): one namespace's loopback instead")
            sh("ip", "netns", "del", self.names[1], check=False)
            self.names[1], self.addresses = self.names[0], ["127.0.0.1"] * 2

    def limit(self, gbits):
        rate = gbits * 1e9 / 8  # bytes/s
        # 1 ms of the rate passes at once: smaller bursts fell short of 10 and 25 Gbit/s
        # here (the shaper's timer), larger ones let whole small gradients through unlimited
        burst = max(int(rate / 1000), 2**17)
        for name in set(self.names):
            sh("ip", "netns", "exec", name, "tc", "qdisc", "replace", "dev", self.iface, "root",
               "tbf", "rate", f"{gbits * 1000:g}mbit", "burst", str(burst), "latency", "50ms")

    def drops(self):
        """Packets tbf dropped (queue full) since limit(): TCP retransmits each."""
        return sum(int(n) for name in set(self.names) for n in re.findall(
            r"dropped (\d+)", sh("ip", "netns", "exec", name, "tc", "-s", "qdisc", "show")))

    def enter(self, rank):
        return ["ip", "netns", "exec", self.names[rank]]

    def close(self):
        for name in set(self.names):
            sh("ip", "netns", "del", name, check=False)


def run_all(commands, env, timeout):
    """Start every argv at once (each in its own process group), wait for all; their stdouts.
    A failure ends the script with the failing command's output."""
    procs = []
    for argv in commands:
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True))
        CHILDREN.add(procs[-1])
    deadline, outputs = time.monotonic() + timeout, []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=max(1, deadline - time.monotonic()))[0])
        except subprocess.TimeoutExpired:
            sys.exit(f"timed out after {timeout} s: {' '.join(proc.args)}")
        CHILDREN.discard(proc)
        if proc.returncode:
            sys.exit(f"{' '.join(proc.args)} failed ({proc.returncode}):\n{outputs[-1]}")
    return outputs


def end_children():
    for proc in list(CHILDREN):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its group: mpiexec's ranks too
        proc.wait()


# --- the measured side (inside the namespaces) ---------------------------------------------

def timed(step, barrier, steps, rounds, iface):
    """bench/scaling.py's rounds_of, and the bytes this namespace's interface sent per step
    (warm-up steps included: they send what the others do)."""
    counter = Path(f"/sys/class/net/{iface}/statistics/tx_bytes")  # ip netns exec's /sys
    barrier()
    sent = int(counter.read_text())
    rates = rounds_of(step, barrier, steps, rounds)
    return rates, (int(counter.read_text()) - sent) / (steps * rounds + WARM_UP_STEPS)


def ours(args):
    from dist_nn import build as builder, config as configuration, nn
    from dist_nn.distributed import broadcast_state, setup

    comm = setup("auto", "cpu", threads=1)
    model, x, y = build(args.model, comm, sync_bn=False)
    broadcast_state(model, comm)
    nn.skip_input_grad(model)
    overrides = ["optim.name=sgd", "train.bucket_mb=25", "train.overlap=true"] + \
        [f"optim.{key}={value}" for key, value in SGD.items()]
    if args.compression != "none":
        overrides += [f"train.grad_compression={args.compression}",
                      f"train.powersgd_rank={args.powersgd_rank}"]
    config = configuration.load(overrides=overrides)
    opt, sync = builder.make_optimizer_and_sync(config, model, comm, SGD["lr"])
    loss = nn.SoftmaxCrossEntropy()
    global_batch, waits = len(x) * comm.size, []

    def step():
        opt.zero_grad()
        loss.forward(model.forward(x), y, mean_over=global_batch)
        model.backward(loss.backward())
        tick = time.perf_counter()
        sync.wait()  # what is left of the allreduce once backward is done
        waits.append(time.perf_counter() - tick)
        opt.step()
    rates, sent = timed(step, comm.barrier, args.steps, args.rounds, args.iface)
    exposed = sum(waits[3:]) / len(waits[3:])  # a mean, as steps/s: stalls count
    compressed = sync.compression  # what the collectives move: the model's bytes
    return comm.rank, dict(rate=statistics.median(rates), sent=sent, exposed=exposed,
                           grad_bytes=compressed.bytes_sent() if compressed
                           else sync.flat.data.nbytes)


def theirs(args):
    import torch
    import torch.distributed as torch_dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"tcp://{args.master}", rank=args.rank,
                                  world_size=args.world)
    model, x, y = build(args.model, SimpleNamespace(rank=args.rank), sync_bn=False)
    step, _ = ddp_step(model, x, y, hook=default_hooks.fp16_compress_hook
                       if args.compression == "fp16" else None)
    rates, sent = timed(step, torch_dist.barrier, args.steps, args.rounds, args.iface)
    del step  # DDP (in its closure) goes while the process group lives: destroyed after it,
    torch_dist.barrier()  # gloo's threads can abort the process ("terminate called ...")
    torch_dist.destroy_process_group()
    return args.rank, dict(rate=statistics.median(rates), sent=sent)


def probe(role, address, seconds=1.0):
    """The link's rate: 'serve' reads one connection to its end; 'send' sends to it for
    `seconds` and prints Gbit/s (counted once the receiver has read all)."""
    if role == "serve":
        with socket.create_server((address, 5201)) as server, server.accept()[0] as peer:
            while peer.recv(2**20):
                pass
        return
    for _ in range(100):  # until the receiver listens
        with contextlib.suppress(ConnectionRefusedError):
            peer = socket.create_connection((address, 5201))
            break
        time.sleep(0.05)
    sent, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sent += peer.send(b"x" * 2**20)
    peer.shutdown(socket.SHUT_WR)
    peer.recv(1)  # the receiver closes when it has read all
    print(sent * 8 / (time.perf_counter() - start) / 1e9)


# --- the launching side --------------------------------------------------------------------

def environment(link):
    return dict(os.environ, **ONE_THREAD, PYTHONPATH=str(ROOT), GLOO_SOCKET_IFNAME=link.iface,
                # PMIx (mpiexec <-> ranks) over the link: rank 1 cannot reach a's loopback
                PMIX_MCA_ptl_tcp_remote_connections="1", PMIX_MCA_ptl_tcp_if_include=link.iface)


def mpi_command(link, python, ranks, argv):
    """Open MPI's mpiexec in namespace a; rank 1, if any, enters namespace b; TCP on the link."""
    beside = Path(python).parent / "mpiexec"
    launcher = str(beside) if beside.exists() else shutil.which("mpiexec.openmpi")
    if not launcher or not mpirun.is_open_mpi(launcher):
        sys.exit(f"no Open MPI mpiexec beside {python} or on PATH")
    flags = ["--mca", "pml", "ob1", "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include",
             link.iface, "--mca", "oob_tcp_if_include", link.iface]
    ranks_argv = ["-n", "1", python, *argv]
    if ranks == 2:
        ranks_argv += [":", "-n", "1", *link.enter(1), python, *argv]
    return [*link.enter(0), launcher, *mpirun.launcher_flags(launcher), *flags, *ranks_argv]


def calibrate(link, python, repeats, timeout):
    """alpha (s), beta (s/byte) of 2-rank allreduce over the link: bench/allreduce.py --fit's
    worker and fit, on 1-16 MiB (the gradients' sizes; the shaper's burst lets smaller
    messages through unlimited, which would make the link look fast)."""
    argv = [__file__, "--worker", "fit", "--rounds", str(repeats)]
    out, = run_all([mpi_command(link, python, 2, argv)], environment(link), timeout)
    fit = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    return fit["alpha_s"], fit["beta_s_per_byte"]


def measure_rate(link, timeout):
    argv = [sys.executable, __file__, "--probe"]
    serve = link.enter(1) + argv + ["serve", link.addresses[1]]
    send = link.enter(0) + argv + ["send", link.addresses[1]]
    return float(run_all([serve, send], environment(link), timeout)[1].split()[-1])


def train(link, library, ranks, model, compression, args, out, port):
    """One launch: {rate, sent, [exposed, grad_bytes]} of rank 0."""
    common = [__file__, "--worker", library, "--model", model, "--compression", compression,
              "--powersgd-rank", str(args.powersgd_rank), "--steps", str(args.steps),
              "--rounds", str(args.rounds), "--out", str(out), "--iface", link.iface]
    if library == "dist_nn":
        commands = [mpi_command(link, args.python, ranks, common)]
    else:
        master = f"{link.addresses[0]}:{port}"
        commands = [link.enter(rank) + [sys.executable, *common, "--rank", str(rank), "--world",
                                        str(ranks), "--master", master] for rank in range(ranks)]
    run_all(commands, environment(link), args.timeout)
    result = json.loads(out.read_text())
    if link.names[0] == link.names[1]:  # one loopback counts both ranks' sends
        result["sent"] /= ranks
    return result


HEADER = ("| Gbit/s | model | compression | dist_nn steps/s, 1 rank | 2 ranks | efficiency | "
          "exposed comm ms | MB/step | model ms | measured ms | model error | DDP steps/s, "
          "1 rank | 2 ranks | efficiency | MB/step | dist_nn / DDP, 2 ranks |")


def row(gbits, model, compression, ours_, theirs_, alpha, beta):
    from bench.scaling_model import LocalNetwork, step_time
    cells = [f"{gbits:g}", model, compression]
    if ours_:
        one, two = ours_[1], ours_[2]
        predicted, _ = step_time(1 / one["rate"], two["grad_bytes"], 2,
                                 LocalNetwork(fits=((2, alpha, beta),)), overlap=True,
                                 optimizer_s=0.0)  # the 1-rank step includes the optimizer
        measured = 1 / two["rate"]
        cells += [f"{one['rate']:.1f}", f"{two['rate']:.1f}", f"{two['rate'] / one['rate']:.0%}",
                  f"{two['exposed'] * 1e3:.1f}", f"{two['sent'] / 1e6:.2f}",
                  f"{predicted * 1e3:.1f}", f"{measured * 1e3:.1f}",
                  f"{predicted / measured - 1:+.0%}"]
    else:
        cells += ["n/a"] * 8
    if theirs_:
        one, two = theirs_[1], theirs_[2]
        cells += [f"{one['rate']:.1f}", f"{two['rate']:.1f}", f"{two['rate'] / one['rate']:.0%}",
                  f"{two['sent'] / 1e6:.2f}",
                  f"{ours_[2]['rate'] / two['rate']:.2f}" if ours_ else "n/a"]
    else:
        cells += ["n/a"] * 5
    return "| " + " | ".join(cells) + " |"


def bench(args, link, directory):
    links, rows, port = [], [], 29500
    for gbits in args.rates:
        link.limit(gbits)
        dropped = link.drops()
        got = measure_rate(link, args.timeout)
        alpha, beta = calibrate(link, args.python, args.fit_repeats, args.timeout)
        print(f"# {gbits:g} Gbit/s set, {got:.2f} measured; allreduce alpha {alpha * 1e6:.0f} "
              f"us, 1/beta {8e-9 / beta:.2f} Gbit/s", flush=True)
        for model in args.models:
            for compression in args.compression:
                if compression != "none" and (model != "mlp" or gbits != min(args.rates)):
                    continue
                results = {}
                runs = ["dist_nn"] + ["torch"] * (compression in ("none", "fp16"))  # see above
                for library in runs:
                    for ranks in (1, 2):
                        port += 1
                        out = directory / f"{library}-{ranks}.json"
                        results.setdefault(library, {})[ranks] = train(
                            link, library, ranks, model, compression, args, out, port)
                rows.append(row(gbits, model, compression, results.get("dist_nn"),
                                results.get("torch"), alpha, beta))
                print("# " + rows[-1], flush=True)
        links.append(f"| {gbits:g} | {got:.2f} | {alpha * 1e6:.0f} | {8e-9 / beta:.2f} | "
                     f"{(2 * alpha + 25e6 * beta) * 1e3:.0f} | {link.drops() - dropped} |")
    print(f"\nLink: {link.kind}, tbf on each sending end; Open MPI TCP (ob1) on it, gloo on it; "
          f"{os.cpu_count()} cores, one thread per rank.\n\n| Gbit/s set | measured (socket, "
          "1 s) | allreduce alpha us | 1/beta Gbit/s | 25 MB allreduce, fit ms | tbf drops |\n"
          "| --- | --- | --- | --- | --- | --- |", *links, "", HEADER,
          "|" + " --- |" * (HEADER.count(" | ") + 1), *rows, sep="\n", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1,10,25", help="Gbit/s, comma-separated")
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--compression", default="none",
                        help="of none,fp16,bf16,powersgd (beyond none: MLP, lowest rate)")
    parser.add_argument("--powersgd-rank", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fit-repeats", type=int, default=10)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per launch")
    parser.add_argument("--python", default=os.environ.get("DIST_NN_OPENMPI_PYTHON"),
                        help="a Python whose mpi4py is Open MPI's (default: "
                             "$DIST_NN_OPENMPI_PYTHON)")
    parser.add_argument("--loopback", action="store_true", help="one namespace's loopback "
                        "(half duplex), not a veth pair")
    parser.add_argument("--smoke", action="store_true", help="one rate, the MLP, few steps")
    parser.add_argument("--probe", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    for hidden, kind in (("--model", str), ("--out", str), ("--iface", str),
                         ("--master", str), ("--rank", int), ("--world", int)):
        parser.add_argument(hidden, type=kind, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        return probe(*args.probe)
    if args.worker == "fit":
        from bench import allreduce
        allreduce.FIT_SIZES = [2**20 * 2**k for k in range(5)]
        return allreduce.fit_worker(args.rounds)
    if args.worker:
        rank, result = (ours if args.worker == "dist_nn" else theirs)(args)
        if rank == 0:
            Path(args.out).write_text(json.dumps(result))
        return
    args.rates = [float(r) for r in args.rates.split(",")]
    args.models, args.compression = args.models.split(","), args.compression.split(",")
    if unknown := set(args.compression) - {"none", "fp16", "bf16", "powersgd"}:
        parser.error(f"unknown --compression {sorted(unknown)}")
    if args.smoke:
        args.rates, args.models = args.rates[:1], ["mlp"]
        args.steps, args.rounds, args.fit_repeats, args.timeout = 3, 1, 1, 60
    if os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("tc")):
        sys.exit("needs root, `ip` and `tc` (network namespaces and tbf)")
    if not args.python or not Path(args.python).exists():
        sys.exit("--python (or DIST_NN_OPENMPI_PYTHON): a Python with Open MPI's mpi4py")
    for stop in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # SystemExit: finally runs
        signal.signal(stop, lambda number, frame: sys.exit(128 + number))
    link = Link(args.loopback)
    try:
        link.open()
        with tempfile.TemporaryDirectory() as directory:
            bench(args, link, Path(directory))
    finally:
        end_children()
        link.close()


if __name__ == "__main__":
    main()
