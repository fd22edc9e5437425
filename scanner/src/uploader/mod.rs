//! The uploader: outbox → `submitSightings` → ack.
//!
//! One batch is in flight at a time, in sealing order. For each:
//!
//! - **Never sent yet**: it waits until the clock is known to be right (the
//!   server's time seen by this process, see [`crate::clock`]), asking the
//!   heartbeat for it, so that a batch stamped by a wrong clock is rebased before
//!   it goes out, not after. Then [`Outbox::begin_send`] records, durably, that
//!   it is being sent and reads it afresh; from then on it never changes. A batch
//!   already sent (by an earlier process) goes out again at once, as it is.
//! - **Answered** (fresh or `replayed`): the batch is acked, i.e. deleted from the
//!   outbox, and kept aside for a while under the store's epoch from the answer.
//!   Sightings the server rejected with a reason (`rejected[]`) are logged and
//!   counted; the rest of the batch was applied, so it is acked all the same. An
//!   answer under a new epoch (the store stopped uncleanly and may have lost what
//!   it acknowledged) makes the uploader ask which of the batches kept under
//!   earlier epochs the store no longer has, and put those back into the outbox,
//!   to be sent again with `resent: true` (see `outbox::kept`). Idle, it asks for
//!   the epoch every heartbeat interval while it keeps any. A batch sent before
//!   without an answer goes again flagged `resent` too if the epoch moved since:
//!   the store may have taken it and lost it.
//! - **Transient failure** (network, timeout, any HTTP status but 401, a body that
//!   is not GraphQL, an error without a code, `RATE_LIMITED`, ...; see
//!   [`crate::api::interpret`]): the same batch, same `batchId`, is sent again after
//!   an exponential backoff with full jitter, capped at `backoff_max`, and each
//!   failure is logged at warn with what the server answered. A wrong `--server`
//!   path or a captive portal therefore keeps everything in the outbox until it is
//!   fixed; nothing is given up on.
//! - **Bad key** (`UNAUTHENTICATED`, HTTP 401): nothing is sent until the key
//!   changes or a long backoff (`bad_key_retry`, doubling up to 16×) has passed;
//!   the uploader re-reads the key file every few seconds, and a SIGHUP re-reads it
//!   at once, and it carries on once it holds a key other than the one refused.
//!   After the backoff it tries the refused key again: a bare 401 may have come
//!   from a proxy. Sightings keep accumulating safely in the outbox meanwhile. In
//!   `drain` mode (`flush`, finite sources) it gives up with [`UploadError::BadKey`].
//! - **Too large** (HTTP 413 from the server or a proxy, or the server's batch-size
//!   limit): nothing was applied, so the batch is split in two under fresh ids, and
//!   later batches are sealed no larger than the halves.
//! - **Poison**: a batch that fails `park_after_attempts` times over at least
//!   `park_after`, while the server answers other requests (heartbeats, other
//!   batches), is parked like a refused one, so it stops blocking the batches
//!   behind it. An outage never parks anything: nothing is answered then.
//! - **Refused for good** (`VALIDATION` from `submitSightings` itself): the batch
//!   is parked in the outbox as dead, logged and counted, and the uploader moves
//!   on. `status` shows dead batches, `flush` fails while any remain, and
//!   `flush --retry-dead` sends them again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::{Notify, watch};

use crate::api::{ApiError, ServerClient, submit_sightings};
use crate::clock::Clock;
use crate::outbox::{Batch, Outbox, OutboxError};
use crate::sighting::{now_ms, rfc3339_ms};
pub use waits::read_key;
use waits::{ClockWait, KeyWait};

mod epoch;
mod waits;

/// How the uploader behaves.
#[derive(Clone, Debug)]
pub struct UploaderConfig {
    /// At most this many sightings per batch (the server takes 5,000).
    pub batch_size: usize,
    /// First retry delay.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Where the API key is read from again after the server refused it.
    pub api_key_file: Option<PathBuf>,
    /// Give up after this many transient failures in a row (`flush`); `None`: never.
    pub give_up_after: Option<u32>,
    /// Park a batch that failed this many times (with `park_after`); `None`: never.
    pub park_after_attempts: Option<u32>,
    /// ... over at least this long.
    pub park_after: Duration,
    /// After a key is refused, try it again after this long (doubling, up to 16×),
    /// unless the key file brings another first: a 401 may come from a proxy.
    pub bad_key_retry: Duration,
    /// While idle and keeping acknowledged batches, ask for the store's epoch
    /// this often (`run`: the heartbeat interval); `None`: never.
    pub idle_epoch_check: Option<Duration>,
}

