//! `chatter serve`: the HTTP server (axum) with the old v1 contract under `/api/v1/workflows`,
//! bearer authentication (JWT access tokens or API keys), role-based permissions with owner
//! scoping, an append-only audit trail, chat streaming, health checks and its OpenAPI document
//! (`GET /openapi.json`, [`openapi`]).
//!
//! Tests and embedders start it in-process with [`Server::start`] (or
//! [`Server::start_with_store`]) on `127.0.0.1:0` and talk to [`Server::base_url`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), chatter_http::Error> {
//! use chatter_http::server::{Server, ServerConfig};
//!
//! let mut config = ServerConfig::new("sqlite::memory:");
//! config.admin_api_key = Some("chatter_api_0123456789abcdef0123456789abcdef".into());
//! let server = Server::start(config).await?;
//! println!("listening on {}", server.base_url());
//! server.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! See `docs/http.md` for the endpoints.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chatter_core::ToolRegistry;
use chatter_core::engine::{Engine, RunOptions};
use chatter_core::providers::ScriptedModel;
use chatter_core::store::{ExecutionRecord, NewAuditEntry, Page, Store, StoreErrorKind};
use chatter_core::tracker::{GraphSource, StoreGraphSource, TrackedRun, WorkflowTracker};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Error;

pub mod auth;
mod auth_routes;
mod chat;
mod events;
mod executions;
mod health;
pub mod jobs;
pub mod metrics;
mod openai;
pub mod openapi;
pub mod problem;
pub mod ratelimit;
pub mod schemas;
mod workflows;
mod workspaces;

pub use auth::{Credential, MaybePrincipal, Principal};
pub use problem::ApiError;
pub use ratelimit::{Limit, RateLimitConfig};

/// The reply of the built-in `scripted` model served when no provider is configured.
pub const OFFLINE_REPLY: &str = "Chatter is running without a model provider; this answer comes from the offline `scripted` model.";

/// How to run the server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Database URL (`sqlite://chatter.db`, `postgres://...`).
    pub db: String,
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub addr: SocketAddr,
    /// The first admin's API key when the database has no user yet; a random one (returned by
    /// [`Server::initial_admin_key`]) when `None`.
    pub admin_api_key: Option<String>,
    /// JWT signing secret; a random one per process when `None` (tokens then die with it).
    pub jwt_secret: Option<Vec<u8>>,
    /// Model provider specs (`scripted:FILE`, `openai:MODEL`), as `chatter run --model`.
    pub models: Vec<String>,
    /// Stub tools file, as `chatter run --tools`.
    pub tools: Option<PathBuf>,
    /// Largest request body accepted (bytes). Default 1 MiB.
    pub max_body_bytes: usize,
    /// Access token lifetime. Default 30 min.
    pub access_ttl: Duration,
    /// Refresh session lifetime. Default 7 days.
    pub refresh_ttl: Duration,
    /// How long `/readyz` waits for the database. Default 2 s.
    pub readiness_timeout: Duration,
    /// Origins allowed by CORS (exact matches; empty: no CORS headers).
    pub cors_origins: Vec<String>,
    /// Whether the refresh cookie is marked `Secure` (serve behind HTTPS). Default false.
    pub secure_cookies: bool,
    /// How often executions due for a resume (lease expired, approval timed out) are looked
    /// for, after the look at start-up. Default 5 s.
    pub resume_interval: Duration,
    /// Interval of the `: keep-alive` comments of event streams. Default 15 s.
    pub sse_heartbeat: Duration,
    /// Job workers run by this server (asynchronous executions). Default 2; 0 runs none (jobs
    /// wait for a server that has workers).
    pub job_workers: usize,
    /// Lease of a claimed job, renewed every third of it while it runs; a job whose worker
    /// died is taken over when it expires. Default 30 s.
    pub job_lease: Duration,
    /// How often an idle worker looks for due jobs (an enqueue in this server wakes it at
    /// once). Default 500 ms.
    pub job_poll_interval: Duration,
    /// Wait before the first retry of a failed job; it doubles per attempt, capped at 1 h.
    /// Default 1 s.
    pub job_retry_base: Duration,
    /// Rate limits per route and per client (see [`RateLimitConfig`]).
    pub rate_limits: RateLimitConfig,
    /// When set, `/metrics` answers only requests with `Authorization: Bearer <this token>`.
    /// Default `None`: open, as in the old platform (serve it on a private network).
    pub metrics_token: Option<String>,
    /// How long a verified API key or access token is trusted without looking it up again.
    /// Changes made through this server apply at once; a key revoked or a user disabled by
    /// another process (the `chatter` command, another server) stops working within this
    /// time. Zero: every request is checked against the store. Default 2 s.
    pub auth_cache_ttl: Duration,
}

