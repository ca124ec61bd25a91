//! Model providers: `openai` against a fake OpenAI-compatible server on loopback (started by each
//! test; no remote calls), and the `scripted` model.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers outside `#[test]` functions

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatter_core::model::FinishReason;
use chatter_core::providers::ScriptedModel;
use chatter_core::{ChatModel, ChatRequest, Error, ErrorClass, Message, ToolCall, Usage};
use serde_json::json;

/// Collects streamed tokens.
#[derive(Default, Clone)]
struct Tokens(Arc<Mutex<Vec<String>>>);

impl Tokens {
    fn sink(&self) -> impl Fn(&str) + Send + Sync + use<> {
        let tokens = Arc::clone(&self.0);
        move |t: &str| tokens.lock().unwrap().push(t.to_owned())
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

fn user(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![Message::user(text)].into(),
        ..ChatRequest::default()
    }
}

fn model_error(err: Error) -> (String, ErrorClass, String, Option<u64>) {
    match err {
        Error::Model {
            model,
            class,
            message,
            retry_after_ms,
        } => (model, class, message, retry_after_ms),
        other => panic!("expected a model error, got {other:?}"),
    }
}

#[cfg(feature = "openai")]
mod openai {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use chatter_core::model::ToolChoice;
    use chatter_core::providers::openai::ModelPrice;
    use chatter_core::providers::{OpenAiConfig, OpenAiModel};
    use chatter_core::{Role, ToolSpec};
    use futures::StreamExt;
    use serde_json::Value;

    /// What the fake server saw.
    #[derive(Default)]
    struct Seen {
        bodies: Vec<Value>,
        headers: Vec<HeaderMap>,
    }

    type Shared = Arc<Mutex<Seen>>;

    fn sse(parts: Vec<String>) -> Response {
        let stream = futures::stream::iter(parts).then(|part| async move {
            // Separate writes, so the client really sees the chunks one by one.
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, std::convert::Infallible>(part)
        });
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from_stream(stream))
            .unwrap()
    }

