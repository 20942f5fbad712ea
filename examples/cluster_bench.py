#!/usr/bin/env python3
"""Throughput and latency of cluster mode: Roost nodes on a three-server NATS JetStream
cluster (replicas 3), all on this machine, against one Roost alone.

Paths compared side by side in the same session, each started fresh on free loopback ports
for every run (the NATS cluster too):

  cross-node   publishers on node 1, subscribers on node 2 (every message crosses NATS)
  same node    publishers and subscribers on node 1 of the cluster (QoS 1 still waits for
               JetStream before each PUBACK)
  alone        one Roost without [cluster] (the baseline)

With --share, the subscribers (--subs, default 2) form one Shared Subscription group, spread
over the nodes in turn (cross-node: nodes 2 and 1; same node: node 1; alone: the one node),
and each message is expected once among them.

Roost runs with its defaults (a store on disk, fsync). QoS 0 is published at a fixed rate
(--rate0), QoS 1 as fast as the publisher's window of 100 allows. Medians of --runs runs,
interleaved. Needs `cargo build --release --bin roost --example loadgen` and nats-server.

    python3 examples/cluster_bench.py --runs 3
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (LIVE, free_port, print_medians, run_interleaved,  # noqa: E402
                      stop, wait_listening)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spawn(cmd):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    LIVE[proc.pid] = proc
    return proc


def nats_cluster(work):
    """Three JetStream servers, routed to each other; returns (procs, client URLs)."""
    client = [free_port() for _ in range(3)]
    route = [free_port() for _ in range(3)]
    monitor = [free_port() for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in route)
    procs = []
    for i in range(3):
        procs.append(spawn([
            "nats-server", "-a", "127.0.0.1", "-p", str(client[i]), "-m", str(monitor[i]),
            "-n", f"bench{i + 1}", "-js", "-sd", os.path.join(work, f"nats{i + 1}"),
            "--cluster_name", "bench", "--cluster", f"nats://127.0.0.1:{route[i]}",
            "--routes", routes]))
    # Ready once a JetStream meta leader is known.
    end = time.time() + 30
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor[0]}/jsz", timeout=1) as r:
                if json.load(r).get("meta_cluster", {}).get("leader"):
                    break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        raise RuntimeError("the NATS cluster did not elect a JetStream leader")
    return procs, [f"nats://127.0.0.1:{p}" for p in client]


def roost(work, name, port, urls=None):
    os.makedirs(os.path.join(work, name), exist_ok=True)
    conf = os.path.join(work, name, "roost.toml")
    with open(conf, "w") as f:
        f.write("max_inflight_messages = 100\nreceive_maximum = 100\n")
        if urls:
            f.write(f"[cluster]\nnats = {json.dumps(urls)}\nnode = \"{name}\"\n")
    proc = spawn([os.path.join(ROOT, "target/release/roost"), "--port", str(port), "--config",
                  conf, "--log-level", "warn", "--data-dir", os.path.join(work, name, "data")])
    if not wait_listening(port, proc, timeout=45):
        raise RuntimeError(f"roost {name} did not start")
    return proc


def run(kind, qos, args):
    work = tempfile.mkdtemp(prefix=f"cluster-bench-{kind}-")
    procs = []
    try:
        p1, p2 = free_port(), free_port()
        if kind == "alone":
            procs.append(roost(work, "n1", p1))
            sub = p1
        else:
            nats, urls = nats_cluster(work)
            procs.extend(nats)
            procs.append(roost(work, "n1", p1, urls))
            procs.append(roost(work, "n2", p2, urls))
            sub = p2 if kind == "cross-node" else p1
            time.sleep(1.0)  # heartbeats and watches settle: generous, not measured
        lg = [os.path.join(ROOT, "target/release/examples/loadgen"), "--port", str(p1),
              "--max-secs", str(args.max_secs), "--quiet", "pubsub", "--sub-port", str(sub),
              "--qos", str(qos), "--count", str(args.count), "--size", str(args.size),
              "--rate", str(args.rate0 if qos == 0 else args.rate), "--idle-timeout", "10"]
        if args.persistent_subs:
            lg.append("--persistent-subs")
        if args.share:
            ports = [sub] if kind != "cross-node" else [p2, p1]
            lg += ["--share", "bench", "--subs", str(args.subs),
                   "--sub-ports", ",".join(str(p) for p in ports)]
        out = subprocess.run(lg, capture_output=True, text=True, timeout=args.max_secs + 30)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if not lines:
            return {"error": out.stderr.strip()[-300:]}
        return json.loads(lines[-1])
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--count", type=int, default=20000, help="messages per run")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rate", type=float, default=0.0,
                    help="QoS 1 publish rate, msg/s; 0 = as fast as possible")
    ap.add_argument("--rate0", type=float, default=20000.0, help="QoS 0 publish rate, msg/s")
    ap.add_argument("--qos", default="0,1")
    ap.add_argument("--max-secs", type=int, default=120)
    ap.add_argument("--persistent-subs", action="store_true",
                    help="durable subscribers (in cluster mode they take QoS 1/2 from the stream)")
    ap.add_argument("--share", action="store_true",
                    help="subscribers form one Shared Subscription group across the nodes")
    ap.add_argument("--subs", type=int, default=2, help="members of the group (--share)")
    args = ap.parse_args()
    kinds = ["cross-node", "same node", "alone"]
    qos_levels = [int(q) for q in args.qos.split(",")]
    results = run_interleaved(kinds, qos_levels, args.runs, lambda kind, qos: run(kind, qos, args))
    print_medians(results, kinds, qos_levels, args.count, args.size, args.runs)


if __name__ == "__main__":
    main()
