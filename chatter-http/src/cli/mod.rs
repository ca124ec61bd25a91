//! The `chatter` command line: `validate`, `analyze`, `run`, `migrate`, `executions`,
//! `templates` (and, as they land, `serve`, ...).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::Error;

mod durable;
mod run;
mod serve;
mod store;
mod templates;
mod validate;

pub(crate) use run::{models as models_from_specs, tools as tools_from_file};

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
    /// the execution completed, 1 when it failed or was cancelled, 2 on unusable input, 3 when
    /// it waits for a decision at an approval (`chatter executions approve` continues it).
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
        /// Record the run in this database (`sqlite://chatter.db`, `postgres://...`): the
        /// execution, its node runs, events and state deltas, as `chatter executions` shows.
        #[arg(long)]
        db: Option<String>,
        /// Store the documents of this JSON file (a list of `{title, content}`, or an object
        /// with `sample_documents`) and register the `documents` retriever over them (in
        /// `--db`, else in an in-memory database).
        #[arg(long)]
        documents: Option<PathBuf>,
        /// How soon each step is written to `--db`: `sync` (each step committed before the
        /// next node starts; the default), `async` (written in the background, the end waits
        /// for them) or `exit` (everything written when the execution ends or pauses).
        #[arg(long)]
        durability: Option<String>,
    },
    /// Print the HTTP API's OpenAPI 3.1 document (what `chatter serve` answers at
    /// `/openapi.json`) as JSON.
    Openapi,
    /// Create or upgrade a database's schema; prints the migrations applied.
    Migrate {
        /// The database (`sqlite://chatter.db`, `postgres://...`).
        #[arg(long)]
        db: String,
    },
    /// Serve the HTTP API (the v1 contract, auth, chat streaming) until Ctrl-C / SIGTERM.
    /// On the first start it creates an admin and prints its API key once (or uses
    /// CHATTER_ADMIN_API_KEY). See docs/http.md.
    Serve {
        /// A JSON configuration file (also CHATTER_CONFIG); the environment and the flags
        /// override it. See docs/http.md.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The database (default `sqlite://chatter.db`).
        #[arg(long)]
        db: Option<String>,
        /// Address to listen on (default `127.0.0.1:8000`).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// A model provider, as for `run` (repeatable; also CHATTER_MODELS, comma-separated).
        /// Without any, the offline `scripted` model answers.
        #[arg(long = "model")]
        models: Vec<String>,
        /// Stub tools from a JSON file (also CHATTER_TOOLS).
        #[arg(long)]
        tools: Option<PathBuf>,
        /// An origin allowed by CORS (repeatable; also CHATTER_CORS_ORIGINS).
        #[arg(long = "cors-origin")]
        cors_origins: Vec<String>,
    },
    /// Manage users.
    Users {
        /// What to do.
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Manage API keys.
    Apikeys {
        /// What to do.
        #[command(subcommand)]
        command: ApikeysCommand,
    },
    /// Look at, resume, approve and fork recorded executions.
    Executions {
        /// What to do.
        #[command(subcommand)]
        command: ExecutionsCommand,
    },
    /// List, show, run, export and import workflow templates (the twelve built-ins are always
    /// there).
    Templates {
        /// What to do.
        #[command(subcommand)]
        command: TemplatesCommand,
    },
}

