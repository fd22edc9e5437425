//! The user aggregate: accounts, their BLE identifier and extra devices.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use surrealdb::types::{RecordId, SurrealValue};
use uuid::Uuid;

use super::Conn;
use super::directory::directory_changed;
use super::models::{DeviceRow, RegistrationRow, UserRow, convert_all};
use super::{Device, StoreError, User, key_of, new_id, registration_id, retried_write, rid};
use crate::domain::Role;

/// What is needed to create an account. Values are already validated.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    pub role: Role,
    pub password_hash: Option<String>,
    pub ble_uuid: String,
}

/// One validated row of an attendee import.
#[derive(Debug, Clone)]
pub struct ImportRow {
    /// 1-based line in the source file, for error reports.
    pub line: usize,
    pub email: String,
    pub name: String,
    pub ble_uuid: String,
    pub event: Option<Uuid>,
}

/// What an import chunk did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// Accounts created.
    pub created: usize,
    /// People whose e-mail already had an account (left as it was).
    pub existing: usize,
    /// Registrations created.
    pub registered: usize,
    /// Rows refused, with their line and reason.
    pub refused: Vec<(usize, String)>,
}

/// Repository for `user` and `device` records.
pub struct Users<'a> {
    db: &'a Conn,
}

impl<'a> Users<'a> {
    pub(super) fn new(db: &'a Conn) -> Self {
        Self { db }
    }

    pub async fn create(&self, new: NewUser, now: DateTime<Utc>) -> Result<User, StoreError> {
        let row = UserRow {
            id: rid("user", new_id()),
            email: new.email,
            name: new.name,
            role: new.role.as_str().to_owned(),
            password_hash: new.password_hash,
            ble_uuid: new.ble_uuid,
            created_at: now,
            token_version: None,
        };
        let id = row.id.clone();
        self.db
            .query(
                "BEGIN; CREATE $row.id CONTENT $row; CREATE $ident SET user = $row.id, kind = 'ble';
                 CREATE $beacon SET secret = $secret, issued_at = $row.created_at; COMMIT;",
            )
            .bind(("ident", ident_id(&row.ble_uuid)))
            .bind(("beacon", rid("beacon", super::key_of(&row.id)?)))
            .bind(("secret", hex::encode(crate::domain::identity::new_secret())))
            .bind(("row", row))
            .await?
            .check()?;
        self.get(super::key_of(&id)?).await?.ok_or_else(|| StoreError::Corrupt("created user vanished".into()))
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let mut res = self.db.query("SELECT * FROM ONLY $id").bind(("id", rid("user", id))).await?;
        let row: Option<UserRow> = res.take(0)?;
        row.map(User::try_from).transpose()
    }

