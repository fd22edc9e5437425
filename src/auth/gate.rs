//! The gate in front of password hashing: `logIn` and `signUp` are open to
//! anyone, and each costs an argon2 hash (19 MiB, tens of milliseconds of a
//! core), so they are the cheapest way to exhaust the server.
//!
//! - At most [`LoginGate::new`]'s `running` hashes run at once (about one per
//!   core) and at most `waiting` more wait, each for at most [`MAX_WAIT`];
//!   beyond that the caller is told to retry (`RATE_LIMITED`) at once, and
//!   nothing piles up on the blocking pool.
//! - Failed log-ins are counted per account and per client address. After a
//!   few free failures each further one doubles a lockout (1 s, 2 s, ... up
//!   to 15 minutes) during which log-ins for that account or from that
//!   address are refused without hashing. A success clears the account's
//!   count. An IPv6 address counts as its /64 network: one host is usually
//!   given a whole /64, so its addresses are one client's. The tables are
//!   bounded: past [`MAX_TRACKED`] entries the expired ones are dropped,
//!   then the oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Failures before an account's lockout starts.
const FREE_PER_ACCOUNT: u32 = 5;
/// Failures before an address's lockout starts (several people share a NAT).
const FREE_PER_ADDRESS: u32 = 30;
/// The longest lockout.
const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// The longest a hash waits for a core.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// Entries kept per table.
const MAX_TRACKED: usize = 100_000;

/// Why a log-in was not even tried.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Too many hashes running and waiting.
    Busy,
    /// Locked out after failures; retry after this long.
    LockedOut(Duration),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Busy => f.write_str("the server is busy with other log-ins; try again in a moment"),
            Refused::LockedOut(d) => {
                write!(f, "too many failed log-ins; try again in {} s", d.as_secs().max(1))
            }
        }
    }
}

/// A place to hash one password; the core is given back when it drops.
pub struct HashPermit {
    _running: OwnedSemaphorePermit,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    until: Instant,
    last: Instant,
}

/// Failures by some key, bounded.
struct Table<K> {
    free: u32,
    rows: Mutex<HashMap<K, Failures>>,
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    fn new(free: u32) -> Self {
        Self { free, rows: Mutex::new(HashMap::new()) }
    }

    fn locked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        let rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        rows.get(key).and_then(|f| f.until.checked_duration_since(now)).filter(|d| !d.is_zero())
    }

    fn fail(&self, key: K, now: Instant) {
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        if rows.len() >= MAX_TRACKED && !rows.contains_key(&key) {
            rows.retain(|_, f| f.until > now || now.duration_since(f.last) < MAX_LOCKOUT);
            if rows.len() >= MAX_TRACKED
                && let Some(oldest) = rows.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| k.clone())
            {
                rows.remove(&oldest);
            }
        }
        let f = rows.entry(key).or_insert(Failures { count: 0, until: now, last: now });
        // A quiet spell as long as the longest lockout forgives the past.
        if now.duration_since(f.last) >= MAX_LOCKOUT {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        if f.count > self.free {
            f.until = now + lockout(f.count - self.free);
        }
    }

    fn clear(&self, key: &K) {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }
}

/// 1 s after the first failure past the free ones, doubling, up to [`MAX_LOCKOUT`].
fn lockout(over: u32) -> Duration {
    Duration::from_secs(1u64 << (over - 1).min(20)).min(MAX_LOCKOUT)
}

/// The client an address stands for: an IPv4 address itself (also when
/// written as IPv6), an IPv6 address its /64 network.
fn client(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
        v4 => v4,
    }
}

/// See the module's documentation.
pub struct LoginGate {
    running: Arc<Semaphore>,
    waiting: Semaphore,
    accounts: Table<String>,
    addresses: Table<IpAddr>,
}

impl LoginGate {
    /// A gate that runs `running` hashes at once and lets `waiting` more wait.
    pub fn new(running: usize, waiting: usize) -> Arc<Self> {
        Arc::new(Self {
            running: Arc::new(Semaphore::new(running.max(1))),
            waiting: Semaphore::new(waiting),
            accounts: Table::new(FREE_PER_ACCOUNT),
            addresses: Table::new(FREE_PER_ADDRESS),
        })
    }

