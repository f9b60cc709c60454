//! relay-ctl
