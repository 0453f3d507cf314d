// The SQL shared by both backends, compiled once per backend: `sqlite.rs` and `postgres.rs`
// each `include!` this file into a module that defines `Db` (the sqlx database) and
// `begin_write` (how a write transaction starts). Both engines accept `$N` placeholders, the
// same DDL types (see the migrations) and the SQL below, so one text serves both; what differs
// (connection setup, migrations, transaction start) lives in the backend files.

use std::collections::{BTreeMap, HashMap};

use sqlx::{Pool, QueryBuilder, Row};

use crate::backend::sql::{self, batch_outcome, unknown_interception};
use crate::error::{RecordFailure, StoreError, db, db_message};
use crate::types::{
    AttemptView, CredentialKind, DailyUsageRow, GroupBy, InterceptionDetail, InterceptionEnded,
    InterceptionFilter, InterceptionPage, NewInterception, NewToken, Record, RequestKind,
    ThoughtView, TokenInfo, ToolCallView, ToolRun, Totals, UnixMillis, UsageCell, UsageFilter, UsageRow, UsageView, User,
    WriteBatch,
};

type Conn = <Db as sqlx::Database>::Connection;
type DbRow = <Db as sqlx::Database>::Row;

/// How a usage report is split besides its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Whole,
    Day,
    DayAndModel,
}

/// `last_used_at` is rewritten only when it is older than this, so that authenticating every
/// request does not mean a write per request.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

/// The columns `detail_from_row` reads, in its order.
macro_rules! select_interceptions {
    () => {
        "SELECT i.id, i.user_name, i.kind, i.provider_type, i.provider_name, i.method, i.route, \
         i.model, i.streaming, i.client, i.session_id, i.user_agent, i.credential, i.started_at, \
         i.ended_at, i.duration_ms, i.status, i.outcome, i.key_hint, i.attempt_count, i.error \
         FROM interceptions i"
    };
}
const SELECT_INTERCEPTIONS: &str = select_interceptions!();
const SELECT_INTERCEPTION_BY_ID: &str = concat!(select_interceptions!(), " WHERE i.id = $1");

/// The connections of a store: reads go to `read`, writes to `write`. For PostgreSQL both are
/// the same pool; for a SQLite file `write` holds the single writer connection.
#[derive(Debug, Clone)]
pub(crate) struct Pools {
    pub(crate) read: Pool<Db>,
    pub(crate) write: Pool<Db>,
}