impl ServerConfig {
    /// The defaults for a database URL, listening on `127.0.0.1:0`.
    pub fn new(db: impl Into<String>) -> ServerConfig {
        ServerConfig {
            db: db.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_api_key: None,
            jwt_secret: None,
            models: Vec::new(),
            tools: None,
            max_body_bytes: 1024 * 1024,
            access_ttl: Duration::from_secs(30 * 60),
            refresh_ttl: Duration::from_secs(7 * 24 * 3600),
            readiness_timeout: Duration::from_secs(2),
            cors_origins: Vec::new(),
            secure_cookies: false,
            resume_interval: Duration::from_secs(5),
            sse_heartbeat: Duration::from_secs(15),
            job_workers: 2,
            job_lease: Duration::from_secs(30),
            job_poll_interval: Duration::from_millis(500),
            job_retry_base: Duration::from_secs(1),
            rate_limits: RateLimitConfig::default(),
            metrics_token: None,
            auth_cache_ttl: Duration::from_secs(2),
        }
    }

    /// Applies the environment: `CHATTER_ADMIN_API_KEY`, `CHATTER_JWT_SECRET`,
    /// `CHATTER_MODELS` (comma-separated specs), `CHATTER_TOOLS`, `CHATTER_CORS_ORIGINS`
    /// (comma-separated), `CHATTER_METRICS_TOKEN`. A variable that is set (and not blank)
    /// replaces the value. The rate limit variables are read by
    /// [`ServerConfig::with_rate_limit_env`], which can fail.
    #[must_use]
    pub fn with_env(mut self) -> ServerConfig {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let list = |text: String| -> Vec<String> {
            text.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        if let Some(key) = var("CHATTER_ADMIN_API_KEY") {
            self.admin_api_key = Some(key);
        }
        if let Some(secret) = var("CHATTER_JWT_SECRET") {
            self.jwt_secret = Some(secret.into_bytes());
        }
        if let Some(models) = var("CHATTER_MODELS") {
            self.models = list(models);
        }
        if let Some(tools) = var("CHATTER_TOOLS") {
            self.tools = Some(PathBuf::from(tools));
        }
        if let Some(origins) = var("CHATTER_CORS_ORIGINS") {
            self.cors_origins = list(origins);
        }
        if let Some(token) = var("CHATTER_METRICS_TOKEN") {
            self.metrics_token = Some(token);
        }
        self
    }

    /// Applies the rate limit variables: `CHATTER_RATE_LIMITS` (`on` or `off`),
    /// `CHATTER_RATE_LIMIT_PER_MINUTE` and `CHATTER_RATE_LIMIT_PER_HOUR` (the default limit
    /// per client, positive integers).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] naming the variable when its value is not one of those.
    pub fn with_rate_limit_env(mut self) -> Result<ServerConfig, Error> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(value) = var("CHATTER_RATE_LIMITS") {
            self.rate_limits.enabled = match value.trim() {
                "on" | "true" | "1" => true,
                "off" | "false" | "0" => false,
                other => {
                    return Err(Error::Usage(format!(
                        "CHATTER_RATE_LIMITS must be `on` or `off` (got `{other}`)"
                    )));
                }
            };
        }
        let positive = |name: &str, value: String| -> Result<u32, Error> {
            value
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    Error::Usage(format!("{name} must be a positive integer (got `{value}`)"))
                })
        };
        if let Some(value) = var("CHATTER_RATE_LIMIT_PER_MINUTE") {
            self.rate_limits.default.per_minute = positive("CHATTER_RATE_LIMIT_PER_MINUTE", value)?;
        }
        if let Some(value) = var("CHATTER_RATE_LIMIT_PER_HOUR") {
            self.rate_limits.default.per_hour = positive("CHATTER_RATE_LIMIT_PER_HOUR", value)?;
        }
        Ok(self)
    }

    /// Applies a JSON configuration file: any of `db`, `addr`, `models` (specs), `tools`,
    /// `cors_origins`, `max_body_bytes`, `access_ttl_secs`, `refresh_ttl_secs`,
    /// `readiness_timeout_ms`, `secure_cookies`, `job_workers`, `metrics_token`, `rate_limits` (an object:
    /// `enabled`, `default` and `routes` as [`RateLimitConfig`]; the keys given replace the
    /// defaults). Unknown keys are refused.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] naming the file when it cannot be read or is not such a document.
    pub fn with_file(mut self, path: &std::path::Path) -> Result<ServerConfig, Error> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            db: Option<String>,
            addr: Option<SocketAddr>,
            models: Option<Vec<String>>,
            tools: Option<PathBuf>,
            cors_origins: Option<Vec<String>>,
            max_body_bytes: Option<usize>,
            access_ttl_secs: Option<u64>,
            refresh_ttl_secs: Option<u64>,
            readiness_timeout_ms: Option<u64>,
            secure_cookies: Option<bool>,
            job_workers: Option<usize>,
            metrics_token: Option<String>,
            rate_limits: Option<RateLimitConfig>,
        }
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Usage(format!("--config {shown}: {e}")))?;
        let file: File = serde_json::from_str(&text)
            .map_err(|e| Error::Usage(format!("--config {shown}: {e}")))?;
        if file.max_body_bytes == Some(0) || file.access_ttl_secs == Some(0) {
            return Err(Error::Usage(format!(
                "--config {shown}: `max_body_bytes` and `access_ttl_secs` must be positive"
            )));
        }
        if let Some(v) = file.db {
            self.db = v;
        }
        if let Some(v) = file.addr {
            self.addr = v;
        }
        if let Some(v) = file.models {
            self.models = v;
        }
        if let Some(v) = file.tools {
            self.tools = Some(v);
        }
        if let Some(v) = file.cors_origins {
            self.cors_origins = v;
        }
        if let Some(v) = file.max_body_bytes {
            self.max_body_bytes = v;
        }
        if let Some(v) = file.access_ttl_secs {
            self.access_ttl = Duration::from_secs(v);
        }
        if let Some(v) = file.refresh_ttl_secs {
            self.refresh_ttl = Duration::from_secs(v);
        }
        if let Some(v) = file.readiness_timeout_ms {
            self.readiness_timeout = Duration::from_millis(v);
        }
        if let Some(v) = file.secure_cookies {
            self.secure_cookies = v;
        }
        if let Some(v) = file.job_workers {
            self.job_workers = v;
        }
        if let Some(v) = file.metrics_token {
            if v.trim().is_empty() {
                return Err(Error::Usage(format!(
                    "--config {shown}: `metrics_token` must not be blank"
                )));
            }
            self.metrics_token = Some(v);
        }
        if let Some(v) = file.rate_limits {
            v.check()
                .map_err(|e| Error::Usage(format!("--config {shown}: {e}")))?;
            self.rate_limits = v;
        }
        Ok(self)
    }
}