    fn chunk(delta: Value, finish: Option<&str>) -> String {
        let c = json!({"id": "c1", "object": "chat.completion.chunk", "model": "fake-1",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    }

    async fn completions(State(seen): State<Shared>, headers: HeaderMap, body: String) -> Response {
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        {
            let mut s = seen.lock().unwrap();
            s.bodies.push(body.clone());
            s.headers.push(headers);
        }
        let model = body["model"].as_str().unwrap_or("").to_owned();
        match model.as_str() {
            "plain" => (
                [(header::CONTENT_TYPE, "application/json")],
                json!({
                    "id": "x", "object": "chat.completion", "model": "plain-2024",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "Hello there."}}],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
                })
                .to_string(),
            )
                .into_response(),
            "tools" => axum::Json(json!({
                "model": "tools",
                "choices": [{"index": 0, "finish_reason": "tool_calls",
                             "message": {"role": "assistant", "content": null, "tool_calls": [
                                 {"id": "call_a", "type": "function",
                                  "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 8}
            }))
            .into_response(),
            "stream" => sse(vec![
                chunk(json!({"role": "assistant", "content": ""}), None),
                chunk(json!({"content": "Hel"}), None),
                // One event split over two network writes.
                chunk(json!({"content": "lo"}), None)[..20].to_owned(),
                chunk(json!({"content": "lo"}), None)[20..].to_owned(),
                ": keep-alive comment\n\n".to_owned(),
                chunk(json!({"content": " world"}), None),
                chunk(json!({}), Some("stop")),
                format!(
                    "data: {}\n\n",
                    json!({"model": "fake-1", "choices": [],
                           "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}})
                ),
                "data: [DONE]\n\n".to_owned(),
            ]),
            "stream-tools" => sse(vec![
                chunk(json!({"role": "assistant", "content": null, "tool_calls": [
                    {"index": 0, "id": "call_w", "type": "function",
                     "function": {"name": "get_weather", "arguments": ""}}]}), None),
                chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]}), None),
                chunk(json!({"tool_calls": [
                    {"index": 1, "id": "call_t", "type": "function",
                     "function": {"name": "get_time", "arguments": "{\"tz\":"}}]}), None),
                chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "ty\":\"Oslo\"}"}}]}), None),
                chunk(json!({"tool_calls": [{"index": 1, "function": {"arguments": "\"CET\"}"}}]}), None),
                chunk(json!({}), Some("tool_calls")),
                format!("data: {}\n\n", json!({"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 11}})),
                "data: [DONE]\n\n".to_owned(),
            ]),
            "stream-stall" => {
                let stream = futures::stream::iter(vec![chunk(json!({"content": "partial"}), None)])
                    .map(Ok::<_, std::convert::Infallible>)
                    .chain(futures::stream::pending());
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .body(Body::from_stream(stream))
                    .unwrap()
            }
            "stream-truncated" => sse(vec![chunk(json!({"content": "cut"}), None)]),
            "stream-malformed" => sse(vec![
                chunk(json!({"content": "ok"}), None),
                "data: {not json\n\n".to_owned(),
            ]),
            "rate-limited" => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "2")],
                axum::Json(json!({"error": {"message": "Rate limit reached for requests", "type": "requests"}})),
            )
                .into_response(),
            "server-error" => (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
            "unauthorized" => (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": {"message": "Incorrect API key provided"}})),
            )
                .into_response(),
            "forbidden" => (StatusCode::FORBIDDEN, "no").into_response(),
            "bad-request" => (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": {"message": "Unknown parameter: 'foo'"}})),
            )
                .into_response(),
            "hang" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "too late".into_response()
            }
            "malformed" => (
                [(header::CONTENT_TYPE, "application/json")],
                "{\"choices\": [",
            )
                .into_response(),
            "no-choices" => axum::Json(json!({"object": "chat.completion"})).into_response(),
            "bad-arguments" => axum::Json(json!({
                "choices": [{"message": {"role": "assistant", "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]},
                    "finish_reason": "tool_calls"}]
            }))
            .into_response(),
            other => (StatusCode::NOT_FOUND, format!("unknown model {other}")).into_response(),
        }
    }

    /// Starts the fake server on a free loopback port; returns its `/v1` base URL.
    async fn fake_server() -> (String, Shared) {
        let seen: Shared = Arc::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (format!("http://{addr}/v1"), seen)
    }

    fn model(base: &str) -> OpenAiModel {
        OpenAiModel::new(
            OpenAiConfig::default()
                .base_url(base)
                .api_key("sk-test-key")
                .request_timeout(Duration::from_secs(5)),
        )
        .unwrap()
    }

    fn named(model: &str) -> ChatRequest {
        ChatRequest {
            model: Some(model.to_owned()),
            ..user("hi")
        }
    }

    #[tokio::test]
    async fn non_streaming_reply_usage_and_request_shape() {
        let (base, seen) = fake_server().await;
        let m = OpenAiModel::new(
            OpenAiConfig::default()
                .base_url(format!("{base}/"))
                .api_key("sk-test-key")
                .header("X-Gateway", "g1")
                .price(
                    "plain",
                    ModelPrice {
                        prompt_per_million: 1_000_000.0,
                        completion_per_million: 2_000_000.0,
                    },
                ),
        )
        .unwrap();
        assert_eq!(m.endpoint(), format!("{base}/chat/completions"));
        let request = ChatRequest {
            model: Some("plain".into()),
            messages: vec![
                Message::system("Be brief."),
                Message::user("weather?"),
                Message {
                    tool_calls: vec![ToolCall {
                        id: "call_1".into(),
                        name: "get_weather".into(),
                        arguments: json!({"city": "Oslo"}),
                    }],
                    ..Message::assistant("")
                },
                Message::tool_result("call_1", "get_weather", "{\"temp\":3}"),
            ]
            .into(),
            temperature: Some(0.2),
            max_tokens: Some(50),
            top_p: None,
            stop: vec!["END".into()],
            tools: vec![ToolSpec {
                name: "get_weather".into(),
                description: "Weather".into(),
                parameters: json!({"type": "object"}),
            }]
            .into(),
            tool_choice: Some(ToolChoice::Auto),
            json_mode: true,
            idempotency_key: Some("ex:llm:0:1".into()),
        };
        let reply = m.chat(request).await.unwrap();
        assert_eq!(reply.message.role, Role::Assistant);
        assert_eq!(reply.message.content, "Hello there.");
        assert!(reply.message.tool_calls.is_empty());
        assert_eq!(reply.finish_reason, FinishReason::Stop);
        assert_eq!(reply.model, "plain-2024");
        assert_eq!(
            reply.usage,
            Usage {
                prompt_tokens: 12,
                completion_tokens: 3,
                total_tokens: 15,
                cost: 18.0
            }
        );

        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.bodies[0],
            json!({
                "model": "plain",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                    {"role": "tool", "content": "{\"temp\":3}", "tool_call_id": "call_1"}
                ],
                "temperature": 0.2,
                "max_tokens": 50,
                "stop": ["END"],
                "tools": [{"type": "function", "function": {
                    "name": "get_weather", "description": "Weather", "parameters": {"type": "object"}}}],
                "tool_choice": "auto",
                "response_format": {"type": "json_object"}
            })
        );
        let headers = &seen.headers[0];
        assert_eq!(headers["authorization"], "Bearer sk-test-key");
        assert_eq!(headers["x-gateway"], "g1");
        assert_eq!(headers["idempotency-key"], "ex:llm:0:1");
    }

    #[tokio::test]
    async fn default_model_and_no_key_means_no_authorization_header() {
        let (base, seen) = fake_server().await;
        let m = OpenAiModel::new(
            OpenAiConfig::default()
                .base_url(&base)
                .api_key_env("CHATTER_TEST_SURELY_UNSET_KEY_VAR")
                .default_model("plain"),
        )
        .unwrap();
        let reply = m.chat(user("hi")).await.unwrap();
        assert_eq!(reply.message.content, "Hello there.");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.bodies[0]["model"], "plain");
        assert!(!seen.headers[0].contains_key("authorization"));
    }

    #[tokio::test]
    async fn no_model_anywhere_is_a_config_error() {
        let m =
            OpenAiModel::new(OpenAiConfig::default().base_url("http://127.0.0.1:9/v1")).unwrap();
        let err = m.chat(user("hi")).await.unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "configuration error: provider `openai`: the request names no model and no default model is configured"
        );
    }

    #[tokio::test]
    async fn bad_base_url_is_a_config_error() {
        let err =
            OpenAiModel::new(OpenAiConfig::default().base_url("ftp://example.com/v1")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration error: invalid base URL `ftp://example.com/v1`: the scheme must be http or https"
        );
    }

    #[tokio::test]
    async fn non_streaming_tool_calls() {
        let (base, _) = fake_server().await;
        let reply = model(&base).chat(named("tools")).await.unwrap();
        assert_eq!(reply.message.content, "");
        assert_eq!(
            reply.message.tool_calls,
            vec![ToolCall {
                id: "call_a".into(),
                name: "get_weather".into(),
                arguments: json!({"city": "Oslo"})
            }]
        );
        assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
        assert_eq!(reply.usage.total_tokens, 28, "total computed when absent");
    }

    #[tokio::test]
    async fn streaming_tokens_arrive_in_order_with_usage() {
        let (base, seen) = fake_server().await;
        let tokens = Tokens::default();
        let sink = tokens.sink();
        let reply = model(&base)
            .chat_stream(named("stream"), &sink)
            .await
            .unwrap();
        assert_eq!(tokens.all(), vec!["Hel", "lo", " world"]);
        assert_eq!(reply.message.content, "Hello world");
        assert_eq!(reply.finish_reason, FinishReason::Stop);
        assert_eq!(reply.model, "fake-1");
        assert_eq!(
            (
                reply.usage.prompt_tokens,
                reply.usage.completion_tokens,
                reply.usage.total_tokens
            ),
            (9, 3, 12)
        );
        let body = &seen.lock().unwrap().bodies[0];
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
    }

    #[tokio::test]
    async fn a_whole_json_reply_to_a_streaming_request_is_accepted() {
        let (base, _) = fake_server().await;
        let tokens = Tokens::default();
        let sink = tokens.sink();
        let reply = model(&base)
            .chat_stream(named("plain"), &sink)
            .await
            .unwrap();
        assert_eq!(tokens.all(), vec!["Hello there."]);
        assert_eq!(reply.message.content, "Hello there.");
        assert_eq!(reply.usage.total_tokens, 15);
    }

    #[tokio::test]
    async fn max_completion_tokens_can_replace_max_tokens() {
        let (base, seen) = fake_server().await;
        let m = OpenAiModel::new(
            OpenAiConfig::default()
                .base_url(&base)
                .max_completion_tokens(true),
        )
        .unwrap();
        let request = ChatRequest {
            max_tokens: Some(64),
            ..named("plain")
        };
        m.chat(request).await.unwrap();
        let body = &seen.lock().unwrap().bodies[0];
        assert_eq!(body["max_completion_tokens"], 64);
        assert!(body.get("max_tokens").is_none());
    }

    #[tokio::test]
    async fn streamed_tool_call_fragments_are_assembled_by_index() {
        let (base, _) = fake_server().await;
        let tokens = Tokens::default();
        let sink = tokens.sink();
        let reply = model(&base)
            .chat_stream(named("stream-tools"), &sink)
            .await
            .unwrap();
        assert!(tokens.all().is_empty());
        assert_eq!(
            reply.message.tool_calls,
            vec![
                ToolCall {
                    id: "call_w".into(),
                    name: "get_weather".into(),
                    arguments: json!({"city": "Oslo"})
                },
                ToolCall {
                    id: "call_t".into(),
                    name: "get_time".into(),
                    arguments: json!({"tz": "CET"})
                },
            ]
        );
        assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
        assert_eq!(reply.usage.total_tokens, 41);
    }

    #[tokio::test]
    async fn rate_limit_carries_retry_after() {
        let (base, _) = fake_server().await;
        for stream in [false, true] {
            let m = model(&base);
            let err = if stream {
                m.chat_stream(named("rate-limited"), &|_: &str| {}).await
            } else {
                m.chat(named("rate-limited")).await
            }
            .unwrap_err();
            let (name, class, message, retry) = model_error(err);
            assert_eq!(name, "openai/rate-limited");
            assert_eq!(class, ErrorClass::RateLimit);
            assert_eq!(
                message,
                "HTTP 429 Too Many Requests: Rate limit reached for requests"
            );
            assert_eq!(retry, Some(2000));
        }
    }

    #[tokio::test]
    async fn http_errors_are_classified() {
        let (base, _) = fake_server().await;
        let m = model(&base);
        let cases = [
            (
                "server-error",
                ErrorClass::Server,
                "HTTP 500 Internal Server Error: upstream exploded",
            ),
            (
                "unauthorized",
                ErrorClass::Auth,
                "HTTP 401 Unauthorized: Incorrect API key provided",
            ),
            ("forbidden", ErrorClass::Auth, "HTTP 403 Forbidden: no"),
            (
                "bad-request",
                ErrorClass::BadRequest,
                "HTTP 400 Bad Request: Unknown parameter: 'foo'",
            ),
        ];
        for (name, class, text) in cases {
            let (_, got_class, message, retry) =
                model_error(m.chat(named(name)).await.unwrap_err());
            assert_eq!(
                (got_class, message.as_str(), retry),
                (class, text, None),
                "{name}"
            );
            assert_eq!(
                Error::Model {
                    model: String::new(),
                    class,
                    message: String::new(),
                    retry_after_ms: None
                }
                .class(),
                Some(class)
            );
        }
    }

    #[tokio::test]
    async fn errors_never_contain_the_api_key() {
        let (base, _) = fake_server().await;
        let err = model(&base).chat(named("unauthorized")).await.unwrap_err();
        assert!(!format!("{err} {err:?}").contains("sk-test-key"));
    }

    #[tokio::test]
    async fn a_hanging_server_hits_the_timeout() {
        let (base, _) = fake_server().await;
        let m = OpenAiModel::new(
            OpenAiConfig::default()
                .base_url(&base)
                .request_timeout(Duration::from_millis(600)),
        )
        .unwrap();
        let started = Instant::now();
        let (_, class, message, _) = model_error(m.chat(named("hang")).await.unwrap_err());
        assert_eq!(class, ErrorClass::Timeout);
        assert_eq!(message, "no complete response within 600 ms");
        assert!(started.elapsed() < Duration::from_secs(3));

        let started = Instant::now();
        let (_, class, message, _) = model_error(
            m.chat_stream(named("hang"), &|_: &str| {})
                .await
                .unwrap_err(),
        );
        assert_eq!(
            (class, message.as_str()),
            (ErrorClass::Timeout, "no response within 600 ms")
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_stalled_stream_hits_the_timeout_after_partial_tokens() {
        let (base, _) = fake_server().await;
        let m = OpenAiModel::new(
            OpenAiConfig::default()
                .base_url(&base)
                .request_timeout(Duration::from_millis(600)),
        )
        .unwrap();
        let tokens = Tokens::default();
        let sink = tokens.sink();
        let (_, class, message, _) = model_error(
            m.chat_stream(named("stream-stall"), &sink)
                .await
                .unwrap_err(),
        );
        assert_eq!(class, ErrorClass::Timeout);
        assert_eq!(message, "the stream stalled: no data within 600 ms");
        assert_eq!(tokens.all(), vec!["partial"]);
    }

    #[tokio::test]
    async fn malformed_bodies_are_model_errors() {
        let (base, _) = fake_server().await;
        let m = model(&base);
        let (_, class, message, _) = model_error(m.chat(named("malformed")).await.unwrap_err());
        assert_eq!(class, ErrorClass::Model);
        assert!(
            message.starts_with("malformed response body: EOF while parsing"),
            "{message}"
        );

        let (_, class, message, _) = model_error(m.chat(named("no-choices")).await.unwrap_err());
        assert_eq!(
            (class, message.as_str()),
            (
                ErrorClass::Model,
                "malformed response body: no `choices[0]`"
            )
        );

        let (_, class, message, _) = model_error(m.chat(named("bad-arguments")).await.unwrap_err());
        assert_eq!(class, ErrorClass::Model);
        assert!(
            message.starts_with("malformed response body: `tool_calls[0]` arguments: not JSON"),
            "{message}"
        );

        let (_, class, message, _) = model_error(
            m.chat_stream(named("stream-malformed"), &|_: &str| {})
                .await
                .unwrap_err(),
        );
        assert_eq!(class, ErrorClass::Model);
        assert!(message.starts_with("malformed stream chunk"), "{message}");
        assert!(message.ends_with("{not json"), "{message}");
    }

    #[tokio::test]
    async fn a_stream_cut_short_is_a_connection_error() {
        let (base, _) = fake_server().await;
        let (_, class, message, _) = model_error(
            model(&base)
                .chat_stream(named("stream-truncated"), &|_: &str| {})
                .await
                .unwrap_err(),
        );
        assert_eq!(class, ErrorClass::Connection);
        assert_eq!(message, "the stream ended before the model finished");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connection_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let m = model(&format!("http://{addr}/v1"));
        let (_, class, _, _) = model_error(m.chat(named("plain")).await.unwrap_err());
        assert_eq!(class, ErrorClass::Connection);
    }
}

// ---------------------------------------------------------------------------------------------
// The scripted model.

fn script() -> ScriptedModel {
    ScriptedModel::from_value(json!({
        "rules": [
            {"match": {"tool_result_for": "get_weather"},
             "reply": {"content": "It is 21 degrees in Oslo."}},
            {"match": {"role": "user", "contains": "weather"},
             "reply": {"tool_calls": [
                 {"name": "get_weather", "arguments": {"city": "Oslo"}},
                 {"name": "get_time"}]},
             "usage": {"prompt_tokens": 50, "completion_tokens": 7, "cost": 0.25}},
            {"match": {"regex": "^order #\\d+$"}, "reply": {"content": "Order found."}, "times": 1},
            {"match": {"contains": "fail"},
             "reply": {"error": {"class": "rate_limit", "message": "slow down", "retry_after_ms": 10}}},
            {"match": {"model": "judge"}, "reply": {"content": "PASS"}}
        ],
        "default": {"content": "Hello world!"},
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        "chunk_size": 4
    }))
    .unwrap()
}

#[tokio::test]
async fn scripted_default_reply_streams_in_chunks_with_fixed_usage() {
    let model = script();
    assert_eq!(model.name(), "scripted");
    let tokens = Tokens::default();
    let sink = tokens.sink();
    let reply = model.chat_stream(user("hi"), &sink).await.unwrap();
    assert_eq!(tokens.all(), vec!["Hell", "o wo", "rld!"]);
    assert_eq!(reply.message.content, "Hello world!");
    assert_eq!(reply.finish_reason, FinishReason::Stop);
    assert_eq!(reply.model, "scripted");
    assert_eq!(
        reply.usage,
        Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
            cost: 0.0
        }
    );
}

