//! `/ui/usage`: the usage report of `GET /api/v1/usage` (the same store query, periods and
//! groupings), with its totals, a chart of the tokens per day stacked by model, and the rows
//! as CSV (`/ui/usage.csv`, same query).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aibridge_store::{DailyUsageRow, GroupBy, UsageCell, UsageFilter, UsageRow};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::Ui;
use super::auth::Access;
use super::layout::{self, Nav};
use crate::time::now_millis;
use crate::usage_report::{Grouping, parse_point, usage_json};

/// The groupings offered, as `aibridge usage --by` names them.
const GROUPINGS: [&str; 5] = ["user", "model", "key", "day", "provider"];
/// Models with a series of their own in the chart; the rest are summed as one.
const CHART_MODELS: usize = 10;
const DAY_MS: i64 = 86_400_000;

/// The page's query as typed: `since` (default `7d`; empty for all time), `until`, `by`,
/// `user`.
struct UsageQuery {
    since: String,
    until: String,
    by: String,
    user: String,
}

impl UsageQuery {
    fn read(query: Result<Query<HashMap<String, String>>, QueryRejection>) -> Self {
        let params = query.map(|Query(params)| params).unwrap_or_default();
        let text = |name: &str| params.get(name).map(|v| v.trim().to_string());
        Self {
            since: text("since").unwrap_or_else(|| "7d".to_string()),
            until: text("until").unwrap_or_default(),
            by: text("by")
                .filter(|by| !by.is_empty())
                .unwrap_or_else(|| "user".to_string()),
            user: text("user").unwrap_or_default(),
        }
    }

    /// The store's filter and grouping, or what is wrong with the query.
    fn parse(&self) -> Result<(UsageFilter, GroupBy), String> {
        let now = now_millis();
        let point = |name: &str, text: &str| {
            if text.is_empty() {
                Ok(None)
            } else {
                parse_point(text, now)
                    .map(Some)
                    .map_err(|e| format!("{name}: {e}"))
            }
        };
        let by = Grouping::parse(&self.by).map_err(|e| format!("by: {e}"))?;
        let filter = UsageFilter {
            since: point("since", &self.since)?,
            until: point("until", &self.until)?,
            user: (!self.user.is_empty()).then(|| self.user.clone()),
        };
        Ok((filter, by.into()))
    }

    fn query_string(&self) -> String {
        layout::query([
            ("since", self.since.as_str()),
            ("until", self.until.as_str()),
            ("by", self.by.as_str()),
            ("user", self.user.as_str()),
        ])
    }
}

/// `GET /ui/usage?since=7d&until=&by=user&user=`
pub(super) async fn page(
    State(ui): State<Arc<Ui>>,
    Extension(access): Extension<Access>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let query = UsageQuery::read(query);
    let (filter, by) = match query.parse() {
        Ok(parsed) => parsed,
        Err(problem) => {
            let body = html! {
                (filters(&query))
                p.problem role="alert" { (problem) }
            };
            return layout::respond(
                StatusCode::BAD_REQUEST,
                layout::page("Usage", Some(&access), Nav::Usage, false, body),
            );
        }
    };
    let store = ui.app.recorder.store();
    // The table and the chart from one pass over the period's records, its two halves read at
    // once (on separate readers, so on two cores a long period takes about half as long).
    let halves = halves(&filter, now_millis());
    let read =
        futures_util::future::join_all(halves.iter().map(|half| store.usage_cells(half, by))).await;
    let mut cells = Vec::new();
    for half in read {
        match half {
            Ok(half) => cells.extend(half),
            Err(e) => return layout::unavailable(&access, "the usage records", &e),
        }
    }
    let (rows, daily) = table_and_chart(&cells);
    let report = usage_json(&rows);
    let chart = chart_data(&daily);
    let body = html! {
        (filters(&query))
        table #usage-rows {
            thead { tr {
                th { (query.by) } th.num { "Requests" } th.num { "Failed" } th.num { "Failovers" }
                th.num { "Input" } th.num { "Output" } th.num { "Cache read" } th.num { "Cache write" }
                th.num { "Tokens" }
            } }
            tbody {
                @for row in &rows {
                    tr.usage-row data-group=(row.group) {
                        td { (row.group) }
                        (numbers(row))
                    }
                }
                @if rows.is_empty() {
                    tr { td colspan="9" { "No requests in this period." } }
                }
            }
            tfoot {
                tr #usage-totals {
                    th { "Total" }
                    @for field in ["requests", "failed_requests", "failovers", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"] {
                        td.num { (report["totals"][field].as_i64().unwrap_or(0)) }
                    }
                    td.num { (tokens_of_json(&report["totals"])) }
                }
            }
        }
        p { a #usage-csv href={ "/ui/usage.csv?" (query.query_string()) } download { "Download CSV" } }
        h2 { "Tokens per day, by model" }
        div #usage-chart .chart {}
        noscript { p.hint { "The chart needs JavaScript; the numbers are in the table above." } }
        @if chart["days"].as_array().is_none_or(Vec::is_empty) {
            p.hint { "No tokens recorded in this period." }
        }
        script #usage-data type="application/json" { (layout::script_json(&chart)) }
    };
    layout::respond(
        StatusCode::OK,
        layout::page("Usage", Some(&access), Nav::Usage, true, body),
    )
}

