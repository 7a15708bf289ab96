//! A raw SMTP client for hostile-client tests: it writes exactly the bytes it is given (bare
//! LF, NUL, pipelined commands, over-long lines) and reads replies as the server sent them.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any one reply may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

/// One reply: its code, and its lines without the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    /// `550 5.7.1` style: the code and the enhanced status, if any.
    pub fn status(&self) -> String {
        match self.text.split_whitespace().next() {
            Some(e) if e.chars().next().is_some_and(|c| c.is_ascii_digit()) && e.contains('.') => {
                format!("{} {e}", self.code)
            }
            _ => self.code.to_string(),
        }
    }
}

/// A connection, plain or (after [`Raw::starttls`]) TLS.
pub struct Raw<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl Raw<TcpStream> {
    /// Connects from 127.0.0.1 and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> (Raw, Reply) {
        Raw::connect_from(addr, "127.0.0.1").await
    }

    /// Connects from a chosen loopback address and reads the greeting.
    pub async fn connect_from(addr: SocketAddr, source: &str) -> (Raw, Reply) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let greeting = raw.reply().await.expect("a greeting");
        (raw, greeting)
    }

    /// After the server's 220 to STARTTLS: shakes hands trusting `roots`; returns the TLS
    /// connection and any bytes the server had sent in the clear after its 220.
    pub async fn starttls(
        self,
        roots: rustls::RootCertStore,
        name: &str,
    ) -> (Raw<tokio_rustls::client::TlsStream<TcpStream>>, Vec<u8>) {
        let (raw, leftover) = self.starttls_as(roots, name, None).await.unwrap();
        (raw, leftover)
    }

    /// As [`Raw::starttls`], presenting a client certificate when given; the handshake's
    /// error when the server refuses it.
    pub async fn starttls_as(
        mut self,
        roots: rustls::RootCertStore,
        name: &str,
        client: Option<&super::tls::Pem>,
    ) -> std::io::Result<(Raw<tokio_rustls::client::TlsStream<TcpStream>>, Vec<u8>)> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some(pem) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(pem.cert.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap(),
                    PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let leftover = std::mem::take(&mut self.buf);
        let mut tls = connector
            .connect(name.to_string().try_into().unwrap(), self.stream)
            .await?;
        // TLS 1.3 reports a refused client certificate only at the first read.
        use tokio::io::AsyncWriteExt;
        tls.flush().await?;
        Ok((
            Raw {
                stream: tls,
                buf: Vec::new(),
            },
            leftover,
        ))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    /// Writes the bytes as one write.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Writes, tolerating a server that has already closed.
    pub async fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> bool {
        self.stream.write_all(bytes.as_ref()).await.is_ok() && self.stream.flush().await.is_ok()
    }

    /// The next reply, or None when the server closed the connection first.
    pub async fn reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await?;
            let code: u16 = line.get(..3)?.parse().ok()?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or_default().to_string());
            if !more {
                return Some(Reply {
                    code,
                    text: lines.join("\n"),
                });
            }
        }
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n")).await;
        self.reply()
            .await
            .unwrap_or_else(|| panic!("no reply to {line:?}"))
    }

    /// Whether the server has closed the connection (reads until EOF, at most `WAIT`).
    pub async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return false,
            }
        }
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..p + 2).collect();
                return Some(String::from_utf8_lossy(&line[..p]).to_string());
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("no reply within {WAIT:?}"),
            }
        }
    }
}
