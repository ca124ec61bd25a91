//! Authentication: bearer API keys (`chatter_api_…`) and JWT HS256 access tokens, password
//! login with refresh sessions, and the principal every handler receives.
//!
//! - **API keys** are 32 random bytes in hex behind the `chatter_api_` prefix. Only their
//!   SHA-256 is stored (`api_keys.key_hash`, a unique index, so a lookup is one indexed read);
//!   the plaintext is shown once, when created.
//! - **Access tokens** are JWTs signed with HMAC-SHA256: `{sub, sid, jti, type: "access", iat,
//!   exp}`. `sid` is the refresh session the token was issued from; logging out revokes that
//!   session and with it every access token carrying its `sid`. Refresh tokens are opaque
//!   random strings, never JWTs, so one can never be used as an access token.
//! - **Passwords** are hashed with Argon2id (PHC strings in `user_credentials`).
//! - **Verified credentials are cached** for [`ServerConfig::auth_cache_ttl`] (default 2 s;
//!   zero turns the cache off), so a client sending many requests with one key or token costs
//!   the store one lookup per interval, not two per request. Changes made through this server
//!   (revoking a key, logging out, refreshing, changing or deactivating a user) empty the cache
//!   at once; a change made elsewhere (the `chatter apikeys` command, another server sharing
//!   the database) takes effect within that interval.
//!
//! [`ServerConfig::auth_cache_ttl`]: super::ServerConfig::auth_cache_ttl

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chatter_core::store::{
    ApiKeyRecord, NewApiKey, NewSession, NewUser, RoleRecord, Store, UserRecord,
};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AppState;
use super::problem::ApiError;

/// Prefix of every API key.
pub const API_KEY_PREFIX: &str = "chatter_api_";
/// Prefix of every refresh token.
pub const REFRESH_TOKEN_PREFIX: &str = "chatter_rt_";
/// Name of the refresh-token cookie.
pub const REFRESH_COOKIE: &str = "chatter_refresh";

/// The built-in roles, from least to most privileged: name, description, and the permissions
/// each adds to those of the roles before it. Seeded (upserted) at start-up.
pub const BUILTIN_ROLES: &[(&str, &str, &[&str])] = &[
    (
        "guest",
        "Read public workflows and templates",
        &["workflow:read", "template:read"],
    ),
    (
        "user",
        "Build, run and chat with own workflows",
        &[
            "workflow:write",
            "workflow:execute",
            "template:write",
            "chat:execute",
        ],
    ),
    (
        "power_user",
        "A user who may also publish templates",
        &["template:publish"],
    ),
    (
        "admin",
        "Reads and manages every user's resources, reads the audit log",
        &[
            "workflow:admin",
            "template:review",
            "audit:read",
            "admin:users",
        ],
    ),
    (
        "super_admin",
        "Everything, including role management",
        &["admin:roles"],
    ),
];

/// Every permission of a built-in role (its own and those of the roles before it).
pub fn builtin_role_permissions(role: &str) -> Option<Vec<String>> {
    let end = BUILTIN_ROLES
        .iter()
        .position(|(name, _, _)| *name == role)?;
    Some(
        BUILTIN_ROLES[..=end]
            .iter()
            .flat_map(|(_, _, added)| added.iter().map(|p| (*p).to_owned()))
            .collect(),
    )
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// SHA-256 of `text`, lower-case hex.
pub(crate) fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random JWT signing secret (32 bytes).
pub(crate) fn random_secret() -> Vec<u8> {
    let mut buf = vec![0u8; 32];
    rand::rng().fill_bytes(&mut buf);
    buf
}

/// Hashes a password with Argon2id (a PHC string).
///
/// # Errors
///
/// [`ApiError`] (500) when hashing fails.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::internal(&e))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(&e))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Creates a user with optional login credentials and the given roles.
///
/// # Errors
///
/// [`ApiError`]: 409 for a taken e-mail or username, 422 for empty fields.
pub async fn create_user(
    store: &Arc<dyn Store>,
    email: &str,
    username: &str,
    password: Option<&str>,
    roles: Vec<String>,
) -> Result<UserRecord, ApiError> {
    if email.trim().is_empty() || username.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "e-mail and username must not be empty",
        ));
    }
    if let Some(unknown) = roles
        .iter()
        .find(|r| !BUILTIN_ROLES.iter().any(|(name, _, _)| name == r))
    {
        return Err(ApiError::unprocessable(format!("unknown role `{unknown}`")));
    }
    if store.find_credentials(username).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "the username `{username}` is taken"
        )));
    }
    let hash = match password {
        Some(p) => {
            let p = p.to_owned();
            Some(
                tokio::task::spawn_blocking(move || hash_password(&p))
                    .await
                    .map_err(|e| ApiError::internal(&e))??,
            )
        }
        None => None,
    };
    let user = store
        .create_user(NewUser {
            id: None,
            email: email.to_owned(),
            display_name: None,
            roles,
        })
        .await?;
    store
        .set_credentials(&user.id, username, hash.as_deref())
        .await?;
    Ok(user)
}

