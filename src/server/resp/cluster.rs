//! Redis Cluster over RESP on a cluster node (`--cluster`): which keys a
//! command touches, the MOVED and CROSSSLOT refusals cluster clients expect,
//! and the CLUSTER subcommands that describe the static slot map.
//!
//! A command runs here only if all its keys hash to one slot, and that slot
//! is this node's: a client that follows MOVED and keeps a multi-key command
//! (or a MULTI block) to one hash tag always gets the same answer whichever
//! node and shard layout it meets. The msgpack round refuses keys of other
//! nodes too (`server::round`); the check here comes first so that RESP
//! clients get Redis's texts.

use super::reply::Reply;
use crate::cluster::{ClusterMap, Node};
use crate::proto::resp::command::{ClusterCommand, Command};
use crate::slot::{key_slot, NR_SLOTS};
use std::fmt::Write;

/// Redis's reply to a command spanning slots.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
/// Redis's reply to CLUSTER (and READONLY, …) on a server that is not a node.
pub const DISABLED: &str = "ERR This instance has cluster support disabled";

/// Appends the keys `command` reads or writes, in argument order.
pub fn keys<'a>(command: &Command<'a>, out: &mut Vec<&'a [u8]>) {
    match command {
        Command::Get(key)
        | Command::Set { key, .. }
        | Command::SetNx(key, _)
        | Command::GetSet(key, _)
        | Command::GetDel(key)
        | Command::Type(key)
        | Command::IncrBy(key, _)
        | Command::IncrByFloat(key, _)
        | Command::Append(key, _)
        | Command::StrLen(key)
        | Command::Expire(key, _)
        | Command::Ttl(key, _)
        | Command::ExpireTime(key, _)
        | Command::Persist(key)
        | Command::GetEx(key, _) => out.push(key),
        Command::MGet(keys) | Command::Del(keys) | Command::Exists(keys) | Command::Watch(keys) => {
            out.extend_from_slice(keys)
        }
        Command::MSet(pairs) | Command::MSetNx(pairs) => {
            out.extend(pairs.iter().map(|(key, _)| *key))
        }
        _ => {}
    }
}

/// The one slot of `keys`, if they have one and this node owns it.
/// Otherwise the error reply: CROSSSLOT, or MOVED to the slot's owner.
pub fn check_slot(cluster: &ClusterMap, keys: &[&[u8]]) -> Result<Option<u16>, String> {
    let mut slot = None;
    for key in keys {
        let this = key_slot(key);
        match slot {
            Some(s) if s != this => return Err(CROSSSLOT.to_owned()),
            _ => slot = Some(this),
        }
    }
    match slot {
        Some(s) if !cluster.is_mine(s) => Err(format!("MOVED {s} {}", cluster.owner(s).addr)),
        slot => Ok(slot),
    }
}

/// Whether the keys WATCHed are all in `block`, the slot of a MULTI block's
/// keys (or, for a block without keys, in one slot). A WATCH of keys in
/// several slots is refused at once; one WATCH per slot is caught here, at
/// EXEC: a transaction reads and writes one slot, so it stays on one node
/// whatever the slot map becomes.
pub fn one_slot<'k>(block: Option<u16>, watched: impl Iterator<Item = &'k [u8]>) -> bool {
    let mut slot = block;
    for key in watched {
        let this = key_slot(key);
        match slot {
            Some(s) if s != this => return false,
            _ => slot = Some(this),
        }
    }
    true
}

/// A node's id: 40 hex digits derived from its name, the same in every
/// process and on every node (the file names the nodes, so their ids
/// follow).
pub fn node_id(node: &Node) -> String {
    const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);
    let mut id = String::with_capacity(48);
    for round in 0u8..3 {
        let mut digest = CRC64.digest();
        digest.update(&[round]);
        digest.update(node.name.as_bytes());
        let _ = write!(id, "{:016x}", digest.finalize());
    }
    id.truncate(40);
    id
}

/// The slot map as runs of consecutive slots with one owner, in slot order.
fn runs(cluster: &ClusterMap) -> Vec<(u16, u16, &Node)> {
    let mut runs: Vec<(u16, u16, &Node)> = Vec::new();
    for slot in 0..NR_SLOTS {
        let owner = cluster.owner(slot);
        match runs.last_mut() {
            Some((_, last, node)) if node.name == owner.name && *last + 1 == slot => *last = slot,
            _ => runs.push((slot, slot, owner)),
        }
    }
    runs
}

