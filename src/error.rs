//! The one user-facing error type, with a closed set of `extensions.code` values.
use async_graphql::ErrorExtensions;
use sea_orm::{DbErr, SqlErr};

/// The codes a client can see in `extensions.code`. Nothing else is ever sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    ConsentRequired,
    NotFound,
    Validation,
    Conflict,
    /// A feedback case cannot go from its state to the one asked (`extensions.from`, `extensions.to`).
    InvalidTransition,
    RateLimited,
    Unavailable,
    Internal,
    /// The request document does not parse.
    GraphqlParseFailed,
    /// The request document does not validate against the schema or breaks a query limit.
    GraphqlValidationFailed,
    /// The HTTP request is not a well-formed GraphQL-over-HTTP request.
    BadRequest,
    /// An automatic persisted query named by its hash that this server does not hold: send it again with the query.
    PersistedQueryNotFound,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::ConsentRequired => "CONSENT_REQUIRED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Validation => "VALIDATION",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::InvalidTransition => "INVALID_TRANSITION",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::GraphqlParseFailed => "GRAPHQL_PARSE_FAILED",
            ErrorCode::GraphqlValidationFailed => "GRAPHQL_VALIDATION_FAILED",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
        }
    }
}

/// What went wrong, in words a caller can act on. Internal causes are logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("this operation needs the `{0}` scope")]
    Forbidden(String),
    #[error("{message}")]
    ConsentRequired { purpose: String, reason: &'static str, message: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("invalid `{field}`: {message}")]
    Validation { field: String, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("a feedback case cannot go from {from} to {to}")]
    InvalidTransition { from: &'static str, to: &'static str },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation { field: field.into(), message: message.into() }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::NotFound(what.into())
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(err.into())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::ConsentRequired { .. } => ErrorCode::ConsentRequired,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Validation { .. } => ErrorCode::Validation,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::InvalidTransition { .. } => ErrorCode::InvalidTransition,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// True when trying the same request again later may succeed (the database was unavailable, or something
    /// failed inside the server); false for requests that will never be valid.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ApiError::Unavailable(_) | ApiError::Internal(_))
    }

    /// True for database unique-constraint races, which callers may retry.
    pub fn is_unique_violation(err: &DbErr) -> bool {
        matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
    }
}

impl From<DbErr> for ApiError {
    fn from(err: DbErr) -> Self {
        match &err {
            DbErr::RecordNotFound(_) => ApiError::NotFound("record".into()),
            _ if is_transient(&err) => {
                tracing::error!(error = %err, "database unavailable");
                ApiError::Unavailable("the database is unavailable, try again".into())
            }
            _ => ApiError::Internal(err.into()),
        }
    }
}

/// Database failures a retry can fix: no connection, a connection lost or shut down by the server (PostgreSQL
/// restarting answers 57P01), the server refusing connections for now, serialization failures and deadlocks, and
/// SQLite's busy database. Everything else is a defect or bad data, and is not retried.
pub(crate) fn is_transient(err: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx};
    let sqlx_error = match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    match sqlx_error.as_ref() {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_code(&code)),
        _ => false,
    }
}

/// SQLSTATEs (PostgreSQL) and result codes (SQLite) that mean "try again".
fn is_transient_code(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" // admin shutdown, crash shutdown, cannot connect now
                | "53300" // too many connections
                | "40001" | "40P01" // serialization failure, deadlock
                | "5" | "6" | "517" // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_BUSY_SNAPSHOT
        )
}

impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        if let ApiError::Internal(cause) = self {
            // The span carries the request id; the client sees only the code.
            tracing::error!(error = ?cause, "internal error");
        }
        let code = self.code();
        async_graphql::Error::new(self.to_string()).extend_with(|_, ext| {
            ext.set("code", code.as_str());
            match self {
                ApiError::Validation { field, .. } => ext.set("field", field.as_str()),
                ApiError::ConsentRequired { purpose, reason, .. } => {
                    ext.set("purpose", purpose.as_str());
                    ext.set("reason", *reason);
                }
                ApiError::InvalidTransition { from, to } => {
                    ext.set("from", *from);
                    ext.set("to", *to);
                }
                _ => {}
            }
        })
    }
}

/// Turns a domain result into a GraphQL result that keeps the error code.
///
/// async-graphql converts any `Display` error with `?`, which would drop `extensions.code`; resolvers call
/// `.gql()` instead.
pub trait GqlResult<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> GqlResult<T> for ApiResult<T> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| e.extend())
    }
}

/// The longest error message the server sends, in bytes. Messages can quote what the client sent (a parse error
/// shows the offending line), so without a bound a 700 KB query got an 831 KB answer.
pub const MAX_MESSAGE_BYTES: usize = 512;
/// Characters of the source kept on each side of a parse error's caret.
const EXCERPT_CHARS: usize = 40;
/// Longest line kept whole in a message that is over the bound.
const MAX_LINE_CHARS: usize = 120;

