//! relay-smtp
