//! A user's rotating beacon identity (docs/identity.md): what their phone
//! needs to advertise it, and rotating its secret.

use async_graphql::{Context, Object, Result, SimpleObject};
use chrono::{DateTime, TimeZone as _, Utc};
use uuid::Uuid;

use super::error::ApiError;
use super::{principal, require_user, state};
use crate::domain::identity::{self, SCHEME};
use crate::store::BeaconSecret;

/// What a phone needs to advertise its user's rotating identifiers.
#[derive(SimpleObject)]
pub struct Beacon {
    /// The secret, 32 bytes as 64 lowercase hex characters. Never advertise it.
    pub secret: String,
    /// The scheme, `rollcall-beacon-v1`.
    pub scheme: String,
    /// The slot length in seconds: the identifier changes every slot.
    pub slot_seconds: i32,
    /// The identifier of the current slot, as a UUID (to check an implementation).
    pub identifier: String,
    /// When the current slot ends.
    pub valid_until: DateTime<Utc>,
    /// When the secret was issued.
    pub issued_at: DateTime<Utc>,
}

impl Beacon {
    fn new(s: &BeaconSecret, slot_secs: i64, now: DateTime<Utc>) -> Self {
        let slot = identity::slot_of(now.timestamp(), slot_secs);
        let end = Utc.timestamp_opt((slot + 1).saturating_mul(slot_secs), 0).single().unwrap_or(now);
        Self {
            secret: hex::encode(s.secret),
            scheme: SCHEME.to_owned(),
            slot_seconds: i32::try_from(slot_secs).unwrap_or(i32::MAX),
            identifier: identity::identifier(&s.secret, slot).to_string(),
            valid_until: end,
            issued_at: s.issued_at,
        }
    }
}

/// `User.beacon`: the user's own only (`own` for the user of `signUp` and
/// `logIn`); `null` to anyone else, admins included.
pub async fn of_user(ctx: &Context<'_>, user: Uuid, own: bool) -> Result<Option<Beacon>> {
    let own = own || principal(ctx)?.user().is_some_and(|u| u.id == user);
    if !own {
        return Ok(None);
    }
    let st = state(ctx)?;
    let now = Utc::now();
    let secret = match st.store.beacons().get(user).await? {
        Some(s) => s,
        None => {
            // An account older than rotating identifiers: issue its secret now.
            let s = st.store.beacons().get_or_issue(user, &identity::new_secret(), now).await?;
            st.ingest.rotating.invalidate();
            s
        }
    };
    Ok(Some(Beacon::new(&secret, st.ingest.rotating.slot_secs(), now)))
}

/// The shortest time between two rotations of one user's secret.
const ROTATE_AT_MOST_EVERY: chrono::Duration = chrono::Duration::minutes(1);

#[derive(Default)]
pub struct BeaconMutation;

#[Object]
impl BeaconMutation {
    /// Gives you a new beacon secret: your phone's identifiers change at once,
    /// and those derived from the old secret stop resolving. Once a minute at
    /// most (`RATE_LIMITED` sooner, with the wait in the message).
    async fn rotate_beacon_secret(&self, ctx: &Context<'_>) -> Result<Beacon> {
        let me = require_user(ctx)?;
        let st = state(ctx)?;
        let now = Utc::now();
        // Each rotation makes every instance rebuild its table of identifiers
        // (all users' secrets) before its next batch: a rotation loop must not
        // turn into a rebuild per batch.
        if let Some(current) = st.store.beacons().get(me.id).await? {
            let wait = ROTATE_AT_MOST_EVERY - (now - current.issued_at);
            if wait > chrono::Duration::zero() {
                let secs = wait.num_seconds().max(1);
                let msg = format!("your beacon secret was replaced less than a minute ago; try again in {secs} s");
                return Err(ApiError::RateLimited(msg).into());
            }
        }
        let secret = st.store.beacons().set(me.id, &identity::new_secret(), now).await?;
        st.ingest.rotating.invalidate();
        Ok(Beacon::new(&secret, st.ingest.rotating.slot_secs(), now))
    }
}
