//! `aibridge-sse-bench`: a small open-loop load client for streaming (SSE) endpoints, used by
//! `bench/run.sh` where a general load generator only reports whole-response latency.
//!
//! Starts `--requests` POSTs at a fixed `--rate` (open loop: each request has a scheduled start
//! and is sent then whatever happened to the earlier ones), over keep-alive HTTP/1.1 connections
//! (at most `--max-conns` open), and reports per request:
//!
//! - `head`: time to the first byte of the response (status line);
//! - `first_event`: time to the first byte of the body (the first SSE event);
//! - `last_byte`: time to the end of the body.
//!
//! each measured from the moment the request is written (`latency_ms`) and from its scheduled
//! start (`latency_from_schedule_ms`: adds the wait for a connection and the client's own timer
//! lateness, up to a millisecond), plus the peak number of responses open at once. Plain
//! `http://` only; the target must be on loopback (the benchmark never sends traffic elsewhere).
//! Output: one JSON object on stdout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

const USAGE: &str = "usage: aibridge-sse-bench --url http://127.0.0.1:PORT/PATH --body JSON \
[--header 'Name: value']... [--rate PER_SECOND (0 = all at once)] [--requests N] \
[--max-conns N] [--time-limit-s S]";

#[derive(Debug)]
struct Args {
    addr: SocketAddr,
    host: String,
    path: String,
    body: String,
    headers: Vec<String>,
    rate: f64,
    requests: usize,
    max_conns: usize,
    time_limit: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut body = None;
    let mut headers = Vec::new();
    let mut rate = 100.0;
    let mut requests = 1000;
    let mut max_conns = 2000;
    let mut time_limit = 60.0;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_owned());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|e| format!("{flag}: {e}"))
                .and_then(|n| {
                    if n.is_finite() && n >= 0.0 {
                        Ok(n)
                    } else {
                        Err(format!("{flag}: must be >= 0"))
                    }
                })
        };
        match flag.as_str() {
            "--url" => url = Some(value),
            "--body" => body = Some(value),
            "--header" | "-H" => headers.push(value),
            "--rate" => rate = num(&value)?,
            "--requests" | "-n" => requests = num(&value)? as usize,
            "--max-conns" => max_conns = (num(&value)? as usize).max(1),
            "--time-limit-s" => time_limit = num(&value)?,
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    let url = url.ok_or_else(|| format!("--url is required\n{USAGE}"))?;
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = host
        .parse()
        .map_err(|e| format!("--url host must be IP:PORT ({e})"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address"));
    }
    Ok(Args {
        addr,
        host: host.to_owned(),
        path: path.to_owned(),
        body: body.ok_or_else(|| format!("--body is required\n{USAGE}"))?,
        headers,
        rate,
        requests,
        max_conns,
        time_limit: Duration::from_secs_f64(time_limit),
    })
}

/// One finished request: durations from the moment it was written.
#[derive(Debug)]
struct Sample {
    status: u16,
    /// From the scheduled start to the write.
    lateness: Duration,
    head: Duration,
    first_event: Option<Duration>,
    last_byte: Duration,
    bytes: usize,
}

/// Keep-alive connections not in use.
type Idle = Arc<Mutex<Vec<TcpStream>>>;

struct Shared {
    addr: SocketAddr,
    request: Vec<u8>,
    idle: Idle,
    conns: Semaphore,
    open: AtomicUsize,
    peak_open: AtomicUsize,
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(run(args));
    println!("{report}");
    std::process::ExitCode::SUCCESS
}

async fn run(args: Args) -> Value {
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Accept: text/event-stream\r\nContent-Length: {}\r\n",
        args.path,
        args.host,
        args.body.len()
    );
    for h in &args.headers {
        request.push_str(h.trim());
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(&args.body);
    let shared = Arc::new(Shared {
        addr: args.addr,
        request: request.into_bytes(),
        idle: Arc::new(Mutex::new(Vec::new())),
        conns: Semaphore::new(args.max_conns),
        open: AtomicUsize::new(0),
        peak_open: AtomicUsize::new(0),
    });

    let start = Instant::now();
    let deadline = start + args.time_limit;
    let interval = if args.rate > 0.0 {
        Duration::from_secs_f64(1.0 / args.rate)
    } else {
        Duration::ZERO
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut not_started = 0usize;
    for i in 0..args.requests {
        let scheduled = start + interval.mul_f64(i as f64);
        if scheduled >= deadline {
            not_started = args.requests - i;
            break;
        }
        tokio::time::sleep_until(scheduled).await;
        let shared = Arc::clone(&shared);
        tasks.spawn(async move { one(&shared, scheduled).await });
    }
    let sent_for = start.elapsed();

    let mut samples = Vec::with_capacity(args.requests);
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut timed_out = 0usize;
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(Ok(s)))) => samples.push(s),
            Ok(Some(Ok(Err(e)))) => *errors.entry(e).or_default() += 1,
            Ok(Some(Err(e))) => *errors.entry(format!("task: {e}")).or_default() += 1,
            Ok(None) => break,
            Err(_) => {
                timed_out = tasks.len();
                tasks.abort_all();
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    report(
        &args,
        &samples,
        &errors,
        not_started + timed_out,
        sent_for,
        elapsed,
        shared.peak_open.load(Ordering::Relaxed),
    )
}

fn percentiles(mut v: Vec<Duration>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1].as_secs_f64() * 1e3
    };
    let mean = v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64 * 1e3;
    json!({
        "p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "p99.9": at(0.999),
        "max": at(1.0), "mean": mean, "count": v.len(),
    })
}

