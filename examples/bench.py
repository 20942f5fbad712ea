#!/usr/bin/env python3
"""Benchmark Roost against mosquitto and rumqttd with examples/loadgen.

For every run, broker and scenario, a fresh broker is started on a free loopback port, its CPU
seconds (utime + stime from /proc/PID/stat) and peak RSS (VmHWM) are recorded around one
loadgen run, and it is stopped by PID. Raw results go to a JSON-lines file; medians over the
runs are printed as markdown tables (the ones in BENCHMARKS.md).

    python3 examples/bench.py                 # full suite, 3 runs, all brokers found
    python3 examples/bench.py --quick         # smoke test: 1 run, smaller counts
    python3 examples/bench.py --brokers roost --scenarios q0_1to1,q1_1to1 --runs 1
    python3 examples/bench.py --render bench-results.jsonl   # tables from saved results

By default the broker is pinned to CPU 0 and the load generator to CPU 1 (taskset), the same
for every broker; --no-pin turns that off. Only the standard library is used.
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import LIVE, free_port, mem_kb, pin, stop, wait_listening

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# ---------------------------------------------------------------------------------------------
# Scenarios: name -> (description, loadgen arguments, quick-mode arguments).
# `pubsub --count` is per publisher. Payloads are 64 bytes unless --size says otherwise.
# ---------------------------------------------------------------------------------------------
SCENARIOS = [
    ("q0_1to1", "1->1 QoS 0, 200k msgs",
     "pubsub --qos 0 --count 200000", "pubsub --qos 0 --count 20000"),
    ("q1_1to1", "1->1 QoS 1, 200k msgs",
     "pubsub --qos 1 --count 200000", "pubsub --qos 1 --count 20000"),
    ("q2_1to1", "1->1 QoS 2, 50k msgs",
     "pubsub --qos 2 --count 50000", "pubsub --qos 2 --count 5000"),
    ("q0_50to1", "50->1 QoS 0, 50 x 4k msgs",
     "pubsub --pubs 50 --qos 0 --count 4000", "pubsub --pubs 50 --qos 0 --count 400"),
    ("q1_50to1", "50->1 QoS 1, 50 x 4k msgs",
     "pubsub --pubs 50 --qos 1 --count 4000", "pubsub --pubs 50 --qos 1 --count 400"),
    ("q0_1to100", "1->100 QoS 0, 10k msgs (1M deliveries)",
     "pubsub --subs 100 --qos 0 --count 10000", "pubsub --subs 100 --qos 0 --count 1000"),
    ("q0_rate10k", "1->1 QoS 0 at 10k msg/s, 50k msgs (latency)",
     "pubsub --qos 0 --rate 10000 --count 50000", "pubsub --qos 0 --rate 10000 --count 10000"),
    ("q1_rate10k", "1->1 QoS 1 at 10k msg/s, 50k msgs (latency)",
     "pubsub --qos 1 --rate 10000 --count 50000", "pubsub --qos 1 --rate 10000 --count 10000"),
    ("q0_1k", "1->1 QoS 0, 1 KiB payload, 100k msgs",
     "pubsub --qos 0 --size 1024 --count 100000", "pubsub --qos 0 --size 1024 --count 10000"),
    ("idle_5000", "5000 idle connections at 1000/s, held 5 s",
     "conn --n 5000 --rate 1000 --hold 5", "conn --n 1000 --rate 1000 --hold 2"),
    ("q1_persist", "1->1 QoS 1, persistent subscriber session, 50k msgs",
     "pubsub --qos 1 --persistent-subs --count 50000",
     "pubsub --qos 1 --persistent-subs --count 5000"),
    ("q1_persist_50to1", "50->1 QoS 1, persistent subscriber session, 50 x 2k msgs",
     "pubsub --pubs 50 --qos 1 --persistent-subs --count 2000",
     "pubsub --pubs 50 --qos 1 --persistent-subs --count 200"),
]
SCENARIO_NAMES = [s[0] for s in SCENARIOS]
LATENCY_SCENARIOS = {"q0_rate10k", "q1_rate10k"}

# ---------------------------------------------------------------------------------------------
# Brokers. Each has a name, a command line (given a port and a scratch directory), and the
# scenarios it runs (None = all).
# ---------------------------------------------------------------------------------------------

# Roost runs with queue bounds high enough never to refuse or pause under these loads: parity
# with mosquitto's `max_queued_messages 0` (unlimited). The `roost-defaults` broker runs the
# default configuration: lossless back-pressure with a 2 MiB in-memory queue per session, which
# pauses publishers (3.1.1) instead of letting a subscriber's queue grow.
ROOST_BENCH_TOML = """\
max_queued_messages = 10000000
max_queued_memory_bytes = 1073741824
max_queued_bytes = 1073741824
max_inflight_messages = 100
"""

MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 100
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
"""

