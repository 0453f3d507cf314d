//! The statements of the write path, shared by sqlx (both backends) and the SQLite writer
//! thread. Parameters are `$N`, which PostgreSQL and SQLite both accept; [`numbered`] turns them
//! into SQLite's `?N` for rusqlite, whose positional binding needs explicit numbers (a `$N`
//! parameter is a *named* one in SQLite, numbered by first appearance).

use std::collections::{HashMap, HashSet};

use foldhash::fast::RandomState;

use crate::{InterceptionEnded, Record, Totals, WriteBatch};

// Records are retried after a failed transaction: every record insert is idempotent, its row
// named by ids the gateway chose (an attempt's number, a record's `seq`), so a batch retried
// after a lost COMMIT acknowledgement writes nothing twice.

// A start is retried with its batch when the batch's commit failed (the request went on), so a
// start that is already there (the failed commit went through after all) is left as it is.
pub(crate) const INSERT_INTERCEPTION: &str = "INSERT INTO interceptions (id, user_name, kind, \
     provider_type, provider_name, method, route, model, streaming, client, session_id, \
     user_agent, credential, started_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
     ON CONFLICT (id) DO NOTHING";

// A request that started and ended within one batch (SQLite): its row written once, whole,
// with the totals summed from the batch's records, instead of inserted and then updated. A row
// already there (a retried batch) takes the end, as the update would.
pub(crate) const INSERT_ENDED_INTERCEPTION: &str = "INSERT INTO interceptions (id, user_name, \
     kind, provider_type, provider_name, method, route, model, streaming, client, session_id, \
     user_agent, credential, started_at, ended_at, duration_ms, status, outcome, key_hint, \
     attempt_count, error, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, \
     failovers) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
     $19, $20, $21, $22, $23, $24, $25, $26) \
     ON CONFLICT (id) DO UPDATE SET ended_at = excluded.ended_at, \
     duration_ms = excluded.duration_ms, status = excluded.status, outcome = excluded.outcome, \
     key_hint = excluded.key_hint, attempt_count = excluded.attempt_count, \
     error = excluded.error, input_tokens = excluded.input_tokens, \
     output_tokens = excluded.output_tokens, cache_read_tokens = excluded.cache_read_tokens, \
     cache_write_tokens = excluded.cache_write_tokens, failovers = excluded.failovers";

// The end also writes the request's totals, summed from the rows written before it (a
// request's records come in order, its end last), so reports read one table.
pub(crate) const END_INTERCEPTION: &str = "UPDATE interceptions SET ended_at = $2, \
     duration_ms = $3, status = $4, outcome = $5, key_hint = $6, attempt_count = $7, error = $8, \
     (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens) = \
     (SELECT COALESCE(SUM(t.input_tokens), 0), COALESCE(SUM(t.output_tokens), 0), \
     COALESCE(SUM(t.cache_read_tokens), 0), COALESCE(SUM(t.cache_write_tokens), 0) \
     FROM token_usages t WHERE t.interception_id = $1), \
     failovers = (SELECT COUNT(*) FROM attempts a WHERE a.interception_id = $1 \
     AND a.failover_reason IS NOT NULL) \
     WHERE id = $1";

// An end that carries its request's totals (the gateway's always do) writes them as they are:
// no sums over the request's rows. On SQLite `OR FAIL`: a one-row update has nothing of its own
// to undo if it fails, and without it SQLite keeps a statement journal for every end.
macro_rules! end_totaled {
    ($update:literal) => {
        concat!(
            $update,
            " interceptions SET ended_at = $2, duration_ms = $3, status = $4, outcome = $5, \
             key_hint = $6, attempt_count = $7, error = $8, input_tokens = $9, \
             output_tokens = $10, cache_read_tokens = $11, cache_write_tokens = $12, \
             failovers = $13 WHERE id = $1"
        )
    };
}
pub(crate) const END_INTERCEPTION_TOTALED: &str = end_totaled!("UPDATE");
pub(crate) const END_INTERCEPTION_TOTALED_SQLITE: &str = end_totaled!("UPDATE OR FAIL");

