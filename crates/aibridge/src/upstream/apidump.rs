//! apidump (`AIBRIDGE_APIDUMP_DIR`): every upstream attempt as two files, the request as sent
//! and the response as read, secrets masked.
//!
//! `<dir>/<provider>/<model>/<unix-ms>-<request id>-a<attempt>.req.txt` and `.resp.txt` for
//! bridged calls, `<dir>/<provider>/passthrough/<unix-ms>-<path>-<request id>-a<attempt>…` for
//! passthrough; a transport failure leaves `.req_error.txt` in place of the response. Each
//! failover attempt has its own pair. A response body is written as it passes, chunk by chunk
//! (streams included), by a thread of its own: the request never waits for the disk, and a
//! dump that cannot be written costs a log line, never the request.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use aibridge_keypool::mask_secret;
use bytes::Bytes;
use futures_util::TryStreamExt as _;
use http::{HeaderMap, HeaderName, Method, StatusCode};

use super::client::{UpstreamBody, UpstreamResponse};

/// Request headers whose values are secrets.
const SECRET_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "cookie",
    "proxy-authorization",
    "x-amz-security-token",
    "x-aibridge-token",
];

/// Response headers whose values are secrets.
const SECRET_RESPONSE_HEADERS: &[&str] = &["set-cookie", "www-authenticate", "proxy-authenticate"];

/// Where dumps go; cheap to share.
#[derive(Debug)]
pub struct ApiDump {
    dir: PathBuf,
    writer: mpsc::Sender<Job>,
    next_file: AtomicU64,
}

enum Job {
    /// A whole file.
    Write {
        path: PathBuf,
        content: Vec<u8>,
    },
    /// A request file: its body pretty-printed if it is JSON (on this thread, off the request's)
    /// and its `Content-Length` that body's.
    Request {
        path: PathBuf,
        request_line: String,
        headers: HeaderMap,
        body: Bytes,
    },
    /// A file written in pieces: its head now, then each chunk as it passes, then closed.
    Open {
        id: u64,
        path: PathBuf,
        head: Vec<u8>,
    },
    Append {
        id: u64,
        chunk: Bytes,
    },
    Close {
        id: u64,
    },
}

/// The dump files of one upstream attempt.
#[derive(Debug, Clone)]
pub struct AttemptDump<'a> {
    dump: &'a ApiDump,
    /// The path without its suffix.
    base: PathBuf,
}

