//! The built-in kinds of DESIGN §4, with the config keys of the shared contract
//! (`briefs/CONTEXT.md`, "Node config keys").

use serde_json::json;

use super::NodeKindInfo;
use super::schema::{IDENTIFIER_PATTERN, PropertySchema as P};
use crate::definition::KIND_ALIASES;

/// Longest time value in milliseconds (one hour).
const HOUR_MS: i64 = 3_600_000;

/// Adds every alias the definition reader resolves to `info.kind`, so the two never disagree.
fn with_reader_aliases(mut info: NodeKindInfo) -> NodeKindInfo {
    for (alias, canonical) in KIND_ALIASES {
        if *canonical == info.kind {
            info = info.with_alias(*alias);
        }
    }
    info
}

fn string_list(description: &str) -> P {
    P::array(P::string()).describe(description)
}

fn output_variable(what: &str) -> P {
    P::string().describe(&format!(
        "Also store {what} in `variables.<output_variable>`."
    ))
}

pub(super) fn kinds() -> Vec<NodeKindInfo> {
    vec![
        start(),
        end(),
        llm(),
        tool(),
        retrieval(),
        memory(),
        conditional(),
        loop_kind(),
        variable(),
        error_handler(),
        delay(),
        approval(),
        map(),
        subworkflow(),
        http(),
    ]
    .into_iter()
    .map(with_reader_aliases)
    .collect()
}

fn start() -> NodeKindInfo {
    NodeKindInfo::new(
        "start",
        "Start",
        "control",
        "Entry point of the workflow: `input.message` becomes the first user message and \
         `input.variables` seeds `variables`.",
    )
    .with_icon("PlayArrow")
    .with_color("#4caf50")
    .with_reads(&["input"])
    .with_writes(&["messages", "variables"])
    .with_property(
        "isEntryPoint",
        P::boolean()
            .set("deprecated", true)
            .describe("Written by the old editor on start nodes; accepted and ignored."),
    )
    .with_example(json!({"description": "Entry of the support chat"}))
}

fn end() -> NodeKindInfo {
    NodeKindInfo::new(
        "end",
        "End",
        "control",
        "Exit point of the workflow: sets the execution's final response.",
    )
    .with_icon("Stop")
    .with_color("#f44336")
    .with_reads(&["messages", "last_message"])
    .with_property(
        "output",
        P::template()
            .describe("The final response; by default the content of the last assistant message."),
    )
    .with_example(json!({"output": "{{ last_message.content }}"}))
}

fn llm() -> NodeKindInfo {
    NodeKindInfo::new(
        "llm",
        "LLM",
        "model",
        "Calls a chat model with the conversation (and the tools it allows), streams its \
         tokens, appends its reply and records usage and cost.",
    )
    .with_icon("Psychology")
    .with_color("#2196f3")
    .with_reads(&["messages", "input", "variables", "context"])
    .with_writes(&["messages", "usage", "variables"])
    .with_property(
        "provider",
        P::string().describe(
            "Model provider (`openai`, `anthropic`, ...); the router's default when absent.",
        ),
    )
    .with_property(
        "model",
        P::string().describe("Model name; the provider's default when absent."),
    )
    .with_property(
        "temperature",
        P::number().range(0, 2).describe("Sampling temperature."),
    )
    .with_property(
        "max_tokens",
        P::integer()
            .range(1, 1_000_000)
            .describe("Most tokens the reply may have."),
    )
    .with_property(
        "top_p",
        P::number()
            .range(0, 1)
            .describe("Nucleus sampling probability mass."),
    )
    .with_property(
        "system_prompt",
        P::template().describe("System prompt, rendered against the state before the call."),
    )
    .with_property(
        "system_message",
        P::template()
            .describe("Old name of `system_prompt`.")
            .old_name_of("system_prompt"),
    )
    .with_property(
        "prompt",
        P::template().describe("Rendered and appended as a user message before the call."),
    )
    .with_property(
        "tools",
        string_list("Names of the tools bound to the call."),
    )
    .with_property(
        "enable_tools",
        P::boolean()
            .describe("Bind every tool the node allows (`allowed_tools`, else all registered)."),
    )
    .with_property(
        "allowed_tools",
        string_list("Names of the tools the model may call."),
    )
    .with_property(
        "tool_choice",
        P::string_enum(&["auto", "none", "required"])
            .describe("Whether the model may, must not, or must call a tool."),
    )
    .with_property(
        "client_tools",
        P::boolean().default(false).describe(
            "Also offer the tools the caller brought in `input.tools` (`input.tool_choice` \
             overrides `tool_choice`); their calls are answered to the caller, not run.",
        ),
    )
    .with_property(
        "stream",
        P::boolean()
            .default(true)
            .describe("Stream tokens as `token` events."),
    )
    .with_property(
        "enable_streaming",
        P::boolean()
            .describe("Old name of `stream`.")
            .old_name_of("stream"),
    )
    .with_property(
        "response_format",
        P::string_enum(&["text", "json"]).describe("Ask for plain text or a JSON object."),
    )
    .with_property("stop", string_list("Stop sequences."))
    .with_property("output_variable", output_variable("the reply text"))
    .with_example(json!({
        "provider": "openai",
        "model": "gpt-4",
        "temperature": 0.7,
        "max_tokens": 1000,
        "system_prompt": "You are the support assistant of {{ variables.company }}.",
        "enable_tools": true,
        "retry": {"max_attempts": 3}
    }))
}

