//! Building and running the server. [`Application::build`] binds the
//! listener and opens the store; [`Application::run_until`] serves until the
//! shutdown future resolves, then lets in-flight requests finish. Tests bind
//! port 0 and read [`Application::port`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rand::RngCore;
use tokio::net::TcpListener;

use crate::auth::JwtKeys;
use crate::config::ServeArgs;
use crate::state::AppState;
use crate::store::{SurrealStore, redact_url};
use crate::telemetry::Metrics;

pub struct Application {
    /// The bound socket; bound in `build` so the port is known before serving.
    listener: TcpListener,
    /// Shared with every request.
    state: AppState,
    /// How long in-flight requests may run on after shutdown begins.
    shutdown_grace: Duration,
}

impl Application {
    pub async fn build(args: ServeArgs) -> anyhow::Result<Self> {
        let store = SurrealStore::open(&args.db.url, &args.db.options())
            .await
            .with_context(|| format!("opening the database {}", redact_url(&args.db.url)))?;
        let secret = match &args.jwt_secret {
            Some(s) => s.clone(),
            None => store
                .secret_or_insert("jwt", || {
                    let mut bytes = [0u8; 32];
                    rand::rngs::OsRng.fill_bytes(&mut bytes);
                    hex::encode(bytes)
                })
                .await
                .context("loading the JWT secret")?,
        };
        let mut jwt = JwtKeys::new(secret.as_bytes(), chrono::Duration::hours(args.jwt_ttl_hours))
            .context("ROLLCALL_JWT_SECRET is unusable")?;
        if let Some(previous) = &args.jwt_previous_secret {
            jwt = jwt.also_accepting(previous.as_bytes()).context("ROLLCALL_JWT_PREVIOUS_SECRET is unusable")?;
        }
        let listener = TcpListener::bind(args.bind).await.with_context(|| format!("binding {}", args.bind))?;
        let feed = crate::live::FeedOptions {
            buffer: args.live.buffer,
            poll: Duration::from_millis(args.live.poll_ms),
            hints: !args.live.no_hints,
        };
        let live =
            crate::live::Live::start(store.clone(), feed).await.context("opening the database's live change stream")?;
        let ingest = crate::app::Ingest::start(store.clone(), args.beacon_slot_secs, args.row_flush());
        let users = crate::graphql::loaders::Users::loader(store.clone());
        let door = Arc::new(crate::app::DoorCodes::new(secret.as_bytes(), ingest.clone(), store.clone()));
        let phone = Arc::new(crate::app::PhoneReports::new(ingest.clone(), store.clone()));
        let state = AppState {
            door,
            phone,
            ingest,
            store,
            jwt,
            limits: Arc::new(args.limits),
            metrics: Metrics::install(),
            live,
            live_limits: Arc::new(args.live),
            logins: crate::auth::LoginGate::for_this_machine(),
            web: Arc::new(args.web),
            users,
        };
        Ok(Self { listener, state, shutdown_grace: Duration::from_secs(args.shutdown_grace_secs) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The state requests see; tests use it to seed data directly.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves; then stops accepting, and waits up
    /// to the grace period for in-flight requests before returning.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Application { listener, state, shutdown_grace } = self;
        // Stops with this function, whichever way it returns.
        let _giving_back = crate::memory::give_back_freed_regularly();
        crate::memory::no_transparent_huge_pages();
        {
            let app = crate::http::router(state.clone());
            let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
            let live = state.live.clone();
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: no new connections, finishing in-flight requests");
                // Live sockets are told to close; the change stream ends.
                live.stop().await;
                let _ = stopping_tx.send(());
            });
            let mut server = std::pin::pin!(server.into_future());
            tokio::select! {
                res = &mut server => res?,
                _ = async { let _ = stopping_rx.await; tokio::time::sleep(shutdown_grace).await } => {
                    tracing::warn!(grace = ?shutdown_grace, "in-flight requests did not finish in time; closing them");
                }
            }
            // The server, and with it the router's handles on the store, end here.
        }
        // The live hub and the user loader hold the store too; they must go
        // before the store closes.
        let AppState { store, live, ingest, users, door, phone, .. } = state;
        drop((users, door, phone));
        ingest.stop().await;
        drop(ingest);
        live.stop().await;
        live.sockets_closed(Duration::from_secs(5)).await;
        drop(live);
        store.close(Duration::from_secs(10)).await;
        Ok(())
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
