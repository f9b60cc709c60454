//! RCPT TO: the relay policy, NOTIFY, ORCPT, the recipient limit.

use std::borrow::Cow;

use relay_types::{DsnNotify, Recipient};
use smtp_proto::{
    RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS, RcptTo,
};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Flow, Session, first_unsupported_key};
use crate::address::{Mailbox, raw_param, split_path};
use crate::policy::{self, RelayDecision};
use crate::reply;
use crate::{RecipientVerdict, SessionBackend};

/// Parameters we advertise for RCPT (DSN).
const RCPT_PARAMS: &[&str] = &["NOTIFY", "ORCPT"];

impl<S, B> Session<S, B>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: SessionBackend,
{
    pub(super) async fn rcpt(&mut self, to: &RcptTo<Cow<'_, str>>, raw: &str) -> Flow {
        if self.helo.is_none() {
            return self.respond(reply::bad_sequence("send HELO/EHLO first"));
        }
        let Some(tx) = &self.tx else {
            return self.respond(reply::bad_sequence("need MAIL command"));
        };
        if tx.bdat.is_some() {
            return self.respond(reply::bad_sequence("BDAT transfer in progress"));
        }
        let smtputf8 = tx.envelope.smtputf8;
        let count = tx.envelope.recipients.len();
        let Some(path) = split_path(raw).filter(|p| !p.text.is_empty()) else {
            return self.respond(reply::bad_recipient_syntax());
        };
        if let Some(key) = first_unsupported_key(path.params, RCPT_PARAMS) {
            return self.respond(reply::unsupported_parameter(&key));
        }
        if !smtputf8 && !path.text.is_ascii() {
            return self.respond(reply::needs_smtputf8());
        }
        if count >= self.config.max_recipients {
            return self.respond(reply::too_many_recipients());
        }
        let mailbox = Mailbox::parse(path.text);
        let backend = &self.backend;
        match policy::decide(&mailbox, self.authorized, |d| backend.is_relay_domain(d)) {
            RelayDecision::Accept => {}
            RelayDecision::Denied => {
                tracing::info!(domain = %mailbox.normalized_domain(), "relay access denied");
                return self.respond(reply::relay_denied(&mailbox.address));
            }
            RelayDecision::RoutingRefused(form) => {
                tracing::info!(form = form.describe(), "routing form refused");
                return self.respond(reply::routing_refused(path.text, form.describe()));
            }
            RelayDecision::Unqualified => {
                return self.respond(reply::unqualified_recipient(&mailbox.address));
            }
        }
        if let Some(lists) = &self.config.recipients
            && lists.accepts(&mailbox.normalized_domain(), &mailbox.local) == Some(false)
        {
            tracing::info!(domain = %mailbox.normalized_domain(), "recipient not in the domain's list");
            metrics::counter!(crate::metrics::UNKNOWN_RECIPIENTS).increment(1);
            return self.respond(reply::unknown_recipient(&mailbox.address));
        }
        match self
            .backend
            .verify_recipient(&mailbox.normalized_domain(), &mailbox.address)
            .await
        {
            RecipientVerdict::Exists => {}
            RecipientVerdict::Unknown => {
                tracing::info!(domain = %mailbox.normalized_domain(), "recipient refused by verification");
                metrics::counter!(crate::metrics::UNKNOWN_RECIPIENTS).increment(1);
                return self.respond(reply::undeliverable_recipient(&mailbox.address));
            }
            RecipientVerdict::TryLater => {
                return self.respond(reply::recipient_unverified(&mailbox.address));
            }
        }
        let recipient = Recipient {
            address: mailbox.address,
            // As sent, xtext-encoded (`rfc822;bob+40example.test`).
            orcpt: raw_param(path.params, "ORCPT").map(str::to_string),
            notify: DsnNotify {
                never: to.flags & RCPT_NOTIFY_NEVER != 0,
                success: to.flags & RCPT_NOTIFY_SUCCESS != 0,
                failure: to.flags & RCPT_NOTIFY_FAILURE != 0,
                delay: to.flags & RCPT_NOTIFY_DELAY != 0,
            },
        };
        let Some(tx) = &mut self.tx else {
            return Flow::Continue;
        };
        // The same address twice is accepted once (the first parameters win).
        if !tx
            .envelope
            .recipients
            .iter()
            .any(|r| r.address == recipient.address)
        {
            tx.envelope.recipients.push(recipient);
        }
        self.respond(reply::recipient_ok())
    }
}
