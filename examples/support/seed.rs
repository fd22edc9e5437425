//! What the examples seed before they measure: an organiser, an event that is
//! active around now, people registered for it, and scanner keys. Included by
//! each example with `#[path = "support/seed.rs"] mod seed;`.

use chrono::Utc;
use rollcall::auth::ApiKeySecret;
use rollcall::domain::{AttendancePolicy, EventState, EventWindow, Role};
use rollcall::store::{Event, ImportRow, NewEvent, SurrealStore, User};

/// Creates the organiser `email` and their event `name`, active from two
/// hours ago for a day, with `people` registered for it, person `i`
/// advertising `ble(i)` and named `P<i>` (which `fanout_bench` reads back
/// from each check-in it receives).
pub async fn event_with_people(
    store: &SurrealStore,
    email: &str,
    name: &str,
    people: usize,
    ble: impl Fn(usize) -> String,
) -> anyhow::Result<(User, Event)> {
    let now = Utc::now();
    let org = rollcall::accounts::create_account(
        store,
        rollcall::domain::Email::parse(email)?,
        rollcall::domain::PersonName::parse("Organiser")?,
        Role::Organizer,
        None,
        None,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let new = NewEvent {
        name: name.into(),
        description: None,
        location: None,
        window: EventWindow::new(now - chrono::Duration::hours(2), now + chrono::Duration::hours(22))?,
        organizer: org.id,
        policy: AttendancePolicy::default(),
    };
    let event = store.events().create(new, now).await?;
    store.events().set_state(event.id, EventState::Active, now).await?;
    for first in (0..people).step_by(1000) {
        let rows = (first..people.min(first + 1000))
            .map(|i| ImportRow {
                line: i + 1,
                email: format!("p{i}@example.org"),
                name: format!("P{i}"),
                ble_uuid: ble(i),
                event: Some(event.id),
            })
            .collect();
        store.users().import(rows, now).await?;
    }
    Ok((org, event))
}

/// Stores a key for every event under `secret`, named `name`.
pub async fn scanner_key(store: &SurrealStore, name: String, secret: &ApiKeySecret) -> anyhow::Result<()> {
    store.api_keys().create(name, secret.display_prefix(), secret.hash(), true, vec![], None, Utc::now()).await?;
    Ok(())
}
