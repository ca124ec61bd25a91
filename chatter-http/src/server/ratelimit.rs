//! Rate limits per route and per client: token buckets (one per minute, one per hour) kept in
//! memory, in shards so that concurrent requests of different clients never wait on one lock.
//!
//! A client is the authenticated user (a validly signed access token's subject), or the API key
//! it presents, or else its IP address. A route with its own limit (the chat routes by default)
//! has its own buckets per client; every other route shares the client's default buckets.
//! Health and metrics routes are not limited. See `docs/http.md` (Rate limits).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::problem::ApiError;
use super::{AppState, auth};

/// The chat execute route (30 requests a minute by default, as the old platform).
pub const CHAT_ROUTE: &str = "/api/v1/workflows/execute/chat";
/// The chat streaming route (20 requests a minute by default, as the old platform).
pub const CHAT_STREAMING_ROUTE: &str = "/api/v1/workflows/execute/chat/streaming";

/// Routes never limited: probes and metrics scrapes.
const UNLIMITED: [&str; 4] = ["/live", "/healthz", "/readyz", "/metrics"];

/// Whether requests on `route` (an axum route template) are rate limited when the limits are
/// enabled: every route but the probes and `/metrics` (the OpenAPI document's conventions
/// use it).
pub(crate) fn is_limited(route: &str) -> bool {
    !UNLIMITED.contains(&route)
}

/// Requests allowed per minute and per hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Requests per minute (at least 1).
    pub per_minute: u32,
    /// Requests per hour (at least 1).
    pub per_hour: u32,
}

/// Rate limit settings of a server ([`super::ServerConfig::rate_limits`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// Whether requests are limited at all. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The limit of every route without its own, per client. Default 300 a minute and
    /// 10 000 an hour.
    #[serde(default = "default_limit")]
    pub default: Limit,
    /// Routes (axum route templates, as in the metrics: `/api/v1/workflows/execute/chat`)
    /// with their own limit, per client. Default: chat 30 a minute, chat streaming 20 a minute
    /// (and the default hourly limit).
    #[serde(default = "default_routes")]
    pub routes: BTreeMap<String, Limit>,
}

fn yes() -> bool {
    true
}

fn default_limit() -> Limit {
    Limit {
        per_minute: 300,
        per_hour: 10_000,
    }
}

fn default_routes() -> BTreeMap<String, Limit> {
    let hour = default_limit().per_hour;
    BTreeMap::from([
        (
            CHAT_ROUTE.to_owned(),
            Limit {
                per_minute: 30,
                per_hour: hour,
            },
        ),
        (
            CHAT_STREAMING_ROUTE.to_owned(),
            Limit {
                per_minute: 20,
                per_hour: hour,
            },
        ),
    ])
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            default: default_limit(),
            routes: default_routes(),
        }
    }
}

impl RateLimitConfig {
    /// Every limit is at least 1 a minute and 1 an hour.
    ///
    /// # Errors
    ///
    /// A message naming the offending limit.
    pub fn check(&self) -> Result<(), String> {
        let bad = |l: &Limit| l.per_minute == 0 || l.per_hour == 0;
        if bad(&self.default) {
            return Err("rate_limits.default: `per_minute` and `per_hour` must be positive".into());
        }
        if let Some((route, _)) = self.routes.iter().find(|(_, l)| bad(l)) {
            return Err(format!(
                "rate_limits.routes[{route}]: `per_minute` and `per_hour` must be positive"
            ));
        }
        Ok(())
    }
}

/// One token bucket: `capacity` tokens, refilled continuously over `period`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(capacity: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(capacity),
            at: now,
        }
    }

    fn refill(&mut self, capacity: u32, period: Duration, now: Instant) {
        let rate = f64::from(capacity) / period.as_secs_f64();
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(capacity));
        self.at = now;
    }

    /// Seconds until one token is back (0 when one is there).
    fn wait_secs(&self, capacity: u32, period: Duration) -> u64 {
        if self.tokens >= 1.0 {
            return 0;
        }
        let rate = f64::from(capacity) / period.as_secs_f64();
        // Whole seconds, rounded up: a client that waits that long is let in.
        ((1.0 - self.tokens) / rate).ceil().max(1.0) as u64
    }
}

#[derive(Debug, Clone, Copy)]
struct Buckets {
    minute: Bucket,
    hour: Bucket,
}

/// What a request was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) limit: Limit,
    pub(crate) remaining_minute: u32,
    pub(crate) remaining_hour: u32,
    /// `Some(seconds)` when refused.
    pub(crate) retry_after: Option<u64>,
}

