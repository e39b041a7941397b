//! Reliefline: surge-ready harm-report intake and outage notification.
//!
//! See README.md for the map of modules.

pub mod app;
pub mod cases;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod http;
pub mod incident;
pub mod intake;
pub mod notify;
pub mod ratelimit;
pub mod store;
pub mod subscribe;
pub mod telemetry;
pub mod wakeup;
pub mod web;

pub use app::{App, AppState};
pub use config::Config;
