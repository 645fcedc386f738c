//! The commands about the server rather than the data: HELLO, CONFIG GET,
//! COMMAND, INFO (cluster-aware clients find each command's keys with
//! COMMAND's key positions). Enough of each for Redis's own tools (redis-cli,
//! redis-benchmark) and client libraries to start and report.

use super::reply::Reply;
use crate::log::FsyncMode;
use crate::proto::resp::glob;
use crate::server::connection::ShardContext;
use std::fmt::Write;

/// The Redis version corekv answers as (the command set and replies it follows).
pub const REDIS_VERSION: &str = "7.2.0";

/// Every command corekv answers, with Redis's arity (negative: at least).
pub const COMMANDS: &[(&str, i64)] = &[
    ("append", 3),
    ("asking", 1),
    ("client", -2),
    ("cluster", -2),
    ("command", -1),
    ("config", -2),
    ("dbsize", 1),
    ("decr", 2),
    ("decrby", 3),
    ("del", -2),
    ("discard", 1),
    ("echo", 2),
    ("exec", 1),
    ("exists", -2),
    ("expire", -3),
    ("expireat", -3),
    ("expiretime", 2),
    ("flushall", -1),
    ("flushdb", -1),
    ("get", 2),
    ("getdel", 2),
    ("getex", -2),
    ("getset", 3),
    ("hello", -1),
    ("incr", 2),
    ("incrby", 3),
    ("incrbyfloat", 3),
    ("info", -1),
    ("keys", 2),
    ("mget", -2),
    ("mset", -3),
    ("msetnx", -3),
    ("multi", 1),
    ("persist", 2),
    ("pexpire", -3),
    ("pexpireat", -3),
    ("pexpiretime", 2),
    ("ping", -1),
    ("psetex", 4),
    ("pttl", 2),
    ("quit", -1),
    ("readonly", 1),
    ("readwrite", 1),
    ("scan", -2),
    ("select", 2),
    ("set", -3),
    ("setex", 4),
    ("setnx", 3),
    ("strlen", 2),
    ("ttl", 2),
    ("type", 2),
    ("unlink", -2),
    ("unwatch", 1),
    ("watch", -2),
];

