#!/usr/bin/env python3
"""Broker memory when small messages arrive in the same read as a lot of other traffic.

Each small message (16 bytes) is written together with a large QoS 0 PUBLISH (--junk bytes)
to a topic nobody subscribes to, in one write, so that the broker reads both in one read. A
broker that keeps the small payload as a slice of its read buffer keeps the whole buffer
alive for as long as it keeps the message. Scenarios:

- `queued`: --sessions durable sessions (3.1.1, clean session 0) subscribe at QoS 1 and go
  away; --messages QoS 1 messages are published to them, each queued for every session.
- `inflight`: the same, but the subscribers stay connected and never read: the messages wait
  in flight and in their queues.
- `retained`: --retained retained messages, one per topic.

The broker's resident memory (VmRSS from /proc) is read before and after. Each broker is
started fresh on a free loopback port and stopped by PID.

    python3 examples/pinned_buffers.py                       # all scenarios, roost and mosquitto
    python3 examples/pinned_buffers.py --scenarios retained --brokers roost --runs 3

Only the standard library is used.
"""

import argparse
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import (LIVE, free_port, mem_kb, mqtt_str, packet, read_packet, stop,
                      wait_listening)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def connect_311(client_id, clean):
    flags = 0x02 if clean else 0
    body = mqtt_str("MQTT") + bytes([4, flags]) + struct.pack("!H", 600) + mqtt_str(client_id)
    return packet(0x10, body)


def subscribe_311(topic, qos):
    return packet(0x82, struct.pack("!H", 1) + mqtt_str(topic) + bytes([qos]))


def publish_311(topic, payload, qos=0, packet_id=0, retain=False):
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    body = mqtt_str(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(first, body)


def open_client(port, client_id, clean=True):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_311(client_id, clean))
    buf = bytearray()
    first, body = read_packet(sock, buf)
    if first != 0x20 or body[1] != 0:
        raise RuntimeError(f"{client_id}: CONNACK {body.hex()}")
    return sock, buf


def disconnect(sock):
    try:
        sock.sendall(b"\xe0\x00")
    finally:
        sock.close()


def start_broker(name, args, work):
    port = free_port()
    if name == "roost":
        conf = os.path.join(work, "roost.toml")
        with open(conf, "w") as f:
            f.write('durability = "buffered"\n')
        cmd = [args.roost_bin, "--port", str(port), "--config", conf, "--log-level", "warn",
               "--data-dir", os.path.join(work, "data")]
    else:
        conf = os.path.join(work, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 0\nlog_dest stderr\nlog_type error\n")
        cmd = [args.mosquitto_bin, "-c", conf]
    log = open(os.path.join(work, "broker.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    LIVE[proc.pid] = proc
    if not wait_listening(port, proc):
        stop(proc)
        raise RuntimeError(f"{name} did not start (see {work}/broker.log)")
    return proc, port


def publish_pairs(port, messages, junk, retained):
    """Publishes `messages` small messages, each in one write with a large QoS 0 PUBLISH;
    QoS 1 for queued ones (waits for every PUBACK), QoS 0 retained otherwise."""
    sock, buf = open_client(port, "pin-pub")
    big = publish_311("pin/nobody", b"j" * junk)
    acks = [0]

    def read_acks():
        while acks[0] < messages:
            first, _ = read_packet(sock, buf)
            if first >> 4 == 4:
                acks[0] += 1

    reader = None
    if not retained:
        reader = threading.Thread(target=read_acks, daemon=True)
        reader.start()
    for i in range(messages):
        payload = struct.pack("!Q", i) + b"s" * 8
        if retained:
            small = publish_311(f"pin/r/{i}", payload, retain=True)
        else:
            small = publish_311("pin/q", payload, qos=1, packet_id=i % 65535 + 1)
        sock.sendall(small + big)
        if i % 50 == 49:
            # Lets the broker keep up, so that its reads hold one pair each.
            time.sleep(0.002)
    if reader:
        reader.join(timeout=120)
        if acks[0] < messages:
            raise RuntimeError(f"only {acks[0]} of {messages} PUBACKs")
    else:
        # A PINGREQ answered means every earlier packet was handled.
        sock.sendall(b"\xc0\x00")
        while read_packet(sock, buf)[0] != 0xD0:
            pass
    disconnect(sock)


def run(name, scenario, args):
    work = tempfile.mkdtemp(prefix=f"pinned-{name}-")
    proc, port = start_broker(name, args, work)
    subscribers = []
    try:
        if scenario in ("queued", "inflight"):
            for s in range(args.sessions):
                sock, _ = open_client(port, f"pin-sub-{s}", clean=False)
                sock.sendall(subscribe_311("pin/q", 1))
                read_packet(sock, bytearray())
                if scenario == "queued":
                    disconnect(sock)
                else:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    subscribers.append(sock)
        time.sleep(0.5)
        before = mem_kb(proc.pid)[0]
        count = args.retained if scenario == "retained" else args.messages
        t0 = time.time()
        publish_pairs(port, count, args.junk, scenario == "retained")
        secs = time.time() - t0
        time.sleep(1.0)
        after = mem_kb(proc.pid)[0]
        return {"before": before, "after": after, "secs": secs}
    finally:
        for sock in subscribers:
            sock.close()
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenarios", default="queued,inflight,retained")
    p.add_argument("--brokers", default="roost,mosquitto")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--sessions", type=int, default=10)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--retained", type=int, default=5000)
    p.add_argument("--junk", type=int, default=60000, help="bytes of the large PUBLISH")
    p.add_argument("--roost-bin", default=os.path.join(REPO, "target/release/roost"))
    p.add_argument("--mosquitto-bin", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    args = p.parse_args()
    brokers = [b for b in args.brokers.split(",") if b]
    if "mosquitto" in brokers and not os.path.exists(args.mosquitto_bin):
        print("mosquitto not found (apt-get install -y mosquitto): skipped", file=sys.stderr)
        brokers.remove("mosquitto")
    print("| scenario | broker | RSS before, MiB | RSS after, MiB | growth, MiB | runs |")
    print("|---|---|---|---|---|---|")
    for scenario in args.scenarios.split(","):
        for name in brokers:
            results = [run(name, scenario, args) for _ in range(args.runs)]
            before = statistics.median(r["before"] for r in results) / 1024
            after = statistics.median(r["after"] for r in results) / 1024
            growth = statistics.median(r["after"] - r["before"] for r in results) / 1024
            print(f"| {scenario} | {name} | {before:.1f} | {after:.1f} | {growth:.1f} | "
                  f"{len(results)} |", flush=True)


if __name__ == "__main__":
    main()
