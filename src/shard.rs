//! Sharding of `flotilla run`: which clusters one replica owns, and the names that keep the
//! shards apart (notes refs, leases). Pure: no I/O; the pod name and hostname are passed in.
//!
//! A cluster belongs to shard `fnv1a64(name) % shards`. FNV-1a 64 is fixed by its definition
//! (offset basis 0xcbf29ce484222325, prime 0x100000001b3, over the UTF-8 bytes of the name), so
//! every replica and every release agrees on the owner; Rust's `DefaultHasher` does not promise
//! that and must never be used here.

/// Errors of shard settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// `--shards 0`.
    #[error("--shards must be at least 1")]
    NoShards,
    /// `--shard-index` outside `0..shards`.
    #[error("--shard-index {index} is out of range for --shards {count} (0..{count})")]
    OutOfRange {
        /// The index asked for.
        index: u32,
        /// The number of shards.
        count: u32,
    },
    /// No `--shard-index` and no ordinal in POD_NAME or the hostname.
    #[error(
        "--shards {count} needs a shard index: give --shard-index (FLOTILLA_SHARD_INDEX) or run as a StatefulSet pod whose POD_NAME or hostname ends in -N (POD_NAME {pod:?}, hostname {host:?})"
    )]
    NoOrdinal {
        /// The number of shards.
        count: u32,
        /// POD_NAME as found.
        pod: Option<String>,
        /// The hostname as found.
        host: Option<String>,
    },
}

/// One replica's slice of the fleet: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This replica's shard, `0..count`.
    pub index: u32,
    /// How many shards the fleet is split into (1: no sharding).
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::SINGLE
    }
}

