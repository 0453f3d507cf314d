//! A tiny OTLP/HTTP trace receiver for tests: `POST /v1/traces` with `application/x-protobuf`
//! on 127.0.0.1:0, decoded with prost and flattened into [`ReceivedSpan`]s for assertions.
//! Point the gateway at it with `OTEL_EXPORTER_OTLP_ENDPOINT=<receiver.base>` (and
//! `OTEL_BSP_SCHEDULE_DELAY=100` so batches leave within the test's patience).
#![allow(dead_code)] // a helper: not every test uses every accessor

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode as OtlpStatus};
use prost::Message as _;
use tokio::sync::Notify;

/// An attribute value as sent; arrays and maps are kept as their debug text.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    Other(String),
}

impl AttrValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// One span, flattened out of its resource and scope.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    /// Lower-case hex, 32 characters.
    pub trace_id: String,
    /// Lower-case hex, 16 characters.
    pub span_id: String,
    /// Lower-case hex, empty for a root span.
    pub parent_span_id: String,
    /// `"internal"`, `"server"`, `"client"`, `"producer"`, `"consumer"` or `"unspecified"`.
    pub kind: &'static str,
    pub attributes: BTreeMap<String, AttrValue>,
    /// `"unset"`, `"ok"` or `"error"`.
    pub status_code: &'static str,
    pub status_message: String,
    /// The resource's `service.name`.
    pub service_name: Option<String>,
    pub scope_name: String,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.get(key)
    }

    pub fn str_attr(&self, key: &str) -> Option<&str> {
        self.attr(key).and_then(AttrValue::as_str)
    }

    pub fn int_attr(&self, key: &str) -> Option<i64> {
        self.attr(key).and_then(AttrValue::as_int)
    }
}

#[derive(Default)]
struct Shared {
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: Mutex<usize>,
    notify: Notify,
}

pub struct OtlpReceiver {
    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub base: String,
    /// `{base}/v1/traces`, for `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    pub traces_url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("receiver address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let base = format!("http://{addr}");
        OtlpReceiver {
            traces_url: format!("{base}/v1/traces"),
            base,
            shared,
            server,
        }
    }

    /// Everything received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.spans.lock().expect("spans lock").clone()
    }

    /// Export requests accepted so far.
    pub fn requests(&self) -> usize {
        *self.shared.requests.lock().expect("requests lock")
    }

    /// Waits until `predicate` holds for the spans received so far and returns them; panics with
    /// what did arrive once `timeout` has passed.
    pub async fn wait_for(
        &self,
        predicate: impl Fn(&[ReceivedSpan]) -> bool,
        timeout: Duration,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a batch landing in between still wakes us.
            let notified = self.shared.notify.notified();
            let spans = self.spans();
            if predicate(&spans) {
                return spans;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let spans = self.spans();
                if predicate(&spans) {
                    return spans;
                }
                panic!(
                    "OTLP receiver: condition not met within {timeout:?}; got {} span(s):\n{}",
                    spans.len(),
                    describe(&spans)
                );
            }
        }
    }

    /// Waits for a span named `name` and returns it.
    pub async fn wait_for_span(&self, name: &str, timeout: Duration) -> ReceivedSpan {
        let spans = self
            .wait_for(|spans| spans.iter().any(|s| s.name == name), timeout)
            .await;
        spans
            .into_iter()
            .find(|s| s.name == name)
            .expect("span present after wait_for")
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One line per span, for failure messages.
pub fn describe(spans: &[ReceivedSpan]) -> String {
    let mut out = String::new();
    for s in spans {
        let _ = writeln!(
            out,
            "  {} kind={} trace={} span={} parent={} status={} attrs={:?}",
            s.name, s.kind, s.trace_id, s.span_id, s.parent_span_id, s.status_code, s.attributes
        );
    }
    out
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-protobuf") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "want application/x-protobuf",
        )
            .into_response();
    }
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    let spans = flatten(request);
    shared.spans.lock().expect("spans lock").extend(spans);
    *shared.requests.lock().expect("requests lock") += 1;
    shared.notify.notify_waiters();
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service_name = resource_spans.resource.as_ref().and_then(|r| {
            r.attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match attr_value(kv.value.as_ref()) {
                    AttrValue::Str(s) => Some(s),
                    _ => None,
                })
        });
        for scope_spans in resource_spans.scope_spans {
            let scope_name = scope_spans.scope.map(|s| s.name).unwrap_or_default();
            for span in scope_spans.spans {
                let (status_code, status_message) = match span.status {
                    Some(status) => (status_name(status.code), status.message),
                    None => ("unset", String::new()),
                };
                out.push(ReceivedSpan {
                    kind: kind_name(span.kind),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    status_code,
                    status_message,
                    service_name: service_name.clone(),
                    scope_name: scope_name.clone(),
                });
            }
        }
    }
    out
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, AttrValue> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), attr_value(kv.value.as_ref())))
        .collect()
}

fn attr_value(value: Option<&AnyValue>) -> AttrValue {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => AttrValue::Str(s.clone()),
        Some(any_value::Value::IntValue(i)) => AttrValue::Int(*i),
        Some(any_value::Value::BoolValue(b)) => AttrValue::Bool(*b),
        Some(any_value::Value::DoubleValue(d)) => AttrValue::Double(*d),
        other => AttrValue::Other(format!("{other:?}")),
    }
}

fn kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Internal) => "internal",
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        Ok(SpanKind::Unspecified) | Err(_) => "unspecified",
    }
}

fn status_name(code: i32) -> &'static str {
    match OtlpStatus::try_from(code) {
        Ok(OtlpStatus::Ok) => "ok",
        Ok(OtlpStatus::Error) => "error",
        Ok(OtlpStatus::Unset) | Err(_) => "unset",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
