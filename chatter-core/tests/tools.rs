//! Stub tools, and the `http` tool and node against a loopback server started by each test.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers outside `#[test]` functions

use std::time::{Duration, Instant};

use chatter_core::CancelToken;
use chatter_core::tools::{RecordedCall, StubTools};
use chatter_core::{Error, ErrorClass, ToolContext};
use serde_json::json;

fn context(call_id: &str, key: &str) -> ToolContext {
    ToolContext {
        idempotency_key: key.to_owned(),
        execution_id: "ex1".to_owned(),
        node_id: "tools".to_owned(),
        iteration: 0,
        attempt: 1,
        call_id: call_id.to_owned(),
        cancel: CancelToken::new(),
    }
}

fn tool_error(err: Error) -> (String, ErrorClass, String) {
    match err {
        Error::Tool {
            tool,
            class,
            message,
        } => (tool, class, message),
        other => panic!("expected a tool error, got {other:?}"),
    }
}

fn stubs() -> StubTools {
    StubTools::from_value(json!({
        "get_weather": {
            "result": {"city": "Oslo", "temp_c": 21},
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        },
        "flaky": {"error": "service unavailable", "error_class": "server"},
        "retry_me": {"result": "ok", "error": "try again", "fail_times": 2},
        "slow": {"result": 1, "delay_ms": 50}
    }))
    .unwrap()
}

#[tokio::test]
async fn stub_tools_answer_fail_and_delay_as_configured() {
    let stubs = stubs();
    assert_eq!(
        stubs.names(),
        vec!["get_weather", "flaky", "retry_me", "slow"]
    );
    let registry = stubs.registry();
    let weather = registry.get("get_weather").unwrap();
    let spec = weather.spec();
    assert_eq!(spec.description, "Current weather for a city");
    assert_eq!(spec.parameters["required"], json!(["city"]));
    assert_eq!(
        registry.get("slow").unwrap().spec().parameters,
        json!({"type": "object", "properties": {}})
    );

    let result = weather
        .call(json!({"city": "Oslo"}), &context("call_1", "ex1:tools:0:1"))
        .await
        .unwrap();
    assert_eq!(result, json!({"city": "Oslo", "temp_c": 21}));

    let err = registry
        .get("flaky")
        .unwrap()
        .call(json!({}), &context("call_2", "ex1:tools:0:1"))
        .await
        .unwrap_err();
    assert_eq!(
        tool_error(err),
        (
            "flaky".to_owned(),
            ErrorClass::Server,
            "service unavailable".to_owned()
        )
    );

    let retry = registry.get("retry_me").unwrap();
    for attempt in 1..=2 {
        let err = retry
            .call(json!({}), &context("c", &format!("ex1:tools:0:{attempt}")))
            .await
            .unwrap_err();
        assert_eq!(tool_error(err).1, ErrorClass::Tool);
    }
    assert_eq!(
        retry
            .call(json!({}), &context("c", "ex1:tools:0:3"))
            .await
            .unwrap(),
        json!("ok")
    );

    let started = Instant::now();
    let slow = registry.get("slow").unwrap();
    assert_eq!(
        slow.call(json!({"n": 1}), &context("call_9", "ex1:tools:1:1"))
            .await
            .unwrap(),
        json!(1)
    );
    assert!(started.elapsed() >= Duration::from_millis(50));

    let calls = stubs.calls();
    assert_eq!(calls.len(), 6);
    assert_eq!(
        calls[0],
        RecordedCall {
            tool: "get_weather".into(),
            arguments: json!({"city": "Oslo"}),
            idempotency_key: "ex1:tools:0:1".into(),
            call_id: "call_1".into(),
        }
    );
    assert_eq!(
        stubs
            .calls_of("retry_me")
            .iter()
            .map(|c| c.idempotency_key.as_str())
            .collect::<Vec<_>>(),
        vec!["ex1:tools:0:1", "ex1:tools:0:2", "ex1:tools:0:3"]
    );
    assert_eq!(stubs.calls_of("slow")[0].arguments, json!({"n": 1}));
}

