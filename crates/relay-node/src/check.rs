//! `relayd --health-check URL`: a one-shot probe for container health
//! checks and service managers.
//!
//! The Docker image is `FROM scratch`: there is no shell, curl or nc to run
//! a health check with, so `relayd` itself asks. Two URL forms:
//!
//! - `http://HOST:PORT/PATH`: one `GET`; healthy on a `2xx` status (use
//!   `/readyz` for "can commit mail now", `/healthz` for "process up");
//! - `smtp://HOST:PORT`: healthy when the server greets with `220`
//!   (then `QUIT`); for the demo target, which has no HTTP.
//!
//! Blocking std sockets with a deadline per step: no runtime is started.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a probe did not find the service healthy.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The URL is not `http://HOST:PORT/PATH` or `smtp://HOST:PORT`.
    #[error("{0:?} is not http://HOST:PORT/PATH or smtp://HOST:PORT")]
    BadUrl(String),
    /// Could not resolve, connect, write or read.
    #[error("{addr}: {source}")]
    Io {
        /// What was asked.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The service answered, but not healthy.
    #[error("{0}")]
    Unhealthy(String),
}

/// Largest answer read (a readiness line, a greeting).
const MAX_ANSWER: u64 = 64 * 1024;

/// Probes `url`; `Ok` holds the service's one-line answer.
pub fn health_check(url: &str, timeout: Duration) -> Result<String, CheckError> {
    let bad = || CheckError::BadUrl(url.to_string());
    if let Some(rest) = url.strip_prefix("http://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(bad());
        }
        http_get(authority, path, timeout)
    } else if let Some(rest) = url.strip_prefix("smtp://") {
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad());
        }
        smtp_greeting(authority, timeout)
    } else {
        Err(bad())
    }
}

fn connect(authority: &str, timeout: Duration) -> Result<TcpStream, CheckError> {
    let io = |source| CheckError::Io {
        addr: authority.to_string(),
        source,
    };
    let addrs: Vec<SocketAddr> = authority.to_socket_addrs().map_err(io)?.collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                stream.set_read_timeout(Some(timeout)).map_err(io)?;
                stream.set_write_timeout(Some(timeout)).map_err(io)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(io(last))
}

fn http_get(authority: &str, path: &str, timeout: Duration) -> Result<String, CheckError> {
    let io = |source| CheckError::Io {
        addr: authority.to_string(),
        source,
    };
    let mut stream = connect(authority, timeout)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(io)?;
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CheckError::Unhealthy(format!("not an HTTP answer: {status_line:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.lines().next().unwrap_or("").to_string())
        .unwrap_or_default();
    if (200..300).contains(&status) {
        Ok(format!("{status} {body}"))
    } else {
        Err(CheckError::Unhealthy(format!("{status} {body}")))
    }
}

fn smtp_greeting(authority: &str, timeout: Duration) -> Result<String, CheckError> {
    let io = |source| CheckError::Io {
        addr: authority.to_string(),
        source,
    };
    let stream = connect(authority, timeout)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(io)?).take(MAX_ANSWER);
    // A multi-line greeting is `220-...` lines, then `220 ...`.
    let mut last = String::new();
    loop {
        last.clear();
        if reader.read_line(&mut last).map_err(io)? == 0 {
            return Err(CheckError::Unhealthy("closed before the greeting".into()));
        }
        if last.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    let greeting = last.trim_end().to_string();
    let _ = (&stream).write_all(b"QUIT\r\n");
    if greeting.starts_with("220") {
        Ok(greeting)
    } else {
        Err(CheckError::Unhealthy(greeting))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-connection server on 127.0.0.1 that sends `answer` (after
    /// reading the request head, for HTTP) and returns what it read.
    fn serve_once(
        answer: &'static str,
        read_head: bool,
    ) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut head = Vec::new();
            if read_head {
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).expect("read");
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
            }
            stream.write_all(answer.as_bytes()).expect("write");
            if !read_head {
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
                head = rest;
            }
            String::from_utf8_lossy(&head).into_owned()
        });
        (addr, handle)
    }

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn http_2xx_is_healthy_and_the_path_is_asked() {
        let (addr, server) = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nready: yes\n",
            true,
        );
        let answer = health_check(&format!("http://{addr}/readyz"), T).expect("healthy");
        assert_eq!(answer, "200 ready: yes");
        assert!(
            server
                .join()
                .unwrap()
                .starts_with("GET /readyz HTTP/1.1\r\n")
        );
    }

    #[test]
    fn http_503_is_unhealthy_with_the_reason() {
        let (addr, _server) = serve_once(
            "HTTP/1.1 503 Service Unavailable\r\n\r\nnot ready: no leader\n",
            true,
        );
        match health_check(&format!("http://{addr}/readyz"), T) {
            Err(CheckError::Unhealthy(why)) => assert_eq!(why, "503 not ready: no leader"),
            other => panic!("expected unhealthy, got {other:?}"),
        }
    }

    #[test]
    fn smtp_220_is_healthy_and_quit_is_sent() {
        let (addr, server) = serve_once("220-demo\r\n220 demo ready\r\n", false);
        let answer = health_check(&format!("smtp://{addr}"), T).expect("healthy");
        assert_eq!(answer, "220 demo ready");
        assert_eq!(server.join().unwrap(), "QUIT\r\n");
    }

    #[test]
    fn smtp_421_is_unhealthy() {
        let (addr, _server) = serve_once("421 4.7.0 too busy\r\n", false);
        assert!(matches!(
            health_check(&format!("smtp://{addr}"), T),
            Err(CheckError::Unhealthy(g)) if g == "421 4.7.0 too busy"
        ));
    }

    #[test]
    fn nothing_listening_and_bad_urls_are_errors() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(matches!(
            health_check(&format!("http://127.0.0.1:{port}/healthz"), T),
            Err(CheckError::Io { .. })
        ));
        for url in ["127.0.0.1:9101", "ftp://x:1/", "http:///readyz", "smtp://"] {
            assert!(
                matches!(health_check(url, T), Err(CheckError::BadUrl(_))),
                "{url}"
            );
        }
    }
}