tokio::task_local! {
    /// The client address of the request being handled (for audit entries).
    static CLIENT_IP: Option<String>;
}

/// A request's id (`x-correlation-id`, or `x-request-id`, taken from the client when sane,
/// else a new ULID); answered in both headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

struct Inner {
    store: Arc<dyn Store>,
    engine: Engine,
    tracker: WorkflowTracker,
    config: ServerConfig,
    jwt_secret: Vec<u8>,
    dummy_hash: String,
    roles: RwLock<HashMap<String, BTreeSet<String>>>,
    model_names: Vec<String>,
    shutdown: CancellationToken,
    /// Cancellation tokens of the executions running in this server, by id.
    live: Mutex<HashMap<String, CancellationToken>>,
    /// Wakes idle job workers when a job is enqueued.
    job_wakeup: tokio::sync::Notify,
    /// The global events stream's channel (also the tracker's observer).
    workflow_events: events::WorkflowEvents,
    metrics: Arc<metrics::ServerMetrics>,
    rate_limiter: Option<ratelimit::RateLimiter>,
    /// Recently verified credentials.
    principals: auth::PrincipalCache,
    /// Stored definitions prepared for running.
    prepared: workflows::PreparedDefinitions,
}

/// Removes an execution from the live registry when dropped.
pub(crate) struct LiveGuard {
    state: AppState,
    id: String,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.state
            .0
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// The state shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }

