//! The crate's error type.

/// Everything that can go wrong in `chatter-http` (server and command line).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the engine or the definition model.
    #[error(transparent)]
    Core(#[from] chatter_core::Error),
    /// A file given on the command line is unusable (unreadable, unparsable, not a definition).
    #[error("{path}: {source}")]
    File {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        source: chatter_core::Error,
    },
    /// Input or output failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A command-line argument is unusable.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The process exit code for this error: 2 for unusable input (unreadable or unparsable
    /// files, bad arguments), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Core(
                chatter_core::Error::Parse { .. }
                | chatter_core::Error::Io { .. }
                | chatter_core::Error::Definition { .. },
            )
            | Error::File { .. }
            | Error::Io { .. }
            | Error::Usage(_) => 2,
            _ => 1,
        }
    }
}
