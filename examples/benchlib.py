"""Helpers shared by the benchmark scripts in this folder: brokers started on a free loopback
port and stopped by PID (whatever happens, at exit too), their memory from /proc, CPU pinning,
and the few MQTT packets the scripts build by hand. Only the standard library is used."""

import atexit
import signal
import socket
import subprocess
import sys
import time

# Processes started by the scripts, by PID; every one still running is stopped at exit.
LIVE = {}


def stop(proc, grace=5.0):
    """SIGTERM, then SIGKILL after `grace` seconds, by PID."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except ProcessLookupError:
            pass
    LIVE.pop(proc.pid, None)


def _cleanup():
    for proc in list(LIVE.values()):
        stop(proc, grace=2.0)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, timeout=15.0):
    """True once 127.0.0.1:`port` accepts connections; false if `proc` exits or time runs out."""
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def mem_kb(pid):
    """(VmRSS, VmHWM) of a process in kB."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def pin(cpu, enabled):
    """The command prefix that pins a process to `cpu` (none when not `enabled`)."""
    return ["taskset", "-c", str(cpu)] if enabled else []


def varint(n):
    """MQTT variable byte integer."""
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(s):
    """MQTT UTF-8 string: two-byte length, then the bytes."""
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def packet(first, body):
    """A packet: first byte, remaining length, body."""
    return bytes([first]) + varint(len(body)) + body


def read_packet(sock, buf):
    """Reads one packet; returns (first byte, body) and keeps the rest in buf."""
    while True:
        if len(buf) >= 2:
            mult, length, i = 1, 0, 1
            while i < len(buf) and i < 5:
                b = buf[i]
                length += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    if len(buf) >= i + length:
                        first, body = buf[0], bytes(buf[i:i + length])
                        del buf[:i + length]
                        return first, body
                    break
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf.extend(chunk)


def run_interleaved(kinds, qos_levels, runs, one_run):
    """Runs `one_run(kind, qos)` `runs` times per QoS, the kinds interleaved; prints each
    loadgen result to stderr; returns {(kind, qos): [result, ...]}."""
    results = {}
    for qos in qos_levels:
        for n in range(runs):
            for kind in kinds:
                r = one_run(kind, qos)
                results.setdefault((kind, qos), []).append(r)
                print(f"qos {qos} run {n + 1} {kind}: "
                      f"{r.get('delivered_per_sec', 0):,.0f} msg/s, "
                      f"lost {r.get('lost')}, p50 {r.get('latency_p50_us', 0):,.0f} us, "
                      f"p99 {r.get('latency_p99_us', 0):,.0f} us {r.get('error', '')}",
                      file=sys.stderr)
    return results


def print_medians(results, kinds, qos_levels, count, size, runs):
    """The Markdown table of medians (msg/s, p50 and p99 latency) and the worst loss."""
    import statistics

    def med(kind, qos, key):
        xs = [r[key] for r in results[(kind, qos)] if key in r and "error" not in r]
        return statistics.median(xs) if xs else None

    print(f"\n{count} messages of {size} B, medians of {runs} runs\n")
    print("| QoS | path | msg/s | p50 latency, ms | p99 latency, ms | lost (worst run) |")
    print("|---|---|---|---|---|---|")
    for qos in qos_levels:
        for kind in kinds:
            rate = med(kind, qos, "delivered_per_sec")
            p50 = med(kind, qos, "latency_p50_us")
            p99 = med(kind, qos, "latency_p99_us")
            lost = max((r.get("lost", 0) for r in results[(kind, qos)]), default=None)
            fmt = (lambda v, d=1: "-" if v is None else f"{v / 1000:,.{d}f}")
            print(f"| {qos} | {kind} | {'-' if rate is None else f'{rate:,.0f}'} | "
                  f"{fmt(p50, 2)} | {fmt(p99, 2)} | {lost} |")
