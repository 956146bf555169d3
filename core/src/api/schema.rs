//! Hand-written schema fragments for fields schemars cannot describe structurally.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Any JSON value (a parameter default or value): kept as is by the API server.
pub fn any_value(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// An optional value of any JSON type.
pub fn optional_any_value(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
