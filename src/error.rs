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