/// COMMAND DOCS: each command's group and summary (Redis's texts).
const DOCS: &[(&str, &str, &str)] = &[
    ("append", "string", "Appends a string to the value of a key. Creates the key if it doesn't exist."),
    ("asking", "cluster", "Signals that a cluster client is following an -ASK redirect."),
    ("client", "connection", "A container for client connection commands."),
    ("cluster", "cluster", "A container for Redis Cluster commands."),
    ("command", "server", "Returns detailed information about all commands."),
    ("config", "server", "A container for server configuration commands."),
    ("dbsize", "server", "Returns the number of keys in the database."),
    ("decr", "string", "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist."),
    ("decrby", "string", "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist."),
    ("del", "generic", "Deletes one or more keys."),
    ("discard", "transactions", "Discards a transaction."),
    ("echo", "connection", "Returns the given string."),
    ("exec", "transactions", "Executes all commands in a transaction."),
    ("exists", "generic", "Determines whether one or more keys exist."),
    ("expire", "generic", "Sets the expiration time of a key in seconds."),
    ("expireat", "generic", "Sets the expiration time of a key to a Unix timestamp."),
    ("expiretime", "generic", "Returns the expiration time of a key as a Unix timestamp."),
    ("flushall", "server", "Removes all keys from all databases."),
    ("flushdb", "server", "Remove all keys from the current database."),
    ("get", "string", "Returns the string value of a key."),
    ("getdel", "string", "Returns the string value of a key after deleting the key."),
    ("getex", "string", "Returns the string value of a key after setting its expiration time."),
    ("getset", "string", "Returns the previous string value of a key after setting it to a new value."),
    ("hello", "connection", "Handshakes with the Redis server."),
    ("incr", "string", "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist."),
    ("incrby", "string", "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist."),
    ("incrbyfloat", "string", "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist."),
    ("info", "server", "Returns information and statistics about the server."),
    ("keys", "generic", "Returns all key names that match a pattern."),
    ("mget", "string", "Atomically returns the string values of one or more keys."),
    ("mset", "string", "Atomically creates or modifies the string values of one or more keys."),
    ("msetnx", "string", "Atomically modifies the string values of one or more keys only when all keys don't exist."),
    ("multi", "transactions", "Starts a transaction."),
    ("persist", "generic", "Removes the expiration time of a key."),
    ("pexpire", "generic", "Sets the expiration time of a key in milliseconds."),
    ("pexpireat", "generic", "Sets the expiration time of a key to a Unix milliseconds timestamp."),
    ("pexpiretime", "generic", "Returns the expiration time of a key as a Unix milliseconds timestamp."),
    ("ping", "connection", "Returns the server's liveliness response."),
    ("psetex", "string", "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist."),
    ("pttl", "generic", "Returns the expiration time in milliseconds of a key."),
    ("quit", "connection", "Closes the connection."),
    ("readonly", "cluster", "Enables read-only queries for a connection to a Redis Cluster replica node."),
    ("readwrite", "cluster", "Enables read-write queries for a connection to a Redis Cluster replica node."),
    ("scan", "generic", "Iterates over the key names in the database."),
    ("select", "connection", "Changes the selected database."),
    ("set", "string", "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist."),
    ("setex", "string", "Sets the string value and expiration time of a key. Creates the key if it doesn't exist."),
    ("setnx", "string", "Set the string value of a key only when the key doesn't exist."),
    ("strlen", "string", "Returns the length of a string value."),
    ("ttl", "generic", "Returns the expiration time in seconds of a key."),
    ("type", "generic", "Determines the type of value stored at a key."),
    ("unlink", "generic", "Asynchronously deletes one or more keys."),
    ("unwatch", "transactions", "Forgets about watched keys of a transaction."),
    ("watch", "transactions", "Monitors changes to keys to determine the execution of a transaction."),
];

/// COMMAND DOCS: a map of each command asked for (all when none is named;
/// unknown names are left out, as Redis does) to its summary and group.
pub fn command_docs(reply: &mut Reply, names: &[&[u8]]) {
    let wanted: Vec<&(&str, &str, &str)> = DOCS
        .iter()
        .filter(|(name, _, _)| {
            names.is_empty()
                || names
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
        })
        .collect();
    reply.map(wanted.len());
    for (name, group, summary) in wanted {
        reply.bulk(name.as_bytes());
        reply.map(2);
        reply.bulk(b"summary");
        reply.bulk(summary.as_bytes());
        reply.bulk(b"group");
        reply.bulk(group.as_bytes());
    }
}

/// HELLO's reply: the server's description, as a map.
pub fn hello(reply: &mut Reply, protocol: i64, client_id: u64, mode: &str) {
    reply.map(7);
    reply.bulk(b"server");
    reply.bulk(b"redis");
    reply.bulk(b"version");
    reply.bulk(REDIS_VERSION.as_bytes());
    reply.bulk(b"proto");
    reply.integer(protocol);
    reply.bulk(b"id");
    reply.integer(client_id as i64);
    reply.bulk(b"mode");
    reply.bulk(mode.as_bytes());
    reply.bulk(b"role");
    reply.bulk(b"master");
    reply.bulk(b"modules");
    reply.array(0);
}

/// CONFIG GET: every parameter matching one of the patterns, as a map.
pub fn config_get(reply: &mut Reply, ctx: &ShardContext, patterns: &[&[u8]]) {
    let parameters = parameters(ctx);
    let matching: Vec<&(String, String)> = parameters
        .iter()
        .filter(|(name, _)| {
            patterns
                .iter()
                .any(|p| glob::matches(&p.to_ascii_lowercase(), name.as_bytes()))
        })
        .collect();
    reply.map(matching.len());
    for (name, value) in matching {
        reply.bulk(name.as_bytes());
        reply.bulk(value.as_bytes());
    }
}

