"""WATCH and MULTI/EXEC on one node of a corekv cluster, through redis-py.

usage: redis_cluster_transactions.py HOST:PORT

The node's keys WATCHed and the keys of the MULTI block must all be in one
hash slot: a block whose commands each have one slot but not the same one is
queued and EXEC answers CROSSSLOT, writing nothing (as Redis Cluster's EXEC
does); so does EXEC after WATCHes of another slot than the block's. A queued
command of another node's slot is refused with MOVED and EXEC then answers
EXECABORT. Any failure raises (non-zero exit).
"""

import sys

import redis
from redis.crc import key_slot

from expectations import expect, expect_error

CROSSSLOT = "Keys in request don't hash to the same slot"


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    node = redis.Redis(host=host, port=int(port), socket_timeout=30,
                       single_connection_client=True)
    ranges = [(first, last) for first, last, primary, *_ in node.execute_command("CLUSTER SLOTS")
              if int(primary[1]) == int(port)]

    def on_node(key):
        slot = key_slot(key.encode())
        return any(first <= slot <= last for first, last in ranges)

    def raw(*args):
        """One command on the node's one connection, its reply unparsed."""
        node.connection.send_command(*args)
        return node.connection.read_response()

    keys = [f"key:{i}" for i in range(2000)]
    a = next(k for k in keys if on_node(k))
    b = next(k for k in keys if on_node(k) and key_slot(k.encode()) != key_slot(a.encode()))
    foreign = next(k for k in keys if not on_node(k))
    tagged = f"{{{a}}}.other"
    for key in (a, b, tagged):
        node.set(key, "before")

    # One WATCH of two slots: refused at once.
    expect_error(lambda: raw("WATCH", a, b), CROSSSLOT, "WATCH of two slots")

    # A block of two slots: each command is queued, EXEC answers CROSSSLOT.
    expect(raw("MULTI"), b"OK", "MULTI")
    expect(text(raw("SET", a, "x")), "QUEUED", "SET a queued")
    expect(text(raw("SET", b, "y")), "QUEUED", "SET b queued")
    expect_error(lambda: raw("EXEC"), CROSSSLOT, "EXEC of two slots")
    expect(node.get(a), b"before", "nothing of the block was written")
    expect(node.get(b), b"before", "nothing of the block was written")

    # WATCH of one slot, a block of another: EXEC answers CROSSSLOT.
    expect(raw("WATCH", a), b"OK", "WATCH a")
    expect(raw("MULTI"), b"OK", "MULTI")
    expect(text(raw("SET", b, "z")), "QUEUED", "SET b queued")
    expect_error(lambda: raw("EXEC"), CROSSSLOT, "EXEC after WATCH of another slot")
    expect(node.get(b), b"before", "nothing of the block was written")

    # Two WATCHes of two slots, a block without keys: CROSSSLOT too.
    raw("WATCH", a)
    raw("WATCH", b)
    raw("MULTI")
    expect(text(raw("PING")), "QUEUED", "PING queued")
    expect_error(lambda: raw("EXEC"), CROSSSLOT, "EXEC after WATCHes of two slots")

    # The same through redis-py's transaction pipeline.
    pipe = node.pipeline(transaction=True)
    pipe.watch(a)
    pipe.multi()
    pipe.set(b, "w")
    expect_error(pipe.execute, CROSSSLOT, "pipeline WATCH a, SET b")
    pipe.reset()
    expect(node.get(b), b"before", "nothing of the pipeline was written")

    # WATCH and block in one slot (a hash tag): the transaction runs.
    pipe = node.pipeline(transaction=True)
    pipe.watch(a, tagged)
    pipe.multi()
    pipe.set(a, "after")
    pipe.set(tagged, "after")
    expect(pipe.execute(), [True, True], "one-slot WATCH + MULTI/EXEC")
    pipe.reset()
    expect(node.get(tagged), b"after", "the one-slot block was written")

    # A command of another node's slot is refused when queued: EXECABORT.
    raw("MULTI")
    expect(text(raw("SET", a, "v")), "QUEUED", "SET a queued")
    # redis-py shows MOVED as "<slot> <ip:port>" (a MovedError).
    moved = f"{key_slot(foreign.encode())} "
    expect_error(lambda: raw("SET", foreign, "v"), moved, "SET of another node")
    expect_error(lambda: raw("EXEC"), "Transaction discarded", "EXEC after MOVED")
    expect(node.get(a), b"after", "nothing of the aborted block was written")
    print("ok: WATCH and MULTI/EXEC keep to one slot")


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


if __name__ == "__main__":
    main()
