//! Cache keys: the canonical form of a request and its blake3 hash.
//!
//! The canonical form is one JSON object of every top-level member that can change the answer,
//! written so that spelling does not matter:
//!
//! - members and object keys are sorted (byte order of the unescaped key; duplicate keys keep
//!   their order);
//! - no whitespace;
//! - strings are re-escaped one way (`"\u00e9"` and `"é"` are the same string);
//! - numbers are normalised: an integer-valued number is written as an integer (`0`, `0.0`,
//!   `-0.0` → `0`; `1e2`, `100.0` → `100`) when it lies in `-2^63 .. 2^64`; any other number is
//!   read as an `f64` and written in its shortest round-trip form (`0.50` → `0.5`, `1E-3` →
//!   `0.001`). Two spellings of one `f64` give one key; JSON numbers no `f64` can tell apart
//!   (beyond 17 significant digits) share a key.
//!
//! Left out: `stream` and `stream_options` (transport: the answer is the same, only its shape
//! differs, and the cache replays either shape) and the configured ignored fields (default
//! [`DEFAULT_IGNORED_FIELDS`](crate::config::DEFAULT_IGNORED_FIELDS): `user`,
//! `safety_identifier`, `metadata`, `store`, `prompt_cache_key`). Everything else is in —
//! `model`, `messages` (every content part), `tools`, `tool_choice`, `response_format`,
//! sampling parameters, `seed`, `stop`, `max_tokens`, `n`, `logprobs` and any member the gateway
//! does not know. When a [`Target`](rampart_core::Target) extension is already on the request
//! (a router above the cache), its provider and model are part of the key too.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use rampart_core::{ChatRequest, Target};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Members that never enter the key.
pub const TRANSPORT_FIELDS: &[&str] = &["stream", "stream_options"];

/// The key of an entry: its namespace (tenant id or the shared namespace) and the blake3 hash
/// of the canonical request.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    namespace: std::sync::Arc<str>,
    hash: [u8; 32],
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({}/{})", self.namespace, self.hex())
    }
}

impl CacheKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<std::sync::Arc<str>>, hash: [u8; 32]) -> Self {
        Self {
            namespace: namespace.into(),
            hash,
        }
    }
    /// The namespace (tenant id or the shared namespace).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    /// The blake3 hash of the canonical request.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }
    /// The hash as 64 hex characters (for logs and external stores).
    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.hash).to_hex().to_string()
    }
}

/// Why a request has no key (it is then not cached).
#[derive(Debug, thiserror::Error)]
#[error("the request cannot be canonicalised: {0}")]
pub struct KeyError(String);

/// A request in canonical form, with its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    bytes: Bytes,
    hash: [u8; 32],
}

impl Canonical {
    /// The canonical bytes (stored with the entry and compared on every hit).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    /// Their blake3 hash.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }
    /// The key of this request in `namespace`.
    pub fn key(&self, namespace: impl Into<std::sync::Arc<str>>) -> CacheKey {
        CacheKey::new(namespace, self.hash)
    }

    /// Folds request inputs that are not in the body but change which model answers (the
    /// routing hint headers) into the canonical form and the hash. Pairs with an empty value are
    /// skipped; with none left the canonical form is unchanged.
    pub fn with_context(self, context: &[(&str, &str)]) -> Self {
        let present: Vec<&(&str, &str)> = context.iter().filter(|(_, v)| !v.is_empty()).collect();
        if present.is_empty() {
            return self;
        }
        let mut out = self.bytes.to_vec();
        for (name, value) in present {
            // After the object and its target line: cannot collide with any member.
            out.push(b'\n');
            write_str(&mut out, name);
            out.push(b'=');
            write_str(&mut out, value.trim());
        }
        let hash = *blake3::hash(&out).as_bytes();
        Canonical {
            bytes: Bytes::from(out),
            hash,
        }
    }
}

/// Which members stay out of the key.
#[derive(Debug, Clone)]
pub struct KeyRules {
    ignored: Vec<Box<str>>,
}

impl Default for KeyRules {
    fn default() -> Self {
        Self::new(crate::config::DEFAULT_IGNORED_FIELDS.iter().copied())
    }
}

