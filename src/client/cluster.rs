//! A cluster-aware client: learns the slot map from a node (SLOTMAP,
//! opcode 24), keeps one [`Client`] per node, and sends each request to the
//! node that owns its key's hash slot (`crate::slot`).
//!
//! A message whose requests live on several nodes is cut into runs of
//! consecutive requests for one node ([`plan_message`]); every run is sent
//! (pipelined, one message each) before any reply is read, and the replies
//! are joined in request order. Runs keep their requests' order, so the
//! elements line up without knowing how many each request answers (a SET has
//! none, unless it is refused). Requests on one key stay in order — one key,
//! one node, one connection — and, as on a single server, a message as a
//! whole is not atomic. An ATOMIC batch must have all its keys on one node
//! (it may span that node's shards): one spanning nodes is refused here,
//! before anything is sent ([`ClientError::Routing`]).
//!
//! A run answered `MOVED` (the map changed, or the client started from a
//! stale one) ran nothing on that node; the client then asks for the map
//! again, once per call, and sends that run again, once. A second `MOVED`
//! is returned as the error.

use super::{decode_reply, Client, ClientError, Element, Request, Result};
use crate::cluster::ClusterMap;
use crate::slot::key_slot;
use rmpv::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

/// A run of consecutive requests of a message that go to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGroup {
    /// The node's client address.
    pub node: SocketAddr,
    /// The run's requests, as indices into the message.
    pub requests: Range<usize>,
}

/// Cuts `requests` into runs of consecutive requests whose keys `map` puts on
/// one node. An empty ATOMIC goes with the run before it (or to the first
/// node). Refused: an ATOMIC whose keys are on several nodes, and a request
/// with no key (STATS, SLOTMAP, SCAN: send those to one node's [`Client`]).
pub fn plan_message(map: &ClusterMap, requests: &[Request]) -> Result<Vec<NodeGroup>> {
    let mut groups: Vec<NodeGroup> = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let previous = groups.last().map(|g| g.node);
        let node = request_node(map, request, i)?
            .or(previous)
            .unwrap_or_else(|| map.nodes()[0].addr);
        match groups.last_mut() {
            Some(group) if group.node == node => group.requests.end = i + 1,
            _ => groups.push(NodeGroup {
                node,
                requests: i..i + 1,
            }),
        }
    }
    Ok(groups)
}

/// The node owning every key of request `i`; None for an empty ATOMIC.
fn request_node(map: &ClusterMap, request: &Request, i: usize) -> Result<Option<SocketAddr>> {
    let keys = request.keys();
    let Some(first) = keys.first() else {
        return match request {
            Request::Atomic(_) => Ok(None),
            _ => Err(ClientError::Routing(format!(
                "request {i} names no key; send it to one node (ClusterClient::node)"
            ))),
        };
    };
    let owner = map.owner(key_slot(first));
    if let Some(other) = keys
        .iter()
        .find(|k| map.owner(key_slot(k)).name != owner.name)
    {
        return Err(ClientError::Routing(format!(
            "request {i}: an ATOMIC batch must have all its keys on one node, but {:?} is on \
             node {:?} and {:?} on node {:?} (give them one hash tag, e.g. {{user1}}.a and \
             {{user1}}.b)",
            String::from_utf8_lossy(first),
            owner.name,
            String::from_utf8_lossy(other),
            map.owner(key_slot(other)).name,
        )));
    }
    Ok(Some(owner.addr))
}

/// Whether a node refused a whole message because it does not own a key of
/// it: the reply is then exactly one MOVED error element.
fn is_moved(reply: &[Element]) -> bool {
    matches!(reply, [Element::Error { code, .. }] if code == "MOVED")
}

/// A connection to every node of a corekv cluster, routing by hash slot.
pub struct ClusterClient {
    /// Addresses to ask for the map when no node of the current map answers.
    seeds: Vec<String>,
    timeout: Option<Duration>,
    map: ClusterMap,
    /// Connections by node address, opened when first needed.
    clients: HashMap<SocketAddr, Client>,
}

impl ClusterClient {
    /// Asks the first of `seeds` that answers for the slot map; connections
    /// to the nodes are opened as requests need them. `timeout` applies to
    /// each connection and reply, as for [`Client::connect`].
    pub fn connect(seeds: &[impl ToString], timeout: Option<Duration>) -> Result<ClusterClient> {
        let seeds: Vec<String> = seeds.iter().map(ToString::to_string).collect();
        let (map, client) = first_map(&seeds, timeout)?;
        let mut clients = HashMap::new();
        clients.insert(client.peer_addr(), client);
        Ok(ClusterClient {
            seeds,
            timeout,
            map,
            clients,
        })
    }