fn filters(query: &UsageQuery) -> Markup {
    html! {
        form #usage-filters method="get" action="/ui/usage" {
            label { "Since " input type="text" name="since" value=(query.since) placeholder="7d, 24h or 2026-01-01" size="12"; }
            label { "Until " input type="text" name="until" value=(query.until) placeholder="(now)" size="12"; }
            label { "By "
                select name="by" {
                    @for grouping in GROUPINGS {
                        option value=(grouping) selected[grouping == query.by] { (grouping) }
                    }
                }
            }
            label { "User " input type="text" name="user" value=(query.user) placeholder="(all)" size="12"; }
            button type="submit" { "Show" }
        }
    }
}

fn numbers(row: &UsageRow) -> Markup {
    html! {
        td.num { (row.requests) }
        td.num { (row.failed_requests) }
        td.num { (row.failovers) }
        td.num { (row.input_tokens) }
        td.num { (row.output_tokens) }
        td.num { (row.cache_read_tokens) }
        td.num { (row.cache_write_tokens) }
        td.num { (tokens(row)) }
    }
}

/// Every token type of a row, summed.
fn tokens(row: &UsageRow) -> i64 {
    row.input_tokens + row.output_tokens + row.cache_read_tokens + row.cache_write_tokens
}

fn tokens_of_json(row: &Value) -> i64 {
    [
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
    ]
    .iter()
    .map(|field| row[field].as_i64().unwrap_or(0))
    .sum()
}

/// The chart's data: every day from the first to the last with usage (Unix seconds of its
/// midnight, UTC), and per model its tokens on each day; the biggest models first, those past
/// [`CHART_MODELS`] summed as `other models`.
/// `filter`'s period cut in two at its middle when it is longer than two days (the second half
/// keeps the open end, so a request arriving meanwhile is not missed); else the whole.
fn halves(filter: &UsageFilter, now: i64) -> Vec<UsageFilter> {
    const TWO_DAYS_MS: i64 = 2 * 24 * 3600 * 1000;
    let Some(since) = filter.since else {
        return vec![filter.clone()];
    };
    let until = filter.until.unwrap_or(now);
    if until - since <= TWO_DAYS_MS {
        return vec![filter.clone()];
    }
    let middle = since + (until - since) / 2;
    vec![
        UsageFilter {
            until: Some(middle),
            ..filter.clone()
        },
        UsageFilter {
            since: Some(middle),
            ..filter.clone()
        },
    ]
}

/// The report by group (summed over days and models, in the group's byte order, as
/// `Store::usage` gives it) and by (day, model) for the chart (summed over groups).
fn table_and_chart(cells: &[UsageCell]) -> (Vec<UsageRow>, Vec<DailyUsageRow>) {
    fn add(into: &mut UsageRow, more: &UsageRow) {
        into.requests += more.requests;
        into.failed_requests += more.failed_requests;
        into.failovers += more.failovers;
        into.input_tokens += more.input_tokens;
        into.output_tokens += more.output_tokens;
        into.cache_read_tokens += more.cache_read_tokens;
        into.cache_write_tokens += more.cache_write_tokens;
    }
    let empty = |group: &str| UsageRow {
        group: group.to_string(),
        requests: 0,
        failed_requests: 0,
        failovers: 0,
        input_tokens: 0,
        output_tokens: 0,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
    };
    let mut groups: BTreeMap<&str, UsageRow> = BTreeMap::new();
    let mut days: BTreeMap<(&str, &str), UsageRow> = BTreeMap::new();
    for cell in cells {
        let group = cell.usage.group.as_str();
        add(
            groups.entry(group).or_insert_with(|| empty(group)),
            &cell.usage,
        );
        let model = cell.model.as_str();
        add(
            days.entry((cell.day.as_str(), model))
                .or_insert_with(|| empty(model)),
            &cell.usage,
        );
    }
    let rows = groups.into_values().collect();
    let daily = days
        .into_iter()
        .map(|((day, _), usage)| DailyUsageRow {
            day: day.to_string(),
            usage,
        })
        .collect();
    (rows, daily)
}

