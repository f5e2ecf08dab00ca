//! Small helpers for CTAP2's CBOR maps (integer keys, canonical order). `serde_cbor_2::Value`
//! orders map keys the CTAP2 canonical way (major type, then length, then bytes), so encoding a
//! `BTreeMap<Value, Value>` gives the canonical form the spec asks for.

use std::collections::BTreeMap;

use serde_cbor_2::Value;

use super::error::CtapError;

pub type Map = BTreeMap<Value, Value>;

pub fn int(i: i128) -> Value {
    Value::Integer(i)
}

pub fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

pub fn bytes(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}

/// Encodes a map (canonical key order).
pub fn encode(map: Map) -> Result<Vec<u8>, CtapError> {
    serde_cbor_2::to_vec(&Value::Map(map)).map_err(|_| CtapError::Malformed("cannot encode CBOR"))
}

/// Decodes a top-level map; an empty payload is an empty map.
pub fn decode_map(payload: &[u8]) -> Result<Map, CtapError> {
    if payload.is_empty() {
        return Ok(Map::new());
    }
    match serde_cbor_2::from_slice::<Value>(payload) {
        Ok(Value::Map(m)) => Ok(m),
        _ => Err(CtapError::Malformed("not a CBOR map")),
    }
}

/// Decodes one CBOR value at the start of `data` and returns it with the number of bytes it took.
pub fn decode_prefix(data: &[u8]) -> Result<(Value, usize), CtapError> {
    let mut de = serde_cbor_2::Deserializer::from_slice(data);
    let value = serde::Deserialize::deserialize(&mut de)
        .map_err(|_| CtapError::Malformed("bad CBOR in authenticator data"))?;
    Ok((value, de.byte_offset()))
}

pub fn get(map: &Map, key: i128) -> Option<&Value> {
    map.get(&Value::Integer(key))
}

pub fn get_text<'a>(map: &'a Map, key: &str) -> Option<&'a Value> {
    map.get(&Value::Text(key.to_owned()))
}

pub fn as_bytes<'a>(v: Option<&'a Value>, what: &'static str) -> Result<&'a [u8], CtapError> {
    match v {
        Some(Value::Bytes(b)) => Ok(b),
        _ => Err(CtapError::Malformed(what)),
    }
}

pub fn as_map<'a>(v: Option<&'a Value>, what: &'static str) -> Result<&'a Map, CtapError> {
    match v {
        Some(Value::Map(m)) => Ok(m),
        _ => Err(CtapError::Malformed(what)),
    }
}

pub fn as_text<'a>(v: Option<&'a Value>, what: &'static str) -> Result<&'a str, CtapError> {
    match v {
        Some(Value::Text(t)) => Ok(t),
        _ => Err(CtapError::Malformed(what)),
    }
}

pub fn as_int(v: Option<&Value>, what: &'static str) -> Result<i128, CtapError> {
    match v {
        Some(Value::Integer(i)) => Ok(*i),
        _ => Err(CtapError::Malformed(what)),
    }
}

/// Overwrites every byte string in `v` (for values that carried secrets) before it is dropped.
pub fn scrub(v: &mut Value) {
    use zeroize::Zeroize;
    match v {
        Value::Bytes(b) => b.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(scrub),
        Value::Map(m) => {
            let taken = std::mem::take(m);
            for (mut k, mut val) in taken {
                scrub(&mut k);
                scrub(&mut val);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_encode_in_ctap2_canonical_order() {
        // A COSE key: 1, 3, -1, -2, -3 is the canonical order (unsigned before negative).
        let mut m = Map::new();
        m.insert(int(-3), bytes(&[3]));
        m.insert(int(-1), int(1));
        m.insert(int(3), int(-25));
        m.insert(int(1), int(2));
        m.insert(int(-2), bytes(&[2]));
        let enc = encode(m).unwrap();
        assert_eq!(
            enc,
            [0xa5, 0x01, 0x02, 0x03, 0x38, 0x18, 0x20, 0x01, 0x21, 0x41, 0x02, 0x22, 0x41, 0x03]
        );
        // Text keys: shorter first.
        let mut m = Map::new();
        m.insert(text("uv"), Value::Bool(true));
        m.insert(text("hmac-secret"), Value::Bool(true));
        m.insert(text("rk"), Value::Bool(false));
        let enc = encode(m).unwrap();
        let at = |needle: &[u8]| enc.windows(needle.len()).position(|w| w == needle).unwrap();
        assert!(at(b"rk") < at(b"uv") && at(b"uv") < at(b"hmac-secret"));
    }

    #[test]
    fn decode_prefix_reports_the_length() {
        let (v, n) = decode_prefix(&[0xa1, 0x01, 0x02, 0xff, 0xff]).unwrap();
        assert_eq!(n, 3);
        assert!(matches!(v, Value::Map(_)));
    }
}
