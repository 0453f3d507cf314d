//! The request peek reads `model` and `stream` from any object, refuses what is not one, and
//! never panics; the chat usage splice keeps the rest of the body exactly.

use aibridge_protocol::{BadRequest, ensure_stream_usage, summarize_request};
use proptest::prelude::*;
use serde_json::{Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[ -~]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = summarize_request(&bytes);
        let _ = ensure_stream_usage(&bytes);
    }

    #[test]
    fn model_and_stream_are_read_from_any_object(
        extra in proptest::collection::btree_map("[a-z]{1,6}", json_value(), 0..5),
        model in "[a-z0-9-]{1,20}",
        stream in any::<bool>(),
    ) {
        let mut body = serde_json::Map::new();
        for (k, v) in extra {
            body.insert(k, v);
        }
        body.insert("model".into(), json!(model));
        body.insert("stream".into(), json!(stream));
        let summary = summarize_request(Value::Object(body).to_string().as_bytes()).unwrap();
        prop_assert_eq!(summary.model, model);
        prop_assert_eq!(summary.stream, stream);
    }

    #[test]
    fn non_objects_are_refused(value in json_value()) {
        prop_assume!(!value.is_object());
        let refused = summarize_request(value.to_string().as_bytes());
        prop_assert!(matches!(refused, Err(BadRequest::NotAnObject | BadRequest::Empty)));
    }

    #[test]
    fn the_usage_splice_changes_only_stream_options(
        extra in proptest::collection::btree_map("[a-z]{1,6}", json_value(), 0..5),
        options in prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            Just(Some(json!({}))),
            Just(Some(json!({"include_usage": false, "x": 1}))),
        ],
    ) {
        let mut body = serde_json::Map::new();
        for (k, v) in extra {
            if k != "stream_options" {
                body.insert(k, v);
            }
        }
        if let Some(options) = options {
            body.insert("stream_options".into(), options);
        }
        let before = Value::Object(body.clone());
        let after: Value =
            serde_json::from_slice(&ensure_stream_usage(before.to_string().as_bytes()).unwrap())
                .unwrap();
        prop_assert_eq!(&after["stream_options"]["include_usage"], &json!(true));
        let mut rest = after.as_object().unwrap().clone();
        rest.remove("stream_options");
        body.remove("stream_options");
        prop_assert_eq!(rest, body);
    }
}