#[tokio::test]
async fn scripted_rules_match_in_order_on_the_last_message() {
    let model = script();
    // `contains` on a user message → tool calls with deterministic ids, rule usage.
    let reply = model.chat(user("what's the weather?")).await.unwrap();
    assert_eq!(reply.message.content, "");
    assert_eq!(
        reply.message.tool_calls,
        vec![
            ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: json!({"city": "Oslo"})
            },
            ToolCall {
                id: "call_2".into(),
                name: "get_time".into(),
                arguments: json!({})
            },
        ]
    );
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
    assert_eq!(reply.usage.total_tokens, 57);
    assert_eq!(reply.usage.cost, 0.25);

    // The tool result of get_weather → the first rule (even though "weather" is in earlier text).
    let mut messages = vec![Message::user("what's the weather?"), reply.message.clone()];
    messages.push(Message::tool_result(
        "call_1",
        "get_weather",
        "{\"temp\":21}",
    ));
    let request = ChatRequest {
        messages: messages.clone().into(),
        ..ChatRequest::default()
    };
    let answer = model.chat(request).await.unwrap();
    assert_eq!(answer.message.content, "It is 21 degrees in Oslo.");

    // A tool result without a name is matched through its call id.
    let mut anonymous = Message::tool_result("call_1", "x", "{}");
    anonymous.name = None;
    messages.pop();
    messages.push(anonymous);
    let answer = model
        .chat(ChatRequest {
            messages: messages.clone().into(),
            ..ChatRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(answer.message.content, "It is 21 degrees in Oslo.");

    // `role` must match too: the same text from the assistant falls through to the default.
    let request = ChatRequest {
        messages: vec![Message::assistant("weather")].into(),
        ..ChatRequest::default()
    };
    assert_eq!(
        model.chat(request).await.unwrap().message.content,
        "Hello world!"
    );

    // `contains` is case-sensitive.
    assert_eq!(
        model.chat(user("WEATHER")).await.unwrap().message.content,
        "Hello world!"
    );

    // `model` matches the request's model.
    let judge = ChatRequest {
        model: Some("judge".into()),
        ..user("grade this")
    };
    let reply = model.chat(judge).await.unwrap();
    assert_eq!(
        (reply.message.content.as_str(), reply.model.as_str()),
        ("PASS", "judge")
    );

    assert_eq!(model.call_count(), 6);
    assert_eq!(
        model.requests()[0].messages[0].content,
        "what's the weather?"
    );
}

#[tokio::test]
async fn scripted_tool_call_ids_continue_the_conversation() {
    let model = script();
    let earlier = Message {
        tool_calls: vec![
            ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: json!({}),
            },
            ToolCall {
                id: "call_2".into(),
                name: "get_time".into(),
                arguments: json!({}),
            },
        ],
        ..Message::assistant("")
    };
    let request = ChatRequest {
        messages: vec![earlier, Message::user("and the weather tomorrow?")].into(),
        ..ChatRequest::default()
    };
    let reply = model.chat(request).await.unwrap();
    let ids: Vec<&str> = reply
        .message
        .tool_calls
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(ids, vec!["call_3", "call_4"]);
}

