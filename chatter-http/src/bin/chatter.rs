//! The `chatter` command-line tool.
//!
//! Logs (`tracing`) go to stderr: the level and targets from `CHATTER_LOG` (an `EnvFilter`
//! directive, e.g. `info` or `chatter_http::access=info,chatter_core=debug`; default `info`),
//! as `key=value` text, or JSON lines with `CHATTER_LOG_FORMAT=json`. The library never
//! installs a subscriber; only this binary does.

/// The server allocates and frees many small objects per request (JSON values, events, rows);
/// mimalloc serves them markedly faster than glibc's allocator, whose `malloc`/`free` took about
/// a quarter of the server's CPU under load (`benches/http.rs`). SQLite keeps the C allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    init_logging();
    chatter_http::cli::main()
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("CHATTER_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("warning: CHATTER_LOG=`{filter}` is not a filter ({e}); logging at `info`");
        EnvFilter::new("info")
    });
    let json = std::env::var("CHATTER_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let installed = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = installed {
        eprintln!("warning: could not install the log subscriber: {e}");
    }
}