impl KeyRules {
    /// Leaves `ignored` (plus the transport fields) out of the key.
    pub fn new<'a>(ignored: impl IntoIterator<Item = &'a str>) -> Self {
        let mut ignored: Vec<Box<str>> = ignored
            .into_iter()
            .chain(TRANSPORT_FIELDS.iter().copied())
            .map(Box::from)
            .collect();
        ignored.sort();
        ignored.dedup();
        Self { ignored }
    }

    fn ignores(&self, key: &str) -> bool {
        self.ignored.iter().any(|k| &**k == key)
    }

    /// The canonical form of `chat` (and of `target`, when a router above already chose one).
    pub fn canonicalize(
        &self,
        chat: &ChatRequest,
        target: Option<&Target>,
    ) -> Result<Canonical, KeyError> {
        let mut members: Vec<(&str, &[u8])> =
            chat.members().filter(|(k, _)| !self.ignores(k)).collect();
        members.sort_by(|a, b| a.0.cmp(b.0));
        let cap = members
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
            + 64;
        let mut out = Vec::with_capacity(cap);
        out.push(b'{');
        for (i, (k, v)) in members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(&mut out, k);
            out.push(b':');
            canonical_value(v, &mut out)?;
        }
        out.push(b'}');
        if let Some(t) = target {
            // After the object: cannot collide with any member.
            out.push(b'\n');
            write_str(&mut out, &t.provider);
            out.push(b'/');
            write_str(&mut out, &t.model);
        }
        let hash = *blake3::hash(&out).as_bytes();
        Ok(Canonical {
            bytes: Bytes::from(out),
            hash,
        })
    }
}

/// The canonical form of one JSON value (see the module docs), appended to `out`.
pub fn canonical_value(json: &[u8], out: &mut Vec<u8>) -> Result<(), KeyError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    Canon(out)
        .deserialize(&mut de)
        .map_err(|e| KeyError(e.to_string()))?;
    de.end().map_err(|e| KeyError(e.to_string()))
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// 2^63 and 2^64 as f64 (exact).
const TWO_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_64: f64 = 18_446_744_073_709_551_616.0;

fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.fract() == 0.0 && (-TWO_63..TWO_64).contains(&v) {
        // Integer-valued and in range: the conversion is exact.
        if v < 0.0 {
            let _ = serde_json::to_writer(&mut *out, &(v as i64));
        } else {
            let _ = serde_json::to_writer(&mut *out, &(v as u64));
        }
    } else {
        let _ = serde_json::to_writer(&mut *out, &v);
    }
}

struct Canon<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Canon<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// An object key that borrows from the input when it has no escapes.
struct StrKey<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for StrKey<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrKey<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StrKey(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrKey(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Visitor<'de> for Canon<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        let _ = serde_json::to_writer(&mut *self.0, &v);
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let _ = serde_json::to_writer(&mut *self.0, &v);
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        write_f64(self.0, v);
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        write_str(self.0, v);
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push(b'[');
        let mut first = true;
        loop {
            if !first {
                out.push(b',');
            }
            let len = out.len();
            if seq.next_element_seed(Canon(out))?.is_none() {
                // Nothing was written for the end; drop the separator.
                out.truncate(len);
                if !first {
                    out.pop();
                }
                break;
            }
            first = false;
        }
        out.push(b']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Values go to one scratch buffer; entries are sorted by key, then copied out.
        let mut scratch = Vec::new();
        let mut entries: Vec<(StrKey<'de>, usize, usize)> = Vec::new();
        while let Some(k) = map.next_key::<StrKey<'de>>()? {
            let start = scratch.len();
            map.next_value_seed(Canon(&mut scratch))?;
            entries.push((k, start, scratch.len()));
        }
        entries.sort_by(|a, b| a.0.0.cmp(&b.0.0));
        let out = self.0;
        out.push(b'{');
        for (i, (k, start, end)) in entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, &k.0);
            out.push(b':');
            out.extend_from_slice(&scratch[*start..*end]);
        }
        out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        let mut out = Vec::new();
        canonical_value(s.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values() {
        assert_eq!(
            canon(r#" { "b" : [1, 2.0, 1e2, -0.0, 0.5e0], "a":"\u00e9" } "#),
            r#"{"a":"é","b":[1,2,100,0,0.5]}"#
        );
        assert_eq!(canon("[]"), "[]");
        assert_eq!(canon("{}"), "{}");
        assert_eq!(canon("[[],[{}]]"), "[[],[{}]]");
        assert_eq!(canon("1E-3"), "0.001");
        assert_eq!(canon("-5"), "-5");
        assert_eq!(canon("-5.0"), "-5");
        assert_eq!(canon("18446744073709551615"), "18446744073709551615");
        assert_eq!(canon("1e30"), "1e+30");
        assert_eq!(canon("1000000000000000000000000000000"), "1e+30");
        assert_eq!(canon("null"), "null");
        assert!(canonical_value(b"[1,", &mut Vec::new()).is_err());
        assert!(canonical_value(b"1 2", &mut Vec::new()).is_err());
    }
}