    /// A client that starts from a map already known (e.g. parsed from the
    /// cluster file) without asking a node; it asks the map's nodes for a
    /// fresh one at the first MOVED.
    pub fn with_map(map: ClusterMap, timeout: Option<Duration>) -> ClusterClient {
        ClusterClient {
            seeds: Vec::new(),
            timeout,
            map,
            clients: HashMap::new(),
        }
    }

    /// The slot map the client routes by.
    pub fn map(&self) -> &ClusterMap {
        &self.map
    }

    /// Asks the map's nodes, then the seeds, for the map, and routes by the
    /// first answer.
    pub fn refresh(&mut self) -> Result<()> {
        let mut addrs: Vec<String> = self
            .map
            .nodes()
            .iter()
            .map(|n| n.addr.to_string())
            .collect();
        addrs.extend(self.seeds.iter().cloned());
        let (map, _) = first_map(&addrs, self.timeout)?;
        self.map = map;
        Ok(())
    }

    /// The connection to the node named `name` (for requests without a key,
    /// such as STATS, which answer for that node only).
    pub fn node(&mut self, name: &str) -> Result<&mut Client> {
        let node = self.map.nodes().iter().find(|n| n.name == name);
        let addr = node
            .ok_or_else(|| ClientError::Routing(format!("the cluster has no node {name:?}")))?
            .addr;
        self.client(addr)
    }

    /// Sends one message, cut by node, and returns its reply's elements in
    /// request order (see the module doc).
    pub fn call(&mut self, requests: &[Request]) -> Result<Vec<Element>> {
        let groups = plan_message(&self.map, requests)?;
        let replies = self.run(requests, &groups)?;
        let mut elements = Vec::new();
        let mut refreshed = false;
        for (group, reply) in groups.iter().zip(replies) {
            if !is_moved(&reply) {
                elements.extend(reply);
                continue;
            }
            if !refreshed {
                self.refresh()?;
                refreshed = true;
            }
            let run = &requests[group.requests.clone()];
            let regrouped = plan_message(&self.map, run)?;
            for again in self.run(run, &regrouped)? {
                if let [Element::Error { code, message }] = &again[..] {
                    if code == "MOVED" {
                        return Err(ClientError::Server {
                            code: code.clone(),
                            message: message.clone(),
                        });
                    }
                }
                elements.extend(again);
            }
        }
        Ok(elements)
    }

    /// GET routed to the key's node.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Value>> {
        match self.one(Request::Get(key.to_vec()))? {
            Some(Element::Found(value)) => Ok(Some(value)),
            Some(Element::NotFound) => Ok(None),
            other => Err(ClientError::Protocol(format!(
                "unexpected GET result {other:?}"
            ))),
        }
    }

    /// SET routed to the key's node.
    pub fn set(&mut self, key: &[u8], value: Value) -> Result<()> {
        match self.one(Request::Set(key.to_vec(), value))? {
            None => Ok(()),
            other => Err(ClientError::Protocol(format!(
                "unexpected SET result {other:?}"
            ))),
        }
    }

    /// DEL routed to the key's node.
    pub fn del(&mut self, key: &[u8]) -> Result<()> {
        match self.one(Request::Del(key.to_vec()))? {
            None => Ok(()),
            other => Err(ClientError::Protocol(format!(
                "unexpected DEL result {other:?}"
            ))),
        }
    }

    /// One request's element (None if it has none); an error element is Err.
    fn one(&mut self, request: Request) -> Result<Option<Element>> {
        let mut elements = self.call(&[request])?;
        match (elements.pop(), elements.is_empty()) {
            (Some(Element::Error { code, message }), true) => {
                Err(ClientError::Server { code, message })
            }
            (element, true) => Ok(element),
            _ => Err(ClientError::Protocol(
                "expected at most one result element".into(),
            )),
        }
    }

    /// Sends every group as one message to its node, then reads each group's
    /// reply in order. On any failure every connection is dropped (some may
    /// hold unread replies) and reopened by the next call.
    fn run(&mut self, requests: &[Request], groups: &[NodeGroup]) -> Result<Vec<Vec<Element>>> {
        let ran = self.run_pipelined(requests, groups);
        if ran.is_err() {
            self.clients.clear();
        }
        ran
    }

    fn run_pipelined(
        &mut self,
        requests: &[Request],
        groups: &[NodeGroup],
    ) -> Result<Vec<Vec<Element>>> {
        for group in groups {
            self.client(group.node)?
                .send_message(&requests[group.requests.clone()])?;
        }
        for client in self.clients.values_mut() {
            client.flush()?;
        }
        let mut replies = Vec::with_capacity(groups.len());
        for group in groups {
            let body = self.client(group.node)?.recv_reply()?;
            replies.push(decode_reply(&body)?);
        }
        Ok(replies)
    }

    fn client(&mut self, addr: SocketAddr) -> Result<&mut Client> {
        if !self.clients.contains_key(&addr) {
            let client = Client::connect(addr, self.timeout)?;
            self.clients.insert(addr, client);
        }
        Ok(self.clients.get_mut(&addr).expect("inserted above"))
    }
}

