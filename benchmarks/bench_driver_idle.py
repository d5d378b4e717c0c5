"""The driver's CPU while the cluster works and the driver waits: what a LocalCluster costs in
the driver's process, against a client whose scheduler and workers are other processes.

In a LocalCluster the scheduler and the nannies run on the driver's event loop, so
`bench_scale.py`'s driver CPU seconds include their housekeeping (heartbeats, the nannies'
memory monitors, the scheduler's system monitor), which goes on at a rate per wall second
whatever the scene. This measures that rate with nothing to compute: `getrusage(RUSAGE_SELF)`
over `--seconds` of waiting, (1) with a LocalCluster of `--workers` x 1 thread in this process
and (2) with only a client here, connected to a `dask scheduler` and `dask worker` processes
started on loopback. Best (lowest) of `--rounds` alternating rounds.

    python benchmarks/bench_driver_idle.py [--workers 2] [--seconds 20] [--rounds 3]

Writes benchmarks/results/bench_driver_idle.json.
"""

from __future__ import annotations

import argparse
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine_info, write_result  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rate(seconds: float) -> float:
    """This process's CPU seconds per wall second over `seconds` of waiting."""
    c0, t0 = _cpu(), time.monotonic()
    time.sleep(seconds)
    return (_cpu() - c0) / (time.monotonic() - t0)


def local_cluster(workers: int, seconds: float) -> float:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as lc, Client(lc):
        time.sleep(3)  # start-up settled
        return _rate(seconds)


def client_only(workers: int, seconds: float) -> float:
    from distributed import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "distributed.cli"]
    procs = [
        subprocess.Popen(
            [*cli[:2], "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        procs += [
            subprocess.Popen(
                [*cli[:2], "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-dashboard"],
                stderr=subprocess.DEVNULL,
            )
            for _ in range(workers)
        ]
        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=60)
            time.sleep(3)
            return _rate(seconds)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    load_before = load_average()
    rounds = []
    for r in range(args.rounds):
        local = local_cluster(args.workers, args.seconds)
        remote = client_only(args.workers, args.seconds)
        rounds.append({"local_cluster": round(local, 5), "client_only": round(remote, 5)})
        print(f"round {r + 1}: LocalCluster in the driver {local:.4f}, client only {remote:.4f} CPU s per wall s")
    best = {k: min(x[k] for x in rounds) for k in rounds[0]}
    result = {
        "benchmark": "bench_driver_idle",
        "settings": {"workers": args.workers, "threads_per_worker": 1, "seconds": args.seconds, "rounds": args.rounds},
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_end": load_average(),
        "rounds": rounds,
        "best_cpu_s_per_wall_s": best,
        "reading": "the driver's CPU seconds per wall second with nothing to compute: a LocalCluster's "
        "scheduler and nannies in the driver's process, against a client alone",
    }
    print(
        f"best: LocalCluster {best['local_cluster']:.4f}, client only {best['client_only']:.4f} CPU s per wall s; "
        f"wrote {write_result('bench_driver_idle', result)}"
    )


if __name__ == "__main__":
    main()
