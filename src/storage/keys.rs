//! Redis Cluster key slots: which part of a key Redis hashes (its hash tag) and the slot that gives.
//!
//! A Redis Cluster splits the key space into 16384 slots, each served by one node, and refuses a command whose keys
//! lie in different slots (`CROSSSLOT`). A key's slot is CRC16 of the key modulo 16384 — or, when the key holds a
//! non-empty `{…}`, of only what is between the first `{` and the first `}` after it (its hash tag). Keys that must
//! be handled together therefore share a tag: every cached part of a customer is tagged `{tenant:customer}`
//! (`profiles::cache`), so the delete of one customer's keys is one command on one node, and the installation
//! prefix before it holds no braces (`Config::check`), so it never becomes the tag itself.

/// Slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// What Redis hashes for `key`: its hash tag when it has a non-empty one, otherwise the whole key.
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The cluster slot of `key` (as `CLUSTER KEYSLOT` answers).
pub fn slot(key: &str) -> u16 {
    crc16_xmodem(hash_tag(key).as_bytes()) % SLOTS
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster hashes keys with.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_those_redis_computes() {
        // The check value of CRC-16/XMODEM, and slots from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("somekey"), 11058);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
    }

    #[test]
    fn the_tag_is_the_first_non_empty_braces() {
        assert_eq!(hash_tag("kontakt:cache:{acme:0190}:identities"), "acme:0190");
        assert_eq!(hash_tag("foo{bar}{zap}"), "bar");
        assert_eq!(hash_tag("foo{{bar}}zap"), "{bar");
        // An empty or unclosed tag: the whole key is hashed.
        assert_eq!(hash_tag("foo{}{bar}"), "foo{}{bar}");
        assert_eq!(hash_tag("foo{bar"), "foo{bar");
        assert_eq!(
            slot("kontakt:cache:{acme:0190}:identities"),
            slot("other-prefix:cache:{acme:0190}:recent"),
            "a customer's keys share a slot whatever the prefix"
        );
    }
}