impl ApiDump {
    /// Starts the writer thread for dumps under `dir`.
    pub fn start(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let (writer, jobs) = mpsc::channel();
        std::thread::Builder::new()
            .name("aibridge-apidump".into())
            .spawn(move || write_jobs(&jobs))?;
        Ok(Self {
            dir,
            writer,
            next_file: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files of attempt `attempt` of request `request_id`: under the model's folder for a
    /// bridged call, under `passthrough` (the path in the name) otherwise.
    pub fn attempt(
        &self,
        provider: &str,
        subject: DumpSubject<'_>,
        request_id: &str,
        attempt: u32,
    ) -> AttemptDump<'_> {
        let millis = crate::time::now_millis();
        let (folder, name) = match subject {
            DumpSubject::Model(model) => (
                safe_name(model),
                format!("{millis}-{request_id}-a{attempt}"),
            ),
            DumpSubject::Passthrough(path) => (
                "passthrough".to_string(),
                format!("{millis}-{}-{request_id}-a{attempt}", safe_name(path)),
            ),
        };
        AttemptDump {
            dump: self,
            base: self.dir.join(safe_name(provider)).join(folder).join(name),
        }
    }

    fn send(&self, job: Job) {
        // The writer thread only ends with the process.
        let _ = self.writer.send(job);
    }
}

/// What a dump's folder is named after.
#[derive(Debug, Clone, Copy)]
pub enum DumpSubject<'a> {
    /// A bridged call: the client's model.
    Model(&'a str),
    /// A passthrough call: the upstream path.
    Passthrough(&'a str),
}

impl AttemptDump<'_> {
    fn path(&self, suffix: &str) -> PathBuf {
        let mut path = self.base.clone().into_os_string();
        path.push(suffix);
        PathBuf::from(path)
    }

    /// The request as sent: request line, sorted headers (secrets masked), the body.
    pub fn request(&self, method: &Method, url: &str, headers: &HeaderMap, body: &Bytes) {
        let target = url
            .find("://")
            .and_then(|scheme| url[scheme + 3..].find('/').map(|path| scheme + 3 + path))
            .map_or("/", |start| &url[start..]);
        let host = url
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
            .unwrap_or("");
        let mut all = headers.clone();
        if let Ok(host) = host.parse() {
            all.insert(http::header::HOST, host);
        }
        self.dump.send(Job::Request {
            path: self.path(".req.txt"),
            request_line: format!("{method} {target} HTTP/1.1\r\n"),
            headers: all,
            body: body.clone(),
        });
    }

    /// The response: its status line and headers now, its body as the gateway reads it.
    pub fn response(&self, response: UpstreamResponse) -> UpstreamResponse {
        let id = self.dump.next_file.fetch_add(1, Ordering::Relaxed);
        let mut head = format!("HTTP/1.1 {}\r\n", status_line(response.status())).into_bytes();
        write_headers(&mut head, response.headers(), SECRET_RESPONSE_HEADERS);
        head.extend_from_slice(b"\r\n");
        self.dump.send(Job::Open {
            id,
            path: self.path(".resp.txt"),
            head,
        });
        let (parts, body) = response.into_parts();
        let closer = Closer {
            writer: self.dump.writer.clone(),
            id,
        };
        let writer = self.dump.writer.clone();
        let chunks = http_body_util::BodyDataStream::new(body).inspect_ok(move |chunk| {
            // Moved in so the file closes when the body is dropped, read to the end or not.
            let _ = &closer;
            let _ = writer.send(Job::Append {
                id,
                chunk: chunk.clone(),
            });
        });
        UpstreamResponse::from_parts(parts, UpstreamBody::from_stream(chunks))
    }

    /// The attempt failed before any answer.
    pub fn transport_error(&self, error: &str) {
        self.dump.send(Job::Write {
            path: self.path(".req_error.txt"),
            content: format!("{error}\n").into_bytes(),
        });
    }
}

/// Closes a response file when its body is gone.
struct Closer {
    writer: mpsc::Sender<Job>,
    id: u64,
}

impl Drop for Closer {
    fn drop(&mut self) {
        let _ = self.writer.send(Job::Close { id: self.id });
    }
}

fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// Headers sorted by name, one line per value, secrets masked.
fn write_headers(out: &mut Vec<u8>, headers: &HeaderMap, secret: &[&str]) {
    let mut names: Vec<&HeaderName> = headers.keys().collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    for name in names {
        for value in headers.get_all(name) {
            let text = String::from_utf8_lossy(value.as_bytes());
            let shown = if secret.contains(&name.as_str()) {
                mask_header_value(&text)
            } else {
                text.into_owned()
            };
            out.extend_from_slice(canonical(name.as_str()).as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(shown.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// `x-api-key` → `X-Api-Key`, as the reference's dumps show names.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// A secret header value as a hint; an auth scheme (`Bearer`) stays readable.
fn mask_header_value(value: &str) -> String {
    match value.split_once(' ') {
        Some((scheme, secret)) if !scheme.is_empty() && !secret.trim().is_empty() => {
            format!("{scheme} {}", mask_secret(secret.trim()))
        }
        _ => mask_secret(value),
    }
}

/// A path component from text a client chose: no separators, no `.`/`..`, nothing odd.
fn safe_name(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    let cleaned = cleaned.trim_matches('-');
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        "_".to_string()
    } else {
        cleaned.to_string()
    }
}

/// The request body: pretty-printed in its own key order when it is JSON, else as it came.
fn pretty_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() * 2);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let mut serializer = serde_json::Serializer::pretty(&mut out);
    match serde_transcode::transcode(&mut deserializer, &mut serializer) {
        Ok(()) if deserializer.end().is_ok() => out,
        _ => body.to_vec(),
    }
}

fn write_jobs(jobs: &mpsc::Receiver<Job>) {
    let mut open: HashMap<u64, (PathBuf, Option<File>)> = HashMap::new();
    let failed = |path: &Path, error: &std::io::Error| {
        tracing::warn!(path = %path.display(), error = %error, "apidump: cannot write");
    };
    let create = |path: &Path| -> std::io::Result<File> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        File::create(path)
    };
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Write { path, content } => {
                if let Err(e) = create(&path).and_then(|mut f| f.write_all(&content)) {
                    failed(&path, &e);
                }
            }
            Job::Request {
                path,
                request_line,
                mut headers,
                body,
            } => {
                let body = pretty_body(&body);
                headers.insert(http::header::CONTENT_LENGTH, body.len().into());
                let mut head = request_line.into_bytes();
                write_headers(&mut head, &headers, SECRET_REQUEST_HEADERS);
                head.extend_from_slice(b"\r\n");
                head.extend_from_slice(&body);
                head.push(b'\n');
                if let Err(e) = create(&path).and_then(|mut f| f.write_all(&head)) {
                    failed(&path, &e);
                }
            }
            Job::Open { id, path, head } => {
                let file = match create(&path).and_then(|mut f| f.write_all(&head).map(|()| f)) {
                    Ok(file) => Some(file),
                    Err(e) => {
                        failed(&path, &e);
                        None
                    }
                };
                open.insert(id, (path, file));
            }
            Job::Append { id, chunk } => {
                if let Some((path, file)) = open.get_mut(&id)
                    && let Some(writing) = file
                    && let Err(e) = writing.write_all(&chunk)
                {
                    failed(path, &e);
                    *file = None;
                }
            }
            Job::Close { id } => {
                open.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_client_chose_cannot_leave_their_folder() {
        assert_eq!(safe_name("claude-sonnet-4-5"), "claude-sonnet-4-5");
        assert_eq!(safe_name("org/model"), "org-model");
        assert_eq!(safe_name("../../etc/passwd"), "..-..-etc-passwd");
        assert_eq!(safe_name(".."), "_");
        assert_eq!(safe_name(""), "_");
        assert_eq!(safe_name("/v1/models/x"), "v1-models-x");
    }

    #[test]
    fn json_bodies_are_pretty_printed_in_their_own_order() {
        let pretty = pretty_body(br#"{"model":"m","a":[1,{"z":1,"b":2}]}"#);
        let text = String::from_utf8(pretty).unwrap();
        assert!(
            text.starts_with("{\n  \"model\": \"m\",\n  \"a\": ["),
            "{text}"
        );
        assert!(text.find("\"z\"").unwrap() < text.find("\"b\"").unwrap());
        assert_eq!(pretty_body(b"not json"), b"not json");
        assert_eq!(pretty_body(br#"{"a":1} trailing"#), br#"{"a":1} trailing"#);
    }

    #[test]
    fn secrets_are_masked_and_names_canonical() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-api-key",
            "sk-ant-api03-abcdefghijklmnop".parse().unwrap(),
        );
        headers.insert(
            "authorization",
            "Bearer sk-proj-abcdefghijklmnopqrstuvwxyz".parse().unwrap(),
        );
        headers.insert("anthropic-version", "2023-06-01".parse().unwrap());
        let mut out = Vec::new();
        write_headers(&mut out, &headers, SECRET_REQUEST_HEADERS);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "Anthropic-Version: 2023-06-01\r\nAuthorization: Bearer sk-p...wxyz\r\nX-Api-Key: sk-a...mnop\r\n"
        );
    }
}
