//! HTTP requests limited to an allow-list of hosts: as a tool a model can call ([`HttpTool`]) and
//! as the `http` node kind ([`HttpNode`], built by [`HttpNodeFactory`]). Cargo feature
//! `http-tool`.
//!
//! Both refuse URLs whose scheme is not `http`/`https` or whose host is not allowed, follow
//! redirects themselves (at most [`MAX_REDIRECTS`]) and refuse one that leads to a host not
//! allowed, cap the response size, and time out. The result is
//! `{"status": 200, "headers": {...}, "body": ...}`, the body parsed when the response's content
//! type is JSON and text otherwise. An error status (404, 500, ...) is a result like any other,
//! not a failure; refusals, timeouts, connection failures and oversized responses are failures.
//!
//! The allow-list names hosts, not addresses: `api.example.com` (any port), `localhost:8080`
//! (that port only), `*.example.com` (any subdomain, not `example.com` itself), `[::1]`.
//!
//! ```
//! use chatter_core::tools::{HttpTool, HttpToolConfig};
//! use chatter_core::Tool;
//!
//! let tool = HttpTool::new(HttpToolConfig::new(["api.example.com"]))?;
//! assert_eq!(tool.spec().name, "http");
//! # Ok::<(), chatter_core::Error>(())
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::cancel::CancelToken;
use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use crate::definition::NodeSpec;
use crate::engine::{Node, NodeContext, NodeFactory, NodeOutput};
use crate::error::{Error, ErrorClass, Result};
use crate::expr::PromptTemplate;
use crate::state::{StateDelta, VariableOp};
use crate::tool::{Tool, ToolContext, ToolSpec};

/// The most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;
/// Default response size cap, in bytes.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1_000_000;
/// The methods accepted.
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

const MAX_RESPONSE_BYTES_LIMIT: u64 = 100_000_000;
const MAX_TIMEOUT_MS: u64 = 3_600_000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    /// Lowercase host (IPv6 in brackets), without the `*.` of a wildcard.
    host: String,
    /// `*.host`: subdomains of `host`.
    wildcard: bool,
    port: Option<u16>,
}

/// The hosts a request may go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAllowList {
    patterns: Vec<HostPattern>,
}

impl HostAllowList {
    /// Parses entries such as `api.example.com`, `localhost:8080`, `*.example.com`, `[::1]`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an empty list or an entry that is not a host (with optional port).
    pub fn new<I, S>(entries: I) -> Result<HostAllowList>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut patterns = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let entry = entry.as_ref().trim();
            let bad = |why: &str| Error::Config {
                message: format!("allowed_hosts[{i}] `{entry}`: {why}"),
            };
            if entry.is_empty() {
                return Err(bad("empty host"));
            }
            if entry.contains("://") || entry.contains('/') || entry.contains('@') {
                return Err(bad("expected a host name with an optional port, not a URL"));
            }
            let (wildcard, rest) = match entry.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, entry),
            };
            if rest.contains('*') {
                return Err(bad("`*` is only allowed as a leading `*.`"));
            }
            let url = Url::parse(&format!("http://{rest}/")).map_err(|e| bad(&e.to_string()))?;
            let host = url
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| bad("no host"))?
                .to_ascii_lowercase();
            // `Url` drops an explicit `:80` (the scheme default): keep what the entry said.
            let port = if url.port().is_some() || rest.ends_with(":80") {
                url.port().or(Some(80))
            } else {
                None
            };
            patterns.push(HostPattern {
                host,
                wildcard,
                port,
            });
        }
        if patterns.is_empty() {
            return Err(Error::Config {
                message: "allowed_hosts is empty: name at least one host".to_owned(),
            });
        }
        Ok(HostAllowList { patterns })
    }

    /// Whether a URL's host (and port) is allowed.
    pub fn allows(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let port = url.port_or_known_default();
        self.patterns.iter().any(|p| {
            let host_ok = if p.wildcard {
                host.len() > p.host.len()
                    && host.ends_with(&p.host)
                    && host[..host.len() - p.host.len()].ends_with('.')
            } else {
                host == p.host
            };
            host_ok && p.port.is_none_or(|allowed| Some(allowed) == port)
        })
    }
}