impl Pools {
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map_err(db)?;
        Ok(())
    }

    pub(crate) async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

    pub(crate) async fn create_user(
        &self,
        name: &str,
        now: UnixMillis,
    ) -> Result<User, StoreError> {
        let row = sqlx::query("INSERT INTO users (name, created_at) VALUES ($1, $2) RETURNING id")
            .bind(name)
            .bind(now)
            .fetch_one(&self.write)
            .await;
        match row {
            Ok(row) => Ok(User {
                id: row.try_get(0).map_err(db)?,
                name: name.to_owned(),
                created_at: now,
            }),
            Err(e) if is_unique_violation(&e) => Err(StoreError::UserExists(name.to_owned())),
            Err(e) => Err(db(e)),
        }
    }

    pub(crate) async fn users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query("SELECT id, name, created_at FROM users ORDER BY name")
            .fetch_all(&self.read)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(User {
                    id: row.try_get(0)?,
                    name: row.try_get(1)?,
                    created_at: row.try_get(2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db)
    }

    pub(crate) async fn create_token(&self, token: NewToken) -> Result<TokenInfo, StoreError> {
        let done = sqlx::query(
            "INSERT INTO tokens (id, user_id, label, admin, secret_hash, created_at) \
             SELECT $1, u.id, $3, $4, $5, $6 FROM users u WHERE u.name = $2",
        )
        .bind(&token.id)
        .bind(&token.user)
        .bind(&token.label)
        .bind(token.admin)
        .bind(&token.secret_hash)
        .bind(token.created_at)
        .execute(&self.write)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuchUser(token.user));
        }
        Ok(TokenInfo {
            id: token.id,
            user: token.user,
            label: token.label,
            admin: token.admin,
            created_at: token.created_at,
            revoked_at: None,
            last_used_at: None,
        })
    }

    pub(crate) async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.id, u.name, t.label, t.admin, t.created_at, t.revoked_at, t.last_used_at \
             FROM tokens t JOIN users u ON u.id = t.user_id ORDER BY t.created_at, t.id",
        )
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter()
            .map(token_from_row)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    pub(crate) async fn revoke_token(&self, id: &str, now: UnixMillis) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(&self.write)
                .await
                .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn token_by_hash(
        &self,
        secret_hash: &str,
        now: UnixMillis,
    ) -> Result<Option<TokenInfo>, StoreError> {
        let row = sqlx::query(
            "SELECT t.id, u.name, t.label, t.admin, t.created_at, t.revoked_at, t.last_used_at \
             FROM tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.secret_hash = $1 AND t.revoked_at IS NULL",
        )
        .bind(secret_hash)
        .fetch_optional(&self.read)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let mut token = token_from_row(&row).map_err(db)?;
        let stale = token
            .last_used_at
            .is_none_or(|at| at <= now - LAST_USED_RESOLUTION_MS);
        if stale {
            sqlx::query(
                "UPDATE tokens SET last_used_at = $2 \
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(&token.id)
            .bind(now)
            .execute(&self.write)
            .await
            .map_err(db)?;
            token.last_used_at = Some(now);
        }
        Ok(Some(token))
    }

    /// One transaction: the starts (all or none), then the records. Fast path: one prepared
    /// (cached) statement per record; a record whose interception does not exist affects no row
    /// and is reported, without an error that would abort the transaction. If a record's
    /// statement fails anyway (a constraint, say), the transaction is rolled back and written
    /// again with a savepoint around each record, so that only the failing records are lost.
    pub(crate) async fn commit(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut failures = Vec::new();
        let mut tx = begin_write(&self.write).await.map_err(db)?;
        // The same rules as the SQLite writer (see `BatchShape`).
        let sql::BatchShape { started, whole } = sql::BatchShape::of(batch);
        for start in &batch.starts {
            match whole.get(start.id.as_str()) {
                Some(end) => insert_ended_interception(&mut *tx, start, end).await,
                None => insert_interception(&mut *tx, start).await,
            }
            .map_err(db)?;
        }
        let mut clean = true;
        for (index, record) in batch.records.iter().enumerate() {
            if let Record::Ended(ended) = record
                && whole.contains_key(ended.id.as_str())
            {
                // Written with its start.
                continue;
            }
            let after_start = started.contains(record.interception_id());
            match write_record(&mut tx, record, after_start).await {
                Ok(true) => {}
                Ok(false) => failures.push(unknown_interception(index, record)),
                Err(e) if is_record_error(&e) => {
                    clean = false;
                    break;
                }
                Err(e) => return Err(db(e)),
            }
        }
        if clean {
            tx.commit().await.map_err(db)?;
        } else {
            tx.rollback().await.map_err(db)?;
            failures.clear();
            let mut tx = begin_write(&self.write).await.map_err(db)?;
            for start in &batch.starts {
                insert_interception(&mut *tx, start).await.map_err(db)?;
            }
            for (index, record) in batch.records.iter().enumerate() {
                let mut savepoint = sqlx::Acquire::begin(&mut *tx).await.map_err(db)?;
                match write_record(&mut savepoint, record, false).await {
                    Ok(true) => savepoint.commit().await.map_err(db)?,
                    Ok(false) => {
                        savepoint.commit().await.map_err(db)?;
                        failures.push(unknown_interception(index, record));
                    }
                    Err(e) if is_record_error(&e) => {
                        savepoint.rollback().await.map_err(db)?;
                        failures.push(RecordFailure {
                            index,
                            kind: record.kind(),
                            interception_id: record.interception_id().to_owned(),
                            reason: db_message(&e),
                        });
                    }
                    Err(e) => return Err(db(e)),
                }
            }
            tx.commit().await.map_err(db)?;
        }
        batch_outcome(batch, failures)
    }

    /// Sets the totals of interceptions that never ended (see `sql::TOTAL_UNENDED`).
    pub(crate) async fn total_unended(&self) -> Result<(), StoreError> {
        sqlx::query(sql::TOTAL_UNENDED)
            .execute(&self.write)
            .await
            .map_err(db)?;
        Ok(())
    }

    pub(crate) async fn usage(
        &self,
        filter: &UsageFilter,
        by: GroupBy,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let rows = self.usage_rows(filter, by, Split::Whole).await?;
        let mut out: Vec<UsageRow> = rows.into_iter().map(|(_, _, row)| row).collect();
        // Byte order, the same on both engines whatever PostgreSQL's collation.
        out.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(out)
    }

    pub(crate) async fn usage_by_day(
        &self,
        filter: &UsageFilter,
        by: GroupBy,
    ) -> Result<Vec<DailyUsageRow>, StoreError> {
        let rows = self.usage_rows(filter, by, Split::Day).await?;
        let mut out: Vec<(i64, UsageRow)> = rows
            .into_iter()
            .map(|(day, _, usage)| (day.unwrap_or_default(), usage))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.group.cmp(&b.1.group)));
        Ok(out
            .into_iter()
            .map(|(day, usage)| DailyUsageRow {
                day: day_label(day),
                usage,
            })
            .collect())
    }

    pub(crate) async fn usage_cells(
        &self,
        filter: &UsageFilter,
        by: GroupBy,
    ) -> Result<Vec<UsageCell>, StoreError> {
        let rows = self.usage_rows(filter, by, Split::DayAndModel).await?;
        let mut out: Vec<(i64, String, UsageRow)> = rows
            .into_iter()
            .map(|(day, model, usage)| (day.unwrap_or_default(), model.unwrap_or_default(), usage))
            .collect();
        out.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| a.1.cmp(&b.1))
                .then_with(|| a.2.group.cmp(&b.2.group))
        });
        Ok(out
            .into_iter()
            .map(|(day, model, usage)| UsageCell {
                day: day_label(day),
                model,
                usage,
            })
            .collect())
    }

    /// The usage report's rows, grouped by `by` and, as `split` asks, by UTC day (the day
    /// number, first of each triple) and by model (second) as well.
    async fn usage_rows(
        &self,
        filter: &UsageFilter,
        by: GroupBy,
        split: Split,
    ) -> Result<Vec<(Option<i64>, Option<String>, UsageRow)>, StoreError> {
        let by_day = split != Split::Whole;
        let by_model = split == Split::DayAndModel;
        let group = match by {
            GroupBy::User => "i.user_name",
            GroupBy::Model => "COALESCE(i.model, '-')",
            GroupBy::Key => {
                "CASE WHEN i.credential = 'byok' THEN 'byok' ELSE COALESCE(i.key_hint, '-') END"
            }
            // Whole days since the epoch (integer division); labelled in Rust.
            GroupBy::Day => "(i.started_at / 86400000)",
            GroupBy::Provider => "i.provider_name",
        };
        // Each ended interception carries its totals (written with its end): one table read.
        let mut q = QueryBuilder::<Db>::new("SELECT ");
        if by_day {
            q.push("(i.started_at / 86400000) AS dy, ");
        }
        if by_model {
            q.push("COALESCE(i.model, '-') AS mdl, ");
        }
        q.push(group);
        q.push(
            " AS grp, COUNT(*) AS requests, \
             CAST(COALESCE(SUM(CASE WHEN i.outcome <> 'completed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS failed_requests, \
             CAST(COALESCE(SUM(i.failovers), 0) AS BIGINT) AS failovers, \
             CAST(COALESCE(SUM(i.input_tokens), 0) AS BIGINT) AS input_tokens, \
             CAST(COALESCE(SUM(i.output_tokens), 0) AS BIGINT) AS output_tokens, \
             CAST(COALESCE(SUM(i.cache_read_tokens), 0) AS BIGINT) AS cache_read_tokens, \
             CAST(COALESCE(SUM(i.cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens \
             FROM ",
        );
        q.push(REPORT_SOURCE);
        q.push(" WHERE 1 = 1");
        if let Some(user) = &filter.user {
            q.push(" AND i.user_name = ").push_bind(user.clone());
        }
        if let Some(since) = filter.since {
            q.push(" AND i.started_at >= ").push_bind(since);
        }
        if let Some(until) = filter.until {
            q.push(" AND i.started_at < ").push_bind(until);
        }
        q.push(match split {
            Split::Whole => " GROUP BY 1",
            Split::Day => " GROUP BY 1, 2",
            Split::DayAndModel => " GROUP BY 1, 2, 3",
        });
        let rows = q.build().fetch_all(&self.read).await.map_err(db)?;
        rows.iter()
            .map(|row| {
                let group = if by == GroupBy::Day {
                    day_label(row.try_get("grp")?)
                } else {
                    row.try_get("grp")?
                };
                let day = if by_day {
                    Some(row.try_get::<i64, _>("dy")?)
                } else {
                    None
                };
                let model = if by_model {
                    Some(row.try_get::<String, _>("mdl")?)
                } else {
                    None
                };
                Ok((
                    day,
                    model,
                    UsageRow {
                        group,
                        requests: row.try_get("requests")?,
                        failed_requests: row.try_get("failed_requests")?,
                        failovers: row.try_get("failovers")?,
                        input_tokens: row.try_get("input_tokens")?,
                        output_tokens: row.try_get("output_tokens")?,
                        cache_read_tokens: row.try_get("cache_read_tokens")?,
                        cache_write_tokens: row.try_get("cache_write_tokens")?,
                    },
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(db)
    }

    pub(crate) async fn interceptions(
        &self,
        filter: &InterceptionFilter,
    ) -> Result<InterceptionPage, StoreError> {
        let limit = match filter.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let mut q = QueryBuilder::<Db>::new(SELECT_INTERCEPTIONS);
        q.push(" WHERE 1 = 1");
        if let Some(user) = &filter.user {
            q.push(" AND i.user_name = ").push_bind(user.clone());
        }
        if let Some(since) = filter.since {
            q.push(" AND i.started_at >= ").push_bind(since);
        }
        if let Some(until) = filter.until {
            q.push(" AND i.started_at < ").push_bind(until);
        }
        if let Some(status) = filter.status {
            q.push(" AND i.status = ").push_bind(i32::from(status));
        }
        if let Some(outcome) = &filter.outcome {
            q.push(" AND i.outcome = ").push_bind(outcome.clone());
        }
        if let Some(before) = &filter.before {
            q.push(" AND (i.started_at, i.id) < (SELECT c.started_at, c.id FROM interceptions c WHERE c.id = ")
                .push_bind(before.clone())
                .push(")");
        }
        // One more than the page: tells whether there is a next page.
        q.push(" ORDER BY i.started_at DESC, i.id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows = q.build().fetch_all(&self.read).await.map_err(db)?;
        let mut items = rows
            .iter()
            .take(limit as usize)
            .map(detail_from_row)
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next = if rows.len() > limit as usize {
            items.last().map(|i| i.id.clone())
        } else {
            None
        };
        self.attach_children(&mut items).await?;
        Ok(InterceptionPage { items, next })
    }

    pub(crate) async fn interception(
        &self,
        id: &str,
    ) -> Result<Option<InterceptionDetail>, StoreError> {
        let row = sqlx::query(SELECT_INTERCEPTION_BY_ID)
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let mut items = vec![detail_from_row(&row)?];
        self.attach_children(&mut items).await?;
        Ok(items.pop())
    }

    /// Fills in the child records of `items` (their attempts, usage, prompts, tool calls and
    /// thoughts): one query per child table for all of them.
    async fn attach_children(&self, items: &mut [InterceptionDetail]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
        let mut attempts = self.children(
            "SELECT interception_id, number, key_hint, status, transport_error, failover_reason, \
             cooldown_ms, duration_ms, created_at, key_check FROM attempts \
             WHERE interception_id IN (",
            ") ORDER BY interception_id, number",
            &ids,
            |row| {
                Ok(AttemptView {
                    number: to_u32(row.try_get::<i64, _>(1)?, "number")?,
                    key_hint: row.try_get(2)?,
                    status: to_status(row.try_get(3)?)?,
                    transport_error: row.try_get(4)?,
                    failover_reason: row.try_get(5)?,
                    cooldown_ms: row.try_get(6)?,
                    key_check: row.try_get(9)?,
                    duration_ms: row.try_get(7)?,
                    created_at: row.try_get(8)?,
                })
            },
        )
        .await?;
        let mut usage = self
            .children(
                "SELECT interception_id, provider_response_id, input_tokens, output_tokens, \
             cache_read_tokens, cache_write_tokens, extra, created_at FROM token_usages \
             WHERE interception_id IN (",
                ") ORDER BY created_at, seq",
                &ids,
                |row| {
                    let extra: String = row.try_get(6)?;
                    Ok(UsageView {
                        provider_response_id: row.try_get(1)?,
                        input: row.try_get(2)?,
                        output: row.try_get(3)?,
                        cache_read: row.try_get(4)?,
                        cache_write: row.try_get(5)?,
                        extra: serde_json::from_str(&extra).map_err(|e| {
                            sqlx::Error::ColumnDecode {
                                index: "extra".into(),
                                source: Box::new(e),
                            }
                        })?,
                        created_at: row.try_get(7)?,
                    })
                },
            )
            .await?;
        let mut prompts = self
            .children(
                "SELECT interception_id, prompt FROM prompts WHERE interception_id IN (",
                ") ORDER BY created_at, id",
                &ids,
                |row| row.try_get(1),
            )
            .await?;
        let mut tool_calls = self.children(
            "SELECT interception_id, provider_response_id, tool_call_id, name, input, injected, \
             created_at, server_name, server_url, tool_name, result, error, duration_ms \
             FROM tool_calls WHERE interception_id IN (",
            ") ORDER BY created_at, id",
            &ids,
            |row| {
                Ok(ToolCallView {
                    provider_response_id: row.try_get(1)?,
                    tool_call_id: row.try_get(2)?,
                    name: row.try_get(3)?,
                    input: row.try_get(4)?,
                    injected: row.try_get(5)?,
                    created_at: row.try_get(6)?,
                    run: match row.try_get::<Option<String>, _>(7)? {
                        Some(server_name) => Some(ToolRun {
                            server_name,
                            server_url: row.try_get::<Option<String>, _>(8)?.unwrap_or_default(),
                            tool_name: row.try_get::<Option<String>, _>(9)?.unwrap_or_default(),
                            result: row.try_get(10)?,
                            error: row.try_get(11)?,
                            duration_ms: row.try_get::<Option<i64>, _>(12)?.unwrap_or_default(),
                        }),
                        None => None,
                    },
                })
            },
        )
        .await?;
        let mut thoughts = self
            .children(
                "SELECT interception_id, content, source, created_at FROM thoughts \
             WHERE interception_id IN (",
                ") ORDER BY created_at, id",
                &ids,
                |row| {
                    Ok(ThoughtView {
                        content: row.try_get(1)?,
                        source: row.try_get(2)?,
                        created_at: row.try_get(3)?,
                    })
                },
            )
            .await?;
        for item in items.iter_mut() {
            item.attempts = attempts.remove(&item.id).unwrap_or_default();
            item.usage = usage.remove(&item.id).unwrap_or_default();
            item.prompts = prompts.remove(&item.id).unwrap_or_default();
            item.tool_calls = tool_calls.remove(&item.id).unwrap_or_default();
            item.thoughts = thoughts.remove(&item.id).unwrap_or_default();
        }
        Ok(())
    }

    /// Child rows of the given interceptions in one query, grouped by interception id (the
    /// first column); `head` and `tail` surround the list of ids.
    async fn children<T>(
        &self,
        head: &'static str,
        tail: &'static str,
        ids: &[String],
        decode: impl Fn(&DbRow) -> Result<T, sqlx::Error>,
    ) -> Result<HashMap<String, Vec<T>>, StoreError> {
        let mut q = QueryBuilder::<Db>::new(head);
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id.clone());
        }
        q.push(tail);
        let rows = q.build().fetch_all(&self.read).await.map_err(db)?;
        let mut out: HashMap<String, Vec<T>> = HashMap::new();
        for row in &rows {
            let id: String = row.try_get(0).map_err(db)?;
            out.entry(id).or_default().push(decode(row).map_err(db)?);
        }
        Ok(out)
    }

    pub(crate) async fn served_by_key(
        &self,
        provider_name: &str,
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT key_hint, COUNT(*) FROM interceptions \
             WHERE provider_name = $1 AND key_hint IS NOT NULL AND credential = 'pool' \
             GROUP BY key_hint",
        )
        .bind(provider_name)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db)
    }
}

