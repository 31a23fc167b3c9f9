//! Key canonicalisation properties: reordered keys, number spellings and whitespace give one
//! key; any change to an output-affecting field gives another; transport and ignored fields do
//! not matter.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use proptest::prelude::*;
use rampart_cache::KeyRules;
use rampart_core::{ChatRequest, Target};
use serde_json::{Map, Value, json};

/// JSON values whose numbers every spelling below parses to the same `f64`: integers below
/// 2^40 and decimals with up to 6 fraction digits, so that every spelled mantissa stays below
/// 2^53 (serde_json without `float_roundtrip` is exact only there).
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-(1i64 << 40)..(1i64 << 40)).prop_map(Value::from),
        ((-1_000_000i64..1_000_000), 1u32..7)
            .prop_map(|(m, k)| json!(m as f64 / 10f64.powi(k as i32))),
        "[a-zA-Z0-9 é\"\\\\\n\u{1F600}]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A tiny deterministic generator for spelling choices.
struct Dice(u64);
impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
    fn ws(&mut self, out: &mut String) {
        for _ in 0..self.roll(3) {
            out.push([' ', '\n', '\t', '\r'][self.roll(4) as usize]);
        }
    }
}

/// Writes `v` with shuffled keys, random whitespace and random number and string spellings.
fn spell(v: &Value, d: &mut Dice, out: &mut String) {
    d.ws(out);
    match v {
        Value::Null | Value::Bool(_) => out.push_str(&v.to_string()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                match d.roll(4) {
                    0 => out.push_str(&format!("{i}")),
                    1 => out.push_str(&format!("{i}.0")),
                    2 => out.push_str(&format!("{i}e0")),
                    _ => out.push_str(&format!("{i}.00E+0")),
                }
            } else {
                let f = n.as_f64().unwrap();
                match d.roll(3) {
                    0 => out.push_str(&format!("{f}")),
                    1 => out.push_str(&format!("{f:e}")),
                    _ => out.push_str(&format!("{f:E}")),
                }
            }
        }
        Value::String(s) => {
            if d.roll(2) == 0 {
                out.push_str(&serde_json::to_string(s).unwrap());
            } else {
                // Escape every non-ASCII character as \u.
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
                        c => {
                            let mut buf = [0u16; 2];
                            for u in c.encode_utf16(&mut buf) {
                                out.push_str(&format!("\\u{u:04x}"));
                            }
                        }
                    }
                }
                out.push('"');
            }
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                spell(item, d, out);
            }
            d.ws(out);
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // Shuffle.
            for i in (1..entries.len()).rev() {
                let j = d.roll(i as u64 + 1) as usize;
                entries.swap(i, j);
            }
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                d.ws(out);
                out.push_str(&serde_json::to_string(k).unwrap());
                d.ws(out);
                out.push(':');
                spell(v, d, out);
            }
            d.ws(out);
            out.push('}');
        }
    }
    d.ws(out);
}

fn request(extra: &Value, prompt: &str) -> Value {
    let mut v = json!({
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        "temperature": 0,
    });
    if let Value::Object(m) = extra {
        for (k, x) in m {
            if ![
                "model",
                "messages",
                "temperature",
                "stream",
                "stream_options",
            ]
            .contains(&k.as_str())
            {
                v[k] = x.clone();
            }
        }
    }
    v
}

fn key_of(text: &str) -> ([u8; 32], Bytes) {
    let chat = ChatRequest::parse(Bytes::from(text.to_owned())).unwrap();
    let c = KeyRules::default().canonicalize(&chat, None).unwrap();
    (*c.hash(), c.bytes().clone())
}