    /// The users among `ids` that exist.
    pub async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<User>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<RecordId> = ids.iter().map(|id| rid("user", *id)).collect();
        let mut res = self.db.query("SELECT * FROM $ids").bind(("ids", ids)).await?;
        convert_all(res.take::<Vec<UserRow>>(0)?)
    }

    pub async fn by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.find_one("SELECT * FROM user WHERE email = $v LIMIT 1", email).await
    }

    /// The user a scanner's identifier belongs to: their BLE UUID, or one of
    /// their extra device identifiers.
    pub async fn by_identifier(&self, identifier: &str) -> Result<Option<User>, StoreError> {
        let mut res = self
            .db
            .query("SELECT * FROM (SELECT VALUE user FROM $ident)")
            .bind(("ident", ident_id(identifier)))
            .await?;
        let rows: Vec<UserRow> = res.take(0)?;
        rows.into_iter().next().map(User::try_from).transpose()
    }

    /// Every identifier that may be counted for an event, sorted: those of
    /// its standing registrations' users, or of every user when it takes
    /// walk-ins.
    pub async fn identifiers_for_event(&self, event: Uuid, walk_ins: bool) -> Result<Vec<String>, StoreError> {
        let sql = if walk_ins {
            "SELECT VALUE record::id(id) FROM identifier"
        } else {
            "SELECT VALUE record::id(id) FROM identifier WHERE user INSIDE
                (SELECT VALUE user FROM registration WHERE event = $e AND status = 'REGISTERED')"
        };
        let mut res = self.db.query(sql).bind(("e", rid("event", event))).await?;
        let mut ids: Vec<String> = res.take(0)?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// Maps canonical identifiers to users (by BLE UUID or extra device
    /// identifier), with one lookup by id for them all.
    pub async fn resolve(&self, identifiers: Vec<String>) -> Result<HashMap<String, Uuid>, StoreError> {
        #[derive(Debug, SurrealValue)]
        struct Resolved {
            id: RecordId,
            user: RecordId,
        }
        if identifiers.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<RecordId> = identifiers.iter().map(|i| ident_id(i)).collect();
        let mut res = self.db.query("SELECT id, user FROM $ids").bind(("ids", ids)).await?;
        let found: Vec<Resolved> = res.take(0)?;
        let mut map = HashMap::new();
        for r in found {
            let surrealdb::types::RecordIdKey::String(key) = r.id.key else {
                return Err(StoreError::Corrupt("identifier key is not a string".into()));
            };
            map.insert(key, key_of(&r.user)?);
        }
        Ok(map)
    }

    async fn find_one(&self, sql: &str, v: &str) -> Result<Option<User>, StoreError> {
        let mut res = self.db.query(sql).bind(("v", v.to_owned())).await?;
        let rows: Vec<UserRow> = res.take(0)?;
        rows.into_iter().next().map(User::try_from).transpose()
    }

    /// Users in creation order, after the user `after`, at most `limit`.
    pub async fn list(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<User>, StoreError> {
        let sql = match after {
            Some(_) => "SELECT * FROM user WHERE id > $after ORDER BY id LIMIT $limit",
            None => "SELECT * FROM user ORDER BY id LIMIT $limit",
        };
        let mut res =
            self.db.query(sql).bind(("after", after.map(|a| rid("user", a)))).bind(("limit", limit as i64)).await?;
        convert_all(res.take::<Vec<UserRow>>(0)?)
    }

    /// Changes the name and/or role; `None` leaves a field as it is.
    pub async fn update(&self, id: Uuid, name: Option<String>, role: Option<Role>) -> Result<Option<User>, StoreError> {
        let mut res = self
            .db
            .query(
                "UPDATE ONLY $id SET
                    name = $name ?? name,
                    role = $role ?? role
                 RETURN AFTER",
            )
            .bind(("id", rid("user", id)))
            .bind(("name", name))
            .bind(("role", role.map(|r| r.as_str().to_owned())))
            .await?
            .check()?;
        let row: Option<UserRow> = res.take(0)?;
        row.map(User::try_from).transpose()
    }

    /// Starts a new session generation: every token issued before stops
    /// working. With `password_hash`, the password changes in the same write.
    pub async fn end_sessions(&self, id: Uuid, password_hash: Option<String>) -> Result<Option<User>, StoreError> {
        let mut res = self
            .db
            .query(
                "UPDATE ONLY $id SET
                    token_version = (token_version ?? 0) + 1,
                    password_hash = $hash ?? password_hash
                 RETURN AFTER",
            )
            .bind(("id", rid("user", id)))
            .bind(("hash", password_hash))
            .await?
            .check()?;
        let row: Option<UserRow> = res.take(0)?;
        row.map(User::try_from).transpose()
    }

    /// Sets a new BLE UUID (rotation, or an admin assigning a badge); the
    /// old one stops resolving at once.
    /// The old identifier is read inside the transaction that replaces it,
    /// so two rotations at once cannot both delete the same old one and
    /// leave the first one's new identifier resolving: the loser conflicts.
    pub async fn set_ble_uuid(&self, id: Uuid, ble_uuid: String) -> Result<Option<User>, StoreError> {
        if self.get(id).await?.is_none() {
            return Ok(None);
        }
        let sql = concat!(
            "BEGIN;
             LET $old = (SELECT VALUE ble_uuid FROM ONLY $id);
             DELETE type::record('identifier', $old);
             CREATE $new SET user = $id, kind = 'ble';
             UPDATE $id SET ble_uuid = $ble;",
            directory_changed!(),
            "COMMIT;"
        );
        retried_write(|| {
            self.db
                .query(sql)
                .bind(("new", ident_id(&ble_uuid)))
                .bind(("id", rid("user", id)))
                .bind(("ble", ble_uuid.clone()))
        })
        .await?;
        self.get(id).await
    }

    /// Deletes a user with their devices, registrations and attendance,
    /// atomically; retried when it conflicts with a concurrent write of
    /// their rows (a batch, a flush of held-back rows).
    pub async fn delete(&self, id: Uuid) -> Result<bool, StoreError> {
        if self.get(id).await?.is_none() {
            return Ok(false);
        }
        let sql = concat!(
            "BEGIN;
             DELETE device WHERE user = $id;
             DELETE identifier WHERE user = $id;
             DELETE registration WHERE user = $id;
             DELETE attendance WHERE user = $id;
             DELETE type::record('beacon', record::id($id));
             DELETE $id;",
            directory_changed!(),
            "COMMIT;"
        );
        super::retried_transaction(self.db, sql, rid("user", id)).await?;
        Ok(true)
    }

    pub async fn devices(&self, user: Uuid) -> Result<Vec<Device>, StoreError> {
        let mut res = self
            .db
            .query("SELECT user, identifier, created_at FROM device WHERE user = $u ORDER BY created_at")
            .bind(("u", rid("user", user)))
            .await?;
        convert_all(res.take::<Vec<DeviceRow>>(0)?)
    }

    pub async fn add_device(&self, user: Uuid, identifier: String, now: DateTime<Utc>) -> Result<Device, StoreError> {
        let row = DeviceRow { user: rid("user", user), identifier, created_at: now };
        self.db
            .query("BEGIN; CREATE device CONTENT $row; CREATE $ident SET user = $row.user, kind = 'device'; COMMIT;")
            .bind(("ident", ident_id(&row.identifier)))
            .bind(("row", row.clone()))
            .await?
            .check()?;
        row.try_into()
    }

    /// Removes one of `user`'s device identifiers; false if they had none such.
    pub async fn remove_device(&self, user: Uuid, identifier: String) -> Result<bool, StoreError> {
        let mut res = self
            .db
            .query("SELECT user, identifier, created_at FROM device WHERE user = $u AND identifier = $i")
            .bind(("u", rid("user", user)))
            .bind(("i", identifier.clone()))
            .await?;
        let found: Vec<DeviceRow> = res.take(0)?;
        if found.is_empty() {
            return Ok(false);
        }
        let sql = concat!(
            "BEGIN; DELETE device WHERE user = $u AND identifier = $i; DELETE $ident;",
            directory_changed!(),
            "COMMIT;"
        );
        retried_write(|| {
            let bound = self.db.query(sql).bind(("u", rid("user", user))).bind(("ident", ident_id(&identifier)));
            bound.bind(("i", identifier.clone()))
        })
        .await?;
        Ok(true)
    }

    /// Imports one chunk of rows in a bounded number of queries: existing
    /// e-mails are left alone (so re-running an import is harmless), new ones
    /// are created, and rows with an event are registered for it. One person
    /// may have several rows (one per event); their rows should share a chunk.
    pub async fn import(&self, rows: Vec<ImportRow>, now: DateTime<Utc>) -> Result<ImportSummary, StoreError> {
        self.import_or_preview(rows, now, false).await
    }

    /// What [`Users::import`] would do with `rows`: it reads all the same and
    /// writes nothing.
    pub async fn preview_import(&self, rows: Vec<ImportRow>, now: DateTime<Utc>) -> Result<ImportSummary, StoreError> {
        self.import_or_preview(rows, now, true).await
    }

    async fn import_or_preview(
        &self,
        rows: Vec<ImportRow>,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<ImportSummary, StoreError> {
        let mut summary = ImportSummary::default();
        let emails: Vec<String> = rows.iter().map(|r| r.email.clone()).collect();
        let bles: Vec<String> = rows.iter().map(|r| r.ble_uuid.clone()).collect();
        let mut res = self
            .db
            .query(
                "SELECT id, email, ble_uuid FROM user WHERE email IN $emails;
                 SELECT email, ble_uuid FROM user WHERE ble_uuid IN $bles;",
            )
            .bind(("emails", emails))
            .bind(("bles", bles))
            .await?
            .check()?;
        let by_email: Vec<ExistingUser> = res.take(0)?;
        let taken_ble: Vec<ExistingBle> = res.take(1)?;
        let mut ids: HashMap<String, RecordId> = by_email.into_iter().map(|u| (u.email, u.id)).collect();
        let taken_ble: HashMap<String, String> = taken_ble.into_iter().map(|u| (u.ble_uuid, u.email)).collect();

        let mut new_users = Vec::new();
        let mut seen_ble = HashSet::new();
        let mut wanted_regs = Vec::new();
        let mut counted = HashSet::new();
        for row in rows {
            if ids.contains_key(&row.email) {
                if counted.insert(row.email.clone()) {
                    summary.existing += 1;
                }
            } else {
                match taken_ble.get(&row.ble_uuid) {
                    Some(owner) if *owner != row.email => {
                        summary
                            .refused
                            .push((row.line, format!("bleUuid {} already belongs to {owner}", row.ble_uuid)));
                        continue;
                    }
                    _ => {}
                }
                if !seen_ble.insert(row.ble_uuid.clone()) {
                    summary.refused.push((row.line, format!("bleUuid {} appears twice in this file", row.ble_uuid)));
                    continue;
                }
                let id = rid("user", new_id());
                ids.insert(row.email.clone(), id.clone());
                counted.insert(row.email.clone());
                new_users.push(UserRow {
                    id,
                    email: row.email.clone(),
                    name: row.name,
                    role: Role::Attendee.as_str().to_owned(),
                    password_hash: None,
                    ble_uuid: row.ble_uuid,
                    created_at: now,
                    token_version: None,
                });
            }
            if let (Some(event), Some(user)) = (row.event, ids.get(&row.email)) {
                wanted_regs.push((key_of(user)?, event));
            }
        }
        summary.created = new_users.len();
        if !new_users.is_empty() && !dry_run {
            let idents: Vec<IdentRow> = new_users
                .iter()
                .map(|u| IdentRow { id: ident_id(&u.ble_uuid), user: u.id.clone(), kind: "ble".into() })
                .collect();
            self.db
                .query("BEGIN; INSERT INTO user $rows; INSERT INTO identifier $idents; COMMIT;")
                .bind(("rows", new_users))
                .bind(("idents", idents))
                .await?
                .check()?;
        }
        if !wanted_regs.is_empty() {
            let ids: Vec<RecordId> = wanted_regs.iter().map(|(u, e)| registration_id(*e, *u)).collect();
            let mut res = self.db.query("SELECT user, event FROM $ids").bind(("ids", ids)).await?;
            let existing: Vec<UserEvent> = res.take(0)?;
            let mut done: HashSet<(Uuid, Uuid)> = existing
                .iter()
                .map(|r| Ok((key_of(&r.user)?, key_of(&r.event)?)))
                .collect::<Result<_, StoreError>>()?;
            let mut regs = Vec::new();
            for (user, event) in wanted_regs {
                if !done.insert((user, event)) {
                    continue;
                }
                regs.push(RegistrationRow {
                    id: registration_id(event, user),
                    user: rid("user", user),
                    event: rid("event", event),
                    status: "REGISTERED".into(),
                    walk_in: false,
                    registered_at: now,
                    cancelled_at: None,
                });
            }
            summary.registered = regs.len();
            if !regs.is_empty() && !dry_run {
                self.db.query("INSERT INTO registration $rows").bind(("rows", regs)).await?.check()?;
            }
        }
        Ok(summary)
    }
}

/// The id of the lookup record for an identifier (see migration 0002).
pub(crate) fn ident_id(identifier: &str) -> RecordId {
    RecordId::new("identifier", identifier.to_owned())
}

#[derive(Debug, SurrealValue)]
struct IdentRow {
    id: RecordId,
    user: RecordId,
    kind: String,
}

#[derive(Debug, SurrealValue)]
struct ExistingUser {
    id: RecordId,
    email: String,
}

#[derive(Debug, SurrealValue)]
struct ExistingBle {
    email: String,
    ble_uuid: String,
}

#[derive(Debug, SurrealValue)]
struct UserEvent {
    user: RecordId,
    event: RecordId,
}
