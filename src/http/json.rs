//! JSON ↔ msgpack for values, and the JSON shapes of the HTTP API's bodies.
//!
//! Writes accept what concave accepts (BRIEF §7): strings, integers, floats,
//! booleans, and arrays of those (nested arrays too). `null` and objects are
//! refused, so every value written over HTTP is one that reads back the same.
//!
//! Reads show any stored value, whoever wrote it:
//!
//! | msgpack | JSON |
//! |---|---|
//! | str (valid UTF-8) | string |
//! | str (invalid UTF-8), bin | array of byte numbers |
//! | int, float | number (a NaN or infinite float reads as `null`) |
//! | bool | bool |
//! | nil | `null` |
//! | array | array |
//! | map | object; a key that is not a string is written as its JSON text (`1` → `"1"`) |
//! | ext | `{"ext": type, "data": [byte numbers]}` |
//!
//! The read mapping is lossy for bin (it looks like an array of integers) and
//! maps; docs/http.md lists the cases.

use rmpv::Value as Msgpack;
use serde_json::{Map, Number, Value as Json};

/// A JSON value that cannot be stored through the HTTP API.
#[derive(Debug, thiserror::Error)]
#[error(
    "unsupported value type {0}: values are strings, integers, floats, booleans or arrays of them"
)]
pub struct UnsupportedValue(&'static str);

/// The msgpack value a JSON value is stored as.
pub fn to_msgpack(json: &Json) -> Result<Msgpack, UnsupportedValue> {
    Ok(match json {
        Json::String(s) => Msgpack::from(s.as_str()),
        Json::Bool(b) => Msgpack::Boolean(*b),
        Json::Number(n) => number_to_msgpack(n),
        Json::Array(items) => {
            Msgpack::Array(items.iter().map(to_msgpack).collect::<Result<_, _>>()?)
        }
        Json::Null => return Err(UnsupportedValue("null")),
        Json::Object(_) => return Err(UnsupportedValue("object")),
    })
}

fn number_to_msgpack(n: &Number) -> Msgpack {
    if let Some(i) = n.as_u64() {
        Msgpack::from(i)
    } else if let Some(i) = n.as_i64() {
        Msgpack::from(i)
    } else {
        // serde_json (without arbitrary_precision) holds every other number as an f64.
        Msgpack::F64(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// The JSON shown for a stored msgpack value (the table in the module docs).
pub fn from_msgpack(value: &Msgpack) -> Json {
    match value {
        Msgpack::Nil => Json::Null,
        Msgpack::Boolean(b) => Json::Bool(*b),
        Msgpack::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Json::from(u),
            (None, Some(s)) => Json::from(s),
            (None, None) => Json::Null,
        },
        Msgpack::F32(f) => float(f64::from(*f)),
        Msgpack::F64(f) => float(*f),
        Msgpack::String(s) => match s.as_str() {
            Some(text) => Json::from(text),
            None => bytes(s.as_bytes()),
        },
        Msgpack::Binary(b) => bytes(b),
        Msgpack::Array(items) => Json::Array(items.iter().map(from_msgpack).collect()),
        Msgpack::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| (map_key(k), from_msgpack(v)))
                .collect::<Map<_, _>>(),
        ),
        Msgpack::Ext(kind, data) => serde_json::json!({ "ext": kind, "data": bytes(data) }),
    }
}

fn float(f: f64) -> Json {
    Number::from_f64(f).map_or(Json::Null, Json::Number)
}

fn bytes(b: &[u8]) -> Json {
    Json::Array(b.iter().map(|&byte| Json::from(byte)).collect())
}

fn map_key(key: &Msgpack) -> String {
    match key.as_str() {
        Some(text) => text.to_owned(),
        None => from_msgpack(key).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepted_values_round_trip() {
        for value in [
            json!("text"),
            json!(""),
            json!(42),
            json!(-7),
            json!(u64::MAX),
            json!(1.5),
            json!(true),
            json!([1, 2, 3]),
            json!([[1.25, "a"], [], false]),
        ] {
            let stored = to_msgpack(&value).expect("accepted");
            assert_eq!(from_msgpack(&stored), value);
        }
    }

    #[test]
    fn null_and_objects_are_refused() {
        assert!(to_msgpack(&json!(null)).is_err());
        assert!(to_msgpack(&json!({"a": 1})).is_err());
        assert!(to_msgpack(&json!([1, null])).is_err());
    }

    #[test]
    fn other_msgpack_types_read_as_documented() {
        assert_eq!(
            from_msgpack(&Msgpack::Binary(vec![0, 255])),
            json!([0, 255])
        );
        assert_eq!(from_msgpack(&Msgpack::Nil), json!(null));
        assert_eq!(from_msgpack(&Msgpack::F64(f64::NAN)), json!(null));
        let map = Msgpack::Map(vec![("a".into(), 1.into()), (2.into(), "b".into())]);
        assert_eq!(from_msgpack(&map), json!({"a": 1, "2": "b"}));
        assert_eq!(
            from_msgpack(&Msgpack::Ext(5, vec![1])),
            json!({"ext": 5, "data": [1]})
        );
    }
}
