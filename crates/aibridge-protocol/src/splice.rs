//! Edits of a JSON request body made as byte splices: everything the client wrote other than
//! the edited member stays exactly as it was (key order, number spelling, spacing, fields the
//! gateway does not model).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::request::BadRequest;

/// The top-level members of a JSON object, each as the exact bytes the client wrote.
pub(crate) type Members<'a> = BTreeMap<Cow<'a, str>, &'a RawValue>;

pub(crate) fn members(body: &[u8]) -> Result<Members<'_>, BadRequest> {
    serde_json::from_slice(body).map_err(|e| BadRequest::NotJson(e.to_string()))
}

/// Where `part` (a slice of `whole`) starts inside it.
pub(crate) fn offset_in(whole: &[u8], part: &RawValue) -> usize {
    part.get().as_ptr() as usize - whole.as_ptr() as usize
}

/// `body` with `range` replaced by `with`.
pub(crate) fn splice(body: &[u8], range: std::ops::Range<usize>, with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + with.len());
    out.extend_from_slice(&body[..range.start]);
    out.extend_from_slice(with);
    out.extend_from_slice(&body[range.end..]);
    out
}

/// `member` (`"name":value`) inserted as the first member of the object that starts at `open`.
pub(crate) fn insert_first(body: &[u8], open: usize, member: &[u8]) -> Vec<u8> {
    let rest = &body[open + 1..];
    let empty = rest
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'}');
    let mut with = member.to_vec();
    if !empty {
        with.push(b',');
    }
    splice(body, open + 1..open + 1, &with)
}

/// `"name":value`, the name escaped as JSON.
fn member(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = serde_json::to_vec(name).unwrap_or_default();
    out.push(b':');
    out.extend_from_slice(value);
    out
}

/// The object `body` with its member `name` set to `value` (the raw JSON of it): replaced where
/// the client had it, else added first.
pub(crate) fn set_member(body: &[u8], name: &str, value: &[u8]) -> Result<Vec<u8>, BadRequest> {
    let found = members(body)?;
    match found.get(name) {
        Some(old) => {
            let at = offset_in(body, old);
            Ok(splice(body, at..at + old.get().len(), value))
        }
        None => {
            let open = body
                .iter()
                .position(|b| *b == b'{')
                .ok_or(BadRequest::NotAnObject)?;
            Ok(insert_first(body, open, &member(name, value)))
        }
    }
}

/// The object `body` with `items` (raw JSON values) appended to its array member `name`: the
/// client's own elements stay byte for byte; a missing or `null` member becomes the array of
/// `items`. Anything else there is the client's mistake.
pub(crate) fn append_to_array(
    body: &[u8],
    name: &str,
    items: &[Vec<u8>],
) -> Result<Vec<u8>, BadRequest> {
    if items.is_empty() {
        return Ok(body.to_vec());
    }
    let found = members(body)?;
    let joined = items.join(&b',');
    match found.get(name) {
        Some(array) if array.get().starts_with('[') => {
            let start = offset_in(body, array);
            let close = start + array.get().len() - 1;
            let empty = array.get()[1..array.get().len() - 1].trim().is_empty();
            let mut with = Vec::with_capacity(joined.len() + 1);
            if !empty {
                with.push(b',');
            }
            with.extend_from_slice(&joined);
            Ok(splice(body, close..close, &with))
        }
        Some(value) if value.get() != "null" => Err(BadRequest::NotAnArray(name.to_string())),
        _ => {
            let mut array = Vec::with_capacity(joined.len() + 2);
            array.push(b'[');
            array.extend_from_slice(&joined);
            array.push(b']');
            set_member(body, name, &array)
        }
    }
}

/// Several edits of one JSON object made in a single pass over one parse: members set (replaced
/// where the client had them, else added first), arrays appended to, values replaced.
pub(crate) struct ObjectEdit<'a> {
    body: &'a [u8],
    members: Members<'a>,
    open: usize,
    added: Vec<Vec<u8>>,
    /// (start, end, replacement), non-overlapping.
    replaced: Vec<(usize, usize, Vec<u8>)>,
}

