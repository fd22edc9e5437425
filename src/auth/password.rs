//! Password hashing with argon2id (the crate's defaults: 19 MiB, t=2, p=1,
//! OWASP's recommended minimum). Hashing is CPU-bound, so it runs on the
//! blocking pool and never stalls the async workers.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};

use super::AuthError;
use crate::domain::Password;

/// Hashes `password` into a PHC string (`$argon2id$v=19$...`).
pub async fn hash_password(password: &Password) -> Result<String, AuthError> {
    let pw = password.expose().to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(pw.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| AuthError::Hashing)
    })
    .await
    .map_err(|_| AuthError::Hashing)?
}

/// Checks `password` against a stored PHC string. A malformed stored hash
/// counts as a mismatch: it must not let anyone in.
pub async fn verify_password(password: &str, phc: &str) -> bool {
    let (pw, phc) = (password.to_owned(), phc.to_owned());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc)
            .map(|parsed| Argon2::default().verify_password(pw.as_bytes(), &parsed).is_ok())
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// Verifies `password` against a throwaway hash, so that a login for an
/// unknown e-mail costs the same time as a wrong password and does not reveal
/// which e-mails have accounts.
pub async fn burn_verify_time(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let phc = match DUMMY.get() {
        Some(h) => h.clone(),
        None => {
            let salt = SaltString::generate(&mut OsRng);
            let hash = tokio::task::spawn_blocking(move || {
                Argon2::default().hash_password(b"rollcall-dummy", &salt).map(|h| h.to_string()).ok()
            })
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
            DUMMY.get_or_init(|| hash).clone()
        }
    };
    verify_password(password, &phc).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ_per_salt() {
        let pw = Password::parse("correct horse battery").unwrap();
        let a = hash_password(&pw).await.unwrap();
        let b = hash_password(&pw).await.unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify_password("correct horse battery", &a).await);
        assert!(!verify_password("wrong horse battery", &a).await);
        assert!(!verify_password("anything", "not a phc string").await);
    }
}
