#!/usr/bin/env python3
"""Many idle MQTT connections: connect latency and broker memory per connection.

For every run and broker, a fresh broker is started on a free loopback port and `loadgen conn`
opens --n connections at --rate per second (TCP connect, CONNECT, CONNACK, then idle with a
long keep alive), with source addresses spread over 127.0.0.2 .. 127.0.0.(K+1) so that no
address uses more than a sixth of its ephemeral ports (the kernel's search for a free port
slows down as they fill). Connect latency is TCP connect to CONNACK,
measured by the load generator (p50/p99/max). The broker's VmRSS is read before the first
connection and while all of them are held; the difference divided by the connections held
is the memory per idle connection. Brokers run interleaved, pinned to CPU 0 (the load
generator to CPU 1), and are stopped by PID.

On a virtual machine the hypervisor may take the CPUs away for milliseconds at a time (steal
time), which moves a p99 more than anything a broker does. Each run reports the largest share
of CPU 0's or 1's time stolen while it ran (from /proc/stat), and --max-steal PCT repeats a
run (up to 3 tries) that lost more; set-aside runs are listed at the end. Runs with one index
go back to back, so each broker is also compared with mosquitto run by run.

    python3 examples/idle_conns.py                                 # 100k at 2000/s, roost + mosquitto
    python3 examples/idle_conns.py --n 20000 --runs 3 --brokers roost
    python3 examples/idle_conns.py --baseline-bin /path/to/older/roost   # adds roost-before

The open-file limit is raised (soft and hard, within fs.nr_open) for this script and the
processes it starts; beyond the current hard limit that needs CAP_SYS_RESOURCE, and without
it --n is lowered to what the limit allows (said on stderr).
Only the standard library is used.
"""

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import LIVE, free_port, mem_kb, pin, stop, wait_listening

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
set_tcp_nodelay true
log_dest stderr
{log_types}
"""


def read_sysctl(name):
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().split()
    except OSError:
        return []


def raise_nofile(want):
    """Raises RLIMIT_NOFILE (soft and hard) to `want`, capped by fs.nr_open."""
    nr_open = read_sysctl("fs.nr_open")
    cap = int(nr_open[0]) if nr_open else want
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Never below what the limit already is.
    target = max(soft, min(want, cap))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def cpu_ticks():
    """Per CPU: (steal, total) clock ticks from /proc/stat; empty where it cannot be read."""
    ticks = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                fields = line.split()
                if fields and fields[0].startswith("cpu") and fields[0] != "cpu":
                    values = [int(v) for v in fields[1:9]]
                    # user nice system idle iowait irq softirq steal
                    ticks[int(fields[0][3:])] = (values[7], sum(values))
    except (OSError, ValueError, IndexError):
        return {}
    return ticks


def steal_pct(before, after, cpus):
    """The largest share of time, in percent, that the hypervisor took from any of `cpus`
    between two cpu_ticks() readings (None where steal is not reported)."""
    worst = None
    for cpu in cpus:
        if cpu not in before or cpu not in after:
            continue
        steal = after[cpu][0] - before[cpu][0]
        total = after[cpu][1] - before[cpu][1]
        if total > 0:
            pct = 100.0 * steal / total
            worst = pct if worst is None else max(worst, pct)
    return worst


def niced(args):
    """The command prefix for --nice (none at 0)."""
    return ["nice", "-n", str(args.nice)] if args.nice else []


def broker_cmd(name, binary, port, work, args):
    if name.startswith("roost"):
        level = "warn" if args.quiet_logs else "info"
        return [binary, "--port", str(port), "--bind", "127.0.0.1", "--log-level", level,
                "--data-dir", os.path.join(work, "data")]
    log_types = "log_type error\nlog_type warning" if args.quiet_logs else "log_type all"
    conf = os.path.join(work, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(MOSQUITTO_CONF.format(port=port, log_types=log_types))
    return [binary, "-c", conf]


def run_one(name, binary, args, run_idx):
    work = tempfile.mkdtemp(prefix=f"idle-{name}-")
    port = free_port()
    log = open(os.path.join(work, "broker.log"), "w")
    cmd = niced(args) + pin(0, args.pin) + broker_cmd(name, binary, port, work, args)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    LIVE[proc.pid] = proc
    result = {"broker": name, "run": run_idx}
    try:
        if not wait_listening(port, proc):
            result["error"] = f"broker did not start (see {work}/broker.log)"
            return result
        time.sleep(0.5)
        result["rss_before_kb"] = mem_kb(proc.pid)[0]
        lg = niced(args) + pin(1, args.pin) + [args.loadgen, "--port", str(port), "--label", name,
                                 "--max-secs", str(args.max_secs), "conn", "--n", str(args.n),
                                 "--rate", str(args.rate), "--hold", str(args.hold),
                                 "--concurrency", str(args.concurrency),
                                 "--sources", str(args.sources)]
        ticks_before = cpu_ticks()
        lg_proc = subprocess.Popen(lg, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        held_rss = []

        def read_stderr():
            for line in lg_proc.stderr:
                if args.verbose:
                    print("   ", line.rstrip(), file=sys.stderr)
                if "holding" in line:
                    # Settled: every CONNACK is in; sample twice, keep the later one.
                    time.sleep(min(2.0, args.hold / 2))
                    if proc.poll() is None:
                        held_rss.append(mem_kb(proc.pid)[0])
        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        killer = threading.Timer(args.max_secs + 60, lg_proc.kill)
        killer.start()
        out = lg_proc.stdout.read()
        lg_proc.wait()
        steal = steal_pct(ticks_before, cpu_ticks(), [0, 1] if args.pin else list(ticks_before))
        if steal is not None:
            result["steal_pct"] = round(steal, 2)
        killer.cancel()
        reader.join(timeout=10)
        if proc.poll() is not None:
            result["error"] = f"broker exited with {proc.returncode} (see {work}/broker.log)"
            return result
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            result["error"] = f"no result from loadgen (exit {lg_proc.returncode})"
            return result
        result["loadgen"] = json.loads(lines[-1])
        if held_rss:
            result["rss_held_kb"] = held_rss[-1]
        return result
    finally:
        stop(proc)
        log.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def summary(results):
    ok = [r for r in results if "loadgen" in r and "rss_held_kb" in r]
    if not ok:
        return None

    def med(f):
        return statistics.median(f(r) for r in ok)
    held = med(lambda r: r["loadgen"]["held"] or r["loadgen"]["connected"])
    return {
        "runs": len(ok),
        "held": held,
        "failed": max(r["loadgen"]["failed"] for r in ok),
        "rss_before_mb": med(lambda r: r["rss_before_kb"]) / 1024,
        "rss_held_mb": med(lambda r: r["rss_held_kb"]) / 1024,
        "kb_per_conn": med(lambda r: (r["rss_held_kb"] - r["rss_before_kb"])
                           / max(1, r["loadgen"]["connected"])),
        "p50": med(lambda r: r["loadgen"]["connect_p50_ms"]),
        "p99": med(lambda r: r["loadgen"]["connect_p99_ms"]),
        "max": med(lambda r: r["loadgen"]["connect_max_ms"]),
        "p99_spread": (min(r["loadgen"]["connect_p99_ms"] for r in ok),
                       max(r["loadgen"]["connect_p99_ms"] for r in ok)),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="connections")
    p.add_argument("--rate", type=float, default=2000, help="connects per second")
    p.add_argument("--hold", type=float, default=5, help="seconds all are held")
    p.add_argument("--concurrency", type=int, default=200,
                   help="unanswered CONNECTs at most")
    p.add_argument("--sources", type=int, default=None,
                   help="source addresses to spread over (default: none while --n is at most a "
                        "sixth of the ephemeral port range, else enough for a sixth each)")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--brokers", default="roost,mosquitto")
    p.add_argument("--roost-bin", default=os.path.join(REPO, "target/release/roost"))
    p.add_argument("--baseline-bin", help="another roost build, run as roost-before")
    p.add_argument("--mosquitto-bin", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    p.add_argument("--loadgen", default=os.path.join(REPO, "target/release/examples/loadgen"))
    p.add_argument("--max-secs", type=int, default=0,
                   help="bound on one loadgen run (0: from --n, --rate and --hold)")
    p.add_argument("--default-logs", dest="quiet_logs", action="store_false",
                   help="brokers log at their defaults (info / log_type all), not warnings only")
    p.add_argument("--no-pin", dest="pin", action="store_false")
    p.add_argument("--nice", type=int, default=0,
                   help="run broker and load generator at this nice value (negative: ahead of "
                        "other work on a shared machine; needs root)")
    p.add_argument("--max-steal", type=float, default=None,
                   help="repeat a run (up to 3 tries) in which the hypervisor took more than "
                        "this percentage of a benchmark CPU's time (steal time in /proc/stat); "
                        "the runs set aside are listed")
    p.add_argument("--keep", action="store_true", help="keep the scratch directories")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--json", help="append raw results to this file")
    args = p.parse_args()

    ports = read_sysctl("net.ipv4.ip_local_port_range")
    per_source = int(ports[1]) - int(ports[0]) + 1 if len(ports) == 2 else 28_000
    if args.max_secs == 0:
        args.max_secs = int(args.n / args.rate + args.hold + 60)
    soft, hard = raise_nofile(2 * args.n + 10_000)
    print(f"fs.nr_open {read_sysctl('fs.nr_open')}, fs.file-max {read_sysctl('fs.file-max')}, "
          f"ip_local_port_range {ports}, somaxconn {read_sysctl('net.core.somaxconn')}; "
          f"RLIMIT_NOFILE {soft}/{hard}", file=sys.stderr)
    if soft < args.n + 1000:
        # Without CAP_SYS_RESOURCE the hard limit cannot be raised: measure what fits.
        fit = (soft - 1000) // 1000 * 1000
        if fit < 1000:
            sys.exit(f"open-file limit {soft} is too low")
        print(f"open-file limit {soft} (hard {hard}) allows no more than about {soft} "
              f"connections per process: --n {args.n} lowered to {fit}", file=sys.stderr)
        args.n = fit
    if args.sources is None:
        # The kernel's search for a free ephemeral port slows down as one address's ports
        # fill: past about half of them, every connect at 2000/s took over 1 ms for every
        # broker. Each source address is given at most a sixth of its ports.
        needed = math.ceil(args.n * 6 / per_source)
        args.sources = needed if needed > 1 else 0
    print(f"{args.n} connections, {args.sources or 'no'} source addresses bound", file=sys.stderr)

    brokers = []
    for name in args.brokers.split(","):
        if name == "roost":
            brokers.append(("roost", args.roost_bin))
        elif name == "mosquitto":
            if os.path.exists(args.mosquitto_bin):
                brokers.append(("mosquitto", args.mosquitto_bin))
            else:
                print("mosquitto not found (apt-get install -y mosquitto): skipped",
                      file=sys.stderr)
        else:
            sys.exit(f"unknown broker {name!r} in --brokers (roost, mosquitto; "
                     "--baseline-bin adds roost-before)")
    if args.baseline_bin:
        brokers.insert(1, ("roost-before", args.baseline_bin))
    # Brokers run in their scratch directories: a relative path is taken from here.
    brokers = [(name, os.path.abspath(binary)) for name, binary in brokers]
    args.loadgen = os.path.abspath(args.loadgen)
    for _, binary in brokers + [("loadgen", args.loadgen)]:
        if not os.path.exists(binary):
            sys.exit(f"{binary} not found (cargo build --release --bin roost --example loadgen; "
                     "with CARGO_TARGET_DIR set, pass --roost-bin and --loadgen)")

    results = {name: [] for name, _ in brokers}
    set_aside = []
    for run_idx in range(args.runs):
        for name, binary in brokers:
            for attempt in range(3):
                print(f"run {run_idx + 1}/{args.runs}: {name}", file=sys.stderr, flush=True)
                r = run_one(name, binary, args, run_idx)
                noisy = (args.max_steal is not None and "error" not in r
                         and r.get("steal_pct", 0) > args.max_steal)
                if not noisy or attempt == 2:
                    break
                print(f"  set aside: steal {r['steal_pct']:.1f}% > {args.max_steal}%, "
                      f"p99 {r['loadgen']['connect_p99_ms']:.2f} ms; again", file=sys.stderr)
                r["set_aside"] = True
                set_aside.append(r)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(r) + "\n")
            if "error" in r:
                print(f"  {name}: {r['error']}", file=sys.stderr)
            else:
                lg = r["loadgen"]
                print(f"  connected {lg['connected']:.0f} failed {lg['failed']:.0f} "
                      f"p50 {lg['connect_p50_ms']:.2f} ms p99 {lg['connect_p99_ms']:.2f} ms "
                      f"RSS {r['rss_before_kb'] / 1024:.1f} -> "
                      f"{r.get('rss_held_kb', 0) / 1024:.1f} MiB"
                      + (f", steal {r['steal_pct']:.1f}%" if "steal_pct" in r else ""),
                      file=sys.stderr)
            results[name].append(r)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")

    print(f"\n{args.n} idle connections at {args.rate:.0f}/s, "
          f"{args.sources or 'no'} source addresses bound, "
          f"medians of {args.runs} run(s)\n")
    print("| broker | held | failed | RSS before, MiB | RSS held, MiB | KB per connection "
          "| connect p50, ms | p99, ms | max, ms | p99 min-max, ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, _ in brokers:
        s = summary(results[name])
        if s is None:
            print(f"| {name} | - | - | - | - | - | - | - | - | - |")
            continue
        lo, hi = s["p99_spread"]
        print(f"| {name} | {s['held']:,.0f} | {s['failed']:.0f} | {s['rss_before_mb']:.1f} | "
              f"{s['rss_held_mb']:.1f} | {s['kb_per_conn']:.2f} | {s['p50']:.2f} | "
              f"{s['p99']:.2f} | {s['max']:.1f} | {lo:.2f}-{hi:.2f} |")
    print()
    for name, _ in brokers:
        p99s = [r["loadgen"]["connect_p99_ms"] if "loadgen" in r else None
                for r in results[name]]
        steals = [r.get("steal_pct") for r in results[name]]
        print(f"{name}: p99 per run, ms: "
              + ", ".join("-" if v is None else f"{v:.2f}" for v in p99s)
              + ("; steal per run, %: " + ", ".join("-" if v is None else f"{v:.1f}"
                                                    for v in steals)
                 if any(v is not None for v in steals) else ""))
    # Runs of one index ran back to back: compare each broker with mosquitto run by run.
    if "mosquitto" in results:
        theirs = results["mosquitto"]
        for name, _ in brokers:
            if name == "mosquitto":
                continue
            pairs = [(a["loadgen"]["connect_p99_ms"], b["loadgen"]["connect_p99_ms"])
                     for a, b in zip(results[name], theirs) if "loadgen" in a and "loadgen" in b]
            if pairs:
                ratio = statistics.median(a / b for a, b in pairs if b > 0)
                wins = sum(1 for a, b in pairs if a <= b)
                print(f"{name} against mosquitto, run by run: p99 no higher in {wins} of "
                      f"{len(pairs)}, median ratio {ratio:.2f}")
    for r in set_aside:
        print(f"set aside: {r['broker']} run {r['run'] + 1}, steal {r['steal_pct']:.1f}%, "
              f"p99 {r['loadgen']['connect_p99_ms']:.2f} ms")


if __name__ == "__main__":
    main()
