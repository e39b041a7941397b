//! Integration tests: one binary, each test spawning the real service (or the real store) on a
//! fresh database. Tests that exist per backend run on SQLite and on PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod helpers;

mod browser;
mod cases;
mod cli;
mod fuzz;
mod incidents;
mod intake;
mod journeys;
mod notify;
mod ops;
mod rate_limits;
mod store_contract;
mod store_incidents;
mod subscriptions;
mod web;
