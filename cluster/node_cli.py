"""The `engine-node` command (setup.cfg's entry point, `python -m cluster.node`):
options and their ENGINE_NODE_* environment variables, the secret check, then a
NodeDaemon (cluster/daemon.py) serving until SIGTERM or SIGINT.

`--cpus LIST` pins the node to those CPUs before anything opens the OpenCL platform: several
PoCL nodes on one host would otherwise each start a worker thread per core of the host."""
from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import re
import signal
import sys

from . import auth, daemon, hostpool, program, wire
from .connections import raise_fd_limit
from .daemon import NodeDaemon

log = logging.getLogger("engine-node")
POCL_THREADS = ("POCL_MAX_PTHREAD_COUNT", "POCL_CPU_MAX_CU_NUM")   # PoCL < 4 reads the first, newer the second


def cpu_list(cpus) -> str:
    """[0, 1, 2, 3, 8] -> "0-3,8" (the form Linux uses: taskset -c, Cpus_allowed_list)."""
    out, cpus = [], sorted(cpus)
    for c in cpus:
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def parse_cpus(text: str) -> list[int]:
    """"0-3,8,10-11" -> [0, 1, 2, 3, 8, 10, 11], checked against the CPUs this process may
    run on; ValueError naming the bad part (or the CPUs the host lacks) and what it has."""
    allowed = os.sched_getaffinity(0)
    host = f"this host has {os.cpu_count()} CPUs, this process may use {cpu_list(allowed)}"
    top, cpus, beyond = max(allowed), set(), []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ValueError(f"{part.strip()!r} in {text!r} is not a CPU number or a range "
                             f"(the form is e.g. 0-3,8,10-11; {host})")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if hi < lo:
            raise ValueError(f"{part.strip()!r} in {text!r}: a range runs from low to high ({host})")
        cpus.update(range(lo, min(hi, top) + 1))   # never expand "0-999999999"
        if hi > top:
            first = max(lo, top + 1)
            beyond.append(f"{first}-{hi}" if hi > first else str(hi))
    missing = [cpu_list(cpus - allowed)] if cpus - allowed else []
    if missing or beyond:
        raise ValueError(f"CPU(s) {','.join(missing + beyond)} of {text!r} not available: {host}")
    return sorted(cpus)


def pin_threads(cpus) -> None:
    """sched_setaffinity(0) moves the calling thread only: move every thread already running
    (numpy's BLAS pool) to `cpus`; threads started later inherit the main thread's set."""
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["0"]:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:   # a thread that ended meanwhile
            pass


def pin(cpus: list[int]) -> None:
    """Run this process on `cpus` only, with as many PoCL worker threads as CPUs.  Must run
    before the OpenCL platform initialises (PoCL reads its thread count then, and its
    workers inherit the affinity of the thread that starts them)."""
    pin_threads(cpus)
    if not any(k in os.environ for k in POCL_THREADS):   # the user's own setting wins
        for k in POCL_THREADS:
            os.environ[k] = str(len(cpus))


def overlap_mb(text: str) -> float:
    """--overlap-mb's value: MB, or -1 for "auto" (the daemon picks by device kind)."""
    if str(text).strip().lower() == "auto":
        return -1.0
    try:
        mb = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of MB or 'auto'") from None
    if mb < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a piece cannot be smaller than nothing")
    return mb


