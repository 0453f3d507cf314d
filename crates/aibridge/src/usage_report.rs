//! Usage reports: how totals are grouped, the periods they cover, and their JSON and table
//! forms. Shared by `aibridge usage` and `GET /api/v1/usage`, so both speak the same words.

use aibridge_store::{GroupBy, UnixMillis, UsageRow};

/// A report parameter that cannot be understood; the message is for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("`{0}` is neither a duration like 7d nor a date like 2026-11-01")]
    BadPoint(String),
    #[error("`{0}` is not one of user, model, key, day, provider")]
    BadGrouping(String),
}

/// How usage totals are grouped (`aibridge usage --by`, `GET /api/v1/usage?by=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Grouping {
    User,
    Model,
    Key,
    Day,
    Provider,
}

impl From<Grouping> for GroupBy {
    fn from(group: Grouping) -> Self {
        match group {
            Grouping::User => GroupBy::User,
            Grouping::Model => GroupBy::Model,
            Grouping::Key => GroupBy::Key,
            Grouping::Day => GroupBy::Day,
            Grouping::Provider => GroupBy::Provider,
        }
    }
}

impl Grouping {
    /// Parses a grouping by name (the names `--by` accepts).
    pub fn parse(name: &str) -> Result<Self, ReportError> {
        <Self as clap::ValueEnum>::from_str(name, false)
            .map_err(|_| ReportError::BadGrouping(name.to_string()))
    }
}

/// `7d`, `24h`, `90m` ago, or a UTC date `YYYY-MM-DD`, as Unix milliseconds.
pub fn parse_point(text: &str, now: UnixMillis) -> Result<UnixMillis, ReportError> {
    if let Ok(date) = time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    ) {
        return Ok(date.midnight().assume_utc().unix_timestamp() * 1000);
    }
    let ago =
        humantime::parse_duration(text).map_err(|_| ReportError::BadPoint(text.to_string()))?;
    Ok(now - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX).min(now))
}

/// Totals over all rows, appended to reports.
fn totals(rows: &[UsageRow]) -> UsageRow {
    rows.iter().fold(
        UsageRow {
            group: "TOTAL".into(),
            requests: 0,
            failed_requests: 0,
            failovers: 0,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
        },
        |mut sum, row| {
            sum.requests += row.requests;
            sum.failed_requests += row.failed_requests;
            sum.failovers += row.failovers;
            sum.input_tokens += row.input_tokens;
            sum.output_tokens += row.output_tokens;
            sum.cache_read_tokens += row.cache_read_tokens;
            sum.cache_write_tokens += row.cache_write_tokens;
            sum
        },
    )
}

pub fn usage_json(rows: &[UsageRow]) -> serde_json::Value {
    serde_json::json!({ "rows": rows, "totals": totals(rows) })
}

pub fn usage_table(rows: &[UsageRow], by: Grouping) -> String {
    use std::fmt::Write as _;
    let header = format!("{by:?}").to_uppercase();
    let mut lines = vec![[
        header,
        "REQUESTS".into(),
        "FAILED".into(),
        "FAILOVERS".into(),
        "INPUT".into(),
        "OUTPUT".into(),
        "CACHE_READ".into(),
        "CACHE_WRITE".into(),
    ]];
    let total = totals(rows);
    for row in rows.iter().chain(std::iter::once(&total)) {
        lines.push([
            row.group.clone(),
            row.requests.to_string(),
            row.failed_requests.to_string(),
            row.failovers.to_string(),
            row.input_tokens.to_string(),
            row.output_tokens.to_string(),
            row.cache_read_tokens.to_string(),
            row.cache_write_tokens.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_in_time() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_point("7d", now).unwrap(), now - 7 * 86_400_000);
        assert_eq!(parse_point("90m", now).unwrap(), now - 90 * 60_000);
        assert_eq!(parse_point("2026-11-01", now).unwrap(), 1_793_491_200_000);
        assert!(parse_point("last week", now).is_err());
    }

    #[test]
    fn usage_table_has_totals() {
        let row = |group: &str, requests| UsageRow {
            group: group.into(),
            requests,
            failed_requests: 1,
            failovers: 2,
            input_tokens: 10,
            output_tokens: 20,
            cache_read_tokens: 0,
            cache_write_tokens: 3,
        };
        let table = usage_table(&[row("alice", 3), row("bob", 4)], Grouping::User);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("USER   REQUESTS"), "{table}");
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            ["TOTAL", "7", "2", "4", "20", "40", "0", "6"]
        );
    }

    #[test]
    fn groupings_by_name() {
        assert_eq!(Grouping::parse("model"), Ok(Grouping::Model));
        assert!(matches!(
            Grouping::parse("team"),
            Err(ReportError::BadGrouping(_))
        ));
    }
}
