//! Tools the gateway adds to a request (MCP tools, injected by the inner agentic loop), in the
//! API-neutral form every API module renders in its own shape.

use serde_json::{Value, json};

use crate::request::BadRequest;
use crate::splice::ObjectEdit;

/// A tool as the model is to see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The name the model calls it by (`bmcp_<server>_<tool>`).
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema of the arguments.
    pub input_schema: Value,
}

impl ToolSpec {
    /// The arguments' schema as an object schema (MCP servers may leave out `type`).
    pub(crate) fn object_schema(&self) -> Value {
        match &self.input_schema {
            Value::Object(schema) => {
                let mut schema = schema.clone();
                schema
                    .entry("type")
                    .or_insert_with(|| Value::String("object".into()));
                Value::Object(schema)
            }
            _ => json!({"type": "object", "properties": {}}),
        }
    }

    pub(crate) fn description_text(&self) -> &str {
        self.description.as_deref().unwrap_or("")
    }
}

/// Values as raw JSON for a splice.
pub(crate) fn rendered_values(values: &[Value]) -> Vec<Vec<u8>> {
    values
        .iter()
        .map(|value| serde_json::to_vec(value).unwrap_or_default())
        .collect()
}

/// `body` with `tools` (rendered, comma-joined) appended to its `tools` array and
/// `parallel_tool_calls` off: the OpenAI APIs' injection (Chat Completions and Responses alike).
pub(crate) fn inject_parallel_off(body: &[u8], tools: &[u8]) -> Result<Vec<u8>, BadRequest> {
    let mut edit = ObjectEdit::new(body)?;
    edit.append_to_array("tools", tools)?;
    edit.set("parallel_tool_calls", b"false");
    Ok(edit.finish())
}

/// One answer out of a loop's answers: `last`, with the `kind` entries of the earlier answers'
/// `list` (their text) before its own, and `usage` summed over all of them.
pub(crate) fn prepend_earlier(earlier: &[Value], mut last: Value, list: &str, kind: &str) -> Value {
    let mut entries: Vec<Value> = earlier
        .iter()
        .flat_map(|answer| answer[list].as_array().into_iter().flatten())
        .filter(|entry| entry["type"] == kind)
        .cloned()
        .collect();
    entries.extend(last[list].as_array().cloned().unwrap_or_default());
    let usage = summed_usage(earlier, &last);
    last[list] = Value::Array(entries);
    last["usage"] = usage;
    last
}

/// The `usage` of `earlier` answers and `last` summed.
pub(crate) fn summed_usage(earlier: &[Value], last: &Value) -> Value {
    let usages: Vec<&Value> = earlier
        .iter()
        .chain(std::iter::once(last))
        .map(|answer| &answer["usage"])
        .filter(|usage| usage.is_object())
        .collect();
    sum_usage(&usages)
}

/// What calling one tool the model asked for came to, for the next iteration's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutcome {
    /// The id the model gave the call (`tool_use_id`, `tool_call_id`, `call_id`).
    pub call_id: String,
    /// The result's text, or what went wrong.
    pub text: String,
    pub is_error: bool,
}

/// Usage objects of several answers summed field by field (numbers added, nested objects
/// summed the same way, anything else from the last): each API's own shape, whatever it is.
pub fn sum_usage(usages: &[&Value]) -> Value {
    let mut total = Value::Null;
    for usage in usages {
        total = add(total, usage);
    }
    total
}

fn add(total: Value, next: &Value) -> Value {
    match (total, next) {
        (Value::Null, next) => next.clone(),
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(a), Some(b)) => Value::from(a.saturating_add(b)),
            _ => Value::from(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0)),
        },
        (Value::Object(mut a), Value::Object(b)) => {
            for (key, value) in b {
                let sum = add(a.remove(key).unwrap_or(Value::Null), value);
                a.insert(key.clone(), sum);
            }
            Value::Object(a)
        }
        (_, next) => next.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_sums_every_number_of_every_shape() {
        let a =
            json!({"input_tokens": 10, "output_tokens": 2, "details": {"cached": 1}, "tier": "x"});
        let b = json!({"input_tokens": 12, "output_tokens": 5, "details": {"cached": 3, "audio": 1}, "tier": "y"});
        assert_eq!(
            sum_usage(&[&a, &b]),
            json!({"input_tokens": 22, "output_tokens": 7, "details": {"cached": 4, "audio": 1}, "tier": "y"})
        );
        assert_eq!(sum_usage(&[&a]), a);
        assert_eq!(sum_usage(&[]), Value::Null);
    }
}
