//! EHLO, HELO and STARTTLS: greeting the client, what it is offered (STARTTLS while the
//! connection is plain and the connector has a certificate, XOORG to a peer whose
//! certificate the connector trusts for it), and the TLS handshake, after which the client
//! starts over.

use super::{End, Hello, Session, State};
use crate::model::InboundTls;
use crate::relay::tls::{ClientCert, peer_name, trusted_for_oorg};
use crate::smtp::reply::Reply;
use crate::stream::Stream;
use std::sync::Arc;

impl Session {
    pub(super) async fn ehlo(&mut self, name: String) -> Result<(), End> {
        let r = self.ehlo_reply(&name);
        self.state = State::Greeted(Hello { name, esmtp: true });
        self.ok_or_close(r).await
    }

    pub(super) async fn helo(&mut self, name: String) -> Result<(), End> {
        let r = Reply::new(250, "", format!("{} Hello {name}", self.fqdn()));
        self.state = State::Greeted(Hello { name, esmtp: false });
        self.ok_or_close(r).await
    }

    pub(super) fn xoorg_offered(&self) -> bool {
        self.tls_active && trusted_for_oorg(self.tls_peer.as_deref(), self.conn())
    }

    fn tls_offered(&self) -> bool {
        !self.tls_active
            && self.conn().tls.value != InboundTls::Off
            && self.shared.tls_config(&self.conn().name.value).is_some()
    }

    fn ehlo_reply(&self, name: &str) -> Reply {
        let mut lines = vec![format!("{} Hello {name} [{}]", self.fqdn(), self.peer.ip())];
        lines.push("PIPELINING".into());
        lines.push(format!("SIZE {}", self.conn().limits.max_message_size));
        lines.push("8BITMIME".into());
        lines.push("ENHANCEDSTATUSCODES".into());
        if self.tls_offered() {
            lines.push("STARTTLS".into());
        }
        lines.push("CHUNKING".into());
        lines.push("SMTPUTF8".into());
        lines.push("DSN".into());
        if self.xoorg_offered() {
            lines.push("XOORG".into());
        }
        Reply::multi(250, "", lines)
    }

    pub(super) async fn starttls(&mut self) -> Result<(), End> {
        if self.tls_active {
            return self
                .ok_or_close(Reply::new(503, "5.5.1", "TLS is already active"))
                .await;
        }
        let config = if self.conn().tls.value == InboundTls::Off {
            None
        } else {
            self.shared.tls_config(&self.conn().name.value)
        };
        let Some(config) = config else {
            return self
                .ok_or_close(Reply::new(502, "5.5.1", "STARTTLS is not offered"))
                .await;
        };
        if !self
            .reply(Reply::new(220, "2.0.0", "ready to start TLS"))
            .await
        {
            return Err(End::Closed);
        }
        // Anything the client sent after STARTTLS in the clear is thrown away (CVE-2011-0411):
        // it must not be read as if it came over TLS.
        self.buf.clear();
        let Stream::Plain(plain) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(End::Closed);
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&config.config));
        let handshake = tokio::time::timeout(
            self.conn().limits.inactivity_timeout,
            acceptor.accept(plain),
        )
        .await;
        match handshake {
            Ok(Ok(tls)) => {
                let (_, conn) = tls.get_ref();
                self.tls_peer = match config.client_cert(conn.peer_certificates()) {
                    ClientCert::Verified(certs) => peer_name(&certs, self.conn()),
                    ClientCert::None => None,
                    ClientCert::Unverified(why) => {
                        tracing::info!(client = %self.peer, "client certificate not verified ({why}): treated as no certificate");
                        None
                    }
                };
                self.stream = Stream::Tls(Box::new(tls.into()));
                self.tls_active = true;
                // RFC 3207: the client starts over, EHLO first.
                self.state = State::Connected;
                tracing::debug!(client = %self.peer, peer = ?self.tls_peer, "tls established");
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::info!(client = %self.peer, "tls handshake failed: {e}");
                Err(End::Closed)
            }
            Err(_) => Err(End::Timeout),
        }
    }
}