/// Buckets by client and route class (`None`: the default limit; else an index into the
/// configured routes).
type BucketMap = HashMap<(String, Option<usize>), Buckets>;

/// One shard: its buckets, and the size at which it is next swept.
#[derive(Debug)]
struct Shard {
    buckets: BucketMap,
    sweep_at: usize,
}

const SHARDS: usize = 64;
/// A shard holding more clients than this forgets those whose buckets are full again; when
/// most are still active, the next sweep waits until the shard has doubled (so a flood of
/// clients costs amortised constant time per request, not a sweep each).
const SWEEP_AT: usize = 4096;

/// The limiter of one server.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    config: RateLimitConfig,
    shards: Box<[Mutex<Shard>]>,
    /// Indices into `config.routes`, by route template.
    route_index: HashMap<String, usize>,
    route_limits: Vec<Limit>,
    hasher: RandomState,
    refused: AtomicU64,
}

impl RateLimiter {
    pub(crate) fn new(config: RateLimitConfig) -> RateLimiter {
        let route_limits: Vec<Limit> = config.routes.values().copied().collect();
        let route_index = config
            .routes
            .keys()
            .enumerate()
            .map(|(i, r)| (r.clone(), i))
            .collect();
        RateLimiter {
            config,
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        sweep_at: SWEEP_AT,
                    })
                })
                .collect(),
            route_index,
            route_limits,
            hasher: RandomState::new(),
            refused: AtomicU64::new(0),
        }
    }

    /// Requests refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Takes one request of `client` on `route` (a route template) from its buckets.
    pub(crate) fn check(&self, client: String, route: &str, now: Instant) -> Decision {
        let class = self.route_index.get(route).copied();
        let limit = class.map_or(self.config.default, |i| self.route_limits[i]);
        let shard = &self.shards[(self.hasher.hash_one((&client, class)) as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if shard.buckets.len() >= shard.sweep_at {
            self.sweep(&mut shard.buckets, now);
            shard.sweep_at = SWEEP_AT.max(shard.buckets.len() * 2);
        }
        let buckets = shard
            .buckets
            .entry((client, class))
            .or_insert_with(|| Buckets {
                minute: Bucket::full(limit.per_minute, now),
                hour: Bucket::full(limit.per_hour, now),
            });
        buckets.minute.refill(limit.per_minute, MINUTE, now);
        buckets.hour.refill(limit.per_hour, HOUR, now);
        let allowed = buckets.minute.tokens >= 1.0 && buckets.hour.tokens >= 1.0;
        let retry_after = if allowed {
            buckets.minute.tokens -= 1.0;
            buckets.hour.tokens -= 1.0;
            None
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Some(
                buckets
                    .minute
                    .wait_secs(limit.per_minute, MINUTE)
                    .max(buckets.hour.wait_secs(limit.per_hour, HOUR)),
            )
        };
        Decision {
            limit,
            remaining_minute: buckets.minute.tokens.floor() as u32,
            remaining_hour: buckets.hour.tokens.floor() as u32,
            retry_after,
        }
    }

    /// Forgets the clients whose buckets are full again (they would start full anyway).
    fn sweep(&self, map: &mut BucketMap, now: Instant) {
        map.retain(|(_, class), b| {
            let limit = class.map_or(self.config.default, |i| self.route_limits[i]);
            let mut b = *b;
            b.minute.refill(limit.per_minute, MINUTE, now);
            b.hour.refill(limit.per_hour, HOUR, now);
            b.minute.tokens < f64::from(limit.per_minute)
                || b.hour.tokens < f64::from(limit.per_hour)
        });
    }
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Who a request counts against: `user:ID` for a validly signed access token, `key:HASH` for
/// an API key, `ip:ADDR` otherwise. Cheap: no database access (an unknown or revoked
/// credential is refused by the handler; its requests still count against the key presented).
fn client_key(state: &AppState, headers: &HeaderMap, ip: Option<SocketAddr>) -> String {
    if let Some(token) = auth::bearer(headers) {
        if token.starts_with(auth::API_KEY_PREFIX) {
            return format!("key:{}", &auth::sha256_hex(token)[..32]);
        }
        if let Some(sub) = auth::access_subject(state.jwt_secret(), token) {
            return format!("user:{sub}");
        }
    }
    match ip {
        Some(addr) => format!("ip:{}", addr.ip()),
        None => "ip:unknown".to_owned(),
    }
}

fn number(n: impl Into<u64>) -> HeaderValue {
    HeaderValue::from(n.into())
}

const LIMIT_MINUTE: HeaderName = HeaderName::from_static("x-ratelimit-limit-minute");
const LIMIT_HOUR: HeaderName = HeaderName::from_static("x-ratelimit-limit-hour");
const REMAINING_MINUTE: HeaderName = HeaderName::from_static("x-ratelimit-remaining-minute");
const REMAINING_HOUR: HeaderName = HeaderName::from_static("x-ratelimit-remaining-hour");

/// Limits the request's client on its route; a refusal is a `429` problem with
/// `Retry-After`. Every limited response carries the `X-RateLimit-*` headers.
pub(crate) async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(limiter) = state.rate_limiter() else {
        return next.run(request).await;
    };
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) if !is_limited(path.as_str()) => return next.run(request).await,
        Some(path) => path.as_str().to_owned(),
        // No route matched: a 404 or 405 on the default buckets.
        None => String::new(),
    };
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client = client_key(&state, request.headers(), ip);
    let decision = limiter.check(client, &route, Instant::now());
    let mut response = match decision.retry_after {
        None => next.run(request).await,
        Some(seconds) => {
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "rate limit exceeded ({} requests a minute, {} an hour on this route); \
                     retry in {seconds} s",
                    decision.limit.per_minute, decision.limit.per_hour
                ),
            )
            .with("retry_after", json!(seconds))
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, number(seconds));
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(LIMIT_MINUTE, number(decision.limit.per_minute));
    headers.insert(LIMIT_HOUR, number(decision.limit.per_hour));
    headers.insert(REMAINING_MINUTE, number(decision.remaining_minute));
    headers.insert(REMAINING_HOUR, number(decision.remaining_hour));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_minute: u32, per_hour: u32) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            default: Limit {
                per_minute,
                per_hour,
            },
            routes: BTreeMap::from([(
                "/chat".to_owned(),
                Limit {
                    per_minute: 2,
                    per_hour: 100,
                },
            )]),
            ..RateLimitConfig::default()
        })
    }

    #[test]
    fn refuses_beyond_the_minute_limit_and_refills_over_time() {
        let l = limiter(3, 100);
        let t0 = Instant::now();
        let seen: Vec<_> = (0..4).map(|_| l.check("ip:1".into(), "/x", t0)).collect();
        assert_eq!(
            seen.iter().map(|d| d.remaining_minute).collect::<Vec<_>>(),
            [2, 1, 0, 0]
        );
        assert_eq!(seen[2].retry_after, None);
        // 3 a minute: one token every 20 s.
        assert_eq!(seen[3].retry_after, Some(20));
        assert_eq!(l.refused(), 1);
        // 20 s later one more request is let in, and only one.
        let t1 = t0 + Duration::from_secs(20);
        assert_eq!(l.check("ip:1".into(), "/x", t1).retry_after, None);
        assert!(l.check("ip:1".into(), "/x", t1).retry_after.is_some());
    }

    #[test]
    fn clients_and_routes_have_their_own_buckets() {
        let l = limiter(1, 100);
        let t = Instant::now();
        assert_eq!(l.check("user:a".into(), "/x", t).retry_after, None);
        assert!(
            l.check("user:a".into(), "/y", t).retry_after.is_some(),
            "routes without a limit share"
        );
        assert_eq!(l.check("user:b".into(), "/x", t).retry_after, None);
        assert_eq!(l.check("user:a".into(), "/chat", t).retry_after, None);
        assert_eq!(l.check("user:a".into(), "/chat", t).retry_after, None);
        let refused = l.check("user:a".into(), "/chat", t);
        assert_eq!(refused.retry_after, Some(30));
        assert_eq!(refused.limit.per_minute, 2);
    }

    #[test]
    fn the_hourly_limit_holds_when_the_minute_one_has_room() {
        let l = limiter(10, 2);
        let t = Instant::now();
        assert_eq!(l.check("ip:1".into(), "/x", t).retry_after, None);
        assert_eq!(l.check("ip:1".into(), "/x", t).retry_after, None);
        let refused = l.check("ip:1".into(), "/x", t);
        assert_eq!(refused.retry_after, Some(1800));
        assert_eq!((refused.remaining_minute, refused.remaining_hour), (8, 0));
    }

    #[test]
    fn zero_limits_are_refused() {
        let mut config = RateLimitConfig::default();
        config.default.per_hour = 0;
        assert!(config.check().is_err());
        let mut config = RateLimitConfig::default();
        config.routes.insert(
            "/x".into(),
            Limit {
                per_minute: 0,
                per_hour: 1,
            },
        );
        assert!(config.check().unwrap_err().contains("/x"));
    }
}
