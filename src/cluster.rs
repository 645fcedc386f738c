//! A static cluster: the file every node reads (`--cluster FILE`), naming each
//! node, its client address and the hash slots it owns, and which of them this
//! node is (`--node NAME`).
//!
//! ```toml
//! [[node]]
//! name = "a"
//! addr = "10.0.0.1:4000"
//! slots = ["0-5460"]
//!
//! [[node]]
//! name = "b"
//! addr = "10.0.0.2:4000"
//! slots = ["5461-10922"]
//! ```
//!
//! [`ClusterMap::load`] refuses, naming the fault, a file that does not parse,
//! a node without a name, address or slots, two nodes with one name or one
//! address, slots owned twice or by nobody, and a `--node` the file does not
//! list: every node must see the same complete map, or clients would be sent
//! in circles.

use crate::slot::{SlotRange, NR_SLOTS};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Why a cluster file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read the cluster file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the cluster file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// One node as the file lists it (and SLOTMAP answers it: the wire model
/// holds the type, so that clients share it).
pub use crate::proto::message::ClusterNode as Node;

/// The whole cluster as this node sees it.
#[derive(Debug, Clone)]
pub struct ClusterMap {
    nodes: Vec<Node>,
    /// Index into `nodes` of this node.
    me: usize,
    /// The index into `nodes` of each slot's owner.
    owners: Box<[u16]>,
}

/// The file's layout, before checking.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    node: Vec<FileNode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNode {
    name: String,
    addr: String,
    slots: Vec<String>,
}