fn tool() -> NodeKindInfo {
    NodeKindInfo::new(
        "tool",
        "Tools",
        "tool",
        "Runs the tool calls of the last assistant message (in parallel when allowed), with a \
         per-tool timeout, an allow-list, call limits and loop detection; appends the results \
         as tool messages.",
    )
    .with_icon("Build")
    .with_color("#ff9800")
    .with_reads(&["last_message", "tool_calls"])
    .with_writes(&["messages", "tool_calls", "errors"])
    .with_property(
        "allowed_tools",
        string_list("Tools that may run; a call to another one gets an error result."),
    )
    .with_property(
        "max_total_calls",
        P::integer()
            .min(1)
            .default(10)
            .describe("Most tool calls in the whole execution."),
    )
    .with_property(
        "max_tool_calls",
        P::integer()
            .min(1)
            .describe("Old name of `max_total_calls`.")
            .old_name_of("max_total_calls"),
    )
    .with_property(
        "max_calls_per_tool",
        P::integer()
            .min(1)
            .describe("Most calls of any one tool in the whole execution."),
    )
    .with_property(
        "max_consecutive_calls",
        P::integer()
            .min(1)
            .default(3)
            .describe("Most identical consecutive calls of one tool."),
    )
    .with_property(
        "parallel_calls",
        P::boolean()
            .default(true)
            .describe("Run the calls of one message concurrently."),
    )
    .with_property(
        "tool_timeout_ms",
        P::integer()
            .range(1, HOUR_MS)
            .default(30_000)
            .describe("Longest time one tool call may take, in milliseconds."),
    )
    .with_property(
        "repetition_detection",
        P::string_enum(&["strict", "adaptive", "lenient", "off"])
            .default("adaptive")
            .describe("How eagerly repeated calls are treated as a loop and stopped."),
    )
    .with_example(json!({
        "allowed_tools": ["search_kb", "create_ticket"],
        "max_total_calls": 5,
        "tool_timeout_ms": 30000
    }))
}

fn retrieval() -> NodeKindInfo {
    NodeKindInfo::new(
        "retrieval",
        "Retrieval",
        "data",
        "Queries a retriever (built-in full-text search over stored documents, or a registered \
         one) and puts the ranked chunks into `context`.",
    )
    .with_icon("Search")
    .with_color("#009688")
    .with_reads(&["messages", "input", "variables"])
    .with_writes(&["context", "variables"])
    .with_property(
        "retriever",
        P::string()
            .default("documents")
            .describe("Name of the retriever."),
    )
    .with_property(
        "query",
        P::template().describe("The query; by default the last user message."),
    )
    .with_property(
        "top_k",
        P::integer()
            .range(1, 100)
            .default(5)
            .describe("Most chunks to keep."),
    )
    .with_property(
        "max_documents",
        P::integer()
            .range(1, 100)
            .describe("Old name of `top_k`.")
            .old_name_of("top_k"),
    )
    .with_property(
        "score_threshold",
        P::number()
            .range(0, 1)
            .default(0)
            .describe("Lowest score a chunk may have."),
    )
    .with_property(
        "similarity_threshold",
        P::number()
            .range(0, 1)
            .describe("Old name of `score_threshold`.")
            .old_name_of("score_threshold"),
    )
    .with_property("output_variable", output_variable("the chunks"))
    .with_example(json!({"retriever": "documents", "top_k": 5, "score_threshold": 0.5}))
}