/// One HTTP request to make.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequestSpec {
    /// `GET`, `POST`, ... (one of [`METHODS`]).
    pub method: String,
    /// The URL.
    pub url: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// The body: a string is sent as is, any other JSON value as JSON; `None` sends no body.
    pub body: Option<Value>,
}

/// Limits of one client.
#[derive(Debug, Clone)]
struct Limits {
    allow: HostAllowList,
    timeout: Duration,
    max_response_bytes: u64,
}

type Failure = (ErrorClass, String);

const CANCELLED: &str = "request cancelled";

/// The error for a failure: [`Error::Cancelled`] when the request was cancelled, else `other`.
fn failure_error(
    cancel: &CancelToken,
    failure: Failure,
    other: impl FnOnce(Failure) -> Error,
) -> Error {
    if cancel.is_cancelled() && failure.1 == CANCELLED {
        Error::Cancelled {
            reason: format!("HTTP {CANCELLED}"),
        }
    } else {
        other(failure)
    }
}

fn refuse(message: String) -> Failure {
    (ErrorClass::BadRequest, message)
}

fn build_client() -> Result<reqwest::Client> {
    crate::providers::ensure_crypto_provider();
    reqwest::Client::builder()
        // Redirects are followed by hand so every hop is checked against the allow-list.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Config {
            message: format!("cannot build the HTTP client: {e}"),
        })
}

fn describe(e: &reqwest::Error) -> Failure {
    let class = if e.is_timeout() {
        ErrorClass::Timeout
    } else {
        ErrorClass::Connection
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    (class, message)
}

fn check_url(url: &Url, allow: &HostAllowList, redirected: bool) -> Result<(), Failure> {
    let what = if redirected { "redirect to " } else { "" };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse(format!(
            "{what}`{url}` refused: only http and https URLs are allowed"
        )));
    }
    if !allow.allows(url) {
        let host = url.host_str().unwrap_or("");
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        return Err(refuse(format!(
            "{what}host `{host}` refused: not in the allow-list"
        )));
    }
    Ok(())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false)
}

/// Makes the request, following allowed redirects, and returns `{status, headers, body}`.
async fn execute(
    client: &reqwest::Client,
    limits: &Limits,
    request: HttpRequestSpec,
    cancel: &CancelToken,
) -> Result<Value, Failure> {
    let work = execute_inner(client, limits, request);
    tokio::select! {
        result = tokio::time::timeout(limits.timeout, work) => match result {
            Ok(result) => result,
            Err(_) => Err((
                ErrorClass::Timeout,
                format!("no complete response within {} ms", limits.timeout.as_millis()),
            )),
        },
        () = cancel.cancelled() => Err((ErrorClass::Internal, CANCELLED.to_owned())),
    }
}

