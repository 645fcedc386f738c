"""redis-py (the Redis client library) against corekv's RESP port.

usage: redis_client.py HOST:PORT PROTOCOL SCENARIO

PROTOCOL is 2 or 3 (RESP2, or RESP3 through HELLO 3). SCENARIO is one of
`commands`, `pipeline`, `bank`, `watch`, `keys`. Every loop is bounded; any failure
raises (non-zero exit) with what went wrong.
"""

import sys
import threading
import time

import redis

from expectations import expect, expect_error


def connect(addr, protocol):
    host, port = addr.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), protocol=protocol, socket_timeout=30)


def commands(r, protocol):
    expect(r.ping(), True, "PING")
    expect(r.echo("hi"), b"hi", "ECHO")
    expect(r.select(0), True, "SELECT 0")
    expect_error(lambda: r.select(1), "DB index is out of range", "SELECT 1")
    expect(r.client_setname("tester"), True, "CLIENT SETNAME")
    expect(r.client_getname() in ("tester", b"tester"), True, "CLIENT GETNAME")
    expect(isinstance(r.client_id(), int), True, "CLIENT ID")
    expect(r.set("k", "v"), True, "SET")
    expect(r.get("k"), b"v", "GET")
    expect(r.get("missing"), None, "GET missing")
    expect(r.set("k", "w", nx=True), None, "SET NX existing")
    expect(r.set("fresh", "1", nx=True), True, "SET NX fresh")
    expect(r.set("k", "x", xx=True), True, "SET XX existing")
    expect(r.set("nokey", "x", xx=True), None, "SET XX missing")
    expect(r.set("k", "y", get=True), b"x", "SET GET")
    expect(r.setnx("k", "z"), False, "SETNX existing")
    expect(r.setnx("nx", "z"), True, "SETNX fresh")
    expect(r.getset("k", "new"), b"y", "GETSET")
    expect(r.getdel("k"), b"new", "GETDEL")
    expect(r.getdel("k"), None, "GETDEL missing")
    expect(r.mset({"a": "1", "b": "2", "c": "3"}), True, "MSET")
    expect(r.mget(["a", "b", "zz", "c"]), [b"1", b"2", None, b"3"], "MGET")
    expect(r.msetnx({"a": "9", "new1": "9"}), False, "MSETNX with an existing key")
    expect(r.get("new1"), None, "MSETNX wrote nothing")
    expect(r.msetnx({"new1": "1", "new2": "2"}), True, "MSETNX fresh")
    expect(r.exists("a", "b", "zz"), 2, "EXISTS")
    expect(r.delete("a", "b", "zz"), 2, "DEL")
    expect(r.unlink("c"), 1, "UNLINK")
    expect(r.type("new1") in ("string", b"string"), True, "TYPE")
    expect(r.type("a") in ("none", b"none"), True, "TYPE none")
    expect(r.incr("n"), 1, "INCR")
    expect(r.incrby("n", 10), 11, "INCRBY")
    expect(r.decr("n"), 10, "DECR")
    expect(r.decrby("n", 20), -10, "DECRBY")
    expect(r.incrbyfloat("f", 10.5), 10.5, "INCRBYFLOAT")
    expect(r.incrbyfloat("f", 0.1), 10.6, "INCRBYFLOAT again")
    r.set("s", "text")
    expect_error(lambda: r.incr("s"), "not an integer", "INCR of text")
    r.set("big", str(2**63 - 1))
    expect_error(lambda: r.incr("big"), "overflow", "INCR overflow")
    expect(r.append("s", "!"), 5, "APPEND")
    expect(r.append("fresh-append", "ab"), 2, "APPEND fresh")
    expect(r.strlen("s"), 5, "STRLEN")
    expect(r.strlen("nothing"), 0, "STRLEN missing")
    expect(r.dbsize() > 0, True, "DBSIZE")
    info = r.info()
    expect("redis_version" in info and "used_memory" in info, True, "INFO")
    expect(r.info("keyspace")["db0"]["keys"], r.dbsize(), "INFO keyspace")
    expect("maxmemory" in r.config_get("maxmemory"), True, "CONFIG GET")
    expect(r.config_get("appendonly")["appendonly"] in ("no", b"no"), True, "appendonly")
    expect_error(lambda: r.config_set("maxmemory", 1), "read-only", "CONFIG SET")
    expect(r.command_count() > 20, True, "COMMAND COUNT")
    expect_error(lambda: r.execute_command("NOSUCH"), "unknown command", "unknown command")
    binary = bytes(range(256))
    r.set("bin", binary)
    expect(r.get("bin"), binary, "binary value")
    # MULTI/EXEC with read-modify-write commands inside.
    pipe = r.pipeline(transaction=True)
    pipe.set("t", "1").incr("t").append("t", "0").get("t").getdel("t").exists("t")
    expect(pipe.execute(), [True, 2, 2, b"20", b"20", 0], "MULTI/EXEC")
    expiry(r)
    # HELLO: the server's map, with the protocol asked for.
    hello = r.execute_command("HELLO", protocol)
    if isinstance(hello, list):  # RESP2: a flat list of names and values
        hello = dict(zip(hello[::2], hello[1::2]))
    proto = {k.decode() if isinstance(k, bytes) else k: v for k, v in hello.items()}["proto"]
    expect(proto, protocol, "HELLO proto")