/// Creates an API key for a user; returns the stored record and the plaintext key (shown once).
///
/// # Errors
///
/// [`ApiError`]: 404 for an unknown user.
pub async fn create_api_key(
    store: &Arc<dyn Store>,
    user_id: &str,
    name: &str,
    key: Option<String>,
) -> Result<(ApiKeyRecord, String), ApiError> {
    let key = key.unwrap_or_else(|| format!("{API_KEY_PREFIX}{}", random_hex(32)));
    if !key.starts_with(API_KEY_PREFIX) || key.len() < API_KEY_PREFIX.len() + 32 {
        return Err(ApiError::unprocessable(format!(
            "an API key must start with `{API_KEY_PREFIX}` followed by at least 32 characters"
        )));
    }
    let prefix: String = key.chars().take(API_KEY_PREFIX.len() + 8).collect();
    let record = store
        .create_api_key(NewApiKey {
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            prefix,
            key_hash: sha256_hex(&key),
            scopes: Vec::new(),
            expires_at: None,
        })
        .await?;
    Ok((record, key))
}

/// Upserts the built-in roles.
///
/// # Errors
///
/// Storage failures.
pub async fn seed_roles(store: &Arc<dyn Store>) -> chatter_core::Result<()> {
    for (name, description, _) in BUILTIN_ROLES {
        store
            .upsert_role(RoleRecord {
                name: (*name).to_owned(),
                description: Some((*description).to_owned()),
                permissions: builtin_role_permissions(name).unwrap_or_default(),
            })
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// JWT
// ---------------------------------------------------------------------------------------------

type HmacSha256 = Hmac<Sha256>;

fn sign(secret: &[u8], claims: &Value) -> Result<String, ApiError> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|e| ApiError::internal(&e))?;
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(format!("{signing_input}.{signature}"))
}

/// Verifies an HS256 JWT's signature and returns its claims.
fn verify(secret: &[u8], token: &str) -> Result<Value, &'static str> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed token");
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or("malformed token")?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err("unsupported token algorithm");
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "malformed token")?;
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| "bad signing key")?;
    mac.update(header_payload(token).as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| "invalid token signature")?;
    URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or("malformed token")
}

/// The subject (user id) of a validly signed access token, expired or not, without asking the
/// database (for rate limiting; authentication proper is [`Principal`]'s).
pub(crate) fn access_subject(secret: &[u8], token: &str) -> Option<String> {
    let claims = verify(secret, token).ok()?;
    if claims.get("type").and_then(Value::as_str) != Some("access") {
        return None;
    }
    claims.get("sub").and_then(Value::as_str).map(str::to_owned)
}

fn header_payload(token: &str) -> &str {
    token.rfind('.').map_or(token, |i| &token[..i])
}

/// An issued access token.
#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub(crate) token: String,
    pub(crate) expires_in: i64,
}

