//! The OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`) and the global events
//! stream (`/api/v1/events/stream`) over real HTTP: shapes, usage, the streamed chunk sequence
//! ending with `[DONE]`, client tools and their follow-up, errors in OpenAI's shape, completions
//! recorded as executions; the stream's `workflow.*` events, owner scoping and failures. Every
//! case runs on SQLite and Postgres.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use chatter_http::server::ServerConfig;
use serde_json::{Value, json};

use crate::common::{Harness, TestUser};

const W: &str = "/api/v1/workflows";
const REPLY: &str = "Hello from the script, streamed in chunks.";
const WEATHER: &str = "It is 21 °C in Oslo.";

fn openai_config() -> ServerConfig {
    let dir = std::env::temp_dir().join(format!("chatter-http-openai-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("model.json");
    std::fs::write(
        &script,
        json!({
            "rules": [
                {"match": {"contains": "[system] Be brief. [user] My name is Ada. [assistant] Hello Ada. [user] What is my name?"},
                 "reply": {"content": "Your name is Ada."}},
                {"match": {"tool_result_for": "get_weather"}, "reply": {"content": WEATHER}},
                {"match": {"role": "user", "contains": "weather"},
                 "reply": {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}},
                {"match": {"contains": "explode"},
                 "reply": {"error": {"class": "bad_request", "message": "the script refuses"}}}
            ],
            "default": {"content": REPLY},
            "usage": {"prompt_tokens": 12, "completion_tokens": 8},
            "chunk_size": 5
        })
        .to_string(),
    )
    .unwrap();
    let mut config = common::config();
    config.models = vec![format!("scripted:{}", script.display())];
    config.sse_heartbeat = Duration::from_millis(200);
    config
}

macro_rules! openai_cases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { crate::common::run_sqlite_with(crate::openai_config(), super::cases::$case).await; })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { crate::common::run_postgres_with(crate::openai_config(), super::cases::$case).await; })*
        }
    };
}

openai_cases!(
    models_are_the_readable_definitions_and_templates,
    completion_shape_usage_history_and_execution,
    streamed_completion_chunks_end_with_done,
    client_tools_are_passed_through_and_continued,
    errors_have_the_openai_shape,
    global_stream_started_completed_and_scoped,
    global_stream_reports_failures,
    global_stream_resumes_after_last_event_id,
    global_stream_reports_waiting_and_resumed,
);

/// start → llm (`client_tools` as given) → end, flat shape.
fn chat_graph(name: &str, client_tools: bool) -> Value {
    json!({
        "name": name,
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "chat", "type": "llm", "config": {"client_tools": client_tools}},
            {"id": "end", "type": "end"}
        ],
        "edges": [
            {"source": "start", "target": "chat"},
            {"source": "chat", "target": "end"}
        ]
    })
}

async fn create_definition(h: &Harness, user: &TestUser, name: &str, client_tools: bool) -> String {
    let created = h
        .post(
            &format!("{W}/definitions"),
            Some(&user.key),
            &chat_graph(name, client_tools),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    created.body["id"].as_str().unwrap().to_owned()
}

/// Reads a response's SSE blocks (separated by a blank line) until `stop` or the end.
async fn read_blocks(
    response: &mut reqwest::Response,
    mut stop: impl FnMut(&[String]) -> bool,
) -> (Vec<String>, bool) {
    // Heartbeats keep a stream busy: the deadline is for the whole read.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    let mut blocks = Vec::new();
    loop {
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            blocks.push(block.trim_end().to_owned());
            if stop(&blocks) {
                return (blocks, false);
            }
        }
        match tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("nothing more after 60 s; read so far: {blocks:?}"))
            .unwrap()
        {
            Some(chunk) => text.push_str(std::str::from_utf8(&chunk).unwrap()),
            None => {
                assert!(text.trim().is_empty(), "unterminated frame {text:?}");
                return (blocks, true);
            }
        }
    }
}