FAR = 4102444800  # 2100-01-01, in Unix seconds: deadlines the clock does not change


def expiry(r):
    """The expiry commands through redis-py's own methods."""
    expect(r.ttl("no-such-key"), -2, "TTL missing")
    expect(r.pttl("no-such-key"), -2, "PTTL missing")
    expect(r.expire("no-such-key", 10), False, "EXPIRE missing")
    expect(r.persist("no-such-key"), False, "PERSIST missing")
    expect(r.set("e", "v", ex=100), True, "SET EX")
    expect(0 < r.ttl("e") <= 100, True, "TTL after SET EX")
    expect(0 < r.pttl("e") <= 100_000, True, "PTTL after SET EX")
    expect(r.set("e", "w", keepttl=True), True, "SET KEEPTTL")
    expect(0 < r.ttl("e") <= 100, True, "KEEPTTL kept the TTL")
    expect(r.set("e", "x"), True, "plain SET")
    expect(r.ttl("e"), -1, "plain SET cleared the TTL")
    expect(r.set("e", "y", px=100_000, get=True), b"x", "SET PX GET")
    expect(r.set("e", "z", nx=True, ex=10), None, "SET NX EX on an existing key")
    expect(r.set("e", "z", xx=True, exat=FAR), True, "SET XX EXAT")
    expect(r.expiretime("e"), FAR, "EXPIRETIME")
    expect(r.pexpiretime("e"), FAR * 1000, "PEXPIRETIME")
    expect(r.set("e", "z", pxat=FAR * 1000 + 5), True, "SET PXAT")
    expect(r.pexpiretime("e"), FAR * 1000 + 5, "PEXPIRETIME after PXAT")
    expect(r.persist("e"), True, "PERSIST")
    expect(r.ttl("e"), -1, "TTL after PERSIST")
    expect(r.expire("e", 100), True, "EXPIRE")
    expect(r.pexpire("e", 100_000), True, "PEXPIRE")
    expect(r.expireat("e", FAR), True, "EXPIREAT")
    expect(r.pexpireat("e", FAR * 1000), True, "PEXPIREAT")
    expect(r.expiretime("e"), FAR, "EXPIRETIME after PEXPIREAT")
    expect(r.incr("counter-with-ttl"), 1, "INCR")
    expect(r.expireat("counter-with-ttl", FAR), True, "EXPIREAT counter")
    expect(r.incr("counter-with-ttl"), 2, "INCR again")
    expect(r.append("counter-with-ttl", "0"), 2, "APPEND")
    expect(r.expiretime("counter-with-ttl"), FAR, "INCR and APPEND kept the deadline")
    expect(r.getset("counter-with-ttl", "0"), b"20", "GETSET")
    expect(r.ttl("counter-with-ttl"), -1, "GETSET cleared the deadline")
    expect(r.setex("sx", 100, "v"), True, "SETEX")
    expect(0 < r.ttl("sx") <= 100, True, "TTL after SETEX")
    expect(r.psetex("psx", 100_000, "v"), True, "PSETEX")
    expect(0 < r.pttl("psx") <= 100_000, True, "PTTL after PSETEX")
    expect(r.getex("psx", persist=True), b"v", "GETEX PERSIST")
    expect(r.ttl("psx"), -1, "TTL after GETEX PERSIST")
    expect(r.getex("psx", exat=FAR), b"v", "GETEX EXAT")
    expect(r.expiretime("psx"), FAR, "EXPIRETIME after GETEX EXAT")
    expect(r.getex("psx", px=100_000), b"v", "GETEX PX")
    expect(r.getex("psx"), b"v", "GETEX")
    expect(r.getex("no-such-key", ex=5), None, "GETEX missing")
    expect(r.expire("psx", -1), True, "EXPIRE negative")
    expect(r.exists("psx"), 0, "EXPIRE negative removed the key")
    expect_error(lambda: r.set("k", "v", ex=0), "invalid expire time in 'set' command", "EX 0")
    expect_error(lambda: r.setex("k", -1, "v"), "invalid expire time in 'setex' command", "SETEX -1")
    expect_error(lambda: r.expire("e", 10, gt=True), "not supported", "EXPIRE GT")
    # PX 50: gone once the deadline passes (bounded polling, no timing).
    expect(r.set("brief", "v", px=50), True, "SET PX 50")
    for _ in range(1000):
        if r.get("brief") is None:
            break
        time.sleep(0.01)
    expect(r.get("brief"), None, "the PX 50 key expired")
    # Inside MULTI/EXEC.
    pipe = r.pipeline(transaction=True)
    pipe.set("tx", "1", exat=FAR).expire("tx-other", 10).incr("tx").expiretime("tx")
    pipe.persist("tx").ttl("tx")
    expect(pipe.execute(), [True, False, 2, FAR, True, -1], "expiry in MULTI/EXEC")
    r.delete("e", "sx", "tx", "counter-with-ttl")


