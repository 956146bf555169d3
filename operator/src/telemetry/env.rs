//! The `OTEL_*` rules the OpenTelemetry SDK and OTLP exporter (0.33) leave to their user.
//!
//! The exporter reads the endpoints, headers, timeout and compression itself, and the SDK the
//! service name, resource attributes, sampler, span limits and batch settings; none of that is
//! parsed here. What is left, and why:
//!
//! | rule | why it is ours |
//! |---|---|
//! | export is on only when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set | the exporter falls back to `http://localhost:4318`, which in a pod is nothing |
//! | `OTEL_SDK_DISABLED=true` turns export off | the Rust SDK does not read it |
//! | `OTEL_TRACES_EXPORTER` must be unset or list `otlp` (`none` turns export off) | the Rust SDK has no exporter autoconfiguration |
//! | a protocol other than `http/protobuf` in `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL` fails start-up | the exporter only logs a warning (before any subscriber exists) and sends protobuf anyway |
//! | `OTEL_RESOURCE_ATTRIBUTES` values are percent-decoded (`k8s.namespace.name=toucan%2Dsystem`) | the SDK splits the list but keeps the values encoded |
//! | `service.name` is `toucan-operator` unless `OTEL_SERVICE_NAME` or a `service.name` attribute says otherwise | the SDK's default is `unknown_service:<executable>` |
//!
//! Values are read through a `lookup` function (the process environment in production, a table
//! in tests); an empty value counts as unset, as it does for the exporter.

use opentelemetry::{KeyValue, Value};
use opentelemetry_otlp::{
    OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_PROTOCOL_HTTP_PROTOBUF, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::{
    EnvResourceDetector, ResourceDetector as _, SdkProvidedResourceDetector,
    TelemetryResourceDetector,
};
use percent_encoding::percent_decode_str;

use super::TelemetryError;

/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "toucan-operator";

const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
const OTEL_TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

// === impl OtlpExport ===

/// Export is on: the variable that turned it on, and its value (for the start-up log; the
/// exporter reads and checks the endpoint itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpExport {
    pub variable: &'static str,
    pub endpoint: String,
}

impl OtlpExport {
    /// Whether to export, from the variables read through `lookup`: `None` when export is off,
    /// an error for a protocol the operator cannot speak.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TelemetryError> {
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
        if var(OTEL_SDK_DISABLED).is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if let Some(exporters) = var(OTEL_TRACES_EXPORTER)
            && !exporters.split(',').any(|e| e.trim() == "otlp")
        {
            return Ok(None);
        }
        let Some((variable, endpoint)) = [
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
            OTEL_EXPORTER_OTLP_ENDPOINT,
        ]
        .into_iter()
        .find_map(|variable| var(variable).map(|value| (variable, value))) else {
            return Ok(None);
        };
        for protocol_variable in [
            OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
            OTEL_EXPORTER_OTLP_PROTOCOL,
        ] {
            if let Some(value) = var(protocol_variable)
                && !value.eq_ignore_ascii_case(OTEL_EXPORTER_OTLP_PROTOCOL_HTTP_PROTOBUF)
            {
                return Err(TelemetryError::UnsupportedProtocol {
                    variable: protocol_variable,
                    value,
                });
            }
        }
        Ok(Some(OtlpExport { variable, endpoint }))
    }
}

// === resource ===

/// The resource every span carries: `service.name` (see the module docs), the SDK's
/// `telemetry.sdk.*` attributes, and `OTEL_RESOURCE_ATTRIBUTES` as the SDK parses it, with
/// its values percent-decoded. `lookup` only says whether `OTEL_SERVICE_NAME` is set; the SDK
/// reads the variables themselves.
pub fn resource(lookup: impl Fn(&str) -> Option<String>) -> Resource {
    let builder = Resource::builder_empty()
        .with_service_name(DEFAULT_SERVICE_NAME)
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(percent_decoded(&EnvResourceDetector::new().detect()));
    // Only when the variable is set: without it the SDK's detector falls back to
    // `unknown_service:<executable>` over the default above.
    let builder = if lookup(OTEL_SERVICE_NAME).is_some_and(|v| !v.is_empty()) {
        builder.with_detector(Box::new(SdkProvidedResourceDetector))
    } else {
        builder
    };
    builder.build()
}

