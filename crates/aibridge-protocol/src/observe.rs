//! What the gateway records about an exchange, read from the bodies it relays: the prompt, token
//! usage, the tool calls the model made and its thoughts. The types are shared; how each API
//! carries them is in its own module.
//!
//! Streams are observed event by event as they are relayed. Only the events that can carry
//! something worth recording are parsed; text deltas, the bulk of a stream, are skipped after a
//! cheap look at the event.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::SseEvent;

/// Token counts of one upstream response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens not read from the cache.
    pub input: i64,
    pub output: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    /// Provider-specific counts (reasoning tokens, web searches, cache tiers, …).
    pub extra: BTreeMap<String, i64>,
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: Option<String>,
    pub name: String,
    /// The arguments as JSON text, as the model produced them.
    pub input: String,
}

/// Text the model produced while thinking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thought {
    pub content: String,
    /// `thinking` (Anthropic), `reasoning_summary` (OpenAI Responses).
    pub source: &'static str,
}

/// Everything observed in one upstream response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub response_id: Option<String>,
    /// The model that answered, as the upstream names it.
    pub model: Option<String>,
    pub usage: Option<Usage>,
    pub tool_calls: Vec<ToolCall>,
    pub thoughts: Vec<Thought>,
}

/// One API's way of watching its stream.
pub(crate) trait ObserveStream: Send + std::fmt::Debug {
    fn observe(&mut self, event: &SseEvent);
    /// What was seen, including tool calls whose stream never closed their block.
    fn finish(self: Box<Self>) -> Observation;
}

/// Watches a stream as it is relayed and keeps what is worth recording, so that even a stream
/// that breaks off or is abandoned has its usage so far. Made by [`crate::Api::stream_observer`].
#[derive(Debug)]
pub struct StreamObserver(Box<dyn ObserveStream>);

impl StreamObserver {
    pub(crate) fn new(inner: Box<dyn ObserveStream>) -> Self {
        Self(inner)
    }

    pub fn observe(&mut self, event: &SseEvent) {
        self.0.observe(event);
    }

    pub fn finish(self) -> Observation {
        self.0.finish()
    }
}

pub(crate) fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

pub(crate) fn string(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

/// The positive counts among `(name, value)`, by name.
pub(crate) fn extra_counts<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a Value)>,
) -> BTreeMap<String, i64> {
    positive_counts(
        fields
            .into_iter()
            .map(|(name, value)| (name, value.as_i64())),
    )
}

/// The JSON value that starts `bytes`, read as a `T` (whatever follows it is ignored).
pub(crate) fn leading<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::Deserializer::from_slice(bytes)
        .into_iter::<T>()
        .next()?
        .ok()
}

/// The positive counts among `(name, count)`, by name.
pub(crate) fn positive_counts<'a>(
    fields: impl IntoIterator<Item = (&'a str, Option<i64>)>,
) -> BTreeMap<String, i64> {
    fields
        .into_iter()
        .filter_map(|(name, count)| count.filter(|n| *n > 0).map(|n| (name.to_string(), n)))
        .collect()
}

pub(crate) fn push_thought(observation: &mut Observation, text: &Value, source: &'static str) {
    if let Some(text) = text.as_str().filter(|t| !t.is_empty()) {
        observation.thoughts.push(Thought {
            content: text.to_string(),
            source,
        });
    }
}

/// [`last_user_text`] of a request body's `messages`, read without building the whole request:
/// only the last user message's content is parsed (requests carry the whole conversation).
pub(crate) fn last_user_text_in_messages(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        messages: Vec<Message<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        role: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        content: Option<&'a serde_json::value::RawValue>,
    }
    let Ok(request) = serde_json::from_slice::<Request<'_>>(body) else {
        // Another shape (or not JSON): read whole, as any other.
        let request: Value = serde_json::from_slice(body).ok()?;
        return last_user_text(&request["messages"]);
    };
    let last = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role.is_some_and(|role| role.get() == "\"user\""))?;
    let content: Value = serde_json::from_str(last.content?.get()).ok()?;
    user_text(&content)
}

/// The text of the last message with role `user` in `list`: its string content, or its last
/// text part (`text`, `input_text`).
pub(crate) fn last_user_text(list: &Value) -> Option<String> {
    let content = list
        .as_array()?
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| &m["content"])?;
    user_text(content)
}

/// A user message's text: its string content, or its last text part.
fn user_text(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => parts
            .iter()
            .rev()
            .find(|p| matches!(p["type"].as_str(), Some("text" | "input_text")))
            .and_then(|p| string(&p["text"])),
        _ => None,
    }
}

/// A block being streamed: a tool call assembled from deltas, or a thought.
#[derive(Debug)]
pub(crate) enum OpenBlock {
    Tool {
        id: Option<String>,
        name: String,
        input: String,
    },
    Thinking(String),
}

/// Blocks of a stream that are still open, by index.
#[derive(Debug, Default)]
pub(crate) struct OpenBlocks(pub(crate) BTreeMap<u64, OpenBlock>);

impl OpenBlocks {
    /// Moves the block at `index`, if any, into the observation.
    pub(crate) fn close(&mut self, index: u64, observation: &mut Observation) {
        match self.0.remove(&index) {
            Some(OpenBlock::Tool { id, name, input }) => {
                let input = if input.trim().is_empty() {
                    "{}".to_string()
                } else {
                    input
                };
                observation.tool_calls.push(ToolCall { id, name, input });
            }
            Some(OpenBlock::Thinking(text)) if !text.is_empty() => {
                observation.thoughts.push(Thought {
                    content: text,
                    source: "thinking",
                });
            }
            _ => {}
        }
    }

    /// Closes every block still open (a stream that broke off keeps its partial tool calls).
    pub(crate) fn close_all(&mut self, observation: &mut Observation) {
        let open: Vec<u64> = self.0.keys().copied().collect();
        for index in open {
            self.close(index, observation);
        }
    }
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
