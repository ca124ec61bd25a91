//! The `chatter` command line: `validate`, `analyze` (and, as they land, `run`, `serve`, ...).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::Error;

mod run;
mod validate;

/// Output format of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// One JSON document.
    Json,
}

/// Chatter: durable, streaming LLM chat workflows.
#[derive(Debug, Parser)]
#[command(name = "chatter", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a workflow definition (JSON or YAML). Exit 0 when valid, 1 when invalid, 2 when
    /// the file cannot be read or parsed.
    Validate {
        /// The definition file (`.json`, `.yaml`, `.yml`).
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Most nodes allowed.
        #[arg(long, default_value_t = 100)]
        max_nodes: usize,
        /// Most edges allowed.
        #[arg(long, default_value_t = 200)]
        max_edges: usize,
    },
    /// Print static analytics of a definition as JSON (complexity, depth, paths, bottlenecks,
    /// risks, suggestions).
    Analyze {
        /// The definition file.
        file: PathBuf,
    },
    /// Run a definition. Text mode streams tokens and node progress as they happen; exit 0 when
    /// the execution completed, 1 when it failed or was cancelled, 2 on unusable input.
    Run {
        /// The definition file.
        file: PathBuf,
        /// The input: a JSON object (`{"message": "...", "variables": {...}}`), or plain text
        /// taken as the message.
        #[arg(long)]
        input: Option<String>,
        /// A model provider: `scripted:FILE` (offline, deterministic) or `openai:MODEL` (any
        /// OpenAI-compatible server: OPENAI_API_KEY, OPENAI_BASE_URL). Repeatable; the first is
        /// the default provider.
        #[arg(long = "model")]
        models: Vec<String>,
        /// Stub tools from a JSON file (name -> fixed result, error or delay).
        #[arg(long)]
        tools: Option<PathBuf>,
        /// Include every event in the JSON output.
        #[arg(long)]
        events: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

/// Runs the command line with the process arguments; returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run(cli, &mut out) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let _ = out.flush();
            eprintln!("error: {err}");
            ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(1))
        }
    }
}

/// Runs one parsed command, writing its output to `out`; returns the exit code.
///
/// # Errors
///
/// [`Error`] when the input is unusable (exit code 2) or the command fails (1).
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<u8, Error> {
    match cli.command {
        Command::Validate {
            file,
            format,
            max_nodes,
            max_edges,
        } => validate::validate(&file, format, max_nodes, max_edges, out),
        Command::Analyze { file } => validate::analyze(&file, out),
        Command::Run {
            file,
            input,
            models,
            tools,
            events,
            format,
        } => run::run(
            run::RunArgs {
                file,
                input,
                models,
                tools,
                events,
                format,
            },
            out,
        ),
    }
}

pub(crate) fn write_out(out: &mut dyn Write, text: &str) -> Result<(), Error> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| Error::Io {
            context: "writing output".into(),
            source,
        })
}
