//! Public subscriptions to incident updates, with double opt-in.
//!
//! A request writes the pending subscription, its confirmation message (outbox) and a record of
//! that message (`confirmation_sends`, for the per-contact daily limit) in one transaction: the
//! limit is counted in the store so it holds across replicas and restarts. On PostgreSQL the
//! transaction first takes an advisory lock on the contact, so two concurrent requests for one
//! contact cannot both pass the count; SQLite's single writer serialises them anyway.
//!
//! The statements are the same on both backends; the implementation is written once as
//! [`impl_subscription_store!`].

use async_trait::async_trait;
use uuid::Uuid;

use super::outbox::{MessageChannel, NewMessage};
use super::{StoreResult, Timestamp};
use crate::crypto::SealedContact;

#[async_trait]
pub trait SubscriptionStore {
    /// Record a subscription request and queue its confirmation message, unless the contact has
    /// had `limit.max` confirmation messages since `limit.since`, or the same subscription
    /// (contact, channel, scope) is already confirmed. A pending or unsubscribed one of the same
    /// scope is replaced by the new request.
    async fn request_subscription(
        &self,
        request: &NewSubscription,
        limit: ContactLimit,
    ) -> StoreResult<SubscribeOutcome>;

    /// Confirm a pending subscription with the proof the subscriber presented.
    async fn confirm_subscription(&self, confirmation: &Confirm) -> StoreResult<ConfirmOutcome>;

    /// Stop every message to a subscription from now on; `false` when there is no such
    /// subscription or it was already unsubscribed.
    async fn unsubscribe(&self, id: Uuid, at: Timestamp) -> StoreResult<bool>;

    /// Forget confirmation sends older than `sends_before` and pending subscriptions created
    /// before `pending_before`. Returns how many rows went.
    async fn prune_subscriptions(
        &self,
        sends_before: Timestamp,
        pending_before: Timestamp,
    ) -> StoreResult<u64>;
}

/// What a subscription is about: one incident, or every incident of a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Incident(Uuid),
    Provider(String),
}

/// A subscription request, ready to store: contact sealed, code and token hashed.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub id: Uuid,
    pub channel: MessageChannel,
    pub contact: SealedContact,
    pub scope: Scope,
    pub lang: String,
    /// Keyed hash binding the confirmation code to this subscription.
    pub confirm_code_hmac: [u8; 32],
    /// Keyed hash of the unsubscribe token (the token itself is recomputed, never stored).
    pub unsubscribe_token_hmac: [u8; 32],
    pub at: Timestamp,
    /// The confirmation message, written in the same transaction.
    pub confirmation: NewMessage,
}

/// At most `max` confirmation messages to one contact since `since`.
#[derive(Debug, Clone, Copy)]
pub struct ContactLimit {
    pub max: u32,
    pub since: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// Stored as pending; the confirmation message is queued.
    Pending,
    /// The same subscription is already confirmed: nothing was written or sent.
    AlreadyConfirmed,
    /// The contact has had its share of confirmation messages; `oldest` is the earliest of them
    /// still counted. Nothing was written.
    Limited { oldest: Timestamp },
}

/// How a subscriber proves they asked for it.
#[derive(Debug, Clone)]
pub enum Proof {
    /// Keyed hash of the code they typed, bound to the subscription id.
    CodeHmac([u8; 32]),
    /// The link token, already checked by the caller (it is recomputed from the id).
    VerifiedToken,
}

#[derive(Debug, Clone)]
pub struct Confirm {
    pub id: Uuid,
    pub proof: Proof,
    pub at: Timestamp,
    /// Wrong codes a subscription tolerates; at this count no code works any more.
    pub max_attempts: u32,
    /// Pending subscriptions created before this have expired.
    pub issued_after: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmOutcome {
    Confirmed,
    /// Confirmed before (a link opened twice); nothing changed.
    AlreadyConfirmed,
    /// Unknown, expired, unsubscribed, out of attempts, or the wrong code.
    Invalid,
}

/// The first eight bytes of a contact's keyed hash, as the key of a PostgreSQL advisory lock.
pub(super) fn lock_key(hmac: &[u8; 32]) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hmac[..8]);
    i64::from_be_bytes(bytes)
}

/// Bound where a subscription has no incident, matching the expression of the
/// `subscriptions_identity` index.
pub(super) const NO_INCIDENT: Uuid = Uuid::nil();

pub(super) mod sql {
    pub const RECENT_SENDS: &str = "SELECT count(*), min(sent_at) FROM confirmation_sends \
         WHERE contact_hmac = $1 AND sent_at > $2";

    pub const FIND_SAME: &str = "SELECT id, state FROM subscriptions \
         WHERE contact_hmac = $1 AND channel = $2 \
         AND COALESCE(incident_id, $3) = $4 AND COALESCE(provider, '') = $5";

