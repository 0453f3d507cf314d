use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::*;

fn settings() -> UpstreamSettings {
    UpstreamSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        first_byte_timeout: Duration::from_secs(5),
        stream_idle_timeout: Duration::from_secs(5),
    }
}

/// Both transports: hyper's client directly, and reqwest (what a configured proxy selects).
fn both_clients() -> [(&'static str, HttpClient); 2] {
    [
        (
            "direct",
            build_with_roots(&settings(), true, Vec::new()).unwrap(),
        ),
        (
            "proxied",
            build_with_roots(&settings(), false, Vec::new()).unwrap(),
        ),
    ]
}

/// A head deadline no test reaches.
const HEAD_DUE: CallDeadline = CallDeadline::Head(Duration::from_secs(5));

/// A POST of `{}` without headers.
async fn post(client: &HttpClient, url: &Url) -> Result<UpstreamResponse, TransportError> {
    client
        .send(
            Method::POST,
            url,
            HeaderMap::new(),
            Bytes::from_static(b"{}"),
            HEAD_DUE,
        )
        .await
}

/// Reads one request head and answers it with `answer(head)`; then keeps the connection open
/// for `hold` (a stalled body) before closing.
async fn answer_once<S>(mut socket: S, answer: impl FnOnce(&str) -> Vec<u8>, hold: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client closed before its request head ended");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8(head).unwrap();
    socket.write_all(&answer(&head)).await.unwrap();
    socket.flush().await.unwrap();
    tokio::time::sleep(hold).await;
}

/// A loopback server answering each connection's first request with `answer(head)`.
async fn serve(answer: fn(&str) -> Vec<u8>, hold: Duration) -> (Url, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!(
        "http://{}/v1/messages",
        listener.local_addr().unwrap()
    ))
    .unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::spawn(answer_once(socket, answer, hold));
        }
    });
    (url, server)
}

/// Answers with the request head as the body, and closes the connection.
fn echo_head(head: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{head}",
        head.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn the_gateways_user_agent_goes_only_where_the_client_sent_none() {
    let (url, server) = serve(echo_head, Duration::ZERO).await;
    for (transport, client) in both_clients() {
        let plain = post(&client, &url).await.unwrap();
        assert_eq!(plain.status(), StatusCode::OK, "{transport}");
        let head = plain.bytes().await.unwrap();
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(
            head.starts_with("post /v1/messages http/1.1"),
            "{transport}: {head}"
        );
        assert!(
            head.contains(&format!("user-agent: {}", USER_AGENT.to_lowercase())),
            "{transport}: {head}"
        );

        let mut headers = HeaderMap::new();
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static("claude-cli/2.0"),
        );
        let own = client
            .send(
                Method::POST,
                &url,
                headers,
                Bytes::from_static(b"{}"),
                HEAD_DUE,
            )
            .await
            .unwrap();
        let head = String::from_utf8_lossy(&own.bytes().await.unwrap()).to_lowercase();
        assert!(
            head.contains("user-agent: claude-cli/2.0"),
            "{transport}: {head}"
        );
        assert!(!head.contains("aibridge/"), "{transport}: {head}");
    }
    server.abort();
}

/// A head, then 10 of the 100 bytes it announces, then silence.
fn stalled_body(_: &str) -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789".to_vec()
}

#[tokio::test]
async fn a_whole_deadline_cuts_a_body_that_stops_coming_as_a_timeout() {
    let (url, server) = serve(stalled_body, Duration::from_secs(10)).await;
    for (transport, client) in both_clients() {
        let limit = Duration::from_millis(300);
        let sent = Instant::now();
        let response = client
            .send(
                Method::POST,
                &url,
                HeaderMap::new(),
                Bytes::new(),
                CallDeadline::Whole(limit),
            )
            .await
            .unwrap();
        let error = response.bytes().await.unwrap_err();
        assert!(error.is_timeout(), "{transport}: {error}");
        assert_eq!(error.to_string(), "timed out", "{transport}");
        assert!(
            sent.elapsed() >= limit,
            "{transport}: cut before the deadline"
        );
    }
    server.abort();
}