/// Writes one record (a repeat writes nothing and counts as written); `Ok(false)` when its
/// interception does not exist. `after_start`: its interception starts in this transaction, so
/// its existence needs no check.
async fn write_record(
    conn: &mut Conn,
    record: &Record,
    after_start: bool,
) -> Result<bool, sqlx::Error> {
    let query = match record {
        Record::Ended(r) => match &r.totals {
            Some(t) => bind_totals(
                bind_end(sqlx::query(sql::END_INTERCEPTION_TOTALED).bind(&r.id), r),
                t,
            ),
            None => bind_end(sqlx::query(sql::END_INTERCEPTION).bind(&r.id), r),
        },
        Record::Attempt(r) => sqlx::query(sql::INSERT_ATTEMPT.text(after_start))
            .bind(&r.interception_id)
            .bind(i64::from(r.number))
            .bind(&r.key_hint)
            .bind(r.status.map(i32::from))
            .bind(&r.transport_error)
            .bind(&r.failover_reason)
            .bind(r.cooldown_ms)
            .bind(r.duration_ms)
            .bind(r.created_at)
            .bind(&r.key_check),
        Record::TokenUsage(r) => sqlx::query(sql::INSERT_TOKEN_USAGE.text(after_start))
            .bind(&r.interception_id)
            .bind(&r.provider_response_id)
            .bind(r.input)
            .bind(r.output)
            .bind(r.cache_read)
            .bind(r.cache_write)
            .bind(sql::extra_json(&r.extra))
            .bind(r.created_at)
            .bind(i64::from(r.seq)),
        Record::Prompt(r) => sqlx::query(sql::INSERT_PROMPT.text(after_start))
            .bind(&r.interception_id)
            .bind(&r.provider_response_id)
            .bind(&r.prompt)
            .bind(r.created_at)
            .bind(i64::from(r.seq)),
        Record::ToolCall(r) => sqlx::query(sql::INSERT_TOOL_CALL.text(after_start))
            .bind(&r.interception_id)
            .bind(&r.provider_response_id)
            .bind(&r.tool_call_id)
            .bind(&r.name)
            .bind(&r.input)
            .bind(r.injected)
            .bind(r.created_at)
            .bind(i64::from(r.seq))
            .bind(r.run.as_ref().map(|run| &run.server_name))
            .bind(r.run.as_ref().map(|run| &run.server_url))
            .bind(r.run.as_ref().map(|run| &run.tool_name))
            .bind(r.run.as_ref().and_then(|run| run.result.as_ref()))
            .bind(r.run.as_ref().and_then(|run| run.error.as_ref()))
            .bind(r.run.as_ref().map(|run| run.duration_ms)),
        Record::Thought(r) => sqlx::query(sql::INSERT_THOUGHT.text(after_start))
            .bind(&r.interception_id)
            .bind(&r.content)
            .bind(&r.source)
            .bind(r.created_at)
            .bind(i64::from(r.seq)),
    };
    if query.execute(&mut *conn).await?.rows_affected() > 0 || after_start {
        return Ok(true);
    }
    // Nothing written: a repeat of a row already there, or a record of an unknown interception.
    let exists = sqlx::query(sql::INTERCEPTION_EXISTS)
        .bind(record.interception_id())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(exists.is_some() && !matches!(record, Record::Ended(_)))
}

