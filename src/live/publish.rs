//! The hub's side of the change stream: turning feed entries into resolved
//! check-ins (users and key names looked up once), publishing them to each
//! event's feed in cursor order, filling gaps, replaying from a cursor, and
//! computing an event's counters. `pump` drives it; `Live` and the feeds
//! call it.

use super::*;

impl Inner {
    /// Turns rows into check-ins: users in one fetch (password hashes
    /// dropped), key names cached. Rows whose user no longer exists are left
    /// out.
    pub(super) async fn resolve(&self, rows: Vec<CheckInRow>) -> Result<Vec<CheckIn>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.user).collect::<HashSet<_>>().into_iter().collect();
        // Without the password hash: nothing live reads it, and a ring keeps
        // thousands of check-ins per event in memory.
        let users: HashMap<Uuid, User> = self
            .store
            .users()
            .get_many(&ids)
            .await?
            .into_iter()
            .map(|u| (u.id, User { password_hash: None, ..u }))
            .collect();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(user) = users.get(&row.user) else { continue };
            out.push(CheckIn {
                seq: row.seq(),
                cursor: row.cursor,
                event: row.event,
                user: user.clone(),
                checked_in_at: row.checked_in_at,
                scanner: self.key_name(row.scanner).await?,
                source: CheckInSource::of(row.scanner),
            });
        }
        Ok(out)
    }

    /// The next page of an event's check-ins after `after` ("" for the first).
    pub(super) async fn replay_page(&self, event: Uuid, after: &str) -> Result<Vec<CheckIn>, StoreError> {
        let mut after = after.to_owned();
        loop {
            let rows = self.store.attendance().check_ins(event, Some(&after), REPLAY_PAGE).await?;
            let Some(last) = rows.last().map(|r| r.cursor.clone()) else { return Ok(Vec::new()) };
            let page = self.resolve(rows).await?;
            if !page.is_empty() {
                return Ok(page);
            }
            // Every user on this page is gone: go on past it.
            after = last;
        }
    }

    pub(super) async fn key_name(&self, key: Uuid) -> Result<Option<String>, StoreError> {
        if key.is_nil() {
            return Ok(None);
        }
        if let Some(name) = lock(&self.key_names).get(&key) {
            return Ok(name.clone());
        }
        let name = self.store.api_keys().get(key).await?.map(|k| k.name);
        lock(&self.key_names).insert(key, name.clone());
        Ok(name)
    }

    pub(super) fn feed(&self, event: Uuid) -> Option<Arc<Feed>> {
        lock(&self.feeds).get(&event).cloned()
    }

    /// Tells this process's live sockets that `key` was revoked.
    pub(super) fn key_revoked(&self, key: Uuid) {
        let _ = self.revoked.send(key);
    }

    /// Publishes the check-ins that the feed's steps name to their events'
    /// subscribers and their people's, reading the rows only for events
    /// someone here follows.
    pub(super) async fn publish(&self, steps: Vec<CheckInStep>) {
        // One read per event, however many commits stepped it.
        let mut ranges: BTreeMap<Uuid, (u64, u64)> = BTreeMap::new();
        for step in steps {
            let range = ranges.entry(step.event).or_insert((step.after, step.upto));
            *range = (range.0.min(step.after), range.1.max(step.upto));
        }
        let personal = !self.personal.is_empty();
        for (event, (after, upto)) in ranges {
            let feed = self.feed(event);
            if let Some(feed) = &feed {
                feed.changed.notify_one();
            }
            // People who follow their own check-ins need the whole range; a
            // feed only what it has not published yet.
            let from = match &feed {
                _ if personal => after,
                Some(feed) => after.max(feed.last()),
                None => continue,
            };
            if let Err(e) = self.publish_range(event, from, upto, feed.as_deref()).await {
                // The feed's gap filling reads them again.
                tracing::error!(error = %e, "could not read new check-ins for live subscribers");
            }
        }
    }

    /// Reads an event's check-ins with cursors in `(from, upto]` and hands
    /// them to its feed and to their people's subscriptions.
    pub(super) async fn publish_range(
        &self,
        event: Uuid,
        mut from: u64,
        upto: u64,
        feed: Option<&Feed>,
    ) -> Result<(), StoreError> {
        while from < upto {
            let limit = ((upto - from) as usize).min(REPLAY_PAGE);
            metrics::counter!("rollcall_live_feed_row_reads_total").increment(1);
            let rows = self.store.attendance().check_ins(event, Some(&cursor_of(from)), limit).await?;
            let Some(last) = rows.last().map(CheckInRow::seq) else { return Ok(()) };
            let rows: Vec<CheckInRow> = rows.into_iter().filter(|r| r.seq() <= upto).collect();
            for c in self.resolve(rows).await? {
                self.personal.deliver(&c);
                if let Some(feed) = feed {
                    feed.offer([c]);
                }
            }
            from = last;
        }
        Ok(())
    }

    /// Reads from the database the check-ins that feeds have waited for too
    /// long (or, with `all`, everything after each feed's position: after
    /// the change stream was lost).
    pub(super) async fn fill_gaps(&self, all: bool) {
        let feeds: Vec<Arc<Feed>> = lock(&self.feeds).values().cloned().collect();
        for feed in feeds {
            let Some((last, until)) = feed.gap(all) else { continue };
            let limit = until.map_or(REPLAY_PAGE, |u| (u - last - 1) as usize).clamp(1, REPLAY_PAGE);
            let found = match self.store.attendance().check_ins(feed.event, Some(&cursor_of(last)), limit).await {
                Ok(rows) => self.resolve(rows).await,
                Err(e) => Err(e),
            };
            match found {
                Ok(found) => {
                    feed.offer(found);
                    // Whatever is still missing is gone (a re-derivation or a
                    // deleted user): move past it.
                    if let Some(until) = until {
                        feed.skip_to(until);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not fill a gap in live check-ins"),
            }
            if all {
                feed.changed.notify_one();
            }
        }
    }

    pub(super) fn sweep(&self) {
        lock(&self.feeds).retain(|_, feed| Arc::strong_count(feed) > 1);
    }

    pub(super) async fn compute_stats(&self, event: Uuid) -> Result<Option<EventStats>, StoreError> {
        let Some(ev) = self.store.events().get(event).await? else { return Ok(None) };
        let now = Utc::now();
        let registered = self.store.registrations().count_registered(event).await?;
        let (checked_in, present_now) =
            self.store.attendance().counts(event, now - ev.policy.departure_gap, now).await?;
        Ok(Some(EventStats { event, registered, checked_in, present_now, at: now }))
    }
}
