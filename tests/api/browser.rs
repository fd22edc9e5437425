//! The dashboard in a real browser: Debian's headless `chromium`, driven over
//! the Chrome DevTools Protocol with raw JSON on a WebSocket. The page logs in
//! as the organiser, picks the event and goes live; a scanner's batch then goes
//! in over HTTP, and the test passes only when the new check-in is on the page
//! within two seconds. A screenshot is kept under
//! `target/test-artifacts/dashboard.png`.
//!
//! A second test cuts the network between page and server while a check-in
//! is made, and checks the page resumes from its last cursor by itself.
//!
//! Without `chromium` on the PATH the tests fail and say how to install it;
//! `ROLLCALL_SKIP_BROWSER_TEST=1` skips them instead.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Auth, PASSWORD, TestApp, spawn_app};

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
    let mut page = Page::open(&chromium).await;
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
    let mut page = Page::open(&chromium).await;
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

/// The browser to use, or `None` when the test is to be skipped.
fn chromium_or_skip() -> Option<PathBuf> {
    if std::env::var("ROLLCALL_SKIP_BROWSER_TEST").is_ok_and(|v| v == "1") {
        println!("skipped: ROLLCALL_SKIP_BROWSER_TEST=1");
        return None;
    }
    match find_on_path("chromium") {
        Some(binary) => Some(binary),
        None => panic!(
            "the dashboard browser tests need Debian's headless browser: install chromium: apt-get install chromium \
             (or set ROLLCALL_SKIP_BROWSER_TEST=1 to skip them)"
        ),
    }
}

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
        Self { organiser_email, event, event_name, key, earlier_name, newcomer_name, newcomer_ble }
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

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Where test artefacts go: `target/test-artifacts/`.
fn artefact_dir() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A headless Chromium with a fresh profile, killed on drop.
struct Chromium {
    /// The browser process (the wrapper script execs it, so this is its pid).
    child: Child,
    /// The browser's DevTools WebSocket.
    endpoint: String,
    /// What the browser printed, for when it fails to start.
    _stderr: Arc<Mutex<Vec<String>>>,
    /// The throwaway profile; removed after the browser is gone.
    _profile: tempfile::TempDir,
}

impl Chromium {
    async fn launch(binary: &std::path::Path) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--mute-audio",
                "--hide-scrollbars",
                "--window-size=1440,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", binary.display()));

        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let kept = lines.clone();
        // Keeps draining stderr for the browser's whole life, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
                let mut kept = kept.lock().unwrap();
                if kept.len() < 200 {
                    kept.push(line);
                }
            }
        });
        let endpoint = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30))).await.unwrap();
        let mut browser = Self { child, endpoint: String::new(), _stderr: lines.clone(), _profile: profile };
        match endpoint {
            Ok(url) => browser.endpoint = url,
            Err(_) => panic!(
                "chromium did not print its DevTools address within 30 s; it said:\n{}",
                lines.lock().unwrap().join("\n")
            ),
        }
        browser
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // SIGKILL to the browser process by its id. Not to its group through
        // `kill -KILL -<pgid>`: procps-ng 4.0.2 misreads a negative id (under
        // strace, `-25` became kill(-2)), and kill(-1) ends every process. The
        // renderers and helpers exit once the browser's IPC pipes close.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One tab, driven over the browser's DevTools socket (a flat session).
struct Page {
    /// The browser's DevTools socket.
    ws: Socket,
    /// The tab's flat session id; commands carry it.
    session: String,
    /// The last command id used; replies are matched by it.
    next_id: u64,
    /// Uncaught exceptions and console errors the page reported.
    errors: Vec<String>,
}

impl Page {
    async fn open(browser: &Chromium) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(browser.endpoint.as_str()).await.expect("DevTools socket");
        let mut page = Self { ws, session: String::new(), next_id: 0, errors: Vec::new() };
        let target = page.send("Target.createTarget", json!({ "url": "about:blank" })).await;
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = page.send("Target.attachToTarget", json!({ "targetId": target_id, "flatten": true })).await;
        page.session = attached["sessionId"].as_str().expect("sessionId").to_owned();
        page.send("Runtime.enable", json!({})).await;
        page.send("Page.enable", json!({})).await;
        page.send(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1440, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        // Screenshots then show the page settled, not mid-animation.
        page.send(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-reduced-motion", "value": "reduce" }] }),
        )
        .await;
        page
    }