type Query<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>;

/// The start's columns, the first fourteen parameters of both interception inserts.
fn bind_start<'q>(query: Query<'q>, r: &'q NewInterception) -> Query<'q> {
    query
        .bind(&r.id)
        .bind(&r.user)
        .bind(r.kind.as_str())
        .bind(&r.provider_type)
        .bind(&r.provider_name)
        .bind(&r.method)
        .bind(&r.route)
        .bind(&r.model)
        .bind(r.streaming)
        .bind(&r.client)
        .bind(&r.session_id)
        .bind(&r.user_agent)
        .bind(r.credential.as_str())
        .bind(r.started_at)
}

async fn insert_ended_interception<'e, E>(
    executor: E,
    r: &NewInterception,
    end: &sql::WholeEnd<'_>,
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Db>,
{
    let query = bind_start(sqlx::query(sql::INSERT_ENDED_INTERCEPTION), r);
    bind_totals(bind_end(query, end.ended), &end.totals)
        .execute(executor)
        .await?;
    Ok(())
}

/// The end's columns, in the order of both the interception's whole insert and the end's update
/// (after the id).
fn bind_end<'q>(query: Query<'q>, e: &'q InterceptionEnded) -> Query<'q> {
    query
        .bind(e.ended_at)
        .bind(e.duration_ms)
        .bind(e.status.map(i32::from))
        .bind(&e.outcome)
        .bind(&e.key_hint)
        .bind(i64::from(e.attempts))
        .bind(&e.error)
}

