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
    """(steal, total) clock ticks from /proc/stat, per CPU (keys 0, 1, ...) and for all CPUs
    together (key "all"); empty where it cannot be read or has no steal column."""
    ticks = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 9 or not fields[0].startswith("cpu"):
                    continue
                # user nice system idle iowait irq softirq steal
                values = [int(v) for v in fields[1:9]]
                key = "all" if fields[0] == "cpu" else int(fields[0][3:])
                ticks[key] = (values[7], sum(values))
    except (OSError, ValueError):
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
        # Steal is counted over the connects only (up to the "holding" line): the p99 comes
        # from them, and the hold would dilute it.
        ticks_connected = []

        last_lines = []

        def read_stderr():
            for line in lg_proc.stderr:
                last_lines[:] = (last_lines + [line.rstrip()])[-5:]
                if args.verbose:
                    print("   ", line.rstrip(), file=sys.stderr)
                if "holding" in line:
                    ticks_connected.append(cpu_ticks())
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
        ticks_after = ticks_connected[0] if ticks_connected else cpu_ticks()
        steal = steal_pct(ticks_before, ticks_after, [0, 1] if args.pin else ["all"])
        if steal is not None:
            result["steal_pct"] = round(steal, 2)
        killer.cancel()
        reader.join(timeout=10)
        if proc.poll() is not None:
            result["error"] = f"broker exited with {proc.returncode} (see {work}/broker.log)"
            return result
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            result["error"] = (f"no result from loadgen (exit {lg_proc.returncode}): "
                               + " / ".join(last_lines) + f"; broker log in {work}")
            return result
        result["loadgen"] = json.loads(lines[-1])
        if held_rss:
            result["rss_held_kb"] = held_rss[-1]
        return result
    finally:
        stop(proc)
        log.close()
        # A failed run's directory is kept: its broker.log says why.
        if "error" not in result and not args.keep:
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
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="connections (default: 100000)")
    p.add_argument("--rate", type=float, default=2000,
                   help="connects per second (default: 2000)")
    p.add_argument("--hold", type=float, default=5,
                   help="seconds all are held (default: 5)")
    p.add_argument("--concurrency", type=int, default=200,
                   help="unanswered CONNECTs at most (default: 200)")
    p.add_argument("--sources", type=int, default=None,
                   help="source addresses to spread over (default: none while --n is at most a "
                        "sixth of the ephemeral port range, else enough for a sixth each)")
    p.add_argument("--runs", type=int, default=1,
                   help="runs of each broker, interleaved (default: 1)")
    p.add_argument("--brokers", default="roost,mosquitto",
                   help="comma-separated: roost, mosquitto (default: both; mosquitto is "
                        "skipped if not installed, unless --mosquitto-bin names it)")
    p.add_argument("--roost-bin", default=os.path.join(REPO, "target/release/roost"),
                   help="the roost binary (default: target/release/roost)")
    p.add_argument("--baseline-bin", help="another roost build, run as roost-before")
    p.add_argument("--mosquitto-bin", default=None,
                   help="the mosquitto binary (default: mosquitto on PATH, else "
                        "/usr/sbin/mosquitto)")
    p.add_argument("--loadgen", default=os.path.join(REPO, "target/release/examples/loadgen"),
                   help="the load generator (default: target/release/examples/loadgen)")
    p.add_argument("--max-secs", type=int, default=0,
                   help="bound on one loadgen run (0: from --n, --rate and --hold)")
    p.add_argument("--default-logs", dest="quiet_logs", action="store_false",
                   help="brokers log at their defaults (info / log_type all), not warnings only")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="do not pin the broker to CPU 0 and the load generator to CPU 1")
    p.add_argument("--nice", type=int, default=0,
                   help="run broker and load generator at this nice value (negative: ahead of "
                        "other work on a shared machine; needs root)")
    p.add_argument("--max-steal", type=float, default=None,
                   help="repeat a run (up to 3 tries) in which the hypervisor took more than "
                        "this percentage of a benchmark CPU's time while connecting (steal "
                        "time in /proc/stat); the least disturbed try is kept, marked * if "
                        "still over, and the others are listed")
    p.add_argument("--keep", action="store_true",
                   help="keep the scratch directories (a failed run's are always kept)")
    p.add_argument("-v", "--verbose", action="store_true", help="show the load generator's stderr")
    p.add_argument("--json", help="append raw results to this file")
    args = p.parse_args()
    if args.n < 1 or args.rate <= 0 or args.runs < 1 or args.hold < 0 or args.concurrency < 1:
        p.error("--n, --rate, --runs and --concurrency must be positive, --hold not negative")
    if args.max_steal is not None and args.max_steal < 0:
        p.error("--max-steal is a percentage, 0 or more")
    if args.max_steal is not None and not cpu_ticks():
        print("--max-steal: this system reports no steal time in /proc/stat; no run is repeated",
              file=sys.stderr)

    brokers = []
    for name in args.brokers.split(","):
        if name == "roost":
            brokers.append(("roost", args.roost_bin))
        elif name == "mosquitto":
            mosquitto = args.mosquitto_bin or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
            if os.path.exists(mosquitto):
                brokers.append(("mosquitto", mosquitto))
            elif args.mosquitto_bin:
                sys.exit(f"{mosquitto} not found (--mosquitto-bin)")
            else:
                print("mosquitto not found (apt-get install -y mosquitto): skipped",
                      file=sys.stderr)
        else:
            sys.exit(f"unknown broker {name!r} in --brokers (roost, mosquitto; "
                     "--baseline-bin adds roost-before)")
    if args.baseline_bin:
        brokers.insert(1, ("roost-before", args.baseline_bin))
    if not brokers:
        sys.exit("no broker to run")
    # Brokers run in their scratch directories: a relative path is taken from here.
    brokers = [(name, os.path.abspath(binary)) for name, binary in brokers]
    args.loadgen = os.path.abspath(args.loadgen)
    for _, binary in brokers + [("loadgen", args.loadgen)]:
        if not os.path.exists(binary):
            sys.exit(f"{binary} not found (cargo build --release --bin roost --example loadgen; "
                     "with CARGO_TARGET_DIR set, pass --roost-bin and --loadgen)")

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

    results = {name: [] for name, _ in brokers}
    set_aside = []
    for run_idx in range(args.runs):
        for name, binary in brokers:
            tries = []
            for attempt in range(3):
                print(f"run {run_idx + 1}/{args.runs}: {name}"
                      + (f" (try {attempt + 1})" if attempt else ""), file=sys.stderr, flush=True)
                r = run_one(name, binary, args, run_idx)
                tries.append(r)
                noisy = (args.max_steal is not None and "error" not in r
                         and r.get("steal_pct", 0) > args.max_steal)
                if not noisy:
                    break
                print(f"  steal {r['steal_pct']:.1f}% > {args.max_steal}%, "
                      f"p99 {r['loadgen']['connect_p99_ms']:.2f} ms", file=sys.stderr)
            # The last try, or if all were disturbed the least disturbed one, marked.
            if len(tries) == 3 and all(t.get("steal_pct", 0) > args.max_steal
                                       for t in tries if "error" not in t):
                measured = [t for t in tries if "error" not in t]
                r = min(measured, key=lambda t: t["steal_pct"]) if measured else tries[-1]
                if "error" not in r:
                    r["over_steal"] = True
            for t in tries:
                if t is not r:
                    t["set_aside"] = True
                    set_aside.append(t)
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(json.dumps(t) + "\n")
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
        steals = [None if r.get("steal_pct") is None
                  else f"{r['steal_pct']:.1f}" + ("*" if r.get("over_steal") else "")
                  for r in results[name]]
        print(f"{name}: p99 per run, ms: "
              + ", ".join("-" if v is None else f"{v:.2f}" for v in p99s)
              + ("; steal per run, %: " + ", ".join("-" if v is None else v for v in steals)
                 if any(v is not None for v in steals) else ""))
    if any(r.get("over_steal") for rs in results.values() for r in rs):
        print(f"* over --max-steal {args.max_steal} in all 3 tries: the least disturbed kept")
    # Runs of one index ran back to back: compare each broker with mosquitto run by run.
    if "mosquitto" in results:
        theirs = results["mosquitto"]
        for name, _ in brokers:
            if name == "mosquitto":
                continue
            # Only runs where every connect was answered on both sides compare.
            pairs = [(a["loadgen"]["connect_p99_ms"], b["loadgen"]["connect_p99_ms"])
                     for a, b in zip(results[name], theirs)
                     if complete(a, args.n) and complete(b, args.n)
                     and b["loadgen"]["connect_p99_ms"] > 0]
            if pairs:
                ratio = statistics.median(a / b for a, b in pairs)
                wins = sum(1 for a, b in pairs if a <= b)
                print(f"{name} against mosquitto, run by run: p99 no higher in {wins} of "
                      f"{len(pairs)}, median ratio {ratio:.2f}")
    for r in set_aside:
        what = (r["error"] if "error" in r else
                f"steal {r['steal_pct']:.1f}%, p99 {r['loadgen']['connect_p99_ms']:.2f} ms")
        print(f"set aside: {r['broker']} run {r['run'] + 1}, {what}")
    failed = [r for rs in results.values() for r in rs if not complete(r, args.n)]
    if failed:
        sys.exit(f"{len(failed)} run(s) failed or left connects unanswered (see above)")


def complete(r, n):
    """Whether run `r` measured all `n` connects, every one answered."""
    lg = r.get("loadgen")
    return lg is not None and lg["connected"] == n and lg["failed"] == 0


if __name__ == "__main__":
    main()
