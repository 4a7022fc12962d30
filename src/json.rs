//! JSON in and out of the dynamic MessagePack [`Value`], for the CLI and
//! for users who hold JSON.
//!
//! JSON has no bytes or ext types, so those map to tagged objects:
//! `{"$bytes": "<base64>"}`, `{"$dead": reason}`, `{"$context": [id, name]}`,
//! `{"$sender": [context, handle]}`, and a CallError as
//! `{"$error": {"type": .., "message": .., "traceback": ..}}`.

use base64::Engine;
use econtext_wire::ext::{self, CallError, ContextRef, Dead, SenderRef};
use econtext_wire::{payload, Value};
use serde_json::{json, Map, Value as Json};

/// Converts JSON to a MessagePack value (numbers keep integer-ness).
pub fn from_json(j: &Json) -> Value {
    match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        Json::Object(o) => {
            if let (1, Some(Json::String(b))) = (o.len(), o.get("$bytes")) {
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b) {
                    return Value::Binary(bytes);
                }
            }
            Value::Map(
                o.iter()
                    .map(|(k, v)| (Value::from(k.as_str()), from_json(v)))
                    .collect(),
            )
        }
    }
}

/// Converts a MessagePack value to JSON.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => json!(u),
            (_, Some(s)) => json!(s),
            _ => Json::Null,
        },
        Value::F32(f) => json!(f),
        Value::F64(f) => json!(f),
        Value::String(s) => match s.as_str() {
            Some(t) => Json::String(t.to_string()),
            None => {
                json!({"$bytes": base64::engine::general_purpose::STANDARD.encode(s.as_bytes())})
            }
        },
        Value::Binary(b) => json!({"$bytes": base64::engine::general_purpose::STANDARD.encode(b)}),
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => {
            let mut o = Map::new();
            for (k, v) in m {
                let key = match k {
                    Value::String(s) => s.as_str().unwrap_or("").to_string(),
                    other => to_json(other).to_string(),
                };
                o.insert(key, to_json(v));
            }
            Json::Object(o)
        }
        Value::Ext(code, data) => ext_to_json(*code, data),
    }
}

/// A MessagePack value seen as the JSON [`to_json`] makes, serialized
/// straight from the value: printing a large reply builds no second tree
/// (`serde_json::to_writer(out, &JsonView(&v))`).
pub struct JsonView<'a>(pub &'a Value);

impl serde::Serialize for JsonView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        let bytes = |s: S, b: &[u8]| {
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry(
                "$bytes",
                &base64::engine::general_purpose::STANDARD.encode(b),
            )?;
            m.end()
        };
        match self.0 {
            Value::Nil => s.serialize_unit(),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
                (Some(u), _) => s.serialize_u64(u),
                (_, Some(v)) => s.serialize_i64(v),
                _ => s.serialize_unit(),
            },
            Value::F32(f) => s.serialize_f32(*f),
            Value::F64(f) => s.serialize_f64(*f),
            Value::String(t) => match t.as_str() {
                Some(t) => s.serialize_str(t),
                None => bytes(s, t.as_bytes()),
            },
            Value::Binary(b) => bytes(s, b),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&JsonView(v))?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let entries = json_object_order(
                    m.iter()
                        .map(|(k, v)| {
                            let key = match k {
                                Value::String(t) => t.as_str().unwrap_or("").to_string(),
                                other => to_json(other).to_string(),
                            };
                            (key, v)
                        })
                        .collect(),
                );
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (key, v) in entries {
                    map.serialize_entry(&key, &JsonView(v))?;
                }
                map.end()
            }
            Value::Ext(code, data) => ext_to_json(*code, data).serialize(s),
        }
    }
}

/// A map's entries in the order a JSON object of [`to_json`] has them:
/// sorted by key, a repeated key keeping its last value.
fn json_object_order<K: Ord, V>(mut entries: Vec<(K, V)>) -> Vec<(K, V)> {
    entries.reverse();
    entries.sort_by(|a, b| a.0.cmp(&b.0)); // stable: the last one first
    entries.dedup_by(|later, first| later.0 == first.0);
    entries
}

/// One encoded MessagePack value seen as the JSON [`to_json`] makes,
/// serialized straight from its bytes: no tree of any kind, so printing a
/// reply costs its bytes and a write buffer (`serde_json::to_writer(out,
/// &EncodedView::new(&data)?)`). Strings are borrowed, bytes are base64
/// encoded as they are written.
pub struct EncodedView<'a>(&'a [u8]);

