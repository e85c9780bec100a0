//! Counting a JSON text's object members, repeated names included: a
//! parse into a map keeps one member a name (at the first one's place,
//! with the last one's value), so a walk of the parse reads the strings
//! of a document with repeated names neither all nor in their order.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Members of every object in `raw`, repeated names counted each time;
/// None if `raw` is not JSON that `serde_json` takes.
pub fn in_text(raw: &[u8]) -> Option<usize> {
    let mut count = Count(0);
    let mut de = serde_json::Deserializer::from_slice(raw);
    (&mut count).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(count.0)
}

/// Members of every object in a parsed value.
pub fn in_value(v: &Value) -> usize {
    match v {
        Value::Object(map) => map.len() + map.values().map(in_value).sum::<usize>(),
        Value::Array(items) => items.iter().map(in_value).sum(),
        _ => 0,
    }
}

/// The running count, as a seed that reads any JSON value.
struct Count(usize);

impl<'de> DeserializeSeed<'de> for &mut Count {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Count {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(&mut *self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            self.0 += 1;
            map.next_value_seed(&mut *self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_count_in_the_text_not_in_the_parse() {
        let raw = br#"{"a":1,"b":{"c":[{"d":2},{"d":3,"d":4}]},"a":"x"}"#;
        assert_eq!(in_text(raw), Some(7));
        let v: Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(in_value(&v), 5);
        let plain = br#"[{"a":1},{"b":[true,null,"s",-1.5e3]}]"#;
        let v: Value = serde_json::from_slice(plain).unwrap();
        assert_eq!((in_text(plain), in_value(&v)), (Some(2), 2));
        assert_eq!(in_text(b"{\"a\":"), None);
    }
}
