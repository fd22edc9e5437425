//! The live dashboard at `/dashboard`: a page an organiser puts on a screen
//! at the door. It is plain HTML, CSS and an ES module embedded in the binary
//! (no CDN, no build step), so it works at a venue with no internet. The page
//! logs in over `POST /graphql` and follows `checkIns` and `eventStats` over
//! the `/graphql` WebSocket: it uses only the public API.
//!
//! The files have no fingerprinted names, so they are served `no-cache` with
//! an `ETag` of their content: a door screen left open for days revalidates
//! cheaply and never runs a new page with old code.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
struct Asset {
    /// The name under `/assets/dashboard/`.
    name: &'static str,
    /// Its `Content-Type`.
    mime: &'static str,
    /// Its bytes, fixed at compile time.
    body: &'static str,
    /// A hash of `body`, for the `ETag`.
    hash: u64,
}

const fn asset(name: &'static str, mime: &'static str, body: &'static str) -> Asset {
    Asset { name, mime, body, hash: fnv1a(body.as_bytes()) }
}

/// FNV-1a: enough to tell one build's file from another's, and `const`.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

const PAGE: Asset = asset("index.html", "text/html; charset=utf-8", include_str!("assets/dashboard/index.html"));

const ASSETS: &[Asset] = &[
    asset("app.js", "text/javascript; charset=utf-8", include_str!("assets/dashboard/app.js")),
    asset("app.css", "text/css; charset=utf-8", include_str!("assets/dashboard/app.css")),
    asset("icon.svg", "image/svg+xml", include_str!("assets/dashboard/icon.svg")),
];

/// Only the page's own files, and the API over HTTP and WebSocket on this origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /dashboard`.
pub async fn page(headers: HeaderMap) -> Response {
    let mut resp = serve(&PAGE, &headers);
    resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    resp
}

/// `GET /assets/dashboard/{file}`.
pub async fn asset_file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(asset) => serve(asset, &headers),
        None => (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "no such asset\n")
            .into_response(),
    }
}

/// The file, or 304 when the browser's copy is current.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.hash);
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim().trim_start_matches("W/") == etag));
    let common = [
        (header::CACHE_CONTROL, "no-cache".to_owned()),
        (header::ETAG, etag),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
    ];
    if current {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, [(header::CONTENT_TYPE, asset.mime)], asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_served() {
        for asset in ASSETS {
            let path = format!("/assets/dashboard/{}", asset.name);
            assert!(PAGE.body.contains(&path), "index.html does not use {path}");
        }
    }

    #[test]
    fn the_page_never_assigns_inner_html() {
        // Names come from users: they reach the page through textContent only.
        let js = ASSETS.iter().find(|a| a.name == "app.js").map(|a| a.body).unwrap_or_default();
        assert!(!js.contains(".innerHTML") && !js.contains("outerHTML") && !js.contains("insertAdjacentHTML"));
    }

    #[test]
    fn etags_differ_with_content() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
