//! The console at `/console` in a real browser (headless Chromium over CDP,
//! see `cdp.rs`), driven as an organiser would: log in, create and activate
//! an event, import a CSV with a bad row (and see the preview first), issue
//! a scanner key, submit sightings over HTTP and watch the check-in arrive,
//! check someone in by hand, download the CSV and parse it, revoke the key.
//!
//! A second test signs in as an admin with data in place and runs the
//! axe-core accessibility audit (WCAG 2.1 A and AA) on every page, at desktop
//! and phone width. Screenshots of each page go to `target/test-artifacts/`.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use crate::cdp::{Chromium, Page, artefact_dir, chromium_or_skip};
use crate::helpers::{Auth, PASSWORD, Session, TestApp, spawn_app};

/// Page steps (loading, a mutation, a re-render) get this long.
const STEP: Duration = Duration::from_secs(20);

const SUBMIT: &str = "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) { accepted checkIns } }";
const ADA_BLE: &str = "6f1c2a3e-8d4b-4c55-9a0e-2b7f4d9e1c3a";

/// One row per registration, a header, and one row whose e-mail is broken (line 5).
const PEOPLE_CSV: &str = "email,name,bleUuid\n\
    ada@example.org,Ada Lovelace,6f1c2a3e-8d4b-4c55-9a0e-2b7f4d9e1c3a\n\
    grace@example.org,Grace Hopper,\n\
    alan@example.org,Alan Turing,\n\
    not-an-email,Bad Row,\n";