fn bind_totals<'q>(query: Query<'q>, t: &Totals) -> Query<'q> {
    query
        .bind(t.input)
        .bind(t.output)
        .bind(t.cache_read)
        .bind(t.cache_write)
        .bind(t.failovers)
}

async fn insert_interception<'e, E>(executor: E, r: &NewInterception) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Db>,
{
    bind_start(sqlx::query(sql::INSERT_INTERCEPTION), r)
        .execute(executor)
        .await?;
    Ok(())
}

/// An error caused by the record itself (a constraint, a value the database rejects), after
/// which the other records can still be written; anything else (I/O, pool) fails the batch.
fn is_record_error(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(_) | sqlx::Error::Encode(_))
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

fn token_from_row(row: &DbRow) -> Result<TokenInfo, sqlx::Error> {
    Ok(TokenInfo {
        id: row.try_get(0)?,
        user: row.try_get(1)?,
        label: row.try_get(2)?,
        admin: row.try_get(3)?,
        created_at: row.try_get(4)?,
        revoked_at: row.try_get(5)?,
        last_used_at: row.try_get(6)?,
    })
}

fn detail_from_row(row: &DbRow) -> Result<InterceptionDetail, StoreError> {
    let kind: String = row.try_get(2).map_err(db)?;
    let credential: String = row.try_get(12).map_err(db)?;
    let attempt_count: Option<i64> = row.try_get(19).map_err(db)?;
    Ok(InterceptionDetail {
        id: row.try_get(0).map_err(db)?,
        user: row.try_get(1).map_err(db)?,
        kind: RequestKind::parse(&kind)
            .ok_or_else(|| StoreError::Database("invalid value in interceptions.kind".into()))?,
        provider_type: row.try_get(3).map_err(db)?,
        provider_name: row.try_get(4).map_err(db)?,
        method: row.try_get(5).map_err(db)?,
        route: row.try_get(6).map_err(db)?,
        model: row.try_get(7).map_err(db)?,
        streaming: row.try_get(8).map_err(db)?,
        client: row.try_get(9).map_err(db)?,
        session_id: row.try_get(10).map_err(db)?,
        user_agent: row.try_get(11).map_err(db)?,
        credential: CredentialKind::parse(&credential).ok_or_else(|| {
            StoreError::Database("invalid value in interceptions.credential".into())
        })?,
        started_at: row.try_get(13).map_err(db)?,
        ended_at: row.try_get(14).map_err(db)?,
        duration_ms: row.try_get(15).map_err(db)?,
        status: to_status(row.try_get(16).map_err(db)?).map_err(db)?,
        outcome: row.try_get(17).map_err(db)?,
        key_hint: row.try_get(18).map_err(db)?,
        attempt_count: attempt_count
            .map(|n| to_u32(n, "attempt_count"))
            .transpose()
            .map_err(db)?,
        error: row.try_get(20).map_err(db)?,
        attempts: Vec::new(),
        usage: Vec::new(),
        prompts: Vec::new(),
        tool_calls: Vec::new(),
        thoughts: Vec::new(),
    })
}

fn to_u32(value: i64, column: &'static str) -> Result<u32, sqlx::Error> {
    u32::try_from(value).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.into(),
        source: Box::new(e),
    })
}

fn to_status(value: Option<i32>) -> Result<Option<u16>, sqlx::Error> {
    value
        .map(|v| {
            u16::try_from(v).map_err(|e| sqlx::Error::ColumnDecode {
                index: "status".into(),
                source: Box::new(e),
            })
        })
        .transpose()
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01, UTC).
fn day_label(day: i64) -> String {
    const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;
    i32::try_from(day + UNIX_EPOCH_JULIAN_DAY)
        .ok()
        .and_then(|jd| time::Date::from_julian_day(jd).ok())
        .map_or_else(
            || format!("day {day}"),
            |d| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        )
}
