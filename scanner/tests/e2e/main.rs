//! End-to-end tests of `rollcall-scanner` against the real `rollcall` server binary,
//! run as child processes. One binary for all of them (see `helpers`).

// Tests state their expectations with unwrap; a failure is the point.
#![allow(clippy::unwrap_used)]

mod advertisements;
mod ble;
mod cli;
mod clock;
mod corrupt;
mod crash;
mod delivery;
mod disk;
mod helpers;
mod keys;
mod ops;
mod outage;
mod poison;
mod proxy;
mod registered;
mod replay;
mod rotating;
mod simulate;
