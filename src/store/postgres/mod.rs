//! PostgreSQL: the production store, shared by several replicas.

use std::str::FromStr as _;

use anyhow::Context as _;
use async_trait::async_trait;
use secrecy::ExposeSecret as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{Conflict, Store, StoreError, StoreResult};
use crate::config::DatabaseConfig;

mod audit;
mod fanout;
mod incidents;
mod outbox;
mod reports;
mod subscriptions;

const PING: &str = "SELECT 1";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Build the pool without connecting: the service starts (and reports not-ready) while
    /// PostgreSQL is briefly away; migrations at start-up still need it.
    pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(config.url.expose_secret())
            .context("database.url is not a valid PostgreSQL URL")?
            .application_name("reliefline")
            // Acknowledged means durable: never let a server default weaken commits.
            .options([("synchronous_commit", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout())
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    pub(super) fn error(e: sqlx::Error) -> StoreError {
        StoreError::from_sqlx(e, conflict_of)
    }
}

fn conflict_of(constraint: &str) -> Conflict {
    match constraint {
        "reports_receipt_key" => Conflict::Receipt,
        "reports_idempotency_key_key" => Conflict::IdempotencyKey,
        _ => Conflict::Other,
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .context("applying PostgreSQL migrations")?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query(PING)
            .execute(&self.pool)
            .await
            .map_err(Self::error)?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
