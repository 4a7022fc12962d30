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
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    let key = match k {
                        Value::String(t) => t.as_str().unwrap_or("").to_string(),
                        other => to_json(other).to_string(),
                    };
                    map.serialize_entry(&key, &JsonView(v))?;
                }
                map.end()
            }
            Value::Ext(code, data) => ext_to_json(*code, data).serialize(s),
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
}
