#!/usr/bin/env python3
"""Regenerates the seed corpus in fuzz/corpus/ from real MQTT traffic.

Starts a Roost broker (in memory, on a free loopback port), puts a recording TCP proxy in
front of it, runs mosquitto_sub and mosquitto_pub through the proxy for MQTT 3.1.1 and 5.0,
and writes what each connection carried, in each direction, as seed files in the input layout
of each fuzz target (see the comments at the top of fuzz/fuzz_targets/*.rs).

    python3 fuzz/seeds.py                                    # builds the broker with cargo
    ROOST_BIN=target/release/roost python3 fuzz/seeds.py     # or uses a built one

Needs mosquitto_sub and mosquitto_pub (Debian: mosquitto-clients). Standard library only.
"""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
REPO = FUZZ.parent
CORPUS = FUZZ / "corpus"
HOST = "127.0.0.1"

# Operation bytes of the client target (fuzz_targets/client.rs: Op, 12 kinds, byte / 12 is the
# argument).
SEND, POLL, PUBLISH, SUBSCRIBE, UNSUBSCRIBE = 0, 5, 6, 7, 8


def op(kind, arg=0):
    return bytes([kind + 12 * arg])


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_port(port, deadline=30.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on port {port}")


def broker_command(port):
    binary = os.environ.get("ROOST_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--bin", "roost"], cwd=REPO, check=True)
        binary = str(REPO / "target" / "release" / "roost")
    return [binary, "--port", str(port), "--in-memory", "--log-level", "warn"]