// Child rows are inserted only when their interception exists: a record about an unknown
// interception affects no row (and is reported) instead of aborting the transaction. A record
// of a request that starts in the same transaction is inserted with the `after_start` form, a
// single-row VALUES insert: it skips the look-up, and SQLite needs no statement journal for it
// (an INSERT … SELECT may write several rows, so it keeps one).

/// The two forms of a child row's insert.
pub(crate) struct ChildInsert {
    pub(crate) checked: &'static str,
    pub(crate) after_start: &'static str,
}

impl ChildInsert {
    /// `after_start`: the row's interception starts in the same transaction.
    pub(crate) fn text(&self, after_start: bool) -> &'static str {
        if after_start {
            self.after_start
        } else {
            self.checked
        }
    }
}

macro_rules! child_insert {
    ($name:ident, $head:literal, $values:literal) => {
        pub(crate) const $name: ChildInsert = ChildInsert {
            checked: concat!(
                $head,
                " SELECT ",
                $values,
                " WHERE EXISTS (SELECT 1 FROM interceptions WHERE id = $1) ON CONFLICT DO NOTHING"
            ),
            after_start: concat!($head, " VALUES (", $values, ") ON CONFLICT DO NOTHING"),
        };
    };
}

child_insert!(
    INSERT_ATTEMPT,
    "INSERT INTO attempts (interception_id, number, key_hint, status, transport_error, \
     failover_reason, cooldown_ms, duration_ms, created_at, key_check)",
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10"
);

child_insert!(
    INSERT_TOKEN_USAGE,
    "INSERT INTO token_usages (interception_id, provider_response_id, input_tokens, \
     output_tokens, cache_read_tokens, cache_write_tokens, extra, created_at, seq)",
    "$1, $2, $3, $4, $5, $6, $7, $8, $9"
);

child_insert!(
    INSERT_PROMPT,
    "INSERT INTO prompts (interception_id, provider_response_id, prompt, created_at, seq)",
    "$1, $2, $3, $4, $5"
);

child_insert!(
    INSERT_TOOL_CALL,
    "INSERT INTO tool_calls (interception_id, provider_response_id, tool_call_id, name, input, \
     injected, created_at, seq, server_name, server_url, tool_name, result, error, duration_ms)",
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14"
);

child_insert!(
    INSERT_THOUGHT,
    "INSERT INTO thoughts (interception_id, content, source, created_at, seq)",
    "$1, $2, $3, $4, $5"
);

/// Whether an interception exists: an insert that wrote nothing was a repeat if it does.
pub(crate) const INTERCEPTION_EXISTS: &str = "SELECT 1 FROM interceptions WHERE id = $1";

/// The `extra` column of a token usage: JSON text.
pub(crate) fn extra_json(extra: &std::collections::BTreeMap<String, i64>) -> String {
    // A map of strings to integers always serialises.
    serde_json::to_string(extra).unwrap_or_else(|_| "{}".to_owned())
}

/// `Ok` when every record was written, else which ones were not (the rest were committed).
pub(crate) fn batch_outcome(
    batch: &crate::WriteBatch,
    failures: Vec<crate::RecordFailure>,
) -> Result<(), crate::StoreError> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(crate::StoreError::PartialBatch {
            total: batch.records.len(),
            failures,
        })
    }
}

pub(crate) fn unknown_interception(index: usize, record: &crate::Record) -> crate::RecordFailure {
    crate::RecordFailure {
        index,
        kind: record.kind(),
        interception_id: record.interception_id().to_owned(),
        reason: "unknown interception".to_owned(),
    }
}

/// A request whose start and end are both in the batch: its end, and its totals (the end's own,
/// else summed from the batch's records: all of its records are there, since none can come
/// before its start).
pub(crate) struct WholeEnd<'a> {
    pub(crate) ended: &'a InterceptionEnded,
    pub(crate) totals: Totals,
}

