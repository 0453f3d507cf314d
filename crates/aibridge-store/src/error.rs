use std::fmt;

/// Errors of the store. Messages never carry bound values (token hashes, prompts, …): database
/// errors keep only the driver's message, and a database URL is shown without its password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("user `{0}` already exists")]
    UserExists(String),
    #[error("user `{0}` does not exist")]
    NoSuchUser(String),
    /// From `sqlx::Error`: the message only, never SQL parameters.
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// `commit` wrote every record it could and committed them; these could not be written.
    #[error("{} of {total} records not written: {}", failures.len(), FailureSummary(failures))]
    PartialBatch {
        /// Records in the batch.
        total: usize,
        /// The records that were not written, in batch order.
        failures: Vec<RecordFailure>,
    },
}

/// One record of a batch that could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFailure {
    /// Position of the record in the batch.
    pub index: usize,
    /// `ended`, `attempt`, `token_usage`, `prompt`, `tool_call` or `thought`.
    pub kind: &'static str,
    /// The interception the record refers to.
    pub interception_id: String,
    /// Why: `unknown interception`, or the database's message.
    pub reason: String,
}

impl fmt::Display for RecordFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} of interception {}: {}",
            self.index, self.kind, self.interception_id, self.reason
        )
    }
}

/// At most this many failures are spelled out in the error message; the rest are counted.
const SHOWN_FAILURES: usize = 5;

struct FailureSummary<'a>(&'a [RecordFailure]);

impl fmt::Display for FailureSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, failure) in self.0.iter().take(SHOWN_FAILURES).enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{failure}")?;
        }
        if self.0.len() > SHOWN_FAILURES {
            write!(f, "; and {} more", self.0.len() - SHOWN_FAILURES)?;
        }
        Ok(())
    }
}

/// Converts a driver error, keeping only its message.
pub(crate) fn db(err: sqlx::Error) -> StoreError {
    StoreError::Database(db_message(&err))
}

/// The message of a driver error without bound values: for errors returned by the database, its
/// primary message (PostgreSQL's `DETAIL`, which may quote values, is left out).
pub(crate) fn db_message(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(e) => e.message().to_owned(),
        other => other.to_string(),
    }
}

pub(crate) fn migration(err: sqlx::migrate::MigrateError) -> StoreError {
    StoreError::Migration(err.to_string())
}

/// A database URL fit for an error message: any `user:password@` part is replaced by `…@`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://…{}", &url[..scheme_end], &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_url("mysql://root:hunter2@db:3306/x"),
            "mysql://…@db:3306/x"
        );
        assert_eq!(redact_url("mysql://db/x?a=b@c"), "mysql://db/x?a=b@c");
        assert_eq!(redact_url("foo"), "foo");
    }

    #[test]
    fn batch_error_lists_some_failures() {
        let failures = (0..7)
            .map(|index| RecordFailure {
                index,
                kind: "prompt",
                interception_id: format!("i{index}"),
                reason: "unknown interception".into(),
            })
            .collect();
        let msg = StoreError::PartialBatch {
            total: 10,
            failures,
        }
        .to_string();
        assert!(msg.starts_with("7 of 10 records not written: #0 prompt of interception i0"));
        assert!(msg.ends_with("; and 2 more"), "{msg}");
    }
}