#[tokio::test]
async fn an_organiser_runs_an_event_from_the_console() {
    let Some(binary) = chromium_or_skip() else { return };
    let app = spawn_app().await;
    let organiser = app.organizer("org@example.org").await;
    let chromium = Chromium::launch(&binary).await;
    let mut page = Page::open(&chromium, "console").await;
    log_in(&mut page, &app, "org@example.org").await;
    page.screenshot("console-events-empty.png").await;

    // Create an event that started half an hour ago, then activate it.
    click(&mut page, "#new-event").await;
    wait_ready(&mut page, "event-new").await;
    page.eval(
        "(() => { const local = (ms) => { const d = new Date(ms), p = (n) => String(n).padStart(2, '0'); \
           return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`; }; \
         const f = document.getElementById('event-form'); \
         f.elements.name.value = ''; \
         f.elements.startsAt.value = local(Date.now() - 30 * 60e3); \
         f.elements.endsAt.value = local(Date.now() + 2 * 3600e3); \
         f.elements.location.value = 'Hall A'; return true; })()",
    )
    .await;
    // A missing name is refused in the form, which keeps what was typed.
    click(&mut page, "#event-save").await;
    page.wait_for("the missing name to be pointed out", "document.querySelector('#event-form .form-error:not([hidden])')?.textContent.includes('Give the event a name')", STEP).await;
    assert_eq!(page.eval("document.getElementById('event-form').elements.location.value").await, json!("Hall A"));
    page.screenshot("console-event-new-error.png").await;
    page.eval("document.getElementById('event-form').elements.name.value = 'RustConf workshop'; true").await;
    click(&mut page, "#event-save").await;
    wait_ready(&mut page, "event-attendees").await;
    let event = page.eval("location.hash.split('/')[2]").await.as_str().unwrap().to_owned();
    assert_eq!(event_state(&app, &organiser, &event).await, "SCHEDULED");
    // Edit it: another room, and only strong signals count.
    go(&mut page, &format!("#/events/{event}/edit"), "event-edit").await;
    page.eval(
        "(() => { const f = document.getElementById('event-form'); f.elements.location.value = 'Hall B'; \
         f.elements.minRssi.value = '-80'; return true; })()",
    )
    .await;
    click(&mut page, "#event-save").await;
    wait_ready(&mut page, "event-attendees").await;
    page.wait_for("the save to be confirmed", "document.getElementById('toasts').textContent.includes('Saved')", STEP)
        .await;
    let saved = app
        .ok(
            &organiser.auth(),
            "query($id: ID!) { event(id: $id) { location policy { minRssi } } }",
            json!({ "id": event }),
        )
        .await;
    assert_eq!(saved["event"], json!({ "location": "Hall B", "policy": { "minRssi": -80 } }));
    click(&mut page, "#event-activateEvent").await;
    wait_ready(&mut page, "event-live").await;
    assert_eq!(event_state(&app, &organiser, &event).await, "ACTIVE");
    page.wait_for("the state badge", "document.querySelector('.page-head .badge').textContent === 'Live now'", STEP)
        .await;

    // Import: the preview shows every row and the bad one's reason; nothing is written until confirmed.
    go(&mut page, &format!("#/events/{event}/import"), "event-import").await;
    page.eval(&format!(
        "(() => {{ const dt = new DataTransfer(); dt.items.add(new File([{}], 'people.csv', {{ type: 'text/csv' }})); \
         const input = document.getElementById('import-file'); input.files = dt.files; \
         input.dispatchEvent(new Event('change')); return true; }})()",
        json!(PEOPLE_CSV)
    ))
    .await;
    click(&mut page, "#import-check").await;
    page.wait_for("the import preview", "document.getElementById('import-summary') !== null", STEP).await;
    let preview = page
        .eval(
            "Array.from(document.querySelectorAll('#import-preview tbody tr')).map(tr => \
             ({ line: tr.dataset.line, refused: tr.classList.contains('refused'), text: tr.textContent }))",
        )
        .await;
    let rows = preview.as_array().unwrap();
    assert_eq!(rows.len(), 4, "{preview:#}");
    let refused: Vec<&Value> = rows.iter().filter(|r| r["refused"] == true).collect();
    assert_eq!(refused.len(), 1, "{preview:#}");
    assert_eq!(refused[0]["line"], "5");
    assert!(refused[0]["text"].as_str().unwrap().contains("not a valid e-mail"), "{preview:#}");
    assert_eq!(registered(&app, &organiser, &event).await, 0, "a preview writes nothing");
    page.eval("document.getElementById('import-preview').scrollIntoView(); true").await;
    page.screenshot("console-import-preview.png").await;
    click(&mut page, "#import-confirm").await;
    page.wait_for("the import to finish", "document.getElementById('import-done') !== null", STEP).await;
    assert_eq!(registered(&app, &organiser, &event).await, 3);

    // A key for the door scanner; its secret is shown once, with a copy button.
    go(&mut page, "#/scanners", "scanners").await;
    page.eval("document.getElementById('key-form').elements.keyName.value = 'Main door'; true").await;
    click(&mut page, "#key-create").await;
    page.wait_for("the new key's secret", "document.getElementById('secret-value')?.value.length > 20", STEP).await;
    let secret = page.eval("document.getElementById('secret-value').value").await.as_str().unwrap().to_owned();
    click(&mut page, "#secret-copy").await;
    page.wait_for(
        "the copy to be confirmed",
        "document.getElementById('secret').textContent.includes('Copied.')",
        STEP,
    )
    .await;
    page.screenshot("console-scanners-secret.png").await;

    // The scanner uploads over HTTP; the live tab shows Ada's check-in.
    go(&mut page, &format!("#/events/{event}/live"), "event-live").await;
    page.wait_for("the live connection", "document.getElementById('connection').dataset.state === 'live'", STEP).await;
    let data = app
        .ok(
            &Auth::ApiKey(secret.clone()),
            SUBMIT,
            json!({ "b": { "batchId": uuid::Uuid::new_v4(), "sightings": [
                { "bleUuid": ADA_BLE, "seenAt": Utc::now() - chrono::Duration::seconds(20), "rssi": -60 },
            ] } }),
        )
        .await;
    assert_eq!(data["submitSightings"]["checkIns"], 1, "{data}");
    page.wait_for(
        "Ada's check-in on the live tab",
        "Array.from(document.querySelectorAll('#live-checkins li')).some(li => \
         li.querySelector('.name').textContent === 'Ada Lovelace' && li.textContent.includes('via Main door'))",
        STEP,
    )
    .await;
    page.wait_for("the counter", "document.getElementById('live-checked-in').textContent === '1'", STEP).await;
    page.screenshot("console-live.png").await;

    // Grace is at the desk without her phone: a manual check-in.
    go(&mut page, &format!("#/events/{event}/attendees"), "event-attendees").await;
    click(&mut page, "button[aria-label='Check in: Grace Hopper']").await;
    page.wait_for(
        "Grace checked in by hand",
        "Array.from(document.querySelectorAll('#attendee-list tbody tr')).some(tr => \
         tr.querySelector('.name').textContent === 'Grace Hopper' && tr.dataset.checkedIn === 'yes') && \
         document.getElementById('toasts').textContent.includes('Grace Hopper is checked in.')",
        STEP,
    )
    .await;
    page.screenshot("console-attendees.png").await;

    // The report, and its CSV downloaded through the page.
    go(&mut page, &format!("#/events/{event}/report"), "event-report").await;
    let downloads = tempfile::tempdir().unwrap();
    page.send_to_browser(
        "Browser.setDownloadBehavior",
        json!({ "behavior": "allow", "downloadPath": downloads.path().to_str().unwrap() }),
    )
    .await;
    click(&mut page, "#download-csv").await;
    let csv = downloaded_file(downloads.path()).await;
    page.screenshot("console-report.png").await;
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 3, "{csv}");
    let checked_in: Vec<&str> =
        records.iter().filter(|r| &r[col("checked_in")] == "true").map(|r| r.get(col("name")).unwrap()).collect();
    assert_eq!(checked_in.len(), 2, "{csv}");
    assert!(checked_in.contains(&"Ada Lovelace") && checked_in.contains(&"Grace Hopper"), "{csv}");

    // Revoke the key, after confirming; the scanner is refused from then on.
    go(&mut page, "#/scanners", "scanners").await;
    click(&mut page, "button[aria-label='Revoke Main door']").await;
    page.wait_for("the confirmation", "document.getElementById('confirm').open", STEP).await;
    page.screenshot("console-revoke-confirm.png").await;
    click(&mut page, "#confirm-ok").await;
    page.wait_for(
        "the key shown revoked",
        "document.querySelector('#key-list tr[data-revoked=\"true\"]') !== null",
        STEP,
    )
    .await;
    let (status, body) = app.post_gql(&Auth::ApiKey(secret), "{ activeEvents { id } }", json!({})).await;
    assert!(status == 401 || body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", "{status} {body}");
    page.screenshot("console-scanners.png").await;
    assert!(page.errors().is_empty(), "the page reported errors: {:#?}", page.errors());
}