async fn execute_inner(
    client: &reqwest::Client,
    limits: &Limits,
    request: HttpRequestSpec,
) -> Result<Value, Failure> {
    let method_name = request.method.to_ascii_uppercase();
    if !METHODS.contains(&method_name.as_str()) {
        return Err(refuse(format!(
            "method `{}` is not one of {}",
            request.method,
            METHODS.join(", ")
        )));
    }
    let mut method = reqwest::Method::from_bytes(method_name.as_bytes())
        .map_err(|_| refuse(format!("invalid method `{}`", request.method)))?;
    let mut url = Url::parse(request.url.trim())
        .map_err(|e| refuse(format!("invalid URL `{}`: {e}", request.url)))?;

    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| refuse(format!("invalid header name `{name}`")))?;
        if header == reqwest::header::HOST {
            return Err(refuse("the `Host` header cannot be set".to_owned()));
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| refuse(format!("invalid value for header `{name}`")))?;
        headers.append(header, value);
    }
    let mut body: Option<Vec<u8>> = match request.body {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.into_bytes()),
        Some(other) => {
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            Some(other.to_string().into_bytes())
        }
    };

    let mut redirects = 0;
    loop {
        check_url(&url, &limits.allow, redirects > 0)?;
        let mut builder = client
            .request(method.clone(), url.clone())
            .headers(headers.clone());
        if let Some(bytes) = &body {
            builder = builder.body(bytes.clone());
        }
        let mut response = builder.send().await.map_err(|e| describe(&e))?;
        let status = response.status();
        if status.is_redirection()
            && let Some(location) = response.headers().get(reqwest::header::LOCATION)
        {
            if redirects >= MAX_REDIRECTS {
                return Err(refuse(format!(
                    "too many redirects (more than {MAX_REDIRECTS})"
                )));
            }
            let location = location
                .to_str()
                .map_err(|_| refuse("redirect with an unreadable Location header".to_owned()))?;
            let next = url
                .join(location)
                .map_err(|e| refuse(format!("redirect to `{location}`: invalid URL: {e}")))?;
            let code = status.as_u16();
            if code == 303 && method != reqwest::Method::HEAD
                || matches!(code, 301 | 302) && method == reqwest::Method::POST
            {
                method = reqwest::Method::GET;
                body = None;
                headers.remove(CONTENT_TYPE);
            }
            if next.host_str() != url.host_str() || next.port() != url.port() {
                // Credentials are for the host they were written for.
                headers.remove(AUTHORIZATION);
                headers.remove(COOKIE);
                headers.remove(reqwest::header::PROXY_AUTHORIZATION);
            }
            url = next;
            redirects += 1;
            continue;
        }

        let max = limits.max_response_bytes;
        if let Some(length) = response.content_length()
            && length > max
        {
            return Err((
                ErrorClass::Tool,
                format!("response of {length} bytes exceeds the limit of {max} bytes"),
            ));
        }
        let json_body = is_json(response.headers());
        let mut out_headers = Map::new();
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match out_headers.get_mut(name.as_str()) {
                Some(Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(&value);
                }
                _ => {
                    out_headers.insert(name.as_str().to_owned(), Value::String(value));
                }
            }
        }
        let mut bytes: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            if bytes.len() as u64 + chunk.len() as u64 > max {
                return Err((
                    ErrorClass::Tool,
                    format!("response exceeds the limit of {max} bytes"),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = if json_body && !bytes.is_empty() {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        } else {
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        };
        return Ok(json!({
            "status": status.as_u16(),
            "headers": out_headers,
            "body": body,
        }));
    }
}

// ---------------------------------------------------------------------------------------------
// The tool.

/// Configuration of an [`HttpTool`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpToolConfig {
    /// The tool's name (default `http`).
    pub name: String,
    /// The tool's description for the model.
    pub description: String,
    /// Hosts requests may go to (see [`HostAllowList::new`]).
    pub allowed_hosts: Vec<String>,
    /// Limit for a whole request, redirects and body included (default 30 s).
    pub timeout: Duration,
    /// Largest response body accepted (default [`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub max_response_bytes: u64,
}

impl HttpToolConfig {
    /// The defaults with these allowed hosts.
    pub fn new<I, S>(allowed_hosts: I) -> HttpToolConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        HttpToolConfig {
            name: "http".to_owned(),
            description: "Makes an HTTP request to an allowed host and returns its status, \
                          headers and body."
                .to_owned(),
            allowed_hosts: allowed_hosts.into_iter().map(Into::into).collect(),
            timeout: Duration::from_secs(30),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
    /// Sets the tool's name.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// Sets the tool's description.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }
    /// Sets the request timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Sets the response size cap.
    #[must_use]
    pub fn max_response_bytes(mut self, bytes: u64) -> Self {
        self.max_response_bytes = bytes;
        self
    }
}

/// An HTTP request as a tool. Arguments: `{"method": "GET", "url": "...", "headers": {...},
/// "body": ...}` (only `url` required); result: `{status, headers, body}`.
#[derive(Debug, Clone)]
pub struct HttpTool {
    name: String,
    description: String,
    limits: Limits,
    client: reqwest::Client,
}

impl HttpTool {
    /// Builds the tool.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad allow-list, a zero timeout or size cap, or an HTTP client that
    /// cannot be built.
    pub fn new(config: HttpToolConfig) -> Result<HttpTool> {
        if config.max_response_bytes == 0 {
            return Err(Error::Config {
                message: "max_response_bytes must be at least 1".to_owned(),
            });
        }
        if config.timeout.is_zero() {
            return Err(Error::Config {
                message: "the HTTP tool's timeout must be positive".to_owned(),
            });
        }
        Ok(HttpTool {
            name: config.name,
            description: config.description,
            limits: Limits {
                allow: HostAllowList::new(&config.allowed_hosts)?,
                timeout: config.timeout,
                max_response_bytes: config.max_response_bytes,
            },
            client: build_client()?,
        })
    }