/// The parameters CONFIG GET knows: Redis's names where corekv has the
/// setting, and corekv's own flags under `corekv-*`.
fn parameters(ctx: &ShardContext) -> Vec<(String, String)> {
    let config = &ctx.config;
    let logged = config.engine.logs();
    let (appendfsync, fsync) = match config.fsync {
        FsyncMode::Always => ("always", "always".to_owned()),
        FsyncMode::Interval(every) => ("everysec", format!("interval ({} ms)", every.as_millis())),
        FsyncMode::Never => ("no", "never".to_owned()),
    };
    let pairs = [
        ("save", String::new()),
        ("appendonly", if logged { "yes" } else { "no" }.to_owned()),
        ("appendfsync", appendfsync.to_owned()),
        ("maxmemory", config.max_memory_bytes.to_string()),
        ("maxmemory-policy", config.eviction.name().to_owned()),
        ("maxclients", config.max_connections.to_string()),
        ("databases", "1".to_owned()),
        ("port", config.addr.port().to_string()),
        ("bind", config.addr.ip().to_string()),
        ("proto-max-bulk-len", config.max_frame_bytes.to_string()),
        ("corekv-shards", config.nr_shards.to_string()),
        ("corekv-engine", config.engine.name().to_owned()),
        ("corekv-fsync", fsync),
        ("corekv-data-dir", config.data_dir.display().to_string()),
        ("corekv-max-frame-bytes", config.max_frame_bytes.to_string()),
        ("corekv-max-key-bytes", config.max_key_bytes.to_string()),
        (
            "corekv-max-memory-bytes",
            config.max_memory_bytes.to_string(),
        ),
        ("corekv-max-connections", config.max_connections.to_string()),
        (
            "corekv-disk-cache-bytes",
            config.disk_cache_bytes.to_string(),
        ),
        (
            "corekv-compact-min-bytes",
            config.compact_min_bytes.to_string(),
        ),
        ("corekv-segment-bytes", config.segment_bytes.to_string()),
        (
            "corekv-merge-live-percent",
            config.merge_live_percent.to_string(),
        ),
        (
            "corekv-idle-poll-us",
            config
                .idle_poll
                .map_or(0, |poll| poll.as_micros())
                .to_string(),
        ),
    ];
    pairs.into_iter().map(|(n, v)| (n.to_owned(), v)).collect()
}

/// COMMAND and COMMAND INFO: each command's name, arity, flags, and key
/// positions (the first six fields of Redis's reply). `None`: unknown.
pub fn command_info(reply: &mut Reply, names: Option<&[&[u8]]>) {
    let entry = |name: &[u8]| {
        COMMANDS
            .iter()
            .find(|(known, _)| known.as_bytes().eq_ignore_ascii_case(name))
    };
    match names {
        None => {
            reply.array(COMMANDS.len());
            COMMANDS
                .iter()
                .for_each(|command| one_command(reply, command));
        }
        Some(names) => {
            reply.array(names.len());
            for name in names {
                match entry(name) {
                    Some(command) => one_command(reply, command),
                    None => reply.null(),
                }
            }
        }
    }
}

/// Whether `name` is one of [`COMMANDS`] (any case).
pub fn is_known(name: &[u8]) -> bool {
    COMMANDS
        .iter()
        .any(|(known, _)| known.as_bytes().eq_ignore_ascii_case(name))
}

/// A command's key positions as Redis reports them: the first and last
/// argument that is a key (negative: from the end) and the step between.
/// (0, 0, 0): no keys, so a cluster client may send it to any node.
pub fn key_positions(name: &str) -> (i64, i64, i64) {
    match name {
        "mset" | "msetnx" => (1, -1, 2),
        "del" | "unlink" | "exists" | "mget" | "watch" => (1, -1, 1),
        "append" | "decr" | "decrby" | "expire" | "expireat" | "expiretime" | "get" | "getdel"
        | "getex" | "getset" | "incr" | "incrby" | "incrbyfloat" | "persist" | "pexpire"
        | "pexpireat" | "pexpiretime" | "psetex" | "pttl" | "set" | "setex" | "setnx"
        | "strlen" | "ttl" | "type" => (1, 1, 1),
        _ => (0, 0, 0),
    }
}