/// A `/v1/chat/completions` request.
async fn complete(h: &Harness, key: &str, body: &Value) -> common::Answer {
    h.post("/v1/chat/completions", Some(key), body).await
}

/// One frame of the global stream: `(id, event, data)` (`id` empty when it has none); `None`
/// for comments.
fn global_frame(block: &str) -> Option<(String, String, Value)> {
    if block.starts_with(':') {
        return None;
    }
    let (mut id, mut event, mut data) = (None, None, None);
    for line in block.lines() {
        let (key, value) = line.split_once(':').unwrap();
        let value = value.strip_prefix(' ').unwrap_or(value);
        match key {
            "id" => id = Some(value.to_owned()),
            "event" => event = Some(value.to_owned()),
            "data" => data = Some(serde_json::from_str::<Value>(value).unwrap()),
            other => panic!("unexpected SSE field `{other}` in {block:?}"),
        }
    }
    Some((id.unwrap_or_default(), event.unwrap(), data.unwrap()))
}

/// Opens the global stream and waits for its `: connected` comment (subscribed).
async fn open_global(h: &Harness, key: &str) -> reqwest::Response {
    open_global_after(h, key, None).await
}

/// As [`open_global`], resuming after the event `last_event_id`.
async fn open_global_after(
    h: &Harness,
    key: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = h
        .client
        .get(h.url("/api/v1/events/stream"))
        .bearer_auth(key);
    if let Some(last) = last_event_id {
        request = request.header("Last-Event-ID", last);
    }
    let mut response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let (blocks, _) = read_blocks(&mut response, |b| !b.is_empty()).await;
    assert_eq!(blocks, [": connected"]);
    response
}

/// Reads workflow events until one of `execution_id` has type `last`.
async fn global_until(
    response: &mut reqwest::Response,
    execution_id: &str,
    last: &str,
) -> Vec<(String, String, Value)> {
    let (blocks, ended) = read_blocks(response, |blocks| {
        blocks
            .last()
            .and_then(|b| global_frame(b))
            .is_some_and(|(_, event, data)| {
                event == last && data["data"]["execution_id"] == execution_id
            })
    })
    .await;
    assert!(!ended, "the stream ended early: {blocks:?}");
    blocks.iter().filter_map(|b| global_frame(b)).collect()
}

mod cases {
    use super::*;

    pub async fn models_are_the_readable_definitions_and_templates(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let bob = h.user("bob", &["user"]).await;
        let def = create_definition(&h, &alice, "Support bot", false).await;

        let listed = h.get("/v1/models", Some(&alice.key)).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        assert_eq!(listed.body["object"], "list");
        let data = listed.body["data"].as_array().unwrap();
        let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids[0], format!("workflow:{def}"));
        assert!(ids.contains(&"template:universal_chat"), "{ids:?}");
        for model in data {
            assert_eq!(model["object"], "model");
            assert!(model["created"].is_i64(), "{model}");
            assert!(model["owned_by"].is_string(), "{model}");
        }
        assert_eq!(data[0]["owned_by"], alice.id.as_str());
        assert_eq!(data[0]["name"], "Support bot");

        // Bob does not see Alice's private definition, nor reach it by id or name.
        let bobs = h.get("/v1/models", Some(&bob.key)).await;
        assert!(
            !bobs.text.contains(&def),
            "bob sees alice's definition: {}",
            bobs.text
        );
        for id in [format!("workflow:{def}"), "workflow:Support bot".to_owned()] {
            let one = h.get(&format!("/v1/models/{id}"), Some(&bob.key)).await;
            assert_eq!(one.status, 404, "{}", one.text);
            assert_eq!(one.body["error"]["code"], "model_not_found");
        }

