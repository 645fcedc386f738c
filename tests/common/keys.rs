//! Keys placed on chosen shards, with the server's own router (the routing is
//! fixed, so a test knows which shard owns each key it makes).
#![allow(dead_code)]

use corekv::ids::Router;

/// `n` pairs of keys, `left<i>` on shard 0 and `right<i>` on shard 1 of
/// `nr_shards`: what a cross-shard batch writes together.
pub fn pairs_across_shards(n: usize, nr_shards: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                key_on_shard(&format!("left{i}"), 0, nr_shards),
                key_on_shard(&format!("right{i}"), 1, nr_shards),
            )
        })
        .collect()
}

/// A key named `prefix-<n>` owned by `shard` when there are `nr_shards`.
pub fn key_on_shard(prefix: &str, shard: usize, nr_shards: usize) -> Vec<u8> {
    key_name_on_shard(prefix, shard, nr_shards).into_bytes()
}

/// [`key_on_shard`] as text.
pub fn key_name_on_shard(prefix: &str, shard: usize, nr_shards: usize) -> String {
    let router = Router::new(nr_shards);
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|k| router.route(k.as_bytes()).0 == shard)
        .expect("some key lands on every shard")
}

/// `n` keys, key i owned by shard i % nr_shards: with n >= nr_shards they
/// span every shard.
pub fn keys_on_every_shard(prefix: &str, n: usize, nr_shards: usize) -> Vec<Vec<u8>> {
    key_names_on_every_shard(prefix, n, nr_shards)
        .into_iter()
        .map(String::into_bytes)
        .collect()
}

/// [`keys_on_every_shard`] as text.
pub fn key_names_on_every_shard(prefix: &str, n: usize, nr_shards: usize) -> Vec<String> {
    (0..n)
        .map(|i| key_name_on_shard(&format!("{prefix}-{i}"), i % nr_shards, nr_shards))
        .collect()
}

/// A key for a failure message.
pub fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}