/// The attributes of `resource` with their string values percent-decoded; a value that does
/// not decode to UTF-8 is kept as written.
fn percent_decoded(resource: &Resource) -> Vec<KeyValue> {
    resource
        .iter()
        .map(|(key, value)| {
            let value = match value {
                Value::String(text) => match percent_decode_str(text.as_str()).decode_utf8() {
                    Ok(decoded) => Value::from(decoded.into_owned()),
                    Err(_) => value.clone(),
                },
                other => other.clone(),
            };
            KeyValue::new(key.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::HashMap;

    use opentelemetry::Key;

    use super::*;

    fn export(vars: &[(&str, &str)]) -> Result<Option<OtlpExport>, TelemetryError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OtlpExport::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn export_is_off_without_an_endpoint_or_when_disabled() {
        let off: &[&[(&str, &str)]] = &[
            &[],
            &[
                ("OTEL_SERVICE_NAME", "x"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=b"),
            ],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "")],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "TRUE"),
            ],
            &[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://c:4318/v1/traces",
                ),
                ("OTEL_TRACES_EXPORTER", "none"),
            ],
        ];
        for vars in off {
            assert_eq!(export(vars).unwrap(), None, "{vars:?}");
        }
        let on = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "false"),
            ("OTEL_TRACES_EXPORTER", "console,otlp"),
        ])
        .unwrap();
        assert_eq!(
            on,
            Some(OtlpExport {
                variable: "OTEL_EXPORTER_OTLP_ENDPOINT",
                endpoint: "http://c:4318".to_owned(),
            })
        );
    }

    #[test]
    fn the_traces_endpoint_is_named_before_the_base_endpoint() {
        let on = export(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9999/custom"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(on.variable, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        assert_eq!(on.endpoint, "http://c:9999/custom");
    }

    #[test]
    fn protocols_other_than_http_protobuf_are_refused() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        for variable in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ] {
            for value in ["grpc", "http/json"] {
                let err = export(&[endpoint, (variable, value)]).unwrap_err();
                assert_eq!(err.reason(), "OtlpProtocol");
                assert!(err.to_string().contains(variable), "{err}");
            }
        }
        for value in ["http/protobuf", "HTTP/PROTOBUF"] {
            let on = export(&[endpoint, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", value)]);
            assert!(on.unwrap().is_some(), "{value}");
        }
        // Without an endpoint export is off, whatever the protocol says.
        assert!(
            export(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn resource_attribute_values_are_percent_decoded() {
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("k8s.namespace.name", "toucan%2Dsystem"),
                KeyValue::new("note", "a%2Cb%20c"),
                KeyValue::new("cafe", "caf%C3%A9"),
                KeyValue::new("malformed", "100%%zz%4"),
                KeyValue::new("not.utf8", "%FF"),
                KeyValue::new("count", 3_i64),
            ])
            .build();
        let decoded = Resource::builder_empty()
            .with_attributes(percent_decoded(&resource))
            .build();
        let get = |key: &'static str| decoded.get(&Key::from_static_str(key)).unwrap();
        assert_eq!(get("k8s.namespace.name"), Value::from("toucan-system"));
        assert_eq!(get("note"), Value::from("a,b c"));
        assert_eq!(get("cafe"), Value::from("café"));
        assert_eq!(get("malformed"), Value::from("100%%zz%4"));
        assert_eq!(get("not.utf8"), Value::from("%FF"));
        assert_eq!(get("count"), Value::I64(3));
    }

    #[test]
    fn the_service_name_defaults_to_the_operator() {
        // The unit tests run without OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the
        // variables themselves are covered by tests/telemetry.rs, in a process of its own.
        if std::env::var_os("OTEL_RESOURCE_ATTRIBUTES").is_some() {
            return;
        }
        let resource = resource(|_| None);
        assert_eq!(
            resource.get(&Key::from_static_str("service.name")),
            Some(Value::from(DEFAULT_SERVICE_NAME))
        );
        assert!(
            resource
                .get(&Key::from_static_str("telemetry.sdk.name"))
                .is_some()
        );
    }
}