    /// Stored definitions prepared for running, by id and version.
    pub(crate) fn prepared_definitions(&self) -> &workflows::PreparedDefinitions {
        &self.0.prepared
    }

    /// The tracker recording executions into the store.
    pub fn tracker(&self) -> &WorkflowTracker {
        &self.0.tracker
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }

    /// Names of the registered model providers (the first is the default).
    pub fn model_names(&self) -> &[String] {
        &self.0.model_names
    }

    pub(crate) fn jwt_secret(&self) -> &[u8] {
        &self.0.jwt_secret
    }

    pub(crate) fn dummy_hash(&self) -> &str {
        &self.0.dummy_hash
    }

    pub(crate) fn principals(&self) -> &auth::PrincipalCache {
        &self.0.principals
    }

    /// Forgets every cached credential: call after revoking a key or session or changing a
    /// user, so the change applies to the next request.
    pub(crate) fn forget_principals(&self) {
        self.0.principals.clear();
    }

    /// Cancelled when the server shuts down (streams end early).
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    /// The channel of the global events stream.
    pub(crate) fn workflow_events(&self) -> &events::WorkflowEvents {
        &self.0.workflow_events
    }

    /// Publishes a `workflow.*` event about `execution` on the global events stream
    /// (`/api/v1/events/stream`), seen by its owner and admins. Executions the tracker drives
    /// publish their start, end and status changes by themselves; call this for changes made
    /// outside the tracker (a cancel of an execution not running here, a queued job, ...).
    /// `extra` is added to the event's `data`.
    pub(crate) fn publish_workflow_event(
        &self,
        event_type: events::WorkflowEventType,
        execution: &chatter_core::store::ExecutionRecord,
        status: &str,
        extra: serde_json::Map<String, Value>,
    ) {
        self.0.workflow_events.publish(events::WorkflowEvent::new(
            event_type, execution, status, extra,
        ));
    }

    /// Registers an execution running in this server (so `cancel` reaches it) until the
    /// returned guard is dropped; `None` (nothing changed) when it is registered already: it
    /// is live here, and must not be run a second time. Checked and registered under one lock,
    /// so of two racing callers exactly one gets the guard.
    pub(crate) fn try_register_live(
        &self,
        id: &str,
        token: CancellationToken,
    ) -> Option<LiveGuard> {
        let mut live = self
            .0
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if live.contains_key(id) {
            return None;
        }
        live.insert(id.to_owned(), token);
        Some(LiveGuard {
            state: self.clone(),
            id: id.to_owned(),
        })
    }

    /// [`AppState::try_register_live`] for an execution that is to run here now: 409 when it
    /// is live in this server already.
    pub(crate) fn register_live(
        &self,
        id: &str,
        token: CancellationToken,
    ) -> Result<LiveGuard, problem::ApiError> {
        self.try_register_live(id, token).ok_or_else(|| {
            problem::ApiError::conflict(format!(
                "execution `{id}` is already running in this server; wait for it to end or \
                 pause, or cancel it"
            ))
        })
    }

    /// Wakes the idle job workers of this server (a job was enqueued).
    pub(crate) fn job_wakeup(&self) -> &tokio::sync::Notify {
        &self.0.job_wakeup
    }

