//! MAIL FROM: reverse path, SIZE, BODY, SMTPUTF8, RET, ENVID.

use std::borrow::Cow;

use relay_types::{BodyType, DsnRet, Envelope};
use smtp_proto::{
    MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8, MailFrom,
};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Session, Transaction, first_unsupported_key};
use crate::SessionBackend;
use crate::address::{Mailbox, raw_param, split_path};
use crate::reply;

/// Parameters we advertise for MAIL (SIZE, 8BITMIME, SMTPUTF8, DSN).
const MAIL_PARAMS: &[&str] = &["SIZE", "BODY", "SMTPUTF8", "RET", "ENVID"];

impl<S, B> Session<S, B>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: SessionBackend,
{
    /// `from` is smtp-proto's validated parse; `raw` the command line, for
    /// the path exactly as written and the raw parameter values.
    pub(super) fn mail(&mut self, from: &MailFrom<Cow<'_, str>>, raw: &str) -> Flow {
        let Some(helo) = &self.helo else {
            return self.respond(reply::bad_sequence("send HELO/EHLO first"));
        };
        if self.tx.is_some() {
            return self.respond(reply::bad_sequence("nested MAIL command"));
        }
        // Submission (587, 465): TLS, then a login, before any mail.
        if self.config.role.requires_auth() && self.login.is_none() {
            if !self.conn.is_tls() {
                return self.respond(reply::starttls_first());
            }
            return self.respond(reply::auth_required());
        }
        // Drained (or a replica that takes no mail): the transaction before
        // this one finished; the client takes the next one elsewhere.
        if !self.backend.accepting() {
            return self.respond(reply::not_accepting(&self.config.hostname));
        }
        let Some(path) = split_path(raw) else {
            return self.respond(reply::bad_sender_syntax());
        };
        if let Some(key) = first_unsupported_key(path.params, MAIL_PARAMS) {
            return self.respond(reply::unsupported_parameter(&key));
        }
        if from.flags & MAIL_BODY_BINARYMIME != 0 {
            // Not advertised: CHUNKING bodies are CRLF text here too.
            return self.respond(reply::unsupported_parameter("BODY=BINARYMIME"));
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !path.text.is_ascii() {
            return self.respond(reply::needs_smtputf8());
        }
        let declared_size = raw_param(path.params, "SIZE").map(|_| from.size as u64);
        if declared_size.is_some_and(|s| s > self.config.max_message_size) {
            return self.respond(reply::message_too_big());
        }
        if !self.backend.has_room_for(declared_size) {
            tracing::warn!(
                declared_size,
                "MAIL refused: too little free space in the queue file system"
            );
            return self.respond(reply::insufficient_storage());
        }
        let envelope = Envelope {
            reverse_path: Mailbox::parse(path.text).address,
            recipients: Vec::new(),
            declared_size,
            body_type: if from.flags & MAIL_BODY_8BITMIME != 0 {
                BodyType::EightBitMime
            } else {
                BodyType::SevenBit
            },
            smtputf8,
            // Kept as sent (xtext), like ORCPT.
            envid: raw_param(path.params, "ENVID").map(str::to_string),
            ret: if from.flags & MAIL_RET_HDRS != 0 {
                Some(DsnRet::Headers)
            } else if from.flags & MAIL_RET_FULL != 0 {
                Some(DsnRet::Full)
            } else {
                None
            },
            helo: helo.name.clone(),
            client_addr: self.peer.to_string(),
            // Who relayed it, as the envelope promises; it was None even
            // after a login (found by fuzz/session).
            auth_user: self.login.clone(),
        };
        self.tx = Some(Transaction {
            envelope,
            bdat: None,
        });
        self.respond(reply::sender_ok())
    }
}
