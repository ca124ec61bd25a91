//! Translation of the old platform's condition phrases into native expressions.
//!
//! The old platform matched condition strings against a fixed set of phrases (`has_tool_calls`,
//! `tool_calls < 10`, `variable mode equals fast`, ...) joined by `AND`/`OR`. They are translated
//! once, at load time, into a native expression with the same meaning; see `docs/expressions.md`
//! for the table. Parsing is a small hand-written lexer plus a two-level precedence parser
//! (`AND` binds tighter than `OR`); nothing here recurses on user input.

/// Why a text could not be read as old phrases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    /// What is wrong, for the user.
    pub(super) message: String,
    /// The text uses a word that only the old phrases use (`has_errors`, `AND`, `equals`, ...):
    /// it is meant as old phrases, so this failure is the error to report.
    pub(super) committed: bool,
    /// The text starts like an old phrase (`tool_calls <` ...): when it is not a valid native
    /// expression either, this failure explains it better than the native parser.
    pub(super) started: bool,
}

/// A short list of the phrases, for error messages.
const PHRASES: &str = "has_tool_calls, no_tool_calls, has_errors, tool_calls <op> <number>, \
     tool_calls <op> variable <name>, variable <name> equals <value>, message contains <text>, \
     loop_<id>_continue, each optionally preceded by `not`";

/// Words that only the old phrases use: their presence means the text is meant as old phrases.
const MARKERS: &[&str] = &[
    "has_tool_calls",
    "no_tool_calls",
    "has_errors",
    "AND",
    "OR",
    "NOT",
    "equals",
    "contains",
];

#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
    /// A run of characters that are neither blank, quotes nor comparison characters.
    Word(&'a str),
    /// `<`, `<=`, `>`, `>=`, `==`, `!=` (or a stray `=`/`!`).
    Op(&'a str),
    /// A quoted text, unquoted and unescaped.
    Quoted(String),
}

#[derive(Debug, Clone)]
struct Lexed<'a> {
    tok: Tok<'a>,
    start: usize,
    end: usize,
}

fn is_op_char(c: char) -> bool {
    matches!(c, '<' | '>' | '=' | '!')
}

fn lex(src: &str) -> Result<Vec<Lexed<'_>>, String> {
    let mut out = Vec::new();
    let mut chars = src.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '\'' {
            chars.next();
            let mut text = String::new();
            let mut end = None;
            while let Some((i, ch)) = chars.next() {
                if ch == '\\' {
                    if let Some((_, escaped)) = chars.next() {
                        text.push(escaped);
                    }
                } else if ch == c {
                    end = Some(i + ch.len_utf8());
                    break;
                } else {
                    text.push(ch);
                }
            }
            let Some(end) = end else {
                return Err(format!(
                    "unterminated quoted text starting at column {}",
                    start + 1
                ));
            };
            out.push(Lexed {
                tok: Tok::Quoted(text),
                start,
                end,
            });
        } else if is_op_char(c) {
            chars.next();
            let mut end = start + 1;
            if let Some(&(i, '=')) = chars.peek() {
                chars.next();
                end = i + 1;
            }
            out.push(Lexed {
                tok: Tok::Op(&src[start..end]),
                start,
                end,
            });
        } else {
            let mut end = start;
            while let Some(&(i, ch)) = chars.peek() {
                if ch.is_whitespace() || ch == '"' || ch == '\'' || is_op_char(ch) {
                    break;
                }
                end = i + ch.len_utf8();
                chars.next();
            }
            out.push(Lexed {
                tok: Tok::Word(&src[start..end]),
                start,
                end,
            });
        }
    }
    Ok(out)
}

/// The loop id of a `loop_<id>_continue` word.
fn loop_id(word: &str) -> Option<&str> {
    word.strip_prefix("loop_")
        .and_then(|rest| rest.strip_suffix("_continue"))
        .filter(|id| !id.is_empty())
}