    fn parse_arguments(&self, arguments: Value) -> Result<HttpRequestSpec, Failure> {
        let Value::Object(mut args) = arguments else {
            return Err(refuse("arguments must be a JSON object".to_owned()));
        };
        let url = match args.remove("url") {
            Some(Value::String(url)) => url,
            Some(_) => return Err(refuse("`url` must be a string".to_owned())),
            None => return Err(refuse("`url` is required".to_owned())),
        };
        let method = match args.remove("method") {
            None | Some(Value::Null) => "GET".to_owned(),
            Some(Value::String(m)) => m,
            Some(_) => return Err(refuse("`method` must be a string".to_owned())),
        };
        let headers = match args.remove("headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => string_map(&value).map_err(|e| refuse(format!("`headers` {e}")))?,
        };
        if let Some(key) = args.keys().find(|k| k.as_str() != "body") {
            return Err(refuse(format!(
                "unknown argument `{key}` (expected method, url, headers, body)"
            )));
        }
        Ok(HttpRequestSpec {
            method,
            url,
            headers,
            body: args.remove("body"),
        })
    }
}

fn string_map(value: &Value) -> std::result::Result<Vec<(String, String)>, String> {
    let Value::Object(map) = value else {
        return Err("must be an object of strings".to_owned());
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(format!("`{k}` must be a string")),
        })
        .collect()
}

#[async_trait]
impl Tool for HttpTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "method": {"type": "string", "enum": METHODS, "default": "GET"},
                    "url": {"type": "string", "description": "Absolute http(s) URL on an allowed host."},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "body": {"description": "A string is sent as is; any other JSON value as JSON."}
                },
                "required": ["url"],
                "additionalProperties": false
            }),
        }
    }

    async fn call(&self, arguments: Value, context: &ToolContext) -> Result<Value> {
        let tool_error = |(class, message): Failure| Error::Tool {
            tool: self.name.clone(),
            class,
            message,
        };
        let request = self.parse_arguments(arguments).map_err(tool_error)?;
        execute(&self.client, &self.limits, request, &context.cancel)
            .await
            .map_err(|f| failure_error(&context.cancel, f, tool_error))
    }
}

// ---------------------------------------------------------------------------------------------
// The node kind.

/// The `http` node: renders its `url` template against the state, makes the request, and stores
/// `{status, headers, body}` in `variables.<output_variable>` (when set) and as the node run's
/// output. Config keys: `method`, `url` (template, required), `headers`, `body`, `allowed_hosts`
/// (required, non-empty), `timeout_ms`, `max_response_bytes`, `output_variable`.
#[derive(Debug)]
pub struct HttpNode {
    method: String,
    url: PromptTemplate,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    output_variable: Option<String>,
    limits: Limits,
    client: reqwest::Client,
}

/// Builds [`HttpNode`]s: register it as the `http` kind's [`NodeFactory`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpNodeFactory;

impl NodeFactory for HttpNodeFactory {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(HttpNode::from_spec(spec)?))
    }
}

