//! A headless Chromium driven over the Chrome DevTools Protocol, with raw
//! JSON on a WebSocket: Debian's `chromium`, no driver crate. The dashboard
//! and console browser tests share it.
//!
//! Without `chromium` on the PATH the tests fail and say how to install it;
//! `ROLLCALL_SKIP_BROWSER_TEST=1` skips them instead.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The browser to use, or `None` when the test is to be skipped.
pub fn chromium_or_skip() -> Option<PathBuf> {
    if std::env::var("ROLLCALL_SKIP_BROWSER_TEST").is_ok_and(|v| v == "1") {
        println!("skipped: ROLLCALL_SKIP_BROWSER_TEST=1");
        return None;
    }
    match find_on_path("chromium") {
        Some(binary) => Some(binary),
        None => panic!(
            "the browser tests need Debian's headless browser: install chromium: apt-get install chromium \
             (or set ROLLCALL_SKIP_BROWSER_TEST=1 to skip them)"
        ),
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Where test artefacts go: `target/test-artifacts/`.
pub fn artefact_dir() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A headless Chromium with a fresh profile, killed on drop.
pub struct Chromium {
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
    pub async fn launch(binary: &Path) -> Self {
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
pub struct Page {
    /// The browser's DevTools socket.
    ws: Socket,
    /// The tab's flat session id; commands carry it.
    session: String,
    /// The last command id used; replies are matched by it.
    next_id: u64,
    /// Uncaught exceptions and console errors the page reported.
    errors: Vec<String>,
    /// What the page is, for artefact names (`<name>-failure.png`).
    name: String,
}

impl Page {
    pub async fn open(browser: &Chromium, name: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(browser.endpoint.as_str()).await.expect("DevTools socket");
        let mut page = Self { ws, session: String::new(), next_id: 0, errors: Vec::new(), name: name.to_owned() };
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
    pub async fn send(&mut self, method: &str, params: Value) -> Value {
        match self.try_send(method, params).await {
            Ok(result) => result,
            Err(err) => panic!("{method} failed: {err}"),
        }
    }

    /// Sends one command; returns its result or the protocol's error.
    pub async fn try_send(&mut self, method: &str, params: Value) -> Result<Value, String> {
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

    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    pub async fn goto(&mut self, url: &str) {
        let nav = self.send("Page.navigate", json!({ "url": url })).await;
        assert!(nav.get("errorText").is_none(), "could not open {url}: {nav}");
    }

    /// Evaluates a JS expression in the page; returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression).await.unwrap_or_else(|err| panic!("`{expression}` failed: {err}"))
    }

    /// Evaluates a JS expression; an exception (or a page mid-navigation) is an `Err`.
    pub async fn try_eval(&mut self, expression: &str) -> Result<Value, String> {
        let r = self.try_send("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true })).await?;
        match r.get("exceptionDetails") {
            Some(ex) => Err(ex.to_string()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Evaluates an expression that yields a promise; returns what it resolves to.
    pub async fn eval_async(&mut self, expression: &str) -> Value {
        let r = self
            .send("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }))
            .await;
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("`{}` failed: {ex}", expression.chars().take(200).collect::<String>());
        }
        r["result"]["value"].clone()
    }

    /// Sends a command to the browser itself rather than to the tab
    /// (`Browser.*`), e.g. to say where downloads go.
    pub async fn send_to_browser(&mut self, method: &str, params: Value) -> Value {
        let session = std::mem::take(&mut self.session);
        let result = self.try_send(method, params).await;
        self.session = session;
        result.unwrap_or_else(|err| panic!("{method} failed: {err}"))
    }

    /// Runs the axe-core accessibility audit (WCAG 2.1 A and AA rules) on
    /// the page as it stands; returns one line per violation and element.
    pub async fn accessibility_violations(&mut self) -> Vec<String> {
        const AXE: &str = include_str!("../fixtures/axe-core/axe.min.js");
        if self.eval("typeof window.axe").await != json!("object") {
            // Injected from here, not served by the page: its CSP stays strict.
            let r = self.send("Runtime.evaluate", json!({ "expression": AXE, "returnByValue": true })).await;
            assert!(r.get("exceptionDetails").is_none(), "axe-core did not load: {r}");
        }
        let found = self
            .eval_async(
                "axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })\
                 .then(r => r.violations.flatMap(v => v.nodes.map(n => \
                   `${v.id} (${v.impact}): ${v.help} at ${n.target.join(' ')}: ${n.failureSummary.replace(/\\s+/g, ' ')}`)))",
            )
            .await;
        found.as_array().into_iter().flatten().map(|v| v.as_str().unwrap_or_default().to_owned()).collect()
    }

    /// Polls `condition` until it is true; returns how long that took. On
    /// timeout it saves a screenshot and fails with what the page shows.
    pub async fn wait_for(&mut self, what: &str, condition: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        let mut last_error = None;
        loop {
            match self.try_eval(&format!("Boolean({condition})")).await {
                Ok(Value::Bool(true)) => return started.elapsed(),
                Ok(_) => {}
                Err(err) => last_error = Some(err),
            }
            if started.elapsed() > timeout {
                let shot = self.screenshot(&format!("{}-failure.png", self.name)).await;
                let state = self
                    .try_eval(
                        "JSON.stringify({ data: { ...document.body.dataset }, \
                         alerts: Array.from(document.querySelectorAll('[role=alert]:not([hidden])')).map(n => n.textContent), \
                         text: document.body.innerText.slice(0, 2000) })",
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

    /// Saves a PNG of the whole page, beyond the viewport, under the artefact directory.
    pub async fn screenshot_full(&mut self, name: &str) -> PathBuf {
        let metrics = self.send("Page.getLayoutMetrics", json!({})).await;
        let size = &metrics["cssContentSize"];
        let clip = json!({ "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1 });
        let shot = self
            .send("Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": true, "clip": clip }))
            .await;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().expect("PNG data")).unwrap();
        let path = artefact_dir().join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Saves a PNG of the tab under the artefact directory; returns its path.
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self.send("Page.captureScreenshot", json!({ "format": "png" })).await;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().expect("PNG data")).unwrap();
        let path = artefact_dir().join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}