    /// One hash at a time per core, and four times as many waiting.
    pub fn for_this_machine() -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self::new(cores, cores * 4)
    }

    /// Whether a log-in for `account` from `address` may be tried now.
    pub fn check(&self, account: &str, address: Option<IpAddr>) -> Result<(), Refused> {
        let now = Instant::now();
        let address = address.and_then(|a| self.addresses.locked_for(&client(a), now));
        match self.accounts.locked_for(&account.to_owned(), now).max(address) {
            Some(d) => Err(Refused::LockedOut(d)),
            None => Ok(()),
        }
    }

    /// Waits for a core to hash on, or refuses at once if too many wait.
    pub async fn permit(&self) -> Result<HashPermit, Refused> {
        if let Ok(running) = self.running.clone().try_acquire_owned() {
            return Ok(HashPermit { _running: running });
        }
        let _waiting = self.waiting.try_acquire().map_err(|_| Refused::Busy)?;
        match tokio::time::timeout(MAX_WAIT, self.running.clone().acquire_owned()).await {
            Ok(Ok(running)) => Ok(HashPermit { _running: running }),
            _ => Err(Refused::Busy),
        }
    }

    /// Records a failed log-in.
    pub fn failed(&self, account: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        self.accounts.fail(account.to_owned(), now);
        if let Some(a) = address {
            self.addresses.fail(client(a), now);
        }
    }

    /// Records a successful log-in: the account's failures are forgiven.
    pub fn succeeded(&self, account: &str) {
        self.accounts.clear(&account.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockouts_double_up_to_the_cap() {
        assert_eq!(lockout(1), Duration::from_secs(1));
        assert_eq!(lockout(2), Duration::from_secs(2));
        assert_eq!(lockout(5), Duration::from_secs(16));
        assert_eq!(lockout(40), MAX_LOCKOUT);
    }

    #[test]
    fn an_account_locks_after_its_free_failures_and_a_success_clears_it() {
        let gate = LoginGate::new(1, 1);
        let addr: Option<IpAddr> = Some("10.0.0.9".parse().unwrap());
        for _ in 0..FREE_PER_ACCOUNT {
            assert!(gate.check("a@x.org", addr).is_ok());
            gate.failed("a@x.org", addr);
        }
        assert!(gate.check("a@x.org", addr).is_ok(), "the free ones do not lock");
        gate.failed("a@x.org", addr);
        assert!(matches!(gate.check("a@x.org", addr), Err(Refused::LockedOut(_))));
        assert!(gate.check("b@x.org", addr).is_ok(), "other accounts from the address are not locked yet");
        gate.succeeded("a@x.org");
        assert!(gate.check("a@x.org", None).is_ok());
    }

    #[test]
    fn an_address_locks_after_many_accounts_fail_from_it() {
        let gate = LoginGate::new(1, 1);
        let addr: Option<IpAddr> = Some("10.0.0.9".parse().unwrap());
        for i in 0..=FREE_PER_ADDRESS {
            gate.failed(&format!("u{i}@x.org"), addr);
        }
        assert!(matches!(gate.check("fresh@x.org", addr), Err(Refused::LockedOut(_))));
        assert!(gate.check("fresh@x.org", Some("10.0.0.10".parse().unwrap())).is_ok());
    }

    #[test]
    fn the_addresses_of_one_ipv6_network_are_one_client() {
        let gate = LoginGate::new(1, 1);
        for i in 0..=FREE_PER_ADDRESS {
            let host: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            gate.failed(&format!("u{i}@x.org"), Some(host));
        }
        let same_network: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(matches!(gate.check("fresh@x.org", Some(same_network)), Err(Refused::LockedOut(_))));
        let next_network: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(gate.check("fresh@x.org", Some(next_network)).is_ok());
        // An IPv4 client written as IPv6 is the same client.
        for i in 0..=FREE_PER_ADDRESS {
            gate.failed(&format!("v{i}@x.org"), Some("10.0.0.7".parse().unwrap()));
        }
        assert!(matches!(
            gate.check("fresh@x.org", Some("::ffff:10.0.0.7".parse().unwrap())),
            Err(Refused::LockedOut(_))
        ));
    }

    #[tokio::test]
    async fn hashing_is_bounded_and_the_overflow_refused_at_once() {
        let gate = LoginGate::new(1, 1);
        let first = gate.permit().await.unwrap();
        let gate2 = gate.clone();
        let waiter = tokio::spawn(async move { gate2.permit().await.map(drop) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(gate.permit().await.err(), Some(Refused::Busy), "one running and one waiting: full");
        drop(first);
        assert!(waiter.await.unwrap().is_ok(), "the waiter got the core");
    }
}