/// Whether a translated atom is wholly inside one pair of parentheses, so `not` can precede it
/// directly. Skips the double-quoted literals the translation writes.
fn is_grouped(text: &str) -> bool {
    if !text.starts_with('(') {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') | (false, _, '"') => in_string = !in_string,
            (false, _, '(') => depth += 1,
            (false, _, ')') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1 == text.len();
                }
            }
            _ => {}
        }
    }
    false
}

/// Whether `word` is meant as `loop_<id>_continue`, even without an id.
fn is_loop_phrase(word: &str) -> bool {
    word.starts_with("loop_") && word.ends_with("_continue")
}

/// Whether `word` is a workflow variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub(super) fn is_identifier(word: &str) -> bool {
    let mut chars = word.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_number(word: &str) -> bool {
    let digits = word.strip_prefix('-').unwrap_or(word);
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// `variable <name> equals <value>`: the variable, rendered as text, equals the value. A number
/// also matches numerically (`3` matches `3.0`), and `true`/`false`/`null` match the JSON values
/// whichever way they are spelled (`True`, as the old platform printed them, or `true`).
fn equals_translation(name: &str, value: &str) -> String {
    let var = format!("variables.{name}");
    let text = string_literal(value);
    match value {
        "true" | "True" => format!("({var} is true or {var} == {text})"),
        "false" | "False" => format!("({var} is false or {var} == {text})"),
        "null" | "none" | "None" => format!("({var} is none or {var} == {text})"),
        _ if is_number(value) => format!("({var} == {value} or {var} == {text})"),
        _ => format!("{var} == {text}"),
    }
}

/// A string literal of the expression language (JSON escapes are a subset of its escapes).
pub(super) fn string_literal(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

fn is_not(tok: &Tok<'_>) -> bool {
    matches!(tok, Tok::Word("not" | "NOT"))
}

/// Whether a token can start an old phrase.
fn starts_atom(tok: &Tok<'_>) -> bool {
    match tok {
        Tok::Word(w) => {
            matches!(
                *w,
                "not"
                    | "NOT"
                    | "has_tool_calls"
                    | "no_tool_calls"
                    | "has_errors"
                    | "tool_calls"
                    | "variable"
                    | "message"
            ) || loop_id(w).is_some()
        }
        _ => false,
    }
}

/// How an atom is joined to the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Joiner {
    And,
    Or,
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Lexed<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Lexed<'a>> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Lexed<'a>> {
        let tok = self.toks.get(self.pos).cloned();
        self.pos += 1;
        tok
    }

    fn describe(&self, lexed: Option<&Lexed<'a>>) -> String {
        match lexed {
            Some(l) => format!("`{}`", &self.src[l.start..l.end]),
            None => "the end".to_owned(),
        }
    }

    /// The joiner at the current position, if the token there is one. Lowercase `and`/`or`
    /// join only when an old phrase follows, so `message contains salt and pepper` keeps its text.
    fn joiner_here(&self) -> Option<Joiner> {
        let tok = &self.peek()?.tok;
        let (joiner, strict) = match tok {
            Tok::Word("AND") => (Joiner::And, true),
            Tok::Word("OR") => (Joiner::Or, true),
            Tok::Word("and") => (Joiner::And, false),
            Tok::Word("or") => (Joiner::Or, false),
            _ => return None,
        };
        if strict
            || self
                .toks
                .get(self.pos + 1)
                .is_some_and(|next| starts_atom(&next.tok))
        {
            Some(joiner)
        } else {
            None
        }
    }

    fn parse(&mut self) -> Result<String, String> {
        // Disjunction of conjunctions, built without recursion.
        let mut disjuncts: Vec<Vec<String>> = vec![Vec::new()];
        loop {
            let atom = self.atom()?;
            if let Some(conj) = disjuncts.last_mut() {
                conj.push(atom);
            }
            if self.peek().is_none() {
                break;
            }
            match self.joiner_here() {
                Some(Joiner::And) => {}
                Some(Joiner::Or) => disjuncts.push(Vec::new()),
                None => {
                    let found = self.peek().cloned();
                    let previous = self.toks.get(self.pos.wrapping_sub(1)).cloned();
                    let after = self.toks.get(self.pos + 1);
                    return Err(match (found.as_ref().map(|l| &l.tok), previous) {
                        (Some(Tok::Word("and" | "or")), _) if after.is_none() => format!(
                            "expected an old phrase after {}, found the end",
                            self.describe(found.as_ref())
                        ),
                        (Some(Tok::Word("and" | "or")), _) => {
                            format!(
                                "{} after {} is not an old phrase; old phrases combine only \
                                 with other old phrases ({PHRASES})",
                                self.describe(after),
                                self.describe(found.as_ref()),
                            )
                        }
                        (_, previous) => format!(
                            "expected AND or OR after {}, found {}",
                            self.describe(previous.as_ref()),
                            self.describe(found.as_ref())
                        ),
                    });
                }
            }
            self.pos += 1;
            if self.peek().is_none() {
                let joiner = self.describe(self.toks.get(self.pos - 1));
                return Err(format!(
                    "expected an old phrase after {joiner}, found the end"
                ));
            }
        }
        Ok(disjuncts
            .iter()
            .map(|conj| conj.join(" and "))
            .collect::<Vec<_>>()
            .join(" or "))
    }

    fn atom(&mut self) -> Result<String, String> {
        let mut negations = 0usize;
        while self.peek().is_some_and(|l| is_not(&l.tok)) {
            negations += 1;
            self.pos += 1;
        }
        let mut text = self.phrase()?;
        for _ in 0..negations {
            text = if is_grouped(&text) {
                format!("not {text}")
            } else {
                format!("not ({text})")
            };
        }
        Ok(text)
    }

    fn phrase(&mut self) -> Result<String, String> {
        let head = self.next();
        let Some(Lexed {
            tok: Tok::Word(word),
            ..
        }) = head
        else {
            return Err(format!(
                "expected an old phrase, found {} (old phrases: {PHRASES})",
                self.describe(head.as_ref())
            ));
        };
        match word {
            "has_tool_calls" => Ok("(last_message.tool_calls or []) | length > 0".to_owned()),
            "no_tool_calls" => Ok("(last_message.tool_calls or []) | length == 0".to_owned()),
            "has_errors" => Ok("(errors or []) | length > 0".to_owned()),
            "tool_calls" => self.tool_calls(),
            "variable" => self.variable_equals(),
            "message" => self.message_contains(),
            _ => match loop_id(word) {
                Some(id) => Ok(format!("loop[{}].continue", string_literal(id))),
                None if is_loop_phrase(word) => {
                    Err(format!("`{word}` names no loop (write loop_<id>_continue)"))
                }
                None => Err(format!(
                    "`{word}` is not an old phrase (old phrases: {PHRASES})"
                )),
            },
        }
    }

    fn tool_calls(&mut self) -> Result<String, String> {
        let op = self.next();
        let op = match op.as_ref().map(|l| &l.tok) {
            Some(Tok::Op(op @ ("<" | "<=" | ">" | ">=" | "==" | "!="))) => *op,
            _ => {
                return Err(format!(
                    "expected one of < <= > >= == != after `tool_calls`, found {}",
                    self.describe(op.as_ref())
                ));
            }
        };
        let operand = self.next();
        match operand.as_ref().map(|l| &l.tok) {
            Some(Tok::Word(n)) if is_number(n) => Ok(format!("tool_calls {op} {n}")),
            Some(Tok::Word("variable")) => {
                let name = self.variable_name()?;
                Ok(format!(
                    "(variables.{name} is number and tool_calls {op} variables.{name})"
                ))
            }
            _ => Err(format!(
                "expected a number or `variable <name>` after `tool_calls {op}`, found {}",
                self.describe(operand.as_ref())
            )),
        }
    }

    fn variable_name(&mut self) -> Result<&'a str, String> {
        let name = self.next();
        match name.as_ref().map(|l| &l.tok) {
            Some(Tok::Word(w)) if is_identifier(w) && !matches!(*w, "equals" | "AND" | "OR") => {
                Ok(w)
            }
            _ => Err(format!(
                "expected a variable name (letters, digits, `_`) after `variable`, found {}",
                self.describe(name.as_ref())
            )),
        }
    }

    fn variable_equals(&mut self) -> Result<String, String> {
        let name = self.variable_name()?;
        let keyword = self.next();
        if !matches!(keyword.as_ref().map(|l| &l.tok), Some(Tok::Word("equals"))) {
            return Err(format!(
                "expected `equals` after `variable {name}`, found {}",
                self.describe(keyword.as_ref())
            ));
        }
        let value = self.value(&format!("variable {name} equals"))?;
        Ok(equals_translation(name, &value))
    }

    fn message_contains(&mut self) -> Result<String, String> {
        let keyword = self.next();
        if !matches!(
            keyword.as_ref().map(|l| &l.tok),
            Some(Tok::Word("contains"))
        ) {
            return Err(format!(
                "expected `contains` after `message`, found {}",
                self.describe(keyword.as_ref())
            ));
        }
        let term = self.value("message contains")?;
        if term.is_empty() {
            return Err("`message contains` needs a non-empty text".to_owned());
        }
        Ok(format!(
            "{} in (last_message.content or \"\") | lower",
            string_literal(&term.to_lowercase())
        ))
    }

    /// The value after `equals`/`contains`: one quoted text, or the raw text up to the next
    /// joiner.
    fn value(&mut self, after: &str) -> Result<String, String> {
        let first = self.pos;
        while self.peek().is_some() && self.joiner_here().is_none() {
            self.pos += 1;
        }
        let taken = &self.toks[first..self.pos];
        if let [
            Lexed {
                tok: Tok::Quoted(text),
                ..
            },
        ] = taken
        {
            return Ok(text.clone());
        }
        match (taken.first(), taken.last()) {
            (Some(first_tok), _) if matches!(first_tok.tok, Tok::Quoted(_)) => Err(format!(
                "expected AND or OR after {}, found {}",
                self.describe(Some(first_tok)),
                self.describe(taken.get(1))
            )),
            (Some(first_tok), Some(last_tok)) => {
                Ok(self.src[first_tok.start..last_tok.end].to_owned())
            }
            _ => Err(format!(
                "expected a value after `{after}`, found {}",
                self.describe(self.peek())
            )),
        }
    }
}

