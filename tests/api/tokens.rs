//! Login tokens that must be refused: forged, expired, wrong algorithm,
//! wrong audience or issuer, malformed.

use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rollcall::config::{DbArgs, ServeArgs};
use serde_json::json;

use crate::helpers::{Auth, code, spawn_with};

const SECRET: &str = "an-integration-test-secret-of-40-bytes!!";

fn claims(sub: &str, exp_offset_secs: i64, iss: &str, aud: &str) -> serde_json::Value {
    let now = Utc::now().timestamp();
    json!({ "sub": sub, "role": "ADMIN", "iss": iss, "aud": aud, "iat": now, "exp": now + exp_offset_secs })
}

fn sign(alg: Algorithm, secret: &str, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

#[tokio::test]
async fn only_well_formed_current_hs256_tokens_from_our_secret_pass() {
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.jwt_secret = Some(SECRET.into());
    let app = spawn_with(args).await;
    let admin = app.admin().await;

    let good = sign(Algorithm::HS256, SECRET, &claims(&admin.id, 3600, "rollcall", "rollcall"));
    assert_eq!(app.ok(&Auth::Bearer(good), "{ me { id } }", json!({})).await["me"]["id"], admin.id.as_str());

    let unsigned = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(claims(&admin.id, 3600, "rollcall", "rollcall").to_string());
        format!("{header}.{body}.")
    };
    let cases = [
        (
            "forged with another secret",
            sign(
                Algorithm::HS256,
                "another-secret-that-is-long-enough-too",
                &claims(&admin.id, 3600, "rollcall", "rollcall"),
            ),
        ),
        ("expired", sign(Algorithm::HS256, SECRET, &claims(&admin.id, -3600, "rollcall", "rollcall"))),
        ("HS512 instead of HS256", sign(Algorithm::HS512, SECRET, &claims(&admin.id, 3600, "rollcall", "rollcall"))),
        ("alg none", unsigned),
        ("wrong issuer", sign(Algorithm::HS256, SECRET, &claims(&admin.id, 3600, "someone-else", "rollcall"))),
        ("wrong audience", sign(Algorithm::HS256, SECRET, &claims(&admin.id, 3600, "rollcall", "another-app"))),
        (
            "unknown user",
            sign(Algorithm::HS256, SECRET, &claims(&uuid::Uuid::now_v7().to_string(), 3600, "rollcall", "rollcall")),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in cases {
        let (status, body) = app.post_gql(&Auth::Bearer(token), "{ me { id } }", json!({})).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(code(&body).as_deref(), Some("UNAUTHENTICATED"), "{what}");
        assert!(body.get("data").is_none(), "{what}: nothing ran");
    }
    let expired = sign(Algorithm::HS256, SECRET, &claims(&admin.id, -3600, "rollcall", "rollcall"));
    let (_, body) = app.post_gql(&Auth::Bearer(expired), "{ me { id } }", json!({})).await;
    assert_eq!(body["errors"][0]["message"], "token expired");
}

#[tokio::test]
async fn a_short_jwt_secret_is_refused_at_start() {
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.jwt_secret = Some("too-short".into());
    let err = rollcall::startup::Application::build(args).await.err().expect("refused");
    assert!(format!("{err:#}").contains("at least 32 bytes"), "{err:#}");
}

/// A secret rotated with `--jwt-previous-secret`: tokens the old secret
/// signed still pass, a secret that is neither is refused, and the server's
/// new tokens are signed with the new secret only.
#[tokio::test]
async fn after_a_rotation_the_previous_secret_still_verifies_and_signs_nothing_new() {
    const NEW: &str = "the-secret-that-replaced-the-old-one-40b";
    let mut args = ServeArgs::for_tests(DbArgs::memory());
    args.jwt_secret = Some(NEW.into());
    args.jwt_previous_secret = Some(SECRET.into());
    let app = spawn_with(args).await;
    let admin = app.admin().await;

    let old = sign(Algorithm::HS256, SECRET, &claims(&admin.id, 3600, "rollcall", "rollcall"));
    assert_eq!(app.ok(&Auth::Bearer(old), "{ me { id } }", json!({})).await["me"]["id"], admin.id.as_str());
    let neither = sign(
        Algorithm::HS256,
        "a-third-secret-nobody-configured-here-40",
        &claims(&admin.id, 3600, "rollcall", "rollcall"),
    );
    let (status, body) = app.post_gql(&Auth::Bearer(neither), "{ me { id } }", json!({})).await;
    assert_eq!((status, code(&body).as_deref()), (401, Some("UNAUTHENTICATED")), "{body}");

    // The server's own token for the admin: signed with the new secret, not the old.
    let mut check = jsonwebtoken::Validation::new(Algorithm::HS256);
    check.set_audience(&["rollcall"]);
    let verifies = |secret: &str| {
        let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
        jsonwebtoken::decode::<serde_json::Value>(&admin.token, &key, &check).is_ok()
    };
    assert!(verifies(NEW), "signed with the new secret");
    assert!(!verifies(SECRET), "not with the previous one");
}