#[tokio::test]
async fn scripted_rule_times_limits_its_use() {
    let model = script();
    assert_eq!(
        model.chat(user("order #42")).await.unwrap().message.content,
        "Order found."
    );
    assert_eq!(
        model.chat(user("order #42")).await.unwrap().message.content,
        "Hello world!"
    );
    // The regex must match: a suffix breaks `$`.
    assert_eq!(
        model
            .chat(user("order #42!"))
            .await
            .unwrap()
            .message
            .content,
        "Hello world!"
    );
}

#[tokio::test]
async fn scripted_error_replies_are_classified_model_errors() {
    let model = script();
    let (name, class, message, retry) =
        model_error(model.chat(user("please fail")).await.unwrap_err());
    assert_eq!(
        (name.as_str(), class, message.as_str(), retry),
        ("scripted", ErrorClass::RateLimit, "slow down", Some(10))
    );
}

#[tokio::test]
async fn scripted_without_match_or_default_fails_clearly() {
    let model = ScriptedModel::from_value(json!({"rules": [
        {"match": {"contains": "x"}, "reply": {"content": "y"}}]}))
    .unwrap();
    let (_, class, message, _) = model_error(model.chat(user("hello")).await.unwrap_err());
    assert_eq!(class, ErrorClass::Model);
    assert_eq!(
        message,
        "no rule matches the last message (user message \"hello\") and the script has no default"
    );
}