#[tokio::test]
async fn a_delayed_stub_stops_when_cancelled() {
    let stubs = StubTools::from_value(json!({"slow": {"result": 1, "delay_ms": 10_000}})).unwrap();
    let tool = stubs.registry().get("slow").unwrap();
    let ctx = context("c1", "k");
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        cancel.cancel();
    });
    let started = Instant::now();
    let err = tool.call(json!({}), &ctx).await.unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        stubs.calls().len(),
        1,
        "the call is recorded when it starts"
    );
}

#[test]
fn stub_files_and_bad_files() {
    let dir = std::env::temp_dir().join(format!("chatter-stubs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("tools.json");
    std::fs::write(&good, r#"{"search": {"result": ["a", "b"]}}"#).unwrap();
    assert_eq!(StubTools::from_file(&good).unwrap().names(), vec!["search"]);

    let err = StubTools::from_file(dir.join("missing.json")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");

    let cases = [
        (
            "syntax.json",
            "{\"a\": ",
            "at $: invalid JSON at line 1, column 6",
        ),
        (
            "array.json",
            "[]",
            "at $: expected an object mapping tool names to stubs",
        ),
        (
            "typo.json",
            r#"{"a": {"reslut": 1}}"#,
            "at $.a.reslut: unknown field `reslut`",
        ),
        (
            "delay.json",
            r#"{"a": {"delay_ms": "soon"}}"#,
            "at $.a.delay_ms: invalid type: string \"soon\"",
        ),
        (
            "both.json",
            r#"{"a": {"result": 1, "error": "x"}}"#,
            "at $.a: has both `result` and `error`",
        ),
        (
            "class.json",
            r#"{"a": {"error": "x", "error_class": "weird"}}"#,
            "at $.a.error_class: unknown variant `weird`",
        ),
        (
            "fail.json",
            r#"{"a": {"result": 1, "fail_times": 1}}"#,
            "at $.a.fail_times: needs an `error`",
        ),
        (
            "params.json",
            r#"{"a": {"parameters": []}}"#,
            "at $.a.parameters: must be a JSON Schema object",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let err = StubTools::from_file(&path).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{name}: {err:?}");
        let prefix = format!(
            "configuration error: stub tools file {}: {expected}",
            path.display()
        );
        assert!(err.to_string().starts_with(&prefix), "{name}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "http-tool")]
mod http {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::body::Body;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{any, get};
    use chatter_core::engine::{Node, NodeFactory};
    use chatter_core::tools::{HttpNode, HttpNodeFactory, HttpTool, HttpToolConfig};
    use chatter_core::{NodeContext, NodeSpec, Services, State as RunState, Tool, VariableOp};
    use serde_json::Value;

    #[derive(Default)]
    struct Hits {
        json: AtomicUsize,
    }

    async fn json_route(State(hits): State<Arc<Hits>>) -> Response {
        hits.json.fetch_add(1, Ordering::SeqCst);
        axum::Json(json!({"ok": true, "items": [1, 2]})).into_response()
    }

    async fn echo(method: Method, headers: HeaderMap, body: String) -> Response {
        let header_value = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "{method} {} {} {body}",
                header_value("x-token"),
                header_value("content-type")
            ),
        )
            .into_response()
    }

    /// Starts a loopback server; returns its port and hit counters.
    async fn server() -> (u16, Arc<Hits>) {
        let hits = Arc::new(Hits::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Router::new()
            .route("/json", get(json_route))
            .route("/echo", any(echo))
            .route(
                "/redirect-in",
                get(|| async {
                    (StatusCode::FOUND, [(header::LOCATION, "/json")]).into_response()
                }),
            )
            .route(
                "/redirect-out",
                get(move || async move {
                    let to = format!("http://localhost:{port}/json");
                    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
                }),
            )
            .route(
                "/redirect-post",
                any(|| async {
                    (StatusCode::SEE_OTHER, [(header::LOCATION, "/echo")]).into_response()
                }),
            )
            .route("/big", get(|| async { "x".repeat(10_000) }))
            .route(
                "/big-chunked",
                get(|| async {
                    let parts = (0..10).map(|_| Ok::<_, std::convert::Infallible>("y".repeat(500)));
                    Body::from_stream(futures::stream::iter(parts)).into_response()
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route(
                "/missing",
                get(|| async { (StatusCode::NOT_FOUND, "nope") }),
            )
            .with_state(Arc::clone(&hits));
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (port, hits)
    }

    fn tool(config: HttpToolConfig) -> HttpTool {
        HttpTool::new(config).unwrap()
    }

    fn refused(err: Error) -> String {
        let (name, class, message) = tool_error(err);
        assert_eq!((name.as_str(), class), ("http", ErrorClass::BadRequest));
        message
    }

    #[tokio::test]
    async fn allowed_host_works_and_json_is_parsed() {
        let (port, hits) = server().await;
        let http = tool(HttpToolConfig::new(["127.0.0.1"]));
        let result = http
            .call(
                json!({"url": format!("http://127.0.0.1:{port}/json")}),
                &context("c", "k"),
            )
            .await
            .unwrap();
        assert_eq!(result["status"], 200);
        assert_eq!(result["body"], json!({"ok": true, "items": [1, 2]}));
        assert_eq!(result["headers"]["content-type"], "application/json");
        assert_eq!(hits.json.load(Ordering::SeqCst), 1);

        let result = http
            .call(
                json!({"method": "POST", "url": format!("http://127.0.0.1:{port}/echo"),
                       "headers": {"X-Token": "t1"}, "body": {"a": 1}}),
                &context("c", "k"),
            )
            .await
            .unwrap();
        assert_eq!(result["body"], "POST t1 application/json {\"a\":1}");

        let result = http
            .call(
                json!({"method": "put", "url": format!("http://127.0.0.1:{port}/echo"), "body": "raw text"}),
                &context("c", "k"),
            )
            .await
            .unwrap();
        assert_eq!(
            result["body"], "PUT   raw text",
            "a string body is sent as is"
        );

        let result = http
            .call(
                json!({"url": format!("http://127.0.0.1:{port}/missing")}),
                &context("c", "k"),
            )
            .await
            .unwrap();
        assert_eq!(
            (result["status"].clone(), result["body"].clone()),
            (json!(404), json!("nope"))
        );
    }

    #[tokio::test]
    async fn other_hosts_and_schemes_are_refused_before_any_request() {
        let (port, hits) = server().await;
        let http = tool(HttpToolConfig::new(["127.0.0.1"]));
        // `localhost` reaches the same server, but it is not on the list.
        let err = http
            .call(
                json!({"url": format!("http://localhost:{port}/json")}),
                &context("c", "k"),
            )
            .await
            .unwrap_err();
        assert_eq!(
            refused(err),
            format!("host `localhost:{port}` refused: not in the allow-list")
        );
        for url in ["file:///etc/passwd", "ftp://127.0.0.1/x"] {
            let err = http
                .call(json!({"url": url}), &context("c", "k"))
                .await
                .unwrap_err();
            assert_eq!(
                refused(err),
                format!("`{url}` refused: only http and https URLs are allowed")
            );
        }
        let err = http
            .call(
                json!({"url": format!("http://127.0.0.1:{port}/json"), "method": "TRACE"}),
                &context("c", "k"),
            )
            .await
            .unwrap_err();
        assert_eq!(
            refused(err),
            "method `TRACE` is not one of GET, POST, PUT, PATCH, DELETE, HEAD"
        );
        let err = http
            .call(json!({"method": "GET"}), &context("c", "k"))
            .await
            .unwrap_err();
        assert_eq!(refused(err), "`url` is required");
        assert_eq!(hits.json.load(Ordering::SeqCst), 0);

        // A port on the list restricts the port.
        let pinned = tool(HttpToolConfig::new([format!(
            "127.0.0.1:{}",
            port.wrapping_add(1)
        )]));
        let err = pinned
            .call(
                json!({"url": format!("http://127.0.0.1:{port}/json")}),
                &context("c", "k"),
            )
            .await
            .unwrap_err();
        assert_eq!(
            refused(err),
            format!("host `127.0.0.1:{port}` refused: not in the allow-list")
        );
    }

    #[tokio::test]
    async fn redirects_are_followed_only_to_allowed_hosts() {
        let (port, hits) = server().await;
        let http = tool(HttpToolConfig::new(["127.0.0.1"]));
        let result = http
            .call(
                json!({"url": format!("http://127.0.0.1:{port}/redirect-in")}),
                &context("c", "k"),
            )
            .await
            .unwrap();
        assert_eq!(
            (result["status"].clone(), result["body"]["ok"].clone()),
            (json!(200), json!(true))
        );
        assert_eq!(hits.json.load(Ordering::SeqCst), 1);

        let err = http
            .call(
                json!({"url": format!("http://127.0.0.1:{port}/redirect-out")}),
                &context("c", "k"),
            )
            .await
            .unwrap_err();
        assert_eq!(
            refused(err),
            format!("redirect to host `localhost:{port}` refused: not in the allow-list")
        );
        assert_eq!(
            hits.json.load(Ordering::SeqCst),
            1,
            "the disallowed target was never requested"
        );

        // 303 after a POST continues as a GET without the body.
        let result = http
            .call(
                json!({"method": "POST", "url": format!("http://127.0.0.1:{port}/redirect-post"), "body": {"a": 1}}),
                &context("c", "k"),
            )
            .await
            .unwrap();
        assert_eq!(result["body"], "GET   ");
    }

    #[tokio::test]
    async fn responses_over_the_cap_are_refused() {
        let (port, _) = server().await;
        let http = tool(HttpToolConfig::new(["127.0.0.1"]).max_response_bytes(1_000));
        let err = http
            .call(
                json!({"url": format!("http://127.0.0.1:{port}/big")}),
                &context("c", "k"),
            )
            .await
            .unwrap_err();
        assert_eq!(
            tool_error(err),
            (
                "http".to_owned(),
                ErrorClass::Tool,
                "response of 10000 bytes exceeds the limit of 1000 bytes".to_owned()
            )
        );
        let err = http
            .call(
                json!({"url": format!("http://127.0.0.1:{port}/big-chunked")}),
                &context("c", "k"),
            )
            .await
            .unwrap_err();
        assert_eq!(
            tool_error(err).2,
            "response exceeds the limit of 1000 bytes"
        );

        let roomy = tool(HttpToolConfig::new(["127.0.0.1"]).max_response_bytes(10_000));
        let result = roomy
            .call(
                json!({"url": format!("http://127.0.0.1:{port}/big")}),
                &context("c", "k"),
            )
            .await
            .unwrap();
        assert_eq!(result["body"].as_str().map(str::len), Some(10_000));
    }

    #[tokio::test]
    async fn a_slow_server_hits_the_timeout() {
        let (port, _) = server().await;
        let http = tool(HttpToolConfig::new(["127.0.0.1"]).timeout(Duration::from_millis(400)));
        let started = Instant::now();
        let err = http
            .call(
                json!({"url": format!("http://127.0.0.1:{port}/slow")}),
                &context("c", "k"),
            )
            .await
            .unwrap_err();
        assert_eq!(
            tool_error(err),
            (
                "http".to_owned(),
                ErrorClass::Timeout,
                "no complete response within 400 ms".to_owned()
            )
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_cancelled_request_stops_at_once() {
        let (port, _) = server().await;
        let http = tool(HttpToolConfig::new(["127.0.0.1"]));
        let ctx = context("c", "k");
        let cancel = ctx.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            cancel.cancel();
        });
        let started = Instant::now();
        let err = http
            .call(
                json!({"url": format!("http://127.0.0.1:{port}/slow")}),
                &ctx,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Cancelled { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    fn spec(config: Value) -> NodeSpec {
        let Value::Object(map) = config else {
            panic!("config must be an object")
        };
        NodeSpec::new("fetch", "http", map)
    }

    #[tokio::test]
    async fn the_http_node_stores_status_headers_and_body() {
        let (port, _) = server().await;
        let node = HttpNodeFactory
            .build(&spec(json!({
                "method": "POST",
                "url": format!("http://127.0.0.1:{port}/echo"),
                "headers": {"X-Token": "n1"},
                "body": {"q": "hi"},
                "allowed_hosts": ["127.0.0.1"],
                "output_variable": "reply"
            })))
            .unwrap();
        let ctx = NodeContext::new(
            "ex1",
            spec(json!({})),
            RunState::new(json!({}), Vec::new()),
            Arc::new(Services::default()),
        );
        let out = node.run(ctx).await.unwrap();
        assert_eq!(out.output["status"], 200);
        assert_eq!(
            out.output["body"],
            "POST n1 application/json {\"q\":\"hi\"}"
        );
        assert_eq!(
            out.delta.variables,
            vec![(
                "reply".to_owned(),
                VariableOp::Set(out.output.value().clone())
            )]
        );
    }

    #[tokio::test]
    async fn the_http_node_fails_with_its_own_id_when_refused() {
        let (port, _) = server().await;
        let node = HttpNode::from_spec(&spec(json!({
            "url": format!("http://localhost:{port}/json"),
            "allowed_hosts": ["127.0.0.1"]
        })))
        .unwrap();
        let ctx = NodeContext::new(
            "ex1",
            spec(json!({})),
            RunState::default(),
            Arc::new(Services::default()),
        );
        let err = node.run(ctx).await.unwrap_err();
        match err {
            Error::Node {
                node_id,
                class,
                message,
            } => {
                assert_eq!(node_id, "fetch");
                assert_eq!(class, ErrorClass::BadRequest);
                assert_eq!(
                    message,
                    format!("host `localhost:{port}` refused: not in the allow-list")
                );
            }
            other => panic!("expected a node error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_http_node_renders_its_url_template() {
        let (port, _) = server().await;
        let node = HttpNode::from_spec(&spec(json!({
            "url": format!("http://127.0.0.1:{port}/{{{{ variables.path }}}}"),
            "allowed_hosts": ["127.0.0.1"]
        })))
        .unwrap();
        let ctx = NodeContext::new(
            "ex1",
            spec(json!({})),
            RunState::new(json!({"variables": {"path": "json"}}), Vec::new()),
            Arc::new(Services::default()),
        );
        let out = node.run(ctx).await.unwrap();
        assert_eq!(out.output["body"], json!({"ok": true, "items": [1, 2]}));
    }

    #[test]
    fn http_node_config_is_checked() {
        let cases = [
            (
                json!({"allowed_hosts": ["a.com"]}),
                "node `fetch`: `url` is required",
            ),
            (
                json!({"url": "http://a.com/"}),
                "node `fetch`: `allowed_hosts` is required and must name at least one host",
            ),
            (
                json!({"url": "http://a.com/", "allowed_hosts": []}),
                "node `fetch`: `allowed_hosts` is required and must name at least one host",
            ),
            (
                json!({"url": "http://a.com/", "allowed_hosts": [1]}),
                "node `fetch`: `allowed_hosts` must be an array of strings",
            ),
            (
                json!({"url": "http://a.com/", "allowed_hosts": ["http://a.com"]}),
                "node `fetch`: allowed_hosts[0] `http://a.com`: expected a host name with an optional port, not a URL",
            ),
            (
                json!({"url": "http://a.com/", "allowed_hosts": ["a.com"], "method": "TRACE"}),
                "node `fetch`: `method` must be one of GET, POST, PUT, PATCH, DELETE, HEAD",
            ),
            (
                json!({"url": "http://a.com/", "allowed_hosts": ["a.com"], "max_response_bytes": 0}),
                "node `fetch`: `max_response_bytes` must be an integer from 1 to 100000000",
            ),
            (
                json!({"url": "http://a.com/", "allowed_hosts": ["a.com"], "timeout_ms": 0}),
                "node `fetch`: `timeout_ms` must be an integer from 1 to 3600000",
            ),
            (
                json!({"url": "http://a.com/", "allowed_hosts": ["a.com"], "headers": {"a": 1}}),
                "node `fetch`: `headers` `a` must be a string",
            ),
        ];
        for (config, expected) in cases {
            let err = HttpNode::from_spec(&spec(config.clone())).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("configuration error: {expected}"),
                "{config}"
            );
        }
        // Methods are accepted in any case.
        assert!(
            HttpNode::from_spec(&spec(json!({
                "url": "http://a.com/", "allowed_hosts": ["a.com"], "method": "delete"
            })))
            .is_ok()
        );
    }
}
