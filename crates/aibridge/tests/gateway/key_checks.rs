//! Review item 1 / PRODUCT.md decision 2: a 401/403 leaves the rotation only when the key is at
//! fault. The gateway confirms with the key's own model list (one check per key in flight, 5 s
//! at most); a request-scoped rejection reaches the client and takes no key out.

use aibridge_mock::{MockUpstream, Reply};

use crate::common::*;

#[tokio::test]
async fn a_request_scoped_401_or_403_is_relayed_and_no_key_is_disabled() {
    for (status, body) in [
        (
            401,
            r#"{"error":{"message":"OpenAI-Organization header should match organization for API key","type":"invalid_request_error","code":"mismatched_organization"}}"#,
        ),
        (
            403,
            r#"{"error":{"message":"Project does not have access to model gpt-x","type":"invalid_request_error","code":"model_not_found"}}"#,
        ),
    ] {
        for api in APIS {
            for stream in STREAMING {
                let mock = MockUpstream::start().await.unwrap();
                // The request is refused; the check of the key (its model list) succeeds.
                let body = match api {
                    TestApi::Messages => {
                        r#"{"type":"error","error":{"type":"permission_error","message":"model not allowed for this request"}}"#
                    }
                    TestApi::Chat | TestApi::Responses => body,
                };
                mock.script("k0", vec![Reply::status(status).body(body)]);
                let gw = api.start(&mock, "k0,k1").await;
                let out = api.call(&gw, stream).await;
                assert_eq!(out.status, status, "{api:?} stream={stream}: {}", out.body);
                let error = api.error(&out.body);
                assert!(
                    body.contains(&error.message),
                    "{api:?}: the upstream's own message: {}",
                    error.message
                );
                assert_eq!(request_keys(&mock), ["k0"], "{api:?}: nothing failed over");
                assert_eq!(checked_keys(&mock), ["k0"], "{api:?}: the key was checked");
                assert_eq!(gw.key_states(api.provider()).await, ["valid", "valid"]);

                let record = wait_for_ended(&gw, None, 1).await.remove(0);
                assert_eq!(record["outcome"], "upstream_error", "{record:#}");
                assert_eq!(record["attempts"][0]["key_check"], "accepted", "{record:#}");
                assert!(record["attempts"][0]["failover_reason"].is_null());
            }
        }
    }
}

#[tokio::test]
async fn a_key_rejected_by_its_check_is_disabled_and_the_attempt_says_so() {
    let mock = MockUpstream::start().await.unwrap();
    mock.then("k0", Reply::status(401));
    let gw = TestApi::Chat.start(&mock, "k0,k1").await;
    let out = TestApi::Chat.call(&gw, false).await;
    TestApi::Chat.assert_success(&out, false);
    assert_eq!(gw.key_states("openai").await, ["disabled", "valid"]);
    let record = wait_for_ended(&gw, None, 1).await.remove(0);
    assert_eq!(record["attempts"][0]["key_check"], "rejected", "{record:#}");
    assert_eq!(record["attempts"][0]["failover_reason"], "unauthorized");
}

/// A passthrough model list is itself the key's check: no second call.
#[tokio::test]
async fn a_passthrough_model_list_is_its_own_check() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::status(401)]);
    let gw = start_pool(&mock.url(), "k0,k1").await;
    let response = client()
        .get(gw.url("/anthropic/v1/models"))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(mock.seen_keys(), ["k0", "k1"], "no extra check call");
    assert_eq!(gw.key_states("anthropic").await, ["disabled", "valid"]);
    let record = wait_for_ended(&gw, None, 1).await.remove(0);
    assert_eq!(record["attempts"][0]["key_check"], "implied", "{record:#}");
}

/// Many requests that get a 401 from the same key at once share one check.
#[tokio::test]
async fn concurrent_401s_share_one_check_of_the_key() {
    let mock = MockUpstream::start().await.unwrap();
    // Every answer of k0 (requests and the check) takes 300 ms: the 401s arrive together and
    // the check is still in flight when the others ask for it.
    mock.then("k0", Reply::status(401).delay_ms(300));
    let gw = TestApi::Messages.start(&mock, "k0,k1").await;
    let calls = (0..10).map(|_| TestApi::Messages.call(&gw, false));
    for out in futures_util::future::join_all(calls).await {
        TestApi::Messages.assert_success(&out, false);
    }
    let checks = checked_keys(&mock).len();
    assert!(
        (1..=2).contains(&checks),
        "10 concurrent 401s cost {checks} checks of the key"
    );
    assert_eq!(gw.key_states("anthropic").await, ["disabled", "valid"]);
}

/// Headers that scope a credential never travel with a pool key; BYOK keeps them.
#[tokio::test]
async fn organization_and_project_headers_never_travel_with_a_pool_key() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = TestApi::Chat.start(&mock, "k0").await;
    let response = TestApi::Chat
        .request(&gw, false)
        .header("openai-organization", "org-client")
        .header("openai-project", "proj_client")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = TestApi::Chat
        .byok_request(&gw, false, "user-key")
        .header("openai-organization", "org-client")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = mock.requests();
    let header = |i: usize, name: &str| {
        seen[i]
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header(0, "openai-organization"), None, "pool request");
    assert_eq!(header(0, "openai-project"), None, "pool request");
    assert_eq!(
        header(1, "openai-organization").as_deref(),
        Some("org-client"),
        "BYOK"
    );
}

/// A pool key may carry its own organization and project: they travel with it (and with its
/// check), in place of the client's.
#[tokio::test]
async fn a_pool_key_sends_its_own_organization_and_project() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::status(401)]);
    let config = format!(
        "[[providers]]\ntype = \"openai\"\nbase_url = \"{}/v1\"\nkeys = [{{ key = \"k0\", organization = \"org-pool\", project = \"proj_pool\" }}]\n",
        mock.url()
    );
    let gw = Gateway::start_with_config(Some(&config), Gateway::NO_ENV).await;
    let response = TestApi::Chat
        .request(&gw, false)
        .header("openai-organization", "org-client")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "the check accepted the key: relayed"
    );
    let seen = mock.requests();
    assert_eq!(seen.len(), 2, "the request and the key's check");
    for request in &seen {
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            header("openai-organization"),
            Some("org-pool"),
            "{}",
            request.path
        );
        assert_eq!(
            header("openai-project"),
            Some("proj_pool"),
            "{}",
            request.path
        );
    }
}
