#!/usr/bin/env python3
"""Drives corekv exactly as the KVStore seed's Python client (Client.py) does.

Wire format, unchanged from the seed: every message is an 8-byte big-endian
length (struct ">Q") followed by msgpack packed with use_bin_type=True; keys and
values are bytes (msgpack bin); replies are unpacked with msgpack's defaults.

The session: SET, a found GET, DELETE, a not-found GET, then 20 messages of
50 SETs followed by 50 GETs of the same keys, every reply checked.

Usage: seed_client.py HOST:PORT. Exits 0 when every reply matched, 1 otherwise.
"""
import struct
import socket
import sys

import msgpack

TIMEOUT_SECONDS = 30
NR_ROUNDS = 20
NR_KEYS = 50


class Mismatch(Exception):
    pass


def frame(body):
    return struct.pack(">Q", len(body)) + body


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise Mismatch("server closed the connection after {} of {} bytes".format(len(data), n))
        data += chunk
    return data


def recv_reply(sock):
    (length,) = struct.unpack(">Q", recv_exactly(sock, 8))
    return msgpack.unpackb(recv_exactly(sock, length))


def call(sock, requests):
    sock.sendall(frame(msgpack.packb(requests, use_bin_type=True)))
    return recv_reply(sock)


def expect(what, got, want):
    if got != want:
        raise Mismatch("{}: got {!r}, expected {!r}".format(what, got, want))


def session(sock):
    expect("SET hello", call(sock, [[1, b"hello", b"goodbye"]]), [])
    expect("GET hello (found)", call(sock, [[0, b"hello"]]), [[-1, b"goodbye"]])
    expect("DELETE hello", call(sock, [[2, b"hello"]]), [])
    expect("GET hello (not found)", call(sock, [[0, b"hello"]]), [[-2]])

    for round_nr in range(NR_ROUNDS):
        keys = [b"seed-%02d-%04d" % (round_nr, i) for i in range(NR_KEYS)]
        values = [b"value-%02d-%04d" % (round_nr, i) for i in range(NR_KEYS)]
        sets = [[1, k, v] for k, v in zip(keys, values)]
        gets = [[0, k] for k in keys]
        reply = call(sock, sets + gets)
        expect("round {} reply length".format(round_nr), len(reply), NR_KEYS)
        for i, element in enumerate(reply):
            expect("round {} GET {!r}".format(round_nr, keys[i]), element, [-1, values[i]])


def main():
    if len(sys.argv) != 2:
        print("usage: seed_client.py HOST:PORT", file=sys.stderr)
        return 2
    host, _, port = sys.argv[1].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT_SECONDS) as sock:
            session(sock)
    except Exception as e:  # any failure, including a malformed reply, is a mismatch
        print("seed client: FAILED: {}".format(e), file=sys.stderr)
        return 1
    print("seed client: all {} rounds of {} SET + {} GET matched".format(NR_ROUNDS, NR_KEYS, NR_KEYS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