    /// Sends one command (to the tab once attached) and returns its result.
    async fn send(&mut self, method: &str, params: Value) -> Value {
        match self.try_send(method, params).await {
            Ok(result) => result,
            Err(err) => panic!("{method} failed: {err}"),
        }
    }

    /// Sends one command; returns its result or the protocol's error.
    async fn try_send(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(msg.to_string())).await.expect("DevTools command sent");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"))
                .expect("DevTools socket open")
                .expect("DevTools frame");
            let Message::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if reply["id"] == id {
                return match reply.get("error") {
                    Some(err) => Err(err.to_string()),
                    None => Ok(reply["result"].clone()),
                };
            }
            self.note_event(&reply);
        }
    }

    /// Keeps what the page says went wrong, to fail with it.
    fn note_event(&mut self, event: &Value) {
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let details = &event["params"]["exceptionDetails"];
                let text = details["exception"]["description"].as_str().or(details["text"].as_str()).unwrap_or("?");
                self.errors.push(format!("uncaught: {text}"));
            }
            Some("Runtime.consoleAPICalled") if event["params"]["type"] == "error" => {
                let args: Vec<String> = event["params"]["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["value"].as_str().map_or_else(|| a["description"].to_string(), str::to_owned))
                    .collect();
                self.errors.push(format!("console.error: {}", args.join(" ")));
            }
            _ => {}
        }
    }

    fn errors(&self) -> &[String] {
        &self.errors
    }

    async fn goto(&mut self, url: &str) {
        let nav = self.send("Page.navigate", json!({ "url": url })).await;
        assert!(nav.get("errorText").is_none(), "could not open {url}: {nav}");
    }

    /// Evaluates a JS expression in the page; returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression).await.unwrap_or_else(|err| panic!("`{expression}` failed: {err}"))
    }

    /// Evaluates a JS expression; an exception (or a page mid-navigation) is an `Err`.
    async fn try_eval(&mut self, expression: &str) -> Result<Value, String> {
        let r = self.try_send("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true })).await?;
        match r.get("exceptionDetails") {
            Some(ex) => Err(ex.to_string()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Polls `condition` until it is true; returns how long that took. On
    /// timeout it saves a screenshot and fails with what the page shows.
    async fn wait_for(&mut self, what: &str, condition: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        let mut last_error = None;
        loop {
            match self.try_eval(&format!("Boolean({condition})")).await {
                Ok(Value::Bool(true)) => return started.elapsed(),
                Ok(_) => {}
                Err(err) => last_error = Some(err),
            }
            if started.elapsed() > timeout {
                let shot = self.screenshot("dashboard-failure.png").await;
                let state = self
                    .try_eval(
                        "JSON.stringify({ view: document.body.dataset.view, \
                         connection: document.getElementById('connection').textContent, \
                         banner: document.getElementById('banner').hidden ? null : document.getElementById('banner').textContent, \
                         loginError: document.getElementById('login-error').hidden ? null : document.getElementById('login-error').textContent, \
                         rows: Array.from(document.querySelectorAll('#checkins li .name')).map(n => n.textContent) })",
                    )
                    .await
                    .unwrap_or_else(|err| json!(err));
                panic!(
                    "timed out after {timeout:?} waiting for {what}\npage: {}\nlast evaluation error: {last_error:?}\n\
                     page errors: {:#?}\nscreenshot: {}",
                    state.as_str().unwrap_or_default(),
                    self.errors,
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Saves a PNG of the tab under the artefact directory; returns its path.
    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self.send("Page.captureScreenshot", json!({ "format": "png" })).await;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().expect("PNG data")).unwrap();
        let path = artefact_dir().join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}
