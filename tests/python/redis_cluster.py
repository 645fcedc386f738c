"""redis-py's cluster client (RedisCluster) against a corekv cluster.

usage: redis_cluster.py NR_KEYS HOST:PORT...

Every address is one node of the same cluster. RedisCluster discovers the
slot map with CLUSTER SLOTS and the key positions with COMMAND, then writes
and reads NR_KEYS keys; each node must then hold exactly the keys of its own
slots. Same-tag MSET/MGET/MULTI run on one node; commands spanning slots get
CROSSSLOT. Every loop is bounded; any failure raises (non-zero exit).
"""

import sys

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from expectations import expect, expect_error


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def main():
    nr_keys = int(sys.argv[1])
    addrs = [(h, int(p)) for h, p in (a.rsplit(":", 1) for a in sys.argv[2:])]
    rc = RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in addrs], socket_timeout=30
    )
    expect(len(rc.get_primaries()), len(addrs), "primaries discovered")

    # Writes and reads through the cluster client, which routes by slot.
    for i in range(nr_keys):
        expect(rc.set(f"key:{i}", f"value:{i}"), True, f"SET key:{i}")
    for i in range(nr_keys):
        expect(rc.get(f"key:{i}"), f"value:{i}".encode(), f"GET key:{i}")
    expect(rc.incr("counter"), 1, "INCR")
    expect(rc.delete("counter"), 1, "DEL")

    # Each node holds only keys of its own slots, and all of them together.
    nodes = {addr: redis.Redis(host=addr[0], port=addr[1], socket_timeout=30) for addr in addrs}
    owners = {}
    for first, last, primary, *_ in nodes[addrs[0]].execute_command("CLUSTER SLOTS"):
        owners[(first, last)] = (primary[0].decode(), int(primary[1]))

    def owner(key):
        slot = key_slot(key.encode())
        return next(o for (f, l), o in owners.items() if f <= slot <= l)

    total = 0
    for addr, node in nodes.items():
        keys = [k.decode() for k in node.keys("*")]
        expect(node.dbsize(), len(keys), f"DBSIZE of {addr}")
        for key in keys:
            expect(owner(key), addr, f"owner of {key} found on {addr}")
        total += len(keys)
    expect(total, nr_keys, "keys on all nodes")

    # A direct call to the wrong node is redirected to the owner.
    key = "key:0"
    wrong = next(n for a, n in nodes.items() if a != owner(key))
    slot = key_slot(key.encode())
    host, port = owner(key)
    expect_error(lambda: wrong.get(key), f"{slot} {host}:{port}", "GET on the wrong node")

    # Keys of one hash tag: one slot, one node, atomic.
    tagged = {f"{{user42}}.{f}": f"v{i}" for i, f in enumerate(["name", "mail", "city"])}
    expect(rc.mset(tagged), True, "same-tag MSET")
    expect(rc.mget(list(tagged)), [v.encode() for v in tagged.values()], "same-tag MGET")
    home = nodes[owner("{user42}")]
    expect(home.mget(list(tagged)), [v.encode() for v in tagged.values()], "same-tag MGET direct")
    expect(home.delete(*tagged), 3, "same-tag DEL")
    tx = home.pipeline(transaction=True)
    tx.set("{user42}.balance", 10)
    tx.incrby("{user42}.balance", 5)
    tx.get("{user42}.balance")
    expect(tx.execute(), [True, 15, b"15"], "same-tag MULTI/EXEC")
    expect(rc.get("{user42}.balance"), b"15", "after MULTI/EXEC")

    # Keys of several slots in one command or one block: CROSSSLOT, even on
    # the node that owns them all.
    a, b = "key:0", next(f"key:{i}" for i in range(nr_keys) if owner(f"key:{i}") == owner("key:0")
                         and key_slot(f"key:{i}".encode()) != key_slot(b"key:0"))
    same_node = nodes[owner(a)]
    crossslot = "Keys in request don't hash to the same slot"
    expect_error(lambda: same_node.mget([a, b]), crossslot, "cross-slot MGET")
    expect_error(lambda: same_node.mset({a: "x", b: "y"}), crossslot, "cross-slot MSET")
    expect_error(lambda: same_node.delete(a, b), crossslot, "cross-slot DEL")
    expect(same_node.get(a), b"value:0", "nothing written by a refused MSET")
    tx = same_node.pipeline(transaction=True)
    tx.set(a, "x")
    tx.set(b, "y")
    try:
        tx.execute()
        raise AssertionError("cross-slot MULTI/EXEC: no error")
    except redis.ResponseError as e:
        if crossslot not in str(e) and "EXECABORT" not in str(e):
            raise AssertionError(f"cross-slot MULTI/EXEC: {e!r}")
    expect(same_node.get(a), b"value:0", "nothing written by a refused MULTI block")

    # Cluster introspection as cluster tools read it.
    # redis-py parses some replies (CLUSTER INFO into a dict, READONLY into
    # True, keys into str): compare them as text.
    info = home.execute_command("CLUSTER INFO")
    if isinstance(info, dict):
        info = "\n".join(f"{k}:{text(v)}" for k, v in info.items())
    info = text(info)
    for line in ("cluster_state:ok", "cluster_slots_assigned:16384",
                 f"cluster_known_nodes:{len(addrs)}"):
        if line not in info:
            raise AssertionError(f"CLUSTER INFO lacks {line}: {info!r}")
    expect(home.info("cluster").get("cluster_enabled"), 1, "INFO cluster")
    expect(len(home.execute_command("CLUSTER SHARDS")), len(addrs), "CLUSTER SHARDS")
    myid = text(home.execute_command("CLUSTER MYID"))
    expect(len(myid) == 40 and all(c in "0123456789abcdef" for c in myid), True, "MYID")
    expect(home.execute_command("CLUSTER KEYSLOT", "foo"), 12182, "CLUSTER KEYSLOT")
    expect(home.execute_command("READONLY") in (True, b"OK", "OK"), True, "READONLY")
    keys = home.execute_command("COMMAND GETKEYS", "MSET", "a", "1", "b", "2")
    expect([text(k) for k in keys], ["a", "b"], "COMMAND GETKEYS")
    slot = key_slot(b"{user42}")
    expect(home.execute_command("CLUSTER COUNTKEYSINSLOT", slot), 1, "COUNTKEYSINSLOT")
    keys = home.execute_command("CLUSTER GETKEYSINSLOT", slot, 10)
    expect([text(k) for k in keys], ["{user42}.balance"], "GETKEYSINSLOT")
    print(f"ok: {nr_keys} keys over {len(addrs)} nodes")


if __name__ == "__main__":
    main()
