#!/usr/bin/env python3
"""Throughput and latency across a bridge: an edge broker bridged to a central one.

Publishers connect to the edge, subscribers to the central broker, so every message crosses
the bridge (`lg/# out QOS`). Pairs compared side by side in the same session, each started
fresh on free loopback ports for every run:

  roost -> roost           Roost at the edge (its bridge), Roost in the centre
  mosquitto -> mosquitto   mosquitto's bridge, the same topology
  direct roost             no bridge: publishers and subscribers on one Roost (the baseline)

Roost runs with its defaults (a store on disk, fsync); mosquitto with `persistence false`
(it would write only at exit). QoS 0 is published at a fixed rate (--rate0), QoS 1 as fast
as the publisher's window of 100 allows. Medians of --runs runs, interleaved. Needs
`cargo build --release --bin roost --example loadgen` and mosquitto.

    python3 examples/bridge_bench.py --runs 3
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (LIVE, free_port, pin, print_medians, run_interleaved,  # noqa: E402
                      stop, wait_listening)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def roost(work, name, port, bridge_to=None, qos=1):
    os.makedirs(os.path.join(work, name), exist_ok=True)
    conf = os.path.join(work, name, "roost.toml")
    with open(conf, "w") as f:
        # Room for the whole run in every queue: the bench measures speed, not limits.
        f.write("max_inflight_messages = 100\nreceive_maximum = 100\n")
        if bridge_to:
            f.write(f'[[bridge]]\nname = "central"\naddress = "127.0.0.1:{bridge_to}"\n'
                    f'max_inflight = 100\ntopic = ["lg/# out {qos}"]\n')
    return [os.path.join(ROOT, "target/release/roost"), "--port", str(port), "--config", conf,
            "--log-level", "warn", "--data-dir", os.path.join(work, name, "data")]


def mosquitto(work, name, port, bridge_to=None, qos=1):
    os.makedirs(os.path.join(work, name), exist_ok=True)
    conf = os.path.join(work, name, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                "max_inflight_messages 100\nmax_queued_messages 1000000\nlog_type error\n")
        if bridge_to:
            f.write(f"connection central\naddress 127.0.0.1:{bridge_to}\n"
                    f"topic lg/# out {qos}\n")
    return ["mosquitto", "-c", conf]


def start(cmd, port, cpu, args):
    proc = subprocess.Popen(pin(cpu, args.pin) + cmd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    LIVE[proc.pid] = proc
    if not wait_listening(port, proc):
        raise RuntimeError(f"{cmd[0]} did not start")
    return proc


def run_pair(kind, qos, args):
    """One run: returns the loadgen result dict (or an error)."""
    work = tempfile.mkdtemp(prefix=f"bridge-bench-{kind}-")
    procs = []
    try:
        central, edge = free_port(), free_port()
        make = mosquitto if kind.startswith("mosquitto") else roost
        procs.append(start(make(work, "central", central), central, 0, args))
        if kind == "direct":
            edge = central
        else:
            procs.append(start(make(work, "edge", edge, bridge_to=central, qos=qos), edge, 0,
                               args))
            time.sleep(1.5)  # the bridge connects (its log is off): generous, not measured
        lg = pin(1, args.pin) + [
            os.path.join(ROOT, "target/release/examples/loadgen"), "--port", str(edge),
            "--max-secs", str(args.max_secs), "--quiet", "pubsub", "--sub-port", str(central),
            "--qos", str(qos), "--count", str(args.count), "--size", str(args.size),
            "--rate", str(args.rate0 if qos == 0 else args.rate), "--idle-timeout", "10"]
        out = subprocess.run(lg, capture_output=True, text=True, timeout=args.max_secs + 30)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if not lines:
            return {"error": out.stderr.strip()[-300:]}
        return json.loads(lines[-1])
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--count", type=int, default=20000, help="messages per run")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rate", type=float, default=0.0,
                    help="QoS 1/2 publish rate, msg/s; 0 = as fast as possible")
    ap.add_argument("--rate0", type=float, default=20000.0,
                    help="QoS 0 publish rate, msg/s (unpaced QoS 0 measures queue drops, "
                         "not the bridge)")
    ap.add_argument("--qos", default="0,1")
    ap.add_argument("--max-secs", type=int, default=120)
    ap.add_argument("--no-pin", dest="pin", action="store_false")
    args = ap.parse_args()
    kinds = ["roost->roost", "mosquitto->mosquitto", "direct"]
    qos_levels = [int(q) for q in args.qos.split(",")]
    results = run_interleaved(kinds, qos_levels, args.runs, lambda kind, qos: run_pair(kind, qos, args))
    print_medians(results, kinds, qos_levels, args.count, args.size, args.runs)


if __name__ == "__main__":
    main()