fn chart_data(daily: &[DailyUsageRow]) -> Value {
    let day_ms = |label: &str| {
        time::Date::parse(
            label,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .ok()
        .map(|date| date.midnight().assume_utc().unix_timestamp() * 1000)
    };
    let cells: Vec<(i64, &str, i64)> = daily
        .iter()
        .filter_map(|d| Some((day_ms(&d.day)?, d.usage.group.as_str(), tokens(&d.usage))))
        .collect();
    let (Some(first), Some(last)) = (
        cells.iter().map(|c| c.0).min(),
        cells.iter().map(|c| c.0).max(),
    ) else {
        return json!({ "days": [], "labels": [], "series": [] });
    };
    let days: Vec<i64> = (0..=(last - first) / DAY_MS)
        .map(|n| first + n * DAY_MS)
        .collect();
    let mut totals: BTreeMap<&str, i64> = BTreeMap::new();
    for (_, model, tokens) in &cells {
        *totals.entry(model).or_default() += tokens;
    }
    let mut models: Vec<(&str, i64)> = totals.into_iter().collect();
    models.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let named: Vec<&str> = models.iter().take(CHART_MODELS).map(|m| m.0).collect();
    let others = models.len() > CHART_MODELS;
    let mut series: Vec<(String, Vec<i64>)> = named
        .iter()
        .map(|model| ((*model).to_string(), vec![0; days.len()]))
        .collect();
    if others {
        series.push(("other models".to_string(), vec![0; days.len()]));
    }
    for (day, model, tokens) in cells {
        let Ok(at) = usize::try_from((day - first) / DAY_MS) else {
            continue;
        };
        let slot = named
            .iter()
            .position(|m| *m == model)
            .or(others.then_some(named.len()));
        if let Some(values) = slot.and_then(|s| series.get_mut(s)) {
            values.1[at] += tokens;
        }
    }
    json!({
        "days": days.iter().map(|ms| ms / 1000).collect::<Vec<_>>(),
        "labels": days
            .iter()
            .map(|ms| layout::utc(*ms).chars().take(10).collect::<String>())
            .collect::<Vec<_>>(),
        "series": series
            .into_iter()
            .map(|(label, values)| json!({ "label": label, "values": values }))
            .collect::<Vec<_>>(),
    })
}

/// `GET /ui/usage.csv?…`: the page's rows as CSV (totals are left to the spreadsheet).
pub(super) async fn csv(
    State(ui): State<Arc<Ui>>,
    Extension(access): Extension<Access>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let query = UsageQuery::read(query);
    let (filter, by) = match query.parse() {
        Ok(parsed) => parsed,
        Err(problem) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                problem,
            )
                .into_response();
        }
    };
    let rows = match ui.app.recorder.store().usage(&filter, by).await {
        Ok(rows) => rows,
        Err(e) => return layout::unavailable(&access, "the usage records", &e),
    };
    let mut out = format!(
        "{},requests,failed_requests,failovers,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens\r\n",
        query.by
    );
    for row in &rows {
        out.push_str(&csv_field(&row.group));
        for n in [
            row.requests,
            row.failed_requests,
            row.failovers,
            row.input_tokens,
            row.output_tokens,
            row.cache_read_tokens,
            row.cache_write_tokens,
        ] {
            out.push(',');
            out.push_str(&n.to_string());
        }
        out.push_str("\r\n");
    }
    let disposition = format!(
        "attachment; filename=\"aibridge-usage-by-{}.csv\"",
        query.by
    );
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        )],
        out,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// A CSV field (RFC 4180): quoted when it holds a comma, quote or line break. A value a
