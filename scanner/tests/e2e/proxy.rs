//! A small HTTP/1.1 proxy between the scanner and the real server, for answers a
//! real server does not give on demand: a proxy's bare 401, the same 500 for one
//! batch every time, an answer lost on its way back. Every request is recorded; a
//! rule may answer it instead of the server, and another may drop the server's
//! answer and send a 502 in its place. One request per connection (`Connection: close`), which the
//! scanner's client handles like any server's.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// A request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What a rule says about a request: `Some((status, body))` answers it instead of the server.
pub type Rule = Box<dyn Fn(&Seen, usize) -> Option<(u16, String)> + Send + Sync>;

/// Whether the server's answer to a forwarded request is lost (a 502 goes back instead).
pub type Lose = Box<dyn Fn(&Seen) -> bool + Send + Sync>;

pub struct Proxy {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Proxy {
    /// Forwards to `upstream` (`http://127.0.0.1:PORT`) unless `rule` answers.
    pub async fn start(upstream: &str, rule: Rule) -> Self {
        Self::start_losing(upstream, rule, Box::new(|_| false)).await
    }

    /// As [`Proxy::start`], and the server's answers to the requests `lose` picks
    /// never come back: the server applied them, the client sees a 502.
    pub async fn start_losing(upstream: &str, rule: Rule, lose: Lose) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (upstream, rule, lose, log) = (upstream.to_owned(), Arc::new(rule), Arc::new(lose), seen.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while let Ok((conn, _)) = listener.accept().await {
                let (upstream, rule, lose, log, http) =
                    (upstream.clone(), rule.clone(), lose.clone(), log.clone(), http.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, &upstream, (&rule, &lose), &log, &http).await;
                });
            }
        });
        Self { base, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    mut conn: TcpStream,
    upstream: &str,
    (rule, lose): (&Rule, &Lose),
    log: &Mutex<Vec<Seen>>,
    http: &reqwest::Client,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next().unwrap_or_default().split(' ').nth(1).unwrap_or("/").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    let seen = Seen { headers, body };
    let index = {
        let mut log = log.lock().unwrap();
        log.push(seen.clone());
        log.len() - 1
    };
    let (status, answer) = match rule(&seen, index) {
        Some(a) => a,
        None => {
            let mut req = http.post(format!("{upstream}{path}")).body(seen.body.clone());
            for name in ["authorization", "content-type", "x-api-key", "x-rollcall-scanner-id"] {
                if let Some(v) = seen.header(name) {
                    req = req.header(name, v);
                }
            }
            match req.send().await {
                Ok(_) if lose(&seen) => (502, "bad gateway".into()),
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(_) => (502, "bad gateway".into()),
            }
        }
    };
    let reply = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
    conn.write_all(reply.as_bytes()).await?;
    conn.shutdown().await
}