class Recorder:
    """A TCP proxy that records both directions of every connection."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.connections = []  # [client_to_server, server_to_client] byte arrays
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection((HOST, self.upstream))
            record = [bytearray(), bytearray()]
            with self.lock:
                self.connections.append(record)
            threading.Thread(target=self.pump, args=(down, up, record[0]), daemon=True).start()
            threading.Thread(target=self.pump, args=(up, down, record[1]), daemon=True).start()

    def pump(self, src, dst, record):
        try:
            while data := src.recv(65536):
                with self.lock:
                    record.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def take(self):
        with self.lock:
            done, self.connections = self.connections, []
        return [(bytes(a), bytes(b)) for a, b in done]


def packets(stream):
    """Splits a byte stream into MQTT packets (fixed header + remaining length); a packet cut
    off at the end of the stream is returned as far as it goes."""
    out, i = [], 0
    while i + 2 <= len(stream):
        length, shift, j = 0, 0, i + 1
        while j < len(stream):
            byte = stream[j]
            length |= (byte & 0x7F) << shift
            shift += 7
            j += 1
            if byte < 0x80:
                break
        out.append(stream[i : j + length])
        i = j + length
    return out


def client_id(connect):
    """The client identifier of a CONNECT packet."""
    body = connect[1:]
    while body[0] & 0x80:
        body = body[1:]
    body = body[1:]
    name_len = int.from_bytes(body[0:2], "big")
    pos = 2 + name_len + 1 + 1 + 2  # name, level, flags, keep alive
    if body[2 + name_len] == 5:
        props, shift = 0, 0
        while True:
            byte = body[pos]
            pos += 1
            props |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        pos += props
    id_len = int.from_bytes(body[pos : pos + 2], "big")
    return body[pos + 2 : pos + 2 + id_len].decode()


def write(target, name, data):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)


def seeds_for(name, v5, to_server, to_client):
    """Writes the seed files of one recorded connection for every target."""
    version = 1 if v5 else 0
    after_connect = to_server[len(packets(to_server)[0]) :]
    # decode_server: state (0 before CONNECT, 1 after a 3.1.1 one, 2 after a 5.0 one), limit
    # byte (0: large), piece count, piece sizes, stream.
    write("decode_server", f"{name}.whole", bytes([0, 0, 0]) + to_server)
    write("decode_server", f"{name}.pieces", bytes([0, 0, 3, 1, 7, 2]) + to_server)
    write("decode_server", f"{name}.locked", bytes([1 + version, 0, 0]) + after_connect)
    # decode_client: version bit, limit, piece count, piece sizes, stream.
    write("decode_client", f"{name}.whole", bytes([version, 0, 0]) + to_client)
    write("decode_client", f"{name}.pieces", bytes([version, 0, 2, 3, 1]) + to_client)
    # roundtrip: state byte (server states, or 0x80 | version for the client role), stream.
    write("roundtrip", f"{name}.to-server", bytes([0]) + to_server)
    write("roundtrip", f"{name}.to-client", bytes([0x80 | version]) + to_client)
    # client: flags (version, clean session, keep alive 30 s), buffer and read sizes, then the
    # server's packets one by one, each followed by a poll; a subscribe and publishes of each
    # QoS after the CONNACK.
    script = bytearray([version | 0x02 | (5 << 5), 240, 240, 128, 255])
    for i, p in enumerate(packets(to_client)):
        for start in range(0, len(p), 255):
            chunk = p[start : start + 255]
            script += op(SEND) + bytes([len(chunk)]) + chunk
        if i == 0:
            script += op(SUBSCRIBE, 2) + op(PUBLISH, 0) + op(PUBLISH, 1) + op(PUBLISH, 2)
        else:
            script += op(POLL)
    script += op(UNSUBSCRIBE) + op(POLL)
    write("client", name, bytes(script))


def mosquitto(tool, port, version, *args):
    command = [tool, "-h", HOST, "-p", str(port), "-V", version, *args]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def session(proxy, version):
    """One subscriber and several publishers; returns when all have finished."""
    v5 = version == "mqttv5"
    tag = "v5" if v5 else "v311"
    props = []
    if v5:
        props = ["-D", "publish", "user-property", "k", "v", "-D", "publish", "content-type",
                 "text/plain", "-D", "publish", "response-topic", "seeds/reply", "-D",
                 "publish", "correlation-data", "c0ffee", "-D", "publish",
                 "message-expiry-interval", "60"]
    sub = mosquitto("mosquitto_sub", proxy, version, "-i", f"sub-{tag}", "-q", "2",
                    "-t", "seeds/#", "-t", "other/+/x", "-C", "6", "-W", "10", "-k", "30",
                    "-u", "user", "-P", "secret", "--will-topic", "seeds/will",
                    "--will-payload", "gone", "--will-qos", "1", "--will-retain")
    time.sleep(1.0)
    pubs = []
    for qos in (0, 1, 2):
        pubs.append(mosquitto("mosquitto_pub", proxy, version, "-i", f"pub{qos}-{tag}",
                              "-q", str(qos), "-t", f"seeds/q{qos}", "-m", f"message {qos}",
                              *props))
    pubs.append(mosquitto("mosquitto_pub", proxy, version, "-i", f"retain-{tag}", "-q", "1",
                          "-r", "-t", "seeds/retained", "-m", "kept"))
    lines = subprocess.Popen(["mosquitto_pub", "-h", HOST, "-p", str(proxy), "-V", version,
                              "-i", f"lines-{tag}", "-q", "1", "-t", "other/a/x", "-l"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    lines.communicate(b"first line\nsecond line\n", timeout=10)
    for p in pubs:
        p.wait(timeout=10)
    sub.wait(timeout=15)
    mosquitto("mosquitto_sub", proxy, version, "-i", f"unsub-{tag}", "-t", "seeds/x",
              "-U", "seeds/x", "-E").wait(timeout=10)
    mosquitto("mosquitto_pub", proxy, version, "-i", f"clear-{tag}", "-r", "-n",
              "-t", "seeds/retained").wait(timeout=10)


def main():
    for tool in ("mosquitto_sub", "mosquitto_pub"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install mosquitto-clients")
    port = free_port()
    broker = subprocess.Popen(broker_command(port), cwd=REPO)
    try:
        wait_for_port(port)
        proxy = Recorder(port)
        for target in ("decode_server", "decode_client", "roundtrip", "client"):
            shutil.rmtree(CORPUS / target, ignore_errors=True)
        for version in ("mqttv311", "mqttv5"):
            session(proxy.port, version)
            time.sleep(0.5)
            for to_server, to_client in proxy.take():
                if not to_server or not to_client:
                    continue
                seeds_for(client_id(packets(to_server)[0]), version == "mqttv5",
                          to_server, to_client)
    finally:
        broker.terminate()
        broker.wait(timeout=10)
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"{sum(1 for f in CORPUS.rglob('*') if f.is_file())} seed files, {total} bytes")


if __name__ == "__main__":
    main()