/// Issues an access token for a user and session.
pub(crate) fn issue_access(
    state: &AppState,
    user_id: &str,
    session_id: &str,
) -> Result<AccessToken, ApiError> {
    let now = now_ms() / 1000;
    let ttl = i64::try_from(state.config().access_ttl.as_secs()).unwrap_or(i64::MAX);
    let claims = json!({
        "sub": user_id,
        "sid": session_id,
        "jti": ulid::Ulid::new().to_string(),
        "type": "access",
        "iat": now,
        "exp": now.saturating_add(ttl),
    });
    Ok(AccessToken {
        token: sign(state.jwt_secret(), &claims)?,
        expires_in: ttl,
    })
}

/// Starts a refresh session; returns `(session id, refresh token)`.
pub(crate) async fn new_session(
    state: &AppState,
    user_id: &str,
) -> Result<(String, String), ApiError> {
    let token = format!("{REFRESH_TOKEN_PREFIX}{}", random_hex(32));
    let ttl = i64::try_from(state.config().refresh_ttl.as_millis()).unwrap_or(i64::MAX);
    let session = state
        .store()
        .create_session(NewSession {
            user_id: user_id.to_owned(),
            token_hash: sha256_hex(&token),
            expires_at: now_ms().saturating_add(ttl),
        })
        .await?;
    Ok((session.id, token))
}

/// A new session for a user: `(session id, refresh token, access token)`.
pub(crate) async fn start_session(
    state: &AppState,
    user_id: &str,
) -> Result<(String, String, AccessToken), ApiError> {
    let (session_id, refresh_token) = new_session(state, user_id).await?;
    let access = issue_access(state, user_id, &session_id)?;
    Ok((session_id, refresh_token, access))
}

/// The `TokenRefreshResponse` body (the login adds `user`).
pub(crate) fn token_json(refresh_token: &str, access: &AccessToken) -> Value {
    json!({
        "access_token": access.token,
        "refresh_token": refresh_token,
        "token_type": "bearer",
        "expires_in": access.expires_in,
    })
}

/// Checks a login and password; `Ok(None)` for wrong credentials (same work either way).
pub(crate) async fn check_password(
    state: &AppState,
    login: &str,
    password: &str,
) -> Result<Option<UserRecord>, ApiError> {
    let credentials = state.store().find_credentials(login).await?;
    let hash = credentials
        .as_ref()
        .and_then(|c| c.password_hash.clone())
        .unwrap_or_else(|| state.dummy_hash().to_owned());
    let password = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let Some(credentials) = credentials.filter(|c| ok && c.password_hash.is_some()) else {
        return Ok(None);
    };
    Ok(state
        .store()
        .get_user(&credentials.user_id)
        .await?
        .filter(|u| u.is_active))
}

// ---------------------------------------------------------------------------------------------
// The principal
// ---------------------------------------------------------------------------------------------

/// How the caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A JWT access token of a refresh session.
    Access {
        /// The session (`sid`).
        session_id: String,
    },
    /// An API key.
    ApiKey {
        /// The key's id.
        key_id: String,
    },
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user.
    pub user: UserRecord,
    /// The union of the permissions of the user's roles.
    pub permissions: BTreeSet<String>,
    /// How they authenticated.
    pub credential: Credential,
}

impl Principal {
    /// The user's id (the owner of what they create).
    pub fn id(&self) -> &str {
        &self.user.id
    }

    /// Whether the caller has a permission.
    pub fn can(&self, permission: &str) -> bool {
        self.permissions.contains(permission)
    }

    /// Whether the caller sees and manages every user's resources.
    pub fn is_admin(&self) -> bool {
        self.can("workflow:admin")
    }

    /// 403 unless the caller has the permission.
    ///
    /// # Errors
    ///
    /// [`ApiError`] 403 naming the permission.
    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this requires the `{permission}` permission"
            )))
        }
    }
}

/// Who acted in this request, filled in by authentication for the audit of 401/403 answers.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActorSlot(pub(crate) Arc<Mutex<Option<String>>>);