impl HttpNode {
    /// Builds the node from its config.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the node and the key for a missing or invalid config value;
    /// [`Error::Template`] when `url` does not compile.
    pub fn from_spec(spec: &NodeSpec) -> Result<HttpNode> {
        let node = spec.id.as_str();
        let bad = |key: &str, why: &str| Error::Config {
            message: format!("node `{node}`: `{key}` {why}"),
        };
        let method = match spec.config_value("method") {
            None | Some(Value::Null) => "GET".to_owned(),
            Some(Value::String(m)) if METHODS.contains(&m.to_ascii_uppercase().as_str()) => {
                m.to_ascii_uppercase()
            }
            Some(_) => {
                return Err(bad(
                    "method",
                    &format!("must be one of {}", METHODS.join(", ")),
                ));
            }
        };
        let url = match spec.config_value("url") {
            Some(Value::String(u)) if !u.trim().is_empty() => PromptTemplate::compile(u)?,
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(bad("url", "is required"));
            }
            Some(_) => return Err(bad("url", "must be a string (a template)")),
        };
        let headers = match spec.config_value("headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => string_map(value).map_err(|e| bad("headers", &e))?,
        };
        let body = spec.config_value("body").filter(|v| !v.is_null()).cloned();
        let allowed_hosts: Vec<String> = match spec.config_value("allowed_hosts") {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("allowed_hosts", "must be an array of strings"))?,
            Some(Value::Array(_)) | None | Some(Value::Null) => {
                return Err(bad(
                    "allowed_hosts",
                    "is required and must name at least one host",
                ));
            }
            Some(_) => return Err(bad("allowed_hosts", "must be an array of strings")),
        };
        let allow = HostAllowList::new(&allowed_hosts).map_err(|e| match e {
            Error::Config { message } => Error::Config {
                message: format!("node `{node}`: {message}"),
            },
            other => other,
        })?;
        let timeout_ms = int_in_range(spec, "timeout_ms", 1, MAX_TIMEOUT_MS, 60_000)
            .map_err(|why| bad("timeout_ms", &why))?;
        let max_response_bytes = int_in_range(
            spec,
            "max_response_bytes",
            1,
            MAX_RESPONSE_BYTES_LIMIT,
            DEFAULT_MAX_RESPONSE_BYTES,
        )
        .map_err(|why| bad("max_response_bytes", &why))?;
        let output_variable = match spec.config_value("output_variable") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) if !name.trim().is_empty() => Some(name.clone()),
            Some(_) => return Err(bad("output_variable", "must be a non-empty string")),
        };
        Ok(HttpNode {
            method,
            url,
            headers,
            body,
            output_variable,
            limits: Limits {
                allow,
                timeout: Duration::from_millis(timeout_ms),
                max_response_bytes,
            },
            client: build_client()?,
        })
    }
}

fn int_in_range(
    spec: &NodeSpec,
    key: &str,
    min: u64,
    max: u64,
    default: u64,
) -> std::result::Result<u64, String> {
    match spec.config_value(key) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value
            .as_u64()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| format!("must be an integer from {min} to {max}")),
    }
}

#[async_trait]
impl Node for HttpNode {
    /// It calls the outside world (models, tools, HTTP endpoints): a durable execution records
    /// its intent first.
    fn side_effects(&self) -> bool {
        true
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let url = self
            .url
            .render(&ctx.expr_context_for(self.url.state_reads()))?;
        let request = HttpRequestSpec {
            method: self.method.clone(),
            url,
            headers: self.headers.clone(),
            body: self.body.clone(),
        };
        let result = execute(&self.client, &self.limits, request, &ctx.cancel)
            .await
            .map_err(|f| {
                failure_error(&ctx.cancel, f, |(class, message)| ctx.error(class, message))
            })?;
        let mut delta = StateDelta::default();
        if let Some(name) = &self.output_variable {
            delta
                .variables
                .push((name.clone(), VariableOp::Set(result.clone())));
        }
        Ok(NodeOutput {
            delta,
            output: result.into(),
            ..NodeOutput::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn allow_list_matches_hosts_ports_and_wildcards() {
        let allow =
            HostAllowList::new(["API.example.com", "localhost:8080", "*.svc.local", "[::1]"])
                .unwrap();
        assert!(allow.allows(&url("https://api.example.com/x")));
        assert!(allow.allows(&url("http://api.example.com:9999/x")));
        assert!(!allow.allows(&url("https://example.com/")));
        assert!(!allow.allows(&url("https://api.example.com.evil.net/")));
        assert!(allow.allows(&url("http://localhost:8080/")));
        assert!(!allow.allows(&url("http://localhost:8081/")));
        assert!(!allow.allows(&url("http://localhost/")));
        assert!(allow.allows(&url("http://a.b.svc.local/")));
        assert!(!allow.allows(&url("http://svc.local/")));
        assert!(!allow.allows(&url("http://xsvc.local/")));
        assert!(allow.allows(&url("http://[::1]:3000/")));

        let only_80 = HostAllowList::new(["example.com:80"]).unwrap();
        assert!(only_80.allows(&url("http://example.com/")));
        assert!(!only_80.allows(&url("https://example.com/")));
    }

    #[test]
    fn allow_list_rejects_urls_and_empty_lists() {
        let err = HostAllowList::new(["https://example.com"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration error: allowed_hosts[0] `https://example.com`: expected a host name with an optional port, not a URL"
        );
        let none: [&str; 0] = [];
        assert!(HostAllowList::new(none).is_err());
        assert!(HostAllowList::new(["ex*ample.com"]).is_err());
    }
}