    /// The cancellation token of an execution running in this server.
    pub(crate) fn live_token(&self, id: &str) -> Option<CancellationToken> {
        self.0
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// The server's counters.
    pub(crate) fn metrics(&self) -> &metrics::ServerMetrics {
        &self.0.metrics
    }

    /// The rate limiter, unless limits are off.
    pub(crate) fn rate_limiter(&self) -> Option<&ratelimit::RateLimiter> {
        self.0.rate_limiter.as_ref()
    }

    /// How many executions run in this server now.
    pub(crate) fn live_count(&self) -> usize {
        self.0
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// The union of the permissions of roles.
    pub fn permissions_of(&self, roles: &[String]) -> BTreeSet<String> {
        let table = self
            .0
            .roles
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        roles
            .iter()
            .filter_map(|r| table.get(r))
            .flatten()
            .cloned()
            .collect()
    }

    /// Appends an audit entry; a failure is logged, never fails the request.
    pub async fn audit(
        &self,
        actor: Option<&str>,
        action: &str,
        resource: (&str, Option<&str>),
        outcome: &str,
        details: Value,
    ) {
        let entry = NewAuditEntry {
            ts: auth::now_ms(),
            actor_id: actor.map(str::to_owned),
            action: action.to_owned(),
            resource_type: resource.0.to_owned(),
            resource_id: resource.1.map(str::to_owned),
            outcome: outcome.to_owned(),
            ip_address: CLIENT_IP.try_with(Clone::clone).ok().flatten(),
            details,
        };
        if let Err(e) = self.0.store.append_audit(entry).await {
            eprintln!("chatter serve: could not write the audit entry for {action}: {e}");
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    state: AppState,
    task: JoinHandle<std::io::Result<()>>,
    resumer: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    initial_admin_key: Option<String>,
    notes: Vec<String>,
}

impl Server {
    /// Connects to `config.db` (migrating it) and starts the server.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] for an unusable database URL or configuration; [`Error::Io`] when the
    /// address cannot be bound.
    pub async fn start(config: ServerConfig) -> Result<Server, Error> {
        let store = chatter_store::connect(&config.db)
            .await
            .map_err(|e| Error::Usage(format!("--db {}: {e}", config.db)))?;
        Server::start_with_store(config, store).await
    }

    /// Starts the server on an already opened store.
    ///
    /// # Errors
    ///
    /// As [`Server::start`].
    pub async fn start_with_store(
        config: ServerConfig,
        store: Arc<dyn Store>,
    ) -> Result<Server, Error> {
        let mut notes = Vec::new();
        config.rate_limits.check().map_err(Error::Usage)?;
        if config
            .metrics_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(Error::Usage(
                "the metrics token must not be blank (leave it unset to serve /metrics openly)"
                    .into(),
            ));
        }
        auth::seed_roles(&store).await?;
        chatter_core::templates::seed_builtins(store.as_ref()).await?;
        let roles = store
            .list_roles()
            .await?
            .into_iter()
            .map(|r| (r.name, r.permissions.into_iter().collect()))
            .collect();
        let initial_admin_key = bootstrap_admin(&store, config.admin_api_key.clone()).await?;

        let mut models = crate::cli::models_from_specs(&config.models)?;
        if models.names().next().is_none() {
            notes.push(
                "no model provider configured (--model / CHATTER_MODELS): serving the offline \
                 `scripted` model"
                    .to_owned(),
            );
            models.register("scripted", Arc::new(ScriptedModel::always(OFFLINE_REPLY)));
        }
        let model_names = models.names().map(str::to_owned).collect();
        let metrics = Arc::new(metrics::ServerMetrics::new());
        let models = metered(&models, &metrics.models)?;
        let tools: ToolRegistry = crate::cli::tools_from_file(config.tools.as_deref())?;
        let engine = Engine::builder()
            .models(models)
            .tools(tools)
            .observer(metrics.clone())
            .build();
        let rate_limiter = config
            .rate_limits
            .enabled
            .then(|| ratelimit::RateLimiter::new(config.rate_limits.clone()));
        // Every execution is durable: each step committed before the next starts. Every one
        // the tracker drives is published on the global events stream.
        let workflow_events = events::WorkflowEvents::new();
        let tracker = WorkflowTracker::new(store.clone())
            .durability(chatter_core::engine::DurabilityMode::Sync)
            .observer(Arc::new(workflow_events.clone()));
        let dummy_hash = auth::hash_password(&ulid::Ulid::new().to_string())
            .map_err(|e| Error::Usage(e.detail))?;
        let jwt_secret = config
            .jwt_secret
            .clone()
            .unwrap_or_else(auth::random_secret);

        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|source| Error::Io {
                context: format!("listening on {}", config.addr),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            context: "reading the bound address".into(),
            source,
        })?;
        let shutdown = CancellationToken::new();
        let state = AppState(Arc::new(Inner {
            store,
            engine,
            tracker,
            config,
            jwt_secret,
            dummy_hash,
            roles: RwLock::new(roles),
            model_names,
            shutdown: shutdown.clone(),
            live: Mutex::new(HashMap::new()),
            job_wakeup: tokio::sync::Notify::new(),
            workflow_events,
            metrics,
            rate_limiter,
            principals: auth::PrincipalCache::default(),
            prepared: workflows::PreparedDefinitions::default(),
        }));
        let resumer = tokio::spawn(resume_due_loop(state.clone()));
        let workers = jobs::start_workers(&state);
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        });
        Ok(Server {
            addr,
            state,
            task,
            resumer,
            workers,
            initial_admin_key,
            notes,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The store the server uses.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.state.store()
    }

    /// The API key of the admin created on this start (the database had no user), if any.
    /// Shown once: it is not stored, only its hash.
    pub fn initial_admin_key(&self) -> Option<&str> {
        self.initial_admin_key.as_deref()
    }

    /// Start-up notes for the operator (e.g. "no model provider configured").
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Stops accepting connections, lets in-flight requests finish and waits for the server.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the server failed.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.state.shutdown_token().cancel();
        self.wait().await
    }

    /// Waits until the server stops (after [`Server::shutdown_handle`] is cancelled).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the server failed.
    pub async fn wait(self) -> Result<(), Error> {
        let served = self.task.await;
        // An execution the resumer or a job worker was running stays resumable, and the job
        // is taken over: their leases simply expire.
        self.resumer.abort();
        for worker in &self.workers {
            worker.abort();
        }
        match served {
            Ok(result) => result.map_err(|source| Error::Io {
                context: "serving".into(),
                source,
            }),
            Err(e) => Err(Error::Usage(format!("the server task failed: {e}"))),
        }
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_handle(&self) -> CancellationToken {
        self.state.shutdown_token().clone()
    }
}

/// Resumes the executions due (a dead server's, timed-out approvals) at start-up and then
/// every `resume_interval`, until shutdown. Each one is registered live while it runs (so
/// `cancel` reaches it); one that is live in this server already (a resume or approve request,
/// a job worker) is skipped.
async fn resume_due_loop(state: AppState) {
    let source = StoreGraphSource::new(state.store().clone());
    loop {
        let now = state.engine().services().clock.now_ms();
        match state.store().list_resumable(now, 100).await {
            Ok(due) => {
                for record in due {
                    if state.shutdown_token().is_cancelled() {
                        return;
                    }
                    resume_one(&state, &source, &record).await;
                }
            }
            Err(e) => eprintln!("chatter serve: listing the executions to resume failed: {e}"),
        }
        tokio::select! {
            () = state.shutdown_token().cancelled() => return,
            () = tokio::time::sleep(state.config().resume_interval) => {}
        }
    }
}

/// The same providers, each counted in `counters` under its name (the `llm_*` series).
fn metered(
    models: &chatter_core::ModelRegistry,
    counters: &Arc<chatter_core::orchestration::ModelCounters>,
) -> Result<chatter_core::ModelRegistry, Error> {
    let default = models.get(None).ok();
    let mut out = chatter_core::ModelRegistry::new();
    for name in models.names() {
        let model = models.get(Some(name))?;
        let is_default = default.as_ref().is_some_and(|d| Arc::ptr_eq(d, &model));
        let wrapped = Arc::new(chatter_core::orchestration::MeteredModel::new(
            name,
            model,
            counters.clone(),
        ));
        out.register(name, wrapped);
        if is_default {
            out.set_default(name)?;
        }
    }
    Ok(out)
}

/// Resumes one due execution unless it is live in this server.
async fn resume_one(state: &AppState, source: &StoreGraphSource, record: &ExecutionRecord) {
    let id = record.id.as_str();
    let token = CancellationToken::new();
    let Some(_live) = state.try_register_live(id, token.clone()) else {
        return;
    };
    let outcome = match source.definition_for(record).await {
        Ok(def) => {
            let mut options = RunOptions::default();
            options.cancel = Some(token);
            state
                .tracker()
                .resume(state.engine(), &def, id, None, options)
                .await
        }
        Err(e) => Err(e),
    };
    match outcome.and_then(TrackedRun::into_result) {
        Ok(result) => eprintln!("chatter serve: resumed execution {id}: {:?}", result.status),
        // Taken by another server meanwhile, or ended: nothing to do here.
        Err(e) if e.store_kind() == Some(StoreErrorKind::Conflict) => {}
        Err(e) => eprintln!("chatter serve: could not resume execution {id}: {e}"),
    }
}

/// Creates the first admin (and its API key) when the database has no user; returns the key.
async fn bootstrap_admin(
    store: &Arc<dyn Store>,
    key: Option<String>,
) -> Result<Option<String>, Error> {
    if !store.list_users(Page::new(1, 0)).await?.is_empty() {
        return Ok(None);
    }
    let user = auth::create_user(
        store,
        "admin@localhost",
        "admin",
        None,
        vec!["super_admin".to_owned()],
    )
    .await
    .map_err(|e| Error::Usage(format!("creating the first admin: {}", e.detail)))?;
    let (_, key) = auth::create_api_key(store, &user.id, "initial admin key", key)
        .await
        .map_err(|e| Error::Usage(format!("CHATTER_ADMIN_API_KEY: {}", e.detail)))?;
    Ok(Some(key))
}

fn router(state: AppState) -> Router {
    let max_body = state.config().max_body_bytes;
    let cors = state.config().cors_origins.clone();
    let api = Router::new()
        .route("/live", get(health::live))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .merge(auth_routes::routes())
        .merge(workflows::routes())
        .merge(executions::routes())
        .merge(jobs::routes())
        .merge(chat::routes())
        .merge(events::routes())
        .merge(openai::routes())
        .merge(workspaces::routes())
        .merge(openapi::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), audit_denials))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            ratelimit::limit,
        ))
        .layer(middleware::from_fn(problem::finish))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::observe,
        ))
        .layer(DefaultBodyLimit::max(max_body));
    let api = if cors.is_empty() {
        api
    } else {
        let origins: Vec<HeaderValue> = cors.iter().filter_map(|o| o.parse().ok()).collect();
        api.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_credentials(true)
                .allow_methods([
                    axum::http::Method::GET,
                    axum::http::Method::POST,
                    axum::http::Method::PUT,
                    axum::http::Method::DELETE,
                ])
                .allow_headers([
                    axum::http::header::AUTHORIZATION,
                    axum::http::header::CONTENT_TYPE,
                ]),
        )
    };
    api.with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}

