//! Unit tests of expressions and templates.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// An assistant turn that asked for two tools, after a user question; two tool calls were
/// executed earlier in the run.
fn with_tool_calls() -> Value {
    let assistant = json!({
        "role": "assistant",
        "content": "Let me check the WEATHER for you.",
        "tool_calls": [
            {"id": "c1", "name": "weather", "arguments": {"city": "Paris"}},
            {"id": "c2", "name": "clock", "arguments": {}}
        ]
    });
    json!({
        "input": {"message": "What's the weather in Paris?", "user": "ada"},
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "What's the weather in Paris?"},
            assistant.clone()
        ],
        "last_message": assistant,
        "variables": {"max_tool_calls": 5, "mode": "fast", "retries": 0, "verbose": true,
                      "label": "in progress", "limit_text": "5"},
        "context": [{"content": "Paris is in France.", "score": 0.9, "source": "geo.md",
                     "metadata": {}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                  "cost": 0.0021},
        "loop": {
            "refine": {"iteration": 1, "max_iterations": 3, "continue": true},
            "retry-loop": {"iteration": 3, "max_iterations": 3, "continue": false}
        },
        "errors": [],
        "metadata": {"channel": "web"},
        "tool_calls": 2,
        "node": {"id": "route", "kind": "conditional", "iteration": 0}
    })
}

/// A plain assistant answer, no tool calls, six tool calls executed, one recorded error.
fn answered_with_errors() -> Value {
    let assistant = json!({"role": "assistant", "content": "It is sunny, refund approved."});
    json!({
        "input": {"message": "hi"},
        "messages": [{"role": "user", "content": "hi"}, assistant.clone()],
        "last_message": assistant,
        "variables": {"max_tool_calls": 5, "mode": "slow"},
        "context": [],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": 0.0},
        "loop": {},
        "errors": [{"node_id": "search", "message": "timed out", "kind": "timeout"}],
        "metadata": {},
        "tool_calls": 6,
        "node": {"id": "route", "kind": "conditional", "iteration": 2}
    })
}

/// The start of an execution: no message at all, nothing else.
fn empty_state() -> Value {
    json!({
        "input": {},
        "messages": [],
        "last_message": null,
        "variables": {},
        "context": [],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": 0.0},
        "loop": {},
        "errors": [],
        "metadata": {},
        "tool_calls": 0,
        "node": {"id": "start", "kind": "start", "iteration": 0}
    })
}

fn eval(source: &str, state: &Value) -> bool {
    Expression::compile(source)
        .unwrap_or_else(|e| panic!("{source}: {e}"))
        .eval(state)
        .unwrap_or_else(|e| panic!("{source}: {e}"))
}