/// Answers a CLUSTER subcommand that needs no data (COUNTKEYSINSLOT and
/// GETKEYSINSLOT scan a shard: `exec` runs them).
pub fn answer(command: &ClusterCommand, cluster: Option<&ClusterMap>, reply: &mut Reply) {
    let Some(cluster) = cluster else {
        return reply.error(DISABLED);
    };
    match command {
        ClusterCommand::Info => reply.bulk(info(cluster).as_bytes()),
        ClusterCommand::MyId => reply.bulk(node_id(cluster.me()).as_bytes()),
        ClusterCommand::KeySlot(key) => reply.integer(i64::from(key_slot(key))),
        ClusterCommand::Slots => slots(cluster, reply),
        ClusterCommand::Shards => shards(cluster, reply),
        ClusterCommand::Nodes => reply.bulk(nodes(cluster).as_bytes()),
        ClusterCommand::CountKeysInSlot(_) | ClusterCommand::GetKeysInSlot(..) => reply.error(
            "ERR CLUSTER COUNTKEYSINSLOT and GETKEYSINSLOT are not supported inside MULTI in corekv",
        ),
    }
}

/// The epoch a node reports: its place in the file, from 1 (the map never
/// changes, so every node has its own fixed epoch).
fn epoch(cluster: &ClusterMap, node: &Node) -> usize {
    1 + cluster
        .nodes()
        .iter()
        .position(|n| n.name == node.name)
        .expect("the node is one of the cluster's")
}

fn info(cluster: &ClusterMap) -> String {
    let nr_nodes = cluster.nodes().len();
    format!(
        "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:{NR_SLOTS}\r\n\
         cluster_slots_ok:{NR_SLOTS}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\n\
         cluster_known_nodes:{nr_nodes}\r\ncluster_size:{nr_nodes}\r\n\
         cluster_current_epoch:{nr_nodes}\r\ncluster_my_epoch:{}\r\n\
         cluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\n\
         total_cluster_links_buffer_limit_exceeded:0\r\n",
        epoch(cluster, cluster.me())
    )
}

/// CLUSTER SLOTS: `[first, last, [ip, port, id, {}]]` per run of slots.
fn slots(cluster: &ClusterMap, reply: &mut Reply) {
    let runs = runs(cluster);
    reply.array(runs.len());
    for (first, last, node) in runs {
        reply.array(3);
        reply.integer(i64::from(first));
        reply.integer(i64::from(last));
        reply.array(4);
        reply.bulk(node.addr.ip().to_string().as_bytes());
        reply.integer(i64::from(node.addr.port()));
        reply.bulk(node_id(node).as_bytes());
        reply.map(0);
    }
}

/// CLUSTER SHARDS: per node, its slot ranges and itself as the only member.
fn shards(cluster: &ClusterMap, reply: &mut Reply) {
    let runs = runs(cluster);
    reply.array(cluster.nodes().len());
    for node in cluster.nodes() {
        let mine: Vec<(u16, u16)> = runs
            .iter()
            .filter(|(_, _, owner)| owner.name == node.name)
            .map(|(first, last, _)| (*first, *last))
            .collect();
        reply.map(2);
        reply.bulk(b"slots");
        reply.array(mine.len() * 2);
        for (first, last) in mine {
            reply.integer(i64::from(first));
            reply.integer(i64::from(last));
        }
        reply.bulk(b"nodes");
        reply.array(1);
        reply.map(7);
        reply.bulk(b"id");
        reply.bulk(node_id(node).as_bytes());
        reply.bulk(b"port");
        reply.integer(i64::from(node.addr.port()));
        reply.bulk(b"ip");
        reply.bulk(node.addr.ip().to_string().as_bytes());
        reply.bulk(b"endpoint");
        reply.bulk(node.addr.ip().to_string().as_bytes());
        reply.bulk(b"role");
        reply.bulk(b"master");
        reply.bulk(b"replication-offset");
        reply.integer(0);
        reply.bulk(b"health");
        reply.bulk(b"online");
    }
}