#[tokio::test]
async fn every_console_page_passes_an_accessibility_audit() {
    let Some(binary) = chromium_or_skip() else { return };
    let app = spawn_app().await;
    let admin = app.admin().await;
    let event = seed_event(&app, &admin).await;
    let chromium = Chromium::launch(&binary).await;
    let mut page = Page::open(&chromium, "console-audit").await;
    let mut found = Vec::new();

    page.goto(&app.url("/console")).await;
    wait_view(&mut page, "login").await;
    audit(&mut page, &mut found, "login").await;
    log_in(&mut page, &app, "admin@example.org").await;

    let pages = [
        ("#/events", "events"),
        ("#/events/new", "event-new"),
        (&*format!("#/events/{event}/attendees"), "event-attendees"),
        (&*format!("#/events/{event}/import"), "event-import"),
        (&*format!("#/events/{event}/live"), "event-live"),
        (&*format!("#/events/{event}/report"), "event-report"),
        (&*format!("#/events/{event}/edit"), "event-edit"),
        ("#/scanners", "scanners"),
        ("#/users", "users"),
    ];
    for (hash, name) in pages {
        go(&mut page, hash, name).await;
        if name == "event-live" {
            page.wait_for("the check-ins", "document.querySelectorAll('#live-checkins li').length === 2", STEP).await;
        }
        audit(&mut page, &mut found, name).await;
        page.screenshot(&format!("console-{name}.png")).await;
        page.screenshot_full(&format!("console-{name}-full.png")).await;
    }

    // The confirmation dialog, and a form showing an error.
    go(&mut page, "#/users", "users").await;
    click(&mut page, "button[aria-label='Delete Ada Lovelace']").await;
    page.wait_for("the delete confirmation", "document.getElementById('confirm').open", STEP).await;
    let text = page.eval("document.getElementById('confirm').textContent").await;
    assert!(text.as_str().unwrap().contains("every attendance record"), "{text}");
    audit(&mut page, &mut found, "users-delete-dialog").await;
    page.screenshot("console-users-delete.png").await;
    click(&mut page, "#confirm-cancel").await;
    go(&mut page, "#/events/new", "event-new").await;
    click(&mut page, "#event-save").await;
    page.wait_for("the form error", "!document.querySelector('#event-form .form-error').hidden", STEP).await;
    audit(&mut page, &mut found, "event-new-error").await;

    // A phone.
    page.send(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true }),
    )
    .await;
    for (hash, name) in [("#/events", "events"), (&*format!("#/events/{event}/attendees"), "event-attendees")] {
        go(&mut page, hash, name).await;
        audit(&mut page, &mut found, &format!("{name}-phone")).await;
        page.screenshot(&format!("console-{name}-phone.png")).await;
        let overflow = page.eval("document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
        if overflow != json!(0) {
            found.push(format!("{name} is {overflow} px wider than a phone's screen"));
        }
    }
    // And the dark scheme (headless Chromium asks for light).
    page.send(
        "Emulation.setEmulatedMedia",
        json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }),
    )
    .await;
    go(&mut page, &format!("#/events/{event}/report"), "event-report").await;
    audit(&mut page, &mut found, "report-dark-phone").await;
    page.screenshot("console-report-dark-phone.png").await;
    assert!(found.is_empty(), "accessibility violations:\n{}", found.join("\n"));
    assert!(page.errors().is_empty(), "the page reported errors: {:#?}", page.errors());
}

