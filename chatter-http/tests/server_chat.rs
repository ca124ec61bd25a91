//! Chat over real HTTP: `/execute/chat` and `/execute/chat/streaming` persist the messages,
//! the conversation aggregates and the execution; the stream's framing; a client that
//! disconnects mid-stream. Every case runs on SQLite and Postgres.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use chatter_http::server::ServerConfig;

const REPLY: &str = "Hello from the script, streamed in chunks.";
const SLOW_REPLY: &str =
    "This answer arrives slowly, a few characters at a time, long after the client left.";

fn chat_config() -> ServerConfig {
    let dir = std::env::temp_dir().join(format!("chatter-http-chat-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("model.json");
    std::fs::write(
        &script,
        serde_json::json!({
            "rules": [{"match": {"contains": "slow"},
                       "reply": {"content": SLOW_REPLY, "delay_ms": 40}}],
            "default": {"content": REPLY},
            "usage": {"prompt_tokens": 12, "completion_tokens": 8},
            "chunk_size": 5
        })
        .to_string(),
    )
    .unwrap();
    let mut config = common::config();
    config.models = vec![format!("scripted:{}", script.display())];
    config
}

macro_rules! chat_cases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { crate::common::run_sqlite_with(crate::chat_config(), super::cases::$case).await; })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { crate::common::run_postgres_with(crate::chat_config(), super::cases::$case).await; })*
        }
    };
}

chat_cases!(
    chat_persists_messages_aggregates_and_execution,
    streaming_frames_and_persistence,
    disconnect_mid_stream_still_persists,
    bad_chat_input_stores_nothing,
);

mod cases {
    use chatter_core::store::{MessageRole, Page};
    use serde_json::{Value, json};

    use super::{REPLY, SLOW_REPLY};
    use crate::common::Harness;

    const CHAT: &str = "/api/v1/workflows/execute/chat";