    pub const DELETE: &str = "DELETE FROM subscriptions WHERE id = $1";

    pub const INSERT: &str = "INSERT INTO subscriptions (id, channel, contact_enc, contact_hmac, \
         incident_id, provider, lang, state, confirm_token_hmac, unsubscribe_token_hmac, \
         created_at, confirm_attempts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10, 0)";

    pub const INSERT_SEND: &str = "INSERT INTO confirmation_sends (contact_hmac, sent_at, subscription_id) \
         VALUES ($1, $2, $3)";

    /// One outbox row; the outbox capability owns the table, this is only the columns a new
    /// message needs.
    pub const INSERT_MESSAGE: &str = "INSERT INTO outbox (id, channel, template, lang, \
         recipient_enc, payload, source_kind, source_id, state, attempts, next_attempt_at, \
         created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, $9, $10, $10)";

    pub const CONFIRM_BY_CODE: &str = "UPDATE subscriptions SET state = 'confirmed', \
         confirmed_at = $2 WHERE id = $1 AND state = 'pending' AND confirm_token_hmac = $3 \
         AND confirm_attempts < $4 AND created_at >= $5";

    pub const CONFIRM_BY_TOKEN: &str = "UPDATE subscriptions SET state = 'confirmed', \
         confirmed_at = $2 WHERE id = $1 AND state = 'pending' AND created_at >= $3";

    pub const STATE_OF: &str = "SELECT state, confirm_token_hmac FROM subscriptions WHERE id = $1";

    pub const COUNT_WRONG_CODE: &str = "UPDATE subscriptions \
         SET confirm_attempts = confirm_attempts + 1 WHERE id = $1 AND state = 'pending'";

    pub const UNSUBSCRIBE: &str = "UPDATE subscriptions SET state = 'unsubscribed', \
         unsubscribed_at = $2 WHERE id = $1 AND state <> 'unsubscribed'";

    pub const PRUNE_SENDS: &str = "DELETE FROM confirmation_sends WHERE sent_at < $1";

    pub const PRUNE_PENDING: &str =
        "DELETE FROM subscriptions WHERE state = 'pending' AND created_at < $1";
}