/// CLUSTER NODES: Redis's line per node, `id ip:port@cport flags master
/// ping-sent pong-recv epoch link-state slot…`.
fn nodes(cluster: &ClusterMap) -> String {
    let runs = runs(cluster);
    let mut text = String::new();
    for node in cluster.nodes() {
        let flags = if node.name == cluster.me().name {
            "myself,master"
        } else {
            "master"
        };
        let _ = write!(
            text,
            "{} {}:{}@{} {flags} - 0 0 {} connected",
            node_id(node),
            node.addr.ip(),
            node.addr.port(),
            u32::from(node.addr.port()) + 10_000,
            epoch(cluster, node)
        );
        for (first, last, _) in runs.iter().filter(|(_, _, o)| o.name == node.name) {
            match first == last {
                true => write!(text, " {first}"),
                false => write!(text, " {first}-{last}"),
            }
            .expect("writing to a String cannot fail");
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::resp::command;

    const TWO_NODES: &str = r#"
        [[node]]
        name = "a"
        addr = "127.0.0.1:7001"
        slots = ["0-99", "100-8191"]

        [[node]]
        name = "b"
        addr = "127.0.0.1:7002"
        slots = ["8192-16383"]
    "#;

    fn keys_of(line: &str) -> Vec<String> {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        let parsed = command::parse(&args).expect("a valid command");
        let mut found = Vec::new();
        keys(&parsed, &mut found);
        found
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn every_keyed_command_names_its_keys_and_only_them() {
        assert_eq!(keys_of("GET k"), ["k"]);
        assert_eq!(keys_of("SET k v EX 10"), ["k"]);
        assert_eq!(keys_of("MSET a 1 b 2"), ["a", "b"]);
        assert_eq!(keys_of("MGET a b c"), ["a", "b", "c"]);
        assert_eq!(keys_of("DEL a b"), ["a", "b"]);
        assert_eq!(keys_of("EXPIRE k 10"), ["k"]);
        assert!(keys_of("PING").is_empty());
        assert!(keys_of("KEYS *").is_empty());
        assert!(keys_of("CLUSTER KEYSLOT k").is_empty());
    }

    #[test]
    fn watched_keys_must_share_the_blocks_slot_or_one_of_their_own() {
        let foo = key_slot(b"foo");
        let (b, c) = (&b"{foo}b"[..], &b"{foo}c"[..]);
        assert!(one_slot(Some(foo), [b, c].into_iter()));
        assert!(one_slot(None, [b, c].into_iter()));
        assert!(one_slot(None, std::iter::empty()));
        assert!(!one_slot(Some(foo), [b, &b"bar"[..]].into_iter()));
        assert!(!one_slot(None, [&b"bar"[..], b].into_iter()));
    }

    #[test]
    fn keys_of_one_owned_slot_pass_and_others_get_crossslot_or_moved() {
        let map = ClusterMap::parse(TWO_NODES, "a").expect("valid");
        // "foo" is in slot 12182, node b's.
        let foo = key_slot(b"foo");
        assert_eq!(
            check_slot(&map, &[b"foo"]),
            Err(format!("MOVED {foo} 127.0.0.1:7002"))
        );
        let mine = (0..1000)
            .map(|i| format!("key:{i}"))
            .find(|k| key_slot(k.as_bytes()) < 8192)
            .expect("a key of node a");
        let slot = key_slot(mine.as_bytes());
        assert_eq!(check_slot(&map, &[mine.as_bytes()]), Ok(Some(slot)));
        let tagged = format!("{{{mine}}}.other");
        assert_eq!(
            check_slot(&map, &[mine.as_bytes(), tagged.as_bytes()]),
            Ok(Some(slot))
        );
        assert_eq!(
            check_slot(&map, &[mine.as_bytes(), b"foo"]),
            Err(CROSSSLOT.to_owned())
        );
        assert_eq!(check_slot(&map, &[]), Ok(None));
    }

    #[test]
    fn cluster_nodes_lists_every_node_in_redis_line_format_with_merged_ranges() {
        let map = ClusterMap::parse(TWO_NODES, "b").expect("valid");
        let text = nodes(&map);
        let lines: Vec<&str> = text.lines().collect();
        let (a, b) = (node_id(&map.nodes()[0]), node_id(&map.nodes()[1]));
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()) && a != b);
        assert_eq!(
            lines,
            [
                format!("{a} 127.0.0.1:7001@17001 master - 0 0 1 connected 0-8191"),
                format!("{b} 127.0.0.1:7002@17002 myself,master - 0 0 2 connected 8192-16383"),
            ]
        );
    }
}