impl ActorSlot {
    fn set(&self, id: &str) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(id.to_owned());
        }
    }

    pub(crate) fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
}

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A refresh token from the cookie.
pub(crate) fn refresh_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == REFRESH_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Most credentials kept in a [`PrincipalCache`]; past it, expired entries are dropped, and
/// if that is not enough, all of them.
const MAX_CACHED_PRINCIPALS: usize = 10_000;

/// The principals of recently verified credentials, by the SHA-256 of the bearer token, each
/// until an instant no later than the credential's own expiry.
///
/// A verification that started before a [`PrincipalCache::clear`] is not cached: the
/// generation it read no longer matches.
#[derive(Debug, Default)]
pub(crate) struct PrincipalCache {
    entries: Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    /// Bumped by every `clear`.
    generation: u64,
    by_token: HashMap<String, (Principal, Instant)>,
}

impl PrincipalCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached principal of a token, or the generation to pass to [`PrincipalCache::put`].
    fn get(&self, key: &str) -> Result<Principal, u64> {
        let mut cached = self.lock();
        match cached.by_token.get(key) {
            Some((principal, until)) if *until > Instant::now() => Ok(principal.clone()),
            Some(_) => {
                cached.by_token.remove(key);
                Err(cached.generation)
            }
            None => Err(cached.generation),
        }
    }

    /// Caches a principal verified since `generation` was read, unless the cache was cleared
    /// in between.
    fn put(&self, key: String, principal: Principal, until: Instant, generation: u64) {
        let mut cached = self.lock();
        if cached.generation != generation {
            return;
        }
        if cached.by_token.len() >= MAX_CACHED_PRINCIPALS {
            let now = Instant::now();
            cached.by_token.retain(|_, (_, until)| *until > now);
            if cached.by_token.len() >= MAX_CACHED_PRINCIPALS {
                cached.by_token.clear();
            }
        }
        cached.by_token.insert(key, (principal, until));
    }

    /// Forgets every cached principal (after a change to keys, sessions or users).
    pub(crate) fn clear(&self) {
        let mut cached = self.lock();
        cached.generation = cached.generation.wrapping_add(1);
        cached.by_token.clear();
    }
}

/// The caller of a bearer token: from the cache when it was verified recently, else verified
/// against the store (and cached).
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::unauthorized(
            "authentication required: send `Authorization: Bearer <token or API key>`",
        ));
    };
    let ttl = state.config().auth_cache_ttl;
    if ttl.is_zero() {
        return verify_bearer(state, token, &sha256_hex(token))
            .await
            .map(|(principal, _)| principal);
    }
    let hash = sha256_hex(token);
    let generation = match state.principals().get(&hash) {
        Ok(principal) => return Ok(principal),
        Err(generation) => generation,
    };
    let (principal, expires_at_ms) = verify_bearer(state, token, &hash).await?;
    let mut lifetime = ttl;
    if let Some(at) = expires_at_ms {
        let left = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
        lifetime = lifetime.min(Duration::from_millis(left));
    }
    state.principals().put(
        hash,
        principal.clone(),
        Instant::now() + lifetime,
        generation,
    );
    Ok(principal)
}