impl<'a> EncodedView<'a> {
    /// Views `data` once it is proved one complete value, within the
    /// decoders' depth and value limits.
    pub fn new(data: &'a [u8]) -> Result<Self, econtext_wire::WireError> {
        payload::check_structure(data)?;
        Ok(EncodedView(data))
    }
}

impl serde::Serialize for EncodedView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Next(&Cursor(std::cell::Cell::new(self.0))).serialize(s)
    }
}

/// What is left of checked bytes; each [`Next`] takes one value off it.
struct Cursor<'a>(std::cell::Cell<&'a [u8]>);

/// One value's header (and a scalar's payload), read off a [`Cursor`].
enum Item<'a> {
    Nil,
    Bool(bool),
    Uint(u64),
    Int(i64),
    F32(f32),
    F64(f64),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    Array(u64),
    Map(u64),
    Ext(i8, &'a [u8]),
}

impl<'a> Cursor<'a> {
    fn take(&self, n: usize) -> Result<&'a [u8], &'static str> {
        let d = self.0.get();
        if d.len() < n {
            return Err("value ends early");
        }
        let (head, rest) = d.split_at(n);
        self.0.set(rest);
        Ok(head)
    }

    fn uint(&self, n: usize) -> Result<u64, &'static str> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    }

    fn sized(&self, len_bytes: usize) -> Result<&'a [u8], &'static str> {
        let n = self.uint(len_bytes)?;
        self.take(usize::try_from(n).map_err(|_| "length too large")?)
    }

    fn ext(&self, len: usize) -> Result<Item<'a>, &'static str> {
        let code = self.take(1)?[0] as i8;
        Ok(Item::Ext(code, self.take(len)?))
    }

    fn item(&self) -> Result<Item<'a>, &'static str> {
        use rmp::Marker as M;
        let be = |b: &[u8]| b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x));
        Ok(match M::from_u8(self.take(1)?[0]) {
            M::Null => Item::Nil,
            M::True => Item::Bool(true),
            M::False => Item::Bool(false),
            M::FixPos(n) => Item::Uint(u64::from(n)),
            M::FixNeg(n) => Item::Int(i64::from(n)),
            M::U8 => Item::Uint(self.uint(1)?),
            M::U16 => Item::Uint(self.uint(2)?),
            M::U32 => Item::Uint(self.uint(4)?),
            M::U64 => Item::Uint(self.uint(8)?),
            M::I8 => Item::Int(i64::from(self.take(1)?[0] as i8)),
            M::I16 => Item::Int(i64::from(be(self.take(2)?) as u16 as i16)),
            M::I32 => Item::Int(i64::from(be(self.take(4)?) as u32 as i32)),
            M::I64 => Item::Int(be(self.take(8)?) as i64),
            M::F32 => Item::F32(f32::from_bits(be(self.take(4)?) as u32)),
            M::F64 => Item::F64(f64::from_bits(be(self.take(8)?))),
            M::FixStr(n) => Item::Str(self.take(usize::from(n))?),
            M::Str8 => Item::Str(self.sized(1)?),
            M::Str16 => Item::Str(self.sized(2)?),
            M::Str32 => Item::Str(self.sized(4)?),
            M::Bin8 => Item::Bin(self.sized(1)?),
            M::Bin16 => Item::Bin(self.sized(2)?),
            M::Bin32 => Item::Bin(self.sized(4)?),
            M::FixArray(n) => Item::Array(u64::from(n)),
            M::Array16 => Item::Array(self.uint(2)?),
            M::Array32 => Item::Array(self.uint(4)?),
            M::FixMap(n) => Item::Map(u64::from(n)),
            M::Map16 => Item::Map(self.uint(2)?),
            M::Map32 => Item::Map(self.uint(4)?),
            M::FixExt1 => self.ext(1)?,
            M::FixExt2 => self.ext(2)?,
            M::FixExt4 => self.ext(4)?,
            M::FixExt8 => self.ext(8)?,
            M::FixExt16 => self.ext(16)?,
            M::Ext8 => {
                let n = self.uint(1)? as usize;
                self.ext(n)?
            }
            M::Ext16 => {
                let n = self.uint(2)? as usize;
                self.ext(n)?
            }
            M::Ext32 => {
                let n = self.uint(4)? as usize;
                self.ext(n)?
            }
            M::Reserved => return Err("reserved marker"),
        })
    }

    /// Moves past one value (depth is bounded: the bytes were checked).
    fn skip(&self) -> Result<(), &'static str> {
        match self.item()? {
            Item::Array(n) => (0..n).try_for_each(|_| self.skip()),
            Item::Map(n) => (0..2 * n).try_for_each(|_| self.skip()),
            _ => Ok(()),
        }
    }

    /// A map key as [`to_json`] names it: a string as it is, anything else
    /// as its JSON text (keys other than strings are rare and small).
    fn key(&self) -> Result<std::borrow::Cow<'a, str>, &'static str> {
        let start = self.0.get();
        if let Item::Str(b) = self.item()? {
            return Ok(std::str::from_utf8(b).unwrap_or("").into());
        }
        self.0.set(start);
        self.skip()?;
        let whole = &start[..start.len() - self.0.get().len()];
        let v = payload::decode_value(whole).map_err(|_| "bad map key")?;
        Ok(to_json(&v).to_string().into())
    }
}