        // Get by canonical id, by prefixed name and by bare name.
        for id in [
            format!("workflow:{def}"),
            "workflow:Support bot".to_owned(),
            "Support bot".to_owned(),
            def.clone(),
        ] {
            let one = h.get(&format!("/v1/models/{id}"), Some(&alice.key)).await;
            assert_eq!(one.status, 200, "{id}: {}", one.text);
            assert_eq!(one.body["id"], format!("workflow:{def}"));
            assert_eq!(one.body["object"], "model");
        }
        let template = h
            .get("/v1/models/template:universal_chat", Some(&alice.key))
            .await;
        assert_eq!(template.status, 200, "{}", template.text);
        assert_eq!(template.body["id"], "template:universal_chat");
        assert_eq!(template.body["owned_by"], "system");

        // A name both a definition and a template have is ambiguous when bare.
        create_definition(&h, &alice, "universal_chat", false).await;
        let ambiguous = h.get("/v1/models/universal_chat", Some(&alice.key)).await;
        assert_eq!(ambiguous.status, 400, "{}", ambiguous.text);
        assert_eq!(ambiguous.body["error"]["code"], "ambiguous_model");
        assert_eq!(ambiguous.body["error"]["param"], "model");
    }

    pub async fn completion_shape_usage_history_and_execution(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let def = create_definition(&h, &alice, "Support bot", false).await;
        let answer = complete(
            &h,
            &alice.key,
            &json!({
                "model": format!("workflow:{def}"),
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "My name is Ada."},
                    {"role": "assistant", "content": "Hello Ada."},
                    {"role": "user", "content": [{"type": "text", "text": "What is"},
                                                 {"type": "text", "text": "my name?"}]}
                ]
            }),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let body = &answer.body;
        let execution_id = body["execution_id"].as_str().unwrap().to_owned();
        assert_eq!(body["id"], format!("chatcmpl-{execution_id}"));
        assert_eq!(body["object"], "chat.completion");
        assert!(body["created"].as_i64().unwrap() > 1_700_000_000);
        assert_eq!(body["model"], format!("workflow:{def}"));
        assert_eq!(
            body["choices"],
            json!([{"index": 0, "message": {"role": "assistant", "content": REPLY},
                    "logprobs": null, "finish_reason": "stop"}])
        );
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20})
        );

        // A recorded execution of the definition, visible to its owner; the history reached
        // the workflow's state before the last user message.
        let listed = h.get(&format!("{W}/executions"), Some(&alice.key)).await;
        let execution = listed.body["executions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == execution_id.as_str())
            .unwrap_or_else(|| panic!("execution not listed: {}", listed.text))
            .clone();
        assert_eq!(execution["definition_id"], def.as_str());
        assert_eq!(execution["status"], "completed");
        assert_eq!(execution["tokens_used"], 20);
        assert_eq!(
            execution["input_data"],
            json!({"message": "What is\nmy name?"})
        );

        // The earlier messages are the workflow's chat history: a node rendering them into its
        // prompt sends them to the model (whose script answers only when it sees them).
        let mut graph = chat_graph("Memory bot", false);
        graph["nodes"][1]["config"] = json!({
            "prompt": "{% for m in messages %}[{{ m.role }}] {{ m.content }} {% endfor %}"
        });
        let created = h
            .post(&format!("{W}/definitions"), Some(&alice.key), &graph)
            .await;
        assert_eq!(created.status, 200, "{}", created.text);
        let memory = created.body["id"].as_str().unwrap();
        let remembered = complete(
            &h,
            &alice.key,
            &json!({
                "model": "Memory bot",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "My name is Ada."},
                    {"role": "assistant", "content": "Hello Ada."},
                    {"role": "user", "content": "What is my name?"}
                ]
            }),
        )
        .await;
        assert_eq!(remembered.status, 200, "{}", remembered.text);
        assert_eq!(remembered.body["model"], format!("workflow:{memory}"));
        assert_eq!(
            remembered.body["choices"][0]["message"]["content"],
            "Your name is Ada."
        );

        // A template is a model too; its execution records the template.
        let templated = complete(
            &h,
            &alice.key,
            &json!({"model": "template:universal_chat",
                    "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(templated.status, 200, "{}", templated.text);
        assert_eq!(templated.body["model"], "template:universal_chat");
        let id = templated.body["execution_id"].as_str().unwrap();
        let record = h.store().get_execution(id).await.unwrap().unwrap();
        assert_eq!(record.owner_id, alice.id);
        assert_eq!(record.params["template_id"], "universal_chat");
    }

    pub async fn streamed_completion_chunks_end_with_done(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let def = create_definition(&h, &alice, "Support bot", false).await;
        let mut response = h
            .client
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(&alice.key)
            .header("content-type", "application/json")
            .body(
                json!({
                    "model": format!("workflow:{def}"),
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream": true,
                    "stream_options": {"include_usage": true}
                })
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let (blocks, ended) = read_blocks(&mut response, |_| false).await;
        assert!(ended);
        assert_eq!(blocks.last().unwrap(), "data: [DONE]");
        let chunks: Vec<Value> = blocks[..blocks.len() - 1]
            .iter()
            .map(|b| serde_json::from_str(b.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        let id = chunks[0]["id"].as_str().unwrap();
        assert!(id.starts_with("chatcmpl-"), "{id}");
        for chunk in &chunks {
            assert_eq!(chunk["id"], id);
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["model"], format!("workflow:{def}"));
        }
        // Role first, then the tokens (5 characters each), then the finish, then the usage.
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        let n = chunks.len();
        let tokens: Vec<&str> = chunks[1..n - 2]
            .iter()
            .map(|c| {
                assert_eq!(c["choices"][0]["finish_reason"], Value::Null);
                assert_eq!(c["usage"], Value::Null);
                c["choices"][0]["delta"]["content"].as_str().unwrap()
            })
            .collect();
        assert_eq!(tokens.len(), REPLY.chars().count().div_ceil(5));
        assert_eq!(tokens.concat(), REPLY);
        assert_eq!(
            chunks[n - 2]["choices"],
            json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}])
        );
        assert_eq!(chunks[n - 1]["choices"], json!([]));
        assert_eq!(
            chunks[n - 1]["usage"],
            json!({"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20})
        );
        // Recorded like any execution.
        let execution_id = id.strip_prefix("chatcmpl-").unwrap();
        let record = h
            .store()
            .get_execution(execution_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.response.as_deref(), Some(REPLY));

        // Without `include_usage`: no usage chunk, no `usage` key.
        let plain = complete(
            &h,
            &alice.key,
            &json!({"model": format!("workflow:{def}"), "stream": true,
                    "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(plain.status, 200);
        assert!(plain.text.ends_with("data: [DONE]\n\n"), "{}", plain.text);
        assert!(!plain.text.contains("\"usage\""), "{}", plain.text);
        assert!(
            plain.text.contains("\"finish_reason\":\"stop\""),
            "{}",
            plain.text
        );
    }

    pub async fn client_tools_are_passed_through_and_continued(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let def = create_definition(&h, &alice, "Weather bot", true).await;
        let tools = json!([{"type": "function", "function": {
            "name": "get_weather", "description": "The weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
        let first = complete(
            &h,
            &alice.key,
            &json!({"model": format!("workflow:{def}"), "tools": tools,
                    "messages": [{"role": "user", "content": "What is the weather in Oslo?"}]}),
        )
        .await;
        assert_eq!(first.status, 200, "{}", first.text);
        let choice = &first.body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        let arguments: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"city": "Oslo"}));
        let call_id = calls[0]["id"].as_str().unwrap().to_owned();
        // The tools reached the workflow's input.
        let id = first.body["execution_id"].as_str().unwrap();
        let record = h.store().get_execution(id).await.unwrap().unwrap();
        assert_eq!(record.input["tools"][0]["name"], "get_weather");

        let second = complete(
            &h,
            &alice.key,
            &json!({"model": format!("workflow:{def}"), "tools": tools,
            "messages": [
                {"role": "user", "content": "What is the weather in Oslo?"},
                choice["message"].clone(),
                {"role": "tool", "tool_call_id": call_id, "content": "{\"celsius\": 21}"}
            ]}),
        )
        .await;
        assert_eq!(second.status, 200, "{}", second.text);
        assert_eq!(second.body["choices"][0]["finish_reason"], "stop");
        assert_eq!(second.body["choices"][0]["message"]["content"], WEATHER);

        // Streamed, the tool calls come in a chunk before the finish.
        let streamed = complete(
            &h,
            &alice.key,
            &json!({"model": format!("workflow:{def}"), "tools": tools, "stream": true,
                    "messages": [{"role": "user", "content": "weather in Oslo?"}]}),
        )
        .await;
        assert_eq!(streamed.status, 200);
        let chunks: Vec<Value> = streamed
            .text
            .split("\n\n")
            .filter_map(|b| b.strip_prefix("data: "))
            .filter(|b| *b != "[DONE]")
            .map(|b| serde_json::from_str(b).unwrap())
            .collect();
        let n = chunks.len();
        assert_eq!(
            chunks[n - 2]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "get_weather"
        );
        assert_eq!(
            chunks[n - 2]["choices"][0]["delta"]["tool_calls"][0]["index"],
            0
        );
        assert_eq!(chunks[n - 1]["choices"][0]["finish_reason"], "tool_calls");

        // A workflow whose llm nodes do not take client tools refuses them.
        let plain = create_definition(&h, &alice, "Plain bot", false).await;
        let refused = complete(
            &h,
            &alice.key,
            &json!({"model": format!("workflow:{plain}"), "tools": tools,
                    "messages": [{"role": "user", "content": "weather?"}]}),
        )
        .await;
        assert_eq!(refused.status, 400, "{}", refused.text);
        assert_eq!(refused.body["error"]["param"], "tools");
        assert_eq!(refused.body["error"]["code"], "tools_not_supported");
    }

    pub async fn errors_have_the_openai_shape(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let def = create_definition(&h, &alice, "Support bot", false).await;
        let model = format!("workflow:{def}");
        let hi = json!([{"role": "user", "content": "hi"}]);
        let before = h
            .store()
            .list_executions(
                &chatter_core::store::ExecutionFilter::default(),
                chatter_core::store::Page::new(1000, 0),
            )
            .await
            .unwrap()
            .len();

        let check = |answer: &common::Answer, status: u16| {
            assert_eq!(answer.status, status, "{}", answer.text);
            assert!(
                answer.content_type().starts_with("application/json"),
                "{}",
                answer.content_type()
            );
            let error = &answer.body["error"];
            for key in ["message", "type", "param", "code"] {
                assert!(error.get(key).is_some(), "no `{key}`: {}", answer.text);
            }
            assert!(!error["message"].as_str().unwrap().is_empty());
        };

        // 401: no key, a bad key.
        let body = json!({"model": model, "messages": hi});
        let none = h.post("/v1/chat/completions", None, &body).await;
        check(&none, 401);
        assert_eq!(none.body["error"]["code"], "invalid_api_key");
        let bad = h
            .post(
                "/v1/chat/completions",
                Some("chatter_api_00000000000000000000000000000000wrong"),
                &body,
            )
            .await;
        check(&bad, 401);
        check(&h.get("/v1/models", None).await, 401);

        // 404: unknown model.
        let unknown = complete(
            &h,
            &alice.key,
            &json!({"model": "workflow:nope", "messages": hi}),
        )
        .await;
        check(&unknown, 404);
        assert_eq!(unknown.body["error"]["code"], "model_not_found");
        assert_eq!(unknown.body["error"]["param"], "model");

        // 400: bad JSON and bad messages, each naming the parameter.
        let raw = h
            .raw(
                "POST",
                "/v1/chat/completions",
                Some(&alice.key),
                "application/json",
                b"{\"model\": ".to_vec(),
            )
            .await;
        check(&raw, 400);
        for (messages, param) in [
            (json!([]), "messages"),
            (
                json!([{"role": "wizard", "content": "hi"}]),
                "messages[0].role",
            ),
            (
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
                "messages[0].content[0].type",
            ),
            (
                json!([{"role": "user", "content": 42}]),
                "messages[0].content",
            ),
            (
                json!([{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]),
                "messages[1].tool_call_id",
            ),
            (
                json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes?"}]),
                "messages[1].role",
            ),
        ] {
            let answer = complete(
                &h,
                &alice.key,
                &json!({"model": model, "messages": messages}),
            )
            .await;
            check(&answer, 400);
            assert_eq!(answer.body["error"]["param"], param, "{}", answer.text);
        }
        let n2 = complete(
            &h,
            &alice.key,
            &json!({"model": model, "messages": hi, "n": 2}),
        )
        .await;
        check(&n2, 400);
        assert_eq!(n2.body["error"]["param"], "n");

        // None of these ran anything.
        let after = h
            .store()
            .list_executions(
                &chatter_core::store::ExecutionFilter::default(),
                chatter_core::store::Page::new(1000, 0),
            )
            .await
            .unwrap()
            .len();
        assert_eq!(before, after);

        // A failing workflow: 502, recorded as failed, its id in the error.
        let failed = complete(
            &h,
            &alice.key,
            &json!({"model": model, "messages": [{"role": "user", "content": "explode"}]}),
        )
        .await;
        check(&failed, 502);
        assert_eq!(failed.body["error"]["code"], "workflow_failed");
        let id = failed.body["error"]["execution_id"].as_str().unwrap();
        let record = h.store().get_execution(id).await.unwrap().unwrap();
        assert_eq!(record.status.as_str(), "failed");
    }

    pub async fn global_stream_started_completed_and_scoped(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let bob = h.user("bob", &["user"]).await;
        let alices = create_definition(&h, &alice, "Alice bot", false).await;
        let bobs = create_definition(&h, &bob, "Bob bot", false).await;
        let mut alice_stream = open_global(&h, &alice.key).await;
        let mut admin_stream = open_global(&h, common::ADMIN_KEY).await;

        // Bob runs first, then Alice: Alice's stream shows only her execution.
        let run = |key: String, def: String| {
            let h = &h;
            async move {
                let answer = h
                    .post(
                        &format!("{W}/definitions/{def}/execute"),
                        Some(&key),
                        &json!({"input_data": {"message": "hi"}}),
                    )
                    .await;
                assert_eq!(answer.status, 200, "{}", answer.text);
                answer.body["id"].as_str().unwrap().to_owned()
            }
        };
        let bob_run = run(bob.key.clone(), bobs.clone()).await;
        let alice_run = run(alice.key.clone(), alices.clone()).await;

        let seen = global_until(&mut alice_stream, &alice_run, "workflow.completed").await;
        let kinds: Vec<(&str, &str)> = seen
            .iter()
            .map(|(_, event, data)| {
                (
                    event.as_str(),
                    data["data"]["execution_id"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("workflow.started", alice_run.as_str()),
                ("workflow.completed", alice_run.as_str())
            ]
        );
        let (id, _, completed) = &seen[1];
        assert_eq!(completed["type"], "workflow.completed");
        assert_eq!(completed["id"], id.as_str());
        assert!(completed["timestamp"].as_str().unwrap().ends_with('Z'));
        let data = &completed["data"];
        assert_eq!(data["workflow_id"], alices.as_str());
        assert_eq!(data["definition_id"], alices.as_str());
        assert_eq!(data["owner_id"], alice.id.as_str());
        assert_eq!(data["status"], "completed");
        assert_eq!(data["response"], REPLY);
        assert_eq!(data["usage"]["total_tokens"], 20);
        assert_eq!(seen[0].2["data"]["status"], "running");

        // The admin sees both, in order.
        let seen = global_until(&mut admin_stream, &alice_run, "workflow.completed").await;
        let order: Vec<(&str, &str)> = seen
            .iter()
            .map(|(_, event, data)| {
                (
                    event.as_str(),
                    data["data"]["execution_id"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            order,
            [
                ("workflow.started", bob_run.as_str()),
                ("workflow.completed", bob_run.as_str()),
                ("workflow.started", alice_run.as_str()),
                ("workflow.completed", alice_run.as_str())
            ]
        );

        // Heartbeats keep an idle stream alive.
        let (blocks, _) = read_blocks(&mut alice_stream, |b| b.len() >= 2).await;
        assert_eq!(blocks, [": keep-alive", ": keep-alive"]);

        // No key: 401; the stream ends when the server shuts down.
        let denied = h.get("/api/v1/events/stream", None).await;
        assert_eq!(denied.status, 401);
        h.server.shutdown().await.unwrap();
        let (rest, ended) = read_blocks(&mut alice_stream, |_| false).await;
        assert!(ended);
        assert!(rest.iter().all(|b| b == ": keep-alive"), "{rest:?}");
        drop(admin_stream);
    }

    pub async fn global_stream_reports_failures(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let def = create_definition(&h, &alice, "Support bot", false).await;
        let mut stream = open_global(&h, &alice.key).await;
        let failed = complete(
            &h,
            &alice.key,
            &json!({"model": format!("workflow:{def}"),
                    "messages": [{"role": "user", "content": "explode"}]}),
        )
        .await;
        assert_eq!(failed.status, 502, "{}", failed.text);
        let id = failed.body["error"]["execution_id"].as_str().unwrap();
        let seen = global_until(&mut stream, id, "workflow.failed").await;
        let kinds: Vec<&str> = seen.iter().map(|(_, e, _)| e.as_str()).collect();
        assert_eq!(kinds, ["workflow.started", "workflow.failed"]);
        let data = &seen[1].2["data"];
        assert_eq!(data["status"], "failed");
        assert!(
            data["error"]
                .as_str()
                .unwrap()
                .contains("the script refuses"),
            "{data}"
        );

        // A client that disconnects mid-stream leaves the server serving others.
        drop(stream);
        let mut again = open_global(&h, &alice.key).await;
        let ok = complete(
            &h,
            &alice.key,
            &json!({"model": format!("workflow:{def}"),
                    "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(ok.status, 200, "{}", ok.text);
        let id = ok.body["execution_id"].as_str().unwrap();
        let seen = global_until(&mut again, id, "workflow.completed").await;
        assert_eq!(seen.len(), 2);
    }

    pub async fn global_stream_resumes_after_last_event_id(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let bob = h.user("bob", &["user"]).await;
        let alices = create_definition(&h, &alice, "Alice bot", false).await;
        let bobs = create_definition(&h, &bob, "Bob bot", false).await;
        let mut first = open_global(&h, &alice.key).await;
        let run = |key: String, def: String| {
            let h = &h;
            async move {
                let answer = complete(
                    h,
                    &key,
                    &json!({"model": format!("workflow:{def}"),
                            "messages": [{"role": "user", "content": "hi"}]}),
                )
                .await;
                assert_eq!(answer.status, 200, "{}", answer.text);
                answer.body["execution_id"].as_str().unwrap().to_owned()
            }
        };
        let one = run(alice.key.clone(), alices.clone()).await;
        let seen = global_until(&mut first, &one, "workflow.completed").await;
        let started_id = seen[0].0.clone();
        drop(first);
        // While Alice is away: Bob runs one, Alice runs another.
        run(bob.key.clone(), bobs.clone()).await;
        let two = run(alice.key.clone(), alices.clone()).await;

        // Back after her first execution's start: its completion, then the second one; no
        // duplicate, no gap, nothing of Bob's.
        let mut again = open_global_after(&h, &alice.key, Some(&started_id)).await;
        let seen = global_until(&mut again, &two, "workflow.completed").await;
        let order: Vec<(&str, &str)> = seen
            .iter()
            .map(|(_, e, d)| (e.as_str(), d["data"]["execution_id"].as_str().unwrap()))
            .collect();
        assert_eq!(
            order,
            [
                ("workflow.completed", one.as_str()),
                ("workflow.started", two.as_str()),
                ("workflow.completed", two.as_str())
            ]
        );

        // An id older than what the server keeps: a `workflow.lagged` notice, then what it has.
        let old = ulid::Ulid::from_parts(1_600_000_000_000, 7).to_string();
        let mut old_stream = open_global_after(&h, &alice.key, Some(&old)).await;
        let seen = global_until(&mut old_stream, &two, "workflow.completed").await;
        assert_eq!(seen[0].1, "workflow.lagged");
        assert!(seen[0].0.is_empty(), "a notice has no id");
        assert_eq!(seen[0].2["data"]["missed"], Value::Null);
        assert_eq!(seen.len(), 5, "{seen:?}");

        // An id from the future, or not an id at all: 422, nothing streamed.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let future = ulid::Ulid::from_parts(u64::try_from(now).unwrap() + 3_600_000, 7).to_string();
        for bad in [
            future.as_str(),
            "not-an-id",
            seen[1].2["data"]["execution_id"].as_str().unwrap(),
        ] {
            let answer = h
                .client
                .get(h.url("/api/v1/events/stream"))
                .bearer_auth(&alice.key)
                .header("Last-Event-ID", bad)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .unwrap();
            let answer = common::answer(answer).await;
            answer.assert_problem(422);
            assert!(answer.text.contains("Last-Event-ID"), "{}", answer.text);
        }
    }

    pub async fn global_stream_reports_waiting_and_resumed(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let mut stream = open_global(&h, &alice.key).await;
        let graph = json!({
            "nodes": [
                {"id": "start", "type": "start"},
                {"id": "ask", "type": "approval",
                 "config": {"question": "Ship it?", "allowed_decisions": ["approve", "reject"]}},
                {"id": "end", "type": "end"}
            ],
            "edges": [{"source": "start", "target": "ask"}, {"source": "ask", "target": "end"}]
        });
        let run = h
            .post(
                &format!("{W}/definitions/custom/execute?message=hello"),
                Some(&alice.key),
                &graph,
            )
            .await;
        assert_eq!(run.status, 200, "{}", run.text);
        assert_eq!(run.body["status"], "waiting");
        let id = run.body["id"].as_str().unwrap().to_owned();
        let approved = h
            .post(
                &format!("{W}/executions/{id}/approve"),
                Some(&alice.key),
                &json!({"decision": "approve"}),
            )
            .await;
        assert_eq!(approved.status, 200, "{}", approved.text);
        let seen = global_until(&mut stream, &id, "workflow.completed").await;
        let order: Vec<(&str, &str)> = seen
            .iter()
            .map(|(_, e, d)| (e.as_str(), d["data"]["status"].as_str().unwrap()))
            .collect();
        assert_eq!(
            order,
            [
                ("workflow.started", "running"),
                ("workflow.status", "waiting"),
                ("workflow.status", "running"),
                ("workflow.completed", "completed")
            ]
        );
        assert_eq!(seen[1].2["data"]["node_id"], "ask");
        assert_eq!(seen[2].2["data"]["resumed"], true);
        assert_eq!(seen[0].2["data"]["kind"], "adhoc");
        assert_eq!(seen[0].2["data"]["workflow_id"], "");
    }
}