def main(argv=None) -> int:
    env = os.environ.get
    ap = argparse.ArgumentParser(prog="engine-node", description=daemon.__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default=env("ENGINE_NODE_LISTEN", "tcp://127.0.0.1:7070"),
                    help="control endpoint; tcp://127.0.0.1:* picks a free port [ENGINE_NODE_LISTEN]")
    ap.add_argument("--device", default=env("ENGINE_NODE_DEVICE"), help="OpenCL device index or name [ENGINE_NODE_DEVICE]")
    ap.add_argument("--data", default=env("ENGINE_NODE_DATA"),
                    help="directory of datasets (NAME.arrow) a job may name instead of shipping rows [ENGINE_NODE_DATA]")
    ap.add_argument("--log", default=env("ENGINE_NODE_LOG"), help="log file (default stderr) [ENGINE_NODE_LOG]")
    ap.add_argument("--metrics", default=env("ENGINE_NODE_METRICS", "127.0.0.1:9100"),
                    help="host:port of /healthz and /metrics; port 0 picks one [ENGINE_NODE_METRICS]")
    ap.add_argument("--cpus", default=env("ENGINE_NODE_CPUS"),
                    help="run on these CPUs only, e.g. 0-3,8 (sched_setaffinity), with as many PoCL threads "
                         "(POCL_MAX_PTHREAD_COUNT, unless set): for several CPU nodes on one host [ENGINE_NODE_CPUS]")
    ap.add_argument("--data-port", type=int, default=env("ENGINE_NODE_DATA_PORT"),
                    help="port of the ring data socket, on --listen's host; default (or 0) picks a free one "
                         "[ENGINE_NODE_DATA_PORT]")
    ap.add_argument("--advertise", default=env("ENGINE_NODE_ADVERTISE"),
                    help="host name peers and the driver should dial, when bound to 0.0.0.0 [ENGINE_NODE_ADVERTISE]")
    ap.add_argument("--throttle", type=float, default=float(env("ENGINE_NODE_THROTTLE", "1")),
                    help="run N times slower (to test load balancing) [ENGINE_NODE_THROTTLE]")
    ap.add_argument("--throttle-from", type=int, default=0, help="throttle only from this training step on")
    ap.add_argument("--peer-timeout", type=float, default=30.0, help="seconds to wait on a silent ring neighbour")
    ap.add_argument("--max-message-mb", type=float, default=wire.MAX_MESSAGE_BYTES / 2**20,
                    help="refuse control messages larger than this")
    ap.add_argument("--handshake-timeout", type=float, default=5.0,
                    help="seconds a new control connection has to pass authentication before it is dropped")
    ap.add_argument("--max-conns-per-peer", type=int, default=16, help="control connections from one address")
    ap.add_argument("--max-conns", type=int, default=128,
                    help="control connections in all (x 4 MB bounds what unauthenticated peers can make the node hold)")
    ap.add_argument("--step-budget", type=float, default=float(env("ENGINE_NODE_STEP_BUDGET", "600")),
                    help="seconds a training step may take before the node cancels the job [ENGINE_NODE_STEP_BUDGET]")
    ap.add_argument("--compile-budget", type=float, default=1800.0,
                    help="seconds building and warming up one program may take before the job is cancelled")
    ap.add_argument("--max-program-mb", type=float, default=float(env("ENGINE_NODE_MAX_PROGRAM_MB", "0") or 0),
                    help="device memory one program may allocate (0: engine.validate's default) "
                         "[ENGINE_NODE_MAX_PROGRAM_MB]")
    ap.add_argument("--snapshot-every", type=int, default=int(env("ENGINE_NODE_SNAPSHOT_EVERY", "1")),
                    help="engine programs: copy weights and optimizer state on the device before every Nth update, "
                         "to roll back a step the ring abandons; a step abandoned between snapshots cannot be "
                         "resumed on this node (0: never) [ENGINE_NODE_SNAPSHOT_EVERY]")
    ap.add_argument("--digest-every", type=int, default=int(env("ENGINE_NODE_DIGEST_EVERY", "10")),
                    help="send a checksum of the weights (a download on engine programs) with every Kth step, "
                         "for the driver to compare across ranks (0: never) [ENGINE_NODE_DIGEST_EVERY]")
    ap.add_argument("--host-optimizer", action="store_true",
                    default=env("ENGINE_NODE_HOST_OPTIMIZER", "") not in ("", "0"),
                    help="keep an engine job's weights on the host and update them in numpy (the path before "
                         "issue 14: slower, but bitwise-identical updates on rings of different device kinds) "
                         "[ENGINE_NODE_HOST_OPTIMIZER]")
    ap.add_argument("--overlap-mb", type=overlap_mb, default=env("ENGINE_NODE_OVERLAP_MB", "auto"),
                    help="engine programs in rings whose nodes share a host: all-reduce the gradients through shared "
                         "memory in pieces of at most this many MB while backward still runs (0: after backward, "
                         "through localsum or the ring; auto: 16 on GPUs, 0 on CPUs) [ENGINE_NODE_OVERLAP_MB]; "
                         "ENGINE_NODE_TIMELINE=1 adds the device times of those steps to the log every 50 steps")
    a = ap.parse_args(argv)
    logging.basicConfig(filename=a.log, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cpus = None
    if a.cpus:
        try:
            cpus = parse_cpus(a.cpus)
        except ValueError as e:
            print(f"engine-node: --cpus: {e}", file=sys.stderr)
            return 2
        pin(cpus)   # before --device's check or the daemon opens the OpenCL platform
        log.info("pinned to CPUs %s (%d); PoCL threads %s", cpu_list(cpus), len(cpus),
                 ", ".join(f"{k}={os.environ.get(k)}" for k in POCL_THREADS))
    try:
        hostpool.threads()      # a malformed ENGINE_NODE_HOST_THREADS stops the node now, not its first step
    except ValueError as e:
        print(f"engine-node: {e}", file=sys.stderr)
        return 2
    secret = env("ENGINE_NODE_SECRET")
    if not secret:
        print("engine-node: set ENGINE_NODE_SECRET (the cluster's shared secret); refusing to run unauthenticated",
              file=sys.stderr)
        return 2
    try:
        auth.check_secret(secret)
    except auth.SecretError as e:
        print(f"engine-node: ENGINE_NODE_SECRET: {e}", file=sys.stderr)
        return 2
    if a.max_program_mb:
        os.environ["ENGINE_MAX_PROGRAM_BYTES"] = str(int(a.max_program_mb * 2**20))
    raise_fd_limit()
    if a.device:
        try:
            log.info("device %s", program.check_device(a.device))
        except program.ProgramError as e:
            print(f"engine-node: {e}", file=sys.stderr)
            return 2
    node = NodeDaemon(a.listen, secret.encode(), device=a.device, data_dir=a.data, metrics_addr=a.metrics,
                      throttle=a.throttle, throttle_from=a.throttle_from, advertise=a.advertise, peer_timeout=a.peer_timeout,
                      max_message_bytes=int(a.max_message_mb * 2**20), data_port=a.data_port,
                      handshake_timeout=a.handshake_timeout, max_conns_per_peer=a.max_conns_per_peer,
                      max_conns=a.max_conns, step_budget=a.step_budget, compile_budget=a.compile_budget,
                      snapshot_every=a.snapshot_every, digest_every=a.digest_every, host_optimizer=a.host_optimizer,
                      overlap_mb=a.overlap_mb, cpus=cpus)
    signal.signal(signal.SIGTERM, lambda *_: setattr(node, "stopping", True))
    signal.signal(signal.SIGINT, lambda *_: setattr(node, "stopping", True))
    faulthandler.register(signal.SIGUSR1)   # `kill -USR1 <pid>` prints every thread's stack
    print(f"engine-node ready control={node.endpoint} data={node.links.endpoint} metrics={node.metrics_url}", flush=True)
    node.serve()
    return 0
