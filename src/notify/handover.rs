//! Receipt confirmations handed from intake straight to this process's dispatcher.
//!
//! A report's confirmations are written in the report's own transaction already claimed by the
//! local dispatcher, wherever its lane has room, and queued in that lane in memory once the
//! commit returns. The dispatcher then neither claims them (on SQLite a write through the same
//! single writer that commits the reports, and a read back) nor waits for its next poll: the
//! reporter's SMS leaves as soon as a sender is free.
//!
//! The store stays the truth. A handed-over message is a claimed row like any other: its lease
//! ends at an instant no claim shares ([`OutboxStore::lease_end`]), its outcome is recorded by
//! the same recorder, and if the process dies before sending it, it is due again to any
//! dispatcher when the lease lapses. Where a lane has no room, or the dispatcher is not
//! running, the message is written pending as before and claimed in the usual way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::incident::Clock;
use crate::store::{
    DynStore, Lease, MessageChannel, NewMessage, OutboxMessage, ReportWrite, Timestamp,
};

/// A claimed message and the end of its lease, as a lane queues it.
pub(super) type Claimed = (OutboxMessage, Timestamp);

/// Intake's end of the dispatcher's lanes. Cheap to clone.
#[derive(Clone)]
pub struct Handover {
    store: DynStore,
    owner: Arc<str>,
    lease: Duration,
    clock: Clock,
    email: mpsc::Sender<Claimed>,
    sms: mpsc::Sender<Claimed>,
    /// Whether the lanes have started (once they stop, their queues are closed).
    open: Arc<AtomicBool>,
}

/// Room in a lane, reserved for one message of a batch until the batch has committed.
pub struct Reserved(mpsc::OwnedPermit<Claimed>);

impl Handover {
    pub(super) fn new(
        store: DynStore,
        owner: Arc<str>,
        lease: Duration,
        clock: Clock,
        lanes: (mpsc::Sender<Claimed>, mpsc::Sender<Claimed>),
        open: Arc<AtomicBool>,
    ) -> Self {
        let (email, sms) = lanes;
        Self {
            store,
            owner,
            lease,
            clock,
            email,
            sms,
            open,
        }
    }

    /// Lease to this dispatcher every message of `writes` whose lane has room now, all until
    /// one lease end from the store. The room reserved for each write, in the order of its
    /// leased messages; empty lists where nothing was leased (or all of them, when the lanes are
    /// not running).
    pub fn lease(&self, writes: &mut [ReportWrite]) -> Vec<Vec<Reserved>> {
        let mut reserved: Vec<Vec<Reserved>> = writes.iter().map(|_| Vec::new()).collect();
        if !self.open.load(Ordering::Acquire) {
            return reserved;
        }
        let mut lease: Option<Lease> = None;
        for (write, room) in writes.iter_mut().zip(&mut reserved) {
            for message in &mut write.outbox {
                let lane = match message.channel {
                    MessageChannel::Email => &self.email,
                    MessageChannel::Sms => &self.sms,
                };
                let Ok(permit) = lane.clone().try_reserve_owned() else {
                    continue;
                };
                let lease = lease.get_or_insert_with(|| Lease {
                    owner: Arc::clone(&self.owner),
                    until: self.store.lease_end(self.clock.now() + self.lease),
                });
                message.lease = Some(lease.clone());
                room.push(Reserved(permit));
            }
        }
        reserved
    }

    /// Queue the leased messages of a committed write in the room reserved for them.
    pub fn hand_over(outbox: Vec<NewMessage>, reserved: Vec<Reserved>) {
        let leased = outbox.into_iter().filter_map(NewMessage::into_claimed);
        for (claimed, Reserved(permit)) in leased.zip(reserved) {
            permit.send(claimed);
        }
    }
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handover")
            .field("owner", &self.owner)
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
