//! The dashboard in a real browser: Debian's headless `chromium`, driven over
//! the Chrome DevTools Protocol with raw JSON on a WebSocket. The page logs in
//! as the organiser, picks the event and goes live; a scanner's batch then goes
//! in over HTTP, and the test passes only when the new check-in is on the page
//! within two seconds. A screenshot is kept under
//! `target/test-artifacts/dashboard.png`.
//!
//! A second test cuts the network between page and server while a check-in
//! is made, and checks the page resumes from its last cursor by itself. A
//! third checks the event's scanner fleet on the page: heartbeats show, a
//! scanner never heard from is marked, and a new one appears by itself. A
//! fourth opens door mode, reads the QR code's text off the page, and checks
//! an attendee in with it over HTTP.
//!
//! The browser is driven through `cdp.rs`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;

use crate::cdp::{Chromium, Page, chromium_or_skip};
use crate::helpers::{Auth, PASSWORD, Session, TestApp, spawn_app};

/// The check-in must show this soon after the batch is accepted.
const VISIBLE_WITHIN: Duration = Duration::from_secs(2);
/// Page steps that involve no live data (loading, logging in) get longer.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

const SUBMIT: &str = "mutation($b: SightingBatchInput!) { submitSightings(batch: $b) { accepted checkIns } }";

#[tokio::test]
async fn dashboard_shows_a_new_check_in_within_two_seconds() {
    let Some(binary) = chromium_or_skip() else { return };
    let app = spawn_app().await;
    let venue = Venue::create(&app).await;
    let chromium = Chromium::launch(&binary).await;
    let mut page = Page::open(&chromium, "dashboard").await;
    open_dashboard(&mut page, &app.url("/dashboard"), &venue).await;

    let sent = Instant::now();
    venue.newcomer_arrives(&app).await;
    let accepted = sent.elapsed();
    let left = VISIBLE_WITHIN.saturating_sub(accepted);
    page.wait_for("the new check-in on the page", &name_listed(&venue.newcomer_name), left).await;
    let since_sent = sent.elapsed();
    println!(
        "the new check-in was on the page {} ms after the batch was sent (the mutation took {} ms)",
        since_sent.as_millis(),
        accepted.as_millis()
    );
    assert!(since_sent <= VISIBLE_WITHIN, "visible only {since_sent:?} after the batch was sent");

    // The newest is on top, the counter agrees, and the name went in as text, not markup.
    let top = page.eval("document.querySelector('#checkins li .name').textContent").await;
    assert_eq!(top, json!(venue.newcomer_name));
    assert_eq!(page.eval("document.querySelectorAll('#checkins li i').length").await, json!(0));
    // The counters come from `eventStats`: Ada was seen seconds ago, Grace 25 minutes ago.
    for (id, want) in [("stat-checked-in", "2"), ("stat-present", "1"), ("stat-registered", "2")] {
        let check = format!("document.getElementById('{id}').textContent === '{want}'");
        page.wait_for(&format!("#{id} to read {want}"), &check, STEP_TIMEOUT).await;
    }

    let shot = page.screenshot("dashboard.png").await;
    println!("screenshot: {}", shot.display());
    // The same page dark, as a door screen, and on a phone: artefacts to look at, not assertions.
    let dark = json!({ "features": [
        { "name": "prefers-color-scheme", "value": "dark" },
        { "name": "prefers-reduced-motion", "value": "reduce" },
    ] });
    page.send("Emulation.setEmulatedMedia", dark).await;
    page.eval("document.body.classList.add('screen'); true").await;
    page.screenshot("dashboard-door-dark.png").await;
    page.eval("document.body.classList.remove('screen'); true").await;
    page.send(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true }),
    )
    .await;
    page.screenshot("dashboard-phone-dark.png").await;
    assert!(page.errors().is_empty(), "the page reported errors: {:#?}", page.errors());
}

/// The network between the page and the server drops while a check-in is
/// made; when it comes back the page reconnects by itself and resumes after
/// its last cursor: the missed check-in shows, and nothing is sent twice.
#[tokio::test]
async fn dashboard_resumes_after_the_network_drops() {
    let Some(binary) = chromium_or_skip() else { return };
    let app = spawn_app().await;
    let venue = Venue::create(&app).await;
    let network = Network::between_page_and(app.addr).await;
    let chromium = Chromium::launch(&binary).await;
    let mut page = Page::open(&chromium, "dashboard").await;
    open_dashboard(&mut page, &format!("http://{}/dashboard", network.addr), &venue).await;
    assert_eq!(delivered(&mut page).await, 1);

    network.cut();
    page.wait_for(
        "the page to notice the drop",
        "['reconnecting', 'offline', 'connecting'].includes(document.getElementById('connection').dataset.state)",
        STEP_TIMEOUT,
    )
    .await;
    venue.newcomer_arrives(&app).await;
    network.restore();

    page.wait_for("the check-in made while offline", &name_listed(&venue.newcomer_name), STEP_TIMEOUT).await;
    page.wait_for("live again", "document.getElementById('connection').dataset.state === 'live'", STEP_TIMEOUT).await;
    let rows = page.eval("Array.from(document.querySelectorAll('#checkins li .name')).map(n => n.textContent)").await;
    assert_eq!(rows, json!([venue.newcomer_name, venue.earlier_name]));
    // Resumed with `after: <last cursor>`: the server sent Grace once in all, not again on reconnect.
    assert_eq!(delivered(&mut page).await, 2, "check-ins the server delivered to the page");
    assert!(page.errors().is_empty(), "the page reported errors: {:#?}", page.errors());
}