    pub async fn chat_persists_messages_aggregates_and_execution(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let a = h
            .post(CHAT, Some(&alice.key), &json!({"message": "Hi there"}))
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        let conversation_id = a.body["conversation_id"].as_str().unwrap().to_owned();
        let m = &a.body["message"];
        assert_eq!(m["role"], "assistant");
        assert_eq!(m["content"], REPLY);
        assert_eq!(m["conversation_id"], conversation_id.as_str());
        assert_eq!(m["prompt_tokens"], 12);
        assert_eq!(m["completion_tokens"], 8);
        assert_eq!(m["total_tokens"], 20);
        assert_eq!(m["model_used"], "scripted");
        assert_eq!(m["rating_count"], 0);
        assert!(m["sequence_number"].is_i64() && m["response_time_ms"].is_i64());
        let c = &a.body["conversation"];
        assert_eq!(c["id"], conversation_id.as_str());
        assert_eq!(c["user_id"], alice.id.as_str());
        assert_eq!(c["status"], "active");
        assert_eq!(c["title"], "Hi there");
        assert_eq!(c["message_count"], 2);
        assert_eq!(c["total_tokens"], 20);

        // A second turn in the same conversation: aggregates add up, history reaches the model.
        let b = h
            .post(
                CHAT,
                Some(&alice.key),
                &json!({"message": "Again", "conversation_id": conversation_id}),
            )
            .await;
        assert_eq!(b.status, 200, "{}", b.text);
        assert_eq!(b.body["conversation"]["message_count"], 4);
        assert_eq!(b.body["conversation"]["total_tokens"], 40);

        let messages = h
            .store()
            .list_messages(&conversation_id, Page::new(100, 0))
            .await
            .unwrap();
        let roles: Vec<MessageRole> = messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                MessageRole::User,
                MessageRole::Assistant,
                MessageRole::User,
                MessageRole::Assistant
            ]
        );
        assert_eq!(messages[2].content, "Again");
        let execution_id = messages[3].execution_id.clone().unwrap();
        let execution = h
            .store()
            .get_execution(&execution_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            execution.conversation_id.as_deref(),
            Some(conversation_id.as_str())
        );
        assert_eq!(execution.owner_id, alice.id);
        assert_eq!(execution.kind.as_str(), "chat");
        assert_eq!(execution.total_tokens, 20);
        assert_eq!(execution.response.as_deref(), Some(REPLY));
        // The execution lists for its owner with a string definition_id (the template).
        let all = h
            .get("/api/v1/workflows/executions", Some(&alice.key))
            .await;
        assert_eq!(all.body["executions"][0]["definition_id"], "universal_chat");

        // A chat through a stored definition records it as the execution's definition.
        let graph = json!({
            "name": "chat flow",
            "nodes": [{"id": "start", "type": "start"}, {"id": "chat", "type": "llm"}, {"id": "end", "type": "end"}],
            "edges": [{"source": "start", "target": "chat"}, {"source": "chat", "target": "end"}]
        });
        let def = h
            .post("/api/v1/workflows/definitions", Some(&alice.key), &graph)
            .await;
        let def_id = def.body["id"].as_str().unwrap();
        let c = h
            .post(
                CHAT,
                Some(&alice.key),
                &json!({"message": "Via definition", "workflow_definition_id": def_id}),
            )
            .await;
        assert_eq!(c.status, 200, "{}", c.text);
        assert_eq!(c.body["message"]["content"], REPLY);
        let execution_id = c.body["message"]["execution_id"].as_str().unwrap();
        let execution = h
            .store()
            .get_execution(execution_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(execution.definition_id.as_deref(), Some(def_id));
        assert_eq!(execution.kind.as_str(), "chat");
    }

    /// The `data:` payloads of an SSE body.
    fn frames(text: &str) -> Vec<String> {
        text.split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| {
                f.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("bad frame {f:?}"))
                    .to_owned()
            })
            .collect()
    }

    pub async fn streaming_frames_and_persistence(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let a = h
            .post(
                &format!("{CHAT}/streaming"),
                Some(&alice.key),
                &json!({"message": "Stream it"}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.content_type(), "text/event-stream");
        let frames = frames(&a.text);
        assert_eq!(frames.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = frames[..frames.len() - 1]
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect();
        let types: Vec<&str> = chunks.iter().map(|c| c["type"].as_str().unwrap()).collect();
        assert_eq!(types[0], "start");
        assert_eq!(&types[types.len() - 2..], ["complete", "done"]);
        assert!(types[1..types.len() - 2].iter().all(|t| *t == "token"));
        assert!(types.len() - 3 >= 5, "{types:?}");
        let text: String = chunks
            .iter()
            .filter(|c| c["type"] == "token")
            .map(|c| c["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, REPLY);
        let complete = &chunks[chunks.len() - 2];
        assert_eq!(complete["total_tokens"], 20);
        assert_eq!(complete["input_tokens"], 12);
        assert_eq!(complete["output_tokens"], 8);
        assert_eq!(complete["model_used"], "scripted");
        assert!(complete["response_time_ms"].is_i64());
        let conversation_id = chunks[0]["conversation_id"].as_str().unwrap();
        assert_eq!(complete["conversation_id"], conversation_id);

        // Persisted like the non-streaming path.
        let messages = h
            .store()
            .list_messages(conversation_id, Page::new(100, 0))
            .await
            .unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].content, REPLY);
        assert_eq!(messages[1].id, complete["message_id"].as_str().unwrap());
        let conversation = h
            .store()
            .get_conversation(conversation_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(conversation.metadata["total_tokens"], 20);
    }

    pub async fn disconnect_mid_stream_still_persists(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let mut response = h
            .client
            .post(h.url(&format!("{CHAT}/streaming")))
            .header("authorization", format!("Bearer {}", alice.key))
            .header("content-type", "application/json")
            .body(json!({"message": "slow please"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let first = response.chunk().await.unwrap().unwrap();
        let first: Value = serde_json::from_str(
            std::str::from_utf8(&first)
                .unwrap()
                .split("\n\n")
                .next()
                .unwrap()
                .strip_prefix("data: ")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(first["type"], "start");
        let conversation_id = first["conversation_id"].as_str().unwrap().to_owned();
        drop(response); // the client goes away mid-stream

        // The run finishes on the server and is persisted all the same: wait for its last
        // write (the conversation's aggregates come after the assistant message).
        let mut conversation = None;
        for _ in 0..400 {
            let current = h
                .store()
                .get_conversation(&conversation_id)
                .await
                .unwrap()
                .unwrap();
            if current.metadata["total_tokens"] == 20 {
                conversation = Some(current);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let conversation = conversation.expect("the run was not persisted");
        assert_eq!(conversation.message_count, 2);
        let messages = h
            .store()
            .list_messages(&conversation_id, Page::new(100, 0))
            .await
            .unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].content, SLOW_REPLY);
        let execution = h
            .store()
            .get_execution(messages[1].execution_id.as_deref().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(execution.status.as_str(), "completed");
        // The server keeps serving.
        assert_eq!(h.get("/healthz", None).await.status, 200);
    }

    pub async fn bad_chat_input_stores_nothing(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let bob = h.user("bob", &["user"]).await;
        let guest = h.user("guest", &["guest"]).await;
        for (body, status) in [
            (json!({"message": ""}), 422),
            (json!({"message": 5}), 422),
            (json!({}), 422),
            (json!({"message": "hi", "temperature": 3}), 422),
            (json!({"message": "hi", "provider": "nope"}), 422),
            (
                json!({"message": "hi", "conversation_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}),
                404,
            ),
            (
                json!({"message": "hi", "workflow_definition_id": "nope"}),
                404,
            ),
            (
                json!({"message": "hi", "workflow_template_name": "nope"}),
                404,
            ),
        ] {
            for path in [CHAT.to_owned(), format!("{CHAT}/streaming")] {
                h.post(&path, Some(&alice.key), &body)
                    .await
                    .assert_problem(status);
            }
        }
        h.post(CHAT, Some(&guest.key), &json!({"message": "hi"}))
            .await
            .assert_problem(403);
        h.post(CHAT, None, &json!({"message": "hi"}))
            .await
            .assert_problem(401);
        assert!(
            h.store()
                .list_conversations(&alice.id, None, Page::new(10, 0))
                .await
                .unwrap()
                .is_empty()
        );
        // Another user's conversation is not found.
        let a = h
            .post(CHAT, Some(&alice.key), &json!({"message": "mine"}))
            .await;
        let conversation_id = a.body["conversation_id"].as_str().unwrap();
        h.post(
            CHAT,
            Some(&bob.key),
            &json!({"message": "hi", "conversation_id": conversation_id}),
        )
        .await
        .assert_problem(404);
        let messages = h
            .store()
            .list_messages(conversation_id, Page::new(10, 0))
            .await
            .unwrap();
        assert_eq!(messages.len(), 2);
    }
}