fn one_command(reply: &mut Reply, (name, arity): &(&str, i64)) {
    let (first, last, step) = key_positions(name);
    reply.array(6);
    reply.bulk(name.as_bytes());
    reply.integer(*arity);
    reply.set(0);
    reply.integer(first);
    reply.integer(last);
    reply.integer(step);
}

/// INFO's text: the requested sections (all of them by default).
pub fn info(ctx: &ShardContext, stats: &[(String, u64)], sections: &[String]) -> String {
    let stat = |name: &str| stats.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v);
    let wanted = |section: &str| {
        sections.is_empty()
            || sections
                .iter()
                .any(|s| s == section || s == "all" || s == "default" || s == "everything")
    };
    let config = &ctx.config;
    let mut text = String::new();
    if wanted("server") {
        let _ = write!(
            text,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\ncorekv_version:{}\r\n\
             redis_mode:{}\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\ncorekv_shards:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            if config.cluster.is_some() { "cluster" } else { "standalone" },
            std::env::consts::OS,
            std::process::id(),
            config.addr.port(),
            config.nr_shards,
        );
    }
    if wanted("clients") {
        let _ = write!(
            text,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
            stat("connections"),
            config.max_connections
        );
    }
    if wanted("memory") {
        let used = stat("memory_bytes") + stat("reply_pinned_bytes");
        let _ = write!(
            text,
            "# Memory\r\nused_memory:{used}\r\nused_memory_dataset:{}\r\nmaxmemory:{}\r\n\
             maxmemory_policy:noeviction\r\n\r\n",
            stat("value_bytes"),
            config.max_memory_bytes
        );
    }
    if wanted("persistence") {
        let logged = config.engine.logs();
        let _ = write!(
            text,
            "# Persistence\r\nloading:0\r\naof_enabled:{}\r\nrdb_changes_since_last_save:0\r\n\
             corekv_engine:{}\r\n\r\n",
            u8::from(logged),
            config.engine.name()
        );
    }
    if wanted("stats") {
        let _ = write!(
            text,
            "# Stats\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\ncorekv_gets:{}\r\ncorekv_sets:{}\r\n\
             corekv_deletes:{}\r\ncorekv_atomic_commits:{}\r\ncorekv_atomic_aborts:{}\r\n\
             corekv_oom_rejections:{}\r\n\r\n",
            stat("hits"),
            stat("misses"),
            stat("gets"),
            stat("sets"),
            stat("deletes"),
            stat("atomic_commits"),
            stat("atomic_aborts"),
            stat("oom_rejections"),
        );
    }
    if wanted("cluster") {
        let enabled = u8::from(config.cluster.is_some());
        let _ = write!(text, "# Cluster\r\ncluster_enabled:{enabled}\r\n\r\n");
    }
    if wanted("keyspace") {
        text.push_str("# Keyspace\r\n");
        let keys = stat("keys");
        if keys > 0 {
            let expires = stat("expires");
            let _ = write!(text, "db0:keys={keys},expires={expires},avg_ttl=0\r\n");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_positions_are_redis_s_so_cluster_clients_find_every_key() {
        assert_eq!(key_positions("get"), (1, 1, 1));
        assert_eq!(key_positions("getex"), (1, 1, 1));
        assert_eq!(key_positions("mset"), (1, -1, 2));
        assert_eq!(key_positions("mget"), (1, -1, 1));
        assert_eq!(key_positions("unlink"), (1, -1, 1));
        // No key: any node may answer.
        for name in [
            "keys", "scan", "flushall", "dbsize", "cluster", "readonly", "ping",
        ] {
            assert_eq!(key_positions(name), (0, 0, 0), "{name}");
        }
    }

    #[test]
    fn every_command_has_its_docs_and_only_those() {
        let names: Vec<&str> = COMMANDS.iter().map(|(name, _)| *name).collect();
        let documented: Vec<&str> = DOCS.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(names, documented);
    }
}
