//! Provider keys and the masking used wherever a key must be identifiable but not revealed.

use std::fmt;
use std::sync::Arc;

/// A provider key. Debug/Display never show the value, only the hint. Shared, not copied: a
/// key handed out for a request is a reference count, not an allocation.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// Wraps a raw key value.
    pub fn new(v: impl Into<String>) -> Self {
        Self(Arc::from(v.into()))
    }

    /// The raw value, only for putting it in an upstream request header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Masked form for logs, records and the operator API (see [`mask_secret`]).
    pub fn hint(&self) -> String {
        mask_secret(&self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ApiKey").field(&self.hint()).finish()
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hint())
    }
}

/// Spec §3.10 masking: r = 4 if len >= 20, 2 if >= 10, 1 if >= 5, else 0 (len in chars);
/// prefix(r) + "..." + suffix(r); if len <= 2r -> "..."; empty -> "". Example "k0-long-key" -> "k0...ey".
pub fn mask_secret(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let len = chars.len();
    if len == 0 {
        return String::new();
    }
    let revealed = match len {
        20.. => 4,
        10.. => 2,
        5.. => 1,
        _ => 0,
    };
    if len <= 2 * revealed {
        return "...".to_owned();
    }
    let prefix: String = chars[..revealed].iter().collect();
    let suffix: String = chars[len - revealed..].iter().collect();
    format!("{prefix}...{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_secret_examples() {
        let cases = [
            ("", ""),
            ("a", "..."),
            ("abcd", "..."),
            ("abcde", "a...e"),
            ("abcdefghi", "a...i"),
            ("k0-long-key", "k0...ey"),
            ("0123456789", "01...89"),
            ("sk-ant-api03-abcdefghijkl", "sk-a...ijkl"),
            ("0123456789abcdefghij", "0123...ghij"),
            // Counted in characters, not bytes: 5 chars but 10+ bytes.
            ("ключик", "к...к"),
            ("日本語のキーです値", "日...値"),
            ("🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑", "🔑🔑...🔑🔑"),
        ];
        for (input, expected) in cases {
            assert_eq!(mask_secret(input), expected, "mask_secret({input:?})");
        }
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let key = ApiKey::new("sk-super-secret-value-123");
        let debug = format!("{key:?}");
        let display = format!("{key}");
        assert!(!debug.contains("super-secret"), "{debug}");
        assert!(!display.contains("super-secret"), "{display}");
        assert_eq!(debug, "ApiKey(\"sk-s...-123\")");
        assert_eq!(display, "sk-s...-123");
        assert_eq!(key.expose(), "sk-super-secret-value-123");
        assert_eq!(key.hint(), "sk-s...-123");
    }

    #[test]
    fn debug_of_short_key_reveals_nothing() {
        let key = ApiKey::new("abcd");
        assert_eq!(format!("{key:?}"), "ApiKey(\"...\")");
    }
}
