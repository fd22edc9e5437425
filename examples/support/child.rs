//! The server child that `fanout_bench` and `soak` run (this same binary,
//! in its serving mode): starting it and reading what it says when ready,
//! how much memory and CPU it uses, and how it learns that the parent is
//! done with it. Included with `#[path = "support/child.rs"]
//! mod child;`.

/// A process's resident memory from `/proc`, in KB: all of it, and the part
/// that is anonymous (heap, stacks) versus file-backed (the binary, the
/// store's mapped files), which the kernel can drop and read again. Zeros
/// when `/proc` cannot be read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub total: u64,
    pub anon: u64,
    pub file: u64,
}

impl Rss {
    pub fn of(pid: u32) -> Rss {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Rss { total: field("VmRSS:"), anon: field("RssAnon:"), file: field("RssFile:") + field("RssShmem:") }
    }
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} KB (anonymous {} KB, file-backed {} KB)", self.total, self.anon, self.file)
    }
}

/// A process's CPU time so far, user and system, of all its threads (those
/// that have ended too), in seconds, from `/proc/<pid>/stat`; 0 when it
/// cannot be read.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which may hold spaces, start after
    // its last ')': the state, then ppid...; utime and stime are the 12th and
    // 13th, in clock ticks of USER_HZ (100 on Linux).
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Resolves when the parent closes the child's stdin: the child's signal to
/// stop serving.
pub async fn stdin_closed() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).map(|n| n > 0).unwrap_or(false) {}
    })
    .await;
}

/// The parent's handle on a server child. The child prints one line when it
/// is ready, `READY <port> <token> <event> <key>` (`-` for what it does not
/// seed), and serves until its stdin closes, which dropping this does.
pub struct Server {
    child: std::process::Child,
    pub port: u16,
    pub token: String,
    pub event: String,
    pub key: String,
}

impl Server {
    /// Starts `cmd` (this binary with its serving arguments) and waits for
    /// its `READY` line.
    pub fn start(mut cmd: std::process::Command) -> anyhow::Result<Server> {
        use anyhow::Context as _;
        use std::io::BufRead as _;
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting the server child")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let parts: Vec<&str> = line.split_whitespace().collect();
        let ["READY", port, token, event, key] = parts.as_slice() else {
            anyhow::bail!("the server child said {line:?}")
        };
        Ok(Server {
            port: port.parse()?,
            token: token.to_string(),
            event: event.to_string(),
            key: key.to_string(),
            child,
        })
    }

    /// The child's CPU time so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    /// The child's resident memory now.
    pub fn rss(&self) -> Rss {
        Rss::of(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
