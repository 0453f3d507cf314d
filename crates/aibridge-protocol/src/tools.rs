//! Tools the gateway adds to a request (MCP tools, injected by the inner agentic loop), in the
//! API-neutral form every API module renders in its own shape.

use serde_json::{Value, json};

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

/// Each tool rendered by `render`, as raw JSON for a splice.
pub(crate) fn rendered(tools: &[ToolSpec], render: impl Fn(&ToolSpec) -> Value) -> Vec<Vec<u8>> {
    tools
        .iter()
        .map(|tool| serde_json::to_vec(&render(tool)).unwrap_or_default())
        .collect()
}