RUMQTTD_TOML = """\
id = 0

[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
"""


def roost_flags(roost_bin):
    """The flags `roost --help` lists (the CLI is evolving: --in-memory may appear)."""
    try:
        out = subprocess.run([roost_bin, "--help"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return set(re.findall(r"--[a-z][a-z-]+", out))


def roost_broker(name, roost_bin, toml, extra_flags=(), scenarios=None):
    """A Roost broker entry: config `toml` written to the scratch dir, data dir inside it."""
    def cmd(port, work):
        conf = os.path.join(work, "roost.toml")
        with open(conf, "w") as f:
            f.write(toml)
        return [roost_bin, "--port", str(port), "--bind", "127.0.0.1", "--config", conf,
                "--log-level", "warn", "--data-dir", os.path.join(work, "data"),
                *extra_flags]
    return {"name": name, "cmd": cmd, "scenarios": scenarios, "config": toml}


# ======================= ROOST DURABLE VARIANTS (fsync / buffered) ============================
# When the redb store lands, `roost --help` shows `--in-memory` and the config accepts
# `durability = "fsync" | "buffered"`. The baseline `roost` broker then runs with
# `--in-memory` (same as before: nothing on disk), and two more brokers run the durable
# scenario with a data directory on disk. Adjust here if the final flag or key names differ.
DURABLE_SCENARIOS = ["q1_persist", "q1_persist_50to1"]


def roost_durable_variants(roost_bin, flags):
    """Durable Roost brokers, or [] (with a notice) when this roost binary has no store."""
    if "--in-memory" not in flags:
        print("bench: roost has no --in-memory flag yet: durable variants skipped",
              file=sys.stderr)
        return []
    return [
        roost_broker("roost-fsync", roost_bin, ROOST_BENCH_TOML + 'durability = "fsync"\n',
                     scenarios=DURABLE_SCENARIOS),
        roost_broker("roost-buffered", roost_bin,
                     ROOST_BENCH_TOML + 'durability = "buffered"\n',
                     scenarios=DURABLE_SCENARIOS),
    ]
# ==============================================================================================


def make_brokers(args):
    """Every broker entry whose binary is available, in table order."""
    brokers = []
    flags = roost_flags(args.roost_bin)
    in_memory = ["--in-memory"] if "--in-memory" in flags else []
    brokers.append(roost_broker("roost", args.roost_bin, ROOST_BENCH_TOML, in_memory))
    brokers.append(roost_broker("roost-defaults", args.roost_bin, "", in_memory,
                                scenarios=["q0_1to1", "q1_1to1", "q0_50to1", "q1_50to1",
                                           "q0_1to100"]))
    brokers.extend(roost_durable_variants(args.roost_bin, flags))
    if args.baseline_bin:
        # An earlier build of Roost, run side by side with this one ("-before" in the tables).
        base_flags = roost_flags(args.baseline_bin)
        base_mem = ["--in-memory"] if "--in-memory" in base_flags else []
        brokers.append(roost_broker("roost-before", args.baseline_bin, ROOST_BENCH_TOML,
                                    base_mem))
        for b in roost_durable_variants(args.baseline_bin, base_flags):
            if b["name"] == "roost-fsync":
                b["name"] = "roost-fsync-before"
                brokers.append(b)

    mosq = args.mosquitto_bin or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if os.path.exists(mosq):
        def mosq_cmd(port, work):
            conf = os.path.join(work, "mosquitto.conf")
            with open(conf, "w") as f:
                f.write(MOSQUITTO_CONF.format(port=port))
            return [mosq, "-c", conf]
        brokers.append({"name": "mosquitto", "cmd": mosq_cmd, "scenarios": None,
                        "config": MOSQUITTO_CONF})
    else:
        print("bench: mosquitto not found (apt-get install -y mosquitto): skipped",
              file=sys.stderr)

    rumq = args.rumqttd_bin or shutil.which("rumqttd") or os.path.expanduser(
        "~/.cargo/bin/rumqttd")
    if os.path.exists(rumq):
        def rumq_cmd(port, work):
            conf = os.path.join(work, "rumqttd.toml")
            with open(conf, "w") as f:
                f.write(RUMQTTD_TOML.format(port=port))
            return [rumq, "-q", "-c", conf]
        brokers.append({"name": "rumqttd", "cmd": rumq_cmd, "scenarios": None,
                        "config": RUMQTTD_TOML})
    else:
        print("bench: rumqttd not found (cargo install rumqttd --version 0.20.0): skipped",
              file=sys.stderr)

    if args.brokers:
        wanted = args.brokers.split(",")
        brokers = [b for b in brokers if b["name"] in wanted]
    else:
        brokers = [b for b in brokers if b["name"] != "roost-defaults"]
    return brokers


def cpu_seconds(pid):
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_one(broker, scenario, lg_args, args, run_idx):
    """One fresh broker, one loadgen run. Returns a result dict."""
    work = tempfile.mkdtemp(prefix=f"bench-{broker['name']}-", dir=args.workdir)
    port = free_port()
    cmd = pin(0, args.pin) + broker["cmd"](port, work)
    log = open(os.path.join(work, "broker.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    LIVE[proc.pid] = proc
    result = {"broker": broker["name"], "scenario": scenario, "run": run_idx}
    try:
        if not wait_listening(port, proc):
            result["error"] = f"broker did not start (see {work}/broker.log)"
            return result
        time.sleep(0.3)
        cpu0 = cpu_seconds(proc.pid)
        rss0, _ = mem_kb(proc.pid)
        lg = pin(1, args.pin) + [args.loadgen, "--port", str(port), "--label",
                                 broker["name"], "--max-secs", str(args.max_secs),
                                 *lg_args.split()]
        t0 = time.time()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        lg_proc = subprocess.Popen(lg, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        hold_rss = []
        err_lines = []

        def read_stderr():
            for line in lg_proc.stderr:
                err_lines.append(line.rstrip())
                if args.verbose:
                    print("   ", line.rstrip(), file=sys.stderr)
                if "holding" in line:
                    # Sample the broker while the idle connections are held.
                    time.sleep(1.0)
                    if proc.poll() is None:
                        hold_rss.append(mem_kb(proc.pid)[0])
        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        # The loadgen bounds itself (--max-secs); this timer is the backstop.
        killer = threading.Timer(args.max_secs + 30, lg_proc.kill)
        killer.start()
        out = lg_proc.stdout.read()
        lg_proc.wait()
        killer.cancel()
        if lg_proc.returncode == -signal.SIGKILL:
            result["error"] = "loadgen did not finish in time"
        reader.join(timeout=5)
        wall = time.time() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # Only the loadgen is reaped in between, so the difference is its CPU time.
        lg_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        result["loadgen_rc"] = lg_proc.returncode
        if proc.poll() is not None:
            result["error"] = f"broker exited with {proc.returncode} (see {work}/broker.log)"
            return result
        cpu1 = cpu_seconds(proc.pid)
        rss1, hwm = mem_kb(proc.pid)
        result.update({
            "broker_cpu_s": round(cpu1 - cpu0, 3),
            "broker_rss_base_kb": rss0,
            "broker_rss_end_kb": rss1,
            "broker_peak_rss_kb": hwm,
            "wall_s": round(wall, 3),
            "loadgen_cpu_s": round(lg_cpu, 3),
            "loadgen_busy": round(lg_cpu / wall, 3) if wall > 0 else None,
        })
        if hold_rss:
            result["broker_rss_hold_kb"] = hold_rss[0]
        lines = [l for l in out.splitlines() if l.startswith("{")]
        if lines:
            result["loadgen"] = json.loads(lines[-1])
        else:
            result.setdefault("error", "no JSON from loadgen: " + " | ".join(err_lines[-3:]))
        if lg_proc.returncode != 0 and "error" not in result:
            result["error"] = " | ".join(err_lines[-2:])
        return result
    finally:
        stop(proc)
        log.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Tables.
# ---------------------------------------------------------------------------------------------
def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, unit=""):
    if v is None:
        return "-"
    if abs(v) >= 100_000:
        return f"{v / 1000:,.0f}k{unit}"
    if abs(v) >= 100:
        return f"{v:,.0f}{unit}"
    if abs(v) >= 10:
        return f"{v:.1f}{unit}"
    return f"{v:.2f}{unit}"


def ratio(a, b, lower_better=False):
    if a is None or b is None or a == 0 or b == 0:
        return "-"
    r = b / a if lower_better else a / b
    return f"{r:.2f}x"


def metric(r, key):
    lg = r.get("loadgen") or {}
    if key == "kb_per_conn":
        held = lg.get("held") or lg.get("connected")
        if not held or "broker_rss_hold_kb" not in r:
            return None
        return (r["broker_rss_hold_kb"] - r["broker_rss_base_kb"]) / held
    if key == "cpu_per_100k":
        n = lg.get("received")
        return r["broker_cpu_s"] / n * 100_000 if n else None
    if key in r:
        return r[key]
    return lg.get(key)


def render(results, brokers_order):
    by = {}
    for r in results:
        if "error" in r and "loadgen" not in r:
            continue
        by.setdefault((r["scenario"], r["broker"]), []).append(r)
    brokers = [b for b in brokers_order if any(k[1] == b for k in by)]
    has = lambda s: any(k[0] == s for k in by)  # noqa: E731
    peers = [p for p in ("roost-before", "mosquitto", "rumqttd") if p in brokers]
    lines = []

    def med(s, b, key):
        return median([metric(r, key) for r in by.get((s, b), [])])

    def table(title, rows, key, unit="", lower_better=False, ratios=True):
        rows = [s for s in rows if has(s)]
        if not rows:
            return
        lines.append(f"\n**{title}**\n")
        head = "| scenario | " + " | ".join(brokers)
        shown = peers if ratios else []
        head += "".join(f" | roost/{p}" for p in shown) + " |"
        lines.append(head)
        lines.append("|---" * (1 + len(brokers) + len(shown)) + "|")
        for s in rows:
            vals = {b: med(s, b, key) for b in brokers}
            cells = [fmt(vals[b], unit) for b in brokers]
            cells += [ratio(vals.get("roost"), vals.get(p), lower_better) for p in shown]
            lines.append(f"| {s} | " + " | ".join(cells) + " |")

    thr = [s for s in SCENARIO_NAMES if s not in LATENCY_SCENARIOS and s != "idle_5000"]
    table("Delivered msg/s (median; ratio > 1 means Roost is faster)", thr,
          "delivered_per_sec")
    table("Latency p50, µs, at 10k msg/s (ratio > 1 means Roost is lower)",
          ["q0_rate10k", "q1_rate10k"], "latency_p50_us",
          lower_better=True)
    table("Latency p99, µs, at 10k msg/s (ratio > 1 means Roost is lower)",
          ["q0_rate10k", "q1_rate10k"], "latency_p99_us", lower_better=True)
    table("Latency p50, µs, unthrottled (queueing delay under full load)", thr,
          "latency_p50_us", lower_better=True)
    table("Broker CPU seconds per 100k delivered messages (ratio > 1 means Roost uses less)",
          thr + ["q0_rate10k", "q1_rate10k"], "cpu_per_100k", lower_better=True)
    table("Load generator CPU busy fraction (near 1.00: the load generator may be the limit)",
          thr, "loadgen_busy", ratios=False)
    table("Broker peak RSS, MB", SCENARIO_NAMES, "broker_peak_rss_kb_mb", lower_better=True)
    if has("idle_5000"):
        table("Idle connections: KB of broker RSS per held connection", ["idle_5000"],
              "kb_per_conn", lower_better=True)
        table("Idle connections: connect p50, ms", ["idle_5000"], "connect_p50_ms",
              lower_better=True)
        table("Idle connections: connect p99, ms", ["idle_5000"], "connect_p99_ms",
              lower_better=True)
        table("Idle connections: held (of 5000)", ["idle_5000"], "held", ratios=False)

    # Correctness: worst run per cell.
    lines.append("\n**Delivery checks (worst run): lost / duplicated / out of order**\n")
    lines.append("| scenario | " + " | ".join(brokers) + " |")
    lines.append("|---" * (1 + len(brokers)) + "|")
    for s in SCENARIO_NAMES:
        if s == "idle_5000" or not has(s):
            continue
        cells = []
        for b in brokers:
            rs = [r.get("loadgen") or {} for r in by.get((s, b), [])]
            if not rs:
                cells.append("-")
                continue
            worst = max(rs, key=lambda x: (x.get("lost", 0) + x.get("duplicated", 0)
                                           + x.get("out_of_order", 0)))
            cells.append(f"{worst.get('lost', 0)} / {worst.get('duplicated', 0)} / "
                         f"{worst.get('out_of_order', 0)}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")

    # Run-to-run spread, to judge the noise.
    lines.append("\n**Spread of delivered msg/s across runs (min-max)**\n")
    lines.append("| scenario | " + " | ".join(brokers) + " |")
    lines.append("|---" * (1 + len(brokers)) + "|")
    for s in thr:
        if not has(s):
            continue
        cells = []
        for b in brokers:
            xs = [metric(r, "delivered_per_sec") for r in by.get((s, b), [])]
            xs = [x for x in xs if x is not None]
            cells.append(f"{fmt(min(xs))}-{fmt(max(xs))} (n={len(xs)})" if xs else "-")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")

    errors = [r for r in results if r.get("error")]
    if errors:
        lines.append("\n**Errors**\n")
        for r in errors:
            lines.append(f"- {r['broker']} {r['scenario']} run {r['run']}: {r['error']}")
    return "\n".join(lines)


def add_derived(r):
    if "broker_peak_rss_kb" in r:
        r["broker_peak_rss_kb_mb"] = r["broker_peak_rss_kb"] / 1024
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 run, smaller counts")
    ap.add_argument("--runs", type=int, default=None, help="runs per cell (default 3)")
    ap.add_argument("--brokers", help="comma list: roost,mosquitto,rumqttd,roost-defaults,"
                    "roost-fsync,roost-buffered")
    ap.add_argument("--scenarios", help="comma list of: " + ",".join(SCENARIO_NAMES))
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="do not pin broker (CPU 0) and loadgen (CPU 1) with taskset")
    ap.add_argument("--roost-bin", help="roost binary (default: build target/release/roost)")
    ap.add_argument("--loadgen", help="loadgen binary (default: build the example)")
    ap.add_argument("--baseline-bin", help="an earlier roost binary, run side by side as "
                    "roost-before / roost-fsync-before")
    ap.add_argument("--mosquitto-bin")
    ap.add_argument("--rumqttd-bin")
    ap.add_argument("--max-secs", type=int, default=90, help="bound on one loadgen run")
    ap.add_argument("--out", default="bench-results.jsonl", help="raw results (JSON lines)")
    ap.add_argument("--workdir", default=None, help="parent of per-run scratch dirs")
    ap.add_argument("--keep", action="store_true", help="keep per-run scratch dirs and logs")
    ap.add_argument("--render", metavar="JSONL", help="only print tables from saved results")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo loadgen progress")
    args = ap.parse_args()

    order = ["roost", "roost-before", "roost-defaults", "roost-fsync", "roost-fsync-before",
             "roost-buffered", "mosquitto", "rumqttd"]
    if args.render:
        with open(args.render) as f:
            results = [add_derived(json.loads(l)) for l in f if l.strip()]
        print(render(results, order))
        return 0

    runs = args.runs or (1 if args.quick else 3)
    if args.pin and (os.cpu_count() or 1) < 2:
        args.pin = False
    if args.pin and not shutil.which("taskset"):
        print("bench: taskset not found: not pinning", file=sys.stderr)
        args.pin = False
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)
                                                    if hard != resource.RLIM_INFINITY
                                                    else hard))
    except (ValueError, OSError):
        print(f"bench: could not raise the open-file limit (now {soft})", file=sys.stderr)

    if not args.roost_bin or not args.loadgen:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
        build = ["cargo", "build", "--release", "--example", "loadgen", "--bin", "roost"]
        print("bench:", " ".join(build), file=sys.stderr)
        subprocess.run(build, cwd=REPO, check=True)
        args.roost_bin = args.roost_bin or os.path.join(target, "release", "roost")
        args.loadgen = args.loadgen or os.path.join(target, "release", "examples", "loadgen")

    # Brokers run in their scratch directories: a relative path is taken from here.
    for attr in ("roost_bin", "baseline_bin", "loadgen", "mosquitto_bin", "rumqttd_bin"):
        if getattr(args, attr, None):
            setattr(args, attr, os.path.abspath(getattr(args, attr)))
    brokers = make_brokers(args)
    scen = [s for s in SCENARIOS if not args.scenarios or s[0] in args.scenarios.split(",")]
    total = sum(1 for b in brokers for s in scen
                if b["scenarios"] is None or s[0] in b["scenarios"]) * runs
    print(f"bench: {len(brokers)} brokers, {len(scen)} scenarios, {runs} run(s): {total} runs;"
          f" pinning {'on' if args.pin else 'off'}; raw results -> {args.out}",
          file=sys.stderr)
    results = []
    done = 0
    started = time.time()
    with open(args.out, "w") as out:
        # Runs are interleaved (run 1 of everything, then run 2 ...) so slow drifts in the
        # machine's background load spread over all brokers instead of hitting one.
        for run_idx in range(runs):
            for name, _desc, full, quick in scen:
                for b in brokers:
                    if b["scenarios"] is not None and name not in b["scenarios"]:
                        continue
                    done += 1
                    r = run_one(b, name, quick if args.quick else full, args, run_idx)
                    add_derived(r)
                    results.append(r)
                    out.write(json.dumps(r) + "\n")
                    out.flush()
                    lg = r.get("loadgen") or {}
                    summary = (f"{lg.get('delivered_per_sec', 0):,.0f} msg/s "
                               f"p50 {lg.get('latency_p50_us', 0):,.0f}us "
                               f"lost {lg.get('lost', 0)} dup {lg.get('duplicated', 0)}"
                               if lg.get("scenario") == "pubsub" else
                               f"held {lg.get('held')} p99 {lg.get('connect_p99_ms')}ms "
                               f"{fmt(metric(r, 'kb_per_conn'))} KB/conn")
                    print(f"bench: [{done}/{total} {time.time() - started:5.0f}s] "
                          f"{b['name']:>14} {name:<11} {summary} cpu {r.get('broker_cpu_s')}s"
                          f"{'  ERROR ' + r['error'] if r.get('error') else ''}",
                          file=sys.stderr)
    print(render(results, order))
    return 0


if __name__ == "__main__":
    sys.exit(main())