impl<'a> ObjectEdit<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Result<Self, BadRequest> {
        let members = members(body)?;
        let open = body
            .iter()
            .position(|b| *b == b'{')
            .ok_or(BadRequest::NotAnObject)?;
        Ok(Self {
            body,
            members,
            open,
            added: Vec::new(),
            replaced: Vec::new(),
        })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.members.get(name).copied()
    }

    /// Replaces the value `old` (one of the body's) with `with`.
    pub(crate) fn replace(&mut self, old: &RawValue, with: Vec<u8>) {
        let at = offset_in(self.body, old);
        self.replaced.push((at, at + old.get().len(), with));
    }

    pub(crate) fn set(&mut self, name: &str, value: &[u8]) {
        match self.get(name) {
            Some(old) => self.replace(old, value.to_vec()),
            None => self.added.push(member(name, value)),
        }
    }

    /// Appends `items` (comma-joined raw values) to the array member `name` (a missing or
    /// `null` member becomes their array); anything else there is the client's mistake.
    pub(crate) fn append_to_array(&mut self, name: &str, items: &[u8]) -> Result<(), BadRequest> {
        if items.is_empty() {
            return Ok(());
        }
        match self.get(name) {
            Some(array) if array.get().starts_with('[') => {
                let close = offset_in(self.body, array) + array.get().len() - 1;
                let empty = array.get()[1..array.get().len() - 1].trim().is_empty();
                let mut with = Vec::with_capacity(items.len() + 1);
                if !empty {
                    with.push(b',');
                }
                with.extend_from_slice(items);
                self.replaced.push((close, close, with));
                Ok(())
            }
            Some(value) if value.get() != "null" => Err(BadRequest::NotAnArray(name.to_string())),
            _ => {
                let mut array = Vec::with_capacity(items.len() + 2);
                array.push(b'[');
                array.extend_from_slice(items);
                array.push(b']');
                self.set(name, &array);
                Ok(())
            }
        }
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        if !self.added.is_empty() {
            let rest = &self.body[self.open + 1..];
            let empty = rest
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'}');
            let mut with = self.added.join(&b',');
            if !empty {
                with.push(b',');
            }
            self.replaced.push((self.open + 1, self.open + 1, with));
        }
        self.replaced.sort_by_key(|(start, end, _)| (*start, *end));
        let extra: usize = self.replaced.iter().map(|(_, _, with)| with.len()).sum();
        let mut out = Vec::with_capacity(self.body.len() + extra);
        let mut at = 0;
        for (start, end, with) in &self.replaced {
            out.extend_from_slice(&self.body[at..*start]);
            out.extend_from_slice(with);
            at = *end;
        }
        out.extend_from_slice(&self.body[at..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn members_are_set_where_they_are_or_added_first() {
        let body = br#"{ "model" : "m",  "n": 1.50 }"#;
        assert_eq!(
            text(set_member(body, "n", b"2").unwrap()),
            r#"{ "model" : "m",  "n": 2 }"#
        );
        assert_eq!(
            text(set_member(body, "parallel_tool_calls", b"false").unwrap()),
            r#"{"parallel_tool_calls":false, "model" : "m",  "n": 1.50 }"#
        );
        assert_eq!(text(set_member(b"{}", "a", b"1").unwrap()), r#"{"a":1}"#);
    }

    #[test]
    fn arrays_keep_the_clients_elements_byte_for_byte() {
        let items = vec![br#"{"name":"x"}"#.to_vec(), b"2".to_vec()];
        assert_eq!(
            text(
                append_to_array(br#"{"tools":[ {"b":1, "a":2} ],"m":1}"#, "tools", &items).unwrap()
            ),
            r#"{"tools":[ {"b":1, "a":2} ,{"name":"x"},2],"m":1}"#
        );
        assert_eq!(
            text(append_to_array(br#"{"tools":[ ]}"#, "tools", &items).unwrap()),
            r#"{"tools":[ {"name":"x"},2]}"#
        );
        assert_eq!(
            text(append_to_array(br#"{"tools":null,"m":1}"#, "tools", &items).unwrap()),
            r#"{"tools":[{"name":"x"},2],"m":1}"#
        );
        assert_eq!(
            text(append_to_array(br#"{"m":1}"#, "tools", &items).unwrap()),
            r#"{"tools":[{"name":"x"},2],"m":1}"#
        );
        assert!(append_to_array(br#"{"tools":{}}"#, "tools", &items).is_err());
        assert_eq!(
            append_to_array(br#"{"tools":{}}"#, "tools", &[]).unwrap(),
            br#"{"tools":{}}"#,
            "nothing to add: nothing checked"
        );
    }

    #[test]
    fn several_edits_in_one_pass_keep_everything_else() {
        let body = br#"{ "m": 1, "tools": [ {"a":1} ], "p": true }"#;
        let mut edit = ObjectEdit::new(body).unwrap();
        edit.append_to_array("tools", br#"{"b":2}"#).unwrap();
        edit.set("p", b"false");
        edit.set("q", b"3");
        edit.set("r", b"4");
        assert_eq!(
            text(edit.finish()),
            r#"{"q":3,"r":4, "m": 1, "tools": [ {"a":1} ,{"b":2}], "p": false }"#
        );
        let mut edit = ObjectEdit::new(b"{}").unwrap();
        edit.append_to_array("tools", b"1,2").unwrap();
        assert_eq!(text(edit.finish()), r#"{"tools":[1,2]}"#);
        let mut edit = ObjectEdit::new(br#"{"tools":"x"}"#).unwrap();
        assert!(edit.append_to_array("tools", b"1").is_err());
    }
}