/// Reads `src` as old phrases and translates it into a native expression.
pub(super) fn translate(src: &str) -> Result<String, Failure> {
    let toks = match lex(src) {
        Ok(toks) => toks,
        Err(message) => {
            let mut words = src
                .split_whitespace()
                .skip_while(|w| matches!(*w, "not" | "NOT"));
            let first = words.next();
            let committed = matches!(first, Some("variable" | "message"))
                || src
                    .split_whitespace()
                    .any(|w| MARKERS.contains(&w) || is_loop_phrase(w));
            return Err(Failure {
                message,
                committed,
                started: committed,
            });
        }
    };
    let first_word = toks.iter().find(|l| !is_not(&l.tok)).map(|l| &l.tok);
    let committed = toks.iter().any(|l| match l.tok {
        Tok::Word(w) => MARKERS.contains(&w) || is_loop_phrase(w),
        _ => false,
    }) || matches!(first_word, Some(Tok::Word("variable" | "message")));
    let started = committed
        || matches!(
            toks.iter()
                .skip_while(|l| is_not(&l.tok))
                .take(2)
                .map(|l| &l.tok)
                .collect::<Vec<_>>()[..],
            [Tok::Word("tool_calls"), Tok::Op(_)]
        );
    let mut parser = Parser { src, toks, pos: 0 };
    if parser.toks.is_empty() {
        return Err(Failure {
            message: "empty expression".to_owned(),
            committed: false,
            started: false,
        });
    }
    parser.parse().map_err(|message| Failure {
        message,
        committed,
        started,
    })
}