fn memory() -> NodeKindInfo {
    NodeKindInfo::new(
        "memory",
        "Memory",
        "data",
        "Keeps a window of recent messages and summarises the older ones with a model; the \
         dropped messages are really removed from `messages`.",
    )
    .with_icon("Memory")
    .with_color("#795548")
    .with_reads(&["messages"])
    .with_writes(&["messages", "usage"])
    .with_property(
        "window_size",
        P::integer()
            .range(1, 10_000)
            .default(10)
            .describe("How many recent messages to keep."),
    )
    .with_property(
        "memory_window",
        P::integer()
            .range(1, 10_000)
            .describe("Old name of `window_size`.")
            .old_name_of("window_size"),
    )
    .with_property(
        "summarize",
        P::boolean()
            .default(true)
            .describe("Replace the dropped messages by a summary (else just drop them)."),
    )
    .with_property(
        "summary_provider",
        P::string().describe("Provider of the summary model; the router's default when absent."),
    )
    .with_property(
        "summary_model",
        P::string().describe("Model that writes the summary; the provider's default when absent."),
    )
    .with_property(
        "summary_prompt",
        P::template().describe("Instructions for the summary."),
    )
    .with_property(
        "keep_system",
        P::boolean()
            .default(true)
            .describe("Keep system messages outside the window."),
    )
    .with_example(json!({"window_size": 20, "summarize": true}))
}

fn conditional() -> NodeKindInfo {
    NodeKindInfo::new(
        "conditional",
        "Conditional",
        "control",
        "Evaluates an expression and routes by its `true`/`false` branches.",
    )
    .with_icon("CallSplit")
    .with_color("#9c27b0")
    .with_branches(&["true", "false"])
    .with_cycle_exit(true)
    .with_property(
        "condition",
        P::expression().describe("The expression that picks the `true` or `false` branch."),
    )
    .with_required(&["condition"])
    .with_example(json!({"condition": "has_tool_calls"}))
}

fn loop_kind() -> NodeKindInfo {
    NodeKindInfo::new(
        "loop",
        "Loop",
        "control",
        "Bounded iteration: continues while its condition holds and `max_iterations` is not \
         reached; records its state in `loop.<id>`.",
    )
    .with_icon("Loop")
    .with_color("#ba68c8")
    .with_writes(&["loop"])
    .with_branches(&["continue", "exit"])
    .with_cycle_exit(true)
    .with_property(
        "condition",
        P::expression()
            .default("true")
            .describe("Continue while this holds."),
    )
    .with_property(
        "max_iterations",
        P::integer()
            .range(1, 10_000)
            .default(10)
            .describe("Most passes through the loop."),
    )
    .with_example(json!({"condition": "variables.count < 3", "max_iterations": 5}))
}

fn variable() -> NodeKindInfo {
    NodeKindInfo::new(
        "variable",
        "Variable",
        "data",
        "Sets, reads, appends to, increments, decrements or deletes a workflow variable.",
    )
    .with_icon("DataObject")
    .with_color("#607d8b")
    .with_reads(&["variables"])
    .with_writes(&["variables"])
    .with_property(
        "operation",
        P::string_enum(&["set", "get", "append", "increment", "decrement", "delete"])
            .describe("What to do with the variable."),
    )
    .with_property(
        "variable_name",
        P::string()
            .pattern(IDENTIFIER_PATTERN)
            .describe("The variable (an identifier)."),
    )
    .with_property("value", P::any().describe("The value to set or append."))
    .with_property(
        "value_template",
        P::template().describe("Rendered to a string and used as the value."),
    )
    .with_property(
        "amount",
        P::number()
            .default(1)
            .describe("Step of `increment`/`decrement`."),
    )
    .with_property(
        "output_variable",
        output_variable("the value read by `get`"),
    )
    .with_required(&["operation", "variable_name"])
    .with_example(json!({"operation": "increment", "variable_name": "count", "amount": 1}))
}