/// The next value off the cursor.
struct Next<'c, 'a>(&'c Cursor<'a>);

/// Bytes as `{"$bytes": base64}`, encoded as they are written.
struct Base64Bytes<'a>(&'a [u8]);

impl serde::Serialize for Base64Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Text<'a>(&'a [u8]);
        impl serde::Serialize for Text<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&base64::display::Base64Display::new(
                    self.0,
                    &base64::engine::general_purpose::STANDARD,
                ))
            }
        }
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("$bytes", &Text(self.0))?;
        m.end()
    }
}

impl serde::Serialize for Next<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap, SerializeSeq};
        let cur = self.0;
        match cur.item().map_err(S::Error::custom)? {
            Item::Nil => s.serialize_unit(),
            Item::Bool(b) => s.serialize_bool(b),
            Item::Uint(u) => s.serialize_u64(u),
            Item::Int(i) if i >= 0 => s.serialize_u64(i as u64),
            Item::Int(i) => s.serialize_i64(i),
            Item::F32(f) => s.serialize_f32(f),
            Item::F64(f) => s.serialize_f64(f),
            Item::Str(b) => match std::str::from_utf8(b) {
                Ok(t) => s.serialize_str(t),
                Err(_) => Base64Bytes(b).serialize(s),
            },
            Item::Bin(b) => Base64Bytes(b).serialize(s),
            Item::Array(n) => {
                let mut seq = s.serialize_seq(usize::try_from(n).ok())?;
                for _ in 0..n {
                    seq.serialize_element(&Next(cur))?;
                }
                seq.end()
            }
            Item::Map(n) => {
                let mut entries = Vec::new();
                for _ in 0..n {
                    let key = cur.key().map_err(S::Error::custom)?;
                    let start = cur.0.get();
                    cur.skip().map_err(S::Error::custom)?;
                    entries.push((key, &start[..start.len() - cur.0.get().len()]));
                }
                let entries = json_object_order(entries);
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(&key, &Next(&Cursor(std::cell::Cell::new(value))))?;
                }
                map.end()
            }
            Item::Ext(code, data) => ext_to_json(code, data).serialize(s),
        }
    }
}