/// Bounds an error message to [`MAX_MESSAGE_BYTES`], cut on a character boundary and ending in `…`. A parse error's
/// source excerpt (`1 | …` above `  |     ^---`) keeps a window around the caret, so the message still shows where
/// the error is (its first line, ` --> line:column`, is kept, and so are the error's `locations`).
pub fn bound_message(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_MESSAGE_BYTES {
        return std::borrow::Cow::Borrowed(message);
    }
    let lines: Vec<&str> = message.lines().collect();
    let mut kept: Vec<String> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        if let Some(caret) = lines.get(i + 1)
            && let Some((source, caret)) = caret_window(lines[i], caret)
        {
            kept.push(source);
            kept.push(caret);
            i += 2;
            continue;
        }
        kept.push(shorten(lines[i], MAX_LINE_CHARS));
        i += 1;
    }
    std::borrow::Cow::Owned(cut(&kept.join("\n"), MAX_MESSAGE_BYTES))
}

/// Cuts a pest-style excerpt (`12 | source` above `   |     ^---`) to a window around the caret.
fn caret_window(source: &str, caret: &str) -> Option<(String, String)> {
    let bar = caret.find('|')?;
    if !caret[..bar].bytes().all(|b| b == b' ') || source.as_bytes().get(bar) != Some(&b'|') {
        return None;
    }
    let gutter = bar + 2;
    let text = source.get(gutter..)?;
    let marks = caret.get(gutter..)?;
    let column = marks.len() - marks.trim_start_matches(' ').len();
    let marker = marks.trim_start_matches(' ');
    if !marker.starts_with('^') || text.chars().count() <= MAX_LINE_CHARS {
        return None;
    }
    let start = column.saturating_sub(EXCERPT_CHARS);
    let excerpt: String = text.chars().skip(start).take(2 * EXCERPT_CHARS).collect();
    let more_after = text.chars().count() > start + 2 * EXCERPT_CHARS;
    let lead = if start > 0 { "…" } else { "" };
    let source = format!("{}{lead}{excerpt}{}", &source[..gutter], if more_after { "…" } else { "" });
    let caret = format!(
        "{}{}{}",
        &caret[..gutter],
        " ".repeat(lead.chars().count() + column - start),
        shorten(marker, EXCERPT_CHARS)
    );
    Some((source, caret))
}

fn shorten(line: &str, max_chars: usize) -> String {
    match line.char_indices().nth(max_chars.saturating_sub(1)) {
        Some((end, _)) if line[end..].chars().nth(1).is_some() => format!("{}…", &line[..end]),
        _ => line.to_owned(),
    }
}

fn cut(message: &str, max_bytes: usize) -> String {
    if message.len() <= max_bytes {
        return message.to_owned();
    }
    let mut end = max_bytes - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, sync::Arc};

    use sea_orm::{RuntimeErr, sqlx};

    use super::*;

    /// A database error with a given SQLSTATE, as a driver reports it.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            "coded"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn db(code: &'static str) -> DbErr {
        DbErr::Exec(RuntimeErr::SqlxError(Arc::new(sqlx::Error::Database(Box::new(Coded(code))))))
    }

    #[test]
    fn retryable_database_failures_answer_unavailable() {
        for code in ["57P01", "57P03", "08006", "40001", "40P01", "53300", "5"] {
            assert_eq!(ApiError::from(db(code)).code(), ErrorCode::Unavailable, "{code}");
        }
        let io = DbErr::Query(RuntimeErr::SqlxError(Arc::new(sqlx::Error::Io(std::io::ErrorKind::BrokenPipe.into()))));
        assert_eq!(ApiError::from(io).code(), ErrorCode::Unavailable);
        assert_eq!(ApiError::from(DbErr::Conn(RuntimeErr::Internal("refused".into()))).code(), ErrorCode::Unavailable);
        // A broken constraint or bad SQL is a defect: not retried.
        for code in ["23505", "42P01", "22P02"] {
            assert_eq!(ApiError::from(db(code)).code(), ErrorCode::Internal, "{code}");
        }
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    #[test]
    fn short_messages_are_untouched() {
        assert!(matches!(bound_message("field `x` not found"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(2_000);
        let bounded = bound_message(&long);
        assert!(bounded.len() <= MAX_MESSAGE_BYTES, "{}", bounded.len());
        assert!(bounded.ends_with('…'));
    }

    #[test]
    fn a_parse_error_keeps_the_position_and_a_window_around_the_caret() {
        let line = format!("{{ __typename {} @@@ }}", "x".repeat(200_000));
        let column = line.find("@@@").expect("marker") + 1;
        let message =
            format!(" --> 1:{column}\n  |\n1 | {line}\n  | {}^---\n  |\n  = expected name", " ".repeat(column - 1));
        let bounded = bound_message(&message);
        assert!(bounded.len() <= MAX_MESSAGE_BYTES, "{bounded}");
        assert!(bounded.starts_with(&format!(" --> 1:{column}")), "{bounded}");
        assert!(bounded.ends_with("= expected name"), "{bounded}");
        let lines: Vec<&str> = bounded.lines().collect();
        let source_col = lines[2].chars().position(|c| c == '@').expect("the error is in the excerpt");
        let caret_col = lines[3].chars().position(|c| c == '^').expect("caret");
        assert_eq!(source_col, caret_col, "the caret points at the error:\n{bounded}");
    }
}