/// Why the uploader stopped.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the server refuses the API key ({0}); fix the key file and start again")]
    BadKey(String),
    #[error("giving up after {0} failed attempts in a row: {1}")]
    GaveUp(u32, String),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// Sends sealed batches until told to stop (or, when draining, until the outbox is empty).
pub struct Uploader {
    /// Its own outbox connection.
    outbox: Outbox,
    /// The server.
    client: ServerClient,
    /// Settings.
    cfg: UploaderConfig,
    /// Woken when the pipeline has committed new sightings.
    wake: Arc<Notify>,
    /// Sightings per newly sealed batch: the configured size, halved by every
    /// split of a batch refused as too large.
    batch_size: usize,
    /// The scanner's clock: no new batch is sealed while it is known to be wrong,
    /// and none is sent for the first time before it is known to be right.
    clock: Option<Arc<Clock>>,
    /// Waiting for the server's time, if it is.
    clock_wait: ClockWait,
    /// When an idle uploader last asked for the store's epoch.
    last_epoch_check: Option<std::time::Instant>,
}

impl Uploader {
    /// An uploader over `outbox` sending to `client`.
    pub fn new(outbox: Outbox, client: ServerClient, cfg: UploaderConfig, wake: Arc<Notify>) -> Self {
        let batch_size = cfg.batch_size;
        Self {
            outbox,
            client,
            cfg,
            wake,
            batch_size,
            clock: None,
            clock_wait: ClockWait::default(),
            last_epoch_check: None,
        }
    }