/// The fleet panel shows the event's scanners: one that sent a heartbeat with
/// its adverts and outbox, one never heard from marked with the warning
/// class, none of another event's; and a scanner that starts sending
/// heartbeats while the page is open appears without a reload.
#[tokio::test]
async fn dashboard_shows_the_events_scanners() {
    let Some(binary) = chromium_or_skip() else { return };
    let app = spawn_app().await;
    let venue = Venue::create(&app).await;
    let org = &venue.organiser;
    let (east, east_secret) = app.api_key(org, "east door", Some(vec![&venue.event])).await;
    heartbeat(&app, &east_secret, 420, 3).await;
    let (south, _) = app.api_key(org, "south door", Some(vec![&venue.event])).await;
    let elsewhere = app.create_event(org, "Another day").await;
    let (other, other_secret) = app.api_key(org, "other event's door", Some(vec![&elsewhere])).await;
    heartbeat(&app, &other_secret, 10, 0).await;

    let chromium = Chromium::launch(&binary).await;
    let mut page = Page::open(&chromium, "dashboard-fleet").await;
    open_dashboard(&mut page, &app.url("/dashboard"), &venue).await;
    let east_row = fleet_row(&east);
    page.wait_for(
        "the east door with its heartbeat's figures",
        &format!(
            "(() => {{ const li = {east_row}; return !!li && !li.classList.contains('warn') && \
             li.querySelector('.fleet-state').textContent === 'OK' && \
             /Adverts \\/ min420/.test(li.textContent) && /Outbox3/.test(li.textContent) && \
             /Last heard(just now|\\d+ s ago)/.test(li.textContent); }})()"
        ),
        STEP_TIMEOUT,
    )
    .await;
    let south_row = fleet_row(&south);
    assert_eq!(
        page.eval(&format!(
            "(() => {{ const li = {south_row}; return [li.classList.contains('warn'), \
             li.querySelector('.fleet-state').textContent]; }})()"
        ))
        .await,
        json!([true, "Never heard from"]),
        "a scanner never heard from is stale, in the warning colour"
    );
    assert_eq!(page.eval(&format!("{} === null", fleet_row(&other))).await, json!(true), "another event's");
    let warn = page
        .eval(&format!("getComputedStyle({south_row}).borderTopColor !== getComputedStyle({east_row}).borderTopColor"))
        .await;
    assert_eq!(warn, json!(true), "the warning class changes how it looks");

    // A scanner set up while the page is open shows at the next refresh.
    let (west, west_secret) = app.api_key(org, "west door", Some(vec![&venue.event])).await;
    heartbeat(&app, &west_secret, 0, 12).await;
    page.wait_for("the new west door", &format!("{} !== null", fleet_row(&west)), STEP_TIMEOUT).await;
    page.eval("document.getElementById('fleet').scrollIntoView(); true").await;
    page.screenshot("dashboard-fleet.png").await;
    assert!(page.errors().is_empty(), "the page reported errors: {:#?}", page.errors());
}

/// A scanner's heartbeat with its adverts per minute and outbox depth.
async fn heartbeat(app: &TestApp, secret: &str, adverts: i64, outbox: i64) {
    let beat = "mutation($n: Int!, $o: Int!, $c: DateTime!) { scannerHeartbeat(input: { version: \"1.0.0\",
        outboxDepth: $o, clock: $c, health: { advertsPerMinute: $n } }) { at } }";
    app.ok(&Auth::ApiKey(secret.to_owned()), beat, json!({ "n": adverts, "o": outbox, "c": Utc::now() })).await;
}

/// A JS expression: the fleet panel's item for the key `id`, or null.
fn fleet_row(id: &str) -> String {
    format!("document.querySelector('#fleet-list li[data-key=\"{id}\"]')")
}

