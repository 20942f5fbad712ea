#!/usr/bin/env python3
"""Broker memory while a subscriber never reads: RSS against bytes published.

One subscriber subscribes to `slow/t` at QoS 1 and then never reads its socket. One MQTT 5.0
publisher sends QoS 1 messages of --size bytes to `slow/t`, keeping --window unacknowledged,
until --total bytes were sent. Every --step bytes the broker's resident memory (VmRSS from
/proc) is sampled. Each broker is started fresh on a free loopback port and stopped by PID.

    python3 examples/slow_subscriber.py                        # roost (ephemeral + durable), mosquitto
    python3 examples/slow_subscriber.py --total 256M --brokers roost

Prints one markdown table per broker: MiB published, broker RSS in MiB, PUBACKs with 0x00 and
with 0x97 so far. Only the standard library is used.
"""

import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

from benchlib import free_port, mqtt_str, packet, read_packet, varint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def size_arg(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


def connect(client_id, clean=True, expiry=0):
    flags = 0x02 if clean else 0
    props = b"" if expiry == 0 else b"\x11" + struct.pack("!I", expiry)
    body = mqtt_str("MQTT") + bytes([5, flags]) + struct.pack("!H", 60)
    body += varint(len(props)) + props + mqtt_str(client_id)
    return packet(0x10, body)


def subscribe(topic, qos):
    body = struct.pack("!H", 1) + varint(0) + mqtt_str(topic) + bytes([qos])
    return packet(0x82, body)


def publish(topic, packet_id, payload):
    body = mqtt_str(topic) + struct.pack("!H", packet_id) + varint(0) + payload
    return packet(0x32, body)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_port(port, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("broker exited at startup")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("broker did not listen in time")


def run(name, cmd, port, durable, args):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        idle = rss_mib(proc.pid)
        sub = socket.create_connection(("127.0.0.1", port))
        sub.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sub.sendall(connect("slow-sub", clean=not durable, expiry=3600 if durable else 0))
        buf = bytearray()
        read_packet(sub, buf)
        sub.sendall(subscribe("slow/t", 1))
        read_packet(sub, buf)
        # From here on the subscriber never reads.
        pub = socket.create_connection(("127.0.0.1", port))
        pub.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pub.sendall(connect("slow-pub"))
        pbuf = bytearray()
        read_packet(pub, pbuf)
        payload = os.urandom(args.size)
        sent = ok = refused = 0
        outstanding = 0
        next_id = 1
        next_sample = 0
        rows = []
        started = time.time()
        while sent < args.total or outstanding:
            while outstanding < args.window and sent < args.total:
                pub.sendall(publish("slow/t", next_id, payload))
                next_id = next_id % 65535 + 1
                outstanding += 1
                sent += args.size
                if sent >= next_sample:
                    rows.append((sent / (1 << 20), rss_mib(proc.pid), ok, refused))
                    next_sample += args.step
            first, body = read_packet(pub, pbuf)
            if first >> 4 == 4:
                outstanding -= 1
                reason = body[2] if len(body) > 2 else 0
                if reason == 0:
                    ok += 1
                else:
                    refused += 1
            if time.time() - started > args.max_secs:
                print(f"{name}: stopped after {args.max_secs} s", file=sys.stderr)
                break
        rows.append((sent / (1 << 20), rss_mib(proc.pid), ok, refused))
        print(f"\n### {name} (idle RSS {idle:.1f} MiB, {args.size}-byte QoS 1 messages)\n")
        print("| MiB published | broker RSS MiB | above idle | PUBACK 0x00 | PUBACK 0x97 |")
        print("|---|---|---|---|---|")
        for mib, rss, a, r in rows:
            print(f"| {mib:.0f} | {rss:.1f} | {rss - idle:.1f} | {a} | {r} |")
        sys.stdout.flush()
        sub.close()
        pub.close()
    finally:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total", type=size_arg, default=size_arg("1G"))
    ap.add_argument("--size", type=size_arg, default=size_arg("16K"))
    ap.add_argument("--step", type=size_arg, default=size_arg("128M"))
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--max-secs", type=int, default=300)
    ap.add_argument("--brokers", default="roost,roost-durable,mosquitto")
    ap.add_argument("--roost-bin", default=os.path.join(REPO, "target/release/roost"))
    args = ap.parse_args()
    if not os.path.exists(args.roost_bin):
        subprocess.run(["cargo", "build", "--release", "--bin", "roost"], cwd=REPO, check=True)
    for name in args.brokers.split(","):
        port = free_port()
        with tempfile.TemporaryDirectory() as work:
            if name in ("roost", "roost-durable"):
                cmd = [args.roost_bin, "--port", str(port), "--log-level", "error",
                       "--data-dir", os.path.join(work, "data")]
                run(name, cmd, port, name == "roost-durable", args)
            elif name == "mosquitto":
                mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
                conf = os.path.join(work, "mosquitto.conf")
                with open(conf, "w") as f:
                    f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
                run(name + " (defaults)", [mosq, "-c", conf], port, False, args)


if __name__ == "__main__":
    main()