/// Which requests of a batch start in it, and which of those also end in it (by id): a request
/// that starts and ends in the same batch is one row, inserted whole, and the records of a
/// request that starts in it need no check that it exists. The ids are the gateway's own, so a
/// fast hash (foldhash) is safe here: a batch looks each id up several times.
pub(crate) struct BatchShape<'a> {
    pub(crate) started: HashSet<&'a str, RandomState>,
    pub(crate) whole: HashMap<&'a str, WholeEnd<'a>, RandomState>,
}

impl<'a> BatchShape<'a> {
    pub(crate) fn of(batch: &'a WriteBatch) -> Self {
        let started: HashSet<&str, RandomState> =
            batch.starts.iter().map(|s| s.id.as_str()).collect();
        let whole = ended_within(batch, &started);
        Self { started, whole }
    }
}

/// The requests of `batch` that started and ended within it, by id.
fn ended_within<'a>(
    batch: &'a WriteBatch,
    started: &HashSet<&str, RandomState>,
) -> HashMap<&'a str, WholeEnd<'a>, RandomState> {
    let mut whole: HashMap<&str, WholeEnd<'_>, RandomState> = HashMap::default();
    if started.is_empty() {
        return whole;
    }
    for record in &batch.records {
        if let Record::Ended(ended) = record
            && started.contains(ended.id.as_str())
        {
            // A later end of the same request overwrites an earlier one, as an update would.
            whole.insert(
                ended.id.as_str(),
                WholeEnd {
                    ended,
                    totals: ended.totals.unwrap_or_default(),
                },
            );
        }
    }
    // Only the ends that carry no totals have them summed from the batch's records.
    if whole.values().all(|end| end.ended.totals.is_some()) {
        return whole;
    }
    for record in &batch.records {
        match record {
            Record::TokenUsage(usage) => {
                if let Some(totals) = summed(&mut whole, &usage.interception_id) {
                    totals.input += usage.input;
                    totals.output += usage.output;
                    totals.cache_read += usage.cache_read;
                    totals.cache_write += usage.cache_write;
                }
            }
            Record::Attempt(attempt) if attempt.failover_reason.is_some() => {
                if let Some(totals) = summed(&mut whole, &attempt.interception_id) {
                    totals.failovers += 1;
                }
            }
            _ => {}
        }
    }
    whole
}

/// The totals to add a record of request `id` to: those of a whole request whose end carries
/// none.
fn summed<'m>(
    whole: &'m mut HashMap<&str, WholeEnd<'_>, RandomState>,
    id: &str,
) -> Option<&'m mut Totals> {
    whole
        .get_mut(id)
        .filter(|end| end.ended.totals.is_none())
        .map(|end| &mut end.totals)
}

/// `$N` parameters as SQLite's `?N`.
pub(crate) fn numbered(sql: &str) -> String {
    sql.replace('$', "?")
}

/// Totals of interceptions that never ended (a gateway stopped by SIGKILL): set at start from
/// what was written, so their usage still counts. Another replica's requests in flight get
/// partial totals, which their end overwrites.
pub(crate) const TOTAL_UNENDED: &str = "UPDATE interceptions SET \
     (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens) = \
     (SELECT COALESCE(SUM(t.input_tokens), 0), COALESCE(SUM(t.output_tokens), 0), \
     COALESCE(SUM(t.cache_read_tokens), 0), COALESCE(SUM(t.cache_write_tokens), 0) \
     FROM token_usages t WHERE t.interception_id = interceptions.id), \
     failovers = (SELECT COUNT(*) FROM attempts a WHERE a.interception_id = interceptions.id \
     AND a.failover_reason IS NOT NULL) \
     WHERE ended_at IS NULL";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_keep_their_numbers() {
        assert_eq!(
            numbered("UPDATE t SET a = $2 WHERE id = $1"),
            "UPDATE t SET a = ?2 WHERE id = ?1"
        );
    }
}
