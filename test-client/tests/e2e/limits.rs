//! Limits from wrangler vars: clear refusals, and nobody else is harmed.

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[test]
fn oversized_input_is_refused_clearly_and_bystanders_keep_working() {
    let _one = one_at_a_time();
    let stack = start(&[("MAX_MESSAGE_BYTES", "1024")]);
    runtime().block_on(async {
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
    stack.assert_clean_logs().expect("clean logs");
}

#[test]
fn a_malformed_var_is_reported_not_defaulted() {
    let _one = one_at_a_time();
    let stack = start(&[("BATCHING", "sometimes")]);
    runtime().block_on(async {
        let (status, body) =
            post(&format!("{}/rpc", stack.snippet.http()), Some(&stack.client_token), &json!({})).await;
        assert_eq!(status, 500, "{body}");
        assert!(body["error"].as_str().unwrap_or_default().contains("BATCHING"), "{body}");
    });
}
