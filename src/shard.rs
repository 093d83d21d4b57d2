//! `--shard I/N`: a deterministic split of the selected nodes over N control machines.
//!
//! Rendezvous (highest-random-weight) hashing of the node name: node `n` belongs to the shard
//! `j` whose `sha256(j || 0 || n)` is largest. The weight depends only on the name and the
//! shard number, so the split is the same on every machine and every cinch version (no
//! `std::hash::Hasher`), every node is in exactly one shard, and adding or removing a node
//! moves no other node.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One part of a split: shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, 1..=count.
    pub index: u32,
    /// How many shards in all (at least 1).
    pub count: u32,
}

impl Shard {
    /// Parses `I/N` as typed on the command line (1 <= I <= N).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::Usage(format!(
                "--shard {text:?}: expected I/N with 1 <= I <= N, e.g. --shard 2/4 for the \
                 second of four shards"
            ))
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether `name` falls into this shard.
    pub fn contains(&self, name: &str) -> bool {
        shard_of(name, self.count) == self.index
    }
}

/// The shard (1..=count) that owns `name` among `count` shards.
pub fn shard_of(name: &str, count: u32) -> u32 {
    (1..=count.max(1))
        .max_by_key(|j| weight(*j, name))
        .unwrap_or(1)
}

/// The rendezvous weight of `name` for shard `j`.
fn weight(j: u32, name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(j.to_be_bytes());
    h.update([0u8]);
    h.update(name.as_bytes());
    h.finalize().into()
}

/// Keeps the nodes of `shard` (all of them without one), in their order.
pub fn filter<T>(items: Vec<T>, shard: Option<Shard>, name: impl Fn(&T) -> &str) -> Vec<T> {
    match shard {
        None => items,
        Some(s) => items.into_iter().filter(|n| s.contains(name(n))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node{i:04}")).collect()
    }

    #[test]
    fn every_node_is_in_exactly_one_shard() {
        for count in [1, 2, 3, 7] {
            for name in names(500) {
                let owners = (1..=count)
                    .filter(|&i| Shard { index: i, count }.contains(&name))
                    .count();
                assert_eq!(owners, 1, "{name} among {count} shards");
            }
        }
    }

    #[test]
    fn adding_a_node_moves_only_that_node() {
        let before: Vec<u32> = names(300).iter().map(|n| shard_of(n, 4)).collect();
        let mut more = names(300);
        more.insert(17, "newcomer".into());
        let after: Vec<u32> = more
            .iter()
            .filter(|n| *n != "newcomer")
            .map(|n| shard_of(n, 4))
            .collect();
        assert_eq!(before, after);
    }

    #[test]
    fn adding_a_shard_moves_only_nodes_into_the_new_shard() {
        for name in names(400) {
            let (old, new) = (shard_of(&name, 3), shard_of(&name, 4));
            assert!(new == old || new == 4, "{name} moved {old} -> {new}");
        }
    }

    #[test]
    fn shards_are_balanced() {
        let mut counts = [0usize; 4];
        for name in names(4000) {
            counts[shard_of(&name, 4) as usize - 1] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "unbalanced: {counts:?}");
        }
    }

    #[test]
    fn the_split_is_pinned_across_versions_and_machines() {
        // sha256 of (be u32 shard, 0, name): fixed forever, so CI jobs on different machines
        // and cinch versions agree on who does which node.
        let got: Vec<u32> = ["web1", "web2", "db1", "db2", "cache1"]
            .iter()
            .map(|n| shard_of(n, 3))
            .collect();
        assert_eq!(got, PINNED);
    }
    const PINNED: [u32; 5] = [1, 3, 1, 2, 2];

    #[test]
    fn bad_shard_specs_are_refused_with_the_expected_form() {
        for bad in ["0/3", "4/3", "1/0", "1", "a/b", "1/2/3", ""] {
            let e = Shard::parse(bad).unwrap_err().to_string();
            assert!(e.contains("I/N"), "{bad}: {e}");
        }
        assert_eq!(Shard::parse("2/4").unwrap(), Shard { index: 2, count: 4 });
    }
}