/// Records every 401 and 403 in the audit trail.
async fn audit_denials(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    // The slot of the outer `observe` middleware (it logs the user), or a new one.
    let slot = request
        .extensions()
        .get::<auth::ActorSlot>()
        .cloned()
        .unwrap_or_default();
    request.extensions_mut().insert(slot.clone());
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let ip = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    // Every audit entry written while handling this request carries the client address.
    CLIENT_IP
        .scope(ip, async move {
            let response = next.run(request).await;
            audit_denial(&state, &slot, &method, &path, response).await
        })
        .await
}

async fn audit_denial(
    state: &AppState,
    slot: &auth::ActorSlot,
    method: &str,
    path: &str,
    response: Response,
) -> Response {
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let reason = response
            .extensions()
            .get::<ApiError>()
            .map(|e| e.detail.clone())
            .unwrap_or_default();
        let action = if status == StatusCode::UNAUTHORIZED {
            "http.unauthorized"
        } else {
            "http.forbidden"
        };
        state
            .audit(
                slot.get().as_deref(),
                action,
                ("http", Some(path)),
                "denied",
                json!({"method": method, "path": path, "status": status.as_u16(), "reason": reason}),
            )
            .await;
    }
    response
}

/// JSON response helper: 200 with a body.
pub(crate) fn ok(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

/// The models a ModelRegistry would default to (for responses naming the model used).
pub(crate) fn default_model_name(state: &AppState) -> String {
    state
        .model_names()
        .first()
        .cloned()
        .unwrap_or_else(|| "scripted".into())
}