/// The map of the first of `addrs` that answers SLOTMAP, and the connection
/// that asked; the last failure if none does.
fn first_map(addrs: &[String], timeout: Option<Duration>) -> Result<(ClusterMap, Client)> {
    let mut last_error = ClientError::Routing("no address to ask for the slot map".into());
    for addr in addrs {
        match ask_map(addr, timeout) {
            Ok(answer) => return Ok(answer),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

fn ask_map(addr: &str, timeout: Option<Duration>) -> Result<(ClusterMap, Client)> {
    let mut client = Client::connect(addr, timeout)?;
    match client.call(&[Request::SlotMap])?.as_slice() {
        [Element::SlotMap { answered_by, nodes }] => {
            let map = ClusterMap::from_nodes(nodes.clone(), answered_by).map_err(|why| {
                ClientError::Protocol(format!(
                    "{addr} answered a slot map that is not valid: {why}"
                ))
            })?;
            Ok((map, client))
        }
        [Element::Error { code, message }] => Err(ClientError::Server {
            code: code.clone(),
            message: format!("{addr}: {message}"),
        }),
        other => Err(ClientError::Protocol(format!(
            "{addr} answered SLOTMAP with {other:?}"
        ))),
    }
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
        slots = ["10923-16383"]
    "#;

    fn map() -> ClusterMap {
        ClusterMap::parse(THREE_NODES, "a").expect("valid map")
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn get(key: &str) -> Request {
        Request::Get(key.as_bytes().to_vec())
    }

    // Slots (CRC16 % 16384): "a" 15495 (c), "b" 3300 (a), "c" 7365 (b),
    // "foo" 12182 (c), "{b}x" 3300 (a).

    #[test]
    fn consecutive_requests_for_one_node_form_one_run_in_message_order() {
        let message = [
            get("b"),
            get("{b}x"),
            get("c"),
            get("a"),
            get("foo"),
            get("b"),
        ];
        let groups = plan_message(&map(), &message).expect("routable");
        let expected = [(7001, 0..2), (7002, 2..3), (7003, 3..5), (7001, 5..6)];
        let expected: Vec<NodeGroup> = expected
            .into_iter()
            .map(|(port, requests)| NodeGroup {
                node: addr(port),
                requests,
            })
            .collect();
        assert_eq!(groups, expected);
    }

    #[test]
    fn an_atomic_batch_goes_whole_to_its_node_or_is_refused_naming_both_nodes() {
        let local = Request::Atomic(vec![get("b"), Request::Atomic(vec![get("{b}x")])]);
        let groups =
            plan_message(&map(), &[get("c"), local, Request::Atomic(vec![])]).expect("one node");
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1].node, addr(7001));
        assert_eq!(
            groups[1].requests,
            1..3,
            "the empty batch joins the run before it"
        );
        let spanning = Request::Atomic(vec![get("b"), get("c")]);
        let refused = plan_message(&map(), &[get("a"), spanning]).expect_err("two nodes");
        let text = refused.to_string();
        assert!(
            matches!(refused, ClientError::Routing(_)) && text.contains("request 1"),
            "{text}"
        );
        assert!(
            text.contains("node \"a\"") && text.contains("node \"b\""),
            "{text}"
        );
    }

    #[test]
    fn requests_without_a_key_are_refused() {
        for keyless in [Request::Stats, Request::SlotMap] {
            let refused = plan_message(&map(), &[keyless]).expect_err("no key");
            assert!(refused.to_string().contains("names no key"), "{refused}");
        }
    }

    #[test]
    fn only_a_single_moved_element_is_a_refused_run() {
        let moved = Element::Error {
            code: "MOVED".into(),
            message: "3300 127.0.0.1:7001".into(),
        };
        assert!(is_moved(std::slice::from_ref(&moved)));
        assert!(!is_moved(&[Element::NotFound, moved]));
        assert!(!is_moved(&[Element::Error {
            code: "OOM".into(),
            message: String::new()
        }]));
    }
}
