//! Oblivious HTTP in the tests: the independent OHTTP relay as a process of its own
//! ([`OhttpRelay`], the published `ohttp-relay` crate built as `src/bin/ohttp-relay.rs`),
//! and plain HTTP/1.1 requests to the gateway ([`http_request`], [`fetch_key_config`]).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
};

/// The loopback address the OHTTP relay is reached on (it binds every address).
pub const RELAY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// How long the relay process may take to listen.
const START: Duration = Duration::from_secs(20);

/// An `ohttp-relay` process forwarding to one gateway; killed when dropped.
pub struct OhttpRelay {
    child: Child,
    addr: SocketAddr,
}

impl OhttpRelay {
    /// Starts `binary` (the `ohttp-relay` of this package) forwarding to the gateway at
    /// `gateway` (`http://gateway/.well-known/ohttp-gateway`), reachable on
    /// [`RELAY_IP`] at a free port. Panics if it does not listen within 20 s.
    pub async fn start(binary: &Path, gateway: SocketAddr) -> OhttpRelay {
        for _ in 0..5 {
            // It binds 0.0.0.0:PORT; a port free on every address now is very likely free
            // a moment later, and a clash only makes the process exit and this loop retry.
            let port = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut child = Command::new(binary)
                .env("PORT", port.to_string())
                .env("GATEWAY_ORIGIN", format!("http://{gateway}"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .expect("the ohttp-relay binary starts");
            let addr = SocketAddr::new(RELAY_IP, port);
            let deadline = tokio::time::Instant::now() + START;
            while tokio::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(addr).await.is_ok() {
                    return OhttpRelay { child, addr };
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill().await;
        }
        panic!("ohttp-relay did not start listening");
    }

    /// Where clients send their encapsulated requests.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The relay's address (on [`RELAY_IP`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// An HTTP answer: status, header fields (names lower-cased), body.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// Header fields in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<HttpAnswer> {
    let mut tcp = TcpStream::connect(addr).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await?;
    // A server may answer (413) and close before taking all of a body; read its answer anyway.
    let wrote = tcp.write_all(body).await;
    let mut raw = Vec::new();
    let read = tcp.read_to_end(&mut raw).await;
    if raw.is_empty() {
        wrote?;
        read?;
    }
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> std::io::Result<HttpAnswer> {
    let bad = || std::io::Error::other("not an HTTP/1.1 answer");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad())?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body).ok_or_else(bad)?;
    }
    Ok(HttpAnswer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).ok()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// The gateway's key configuration (`GET /.well-known/ohttp-gateway`), as an app's
/// build step would fetch it to ship with the app.
pub async fn fetch_key_config(gateway: SocketAddr) -> Vec<u8> {
    let answer = http_request(gateway, "GET", "/.well-known/ohttp-gateway", None, b"")
        .await
        .expect("the gateway answers");
    assert_eq!(answer.status, 200, "key configuration: {answer:?}");
    assert_eq!(answer.header("content-type"), Some("application/ohttp-keys"));
    answer.body
}

/// The established TCP connections of this machine: (local, remote) IPv4 socket addresses
/// (`/proc/net/tcp`), to see which peers a server accepted.
pub fn tcp_connections() -> Vec<(SocketAddr, SocketAddr)> {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return Vec::new();
    };
    let addr = |hex: &str| -> Option<SocketAddr> {
        let (ip, port) = hex.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        let port = u16::from_str_radix(port, 16).ok()?;
        // The kernel prints the address's bytes as a native-endian word.
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(ip.to_ne_bytes())),
            port,
        ))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // State 01 is ESTABLISHED.
            if cols.get(3) != Some(&"01") {
                return None;
            }
            Some((addr(cols.get(1)?)?, addr(cols.get(2)?)?))
        })
        .collect()
}
