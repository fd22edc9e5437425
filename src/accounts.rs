//! Creating accounts: shared by `signUp`, `createUser`, and the CLI's
//! `admin create`, so every path checks the same things.

use chrono::Utc;

use crate::auth::hash_password;
use crate::domain::{BleUuid, Email, Password, PersonName, Role};
use crate::graphql::ApiError;
use crate::store::{NewUser, SurrealStore, User};

/// Creates an account after checking that the e-mail and the BLE UUID are
/// free. The unique indexes catch the race where two requests check at once.
pub async fn create_account(
    store: &SurrealStore,
    email: Email,
    name: PersonName,
    role: Role,
    password: Option<Password>,
    ble: Option<BleUuid>,
) -> Result<User, ApiError> {
    let users = store.users();
    if users.by_email(email.as_str()).await?.is_some() {
        return Err(ApiError::Conflict("an account with this e-mail already exists".into()));
    }
    let ble = ble.unwrap_or_else(BleUuid::random).to_canonical();
    if users.by_identifier(&ble).await?.is_some() {
        return Err(ApiError::Conflict("this bleUuid already belongs to another user".into()));
    }
    let password_hash = match password {
        Some(p) => Some(hash_password(&p).await?),
        None => None,
    };
    let new = NewUser {
        email: email.as_str().to_owned(),
        name: name.as_str().to_owned(),
        role,
        password_hash,
        ble_uuid: ble,
    };
    Ok(users.create(new, Utc::now()).await?)
}