fn error_handler() -> NodeKindInfo {
    NodeKindInfo::new(
        "error_handler",
        "Error Handler",
        "control",
        "Catches the errors of the nodes that route to it: retries them `retry_count` times, \
         then continues, clears the errors or stops.",
    )
    .with_icon("ErrorOutline")
    .with_color("#e91e63")
    .with_reads(&["errors"])
    .with_writes(&["errors", "messages"])
    .with_property(
        "retry_count",
        P::integer()
            .range(0, 10)
            .default(0)
            .describe("How many times to re-run the failed node."),
    )
    .with_property(
        "fallback_action",
        P::string_enum(&["continue", "clear_errors", "stop"])
            .default("continue")
            .describe("What to do once retries are spent."),
    )
    .with_property(
        "fallback_message",
        P::string().describe("Appended as an assistant message when the fallback runs."),
    )
    .with_example(json!({
        "retry_count": 2,
        "fallback_action": "continue",
        "fallback_message": "Sorry, that did not work."
    }))
}

fn delay() -> NodeKindInfo {
    let ms = |what: &str| P::integer().range(0, HOUR_MS).describe(what);
    NodeKindInfo::new(
        "delay",
        "Delay",
        "utility",
        "Waits a fixed, random or exponentially growing time.",
    )
    .with_icon("Schedule")
    .with_color("#9e9e9e")
    .with_property(
        "delay_type",
        P::string_enum(&["fixed", "random", "exponential"])
            .default("fixed")
            .describe("How the wait is chosen."),
    )
    .with_property("delay_ms", ms("Wait of a `fixed` delay, in milliseconds."))
    .with_property(
        "min_delay_ms",
        ms("Shortest wait of a `random` delay, in milliseconds.").at_most_key("max_delay_ms"),
    )
    .with_property(
        "max_delay_ms",
        ms("Longest wait of a `random` delay, in milliseconds."),
    )
    .with_property(
        "base_delay_ms",
        ms("First wait of an `exponential` delay, in milliseconds."),
    )
    .with_property(
        "multiplier",
        P::number()
            .range(1, 10)
            .describe("Growth factor of an `exponential` delay per iteration."),
    )
    .with_property(
        "max_delay_cap_ms",
        ms("Longest wait of an `exponential` delay, in milliseconds."),
    )
    .with_example(json!({"delay_type": "random", "min_delay_ms": 500, "max_delay_ms": 2000}))
}

fn approval() -> NodeKindInfo {
    NodeKindInfo::new(
        "approval",
        "Approval",
        "human",
        "Pauses the execution (status `waiting`) until it is resumed with a decision and \
         optional input.",
    )
    .with_icon("HowToReg")
    .with_color("#3f51b5")
    .with_reads(&["messages", "variables", "input"])
    .with_writes(&["variables"])
    .with_property(
        "question",
        P::template().describe("What the person is asked."),
    )
    .with_property(
        "allowed_decisions",
        P::array(P::string())
            .min_items(1)
            .default(json!(["approve", "reject"]))
            .describe("The decisions a resume may carry."),
    )
    .with_property(
        "timeout_ms",
        P::integer()
            .min(0)
            .default(0)
            .describe("How long to wait for a decision, in milliseconds; 0 waits forever."),
    )
    .with_property(
        "timeout_decision",
        P::string()
            .member_of("allowed_decisions")
            .describe("Decision taken when the wait times out (one of `allowed_decisions`)."),
    )
    .with_property(
        "input_schema",
        P::object().describe("JSON Schema of the input a resume may carry."),
    )
    .with_required(&["question"])
    .with_example(json!({
        "question": "Send this reply?\n{{ last_message.content }}",
        "allowed_decisions": ["approve", "reject"],
        "timeout_ms": 3600000,
        "timeout_decision": "reject"
    }))
}