/// `chatter templates ...`. Without `--db`, an in-memory database holding the built-ins.
#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// List the templates (built-ins and the local user's), by name.
    List {
        /// The database.
        #[arg(long)]
        db: Option<String>,
        /// Only this category (general, customer_support, programming, research,
        /// data_analysis, creative, educational, business, custom).
        #[arg(long)]
        category: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Show a template (by name or id): metadata, default parameters, generated graph,
    /// versions and usage analytics; exit 1 when it does not exist.
    Show {
        /// The template's name or id.
        name: String,
        /// The database.
        #[arg(long)]
        db: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Run a template: its graph is generated in memory (no definition is stored) and the run
    /// is recorded as a template execution. Exit 0 when it completed, 1 when it failed, 2 on
    /// unusable input (including invalid parameters).
    Run {
        /// The template's name or id.
        name: String,
        /// Parameters overriding the template's defaults, as a JSON object.
        #[arg(long)]
        params: Option<String>,
        /// The input: a JSON object, or plain text taken as the message.
        #[arg(long)]
        input: Option<String>,
        /// A model provider (`scripted:FILE`, `openai:MODEL`); repeatable, the first is the
        /// default.
        #[arg(long = "model")]
        models: Vec<String>,
        /// Stub tools from a JSON file (name -> fixed result, error or delay).
        #[arg(long)]
        tools: Option<PathBuf>,
        /// Documents (JSON) to store and retrieve from, under `documents` and every retriever
        /// the template requires.
        #[arg(long)]
        documents: Option<PathBuf>,
        /// Include every event in the JSON output.
        #[arg(long)]
        events: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Record the run in this database.
        #[arg(long)]
        db: Option<String>,
    },
    /// Export a template in the old platform's format (`export_version` 1.0).
    Export {
        /// The template's name or id.
        name: String,
        /// The database.
        #[arg(long)]
        db: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Import an exported template into the database as the local user's; exit 2 for a
    /// malformed file (nothing is written).
    Import {
        /// The export file (JSON).
        file: PathBuf,
        /// The database.
        #[arg(long)]
        db: String,
        /// Store it under this name.
        #[arg(long)]
        name: Option<String>,
        /// When a template of that name exists, store the import as its next version.
        #[arg(long)]
        merge: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

/// `chatter users ...`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user (with a password for `/api/v1/auth/login` when --password-env is given).
    Create {
        /// The database.
        #[arg(long)]
        db: String,
        /// E-mail address.
        #[arg(long)]
        email: String,
        /// Login name.
        #[arg(long)]
        username: String,
        /// Name of an environment variable holding the password (at least 8 characters).
        #[arg(long)]
        password_env: Option<String>,
        /// A role (guest, user, power_user, admin, super_admin); repeatable; default `user`.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
}

/// `chatter apikeys ...`.
#[derive(Debug, Subcommand)]
pub enum ApikeysCommand {
    /// Create an API key for a user and print it (shown once).
    Create {
        /// The database.
        #[arg(long)]
        db: String,
        /// The user (username or e-mail).
        #[arg(long)]
        user: String,
        /// A label for the key.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// Revoke an API key by id.
    Revoke {
        /// The key's id.
        id: String,
        /// The database.
        #[arg(long)]
        db: String,
    },
}

/// `chatter executions ...`.
#[derive(Debug, Subcommand)]
pub enum ExecutionsCommand {
    /// List executions, newest first.
    List {
        /// The database.
        #[arg(long)]
        db: String,
        /// Most executions listed.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only executions of this status (pending, running, waiting, completed, failed,
        /// cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Show one execution with its node runs and events; exit 1 when it does not exist.
    Show {
        /// The execution id.
        id: String,
        /// The database.
        #[arg(long)]
        db: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Resume an execution from its last step, with the same id (after a crash, or a
    /// `waiting` one whose approval timed out). Exit codes as for `run`; 1 for an unknown,
    /// ended or foreign execution.
    Resume {
        /// The execution id.
        id: String,
        /// The database, models, tools and output.
        #[command(flatten)]
        with: ResumeArgs,
    },
    /// Resume an execution waiting at an approval with a decision. Exit codes as for `run`; 1
    /// for an unknown, ended or foreign execution or a decision that is not allowed (nothing
    /// is changed then).
    Approve {
        /// The execution id.
        id: String,
        /// One of the approval's allowed decisions.
        #[arg(long)]
        decision: String,
        /// The person's input, JSON (checked against the approval's `input_schema`).
        #[arg(long)]
        input: Option<String>,
        /// The approval node (needed only when several wait).
        #[arg(long)]
        node: Option<String>,
        /// The database, models, tools and output.
        #[command(flatten)]
        with: ResumeArgs,
    },
    /// List an execution's steps (step, node, iteration, attempt, status; with `--format
    /// json` also the state after each step); exit 1 for an unknown or foreign execution.
    Steps {
        /// The execution id.
        id: String,
        /// The database.
        #[arg(long)]
        db: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Start a new execution from step N of an execution (the steps up to N are copied, not
    /// run again), optionally with edited variables; the original is not changed. Exit codes
    /// as for `run`; 1 for an unknown or foreign execution or a step past its last one.
    Fork {
        /// The execution id.
        id: String,
        /// The step to continue from (`chatter executions steps` lists them).
        #[arg(long)]
        step: i64,
        /// Set a variable before going on: `name=JSON` (e.g. `--set draft='"short"'`,
        /// `--set tries=2`). Repeatable.
        #[arg(long = "set")]
        set: Vec<String>,
        /// The database, models, tools and output.
        #[command(flatten)]
        with: ResumeArgs,
    },
    /// Cancel a stored execution that no process is running: a `waiting` one (an approval
    /// nobody will give), a `pending` one, or one whose process died. Exit 1 for an unknown,
    /// ended or foreign execution, or one another process is running (nothing is changed then).
    Cancel {
        /// The execution id.
        id: String,
        /// The database.
        #[arg(long)]
        db: String,
        /// Why (recorded as the execution's error and in its `execution_cancelled` event).
        #[arg(long, default_value = "cancelled from the command line")]
        reason: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Resume every execution that is due: `running` ones whose lease expired (their process
    /// died) and `waiting` ones whose approval timed out. Prints each id and its outcome;
    /// exit 1 when one could not be resumed.
    ResumeDue {
        /// The database.
        #[arg(long)]
        db: String,
        /// Model providers, as for `run`.
        #[arg(long = "model")]
        models: Vec<String>,
        /// Stub tools, as for `run`.
        #[arg(long)]
        tools: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

/// What a command that continues an execution (`resume`, `approve`, `fork`) runs it with.
#[derive(Debug, Clone, clap::Args)]
pub struct ResumeArgs {
    /// The database the execution is recorded in.
    #[arg(long)]
    pub db: String,
    /// Model providers, as for `run` (needed when the workflow calls a model).
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Stub tools, as for `run`.
    #[arg(long)]
    pub tools: Option<PathBuf>,
    /// How soon each new step is written (`sync`, `async`, `exit`).
    #[arg(long, default_value = "sync")]
    pub durability: String,
    /// Include every event in the JSON output.
    #[arg(long)]
    pub events: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
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
            db,
            documents,
            durability,
        } => run::run(
            run::RunArgs {
                file,
                input,
                models,
                tools,
                events,
                format,
                db,
                documents,
                durability,
            },
            out,
        ),
        Command::Openapi => {
            let mut text = crate::server::openapi::document_json();
            text.push('\n');
            out.write_all(text.as_bytes()).map_err(|source| Error::Io {
                context: "writing the OpenAPI document".into(),
                source,
            })?;
            Ok(0)
        }
        Command::Migrate { db } => store::migrate(&db, out),
        Command::Serve {
            config,
            db,
            addr,
            models,
            tools,
            cors_origins,
        } => serve::serve(
            serve::ServeArgs {
                config,
                db,
                addr,
                models,
                tools,
                cors_origins,
            },
            out,
        ),
        Command::Users {
            command:
                UsersCommand::Create {
                    db,
                    email,
                    username,
                    password_env,
                    roles,
                },
        } => serve::create_user(&db, &email, &username, password_env.as_deref(), roles, out),
        Command::Apikeys { command } => match command {
            ApikeysCommand::Create { db, user, name } => serve::create_key(&db, &user, &name, out),
            ApikeysCommand::Revoke { id, db } => serve::revoke_key(&db, &id, out),
        },
        Command::Executions { command } => match command {
            ExecutionsCommand::List {
                db,
                limit,
                status,
                format,
            } => store::list(&db, limit, status.as_deref(), format, out),
            ExecutionsCommand::Show { id, db, format } => store::show(&db, &id, format, out),
            ExecutionsCommand::Resume { id, with } => {
                durable::resume(&id, durable::Continue::Resume, &with, out)
            }
            ExecutionsCommand::Approve {
                id,
                decision,
                input,
                node,
                with,
            } => durable::approve(&id, decision, input.as_deref(), node, &with, out),
            ExecutionsCommand::Steps { id, db, format } => durable::steps(&db, &id, format, out),
            ExecutionsCommand::Fork {
                id,
                step,
                set,
                with,
            } => durable::fork(&id, step, &set, &with, out),
            ExecutionsCommand::Cancel {
                id,
                db,
                reason,
                format,
            } => durable::cancel(&db, &id, &reason, format, out),
            ExecutionsCommand::ResumeDue {
                db,
                models,
                tools,
                format,
            } => durable::resume_due(&db, &models, tools.as_deref(), format, out),
        },
        Command::Templates { command } => match command {
            TemplatesCommand::List {
                db,
                category,
                format,
            } => templates::list(db.as_deref(), category.as_deref(), format, out),
            TemplatesCommand::Show { name, db, format } => {
                templates::show(db.as_deref(), &name, format, out)
            }
            TemplatesCommand::Run {
                name,
                params,
                input,
                models,
                tools,
                documents,
                events,
                format,
                db,
            } => templates::run(
                templates::TemplateRunArgs {
                    name,
                    params,
                    input,
                    models,
                    tools,
                    documents,
                    events,
                    format,
                    db,
                },
                out,
            ),
            TemplatesCommand::Export { name, db, output } => {
                templates::export(db.as_deref(), &name, output.as_deref(), out)
            }
            TemplatesCommand::Import {
                file,
                db,
                name,
                merge,
                format,
            } => templates::import(&db, &file, name, merge, format, out),
        },
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
