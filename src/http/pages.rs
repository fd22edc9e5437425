//! The pages built for people, embedded in the binary (no CDN, no build
//! step) so they work at a venue with no internet:
//! - `/dashboard`, the live door screen: it follows `checkIns` and
//!   `eventStats` over the `/graphql` WebSocket, and in door mode shows the
//!   event's check-in QR code (`doorCode`, rendered as SVG by the server);
//! - `/console`, where an organiser runs events, attendees, imports,
//!   reports, scanners' keys and (admins) users.
//!
//! Both are plain HTML, CSS and native ES modules under `assets/`: one folder
//! per page and `assets/shared/` for what they share (the GraphQL client over
//! HTTP and WebSocket, formatting, charts and the component style). They use
//! only the public API, as any other client would.
//!
//! The files have no fingerprinted names, so they are served `no-cache` with
//! an `ETag` of their content: a door screen left open for days revalidates
//! cheaply and never runs a new page with old code.

use axum::extract::OriginalUri;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
struct Asset {
    /// Its URL path, e.g. `/assets/shared/api.js`.
    path: &'static str,
    /// Its `Content-Type`.
    mime: &'static str,
    /// Its bytes, fixed at compile time.
    body: &'static str,
    /// A hash of `body`, for the `ETag`.
    hash: u64,
}

const fn asset(path: &'static str, mime: &'static str, body: &'static str) -> Asset {
    Asset { path, mime, body, hash: fnv1a(body.as_bytes()) }
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// One module or stylesheet under `assets/`, served at `/assets/...`.
macro_rules! file {
    ($mime:expr, $path:literal) => {
        asset(concat!("/assets/", $path), $mime, include_str!(concat!("assets/", $path)))
    };
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

const DASHBOARD: Asset = asset("/dashboard", HTML, include_str!("assets/dashboard/index.html"));
const CONSOLE: Asset = asset("/console", HTML, include_str!("assets/console/index.html"));

const ASSETS: &[Asset] = &[
    file!(JS, "shared/api.js"),
    file!(JS, "shared/login.js"),
    file!(JS, "shared/live-socket.js"),
    file!(JS, "shared/check-ins.js"),
    file!(JS, "shared/format.js"),
    file!(JS, "shared/chart.js"),
    file!(CSS, "shared/ui.css"),
    file!(SVG, "shared/icon.svg"),
    file!(JS, "dashboard/main.js"),
    file!(JS, "dashboard/event-live.js"),
    file!(JS, "dashboard/door-code.js"),
    file!(CSS, "dashboard/dashboard.css"),
    file!(JS, "dashboard/fleet.js"),
    file!(CSS, "dashboard/fleet.css"),
    file!(JS, "console/main.js"),
    file!(JS, "console/ui.js"),
    file!(JS, "console/events.js"),
    file!(JS, "console/event-form.js"),
    file!(JS, "console/attendees.js"),
    file!(JS, "console/import.js"),
    file!(JS, "console/reports.js"),
    file!(JS, "console/live.js"),
    file!(JS, "console/scanners.js"),
    file!(JS, "console/users.js"),
    file!(CSS, "console/console.css"),
];

/// Only the page's own files, and the API over HTTP and WebSocket on this origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /dashboard`.
pub async fn dashboard(headers: HeaderMap) -> Response {
    page(&DASHBOARD, &headers)
}

/// `GET /console`.
pub async fn console(headers: HeaderMap) -> Response {
    page(&CONSOLE, &headers)
}

fn page(page: &Asset, headers: &HeaderMap) -> Response {
    let mut resp = serve(page, headers);
    resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    resp
}

/// `GET /assets/{dashboard,console,shared}/{file}`.
pub async fn asset_file(OriginalUri(uri): OriginalUri, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.path == uri.path()) {
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

    /// Every `/assets/...` path that a page or module names.
    fn referenced(text: &str) -> Vec<String> {
        text.match_indices("/assets/")
            .map(|(at, _)| {
                let rest = &text[at..];
                let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || "/._-".contains(c))).unwrap_or(rest.len());
                // A sentence may end right after a path; a folder is not a file.
                rest[..end].trim_end_matches('.').to_owned()
            })
            .filter(|path| !path.ends_with('/'))
            .collect()
    }

    #[test]
    fn every_file_is_named_by_a_page_or_module_and_every_name_is_served() {
        let texts: Vec<&str> =
            [DASHBOARD.body, CONSOLE.body].into_iter().chain(ASSETS.iter().map(|a| a.body)).collect();
        let named: Vec<String> = texts.iter().flat_map(|t| referenced(t)).collect();
        for path in &named {
            assert!(ASSETS.iter().any(|a| a.path == path), "{path} is named but not served");
        }
        for asset in ASSETS {
            // Modules import their siblings by relative path (`./ui.js`).
            let file = asset.path.rsplit('/').next().unwrap_or_default();
            let used =
                named.iter().any(|n| n == asset.path) || texts.iter().any(|t| t.contains(&format!("\"./{file}\"")));
            assert!(used, "{} is served but nothing uses it", asset.path);
        }
    }

    #[test]
    fn the_pages_never_assign_inner_html() {
        // Names come from users: they reach the page through textContent only.
        for asset in ASSETS.iter().filter(|a| a.mime == JS) {
            let js = asset.body;
            assert!(
                !js.contains(".innerHTML") && !js.contains("outerHTML") && !js.contains("insertAdjacentHTML"),
                "{} writes markup",
                asset.path
            );
        }
    }

    #[test]
    fn etags_differ_with_content() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