/// spreadsheet would take for a formula (user names and models are the clients' to choose) gets
/// a leading `'`.
fn csv_field(text: &str) -> String {
    let formula = matches!(text.chars().next(), Some('=' | '+' | '@' | '\t' | '\r'))
        || (text.starts_with('-') && text.len() > 1);
    let text = if formula {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_period_is_read_in_two_halves_that_cover_it_once() {
        let day = 24 * 3600 * 1000;
        let filter = UsageFilter {
            since: Some(0),
            until: None,
            user: Some("alice".into()),
        };
        let halves = super::halves(&filter, 10 * day);
        assert_eq!(halves.len(), 2);
        assert_eq!((halves[0].since, halves[0].until), (Some(0), Some(5 * day)));
        assert_eq!((halves[1].since, halves[1].until), (Some(5 * day), None));
        assert!(halves.iter().all(|h| h.user.as_deref() == Some("alice")));
        let short = UsageFilter {
            since: Some(9 * day),
            ..filter.clone()
        };
        assert_eq!(super::halves(&short, 10 * day), vec![short.clone()]);
        let all_time = UsageFilter::default();
        assert_eq!(super::halves(&all_time, 10 * day), vec![all_time.clone()]);
    }

    #[test]
    fn cells_sum_into_the_table_and_the_chart() {
        let usage = |group: &str, requests: i64| UsageRow {
            group: group.into(),
            requests,
            failed_requests: 0,
            failovers: 0,
            input_tokens: requests * 10,
            output_tokens: 0,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
        };
        let at = |day: &str, model: &str, usage: UsageRow| UsageCell {
            day: day.into(),
            model: model.into(),
            usage,
        };
        // The same (day, model, group) twice: a day cut by the halves.
        let cells = [
            at("2026-12-01", "m1", usage("bob", 1)),
            at("2026-12-01", "m1", usage("alice", 2)),
            at("2026-12-01", "m1", usage("alice", 3)),
            at("2026-12-02", "m2", usage("alice", 4)),
        ];
        let (rows, daily) = super::table_and_chart(&cells);
        let table: Vec<(&str, i64)> = rows
            .iter()
            .map(|r| (r.group.as_str(), r.requests))
            .collect();
        assert_eq!(table, [("alice", 9), ("bob", 1)]);
        let chart: Vec<(&str, &str, i64)> = daily
            .iter()
            .map(|d| (d.day.as_str(), d.usage.group.as_str(), d.usage.input_tokens))
            .collect();
        assert_eq!(chart, [("2026-12-01", "m1", 60), ("2026-12-02", "m2", 40)]);
    }

    fn cell(day: &str, model: &str, input: i64) -> DailyUsageRow {
        DailyUsageRow {
            day: day.into(),
            usage: UsageRow {
                group: model.into(),
                requests: 1,
                failed_requests: 0,
                failovers: 0,
                input_tokens: input,
                output_tokens: 1,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
            },
        }
    }

    #[test]
    fn chart_days_are_filled_and_models_stacked_biggest_first() {
        let data = chart_data(&[
            cell("2026-01-01", "small", 1),
            cell("2026-01-03", "big", 99),
            cell("2026-01-03", "small", 4),
        ]);
        assert_eq!(
            data["days"],
            json!([1_767_225_600, 1_767_312_000, 1_767_398_400])
        );
        assert_eq!(data["labels"][1], "2026-01-02");
        assert_eq!(
            data["series"][0],
            json!({"label": "big", "values": [0, 0, 100]})
        );
        assert_eq!(
            data["series"][1],
            json!({"label": "small", "values": [2, 0, 5]})
        );
        assert_eq!(chart_data(&[])["days"], json!([]));
    }

    #[test]
    fn models_past_the_limit_are_summed() {
        let cells: Vec<DailyUsageRow> = (0..12)
            .map(|n| cell("2026-01-01", &format!("m{n:02}"), 100 - n))
            .collect();
        let data = chart_data(&cells);
        let series = data["series"].as_array().unwrap();
        assert_eq!(series.len(), CHART_MODELS + 1);
        assert_eq!(series[CHART_MODELS]["label"], "other models");
        assert_eq!(series[CHART_MODELS]["values"], json!([(90 + 1) + (89 + 1)]));
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("alice"), "alice");
        assert_eq!(csv_field("-"), "-");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=1+2"), "'=1+2");
        assert_eq!(csv_field("-2+3"), "'-2+3");
    }
}