/// Door mode shows the event's check-in code as a server-rendered SVG QR
/// code, refreshed every period; the code it shows checks an attendee in
/// over HTTP (`checkInWithCode`), and the check-in shows on the page.
#[tokio::test]
async fn door_mode_shows_a_qr_code_that_checks_an_attendee_in() {
    let Some(binary) = chromium_or_skip() else { return };
    let app = spawn_app().await;
    let venue = Venue::create(&app).await;
    let chromium = Chromium::launch(&binary).await;
    let mut page = Page::open(&chromium, "door").await;
    open_dashboard(&mut page, &app.url("/dashboard?door"), &venue).await;

    let shown = "document.querySelector('#door-qr svg path') !== null && \
                 (document.getElementById('door-qr').dataset.code ?? '').startsWith('rc1.')";
    page.wait_for("the QR code in door mode", shown, STEP_TIMEOUT).await;
    let code = page.eval("document.getElementById('door-qr').dataset.code").await;
    let code = code.as_str().unwrap().to_owned();
    // The image on the page is the QR code of that very text (encoded here
    // independently, with the same error correction and one unit per module).
    let drawn = page.eval("document.querySelector('#door-qr svg path').getAttribute('d')").await;
    let qr = qrcode::QrCode::with_error_correction_level(code.as_bytes(), qrcode::EcLevel::M).unwrap();
    let expected = qr.render::<qrcode::render::svg::Color<'_>>().module_dimensions(1, 1).quiet_zone(true).build();
    assert!(expected.contains(&format!("d=\"{}\"", drawn.as_str().unwrap())), "the page draws the QR code of {code}");
    page.screenshot("dashboard-door-code.png").await;

    // The newcomer's app scans it.
    let ada = app.ok(&Auth::None, LOG_IN, json!({ "e": "ada@example.org", "p": PASSWORD })).await;
    let ada = Auth::Bearer(ada["logIn"]["token"].as_str().unwrap().to_owned());
    let q = "mutation($c: String!, $e: ID) { checkInWithCode(code: $c, eventId: $e) { source } }";
    let data = app.ok(&ada, q, json!({ "c": code, "e": venue.event })).await;
    assert_eq!(data["checkInWithCode"]["source"], "DOOR_CODE");
    page.wait_for("the door-code check-in on the page", &name_listed(&venue.newcomer_name), STEP_TIMEOUT).await;

    // The next period brings the next code, without a reload.
    let changed = format!("document.getElementById('door-qr').dataset.code !== {}", json!(code));
    page.wait_for("the next code", &changed, Duration::from_secs(40)).await;
    assert!(page.errors().is_empty(), "the page reported errors: {:#?}", page.errors());
}

const LOG_IN: &str = "mutation($e: String!, $p: String!) { logIn(email: $e, password: $p) { token } }";

/// Opens the dashboard at `url`, logs in as the venue's organiser, picks its
/// event and waits until it is live with the earlier check-in listed.
async fn open_dashboard(page: &mut Page, url: &str, venue: &Venue) {
    page.goto(url).await;
    page.wait_for("the login form", "document.body.dataset.view === 'login'", STEP_TIMEOUT).await;
    let log_in = |password: &str| {
        format!(
            "document.getElementById('email').value = {}; document.getElementById('password').value = {}; \
             document.getElementById('login').click(); true",
            json!(venue.organiser_email),
            json!(password),
        )
    };
    page.eval(&log_in("not the password")).await;
    page.wait_for(
        "the wrong password to be refused",
        "document.getElementById('login-error').textContent === 'Wrong e-mail or password.' && \
         !document.getElementById('login-error').hidden && document.body.dataset.view === 'login'",
        STEP_TIMEOUT,
    )
    .await;
    page.eval(&log_in(PASSWORD)).await;
    page.wait_for("the dashboard after logging in", "document.body.dataset.view === 'dashboard'", STEP_TIMEOUT).await;

    // The organiser has one event, so it is picked already; picking it again is harmless.
    let pick = format!(
        "(() => {{ const s = document.getElementById('event-select'); s.value = {id}; \
         s.dispatchEvent(new Event('change')); return s.value === {id}; }})()",
        id = json!(venue.event),
    );
    assert_eq!(page.eval(&pick).await, json!(true), "the event is in the picker");
    page.wait_for(
        "the event's name in the heading",
        &format!("document.getElementById('event-name').textContent === {}", json!(venue.event_name)),
        STEP_TIMEOUT,
    )
    .await;
    page.wait_for(
        "the live connection",
        "document.getElementById('connection').dataset.state === 'live'",
        STEP_TIMEOUT,
    )
    .await;
    // `checkIns` starts at `after: ""`: the check-in made before the page opened is listed.
    page.wait_for("the earlier check-in replayed", &name_listed(&venue.earlier_name), STEP_TIMEOUT).await;
}