fn map() -> NodeKindInfo {
    let body = P::object()
        .describe("The sub-graph run per item: `{nodes, edges}` as in a definition.")
        .property(
            "nodes",
            P::array(P::object())
                .min_items(1)
                .describe("Nodes of the sub-graph."),
        )
        .property(
            "edges",
            P::array(P::object()).describe("Edges of the sub-graph."),
        )
        .required(&["nodes"]);
    NodeKindInfo::new(
        "map",
        "Map",
        "composition",
        "Runs a sub-graph once per item of a list, with a concurrency cap, and gathers the \
         results in order.",
    )
    .with_icon("ViewModule")
    .with_color("#00bcd4")
    .with_reads(&["variables", "messages", "input", "context"])
    .with_writes(&["variables", "usage"])
    .with_property(
        "items",
        P::expression().describe("Expression yielding the list to map over."),
    )
    .with_property(
        "item_variable",
        P::string()
            .default("item")
            .describe("Name of the variable holding the current item inside the sub-graph."),
    )
    .with_property(
        "max_concurrency",
        P::integer()
            .range(1, 64)
            .default(4)
            .describe("Most items processed at once."),
    )
    .with_property("body", body)
    .with_property(
        "workflow_id",
        P::string().describe("A stored definition to run per item instead of `body`."),
    )
    .with_property(
        "output_variable",
        P::string()
            .default("results")
            .describe("Variable receiving the list of results."),
    )
    .with_required(&["items"])
    .with_required_one_of(&["body", "workflow_id"])
    .with_example(json!({
        "items": "variables.urls",
        "item_variable": "url",
        "max_concurrency": 4,
        "workflow_id": "summarise-page"
    }))
}

fn subworkflow() -> NodeKindInfo {
    NodeKindInfo::new(
        "subworkflow",
        "Sub-workflow",
        "composition",
        "Runs another definition or template as one node.",
    )
    .with_icon("AccountTree")
    .with_color("#8bc34a")
    .with_reads(&["messages", "variables", "input"])
    .with_writes(&["variables", "usage"])
    .with_property(
        "workflow_id",
        P::string().describe("The stored definition to run."),
    )
    .with_property("template_id", P::string().describe("The template to run."))
    .with_property(
        "input",
        P::object().describe("Input of the sub-execution (its `input`)."),
    )
    .with_property(
        "output_variable",
        output_variable("the sub-execution's output"),
    )
    .with_required_one_of(&["workflow_id", "template_id"])
    .with_example(json!({
        "template_id": "document_qa",
        "input": {"message": "What changed?"},
        "output_variable": "answer"
    }))
}

fn http() -> NodeKindInfo {
    NodeKindInfo::new(
        "http",
        "HTTP Request",
        "tool",
        "Makes an HTTP request, limited to an allow-list of hosts, and stores the response.",
    )
    .with_icon("Http")
    .with_color("#ff5722")
    .with_reads(&["variables", "input", "messages"])
    .with_writes(&["variables"])
    .with_property(
        "method",
        P::string_enum(&["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
            .default("GET")
            .describe("HTTP method."),
    )
    .with_property("url", P::template().describe("The URL (a template)."))
    .with_property(
        "headers",
        P::object()
            .additional(P::string())
            .describe("Request headers."),
    )
    .with_property("body", P::any().describe("Request body (JSON)."))
    .with_property(
        "allowed_hosts",
        P::array(P::string())
            .min_items(1)
            .describe("Hosts the request may go to; any other host is refused."),
    )
    .with_property(
        "max_response_bytes",
        P::integer()
            .range(1, 100_000_000)
            .default(1_000_000)
            .describe("Largest response body accepted."),
    )
    .with_property("output_variable", output_variable("the response"))
    .with_required(&["url", "allowed_hosts"])
    .with_example(json!({
        "method": "GET",
        "url": "https://api.example.com/orders/{{ variables.order_id }}",
        "allowed_hosts": ["api.example.com"],
        "output_variable": "order"
    }))
}
