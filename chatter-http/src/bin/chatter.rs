//! The `chatter` command-line tool.

fn main() -> std::process::ExitCode {
    chatter_http::cli::main()
}