/// How many check-in items the server has sent the page (duplicates included).
async fn delivered(page: &mut Page) -> u64 {
    page.eval("Number(document.getElementById('checkins').dataset.delivered)").await.as_u64().unwrap()
}

/// A JS expression: whether a row of the check-in list shows exactly `name`.
fn name_listed(name: &str) -> String {
    format!("Array.from(document.querySelectorAll('#checkins li .name')).some(n => n.textContent === {})", json!(name))
}

/// An organiser with one active event happening now, a scanner key for it,
/// one attendee already checked in and one about to arrive.
struct Venue {
    /// The organiser logs in with this (and the helpers' password).
    organiser_email: String,
    /// The organiser's session, for setting up more of the event.
    organiser: Session,
    /// The event's id, as the picker's option value.
    event: String,
    /// Shown as the page's heading once picked.
    event_name: String,
    /// The door scanner's API key, scoped to the event.
    key: Auth,
    /// Checked in before the page opens: the replay must list them.
    earlier_name: String,
    /// Arrives while the page watches; the name holds markup, which must show as text.
    newcomer_name: String,
    /// What the scanner hears for the newcomer.
    newcomer_ble: String,
}

impl Venue {
    async fn create(app: &TestApp) -> Self {
        let organiser_email = "door@example.org".to_owned();
        let org = app.organizer(&organiser_email).await;
        let event_name = "RustFest · main hall".to_owned();
        let now = Utc::now();
        let data = app
            .ok(
                &org.auth(),
                "mutation($i: CreateEventInput!) { createEvent(input: $i) { id } }",
                json!({ "i": { "name": event_name, "location": "Hall A",
                    "startsAt": now - chrono::Duration::hours(1), "endsAt": now + chrono::Duration::hours(3) } }),
            )
            .await;
        let event = data["createEvent"]["id"].as_str().unwrap().to_owned();
        app.activate(&org, &event).await;
        let (_, secret) = app.api_key(&org, "north door", Some(vec![&event])).await;
        let key = Auth::ApiKey(secret);

        let attendee = async |email: &str, name: &str| {
            let who = app.sign_up(email, name).await;
            app.ok(&who.auth(), "mutation($e: ID!) { registerForEvent(eventId: $e) { id } }", json!({ "e": event }))
                .await;
            app.ok(&who.auth(), "{ me { bleUuid } }", json!({})).await["me"]["bleUuid"].as_str().unwrap().to_owned()
        };
        let earlier_name = "Grace Hopper".to_owned();
        let earlier_ble = attendee("grace@example.org", &earlier_name).await;
        // Markup in a name must show as text.
        let newcomer_name = "Ada <i>Lovelace</i>".to_owned();
        let newcomer_ble = attendee("ada@example.org", &newcomer_name).await;

        let data = app
            .ok(
                &key,
                SUBMIT,
                json!({ "b": { "batchId": uuid::Uuid::new_v4(), "sightings": [
                    { "bleUuid": earlier_ble, "seenAt": now - chrono::Duration::minutes(25), "rssi": -61 },
                ] } }),
            )
            .await;
        assert_eq!(data["submitSightings"]["checkIns"], 1, "{data}");
        Self { organiser_email, organiser: org, event, event_name, key, earlier_name, newcomer_name, newcomer_ble }
    }

    /// The door scanner uploads a batch in which the newcomer is heard: one new check-in.
    async fn newcomer_arrives(&self, app: &TestApp) {
        let data = app
            .ok(
                &self.key,
                SUBMIT,
                json!({ "b": { "batchId": uuid::Uuid::new_v4(), "sightings": [
                    { "bleUuid": self.newcomer_ble, "seenAt": Utc::now() - chrono::Duration::seconds(20), "rssi": -58 },
                ] } }),
            )
            .await;
        assert_eq!(data["submitSightings"]["checkIns"], 1, "{data}");
    }
}

/// A TCP relay between the browser and the server that can be cut, like a
/// venue's Wi-Fi: cutting it drops every open connection and refuses new
/// ones until it is restored.
struct Network {
    /// Where the page connects instead of the server.
    addr: std::net::SocketAddr,
    /// Whether new connections are let through.
    up: Arc<std::sync::atomic::AtomicBool>,
    /// The open connections' pipes, aborted to cut them.
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    /// The accept loop.
    relay: tokio::task::JoinHandle<()>,
}

impl Network {
    async fn between_page_and(server: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (relay_up, relay_connections) = (up.clone(), connections.clone());
        let relay = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !relay_up.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(server).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                relay_connections.lock().unwrap().push(pipe.abort_handle());
            }
        });
        Self { addr, up, connections, relay }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for pipe in self.connections.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.cut();
        self.relay.abort();
    }
}
