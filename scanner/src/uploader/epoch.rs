//! The store's epoch, as the uploader follows it (see `outbox::kept`): when
//! an answer brings a new one, the kept batches the store lost go back into
//! the outbox; an unanswered batch goes again flagged `resent` if the epoch
//! moved; an idle uploader asks for it every heartbeat interval.

use super::Uploader;

impl Uploader {
    /// The server's store reports `epoch`. If kept batches were acknowledged
    /// under another (the store started after an unclean stop since), asks the
    /// server which of them it no longer has, a thousand at a time, and puts
    /// those back into the outbox to be sent again (see `outbox::kept`).
    /// Failures are logged and left for the next answer: the epoch counts as
    /// settled only once every kept batch was asked about.
    pub(super) async fn settle_epoch(&mut self, mut epoch: String) {
        let mut requeued = 0;
        loop {
            let settled = tokio::task::block_in_place(|| self.outbox.epoch_settled(&epoch));
            if matches!(settled, Ok(true)) {
                break;
            }
            let ids = match tokio::task::block_in_place(|| self.outbox.kept_under_other_epochs(&epoch, 1000)) {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!("cannot read the kept batches: {e}");
                    return;
                }
            };
            let (answer_epoch, missing) = if ids.is_empty() {
                (Some(epoch.clone()), Vec::new())
            } else {
                match self.client.stored_batches(ids.clone()).await {
                    Ok(answer) => answer,
                    Err(e) => {
                        tracing::warn!("cannot ask the server which kept batches its store still has: {e}");
                        return;
                    }
                }
            };
            match answer_epoch {
                // It stopped reporting one: nothing to settle against.
                None => return,
                // It restarted again meanwhile: settle against the newest.
                Some(newer) if newer != epoch => {
                    epoch = newer;
                    continue;
                }
                Some(_) => {}
            }
            match tokio::task::block_in_place(|| self.outbox.settle(&epoch, &ids, &missing)) {
                Ok(n) => requeued += n,
                Err(e) => {
                    tracing::warn!("cannot put the kept batches back into the outbox: {e}");
                    return;
                }
            }
        }
        if requeued > 0 {
            tracing::warn!(
                batches = requeued,
                epoch,
                "the server's store started after an unclean stop and lost batches it had acknowledged; \
                 sending them again"
            );
        }
    }

    /// Whether the server's store reports an epoch other than the last one
    /// this outbox settled under. Asked before a batch that went out without
    /// an answer goes again: if the server took it and then lost it in an
    /// unclean stop, it must go flagged `resent`, so that the rows written
    /// after it are derived again rather than counting it twice. No answer, or
    /// no epoch settled yet: false.
    pub(super) async fn store_epoch_moved(&mut self) -> bool {
        let Ok(Some(settled)) = tokio::task::block_in_place(|| self.outbox.settled_epoch()) else { return false };
        match self.client.stored_batches(Vec::new()).await {
            Ok((Some(now), _)) => now != settled,
            _ => false,
        }
    }

    /// While idle, and keeping acknowledged batches, asks the server for its
    /// store's epoch every `idle_epoch_check`: a scanner with nothing new to
    /// send learns of a restart too.
    pub(super) async fn check_epoch_when_idle(&mut self) {
        let Some(every) = self.cfg.idle_epoch_check else { return };
        if self.last_epoch_check.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        self.last_epoch_check = Some(std::time::Instant::now());
        if !tokio::task::block_in_place(|| self.outbox.keeps_any()).unwrap_or(false) {
            return;
        }
        match self.client.stored_batches(Vec::new()).await {
            Ok((Some(epoch), _)) => self.settle_epoch(epoch).await,
            Ok((None, _)) => {}
            Err(e) => tracing::debug!("cannot ask the server for its store's epoch: {e}"),
        }
    }
}