fn report(
    args: &Args,
    samples: &[Sample],
    errors: &BTreeMap<String, usize>,
    unfinished: usize,
    sent_for: Duration,
    elapsed: Duration,
    peak_open: usize,
) -> Value {
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for s in samples {
        *statuses.entry(s.status.to_string()).or_default() += 1;
    }
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.status == 200).collect();
    let late = |d: Duration, s: &Sample| d + s.lateness;
    json!({
        "requests": args.requests,
        "rate": args.rate,
        "completed": samples.len(),
        "ok": ok.len(),
        "statuses": statuses,
        "errors": errors,
        "unfinished": unfinished,
        "send_seconds": sent_for.as_secs_f64(),
        "elapsed_seconds": elapsed.as_secs_f64(),
        "peak_open": peak_open,
        "bytes": ok.iter().map(|s| s.bytes).sum::<usize>(),
        "latency_ms": {
            "head": percentiles(ok.iter().map(|s| s.head).collect()),
            "first_event": percentiles(ok.iter().filter_map(|s| s.first_event).collect()),
            "last_byte": percentiles(ok.iter().map(|s| s.last_byte).collect()),
        },
        "latency_from_schedule_ms": {
            "head": percentiles(ok.iter().map(|s| late(s.head, s)).collect()),
            "first_event": percentiles(
                ok.iter().filter_map(|s| s.first_event.map(|d| late(d, s))).collect()
            ),
            "last_byte": percentiles(ok.iter().map(|s| late(s.last_byte, s)).collect()),
            "lateness": percentiles(ok.iter().map(|s| s.lateness).collect()),
        },
    })
}

/// Decrements the open-response count when a response ends, however it ends.
struct OpenGuard<'a>(&'a AtomicUsize);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn one(shared: &Shared, scheduled: Instant) -> Result<Sample, String> {
    let _permit = shared
        .conns
        .acquire()
        .await
        .map_err(|e| format!("semaphore: {e}"))?;
    let reused = shared.idle.lock().await.pop();
    let mut conn = match reused {
        Some(c) => c,
        None => {
            let c = TcpStream::connect(shared.addr)
                .await
                .map_err(|e| format!("connect: {}", e.kind()))?;
            c.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
            c
        }
    };
    let sent = Instant::now();
    conn.write_all(&shared.request)
        .await
        .map_err(|e| format!("write: {}", e.kind()))?;
    let mut reader = Reader::new();
    let head_end = reader.fill_until_head(&mut conn).await?;
    let head = reader.first_byte.map_or(Duration::ZERO, |t| t - sent);
    let n = shared.open.fetch_add(1, Ordering::Relaxed) + 1;
    let _open = OpenGuard(&shared.open);
    shared.peak_open.fetch_max(n, Ordering::Relaxed);
    let parsed = parse_head(&reader.buf[..head_end])?;
    reader.consume(head_end);
    let mut first_event = None;
    let mut mark = |len: usize| {
        if len > 0 && first_event.is_none() {
            first_event = Some(Instant::now() - sent);
        }
    };
    let (bytes, reusable) = match parsed.framing {
        Framing::Chunked => (reader.read_chunked(&mut conn, &mut mark).await?, true),
        Framing::Length(n) => (reader.read_exact_body(&mut conn, n, &mut mark).await?, true),
        Framing::UntilClose => (reader.read_to_close(&mut conn, &mut mark).await?, false),
    };
    let last_byte = Instant::now() - sent;
    if reusable && parsed.keep_alive {
        shared.idle.lock().await.push(conn);
    }
    Ok(Sample {
        status: parsed.status,
        lateness: sent.saturating_duration_since(scheduled),
        head,
        first_event,
        last_byte,
        bytes,
    })
}