#[tokio::test]
async fn scripted_content_then_error_streams_then_fails() {
    let model = ScriptedModel::from_value(json!({
        "default": {"content": "partial answer", "error": {"class": "connection"}},
        "chunk_size": 7
    }))
    .unwrap();
    let tokens = Tokens::default();
    let sink = tokens.sink();
    let (_, class, message, _) =
        model_error(model.chat_stream(user("q"), &sink).await.unwrap_err());
    assert_eq!(tokens.all(), vec!["partial", " answer"]);
    assert_eq!(
        (class, message.as_str()),
        (ErrorClass::Connection, "scripted connection error")
    );
}

#[tokio::test]
async fn scripted_hang_never_answers_and_delay_waits() {
    let model = ScriptedModel::from_value(json!({
        "rules": [{"match": {"contains": "hang"}, "reply": {"content": "first ", "hang": true}}],
        "default": {"content": "abcdef"},
        "chunk_size": 2,
        "delay_ms": 30
    }))
    .unwrap();
    let tokens = Tokens::default();
    let sink = tokens.sink();
    let outcome = tokio::time::timeout(
        Duration::from_millis(600),
        model.chat_stream(user("hang"), &sink),
    )
    .await;
    assert!(outcome.is_err(), "a hanging reply must not complete");
    assert_eq!(tokens.all(), vec!["fi", "rs", "t "]);

    let started = Instant::now();
    let reply = model.chat_stream(user("go"), &|_: &str| {}).await.unwrap();
    assert_eq!(reply.message.content, "abcdef");
    assert!(
        started.elapsed() >= Duration::from_millis(90),
        "3 chunks x 30 ms"
    );
}