fn ext_to_json(code: i8, data: &[u8]) -> Json {
    // Re-encode the ext so the typed decoders in econtext-wire read it.
    let mut whole = Vec::new();
    let _ = rmpv::encode::write_value(&mut whole, &Value::Ext(code, data.to_vec()));
    match code {
        ext::EXT_DEAD => payload::decode::<Dead>(&whole)
            .map(|d| json!({"$dead": d.reason}))
            .unwrap_or(Json::Null),
        ext::EXT_CALL_ERROR => payload::decode::<CallError>(&whole)
            .map(|e| json!({"$error": {"type": e.type_name, "message": e.message, "traceback": e.traceback}}))
            .unwrap_or(Json::Null),
        ext::EXT_CONTEXT => payload::decode::<ContextRef>(&whole)
            .map(|c| json!({"$context": [c.id, c.name]}))
            .unwrap_or(Json::Null),
        ext::EXT_SENDER => payload::decode::<SenderRef>(&whole)
            .map(|s| json!({"$sender": [s.context, s.handle]}))
            .unwrap_or(Json::Null),
        _ => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips() {
        let j: Json = serde_json::from_str(
            r#"{"a": [1, -2, 3.5, "x", null, true], "b": {"$bytes": "AAE="}}"#,
        )
        .unwrap();
        assert_eq!(to_json(&from_json(&j)), j);
    }

    #[test]
    fn json_view_prints_what_to_json_builds() {
        let j: Json = serde_json::from_str(
            r#"{"a": [1, -2, 3.5, "x", null, true, 18446744073709551615], "b": {"$bytes": "AAE="}}"#,
        )
        .unwrap();
        let mut v = from_json(&j);
        if let Value::Map(m) = &mut v {
            m.push((
                Value::from(7),
                Value::Ext(1, vec![0xa4, b'g', b'o', b'n', b'e']),
            ));
            m.push((Value::from("nan"), Value::F64(f64::NAN)));
        }
        let streamed: Json =
            serde_json::from_str(&serde_json::to_string(&JsonView(&v)).unwrap()).unwrap();
        assert_eq!(streamed, to_json(&v));
    }

    /// Equal texts, or where they differ.
    fn same(a: &str, b: &str) {
        if a != b {
            let i = a
                .bytes()
                .zip(b.bytes())
                .position(|(p, q)| p != q)
                .unwrap_or(a.len().min(b.len()));
            let around = |s: &str| {
                s.get(i.saturating_sub(30)..(i + 50).min(s.len()))
                    .unwrap_or("")
                    .to_string()
            };
            panic!("differ at {i}: {:?} vs {:?}", around(a), around(b));
        }
    }

    /// A MessagePack string whose bytes are not UTF-8.
    fn not_utf8(b: &[u8]) -> Value {
        let mut enc = vec![0xa0 | b.len() as u8];
        enc.extend_from_slice(b);
        rmpv::decode::read_value(&mut &enc[..]).unwrap()
    }

    /// Every kind of value, with the edge cases of each encoding.
    fn every_kind() -> Value {
        let ints = [
            0i64,
            1,
            127,
            128,
            255,
            256,
            65535,
            65536,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32768,
            -32769,
            i64::from(i32::MIN),
            i64::MIN,
            i64::MAX,
        ];
        let mut items: Vec<Value> = ints.iter().map(|&i| Value::from(i)).collect();
        items.extend([
            Value::from(u64::MAX),
            Value::Nil,
            Value::Boolean(true),
            Value::Boolean(false),
            Value::F32(1.5),
            Value::F64(-2.25),
            Value::F64(f64::INFINITY),
            Value::from(""),
            Value::from("esc \u{1b}]0;t\u{7} \"q\" \\ é 𝄞"),
            Value::from("x".repeat(300)),
            Value::from("y".repeat(70_000)),
            not_utf8(&[0xff, 0xfe, b'a']),
            Value::Binary(vec![]),
            Value::Binary((0..=255).collect()),
            Value::Binary(vec![7; 70_001]),
            Value::Ext(1, vec![0xa4, b'g', b'o', b'n', b'e']),
            Value::Array((0..20).map(Value::from).collect()),
            Value::Array(vec![Value::Nil; 70_000]),
            Value::Map(vec![
                (Value::from("k"), Value::from(1)),
                (Value::from(7), Value::from("int key")),
                (Value::Array(vec![Value::from(1)]), Value::Nil),
                (not_utf8(&[0xff]), Value::Boolean(true)),
                (Value::from("k"), Value::from("the last k")),
                (Value::from("a"), Value::from("before k")),
            ]),
            Value::Map(
                (0..40)
                    .map(|i| (Value::from(format!("k{i}")), Value::from(i)))
                    .collect(),
            ),
        ]);
        let mut deep = Value::from(0);
        for _ in 0..100 {
            deep = Value::Array(vec![deep, Value::Map(vec![])]);
        }
        items.push(deep);
        Value::Array(items)
    }

    #[test]
    fn encoded_view_prints_what_to_json_builds() {
        // What the CLI printed before: the decoded value through to_json.
        let v = every_kind();
        let bytes = payload::encode(&v).unwrap();
        let streamed = serde_json::to_string(&EncodedView::new(&bytes).unwrap()).unwrap();
        let decoded = payload::decode_value(&bytes).unwrap();
        same(&streamed, &to_json(&decoded).to_string());
        same(
            &streamed,
            &serde_json::to_string(&JsonView(&decoded)).unwrap(),
        );
        // Each element on its own, so a failure names the kind.
        if let Value::Array(items) = &decoded {
            for item in items {
                let b = payload::encode(item).unwrap();
                let s = serde_json::to_string(&EncodedView::new(&b).unwrap()).unwrap();
                assert_eq!(s, to_json(item).to_string(), "{item:?}");
            }
        }
    }

    #[test]
    fn encoded_view_refuses_what_the_decoders_refuse() {
        for bad in [
            &[0x92, 0x01][..],
            &[0xc1],
            &[0x01, 0x02],
            &[0xdb, 0, 0, 0, 9],
        ] {
            assert!(EncodedView::new(bad).is_err(), "{bad:?}");
        }
    }
}