impl ClusterMap {
    /// Reads and checks the cluster file at `path`, for the node named `me`.
    pub fn load(path: &Path, me: &str) -> Result<ClusterMap, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Read {
            path: path.to_owned(),
            source,
        })?;
        ClusterMap::parse(&text, me).map_err(|message| ClusterError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Checks the text of a cluster file; the error says what is wrong.
    pub fn parse(text: &str, me: &str) -> Result<ClusterMap, String> {
        let file: File = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        if file.node.is_empty() {
            return Err("it lists no [[node]]".to_owned());
        }
        let nodes = file
            .node
            .into_iter()
            .map(checked_node)
            .collect::<Result<Vec<Node>, String>>()?;
        ClusterMap::from_nodes(nodes, me)
    }

    /// The map of `nodes` for the node named `me`, checked as a file is (a
    /// client builds one from a node's SLOTMAP answer, `me` being that node).
    pub fn from_nodes(nodes: Vec<Node>, me: &str) -> Result<ClusterMap, String> {
        if nodes.is_empty() {
            return Err("it lists no node".to_owned());
        }
        let bad_range = |r: &SlotRange| r.first > r.last || r.last >= NR_SLOTS;
        if let Some(node) = nodes.iter().find(|n| n.slots.iter().any(bad_range)) {
            return Err(format!(
                "node {:?} has a slot range out of order or past the last slot",
                node.name
            ));
        }
        for (i, node) in nodes.iter().enumerate() {
            if let Some(twin) = nodes[..i].iter().find(|n| n.name == node.name) {
                return Err(format!("two nodes are named {:?}", twin.name));
            }
            if let Some(twin) = nodes[..i].iter().find(|n| n.addr == node.addr) {
                return Err(format!(
                    "nodes {:?} and {:?} have the same address {}",
                    twin.name, node.name, node.addr
                ));
            }
        }
        let owners = owners(&nodes)?;
        let me = nodes.iter().position(|n| n.name == me).ok_or_else(|| {
            let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            format!("--node {me:?} is not one of its nodes {names:?}")
        })?;
        Ok(ClusterMap { nodes, me, owners })
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// This node.
    pub fn me(&self) -> &Node {
        &self.nodes[self.me]
    }

    /// The node that owns `slot`.
    pub fn owner(&self, slot: u16) -> &Node {
        &self.nodes[usize::from(self.owners[usize::from(slot)])]
    }

    /// Whether this node owns `slot`.
    pub fn is_mine(&self, slot: u16) -> bool {
        usize::from(self.owners[usize::from(slot)]) == self.me
    }
}

fn checked_node(node: FileNode) -> Result<Node, String> {
    if node.name.is_empty() {
        return Err("a node has an empty name".to_owned());
    }
    let addr = node.addr.parse().map_err(|_| {
        format!(
            "node {:?}: address {:?} is not IP:PORT",
            node.name, node.addr
        )
    })?;
    if node.slots.is_empty() {
        return Err(format!("node {:?} owns no slots", node.name));
    }
    let slots = node
        .slots
        .iter()
        .map(|text| {
            text.parse()
                .map_err(|e| format!("node {:?}: {e}", node.name))
        })
        .collect::<Result<Vec<SlotRange>, String>>()?;
    Ok(Node {
        name: node.name,
        addr,
        slots,
    })
}

/// Each slot's owner, if every slot has exactly one.
fn owners(nodes: &[Node]) -> Result<Box<[u16]>, String> {
    const NOBODY: u16 = u16::MAX;
    let mut owners = vec![NOBODY; usize::from(NR_SLOTS)].into_boxed_slice();
    for (i, node) in nodes.iter().enumerate() {
        for range in &node.slots {
            for slot in range.slots() {
                let owner = &mut owners[usize::from(slot)];
                if *owner != NOBODY {
                    let other = &nodes[usize::from(*owner)].name;
                    return Err(format!(
                        "slot {slot} is owned by both {other:?} and {:?}",
                        node.name
                    ));
                }
                *owner = i as u16;
            }
        }
    }
    let unowned: Vec<u16> = (0..NR_SLOTS)
        .filter(|&slot| owners[usize::from(slot)] == NOBODY)
        .collect();
    if let (Some(first), Some(last)) = (unowned.first(), unowned.last()) {
        return Err(format!(
            "{} slots are owned by no node (the first {first}, the last {last})",
            unowned.len()
        ));
    }
    Ok(owners)
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE_NODES: &str = r#"
        [[node]]
        name = "a"
        addr = "127.0.0.1:7001"
        slots = ["0-5460"]

        [[node]]
        name = "b"
        addr = "127.0.0.1:7002"
        slots = ["5461-10922"]

        [[node]]
        name = "c"
        addr = "127.0.0.1:7003"
        slots = ["10923-16000", "16001", "16002-16383"]
    "#;

    #[test]
    fn a_complete_file_maps_every_slot_to_its_node() {
        let map = ClusterMap::parse(THREE_NODES, "b").expect("valid");
        assert_eq!(map.me().name, "b");
        assert_eq!(map.nodes().len(), 3);
        assert_eq!(map.owner(0).name, "a");
        assert_eq!(map.owner(5461).name, "b");
        assert!(map.is_mine(10922) && !map.is_mine(10923));
        assert_eq!(map.owner(16001).addr, "127.0.0.1:7003".parse().unwrap());
        assert_eq!(map.owner(16383).name, "c");
    }

    #[test]
    fn a_faulty_file_is_refused_naming_the_fault() {
        let cases = [
            ("", "no [[node]]"),
            ("[[node]]\nname = \"a\"\n", "missing field"),
            (
                &THREE_NODES.replace("0-5460", "0-5461"),
                "slot 5461 is owned by both \"a\" and \"b\"",
            ),
            (
                &THREE_NODES.replace("\"16001\", ", ""),
                "1 slots are owned by no node (the first 16001, the last 16001)",
            ),
            (
                &THREE_NODES.replace("127.0.0.1:7002", "127.0.0.1:7001"),
                "the same address",
            ),
            (
                &THREE_NODES.replace("name = \"c\"", "name = \"a\""),
                "two nodes are named \"a\"",
            ),
            (
                &THREE_NODES.replace("127.0.0.1:7003", "localhost"),
                "is not IP:PORT",
            ),
            (&THREE_NODES.replace("0-5460", "0-x"), "slot range \"0-x\""),
            (
                &THREE_NODES.replace("slots = [\"5461-10922\"]", "slots = []"),
                "node \"b\" owns no slots",
            ),
            (&format!("{THREE_NODES}\nextra = 1\n"), "unknown field"),
        ];
        for (text, needle) in cases {
            let error = ClusterMap::parse(text, "a").expect_err(needle);
            assert!(error.contains(needle), "{needle:?} not in {error:?}");
        }
        let mut nodes = ClusterMap::parse(THREE_NODES, "a")
            .expect("valid")
            .nodes()
            .to_vec();
        nodes[2].slots.push(SlotRange {
            first: 16383,
            last: 16384,
        });
        let error = ClusterMap::from_nodes(nodes, "a").expect_err("slot past the last");
        assert!(error.contains("past the last slot"), "{error}");
        let error = ClusterMap::parse(THREE_NODES, "d").expect_err("unknown node");
        assert!(
            error.contains("--node \"d\" is not one of its nodes [\"a\", \"b\", \"c\"]"),
            "{error}"
        );
    }
}
