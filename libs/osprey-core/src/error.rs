use std::fmt;

/// What went wrong, for callers that need to react differently (a missing
/// object is a 404 to a REST client, invalid input a 400, the rest a 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The named thing (object, gallery, subject, job) does not exist.
    NotFound,
    /// The named thing already exists and may not be overwritten.
    AlreadyExists,
    /// The caller's input is malformed: wrong dimensions, NaNs, empty files.
    InvalidInput,
    /// Stored data could not be decoded: corrupt Parquet, a foreign index file.
    Corrupt,
    /// The operation is not allowed, e.g. a write statement through read-only SQL.
    Forbidden,
    /// Object storage failed (network, permissions, server errors).
    Storage,
    /// Anything else: a bug or an error from a native library.
    Internal,
}

/// An Osprey error: a kind to match on and a message that names the thing.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// Result with an Osprey [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Prefixes the message with context, keeping the kind.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Self { kind: self.kind, message: format!("{context}: {}", self.message) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