#[test]
fn scripted_from_file_and_bad_files() {
    let dir = std::env::temp_dir().join(format!("chatter-scripted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.json");
    std::fs::write(&good, r#"{"default": {"content": "hi"}}"#).unwrap();
    assert!(ScriptedModel::from_file(&good).is_ok());

    let missing = dir.join("missing.json");
    let err = ScriptedModel::from_file(&missing).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");

    let cases = [
        (
            "syntax.json",
            "{\"rules\": [",
            "at $: invalid JSON at line 1, column 11",
        ),
        (
            "regex.json",
            r#"{"rules": [{"match": {"regex": "a("}, "reply": {}}]}"#,
            "at $.rules[0].match.regex: regex parse error",
        ),
        (
            "class.json",
            r#"{"rules": [{"reply": {"error": {"class": "oops"}}}]}"#,
            "at $.rules[0].reply.error.class: unknown variant `oops`",
        ),
        (
            "typo.json",
            r#"{"default": {"contnet": "x"}}"#,
            "at $.default.contnet: unknown field `contnet`",
        ),
        (
            "chunk.json",
            r#"{"chunk_size": 0}"#,
            "at $.chunk_size: must be at least 1",
        ),
        (
            "args.json",
            r#"{"default": {"tool_calls": [{"name": "f", "arguments": [1]}]}}"#,
            "at $.default.tool_calls[0].arguments: must be a JSON object",
        ),
        (
            "type.json",
            r#"{"rules": {}}"#,
            "at $.rules: invalid type: map, expected a sequence",
        ),
        (
            "times.json",
            r#"{"rules": [{"reply": {}, "times": 0}]}"#,
            "at $.rules[0].times: must be at least 1",
        ),
        ("array.json", r#"[]"#, "at $: expected a JSON object"),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let err = ScriptedModel::from_file(&path).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{name}: {err:?}");
        let message = err.to_string();
        let prefix = format!(
            "configuration error: scripted model file {}: {expected}",
            path.display()
        );
        assert!(message.starts_with(&prefix), "{name}: {message}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn providers_from_spec() {
    let dir = std::env::temp_dir().join(format!("chatter-spec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("m.json");
    std::fs::write(&file, r#"{"default": {"content": "from file"}}"#).unwrap();
    let (name, model) =
        chatter_core::providers::from_spec(&format!("scripted:{}", file.display())).unwrap();
    assert_eq!(name, "scripted");
    assert_eq!(
        model.chat(user("x")).await.unwrap().message.content,
        "from file"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let err = chatter_core::providers::from_spec("scripted")
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "configuration error: model spec `scripted`: expected `scripted:FILE`"
    );
    let err = chatter_core::providers::from_spec("anthropic:claude")
        .err()
        .unwrap();
    assert!(
        err.to_string().starts_with(
            "configuration error: model spec `anthropic:claude`: unknown provider `anthropic`"
        ),
        "{err}"
    );
    #[cfg(feature = "openai")]
    {
        let (name, model) = chatter_core::providers::from_spec("openai:gpt-4o-mini").unwrap();
        assert_eq!((name.as_str(), model.name()), ("openai", "openai"));
    }
}