/// The implementation of [`SubscriptionStore`] for a store type on database `$db` whose pools
/// are `$read` and `$write`; `$lock` is the statement locking one contact for the rest of a
/// transaction (bound to [`lock_key`]), or `None` where writers are serialised anyway.
macro_rules! impl_subscription_store {
    ($store:ty, $db:ty, read: $read:ident, write: $write:ident, lock: $lock:expr) => {
        #[async_trait::async_trait]
        impl $crate::store::SubscriptionStore for $store {
            async fn request_subscription(
                &self,
                request: &$crate::store::NewSubscription,
                limit: $crate::store::ContactLimit,
            ) -> $crate::store::StoreResult<$crate::store::SubscribeOutcome> {
                use $crate::store::subscriptions::{NO_INCIDENT, lock_key, sql};
                use $crate::store::{Scope, SubscribeOutcome, from_millis, to_millis};
                let hmac = request.contact.hmac.as_slice();
                let (incident_id, provider) = match &request.scope {
                    Scope::Incident(id) => (Some(*id), None),
                    Scope::Provider(name) => (None, Some(name.as_str())),
                };
                let mut tx = self.$write.begin().await.map_err(Self::error)?;
                let lock: Option<&str> = $lock;
                if let Some(lock) = lock {
                    sqlx::query(lock)
                        .bind(lock_key(&request.contact.hmac))
                        .execute(&mut *tx)
                        .await
                        .map_err(Self::error)?;
                }
                let (sent, oldest): (i64, Option<i64>) = sqlx::query_as(sql::RECENT_SENDS)
                    .bind(hmac)
                    .bind(to_millis(limit.since))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(Self::error)?;
                if sent >= i64::from(limit.max) {
                    return Ok(SubscribeOutcome::Limited {
                        oldest: from_millis(oldest.unwrap_or_else(|| to_millis(request.at))),
                    });
                }
                let same: Option<(uuid::Uuid, String)> = sqlx::query_as(sql::FIND_SAME)
                    .bind(hmac)
                    .bind(request.channel.as_ref())
                    .bind(NO_INCIDENT)
                    .bind(incident_id.unwrap_or(NO_INCIDENT))
                    .bind(provider.unwrap_or_default())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(Self::error)?;
                match same {
                    Some((_, state)) if state == "confirmed" => {
                        return Ok(SubscribeOutcome::AlreadyConfirmed);
                    }
                    // A fresh id for every code sent: links and codes of earlier requests stop
                    // working, and the id answered reveals nothing about earlier requests.
                    Some((id, _)) => {
                        sqlx::query(sql::DELETE)
                            .bind(id)
                            .execute(&mut *tx)
                            .await
                            .map_err(Self::error)?;
                    }
                    None => {}
                }
                let at = to_millis(request.at);
                sqlx::query(sql::INSERT)
                    .bind(request.id)
                    .bind(request.channel.as_ref())
                    .bind(request.contact.ciphertext.as_slice())
                    .bind(hmac)
                    .bind(incident_id)
                    .bind(provider)
                    .bind(request.lang.as_str())
                    .bind(request.confirm_code_hmac.as_slice())
                    .bind(request.unsubscribe_token_hmac.as_slice())
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(Self::error)?;
                sqlx::query(sql::INSERT_SEND)
                    .bind(hmac)
                    .bind(at)
                    .bind(request.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(Self::error)?;
                let m = &request.confirmation;
                sqlx::query(sql::INSERT_MESSAGE)
                    .bind(m.id)
                    .bind(m.channel.as_ref())
                    .bind(m.template.as_str())
                    .bind(m.lang.as_str())
                    .bind(m.recipient.as_slice())
                    .bind(m.payload.to_string())
                    .bind(m.source_kind.as_str())
                    .bind(m.source_id)
                    .bind(to_millis(m.not_before))
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(Self::error)?;
                tx.commit().await.map_err(Self::error)?;
                Ok(SubscribeOutcome::Pending)
            }

            async fn confirm_subscription(
                &self,
                confirmation: &$crate::store::Confirm,
            ) -> $crate::store::StoreResult<$crate::store::ConfirmOutcome> {
                use $crate::store::subscriptions::sql;
                use $crate::store::{ConfirmOutcome, Proof, to_millis};
                let at = to_millis(confirmation.at);
                let issued_after = to_millis(confirmation.issued_after);
                let mut tx = self.$write.begin().await.map_err(Self::error)?;
                let changed = match &confirmation.proof {
                    Proof::CodeHmac(hmac) => sqlx::query(sql::CONFIRM_BY_CODE)
                        .bind(confirmation.id)
                        .bind(at)
                        .bind(hmac.as_slice())
                        .bind(i64::from(confirmation.max_attempts))
                        .bind(issued_after),
                    Proof::VerifiedToken => sqlx::query(sql::CONFIRM_BY_TOKEN)
                        .bind(confirmation.id)
                        .bind(at)
                        .bind(issued_after),
                }
                .execute(&mut *tx)
                .await
                .map_err(Self::error)?
                .rows_affected();
                if changed == 1 {
                    tx.commit().await.map_err(Self::error)?;
                    return Ok(ConfirmOutcome::Confirmed);
                }
                let current: Option<(String, Option<Vec<u8>>)> = sqlx::query_as(sql::STATE_OF)
                    .bind(confirmation.id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(Self::error)?;
                let outcome = match (current, &confirmation.proof) {
                    (Some((state, _)), Proof::VerifiedToken) if state == "confirmed" => {
                        ConfirmOutcome::AlreadyConfirmed
                    }
                    (Some((state, Some(stored))), Proof::CodeHmac(given))
                        if state == "confirmed" && stored.as_slice() == given.as_slice() =>
                    {
                        ConfirmOutcome::AlreadyConfirmed
                    }
                    (Some((state, _)), Proof::CodeHmac(_)) if state == "pending" => {
                        sqlx::query(sql::COUNT_WRONG_CODE)
                            .bind(confirmation.id)
                            .execute(&mut *tx)
                            .await
                            .map_err(Self::error)?;
                        ConfirmOutcome::Invalid
                    }
                    _ => ConfirmOutcome::Invalid,
                };
                tx.commit().await.map_err(Self::error)?;
                Ok(outcome)
            }

            async fn unsubscribe(
                &self,
                id: uuid::Uuid,
                at: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<bool> {
                use $crate::store::subscriptions::sql;
                let changed = sqlx::query(sql::UNSUBSCRIBE)
                    .bind(id)
                    .bind($crate::store::to_millis(at))
                    .execute(&self.$write)
                    .await
                    .map_err(Self::error)?
                    .rows_affected();
                Ok(changed > 0)
            }

            async fn prune_subscriptions(
                &self,
                sends_before: $crate::store::Timestamp,
                pending_before: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<u64> {
                use $crate::store::subscriptions::sql;
                use $crate::store::to_millis;
                let mut tx = self.$write.begin().await.map_err(Self::error)?;
                let sends = sqlx::query(sql::PRUNE_SENDS)
                    .bind(to_millis(sends_before))
                    .execute(&mut *tx)
                    .await
                    .map_err(Self::error)?
                    .rows_affected();
                let pending = sqlx::query(sql::PRUNE_PENDING)
                    .bind(to_millis(pending_before))
                    .execute(&mut *tx)
                    .await
                    .map_err(Self::error)?
                    .rows_affected();
                tx.commit().await.map_err(Self::error)?;
                Ok(sends + pending)
            }
        }
    };
}

pub(super) use impl_subscription_store;
