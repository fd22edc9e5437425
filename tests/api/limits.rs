//! Requests the server must refuse without running them, and errors that
//! must not leak internals.

use serde_json::{Value, json};

use crate::helpers::{Auth, code, spawn_app};

#[tokio::test]
async fn an_oversized_body_gets_413() {
    let app = spawn_app().await;
    let big = "x".repeat(2 * 1024 * 1024);
    let resp = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(json!({ "query": "{ __typename }", "variables": { "pad": big } }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    // The unread body makes the connection unusable: the server closes it,
    // and says so, or a client would send its next request down a closed
    // connection.
    assert_eq!(resp.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body).as_deref(), Some("VALIDATION"));
    app.ok(&Auth::None, "{ __typename }", json!({})).await;
}

#[tokio::test]
async fn a_mutation_over_get_gets_405_and_queries_work() {
    let app = spawn_app().await;
    let mutation = "mutation { logIn(email: \"a@b.org\", password: \"whatever12\") { token } }";
    let resp = app.http.get(app.url("/graphql")).query(&[("query", mutation)]).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST");

    let resp = app.http.get(app.url("/graphql")).query(&[("query", "{ __typename }")]).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"]["__typename"], "Query");

    let named = "query Q { __typename } mutation M { signUp(email: \"a@b.org\", name: \"A\", password: \"whatever12\") { token } }";
    let resp =
        app.http.get(app.url("/graphql")).query(&[("query", named), ("operationName", "M")]).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405, "the selected operation is a mutation");
}

#[tokio::test]
async fn too_deep_and_too_complex_queries_are_refused() {
    let app = spawn_app().await;
    let org = app.organizer("org@example.org").await;
    let mut q = String::from("{ me { id } }");
    for _ in 0..4 {
        q = q.replacen("{ id }", "{ registrations(first: 1) { edges { node { user { id } } } } }", 1);
    }
    let (_, body) = app.post_gql(&org.auth(), &q, json!({})).await;
    assert_eq!(code(&body).as_deref(), Some("VALIDATION"), "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("nested too deep"), "{body}");

    // Each alias costs two points (`me` and `id`): 10,001 of them exceed 20,000.
    let wide: String = (0..10_001).map(|i| format!("a{i}: me {{ id }} ")).collect();
    let (_, body) = app.post_gql(&org.auth(), &format!("{{ {wide} }}"), json!({})).await;
    assert!(body.get("data").is_none_or(|d| d.is_null()), "nothing ran");
    assert_eq!(code(&body).as_deref(), Some("VALIDATION"), "{}", body["errors"]);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("too complex"), "{}", body["errors"]);
}

#[tokio::test]
async fn batches_are_refused() {
    let app = spawn_app().await;
    let batch = json!([{ "query": "{ __typename }" }, { "query": "{ __typename }" }]);
    let resp = app.http.post(app.url("/graphql")).json(&batch).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body).as_deref(), Some("VALIDATION"));
}

#[tokio::test]
async fn malformed_requests_get_clear_validation_errors() {
    let app = spawn_app().await;
    for body in ["{", "not json", "{\"nope\": 1}"] {
        let resp = app
            .http
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{body}");
        let json: Value = resp.json().await.unwrap();
        assert_eq!(code(&json).as_deref(), Some("VALIDATION"), "{body}");
    }
    for (query, what) in
        [("{ me { id", "syntax"), ("{ noSuchField }", "unknown field"), ("{ event(id: 5, x: 1) { id } }", "bad args")]
    {
        let (_, body) = app.post_gql(&Auth::None, query, json!({})).await;
        assert_eq!(code(&body).as_deref(), Some("VALIDATION"), "{what}: {body}");
    }
    let (_, body) = app.post_gql(&Auth::None, "query($i: CreateEventInput!) { __typename }", json!({ "i": 5 })).await;
    assert_eq!(code(&body).as_deref(), Some("VALIDATION"), "{body}");

    let resp = app
        .http
        .post(app.url("/graphql"))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "an unknown auth scheme is refused, not ignored");
}

#[tokio::test]
async fn every_error_has_a_code() {
    let app = spawn_app().await;
    let att = app.sign_up("att@example.org", "Att").await;
    for q in
        ["{ users { edges { node { id } } } }", "{ apiKeys { id } }", "{ oops }", "mutation { deleteUser(id: \"x\") }"]
    {
        for auth in [Auth::None, att.auth()] {
            let (_, body) = app.post_gql(&auth, q, json!({})).await;
            for err in body["errors"].as_array().unwrap() {
                assert!(err["extensions"]["code"].is_string(), "{q}: {err}");
            }
        }
    }
}

/// GraphiQL's schema introspection (its `TypeRef` fragment nests `ofType`
/// nine times, under `__schema { types { fields { args { type ... } } } }`)
/// must fit within the limits, or the playground's docs and completion break.
#[tokio::test]
async fn the_playgrounds_introspection_fits_the_limits() {
    let app = spawn_app().await;
    let mut type_ref = String::from("kind name");
    for _ in 0..9 {
        type_ref = format!("kind name ofType {{ {type_ref} }}");
    }
    let q = format!(
        "query IntrospectionQuery {{ __schema {{ queryType {{ name }} mutationType {{ name }} subscriptionType {{ name }}
           types {{ kind name description
             fields(includeDeprecated: true) {{ name description args {{ name description type {{ {t} }} defaultValue }} type {{ {t} }} isDeprecated deprecationReason }}
             inputFields {{ name description type {{ {t} }} defaultValue }}
             interfaces {{ {t} }} enumValues(includeDeprecated: true) {{ name description isDeprecated deprecationReason }} possibleTypes {{ {t} }} }}
           directives {{ name description locations args {{ name description type {{ {t} }} defaultValue }} }} }} }}",
        t = type_ref
    );
    let (_, body) = app.post_gql(&Auth::None, &q, json!({})).await;
    assert!(body.get("errors").is_none(), "{}", body["errors"]);
    assert!(body["data"]["__schema"]["types"].as_array().unwrap().len() > 10);
}
