//! Redis key names of the rate-limit store.
//!
//! A rate-limit key (a tenant id, `tenant/model`, `provider/model`, a header value: anything a
//! client may influence) becomes one hash tag, `{...}`, shared by the three Redis keys of that
//! rate-limit key, so that one script touches one cluster slot. The tag is the key itself with
//! every byte outside `[A-Za-z0-9._/-]` percent-encoded (`%7B` for `{`), which keeps it readable
//! and injective: no key can close the tag, add a `:` segment or equal another key's tag. A key
//! whose encoding is longer than [`MAX_PLAIN`] bytes is replaced by `~` and its BLAKE3 hash (hex),
//! and the empty key is `~` alone (an empty tag, `{}`, would not be a hash tag at all); `~` is
//! always encoded in plain tags, so the three forms never meet.

use std::fmt::Write as _;

/// The longest encoded key kept readable; longer ones are hashed.
pub const MAX_PLAIN: usize = 96;

/// The hash-tag content for a rate-limit key (without the braces).
pub fn tag(key: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-');
    let encoded_len: usize = key.bytes().map(|b| if plain(b) { 1 } else { 3 }).sum();
    if key.is_empty() {
        return "~".to_owned();
    }
    if encoded_len > MAX_PLAIN {
        let mut out = String::with_capacity(65);
        out.push('~');
        for b in blake3::hash(key.as_bytes()).as_bytes() {
            let _ = write!(out, "{b:02x}");
        }
        return out;
    }
    let mut out = String::with_capacity(encoded_len);
    for b in key.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The three keys of one rate-limit key: buckets (hash), slots (sorted set), records (sorted
/// set), under `base` (`<prefix>:v1:rl`).
pub fn keys(base: &str, key: &str) -> [String; 3] {
    let head = format!("{base}:{{{}}}", tag(key));
    [
        format!("{head}:b"),
        format!("{head}:c"),
        format!("{head}:r"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The key back from a plain tag.
    fn decode(tag: &str) -> Option<Vec<u8>> {
        let b = tag.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        Some(out)
    }

    proptest! {
        #[test]
        fn tags_are_injective_and_never_leave_the_braces(key in ".{0,120}") {
            let t = tag(&key);
            prop_assert!(!t.is_empty());
            let clean = !t.contains(['{', '}', ':', ' ', '\n']);
            prop_assert!(clean, "tag {:?}", t);
            if let Some(hashed) = t.strip_prefix('~') {
                prop_assert!(key.is_empty() || hashed.len() == 64);
            } else {
                prop_assert_eq!(decode(&t).unwrap(), key.as_bytes());
            }
            let [b, c, r] = keys("p:v1:rl", &key);
            let inner = |k: &str| k[k.find('{').unwrap() + 1..k.find('}').unwrap()].to_owned();
            prop_assert_eq!(inner(&b), t.clone());
            prop_assert_eq!(inner(&c), t.clone());
            prop_assert_eq!(inner(&r), t);
        }
    }

    #[test]
    fn plain_keys_stay_readable() {
        assert_eq!(tag("acme"), "acme");
        assert_eq!(tag("acme/gpt-4.1"), "acme/gpt-4.1");
        assert_eq!(tag("openai/gpt-4.1_x"), "openai/gpt-4.1_x");
    }

    #[test]
    fn special_bytes_are_encoded() {
        assert_eq!(tag("a}:x"), "a%7D%3Ax");
        assert_eq!(tag("{b}"), "%7Bb%7D");
        assert_eq!(tag("%41"), "%2541");
        assert_eq!(tag("~x"), "%7Ex");
        assert_eq!(tag(""), "~");
        assert_eq!(tag("é"), "%C3%A9");
        let [b, c, r] = keys("rampart:v1:rl", "a}:x");
        assert_eq!(b, "rampart:v1:rl:{a%7D%3Ax}:b");
        assert_eq!(c, "rampart:v1:rl:{a%7D%3Ax}:c");
        assert_eq!(r, "rampart:v1:rl:{a%7D%3Ax}:r");
    }

    #[test]
    fn long_keys_are_hashed() {
        let long = "x".repeat(MAX_PLAIN + 1);
        let t = tag(&long);
        assert!(t.starts_with('~'));
        assert_eq!(t.len(), 65);
        assert_ne!(t, tag(&"x".repeat(MAX_PLAIN + 2)));
        assert_eq!(tag(&"x".repeat(MAX_PLAIN)), "x".repeat(MAX_PLAIN));
    }
}