/// An active event run by an organiser, with three registrations, two
/// check-ins and a scanner key; returns its id.
async fn seed_event(app: &TestApp, admin: &Session) -> String {
    let organiser = app.organizer("org@example.org").await;
    let now = Utc::now();
    let data = app
        .ok(
            &organiser.auth(),
            "mutation($i: CreateEventInput!) { createEvent(input: $i) { id } }",
            json!({ "i": { "name": "Morning keynote", "location": "Hall A",
                "startsAt": now - chrono::Duration::hours(1), "endsAt": now + chrono::Duration::hours(2) } }),
        )
        .await;
    let event = data["createEvent"]["id"].as_str().unwrap().to_owned();
    app.activate(&organiser, &event).await;
    let csv = PEOPLE_CSV.replace("not-an-email,Bad Row,\n", "");
    app.ok(
        &admin.auth(),
        "mutation($c: String!, $e: ID) { importAttendees(csv: $c, eventId: $e) { registered } }",
        json!({ "c": csv, "e": event }),
    )
    .await;
    let (_, key) = app.api_key(&organiser, "Main door", None).await;
    let grace = app.ok(&admin.auth(), "{ userByEmail(email: \"grace@example.org\") { bleUuid } }", json!({})).await;
    let data = app
        .ok(
            &Auth::ApiKey(key),
            SUBMIT,
            json!({ "b": { "batchId": uuid::Uuid::new_v4(), "sightings": [
                { "bleUuid": ADA_BLE, "seenAt": now - chrono::Duration::minutes(50), "rssi": -60 },
                { "bleUuid": ADA_BLE, "seenAt": now - chrono::Duration::minutes(48), "rssi": -58 },
                { "bleUuid": grace["userByEmail"]["bleUuid"], "seenAt": now - chrono::Duration::minutes(10), "rssi": -70 },
            ] } }),
        )
        .await;
    assert_eq!(data["submitSightings"]["checkIns"], 2, "{data}");
    event
}