fn compile_error(source: &str) -> String {
    match Expression::compile(source) {
        Ok(e) => panic!("`{source}` compiled to `{}`", e.translated()),
        Err(Error::Expression {
            expression,
            message,
        }) => {
            assert_eq!(expression, source);
            message
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

fn translation(source: &str) -> String {
    Expression::compile(source)
        .unwrap_or_else(|e| panic!("{source}: {e}"))
        .translated()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Old phrases: translation text

#[test]
fn old_atoms_translate_to_exact_native_text() {
    let cases = [
        (
            "has_tool_calls",
            "(last_message.tool_calls or []) | length > 0",
        ),
        (
            "no_tool_calls",
            "(last_message.tool_calls or []) | length == 0",
        ),
        ("has_errors", "(errors or []) | length > 0"),
        ("tool_calls < 10", "tool_calls < 10"),
        ("tool_calls <= 10", "tool_calls <= 10"),
        ("tool_calls > 0", "tool_calls > 0"),
        ("tool_calls >= 3", "tool_calls >= 3"),
        ("tool_calls == 2", "tool_calls == 2"),
        ("tool_calls != 2", "tool_calls != 2"),
        ("tool_calls<10", "tool_calls < 10"),
        (
            "tool_calls >= variable max_tool_calls",
            "(variables.max_tool_calls is number and tool_calls >= variables.max_tool_calls)",
        ),
        ("variable mode equals fast", "variables.mode == \"fast\""),
        (
            "variable mode equals \"fast\"",
            "variables.mode == \"fast\"",
        ),
        (
            "variable label equals 'in progress'",
            "variables.label == \"in progress\"",
        ),
        (
            "variable label equals in progress",
            "variables.label == \"in progress\"",
        ),
        (
            "variable retries equals 0",
            "(variables.retries == 0 or variables.retries == \"0\")",
        ),
        (
            "variable ratio equals -1.5",
            "(variables.ratio == -1.5 or variables.ratio == \"-1.5\")",
        ),
        (
            "variable verbose equals true",
            "(variables.verbose is true or variables.verbose == \"true\")",
        ),
        (
            "variable verbose equals False",
            "(variables.verbose is false or variables.verbose == \"False\")",
        ),
        (
            "variable choice equals null",
            "(variables.choice is none or variables.choice == \"null\")",
        ),
        (
            "message contains Weather",
            "\"weather\" in (last_message.content or \"\") | lower",
        ),
        (
            "message contains \"say \\\"hi\\\"\"",
            "\"say \\\"hi\\\"\" in (last_message.content or \"\") | lower",
        ),
        ("loop_refine_continue", "loop[\"refine\"].continue"),
        ("loop_retry-loop_continue", "loop[\"retry-loop\"].continue"),
        (
            "not has_tool_calls",
            "not ((last_message.tool_calls or []) | length > 0)",
        ),
        ("NOT has_errors", "not ((errors or []) | length > 0)"),
        (
            "not loop_refine_continue",
            "not (loop[\"refine\"].continue)",
        ),
        (
            "not tool_calls >= variable max_tool_calls",
            "not (variables.max_tool_calls is number and tool_calls >= variables.max_tool_calls)",
        ),
        (
            "not not has_errors",
            "not (not ((errors or []) | length > 0))",
        ),
    ];
    for (source, expected) in cases {
        assert_eq!(translation(source), expected, "{source}");
        assert!(Expression::compile(source).unwrap().is_legacy(), "{source}");
    }
}

#[test]
fn old_combinations_keep_and_binding_tighter_than_or() {
    let cases = [
        (
            "has_tool_calls AND tool_calls < 10",
            "(last_message.tool_calls or []) | length > 0 and tool_calls < 10",
        ),
        (
            "has_errors OR no_tool_calls AND tool_calls < 3",
            "(errors or []) | length > 0 or (last_message.tool_calls or []) | length == 0 and tool_calls < 3",
        ),
        (
            "has_tool_calls and tool_calls < 10 or has_errors",
            "(last_message.tool_calls or []) | length > 0 and tool_calls < 10 or (errors or []) | length > 0",
        ),
        (
            "message contains salt and pepper",
            "\"salt and pepper\" in (last_message.content or \"\") | lower",
        ),
        (
            "message contains refund and has_errors",
            "\"refund\" in (last_message.content or \"\") | lower and (errors or []) | length > 0",
        ),
        (
            "variable mode equals fast AND not loop_refine_continue",
            "variables.mode == \"fast\" and not (loop[\"refine\"].continue)",
        ),
    ];
    for (source, expected) in cases {
        assert_eq!(translation(source), expected, "{source}");
    }
}

#[test]
fn translate_legacy_is_exposed_for_the_validator() {
    assert_eq!(
        translate_legacy("no_tool_calls OR has_errors").map(Result::ok),
        Some(Some(
            "(last_message.tool_calls or []) | length == 0 or (errors or []) | length > 0"
                .to_owned()
        ))
    );
    assert!(translate_legacy("last_message.role == 'user'").is_none());
    assert!(translate_legacy("tool_calls < 10 and variables.x").is_none());
    match translate_legacy("has_errors AND") {
        Some(Err(Error::Expression { message, .. })) => assert_eq!(
            message,
            "old phrase: expected an old phrase after `AND`, found the end"
        ),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Old phrases: meaning

#[test]
fn old_atoms_evaluate_over_realistic_states() {
    let tools = with_tool_calls();
    let answered = answered_with_errors();
    let empty = empty_state();
    // (phrase, with tool calls, answered with errors, empty)
    let cases = [
        ("has_tool_calls", true, false, false),
        ("no_tool_calls", false, true, true),
        ("not has_tool_calls", false, true, true),
        ("not no_tool_calls", true, false, false),
        ("has_errors", false, true, false),
        ("not has_errors", true, false, true),
        ("tool_calls < 5", true, false, true),
        ("tool_calls <= 2", true, false, true),
        ("tool_calls > 2", false, true, false),
        ("tool_calls >= 6", false, true, false),
        ("tool_calls == 0", false, false, true),
        ("tool_calls != 0", true, true, false),
        ("tool_calls < 2.5", true, false, true),
        ("tool_calls < variable max_tool_calls", true, false, false),
        ("tool_calls >= variable max_tool_calls", false, true, false),
        ("tool_calls != variable max_tool_calls", true, true, false),
        // missing variable: false whatever the operator
        ("tool_calls >= variable missing", false, false, false),
        ("tool_calls < variable missing", false, false, false),
        // a numeric string is not a number
        ("tool_calls < variable limit_text", false, false, false),
        ("variable mode equals fast", true, false, false),
        ("variable mode equals slow", false, true, false),
        ("variable mode equals 'fast'", true, false, false),
        ("variable retries equals 0", true, false, false),
        ("variable verbose equals true", true, false, false),
        ("variable verbose equals True", true, false, false),
        ("variable verbose equals false", false, false, false),
        ("variable max_tool_calls equals 5.0", true, true, false),
        ("variable limit_text equals 5", true, false, false),
        ("variable limit_text equals '5'", true, false, false),
        ("variable label equals in progress", true, false, false),
        ("variable missing equals none", false, false, false),
        ("not variable mode equals fast", false, true, true),
        ("message contains weather", true, false, false),
        ("message contains WEATHER", true, false, false),
        ("message contains 'refund approved'", false, true, false),
        ("message contains \"Paris\"", false, false, false),
        ("loop_refine_continue", true, false, false),
        ("loop_retry-loop_continue", false, false, false),
        ("loop_unknown_continue", false, false, false),
        ("not loop_unknown_continue", true, true, true),
        ("not loop_refine_continue", false, true, true),
    ];
    for (source, t, a, e) in cases {
        assert_eq!(eval(source, &tools), t, "{source} with tool calls");
        assert_eq!(eval(source, &answered), a, "{source} answered");
        assert_eq!(eval(source, &empty), e, "{source} empty");
    }
}

#[test]
fn old_atoms_accept_null_lists() {
    // Some serialisers write `"tool_calls": null` and `"errors": null`.
    let state = json!({
        "last_message": {"role": "assistant", "content": null, "tool_calls": null},
        "errors": null,
        "tool_calls": 0,
    });
    assert!(!eval("has_tool_calls", &state));
    assert!(eval("no_tool_calls", &state));
    assert!(!eval("has_errors", &state));
    assert!(!eval("message contains none", &state));
}

#[test]
fn negation_wraps_every_atom_shape() {
    let cases = [
        (
            "not has_tool_calls",
            "not ((last_message.tool_calls or []) | length > 0)",
        ),
        ("not tool_calls < 3", "not (tool_calls < 3)"),
        (
            "not variable mode equals fast",
            "not (variables.mode == \"fast\")",
        ),
        (
            "not variable n equals 3",
            "not (variables.n == 3 or variables.n == \"3\")",
        ),
        (
            "not message contains (x)",
            "not (\"(x)\" in (last_message.content or \"\") | lower)",
        ),
        (
            "not variable mode equals \"a) or (b\"",
            "not (variables.mode == \"a) or (b\")",
        ),
    ];
    for (source, expected) in cases {
        assert_eq!(translation(source), expected, "{source}");
    }
    let tools = with_tool_calls();
    assert!(eval("not tool_calls < 2", &tools));
    assert!(!eval("not variable mode equals fast", &tools));
    assert!(eval("not variable mode equals \"a) or (b\"", &tools));
}

#[test]
fn old_combinations_evaluate_with_precedence() {
    let tools = with_tool_calls();
    let answered = answered_with_errors();
    // false AND false OR true: (false AND false) OR true = true; false AND (false OR true) = false
    assert!(eval("has_errors AND has_errors OR has_tool_calls", &tools));
    // true OR false AND false: true OR (false AND false) = true
    assert!(eval("has_tool_calls OR has_errors AND has_errors", &tools));
    // false OR true AND false = false
    assert!(!eval(
        "has_errors OR has_tool_calls AND tool_calls > 5",
        &tools
    ));
    assert!(eval(
        "has_tool_calls AND tool_calls < variable max_tool_calls AND variable mode equals fast",
        &tools
    ));
    assert!(!eval(
        "has_tool_calls AND tool_calls < variable max_tool_calls",
        &answered
    ));
    assert!(eval("no_tool_calls and has_errors", &answered));
    assert!(eval(
        "message contains sunny and has_errors or has_tool_calls",
        &answered
    ));
    assert!(eval(
        "message contains check the or loop_refine_continue",
        &tools
    ));
}

#[test]
fn malformed_old_phrases_are_errors() {
    let cases = [
        (
            "tool_calls <",
            "old phrase: expected a number or `variable <name>` after `tool_calls <`, found \
             the end",
        ),
        (
            "tool_calls < ten",
            "old phrase: expected a number or `variable <name>` after `tool_calls <`, found \
             `ten`",
        ),
        (
            "tool_calls >= variable",
            "old phrase: expected a variable name (letters, digits, `_`) after `variable`, found \
             the end",
        ),
        (
            "variable equals",
            "old phrase: expected a variable name (letters, digits, `_`) after `variable`, \
             found `equals`",
        ),
        (
            "variable mode equals",
            "old phrase: expected a value after `variable mode equals`, found the end",
        ),
        (
            "variable mode is fast",
            "old phrase: expected `equals` after `variable mode`, found `is`",
        ),
        (
            "message contains",
            "old phrase: expected a value after `message contains`, found the end",
        ),
        (
            "message contains ''",
            "old phrase: `message contains` needs a non-empty text",
        ),
        (
            "message has refund",
            "old phrase: expected `contains` after `message`, found `has`",
        ),
        (
            "has_errors AND",
            "old phrase: expected an old phrase after `AND`, found the end",
        ),
        (
            "has_errors and",
            "old phrase: expected an old phrase after `and`, found the end",
        ),
        (
            "has_errors has_tool_calls",
            "old phrase: expected AND or OR after `has_errors`, found `has_tool_calls`",
        ),
        (
            "has_tool_call AND has_errors",
            "old phrase: `has_tool_call` is not an old phrase (old phrases: has_tool_calls, \
             no_tool_calls, has_errors, tool_calls <op> <number>, tool_calls <op> variable \
             <name>, variable <name> equals <value>, message contains <text>, \
             loop_<id>_continue, each optionally preceded by `not`)",
        ),
        (
            "loop__continue",
            "old phrase: `loop__continue` names no loop (write loop_<id>_continue)",
        ),
        (
            "message contains 'unterminated",
            "old phrase: unterminated quoted text starting at column 18",
        ),
        (
            "has_errors and variables.x == 1",
            "old phrase: `variables.x` after `and` is not an old phrase; old phrases combine \
             only with other old phrases (has_tool_calls, no_tool_calls, has_errors, \
             tool_calls <op> <number>, tool_calls <op> variable <name>, variable <name> equals \
             <value>, message contains <text>, loop_<id>_continue, each optionally preceded by \
             `not`)",
        ),
        (
            "variable mode equals 'fast' extra",
            "old phrase: expected AND or OR after `'fast'`, found `extra`",
        ),
    ];
    for (source, expected) in cases {
        assert_eq!(compile_error(source), expected, "{source}");
    }
}

// ---------------------------------------------------------------------------------------------
// Native expressions

#[test]
fn native_expressions_evaluate_over_the_state() {
    let tools = with_tool_calls();
    let empty = empty_state();
    let cases = [
        ("last_message.role == 'assistant'", true, false),
        ("last_message.tool_calls[0].name == 'weather'", true, false),
        (
            "last_message.tool_calls | map(attribute='name') | list == ['weather', 'clock']",
            true,
            false,
        ),
        ("messages | length >= 3", true, false),
        (
            "messages | selectattr('role', 'equalto', 'user') | list | length == 1",
            true,
            false,
        ),
        (
            "input.message is defined and 'paris' in input.message | lower",
            true,
            false,
        ),
        (
            "usage.total_tokens > 100 and usage.cost < 0.01",
            true,
            false,
        ),
        (
            "loop.refine.iteration < loop.refine.max_iterations",
            true,
            false,
        ),
        (
            "context | length > 0 and context[0].score >= 0.5",
            true,
            false,
        ),
        ("errors | length == 0", true, true),
        ("metadata.channel == 'web'", true, false),
        ("node.kind == 'conditional'", true, false),
        ("node.iteration == 0", true, true),
        // missing nested attributes of known variables are falsy, not errors
        ("variables.nope.deeper.still", false, false),
        ("last_message.content", true, false),
        ("not last_message", false, true),
        ("input.missing or metadata.missing", false, false),
        ("[1, 2, 3] | select('odd') | list | length == 2", true, true),
        ("range(3) | sum == 3", true, true),
        (
            "messages | map(attribute='role') | select('eq', 'tool') | list",
            false,
            false,
        ),
    ];
    for (source, t, e) in cases {
        let expr = Expression::compile(source).unwrap_or_else(|err| panic!("{source}: {err}"));
        assert!(!expr.is_legacy(), "{source}");
        assert_eq!(expr.translated(), source);
        assert_eq!(expr.eval(&tools).unwrap(), t, "{source} with tool calls");
        assert_eq!(expr.eval(&empty).unwrap(), e, "{source} empty");
    }
}

#[test]
fn jinja_local_bindings_are_not_unknown_variables() {
    let tools = with_tool_calls();
    // A test with a function argument and a namespace-free inline if.
    assert!(eval(
        "(messages | selectattr('role', 'eq', 'assistant') | first).content is string",
        &tools
    ));
    assert!(eval("dict(a=1).a == 1", &tools));
}

#[test]
fn unknown_variables_are_rejected_with_the_list_of_variables() {
    let vars = "input, messages, last_message, variables, context, usage, loop, errors, \
                metadata, tool_calls, node";
    assert_eq!(
        compile_error("user_message == 'hi'"),
        format!("unknown variable `user_message`; the variables are {vars}")
    );
    // the alphabetically first unknown name is reported
    assert_eq!(
        compile_error("zeta and alpha and messages"),
        format!("unknown variable `alpha`; the variables are {vars}")
    );
    assert_eq!(
        compile_error("has_tool_cals"),
        format!("unknown variable `has_tool_cals`; the variables are {vars}")
    );
    assert_eq!(
        compile_error("(has_tool_calls)"),
        format!(
            "unknown variable `has_tool_calls`; the variables are {vars} (`has_tool_calls` is \
             an old phrase, which only combines with other old phrases; in a native expression \
             write `(last_message.tool_calls or []) | length > 0`)"
        )
    );
    assert_eq!(
        compile_error("loop_refine_continue == true"),
        "old phrase: expected AND or OR after `loop_refine_continue`, found `==`"
    );
}

#[test]
fn syntax_errors_are_rejected_with_messages() {
    let cases = [
        (
            "messages | length >",
            "syntax error: unexpected end of input, expected expression (at column 19)",
        ),
        (
            "last_message.role == 'user",
            "syntax error: unexpected end of string (at column 27)",
        ),
        (
            "variables.x ==== 1",
            "syntax error: unexpected `==` (at column 15)",
        ),
        (
            "(tool_calls > 1",
            "syntax error: unexpected end of input, expected `)` (at column 15)",
        ),
        ("   ", "empty expression"),
        ("", "empty expression"),
    ];
    for (source, expected) in cases {
        assert_eq!(compile_error(source), expected, "{source}");
    }
}

#[test]
fn runtime_errors_are_errors_never_true() {
    let tools = with_tool_calls();
    let cases = [
        (
            "variables.mode / 2 > 1",
            "invalid operation: tried to use / operator on unsupported types string and number",
        ),
        (
            "messages | nosuchfilter",
            "unknown filter: filter nosuchfilter is unknown",
        ),
        (
            "tool_calls is nosuchtest",
            "unknown test: test nosuchtest is unknown",
        ),
    ];
    for (source, expected) in cases {
        let expr = Expression::compile(source).unwrap();
        match expr.eval(&tools) {
            Err(Error::Expression {
                expression,
                message,
            }) => {
                assert_eq!(expression, source);
                assert_eq!(message, expected, "{source}");
            }
            other => panic!("{source}: {other:?}"),
        }
    }
    // Arithmetic on a missing variable fails; it is not false (nor true).
    let expr = Expression::compile("variables.max_tool_calls - tool_calls == 3").unwrap();
    assert!(expr.eval(&tools).unwrap());
    assert_eq!(
        expr.eval(&empty_state()).unwrap_err().to_string(),
        "invalid expression `variables.max_tool_calls - tool_calls == 3`: invalid operation: \
         tried to use - operator on unsupported types undefined and number"
    );
    // A context that is not an object is an error too.
    let expr = Expression::compile("tool_calls > 1").unwrap();
    assert_eq!(
        expr.eval(&json!([1])).unwrap_err().to_string(),
        "invalid expression `tool_calls > 1`: the context must be a JSON object, not an array"
    );
}

#[test]
fn constant_expressions_are_evaluated_once_and_failing_ones_rejected() {
    assert_eq!(Expression::compile("true").unwrap().constant(), Some(true));
    assert_eq!(
        Expression::compile("1 > 2").unwrap().constant(),
        Some(false)
    );
    assert_eq!(
        Expression::compile("'a' ~ 'b' == 'ab'").unwrap().constant(),
        Some(true)
    );
    assert_eq!(
        Expression::compile("range(0)").unwrap().constant(),
        Some(false)
    );
    assert_eq!(
        Expression::compile("tool_calls > 1").unwrap().constant(),
        None
    );
    assert_eq!(Expression::compile("has_errors").unwrap().constant(), None);
    // a constant still evaluates, whatever the context
    assert!(
        Expression::compile("true")
            .unwrap()
            .eval(&json!({}))
            .unwrap()
    );
    assert_eq!(
        compile_error("1 / 0"),
        "always fails: invalid operation: unable to calculate 1 / 0"
    );
}

#[test]
fn variable_reads_name_the_workflow_variables() {
    let expr = Expression::compile(
        "variables.mode == 'fast' and variables['max retries'] > 1 or variables.mode \
         and input.variables.ignored and variables[\"x\"]",
    )
    .unwrap();
    assert_eq!(expr.variable_reads(), ["mode", "max retries", "x"]);
    assert!(!expr.reads_variables_dynamically());
    assert_eq!(
        Expression::compile("tool_calls >= variable max_tool_calls AND variable mode equals x")
            .unwrap()
            .variable_reads(),
        ["max_tool_calls", "mode"]
    );
    let dynamic = Expression::compile("variables[input.key] or variables | length").unwrap();
    assert!(dynamic.variable_reads().is_empty());
    assert!(dynamic.reads_variables_dynamically());
    assert!(
        Expression::compile("variables.items() | list")
            .unwrap()
            .reads_variables_dynamically()
    );
    assert!(
        Expression::compile("has_errors")
            .unwrap()
            .variable_reads()
            .is_empty()
    );
    assert_eq!(
        Expression::compile("has_errors AND tool_calls > 1")
            .unwrap()
            .state_reads(),
        ["errors", "tool_calls"]
    );
}

#[test]
fn fuel_exhaustion_is_an_error() {
    // One huge allocation is refused before it happens.
    let expr = Expression::compile("(input.text * 10000000) | length > 0").unwrap();
    assert_eq!(
        expr.eval(&json!({"input": {"text": "abcdefgh"}}))
            .unwrap_err()
            .to_string(),
        "invalid expression `(input.text * 10000000) | length > 0`: engine ran out of fuel"
    );
    // Many small steps run out too.
    let expr = Expression::compile(
        "range(input.n) | map('string') | join(',') | length > range(input.n) | join | length",
    )
    .unwrap();
    assert!(expr.eval(&json!({"input": {"n": 10}})).unwrap());
    assert_eq!(
        expr.eval(&json!({"input": {"n": 100000}}))
            .unwrap_err()
            .to_string(),
        "invalid expression `range(input.n) | map('string') | join(',') | length > \
         range(input.n) | join | length`: engine ran out of fuel"
    );
}

#[test]
fn oversized_and_overdeep_expressions_are_rejected() {
    let chain = vec!["tool_calls"; MAX_OPERATORS_PER_EXPRESSION + 2].join(" + ");
    assert_eq!(
        compile_error(&chain),
        "too complex: more than 256 operators in one expression"
    );
    let long = format!("'{}' == 'x'", "a".repeat(MAX_EXPRESSION_BYTES));
    assert_eq!(
        compile_error(&long),
        format!("too long: {} bytes (the limit is 16384)", long.len())
    );
}

/// The most complex inputs accepted compile on a thread with the default 2 MiB stack (tokio
/// workers, test threads) without overflowing it. (With a cap six times larger, debug builds
/// overflow here.)
#[test]
fn deepest_accepted_inputs_fit_a_small_stack() {
    let handle = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            let n = MAX_OPERATORS_PER_EXPRESSION;
            // 70 is the deepest bracket nesting the parser accepts.
            let nest = 70;
            let sources = [
                vec!["tool_calls"; n + 1].join("+"),
                format!("{}tool_calls", "not ".repeat(n)),
                format!("{}tool_calls", "-".repeat(n)),
                format!("tool_calls{}", ".a".repeat(n)),
                format!("tool_calls{}", "|string".repeat(n / 2)),
                format!("input{}", "()".repeat(n / 2)),
                format!("messages{}", "[0]".repeat(n / 2)),
                format!(
                    "{}{}{}",
                    "(".repeat(nest),
                    vec!["tool_calls"; n - 2 * nest + 1].join("+"),
                    ")".repeat(nest)
                ),
                format!(
                    "{}{}{}",
                    "[".repeat(nest),
                    vec!["tool_calls"; n - 2 * nest + 1].join("*"),
                    "]".repeat(nest)
                ),
                format!("{}1", "1 if tool_calls else ".repeat(n / 2)),
            ];
            let mut compiled = Vec::new();
            for source in &sources {
                compiled.push(
                    Expression::compile(source)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                );
                let template = format!("{{% if tool_calls %}}{{{{ {source} }}}}{{% endif %}}");
                compiled.push(
                    PromptTemplate::compile(&template)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                );
            }
            let nested = format!(
                "{}{{{{ {} }}}}{}",
                "{% if tool_calls %}".repeat(nest),
                vec!["tool_calls"; n + 1].join("+"),
                "{% endif %}".repeat(nest)
            );
            compiled.push(
                PromptTemplate::compile(&nested)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
            compiled
        })
        .unwrap();
    let compiled = handle.join().expect("no stack overflow");
    assert_eq!(compiled.len(), 21);
    for outcome in compiled {
        assert_eq!(outcome, Ok(()));
    }
}

#[test]
fn expressions_are_shared_and_thread_safe() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Expression>();
    assert_send_sync::<PromptTemplate>();
    let expr = Expression::compile("has_tool_calls AND tool_calls < 5").unwrap();
    let state = with_tool_calls();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let expr = expr.clone();
            let state = state.clone();
            std::thread::spawn(move || (0..50).all(|_| expr.eval(&state).unwrap()))
        })
        .collect();
    for handle in handles {
        assert!(handle.join().unwrap());
    }
    assert_eq!(expr.to_string(), "has_tool_calls AND tool_calls < 5");
}

#[test]
fn eval_value_and_eval_json_use_a_converted_context() {
    let state = with_tool_calls();
    let converted = context_value(&state).unwrap();
    let expr = Expression::compile("loop_refine_continue AND has_tool_calls").unwrap();
    assert!(expr.eval_value(&converted).unwrap());
    let items =
        Expression::compile("last_message.tool_calls | map(attribute='name') | list").unwrap();
    assert_eq!(
        items.eval_json(&state).unwrap(),
        json!(["weather", "clock"])
    );
    let data = Expression::compile("{'n': tool_calls, 'ok': true, 'x': none, 'f': 1.5}").unwrap();
    assert_eq!(
        data.eval_json(&state).unwrap(),
        json!({"n": 2, "ok": true, "x": null, "f": 1.5})
    );
    assert_eq!(
        Expression::compile("variables.nope")
            .unwrap()
            .eval_json(&state)
            .unwrap(),
        Value::Null
    );
}

#[test]
fn overdeep_contexts_are_errors() {
    let mut deep = json!(1);
    for _ in 0..300 {
        deep = json!([deep]);
    }
    let expr = Expression::compile("input | length > 0").unwrap();
    assert_eq!(
        expr.eval(&json!({"input": deep})).unwrap_err().to_string(),
        "invalid expression `input | length > 0`: the context nests deeper than 256 levels"
    );
}

// ---------------------------------------------------------------------------------------------
// Prompt templates

#[test]
fn templates_render_messages_variables_and_input() {
    let state = with_tool_calls();
    let template = PromptTemplate::compile(
        "Mode: {{ variables.mode }} for {{ input.user }}.\n\
         {% for m in messages if m.role != 'system' %}{{ loop.index }}. {{ m.role }}: {{ m.content }}\n\
         {% endfor %}\
         Tools so far: {{ tool_calls }}/{{ variables.max_tool_calls }}; context: {{ context[0].content }}\n",
    )
    .unwrap();
    assert_eq!(
        template.render(&state).unwrap(),
        "Mode: fast for ada.\n\
         1. user: What's the weather in Paris?\n\
         2. assistant: Let me check the WEATHER for you.\n\
         Tools so far: 2/5; context: Paris is in France.\n"
    );
    assert_eq!(template.variable_reads(), ["mode", "max_tool_calls"]);
    assert_eq!(
        template.state_reads(),
        ["input", "messages", "variables", "context", "tool_calls"]
    );
}

#[test]
fn templates_do_not_escape_and_print_missing_values_empty() {
    let state = with_tool_calls();
    let template =
        PromptTemplate::compile("<b>{{ input.message }}</b> [{{ variables.missing.x }}]").unwrap();
    assert_eq!(
        template.render(&state).unwrap(),
        "<b>What's the weather in Paris?</b> []"
    );
    // no state variable at all: plain text
    let plain = PromptTemplate::compile("You are helpful.").unwrap();
    assert_eq!(plain.render(&json!({})).unwrap(), "You are helpful.");
    assert!(plain.state_reads().is_empty());
    assert_eq!(plain.source(), "You are helpful.");
}

#[test]
fn templates_bind_locals_set_and_macros() {
    let state = with_tool_calls();
    let template = PromptTemplate::compile(
        "{% set who = input.user | upper %}{% macro tag(x) %}<{{ x }}>{% endmacro %}\
         {{ tag(who) }}{% for k, v in variables | items %}{% if k == 'mode' %} {{ k }}={{ v }}{% endif %}{% endfor %}",
    )
    .unwrap();
    assert_eq!(template.render(&state).unwrap(), "<ADA> mode=fast");
    assert!(template.reads_variables_dynamically());
}

#[test]
fn template_errors_carry_the_line() {
    let vars = "input, messages, last_message, variables, context, usage, loop, errors, \
                metadata, tool_calls, node";
    let cases = [
        (
            "Hello\n{{ user_name }}",
            format!("line 2: unknown variable `user_name`; the variables are {vars}"),
        ),
        (
            "Hello\n\n{% if messages %}open",
            "line 3: syntax error: unexpected end of input, expected end of block".to_owned(),
        ),
        (
            "Hi {{ messages | length }",
            "line 1: syntax error: unexpected `}`, expected end of variable block".to_owned(),
        ),
    ];
    for (source, expected) in cases {
        match PromptTemplate::compile(source) {
            Err(Error::Template { message }) => assert_eq!(message, expected, "{source}"),
            other => panic!("{source}: {other:?}"),
        }
    }
    let template = PromptTemplate::compile("ok\n{{ variables.mode / 2 }}").unwrap();
    match template.render(&with_tool_calls()) {
        Err(Error::Template { message }) => assert_eq!(
            message,
            "line 2: invalid operation: tried to use / operator on unsupported types string \
             and number"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn template_fuel_exhaustion_is_an_error() {
    let template = PromptTemplate::compile(
        "{% for i in range(input.n) %}{% for j in range(input.n) %}.{% endfor %}{% endfor %}",
    )
    .unwrap();
    assert_eq!(
        template.render(&json!({"input": {"n": 3}})).unwrap(),
        "........."
    );
    match template.render(&json!({"input": {"n": 1000}})) {
        Err(Error::Template { message }) => {
            assert_eq!(message, "line 1: engine ran out of fuel")
        }
        other => panic!("{other:?}"),
    }
    // runaway macro recursion stops at the recursion limit
    let template =
        PromptTemplate::compile("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").unwrap();
    assert!(template.render(&json!({})).is_err());
}

#[test]
fn documented_examples_work() {
    let tools = with_tool_calls();
    let expressions = [
        (
            "last_message.role == 'assistant' and not last_message.tool_calls",
            false,
        ),
        ("tool_calls < variables.max_tool_calls", true),
        ("usage.total_tokens > 50000 or usage.cost > 0.5", false),
        ("'weather' in (last_message.content or '') | lower", true),
        ("loop.refine.iteration < 2 and errors | length == 0", true),
        (
            "messages | selectattr('role', 'eq', 'user') | list | length >= 3",
            false,
        ),
        (
            "('long' if messages | length > 10 else 'short') == 'short'",
            true,
        ),
        ("variables.n | default(0) + 1 == 1", true),
    ];
    for (source, expected) in expressions {
        assert_eq!(eval(source, &tools), expected, "{source}");
    }
    let template = PromptTemplate::compile(
        "You are a support agent for {{ input.company | default('our company') }}.\n\
         {% if context %}Use these documents:\n\
         {% for doc in context %}- {{ doc.content }} ({{ doc.source }})\n\
         {% endfor %}{% endif %}\n\
         {% for m in messages if m.role != 'system' %}{{ m.role }}: {{ m.content }}\n\
         {% endfor %}\
         {% set loops = loop %}{% for i in range(1) %}{{ loops.refine.iteration }}{% endfor %}",
    )
    .unwrap();
    assert_eq!(
        template.render(&tools).unwrap(),
        "You are a support agent for our company.\n\
         Use these documents:\n\
         - Paris is in France. (geo.md)\n\
         \n\
         user: What's the weather in Paris?\n\
         assistant: Let me check the WEATHER for you.\n\
         1"
    );
}

// ---------------------------------------------------------------------------------------------
// Robustness

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_text_never_panics(source in "\\PC{0,80}") {
        let state = with_tool_calls();
        if let Ok(expr) = Expression::compile(&source) {
            let _ = expr.eval(&state);
        }
        if let Ok(template) = PromptTemplate::compile(&source) {
            let _ = template.render(&state);
        }
        let _ = translate_legacy(&source);
    }

    #[test]
    fn random_phrase_soup_never_panics(words in proptest::collection::vec(
        prop_oneof![
            Just("has_tool_calls"), Just("no_tool_calls"), Just("has_errors"), Just("tool_calls"),
            Just("variable"), Just("equals"), Just("message"), Just("contains"), Just("AND"),
            Just("OR"), Just("and"), Just("or"), Just("not"), Just("NOT"), Just("<"), Just(">="),
            Just("=="), Just("!="), Just("3"), Just("x"), Just("'q'"), Just("\""), Just("loop_a_continue"),
            Just("variables.x"), Just("("), Just(")"), Just("|"), Just("length"), Just("{{"), Just("%}"),
        ],
        0..12,
    )) {
        let source = words.join(" ");
        let state = answered_with_errors();
        if let Ok(expr) = Expression::compile(&source) {
            let _ = expr.eval(&state);
            let _ = expr.eval(&empty_state());
        }
        if let Ok(template) = PromptTemplate::compile(&source) {
            let _ = template.render(&state);
        }
    }

    #[test]
    fn random_jinja_soup_never_panics(fragments in proptest::collection::vec(
        prop::sample::select(vec![
            "messages", "last_message", "variables", "input", "loop", "errors", "tool_calls",
            "usage", "context", ".content", ".tool_calls", ".mode", ".x", "[0]", "[-1]", "|",
            "length", "lower", "upper", "sort", "join", "first", "last", "sum", "abs", "int",
            "float", "string", "tojson", "items", "unique", "reverse", "batch(2)", "slice(2)",
            "round", "replace('a','b')", "format(1)", "map(attribute='role')", "list",
            "select('odd')", "selectattr('role')", "default(1)", "(", ")", "+", "-", "*", "/",
            "//", "%", "**", "~", "==", "!=", "<", ">=", "and", "or", "not", "in", "is",
            "defined", "none", "number", "string", "true", "1", "0", "2.5", "-1", "'a'", "\"b\"",
            "[", "]", "{", "}", ",", ":", "if", "else", "range", "dict", "namespace", "(3)",
            "()", "=",
        ]),
        1..16,
    )) {
        let source = fragments.join(" ");
        let states = [with_tool_calls(), answered_with_errors(), empty_state(), json!({})];
        if let Ok(expr) = Expression::compile(&source) {
            for state in &states {
                let _ = expr.eval(state);
                let _ = expr.eval_json(state);
            }
        }
        for template in [format!("{{{{ {source} }}}}"), format!("{{% if {source} %}}x{{% endif %}}")] {
            if let Ok(template) = PromptTemplate::compile(&template) {
                for state in &states {
                    let _ = template.render(state);
                }
            }
        }
    }

    /// Random combinations of old phrases mean, after translation, what the old platform
    /// computed: checked against a direct implementation of the phrases over random states.
    #[test]
    fn old_phrases_keep_their_meaning(
        atoms in proptest::collection::vec((any::<bool>(), atom_strategy()), 1..6),
        joiners in proptest::collection::vec((any::<bool>(), any::<bool>()), 5),
        state in state_strategy(),
    ) {
        let mut source = String::new();
        let mut groups: Vec<Vec<bool>> = vec![Vec::new()];
        for (i, (negate, atom)) in atoms.iter().enumerate() {
            if i > 0 {
                let (is_and, upper) = joiners[i - 1];
                source.push_str(match (is_and, upper) {
                    (true, true) => " AND ",
                    (true, false) => " and ",
                    (false, true) => " OR ",
                    (false, false) => " or ",
                });
                if !is_and {
                    groups.push(Vec::new());
                }
            }
            if *negate {
                source.push_str("not ");
            }
            source.push_str(&atom.text());
            let value = atom.holds(&state) != *negate;
            if let Some(group) = groups.last_mut() {
                group.push(value);
            }
        }
        let expected = groups.iter().any(|group| group.iter().all(|v| *v));
        let expr = Expression::compile(&source).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(expr.is_legacy());
        prop_assert_eq!(expr.eval(&state).map_err(|e| TestCaseError::fail(e.to_string()))?,
            expected, "{} => {} over {}", source, expr.translated(), state);
    }
}

/// One old phrase with its parameters.
#[derive(Debug, Clone)]
enum Atom {
    HasToolCalls,
    NoToolCalls,
    HasErrors,
    Count(&'static str, i64),
    CountVar(&'static str, &'static str),
    Equals(&'static str, &'static str),
    Contains(&'static str),
    LoopContinue(&'static str),
}

impl Atom {
    fn text(&self) -> String {
        match self {
            Atom::HasToolCalls => "has_tool_calls".to_owned(),
            Atom::NoToolCalls => "no_tool_calls".to_owned(),
            Atom::HasErrors => "has_errors".to_owned(),
            Atom::Count(op, n) => format!("tool_calls {op} {n}"),
            Atom::CountVar(op, name) => format!("tool_calls {op} variable {name}"),
            Atom::Equals(name, value) => format!("variable {name} equals {value}"),
            Atom::Contains(term) => format!("message contains {term}"),
            Atom::LoopContinue(id) => format!("loop_{id}_continue"),
        }
    }

    /// The old platform's meaning, computed directly.
    fn holds(&self, state: &Value) -> bool {
        let calls = state["tool_calls"].as_i64().unwrap_or(0);
        let compare = |op: &str, a: i64, b: f64| {
            let a = a as f64;
            match op {
                "<" => a < b,
                "<=" => a <= b,
                ">" => a > b,
                ">=" => a >= b,
                "==" => a == b,
                _ => a != b,
            }
        };
        let has_calls = state["last_message"]["tool_calls"]
            .as_array()
            .is_some_and(|calls| !calls.is_empty());
        match self {
            Atom::HasToolCalls => has_calls,
            Atom::NoToolCalls => !has_calls,
            Atom::HasErrors => state["errors"].as_array().is_some_and(|e| !e.is_empty()),
            Atom::Count(op, n) => compare(op, calls, *n as f64),
            Atom::CountVar(op, name) => state["variables"][*name]
                .as_f64()
                .is_some_and(|limit| compare(op, calls, limit)),
            Atom::Equals(name, value) => match &state["variables"][*name] {
                Value::String(s) => s == value,
                Value::Number(n) => value.parse::<f64>().ok() == n.as_f64(),
                _ => false,
            },
            Atom::Contains(term) => state["last_message"]["content"]
                .as_str()
                .is_some_and(|c| c.to_lowercase().contains(&term.to_lowercase())),
            Atom::LoopContinue(id) => state["loop"][*id]["continue"] == json!(true),
        }
    }
}

fn atom_strategy() -> impl Strategy<Value = Atom> {
    let op = prop::sample::select(vec!["<", "<=", ">", ">=", "==", "!="]);
    prop_oneof![
        Just(Atom::HasToolCalls),
        Just(Atom::NoToolCalls),
        Just(Atom::HasErrors),
        (op.clone(), 0i64..6).prop_map(|(op, n)| Atom::Count(op, n)),
        (op, prop::sample::select(vec!["max", "mode", "unset"]))
            .prop_map(|(op, name)| Atom::CountVar(op, name)),
        (
            prop::sample::select(vec!["mode", "max", "unset"]),
            prop::sample::select(vec!["fast", "slow", "3", "in progress"])
        )
            .prop_map(|(name, value)| Atom::Equals(name, value)),
        prop::sample::select(vec!["refund", "REFUND please", "hello", "lease"])
            .prop_map(Atom::Contains),
        prop::sample::select(vec!["a", "b-2", "unknown"]).prop_map(Atom::LoopContinue),
    ]
}

fn state_strategy() -> impl Strategy<Value = Value> {
    let last_message = prop_oneof![
        Just(Value::Null),
        (
            prop::sample::select(vec!["Refund please", "hello there", "", "in progress"]),
            prop::sample::select(vec![0usize, 1, 2, 3]),
        )
            .prop_map(|(content, calls)| {
                let mut message = json!({"role": "assistant", "content": content});
                match calls {
                    0 => {}
                    1 => message["tool_calls"] = Value::Null,
                    2 => message["tool_calls"] = json!([]),
                    _ => {
                        message["tool_calls"] =
                            json!([{"id": "c1", "name": "search", "arguments": {}}])
                    }
                }
                message
            }),
    ];
    let variable = prop_oneof![
        Just(None),
        Just(Some(json!(3))),
        Just(Some(json!(3.0))),
        Just(Some(json!("3"))),
        Just(Some(json!("fast"))),
        Just(Some(json!("in progress"))),
    ];
    (
        0i64..7,
        last_message,
        any::<bool>(),
        variable.clone(),
        variable,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(calls, last, errors, max, mode, a, b)| {
            let mut variables = serde_json::Map::new();
            if let Some(max) = max {
                variables.insert("max".to_owned(), max);
            }
            if let Some(mode) = mode {
                variables.insert("mode".to_owned(), mode);
            }
            json!({
                "messages": if last.is_null() { json!([]) } else { json!([last.clone()]) },
                "last_message": last,
                "errors": if errors { json!([{"node_id": "n", "message": "boom", "kind": "tool"}]) }
                          else { json!([]) },
                "variables": variables,
                "loop": {"a": {"iteration": 0, "max_iterations": 3, "continue": a},
                         "b-2": {"iteration": 1, "max_iterations": 3, "continue": b}},
                "tool_calls": calls,
            })
        })
}

#[test]
fn slices_read_their_state_variables() {
    // minijinja's name tracker does not see names inside slices; the token scan does.
    let ctx = json!({"variables": {"xs": [1, 2, 3]}, "input": {"n": 2}});
    let e = Expression::compile("variables.xs[:input.n]").unwrap();
    assert_eq!(e.constant(), None);
    assert_eq!(e.eval_json(&ctx).unwrap(), json!([1, 2]));
    let e = Expression::compile("variables.xs[1:] | length > 1").unwrap();
    assert!(e.eval(&ctx).unwrap());
}

/// The fast paths give exactly what minijinja gives, on every kind of value they may meet;
/// where they cannot be sure they defer (an error or a mixed comparison is minijinja's to make).
#[test]
fn fast_paths_agree_with_minijinja() {
    let fast = [
        "has_tool_calls",
        "no_tool_calls",
        "tool_calls < 3",
        "tool_calls >= 2",
        "tool_calls == 2",
        "variables.i < 100",
        "variables.i <= -1",
        "variables.i > 0",
        "variables.i != 5",
        "variables.i == 5",
        "variables.i >= 99",
    ];
    let not_fast = [
        "has_tool_calls AND tool_calls < 10",
        "variables.i < 1.5",
        "variables.i < tool_calls",
        "variables.items() | length > 0",
        "tool_calls < variable max",
    ];
    let values = [
        json!(null),
        json!(0),
        json!(5),
        json!(-1),
        json!(99),
        json!(100),
        json!(2.5),
        json!(5.0),
        json!(u64::MAX),
        json!("5"),
        json!(true),
        json!([1, 2]),
        json!({"a": 1}),
    ];
    let mut contexts = Vec::new();
    for value in &values {
        contexts.push(json!({"variables": {"i": value}, "tool_calls": value,
                             "last_message": {"role": "assistant", "tool_calls": value}}));
        contexts.push(json!({"variables": {}, "tool_calls": 2, "last_message": value}));
    }
    contexts.push(json!({"last_message": {"role": "user", "content": "hi"}, "tool_calls": 0}));
    contexts.push(json!({}));
    contexts.push(json!(null));
    contexts.push(with_tool_calls());
    for source in fast {
        let e = Expression::compile(source).unwrap();
        assert!(e.has_fast_path(), "{source} has no fast path");
        for ctx in &contexts {
            let quick = e.eval(ctx).map_err(|err| err.to_string());
            let slow = e.eval_slow(ctx).map_err(|err| err.to_string());
            assert_eq!(quick, slow, "{source} on {ctx}");
        }
    }
    for source in not_fast {
        assert!(
            !Expression::compile(source).unwrap().has_fast_path(),
            "{source}"
        );
    }
    // The fast path did answer (not only deferred) on the common values.
    let e = Expression::compile("variables.i < 100").unwrap();
    assert!(e.eval(&json!({"variables": {"i": 99}})).unwrap());
    assert!(!e.eval(&json!({"variables": {"i": 100}})).unwrap());
    let e = Expression::compile("has_tool_calls").unwrap();
    assert!(e.eval(&with_tool_calls()).unwrap());
}

/// `eval_state` (no context built) gives what `eval` gives on the state's context, for every
/// shape with a fast path, on states with and without messages, tool calls and variables; where
/// it cannot be certain (a string where a number is compared) it defers.
#[test]
fn evaluation_on_the_state_agrees_with_evaluation_on_its_context() {
    use crate::model::{Message, Role, ToolCall};
    use crate::state::{State, StateDelta, VariableOp};

    let asking = Message {
        tool_calls: vec![ToolCall {
            id: "c1".into(),
            name: "lookup".into(),
            arguments: json!({"q": "x"}),
        }],
        ..Message::new(Role::Assistant, "")
    };
    let mut states = vec![
        State::default(),
        State::new(json!({"message": "hi"}), vec![Message::user("hi")]),
        State::new(json!({}), vec![Message::user("hi"), asking.clone()]),
    ];
    let mut busy = State::new(json!({}), vec![asking]);
    busy.apply(&StateDelta {
        tool_calls: 12,
        variables: vec![
            ("i".into(), VariableOp::Set(json!(100))),
            ("f".into(), VariableOp::Set(json!(2.5))),
            ("s".into(), VariableOp::Set(json!("7"))),
        ],
        ..StateDelta::default()
    });
    states.push(busy);

    let sources = [
        "has_tool_calls",
        "no_tool_calls",
        "tool_calls < 10",
        "tool_calls >= 12",
        "variables.i < 100",
        "variables.i == 100",
        "variables.f > 2",
        "variables.s > 5",
        "variables.missing < 3",
        "true",
    ];
    for source in sources {
        let expr = Expression::compile(source).unwrap();
        for state in &states {
            let context = state.to_context(None);
            let full = expr.eval(&context);
            // `eval_on` (what the engine calls) gives the full evaluation's answer either way.
            assert_eq!(
                expr.eval_on(state, || &context).ok(),
                full.as_ref().ok().copied(),
                "`{source}` on {state:?}"
            );
            match expr.eval_state(state) {
                Some(fast) => assert_eq!(fast, full.unwrap(), "`{source}` on {state:?}"),
                // Only a variable that is absent or not a number defers to the full evaluation.
                None => {
                    let name = source
                        .strip_prefix("variables.")
                        .and_then(|rest| rest.split_whitespace().next());
                    assert!(
                        name.is_some_and(|n| !state.variable(n).is_some_and(Value::is_number)),
                        "`{source}` deferred on {state:?}"
                    );
                }
            }
        }
    }
    // The busy state answers every shape whose variable is a number without a context.
    let busy = states.last().unwrap();
    let answered = sources
        .iter()
        .filter(|s| Expression::compile(s).unwrap().eval_state(busy).is_some())
        .count();
    assert_eq!(answered, sources.len() - 2);
}