fn typed_ok(v: &Value) -> bool {
    // Members the core types strictly must keep their types for the request to parse.
    ChatRequest::parse(Bytes::from(v.to_string())).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn spelling_does_not_change_the_key(
        extra in prop::collection::btree_map("[a-z_]{1,8}", value(), 0..4),
        prompt in ".{0,40}",
        seed in 1u64..u64::MAX,
    ) {
        let v = request(&Value::Object(extra.into_iter().collect()), &prompt);
        prop_assume!(typed_ok(&v));
        let plain = v.to_string();
        let mut spelled = String::new();
        spell(&v, &mut Dice(seed), &mut spelled);
        let (a, ca) = key_of(&plain);
        prop_assert!(ChatRequest::parse(Bytes::from(spelled.clone())).is_ok(), "{}", spelled);
        let (b, cb) = key_of(&spelled);
        prop_assert_eq!(a, b, "{}\n{}", plain, spelled);
        prop_assert_eq!(ca, cb);
    }

    #[test]
    fn any_change_changes_the_key(
        extra in prop::collection::btree_map("[a-z_]{1,8}", value(), 0..4),
        prompt in ".{0,40}",
        field in "[a-z]{1,8}",
        x in value(),
        which in 0u8..5,
    ) {
        let v = request(&Value::Object(extra.into_iter().collect()), &prompt);
        prop_assume!(typed_ok(&v));
        let mut w = v.clone();
        match which {
            0 => w["model"] = json!("gpt-4.1-mini"),
            1 => w["messages"][0]["content"][0]["text"] = json!(format!("{prompt}!")),
            2 => w["temperature"] = json!(0.5),
            3 => {
                // A new or changed member (unknown fields count).
                prop_assume!(!["user", "safety_identifier", "metadata", "store", "prompt_cache_key"].contains(&field.as_str()));
                prop_assume!(w.get(&field) != Some(&x));
                w[field.as_str()] = x.clone();
            }
            _ => w["messages"].as_array_mut().unwrap().push(json!({"role": "assistant", "content": "ok"})),
        }
        prop_assume!(typed_ok(&w));
        prop_assume!(!same_numbers(&v, &w));
        prop_assert_ne!(key_of(&v.to_string()).0, key_of(&w.to_string()).0);
    }

    #[test]
    fn transport_and_ignored_fields_do_not_matter(
        prompt in ".{0,40}",
        stream in any::<bool>(),
        usage in any::<bool>(),
        user in "[a-z0-9-]{1,12}",
    ) {
        let v = request(&json!({}), &prompt);
        let mut w = v.clone();
        w["stream"] = json!(stream);
        w["stream_options"] = json!({"include_usage": usage});
        w["user"] = json!(user);
        w["metadata"] = json!({"trace": user});
        prop_assert_eq!(key_of(&v.to_string()).0, key_of(&w.to_string()).0);
    }
}

/// Whether `a` and `b` differ only in how equal numbers are represented (e.g. `1` vs `1.0`),
/// which the key must not tell apart.
fn same_numbers(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_numbers(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_numbers(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn a_target_chosen_above_is_part_of_the_key() {
    let chat = ChatRequest::parse(Bytes::from(request(&json!({}), "x").to_string())).unwrap();
    let rules = KeyRules::default();
    let none = rules.canonicalize(&chat, None).unwrap();
    let a = rules
        .canonicalize(&chat, Some(&Target::new("p1", "m")))
        .unwrap();
    let b = rules
        .canonicalize(&chat, Some(&Target::new("p2", "m")))
        .unwrap();
    assert_ne!(none.hash(), a.hash());
    assert_ne!(a.hash(), b.hash());
}

#[test]
fn documented_examples() {
    let a = key_of(
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"top_p":1,"stop":["a","b"]}"#,
    );
    let b = key_of(
        r#"{"stop":["a","b"],"top_p":1.0,"temperature":0.0,"messages":[{"content":"hi","role":"user"}],"model":"m","stream":true}"#,
    );
    assert_eq!(a, b);
    assert_eq!(
        std::str::from_utf8(&a.1).unwrap(),
        r#"{"messages":[{"content":"hi","role":"user"}],"model":"m","stop":["a","b"],"temperature":0,"top_p":1}"#
    );
    // Order inside an array matters.
    let c = key_of(
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"top_p":1,"stop":["b","a"]}"#,
    );
    assert_ne!(a.0, c.0);
}