    /// The same uploader, sealing no new batch while `clock` is known to be
    /// wrong, and sending none for the first time before it is known to be right.
    pub fn with_clock(mut self, clock: Arc<Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Runs until `stop` turns true. `drain` turns true when no more sightings will
    /// come (the source ended and the pipeline flushed): from then on the uploader
    /// returns as soon as the outbox is empty. Returns the number of batches acked.
    pub async fn run(
        &mut self,
        mut stop: watch::Receiver<bool>,
        mut drain: watch::Receiver<bool>,
    ) -> Result<u64, UploadError> {
        let mut acked = 0u64;
        let mut failures = 0u32;
        let mut bad_key_refusals = 0u32;
        loop {
            if *stop.borrow() {
                return Ok(acked);
            }
            let seal = self.clock.as_ref().is_none_or(|c| c.may_seal());
            let batch = match tokio::task::block_in_place(|| self.outbox.next_batch_sealing(self.batch_size, seal)) {
                Ok(batch) => batch,
                Err(e) => {
                    let draining = *drain.borrow();
                    outbox_failed(
                        &self.cfg,
                        e,
                        "take the next batch from the outbox",
                        &mut failures,
                        draining,
                        &mut stop,
                    )
                    .await?;
                    continue;
                }
            };
            let Some(batch) = batch else {
                if *drain.borrow() {
                    return Ok(acked);
                }
                // New sightings cut the epoch check short (it waits on the
                // network): it is tried again after the next interval.
                let wake = self.wake.clone();
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = stop.changed() => {}
                    _ = drain.changed() => {}
                    _ = async {
                        self.check_epoch_when_idle().await;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    } => {}
                }
                continue;
            };
            // Sent before, by this process or an earlier one, and never answered.
            let sent_before = batch.sent;
            let batch = if batch.sent {
                batch
            } else {
                let drained = *drain.borrow();
                if self.held_for_clock(&mut stop, drained).await {
                    continue;
                }
                match tokio::task::block_in_place(|| self.outbox.begin_send(batch.batch_id)) {
                    Ok(Some(batch)) => batch,
                    // Acked or parked by another process (`flush`) meanwhile.
                    Ok(None) => continue,
                    Err(e) => {
                        let what = format!("record batch {} as sent in the outbox", batch.batch_id);
                        outbox_failed(&self.cfg, e, &what, &mut failures, drained, &mut stop).await?;
                        continue;
                    }
                }
            };
            match self.send(&batch, sent_before).await {
                Ok(()) => {
                    acked += 1;
                    failures = 0;
                }
                Err(ApiError::Transient(why)) => {
                    failures = failures.saturating_add(1);
                    let noted = tokio::task::block_in_place(|| self.outbox.note_attempt(batch.batch_id));
                    let (attempts, first_failed_ms) = noted.unwrap_or_else(|e| {
                        tracing::warn!(batch = %batch.batch_id, "cannot count the attempt in the outbox: {e}");
                        (batch.attempts + 1, now_ms())
                    });
                    if self.cfg.give_up_after.is_some_and(|max| failures >= max) {
                        return Err(UploadError::GaveUp(failures, why));
                    }
                    if let Some(reason) = self.poisoned(attempts, first_failed_ms, &why) {
                        tracing::error!(
                            batch = %batch.batch_id, sightings = batch.sightings.len(),
                            "parking a batch that keeps failing while the server answers other requests (kept in \
                             the outbox, not sent again; `rollcall-scanner flush --retry-dead` sends it again): {reason}"
                        );
                        self.park(&batch, &reason).await;
                        failures = 0;
                        continue;
                    }
                    let delay = backoff(&self.cfg, failures);
                    tracing::warn!(
                        batch = %batch.batch_id, attempt = attempts,
                        "upload failed, retrying in {:.1} s: {why}", delay.as_secs_f64()
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(ApiError::TooLarge(why)) => {
                    let n = batch.sightings.len();
                    match tokio::task::block_in_place(|| self.outbox.split(batch.batch_id)) {
                        Ok(Some((first, second))) => {
                            // Batches sealed from now on are no larger than the halves.
                            self.batch_size = self.batch_size.min((n / 2).max(1));
                            tracing::warn!(
                                batch = %batch.batch_id, sightings = n,
                                "the server refused the batch as too large; split it in two ({first}, {second}) \
                                 and sealing at most {} sightings per batch from now on: {why}", self.batch_size
                            );
                        }
                        Ok(None) => {
                            let reason = format!("refused as too large even as a single sighting: {why}");
                            tracing::error!(batch = %batch.batch_id, "parking the batch: {reason}");
                            self.park(&batch, &reason).await;
                        }
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            tracing::warn!(batch = %batch.batch_id, "cannot split the batch in the outbox: {e}");
                            tokio::select! {
                                _ = tokio::time::sleep(backoff(&self.cfg, failures)) => {}
                                _ = stop.changed() => {}
                            }
                        }
                    }
                }
                Err(ApiError::BadKey(why)) => {
                    if *drain.borrow() || self.cfg.api_key_file.is_none() {
                        tracing::error!(
                            "the server refuses this scanner's API key: {why}. Sightings are kept in the outbox"
                        );
                        return Err(UploadError::BadKey(why));
                    }
                    bad_key_refusals = bad_key_refusals.saturating_add(1);
                    let retry = self.cfg.bad_key_retry.saturating_mul(1 << bad_key_refusals.saturating_sub(1).min(4));
                    tracing::error!(
                        "the server refuses this scanner's API key: {why}. Sightings are kept in the outbox; \
                         waiting for a new key in the key file (or SIGHUP), and trying this one again in {} s",
                        retry.as_secs()
                    );
                    match self.wait_for_new_key(&mut stop, retry).await {
                        KeyWait::Stopped => return Ok(acked),
                        KeyWait::NewKey => bad_key_refusals = 0,
                        KeyWait::RetrySame => {}
                    }
                    continue;
                }
                Err(ApiError::Refused(why)) => {
                    tracing::error!(
                        batch = %batch.batch_id, sightings = batch.sightings.len(),
                        "the server refused the whole batch; parking it (kept in the outbox, not sent again; \
                         `rollcall-scanner flush --retry-dead` sends it again): {why}"
                    );
                    self.park(&batch, &why).await;
                }
            }
            bad_key_refusals = 0;
        }
    }

    /// Why `batch` should be parked as poison after its latest failure, if it should:
    /// it failed at least `park_after_attempts` times, over at least `park_after`,
    /// and the server answered some other request after its first failure, so the
    /// trouble is this batch, not the network or the server as a whole.
    fn poisoned(&self, attempts: u32, first_failed_ms: i64, why: &str) -> Option<String> {
        let (min_attempts, over) = (self.cfg.park_after_attempts?, self.cfg.park_after);
        let failing_for = now_ms().saturating_sub(first_failed_ms);
        let answered_since = self.client.last_ok_ms().is_some_and(|ok| ok > first_failed_ms);
        (attempts >= min_attempts
            && failing_for >= i64::try_from(over.as_millis()).unwrap_or(i64::MAX)
            && answered_since)
            .then(|| format!("failed {attempts} times over {} s; last: {why}", failing_for / 1000))
    }

    /// Parks `batch` as dead; if even that cannot be written, it stays sealed and
    /// is retried (logged).
    async fn park(&mut self, batch: &Batch, reason: &str) {
        if let Err(e) = tokio::task::block_in_place(|| self.outbox.park(batch.batch_id, reason)) {
            tracing::error!(batch = %batch.batch_id, "cannot park the batch in the outbox: {e}");
            tokio::time::sleep(self.cfg.backoff_initial).await;
        }
    }

    /// Sends one batch and acks it when the server answers. A batch sent
    /// before without an answer goes flagged `resent` if the store's epoch
    /// moved since ([`Self::store_epoch_moved`]): the store may have taken it
    /// and lost it.
    async fn send(&mut self, batch: &Batch, sent_before: bool) -> Result<(), ApiError> {
        let resent = batch.resend || (sent_before && self.store_epoch_moved().await);
        let input = submit_sightings::SightingBatchInput {
            batch_id: batch.batch_id,
            sent_at: Some(rfc3339_ms(now_ms())),
            sightings: batch
                .sightings
                .iter()
                .map(|s| submit_sightings::SightingInput {
                    ble_uuid: s.identifier.clone(),
                    seen_at: rfc3339_ms(s.seen_at_ms),
                    rssi: s.rssi.map(i64::from),
                    event_id: s.event_id.clone(),
                })
                .collect(),
            resent,
        };
        let result = self.client.submit(input).await?;
        for r in result.rejected.iter().take(5) {
            let who = usize::try_from(r.index)
                .ok()
                .and_then(|i| batch.sightings.get(i))
                .map(|s| s.identifier.as_str())
                .unwrap_or("?");
            tracing::warn!(batch = %batch.batch_id, "server rejected sighting #{} ({who}): {}", r.index, r.reason);
        }
        if result.rejected.len() > 5 {
            tracing::warn!(batch = %batch.batch_id, "… and {} more rejected sightings", result.rejected.len() - 5);
        }
        let rejected = result.rejected.len() as u64;
        let epoch = result.store_epoch.as_deref();
        tokio::task::block_in_place(|| self.outbox.ack(batch.batch_id, rejected, result.replayed, epoch))
            .map_err(|e| ApiError::Transient(format!("acking in the outbox: {e}")))?;
        if resent && !result.replayed {
            tracing::warn!(
                batch = %batch.batch_id,
                "the server's store did not have this batch, sent before it stopped uncleanly; it took it again"
            );
        }
        if let Some(epoch) = epoch {
            self.settle_epoch(epoch.to_owned()).await;
        }
        tracing::info!(
            batch = %batch.batch_id,
            sightings = batch.sightings.len(),
            accepted = result.accepted,
            check_ins = result.check_ins,
            duplicates = result.duplicates,
            unknown = result.unknown_devices,
            unregistered = result.unregistered,
            outside_event = result.outside_event,
            below_rssi = result.below_rssi,
            rejected,
            replayed = result.replayed,
            resent,
            "uploaded"
        );
        Ok(())
    }
}

/// The outbox refused a write: sealing and recording a batch as sent write
/// to it, and on a full disk that fails until room is made. Running, this
/// waits (`Ok`) and the caller tries again; draining (`flush`), it gives up.
async fn outbox_failed(
    cfg: &UploaderConfig,
    e: OutboxError,
    what: &str,
    failures: &mut u32,
    draining: bool,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), UploadError> {
    if draining {
        return Err(e.into());
    }
    *failures = failures.saturating_add(1);
    let delay = backoff(cfg, *failures);
    tracing::warn!("cannot {what}, retrying in {:.1} s: {e}", delay.as_secs_f64());
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.changed() => {}
    }
    Ok(())
}

/// Exponential backoff with full jitter: uniform in [initial/2, min(max, initial·2^(n-1))].
pub fn backoff(cfg: &UploaderConfig, failures: u32) -> Duration {
    let exp = cfg.backoff_initial.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let ceiling = exp.min(cfg.backoff_max).max(Duration::from_millis(1));
    let floor = (cfg.backoff_initial / 2).min(ceiling);
    rand::thread_rng().gen_range(floor..=ceiling)
}

#[cfg(test)]
mod tests;