/// Opens the console and logs in as `email`; waits for the events page.
async fn log_in(page: &mut Page, app: &TestApp, email: &str) {
    if page.eval("location.pathname").await != json!("/console") {
        page.goto(&app.url("/console")).await;
        wait_view(page, "login").await;
    }
    page.eval(&format!(
        "document.getElementById('email').value = {}; document.getElementById('password').value = {}; \
         document.getElementById('login').click(); true",
        json!(email),
        json!(PASSWORD)
    ))
    .await;
    wait_view(page, "app").await;
    wait_ready(page, "events").await;
}

async fn wait_view(page: &mut Page, view: &str) {
    page.wait_for(&format!("the {view} view"), &format!("document.body.dataset.view === '{view}'"), STEP).await;
}

/// Waits until the page `name` has rendered (the router marks it ready).
async fn wait_ready(page: &mut Page, name: &str) {
    let check = format!(
        "document.body.dataset.ready === '{name}' && document.body.dataset.page === '{name}' && \
         !document.getElementById('page').hasAttribute('aria-busy')"
    );
    page.wait_for(&format!("the {name} page"), &check, STEP).await;
}

/// Goes to `hash` and waits for the page `name` to render.
async fn go(page: &mut Page, hash: &str, name: &str) {
    // Going to the page already shown renders it again, as a click on its link would.
    page.eval(&format!(
        "(() => {{ const to = {}; document.body.dataset.ready = ''; \
         if (location.hash === to) window.dispatchEvent(new HashChangeEvent('hashchange')); else location.hash = to; \
         return true; }})()",
        json!(hash)
    ))
    .await;
    wait_ready(page, name).await;
}

async fn click(page: &mut Page, selector: &str) {
    let clicked = page
        .eval(&format!(
            "(() => {{ const n = document.querySelector({}); if (!n) return false; n.click(); return true; }})()",
            json!(selector)
        ))
        .await;
    assert_eq!(clicked, json!(true), "nothing to click at {selector}");
}

/// What axe-core finds on the page as it stands, one line per element,
/// added to `found`; a screenshot is kept of a page with findings.
async fn audit(page: &mut Page, found: &mut Vec<String>, name: &str) {
    let violations = page.accessibility_violations().await;
    if !violations.is_empty() {
        let shot = page.screenshot(&format!("console-{name}-a11y-failure.png")).await;
        found.push(format!("on {name} (screenshot {}):", shot.display()));
        found.extend(violations.into_iter().map(|v| format!("  {v}")));
    }
}

async fn event_state(app: &TestApp, who: &Session, event: &str) -> String {
    let data = app.ok(&who.auth(), "query($id: ID!) { event(id: $id) { state } }", json!({ "id": event })).await;
    data["event"]["state"].as_str().unwrap().to_owned()
}

async fn registered(app: &TestApp, who: &Session, event: &str) -> i64 {
    let data =
        app.ok(&who.auth(), "query($id: ID!) { event(id: $id) { registeredCount } }", json!({ "id": event })).await;
    data["event"]["registeredCount"].as_i64().unwrap()
}

/// Waits for the browser to finish writing one `.csv` file into `dir`; returns its text.
async fn downloaded_file(dir: &Path) -> String {
    let started = std::time::Instant::now();
    loop {
        let done: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .collect();
        if let [file] = done.as_slice() {
            let text = std::fs::read_to_string(file).unwrap();
            // Kept with the screenshots, to look at.
            std::fs::write(artefact_dir().join("console-attendance.csv"), &text).unwrap();
            return text;
        }
        assert!(started.elapsed() < STEP, "no CSV was downloaded into {}", dir.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
