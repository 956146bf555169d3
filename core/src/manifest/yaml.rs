//! Reading a YAML stream into values without trusting it: a UTF-8 byte-order mark is
//! skipped, and the nodes the stream expands to, aliases included, are counted before any
//! value is built.
//!
//! A YAML alias repeats its anchor's whole subtree. The YAML library refuses the classic
//! "billion laughs" (aliases of aliases), but not one anchor of a few hundred nodes aliased
//! thousands of times, which a 100 KB file can do: the values would take gigabytes. So each
//! stream is read twice: once counting the nodes it expands to, which allocates nothing and
//! stops at [`MAX_NODES`], and then, only if it fits, into values.

use std::cell::Cell;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::Value;

/// The most nodes (mappings, lists and scalars, counting every alias as the subtree it
/// repeats) one file may expand to. A step is about 20 nodes, so this is a few thousand
/// steps; the API server stores at most 1.5 MiB per object, which no real manifest of
/// 100,000 nodes fits in. Values of this many nodes take tens of megabytes.
pub const MAX_NODES: usize = 100_000;

/// One document of a stream as read.
pub(super) enum StreamDocument {
    /// The document's value (`Null` for an empty document).
    Value(Value),
    /// Malformed YAML; the stream cannot be read past it.
    Malformed(String),
    /// The stream expands past [`MAX_NODES`] in this document; nothing after it is read.
    TooLarge,
}

/// The documents of a YAML stream, in order, ending at the first malformed or too large one.
pub(super) fn documents(text: &str) -> Vec<StreamDocument> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let nodes = Cell::new(0);
    let counted = serde_yaml_ng::Deserializer::from_str(text);
    let read = serde_yaml_ng::Deserializer::from_str(text);
    let mut out = Vec::new();
    for (counting, reading) in counted.zip(read) {
        // A syntax error found while counting is found again, at the same place, while
        // reading; only the count's own verdict matters here.
        if (Count { nodes: &nodes }).deserialize(counting).is_err() && nodes.get() > MAX_NODES {
            out.push(StreamDocument::TooLarge);
            break;
        }
        match Value::deserialize(reading) {
            Ok(value) => out.push(StreamDocument::Value(value)),
            Err(e) => {
                out.push(StreamDocument::Malformed(e.to_string()));
                break;
            }
        }
    }
    out
}

/// The message for a stream past [`MAX_NODES`].
pub(super) fn too_large_message() -> String {
    format!(
        "this file expands to more than {MAX_NODES} YAML nodes (aliases count as the anchors \
         they repeat); write fewer aliases or split the file"
    )
}

/// A seed that walks one node and everything under it, counting, and fails once the count
/// passes [`MAX_NODES`].
#[derive(Clone, Copy)]
struct Count<'a> {
    nodes: &'a Cell<usize>,
}

impl Count<'_> {
    fn node<E: de::Error>(self) -> Result<(), E> {
        let n = self.nodes.get() + 1;
        self.nodes.set(n);
        if n > MAX_NODES {
            return Err(E::custom(too_large_message()));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Count<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Count<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.node()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.node()
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.node()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.node()
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.node()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.node()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.node()
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        self.node()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.node()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.node()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.node()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.node()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }

    /// A tagged value (`!tag value`): the tag, then the value.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        self.node()?;
        let ((), variant) = data.variant_seed(self)?;
        de::VariantAccess::newtype_variant_seed(variant, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<Value> {
        documents(text)
            .into_iter()
            .map(|d| match d {
                StreamDocument::Value(v) => v,
                StreamDocument::Malformed(e) => panic!("malformed: {e}"),
                StreamDocument::TooLarge => panic!("too large"),
            })
            .collect()
    }

    /// An anchor of `width` scalars aliased `aliases` times: about `width * aliases` nodes
    /// from a file of a few times `width + aliases` bytes.
    fn aliased(width: usize, aliases: usize) -> String {
        let anchor: Vec<String> = (0..width).map(|i| format!("v{i}")).collect();
        format!(
            "a: &a [{}]\nb: [{}]\n",
            anchor.join(", "),
            vec!["*a"; aliases].join(", ")
        )
    }

    #[test]
    fn reads_documents_and_tags() {
        let docs = values("a: 1\n---\n---\nb: !t [x, y]\n");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1], Value::Null);
        assert!(matches!(docs[2]["b"], Value::Tagged(_)), "{:?}", docs[2]);
    }

    #[test]
    fn skips_a_byte_order_mark() {
        assert_eq!(values("\u{feff}a: 1\n"), values("a: 1\n"));
    }

    #[test]
    fn aliases_within_the_limit_expand() {
        let docs = values(&aliased(100, 900));
        assert_eq!(docs[0]["b"].as_sequence().map(Vec::len), Some(900));
    }

    #[test]
    fn quadratic_expansion_is_refused_before_it_is_built() {
        let text = aliased(1000, 10_000);
        assert!(text.len() < 100_000, "{}", text.len());
        let docs = documents(&text);
        assert!(matches!(docs.as_slice(), [StreamDocument::TooLarge]));
    }

    #[test]
    fn the_limit_is_per_file() {
        let one = aliased(100, 400);
        let text = vec![one; 3].join("---\n");
        let docs = documents(&text);
        assert!(
            matches!(
                docs.as_slice(),
                [
                    StreamDocument::Value(_),
                    StreamDocument::Value(_),
                    StreamDocument::TooLarge
                ]
            ),
            "{}",
            docs.len()
        );
    }

    #[test]
    fn malformed_yaml_ends_the_stream() {
        let docs = documents("a: 1\n---\nb: [\n---\nc: 1\n");
        assert!(matches!(
            docs.as_slice(),
            [StreamDocument::Value(_), StreamDocument::Malformed(_)]
        ));
    }
}
