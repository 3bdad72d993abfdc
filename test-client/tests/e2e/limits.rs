//! Limits from wrangler vars: clear refusals, and nobody else is harmed.

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[test]
fn oversized_input_is_refused_clearly_and_bystanders_keep_working() {
    e2e().vars(&[("MAX_MESSAGE_BYTES", "1024")]).run(async |stack| {
        let url = format!("{}/ws", stack.snippet.ws());
        let mut bystander = ws_connect(&url, Some(&stack.client_token)).await.expect("ws");
        assert_eq!(rpc(&mut bystander, "ping", json!([]), 1).await["result"], "pong");

        let mut big = ws_connect(&url, Some(&stack.client_token)).await.expect("ws");
        big.send(Message::Text("x".repeat(2000).into())).await.expect("send");
        match next_message(&mut big).await {
            Message::Close(Some(f)) => {
                assert_eq!(u16::from(f.code), 1009, "{f:?}");
                assert!(f.reason.contains("1024"), "the reason names the limit: {f:?}");
            }
            other => panic!("expected close 1009, got {other:?}"),
        }

        let body = json!({ "jsonrpc": "2.0", "method": "echo", "params": ["y".repeat(2000)], "id": 1 });
        let (status, reply) = post(&format!("{}/rpc", stack.snippet.http()), Some(&stack.client_token), &body).await;
        assert_eq!(status, 413, "{reply}");
        assert!(reply["error"].as_str().unwrap_or_default().contains("1024"), "{reply}");

        assert_eq!(rpc(&mut bystander, "echo", json!(["still fine"]), 2).await["result"], json!(["still fine"]));
        let stats = stack.snippet_stats().await.expect("stats");
        assert_eq!(n(&stats, "backendConnects"), 1, "{stats}");
    });
}

#[test]
fn a_malformed_var_is_reported_not_defaulted() {
    e2e().vars(&[("BATCHING", "sometimes")]).run(async |stack| {
        let (status, body) =
            post(&format!("{}/rpc", stack.snippet.http()), Some(&stack.client_token), &json!({})).await;
        assert_eq!(status, 500, "{body}");
        assert!(body["error"].as_str().unwrap_or_default().contains("BATCHING"), "{body}");
        // The operator finds it in the log under the id the client was given.
        let id = body["requestId"].as_str().expect("a request id");
        let lines = logged(stack, 1, |l| l["requestId"] == id).await;
        assert_eq!(lines.len(), 1, "one line for the failure: {lines:?}");
        assert_eq!(
            (lines[0]["level"].as_str(), lines[0]["status"].as_u64()),
            (Some("error"), Some(500)),
            "{}",
            lines[0]
        );
        assert!(lines[0]["msg"].as_str().unwrap_or_default().contains("BATCHING"), "{}", lines[0]);
    });
}

/// Two ways to the backends at once is a configuration error, not a guess.
#[test]
fn a_backend_url_and_a_binding_together_are_refused() {
    e2e().vars(&[("BACKEND_BINDING", "BACKEND"), ("BACKEND_URL", "ws://127.0.0.1:9/db/{tenant}/mux")]).run(
        async |stack| {
            let (status, body) =
                post(&format!("{}/rpc", stack.snippet.http()), Some(&stack.client_token), &json!({})).await;
            assert_eq!(status, 500, "{body}");
            assert!(body["error"].as_str().unwrap_or_default().contains("not both"), "{body}");
        },
    );
}

/// RFC 6455 §7.4: a close code a client may not send is answered with 1002 and never
/// reaches the backend; a valid one is reciprocated. (Client sockets are accepted
/// half-open: otherwise the runtime echoes every code itself before the snippet sees it.)
/// On the shared stack, under a tenant of its own, so its upstream is this test's.
#[test]
fn invalid_client_close_codes_get_1002_and_valid_ones_are_reciprocated() {
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    e2e().tenant("close-codes").run(async |stack| {
        let start = stack.snippet_stats().await.expect("stats");
        let url = format!("{}/ws", stack.snippet.ws());
        let mut bystander = bystander(stack).await;
        let mut seen = Vec::new();
        for code in [0u16, 999, 1004, 1016, 2999, 5000, 1000, 1001, 3000, 4000] {
            let mut ws = ws_connect(&url, Some(&stack.client_token)).await.expect("ws");
            assert_eq!(rpc(&mut ws, "ping", json!([]), 1).await["result"], "pong");
            let frame = CloseFrame { code: CloseCode::from(code), reason: "".into() };
            ws.send(Message::Close(Some(frame))).await.expect("send close");
            let reply = close_frame(&mut ws, 5).await.map(|f| f.map(|(code, _)| code));
            seen.push((code, reply));
        }
        eprintln!("close code sent → close code answered: {seen:?}");
        for (sent, got) in &seen {
            let expected = match sent {
                1000 | 1001 | 3000 | 4000 => *sent,
                _ => 1002,
            };
            assert_eq!(*got, Some(Some(expected)), "sent {sent}: {seen:?}");
        }
        assert_eq!(rpc(&mut bystander, "echo", json!(["fine"]), 2).await["result"], json!(["fine"]));
        let stats = stack.snippet_stats().await.expect("stats");
        let connects = delta(&start, &stats, "backendConnects");
        assert_eq!(connects, 1, "the upstream never saw an invalid code: {stats}");
    });
}