impl Shard {
    /// No sharding: one replica owns every cluster and writes the plain notes refs.
    pub const SINGLE: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`, checked.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        if index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// The shard of `count` given by `--shard-index`, else the StatefulSet ordinal of the pod
    /// name, else of the hostname. With one shard the index is always 0.
    pub fn resolve(
        count: u32,
        explicit: Option<u32>,
        pod_name: Option<&str>,
        hostname: Option<&str>,
    ) -> Result<Shard, ShardError> {
        if count == 1 && explicit.is_none() {
            return Ok(Shard::SINGLE);
        }
        let index = explicit
            .or_else(|| pod_name.and_then(ordinal))
            .or_else(|| hostname.and_then(ordinal))
            .ok_or_else(|| ShardError::NoOrdinal {
                count,
                pod: pod_name.map(str::to_string),
                host: hostname.map(str::to_string),
            })?;
        Shard::new(index, count)
    }

    /// Whether there is more than one shard.
    pub fn sharded(&self) -> bool {
        self.count > 1
    }

    /// Whether this shard syncs `cluster`.
    pub fn owns(&self, cluster: &str) -> bool {
        shard_of(cluster, self.count) == self.index
    }

    /// The human notes ref of this shard: `<base>` unsharded, else `<base>/shard-<i>`.
    pub fn notes_ref(&self, base: &str) -> String {
        if self.sharded() {
            format!("{base}/shard-{}", self.index)
        } else {
            base.to_string()
        }
    }

    /// The state notes ref of this shard: `<notes_ref>-state`.
    pub fn state_ref(&self, base: &str) -> String {
        format!("{}-state", self.notes_ref(base))
    }

    /// The Lease of this shard: `<name>` unsharded, else `<name>-shard-<i>` (so each shard
    /// elects its own leader).
    pub fn lease_name(&self, base: &str) -> String {
        if self.sharded() {
            format!("{base}-shard-{}", self.index)
        } else {
            base.to_string()
        }
    }
}

/// FNV-1a, 64 bits, of `bytes`: the documented, release-independent hash of cluster names.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The shard of `count` that owns `cluster`.
pub fn shard_of(cluster: &str, count: u32) -> u32 {
    let count = u64::from(count.max(1));
    // The remainder is below `count`, which came from a u32.
    u32::try_from(fnv1a64(cluster.as_bytes()) % count).unwrap_or(0)
}

/// The StatefulSet ordinal of a pod name or hostname: the digits after its last `-`
/// (`flotilla-2` → 2); `None` when there are none.
pub fn ordinal(name: &str) -> Option<u32> {
    let name = name.trim();
    // A hostname may be fully qualified: the pod's name is its first label.
    let name = name.split('.').next().unwrap_or(name);
    let (_, digits) = name.rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The shard index of a state notes ref under `base` (`<base>/shard-<i>-state` → i); `None`
/// for any other ref. `flotilla status` and `flotilla plan` use it to find every shard's notes.
pub fn state_ref_shard(base: &str, notes_ref: &str) -> Option<u32> {
    let rest = notes_ref.strip_prefix(base)?.strip_prefix("/shard-")?;
    let digits = rest.strip_suffix("-state")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_has_the_published_values() {
        // Test vectors of the FNV reference (draft-eastlake-fnv): a change of hash fails here.
        for (input, expected) in [
            ("", 0xcbf2_9ce4_8422_2325_u64),
            ("a", 0xaf63_dc4c_8601_ec8c),
            ("foobar", 0x8594_4171_f739_67e8),
        ] {
            assert_eq!(fnv1a64(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn shard_of_is_pinned() {
        // Fixed owners: a change of hash would move clusters between shards on an upgrade, so
        // these values (computed independently from the FNV-1a definition) are pinned.
        assert_eq!(fnv1a64(b"c1"), 0x08a2_7f07_b54a_6859);
        assert_eq!(fnv1a64(b"prod-eu-1"), 0xb442_1d04_9b11_ffd3);
        let of = |count| {
            (0..6)
                .map(|i| shard_of(&format!("c{i}"), count))
                .collect::<Vec<_>>()
        };
        assert_eq!(of(2), [0, 1, 0, 1, 0, 1]);
        assert_eq!(of(3), [1, 2, 2, 0, 2, 0]);
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(
            shard_of("anything", 0),
            0,
            "0 is treated as 1, never a panic"
        );
    }

    #[test]
    fn ordinals() {
        for (name, expected) in [
            ("flotilla-2", Some(2)),
            ("web-10", Some(10)),
            ("flotilla-0", Some(0)),
            ("flotilla-0.flotilla.flotilla-system.svc", Some(0)),
            ("flotilla", None),
            ("flotilla-", None),
            ("flotilla-x1", None),
            ("my-app-7f9c-2", Some(2)),
            ("", None),
            ("-3", Some(3)),
        ] {
            assert_eq!(ordinal(name), expected, "{name:?}");
        }
    }

    #[test]
    fn resolve_index() {
        let pod = Some("flotilla-1");
        let host = Some("node-7");
        assert_eq!(Shard::resolve(1, None, None, None), Ok(Shard::SINGLE));
        assert_eq!(
            Shard::resolve(3, Some(2), pod, host),
            Ok(Shard { index: 2, count: 3 })
        );
        assert_eq!(
            Shard::resolve(3, None, pod, host),
            Ok(Shard { index: 1, count: 3 })
        );
        assert_eq!(
            Shard::resolve(8, None, Some("flotilla"), host),
            Ok(Shard { index: 7, count: 8 })
        );
        assert_eq!(
            Shard::resolve(2, None, pod, None),
            Ok(Shard { index: 1, count: 2 })
        );
        assert_eq!(
            Shard::resolve(2, None, Some("flotilla-5"), None),
            Err(ShardError::OutOfRange { index: 5, count: 2 })
        );
        let err = Shard::resolve(2, None, Some("flotilla"), Some("laptop"));
        assert!(
            matches!(err, Err(ShardError::NoOrdinal { count: 2, .. })),
            "{err:?}"
        );
        assert_eq!(Shard::new(0, 0), Err(ShardError::NoShards));
    }

    #[test]
    fn refs_and_leases() {
        let single = Shard::SINGLE;
        assert_eq!(
            single.notes_ref("refs/notes/flotilla"),
            "refs/notes/flotilla"
        );
        assert_eq!(
            single.state_ref("refs/notes/flotilla"),
            "refs/notes/flotilla-state"
        );
        assert_eq!(single.lease_name("flotilla"), "flotilla");
        let s = Shard { index: 1, count: 2 };
        assert_eq!(
            s.notes_ref("refs/notes/flotilla"),
            "refs/notes/flotilla/shard-1"
        );
        assert_eq!(
            s.state_ref("refs/notes/flotilla"),
            "refs/notes/flotilla/shard-1-state"
        );
        assert_eq!(s.lease_name("flotilla"), "flotilla-shard-1");
        for (r, expected) in [
            ("refs/notes/flotilla/shard-1-state", Some(1)),
            ("refs/notes/flotilla/shard-12-state", Some(12)),
            ("refs/notes/flotilla/shard-1", None),
            ("refs/notes/flotilla-state", None),
            ("refs/notes/flotilla/shard--state", None),
            ("refs/notes/other/shard-1-state", None),
        ] {
            assert_eq!(state_ref_shard("refs/notes/flotilla", r), expected, "{r}");
        }
    }

    #[test]
    fn every_cluster_has_exactly_one_owner() {
        for count in 1..5 {
            for i in 0..50 {
                let name = format!("cluster-{i}");
                let owners = (0..count)
                    .filter(|index| Shard::new(*index, count).expect("valid").owns(&name))
                    .count();
                assert_eq!(owners, 1, "{name} over {count}");
            }
        }
    }
}
