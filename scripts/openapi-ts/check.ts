// A small client written against the types openapi-typescript generates from the server's
// OpenAPI document (scripts/openapi-ts.sh copies this file next to target/openapi/chatter.d.ts
// and type-checks it with `tsc --strict`). The `@ts-expect-error` lines must be errors: if the
// document stopped requiring those fields, tsc would report the directive as unused.
import type { components, operations, paths } from "./chatter";

type Schemas = components["schemas"];
type Json<T> = T extends { content: { "application/json": infer B } } ? B : never;

// A definition as the contract's editor shape.
const create: Schemas["WorkflowDefinitionCreate"] = {
  name: "hello",
  description: null,
  nodes: [
    { id: "start", type: "start", position: { x: 0, y: 0 }, data: { label: "Start", nodeType: "start" } },
    {
      id: "chat",
      type: "llm",
      position: { x: 200, y: 0 },
      data: { label: "Chat", nodeType: "llm", config: { maxTokens: 300 } },
    },
    { id: "end", type: "end", position: { x: 400, y: 0 }, data: { label: "End", nodeType: "end" } },
  ],
  edges: [
    { id: "e1", source: "start", target: "chat" },
    { id: "e2", source: "chat", target: "end", data: { condition: "no_tool_calls", label: null } },
  ],
};

// @ts-expect-error `nodes` and `edges` are required
const incomplete: Schemas["WorkflowDefinitionCreate"] = { name: "no graph" };

// Answers, reached through the paths and operations of the document.
type Listing = Json<paths["/api/v1/workflows/definitions"]["get"]["responses"][200]>;
type Executed = Json<
  operations["execute_workflow_api_v1_workflows_definitions__workflow_id__execute_post"]["responses"][200]
>;
type Steps = Json<paths["/api/v1/workflows/executions/{execution_id}/steps"]["get"]["responses"][200]>;

function names(listing: Listing): string[] {
  return listing.definitions.map((d: Schemas["WorkflowDefinitionResponse"]) => `${d.id}: ${d.name} v${d.version}`);
}

function summary(execution: Executed): string {
  const tokens: number = execution.tokens_used ?? 0;
  return `${execution.id} ${execution.status} ${tokens} tokens, error ${execution.error_message ?? "none"}`;
}

function lastNode(steps: Steps): string | undefined {
  return steps.steps.at(-1)?.node_id;
}

// Errors are problem documents.
function explain(problem: Schemas["Problem"]): string {
  return `${problem.status} ${problem.title}: ${problem.detail} (${problem.request_id ?? "no id"})`;
}

const chat: Schemas["ChatRequest"] = { message: "Hello", enable_memory: true, temperature: 0.2 };
// @ts-expect-error `message` is required
const silent: Schemas["ChatRequest"] = { enable_memory: true };

const role: Schemas["MessageRole"] = "assistant";
// @ts-expect-error not a message role
const wrongRole: Schemas["MessageRole"] = "robot";

// Jobs: an asynchronous execute answers 202 with the job; the queue's listing pages jobs.
type Queued = Json<
  operations["execute_workflow_api_v1_workflows_definitions__workflow_id__execute_post"]["responses"][202]
>;
type Jobs = Json<paths["/api/v1/jobs"]["get"]["responses"][200]>;

function progress(job: Queued, jobs: Jobs): string {
  const state: Schemas["JobState"] = job.status;
  const done = jobs.jobs.filter((j: Schemas["Job"]) => j.status === "completed").length;
  return `${job.id} (${job.priority}, execution ${job.execution_id ?? "not yet"}) ${state}; ${done} done`;
}

const submit: Schemas["JobSubmit"] = { workflow_id: "01ABC", input: { message: "hi" }, priority: "high" };
// @ts-expect-error not a priority
const urgent: Schemas["JobSubmit"] = { workflow_id: "01ABC", priority: "urgent" };
// @ts-expect-error `inputs` is required
const emptyBatch: Schemas["JobBatch"] = { template_id: "universal_chat" };

// The OpenAI-compatible API and the metrics.
type Completion = Json<paths["/v1/chat/completions"]["post"]["responses"][200]>;
const ask: Schemas["ChatCompletionRequest"] = {
  model: "template:universal_chat",
  messages: [{ role: "user", content: "Hello" }],
  stream: false,
};
// @ts-expect-error `model` is required
const noModel: Schemas["ChatCompletionRequest"] = { messages: [] };

function answerOf(completion: Completion): string {
  const choice = completion.choices[0];
  return `${choice?.message.content ?? ""} (${completion.usage.total_tokens} tokens, ${completion.execution_id})`;
}

function deltaOf(chunk: Schemas["ChatCompletionChunk"]): string {
  return chunk.choices.map((c) => c.delta.content ?? "").join("");
}

function errorOf(error: Schemas["OpenAIError"]): string {
  return `${error.error.type}: ${error.error.message} (${error.error.code ?? "no code"})`;
}

function errorRate(metrics: Schemas["MetricsResponse"]): number {
  return metrics.performance.error_rate;
}

export {
  answerOf,
  ask,
  chat,
  create,
  deltaOf,
  emptyBatch,
  errorOf,
  errorRate,
  explain,
  incomplete,
  lastNode,
  names,
  noModel,
  progress,
  role,
  silent,
  submit,
  summary,
  urgent,
  wrongRole,
};
