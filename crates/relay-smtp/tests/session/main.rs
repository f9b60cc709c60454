//! SMTP sessions driven end to end over in-memory duplex streams (and real
//! loopback sockets for `serve`), against a recording fake backend. One
//! file per behaviour.

mod auth;
mod bdat_chunking;
mod commands;
mod common;
mod data_transfer;
mod ingress_listeners;
mod relay_policy;
mod server_limits;
mod smuggling;
mod starttls;
mod submit_and_shutdown;
