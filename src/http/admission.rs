//! Which WebSockets get in, and how fast they may ask.
//!
//! Every open socket costs memory and a task, and anyone on the venue's
//! network can open them, so this process holds at most so many in all, so
//! many per client address (checked before the upgrade: 503 and 429), and so
//! many per signed-in principal (checked at `connection_init`: closed with
//! 1008). A socket may start only so many operations a minute. The limits
//! are this process's: several instances behind a load balancer each apply
//! their own. A limit of 0 turns it off.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::config::LiveLimits;

/// Counts of open sockets by some key, with a cap.
struct Counts<K> {
    cap: usize,
    open: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    fn new(cap: usize) -> Self {
        Self { cap, open: Mutex::new(HashMap::new()) }
    }

    /// Counts one more for `key`, unless that would pass the cap.
    fn take(&self, key: &K) -> bool {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key.clone()).or_insert(0);
        if self.cap != 0 && *n >= self.cap {
            if *n == 0 {
                open.remove(key);
            }
            return false;
        }
        *n += 1;
        true
    }

    fn give_back(&self, key: &K) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                open.remove(key);
            }
        }
    }
}

/// The socket limits of this process.
pub struct Admission {
    total: Counts<()>,
    per_address: Counts<IpAddr>,
    per_principal: Counts<Uuid>,
    operations_per_minute: u32,
}

/// Why a socket was not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The process holds as many sockets as it will.
    Full,
    /// This client address holds as many as it may.
    Address,
}

impl Admission {
    pub fn new(limits: &LiveLimits) -> Arc<Self> {
        Arc::new(Self {
            total: Counts::new(limits.max_sockets),
            per_address: Counts::new(limits.max_sockets_per_address),
            per_principal: Counts::new(limits.max_sockets_per_principal),
            operations_per_minute: limits.max_operations_per_minute,
        })
    }

    /// Lets a new socket from `address` in, or says why not.
    pub fn admit(self: &Arc<Self>, address: Option<IpAddr>) -> Result<Ticket, Refusal> {
        if !self.total.take(&()) {
            return Err(Refusal::Full);
        }
        if let Some(a) = address
            && !self.per_address.take(&a)
        {
            self.total.give_back(&());
            return Err(Refusal::Address);
        }
        Ok(Ticket { admission: self.clone(), address, principal: None })
    }

    /// A fresh allowance of operations for one socket.
    pub fn allowance(&self) -> Allowance {
        Allowance::new(self.operations_per_minute)
    }
}

/// One admitted socket; gives its places back when dropped.
pub struct Ticket {
    admission: Arc<Admission>,
    address: Option<IpAddr>,
    principal: Option<Uuid>,
}

impl Ticket {
    /// The client's address, if known.
    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }

    /// Counts the socket against `principal` (a user's or a key's id) once it
    /// has signed in; `false` if that principal holds as many as it may.
    pub fn sign_in(&mut self, principal: Uuid) -> bool {
        if let Some(old) = self.principal.take() {
            self.admission.per_principal.give_back(&old);
        }
        if !self.admission.per_principal.take(&principal) {
            return false;
        }
        self.principal = Some(principal);
        true
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.total.give_back(&());
        if let Some(a) = self.address {
            self.admission.per_address.give_back(&a);
        }
        if let Some(p) = self.principal {
            self.admission.per_principal.give_back(&p);
        }
    }
}

/// A token bucket of operations for one socket: `per_minute` of them, refilled
/// evenly, with the whole minute's worth available at once.
pub struct Allowance {
    per_minute: u32,
    tokens: f32,
    at: Instant,
}

impl Allowance {
    fn new(per_minute: u32) -> Self {
        Self { per_minute, tokens: per_minute as f32, at: Instant::now() }
    }

    /// Takes one operation; `false` when the socket must slow down.
    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let refill = now.duration_since(self.at).as_secs_f32() / Duration::from_secs(60).as_secs_f32();
        self.tokens = (self.tokens + refill * self.per_minute as f32).min(self.per_minute as f32);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_address: usize, per_principal: usize) -> LiveLimits {
        LiveLimits {
            max_sockets: total,
            max_sockets_per_address: per_address,
            max_sockets_per_principal: per_principal,
            ..LiveLimits::default()
        }
    }

    #[test]
    fn caps_hold_and_places_come_back() {
        let a = Admission::new(&limits(3, 2, 1));
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t1 = a.admit(Some(x)).unwrap();
        let mut t2 = a.admit(Some(x)).unwrap();
        assert_eq!(a.admit(Some(x)).err(), Some(Refusal::Address));
        let mut t3 = a.admit(Some(y)).unwrap();
        assert_eq!(a.admit(Some(y)).err(), Some(Refusal::Full));
        let who = Uuid::new_v4();
        assert!(t2.sign_in(who));
        assert!(!t3.sign_in(who), "one socket per principal");
        drop(t2);
        assert!(t3.sign_in(who), "its place came back");
        drop(t1);
        assert!(a.admit(Some(x)).is_ok());
    }

    #[test]
    fn zero_means_no_cap() {
        let a = Admission::new(&limits(0, 0, 0));
        let tickets: Vec<_> = (0..100).map(|_| a.admit(None).unwrap()).collect();
        assert_eq!(tickets.len(), 100);
    }

    #[test]
    fn allowance_refills_over_the_minute() {
        let mut allow = Allowance::new(6);
        let start = allow.at;
        assert!((0..6).all(|_| allow.take_at(start)));
        assert!(!allow.take_at(start));
        let later = start + Duration::from_secs(10);
        assert!(allow.take_at(later), "one back after a sixth of a minute");
        assert!(!allow.take_at(later));
    }
}