#[tokio::test]
async fn a_head_deadline_leaves_the_body_to_come_as_it_comes() {
    let (url, server) = serve(stalled_body, Duration::from_millis(300)).await;
    for (transport, client) in both_clients() {
        let mut response = client
            .send(Method::GET, &url, HeaderMap::new(), Bytes::new(), HEAD_DUE)
            .await
            .unwrap();
        assert_eq!(
            response.chunk().await.unwrap().as_deref(),
            Some(&b"0123456789"[..]),
            "{transport}"
        );
        // The server closes after 300 ms with 90 bytes missing: a body failure, not a timeout.
        let error = response.chunk().await.unwrap_err();
        assert_eq!(error.failure(), Failure::Body, "{transport}: {error}");
    }
    server.abort();
}

#[tokio::test]
async fn a_refused_connection_says_so_without_the_url() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!(
        "http://{}/v1/messages?key=secret",
        listener.local_addr().unwrap()
    ))
    .unwrap();
    drop(listener);
    for (transport, client) in both_clients() {
        let error = post(&client, &url).await.unwrap_err();
        assert_eq!(error.failure(), Failure::Connect, "{transport}: {error}");
        let text = error.to_string();
        assert!(
            text.starts_with("could not connect: "),
            "{transport}: {text}"
        );
        assert!(
            !text.contains("127.0.0.1") && !text.contains("secret"),
            "{transport}: {text}"
        );
    }
}

/// A self-signed certificate for `localhost` and a TLS acceptor with it, offering `alpn`.
fn tls_acceptor(
    alpn: &[&[u8]],
) -> (
    rustls::pki_types::CertificateDer<'static>,
    tokio_rustls::TlsAcceptor,
) {
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = issued.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(issued.signing_key.serialize_der().into());
    let mut server_tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    server_tls.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    (cert, tokio_rustls::TlsAcceptor::from(Arc::new(server_tls)))
}

type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// A TLS server on a free loopback port: each connection whose handshake succeeds goes to
/// `serve` (a client that does not trust the certificate ends the handshake). The port, and the
/// task to abort at the end.
async fn tls_server<F, Fut>(
    acceptor: tokio_rustls::TlsAcceptor,
    serve: F,
) -> (u16, tokio::task::JoinHandle<()>)
where
    F: Fn(TlsStream) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let serve = serve.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(socket).await {
                    serve(tls).await;
                }
            });
        }
    });
    (port, server)
}

#[tokio::test]
async fn an_https_upstream_is_reached_over_tls_with_the_trusted_roots() {
    let (cert, acceptor) = tls_acceptor(&[]);
    let (port, server) =
        tls_server(acceptor, |tls| answer_once(tls, echo_head, Duration::ZERO)).await;
    let url = Url::parse(&format!("https://localhost:{port}/v1/messages")).unwrap();

    let trusting = build_with_roots(&settings(), true, vec![cert]).unwrap();
    let response = post(&trusting, &url).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let head = response.bytes().await.unwrap();
    assert!(head.starts_with(b"POST /v1/messages HTTP/1.1"));

    // Only the public roots: the self-signed certificate is refused.
    let public = build_with_roots(&settings(), true, Vec::new()).unwrap();
    let error = post(&public, &url).await.unwrap_err();
    assert_eq!(error.failure(), Failure::Connect, "{error}");
    assert!(error.to_string().contains("certificate"), "{error}");
    server.abort();
}

#[tokio::test]
async fn an_https_upstream_that_offers_http2_is_spoken_to_in_http2() {
    let (cert, acceptor) = tls_acceptor(&[b"h2", b"http/1.1"]);
    let (port, server) = tls_server(acceptor, |tls| async move {
        // Answers with the HTTP version the request came in.
        let answer = hyper::service::service_fn(|request: http::Request<_>| async move {
            let version = format!("{:?}", request.version());
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(version))))
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(tls), answer)
            .await;
    })
    .await;
    let url = Url::parse(&format!("https://localhost:{port}/v1/messages")).unwrap();
    let client = build_with_roots(&settings(), true, vec![cert]).unwrap();
    for _ in 0..2 {
        let response = post(&client, &url).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(&response.bytes().await.unwrap()[..], b"HTTP/2.0");
    }
    server.abort();
}