enum Framing {
    Chunked,
    Length(usize),
    UntilClose,
}

struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

fn parse_head(raw: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "response head is not UTF-8".to_owned())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut framing = Framing::UntilClose;
    let mut keep_alive = status_line.starts_with("HTTP/1.1");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("content-length")
            && !matches!(framing, Framing::Chunked)
        {
            let n = value
                .parse::<usize>()
                .map_err(|_| format!("bad content-length {value:?}"))?;
            framing = Framing::Length(n);
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        }
    }
    // Statuses without a body.
    if status == 204 || status == 304 || (100..200).contains(&status) {
        framing = Framing::Length(0);
    }
    Ok(Head {
        status,
        framing,
        keep_alive,
    })
}

/// A read buffer over one connection.
struct Reader {
    buf: Vec<u8>,
    first_byte: Option<Instant>,
}

impl Reader {
    fn new() -> Self {
        Self {
            buf: Vec::with_capacity(8192),
            first_byte: None,
        }
    }

    /// Reads more; an end of stream is an error (the caller still expects bytes).
    async fn more(&mut self, conn: &mut TcpStream) -> Result<(), String> {
        if self.read_some(conn).await? == 0 {
            return Err("connection closed early".to_owned());
        }
        Ok(())
    }

    async fn read_some(&mut self, conn: &mut TcpStream) -> Result<usize, String> {
        let mut chunk = [0u8; 16384];
        let n = conn
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {}", e.kind()))?;
        if n > 0 && self.first_byte.is_none() {
            self.first_byte = Some(Instant::now());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
    }

    fn find(&self, needle: &[u8]) -> Option<usize> {
        self.buf.windows(needle.len()).position(|w| w == needle)
    }

    /// Fills until the head's blank line; returns the head's length including it.
    async fn fill_until_head(&mut self, conn: &mut TcpStream) -> Result<usize, String> {
        loop {
            if let Some(i) = self.find(b"\r\n\r\n") {
                return Ok(i + 4);
            }
            if self.buf.len() > 64 * 1024 {
                return Err("response head too large".to_owned());
            }
            self.more(conn).await?;
        }
    }

    async fn read_chunked(
        &mut self,
        conn: &mut TcpStream,
        mark: &mut impl FnMut(usize),
    ) -> Result<usize, String> {
        let mut total = 0;
        loop {
            let line_end = loop {
                if let Some(i) = self.find(b"\r\n") {
                    break i;
                }
                self.more(conn).await?;
            };
            let line = std::str::from_utf8(&self.buf[..line_end])
                .map_err(|_| "bad chunk size".to_owned())?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            self.consume(line_end + 2);
            if size == 0 {
                // Trailers (normally none), then the final blank line.
                loop {
                    if self.buf.starts_with(b"\r\n") {
                        self.consume(2);
                        return Ok(total);
                    }
                    if let Some(i) = self.find(b"\r\n\r\n") {
                        self.consume(i + 4);
                        return Ok(total);
                    }
                    self.more(conn).await?;
                }
            }
            while self.buf.len() < size + 2 {
                self.more(conn).await?;
            }
            mark(size);
            total += size;
            self.consume(size + 2);
        }
    }

    async fn read_exact_body(
        &mut self,
        conn: &mut TcpStream,
        len: usize,
        mark: &mut impl FnMut(usize),
    ) -> Result<usize, String> {
        if !self.buf.is_empty() {
            mark(self.buf.len().min(len));
        }
        while self.buf.len() < len {
            self.more(conn).await?;
            mark(self.buf.len());
        }
        self.consume(len);
        Ok(len)
    }

    async fn read_to_close(
        &mut self,
        conn: &mut TcpStream,
        mark: &mut impl FnMut(usize),
    ) -> Result<usize, String> {
        mark(self.buf.len());
        while self.read_some(conn).await? > 0 {
            mark(self.buf.len());
        }
        Ok(self.buf.len())
    }
}