/// Verifies a bearer token (`hash`: its SHA-256) against the store; returns the principal and
/// when the credential expires (ms since the epoch), if it does.
async fn verify_bearer(
    state: &AppState,
    token: &str,
    hash: &str,
) -> Result<(Principal, Option<i64>), ApiError> {
    let store = state.store();
    let (user_id, credential, expires_at) = if token.starts_with(API_KEY_PREFIX) {
        let key = store
            .find_api_key(hash)
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid API key"))?;
        if key.revoked_at.is_some() {
            return Err(ApiError::unauthorized("this API key was revoked"));
        }
        if key.expires_at.is_some_and(|at| at <= now_ms()) {
            return Err(ApiError::unauthorized("this API key has expired"));
        }
        (
            key.user_id.clone(),
            Credential::ApiKey { key_id: key.id },
            key.expires_at,
        )
    } else {
        let claims = verify(state.jwt_secret(), token).map_err(ApiError::unauthorized)?;
        if claims.get("type").and_then(Value::as_str) != Some("access") {
            return Err(ApiError::unauthorized("not an access token"));
        }
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        if exp <= now_ms() / 1000 {
            return Err(ApiError::unauthorized("the access token has expired"));
        }
        let (Some(sub), Some(sid)) = (
            claims.get("sub").and_then(Value::as_str),
            claims.get("sid").and_then(Value::as_str),
        ) else {
            return Err(ApiError::unauthorized("malformed token"));
        };
        let session = store.get_session(sid).await?;
        if !session.is_some_and(|s| s.user_id == sub && s.revoked_at.is_none()) {
            return Err(ApiError::unauthorized("the access token was revoked"));
        }
        (
            sub.to_owned(),
            Credential::Access {
                session_id: sid.to_owned(),
            },
            Some(exp.saturating_mul(1000)),
        )
    };
    let user = store
        .get_user(&user_id)
        .await?
        .filter(|u| u.is_active)
        .ok_or_else(|| ApiError::unauthorized("the account is disabled or gone"))?;
    let permissions = state.permissions_of(&user.roles);
    Ok((
        Principal {
            user,
            permissions,
            credential,
        },
        expires_at,
    ))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = authenticate(state, &parts.headers).await;
        if let (Ok(p), Some(slot)) = (&principal, parts.extensions.get::<ActorSlot>()) {
            slot.set(p.id());
        }
        principal
    }
}

/// An optional principal: `None` without an `Authorization` header (a bad one is still a 401).
#[derive(Debug, Clone)]
pub struct MaybePrincipal(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybePrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts.headers.get(header::AUTHORIZATION).is_none() {
            return Ok(MaybePrincipal(None));
        }
        Principal::from_request_parts(parts, state)
            .await
            .map(|p| MaybePrincipal(Some(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(id: &str) -> Principal {
        Principal {
            user: UserRecord {
                id: id.to_owned(),
                email: format!("{id}@example.com"),
                display_name: None,
                roles: vec!["user".to_owned()],
                is_active: true,
                created_at: 0,
                updated_at: 0,
            },
            permissions: BTreeSet::new(),
            credential: Credential::ApiKey {
                key_id: format!("key-{id}"),
            },
        }
    }

    fn cached_user(cache: &PrincipalCache, key: &str) -> Option<String> {
        cache.get(key).ok().map(|p| p.user.id)
    }

    #[test]
    fn principal_cache_serves_until_expiry_and_clear() {
        let cache = PrincipalCache::default();
        let later = Instant::now() + Duration::from_secs(60);
        let Err(generation) = cache.get("k") else {
            panic!("an empty cache has nothing");
        };
        cache.put("k".into(), principal("ann"), later, generation);
        assert_eq!(cached_user(&cache, "k").as_deref(), Some("ann"));
        assert_eq!(cached_user(&cache, "other"), None);

        // Past its instant an entry is gone.
        cache.put("old".into(), principal("bob"), Instant::now(), generation);
        assert_eq!(cached_user(&cache, "old"), None);

        cache.clear();
        assert_eq!(cached_user(&cache, "k"), None);
    }

    #[test]
    fn a_verification_that_raced_a_clear_is_not_cached() {
        let cache = PrincipalCache::default();
        let Err(before) = cache.get("k") else {
            panic!("an empty cache has nothing");
        };
        // The key is revoked while its verification is in flight ...
        cache.clear();
        // ... so what that verification read must not be served afterwards.
        let later = Instant::now() + Duration::from_secs(60);
        cache.put("k".into(), principal("ann"), later, before);
        assert_eq!(cached_user(&cache, "k"), None);
        let Err(now) = cache.get("k") else {
            panic!("nothing was cached");
        };
        cache.put("k".into(), principal("ann"), later, now);
        assert_eq!(cached_user(&cache, "k").as_deref(), Some("ann"));
    }
}