def pipeline(r, protocol):
    n = 3000
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"pipe-{i}", f"value-{i}")
        pipe.incr("pipe-counter")
        pipe.get(f"pipe-{i}")
    results = pipe.execute()
    for i in range(n):
        expect(results[3 * i], True, f"SET {i}")
        expect(results[3 * i + 1], i + 1, f"INCR {i}")
        expect(results[3 * i + 2], f"value-{i}".encode(), f"GET {i}")


def bank(r, protocol, addr):
    accounts = [f"acct-{i}" for i in range(8)]
    r.mset({a: 100 for a in accounts})
    total = 100 * len(accounts)
    errors = []

    def transfer(seed):
        c = connect(addr, protocol)
        for i in range(300):
            src = accounts[(seed + i) % len(accounts)]
            dst = accounts[(seed + 3 * i + 1) % len(accounts)]
            if src == dst:
                continue
            pipe = c.pipeline(transaction=True)
            pipe.decrby(src, 7).incrby(dst, 7)
            pipe.execute()

    def read():
        c = connect(addr, protocol)
        for _ in range(300):
            values = c.mget(accounts)
            s = sum(int(v) for v in values)
            if s != total:
                errors.append(f"MGET saw a sum of {s}, not {total}: {values}")
                return

    threads = [threading.Thread(target=transfer, args=(k,)) for k in range(3)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
        if t.is_alive():
            raise AssertionError("a bank thread did not finish in 300 s")
    if errors:
        raise AssertionError(errors[0])
    expect(sum(int(v) for v in r.mget(accounts)), total, "final sum")


def watch(r, protocol, addr):
    r.delete("watched-counter")
    nr_clients, increments = 4, 100
    retries = [0]

    def client():
        c = connect(addr, protocol)
        for _ in range(increments):
            for attempt in range(10_000):
                with c.pipeline() as pipe:
                    try:
                        pipe.watch("watched-counter")
                        current = int(pipe.get("watched-counter") or 0)
                        pipe.multi()
                        pipe.set("watched-counter", current + 1)
                        pipe.execute()
                        break
                    except redis.WatchError:
                        retries[0] += 1
            else:
                raise AssertionError("an increment kept failing")

    threads = [threading.Thread(target=client) for _ in range(nr_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
        if t.is_alive():
            raise AssertionError("a WATCH client did not finish in 300 s")
    expect(int(r.get("watched-counter")), nr_clients * increments, "final count")
    print(f"WATCH retries: {retries[0]}")


def keys(r, protocol):
    n = 5000
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"scan-{i}", i)
    pipe.execute()
    want = {f"scan-{i}".encode() for i in range(n)}
    for count in (None, 7, 1000):
        seen = list(r.scan_iter(count=count))
        expect(len(seen), len(set(seen)), f"SCAN COUNT {count}: a key came twice")
        expect(set(seen), want, f"SCAN COUNT {count}: the keys")
    matched = set(r.scan_iter(match="scan-1*"))
    expect(matched, {k for k in want if k.startswith(b"scan-1")}, "SCAN MATCH")
    expect(set(r.keys("scan-2?")), {f"scan-2{d}".encode() for d in range(10)}, "KEYS")
    expect(len(r.keys("*")), n, "KEYS *")
    expect(list(r.scan_iter(_type="hash")), [], "SCAN TYPE hash")
    expect(r.flushdb(), True, "FLUSHDB")
    expect(r.dbsize(), 0, "DBSIZE after FLUSHDB")
    expect(r.keys("*"), [], "KEYS after FLUSHDB")


def main():
    addr, protocol, scenario = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    r = connect(addr, protocol)
    if scenario == "commands":
        commands(r, protocol)
    elif scenario == "pipeline":
        pipeline(r, protocol)
    elif scenario == "bank":
        bank(r, protocol, addr)
    elif scenario == "keys":
        keys(r, protocol)
    elif scenario == "watch":
        watch(r, protocol, addr)
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    print(f"{scenario} with RESP{protocol}: ok")


if __name__ == "__main__":
    main()
