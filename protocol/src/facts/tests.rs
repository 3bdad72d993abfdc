use serde_json::{json, Value};

use super::*;

/// Every `u16`, for tables read off a function rather than restated beside it.
fn every_code() -> impl Iterator<Item = u16> {
    0..=u16::MAX
}

/// The codes where `keep` holds, as inclusive `[first, last]` runs.
fn ranges(keep: impl Fn(u16) -> bool) -> Vec<[u16; 2]> {
    let mut out: Vec<[u16; 2]> = Vec::new();
    for code in every_code().filter(|&c| keep(c)) {
        match out.last_mut() {
            Some(run) if run[1] + 1 == code => run[1] = code,
            _ => out.push([code, code]),
        }
    }
    out
}

fn close_codes_json() -> Value {
    let reported_only: Vec<u16> = every_code().filter(|&c| CloseCode::new(c).is_reported_only()).collect();
    let mut sent_as: Vec<u16> = reported_only.iter().map(|&c| CloseCode::new(c).sendable().get()).collect();
    sent_as.dedup();
    let [sent_as] = sent_as[..] else { panic!("reported-only codes are sent as one code, not {sent_as:?}") };
    for c in every_code().map(CloseCode::new).filter(|c| !c.is_reported_only()) {
        assert_eq!(c.sendable(), c, "only reported-only codes are replaced");
    }
    json!({
        "allowed": ranges(|c| CloseCode::new(c).is_allowed()),
        "reported_only": reported_only,
        "reported_only_sent_as": sent_as,
    })
}

/// [`error_close`] as rows of the error codes that map to each close, the most common
/// close last as `otherwise`.
fn error_close_json() -> Value {
    let mut rows: Vec<(CloseCode, &str, Vec<u16>)> = Vec::new();
    for code in every_code() {
        let (close, reason) = error_close(code);
        match rows.iter_mut().find(|(c, r, _)| (*c, *r) == (close, reason)) {
            Some((_, _, errors)) => errors.push(code),
            None => rows.push((close, reason, vec![code])),
        }
    }
    rows.sort_by_key(|(_, _, errors)| std::cmp::Reverse(errors.len()));
    let (close, reason, _) = rows.remove(0);
    rows.sort_by_key(|(_, _, errors)| errors.first().copied());
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(close, reason, errors)| json!({ "errors": errors, "code": close.get(), "reason": reason }))
        .collect();
    json!({ "rows": rows, "otherwise": { "code": close.get(), "reason": reason } })
}

fn tenant_json() -> Value {
    let lengths: Vec<usize> = (0..=MAX_TENANT_LEN + 1).filter(|&n| is_valid_tenant(&"a".repeat(n))).collect();
    let (Some(&min_len), Some(&max_len)) = (lengths.first(), lengths.last()) else { panic!("no valid length") };
    assert_eq!(lengths.len(), max_len - min_len + 1, "every length in between is valid");
    let chars: String = (char::MIN..=char::MAX).filter(|c| is_valid_tenant(&format!("a{c}"))).collect();
    for step in PATH_STEPS {
        assert!(step.chars().all(|c| chars.contains(c)) && !is_valid_tenant(step), "{step} is refused for itself");
    }
    json!({
        "default": DEFAULT_TENANT,
        "min_len": min_len,
        "max_len": max_len,
        "chars": chars,
        "path_steps": PATH_STEPS,
        "rule": TENANT_RULE,
    })
}

fn session_json() -> Value {
    use crate::session::*;
    json!({
        "resume_window_ms": RESUME_WINDOW_MS,
        "max_replay_messages": MAX_REPLAY_MESSAGES,
        "max_replay_bytes": MAX_REPLAY_BYTES,
        "max_ping_bytes": MAX_PING_BYTES,
        "ends_session": ranges(|c| ends_session(CloseCode::new(c))),
        "expired": { "code": SESSION_EXPIRED.0.get(), "reason": SESSION_EXPIRED.1 },
        "moved": { "code": SESSION_MOVED.0.get(), "reason": SESSION_MOVED.1 },
        "reconnecting": { "code": SESSION_RECONNECTING.0.get(), "reason": SESSION_RECONNECTING.1 },
    })
}

/// The document `protocol/vectors/facts.json` holds (schema: PROTOCOL.md §13).
fn facts() -> Value {
    let (expired_code, expired_reason) = TOKEN_EXPIRED;
    json!({
        "close_codes": close_codes_json(),
        "error_close": error_close_json(),
        "token_expired": { "code": expired_code.get(), "reason": expired_reason },
        "client_lost": { "code": CLIENT_LOST.0.get(), "reason": CLIENT_LOST.1 },
        "client_replaced": { "code": CLIENT_REPLACED.0.get(), "reason": CLIENT_REPLACED.1 },
        "max_batch_bytes": MAX_BATCH_BYTES,
        "max_close_reason": MAX_CLOSE_REASON,
        "tenant": tenant_json(),
        "session": session_json(),
    })
}

#[test]
fn facts_json_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/facts.json");
    let made = facts();
    if std::env::var_os("BLESS").is_some() {
        let text = serde_json::to_string_pretty(&made).expect("json") + "\n";
        std::fs::write(&path, text).expect("write facts.json");
        return;
    }
    let text = std::fs::read_to_string(&path).expect("protocol/vectors/facts.json (BLESS=1 writes it)");
    let stored: Value = serde_json::from_str(&text).expect("facts.json is JSON");
    assert_eq!(
        stored, made,
        "facts.json differs from the code: BLESS=1 cargo test -p snippet-proxy-protocol facts, then node scripts/write-facts.mjs"
    );
}

#[test]
fn client_codes_are_kept_or_replaced_by_what_they_mean() {
    for allowed in [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
        assert_eq!(CloseCode::new(allowed).from_client(), CloseCode::new(allowed), "{allowed}");
    }
    assert_eq!(CloseCode::new(1005).from_client(), CloseCode::NORMAL, "no code sent");
    assert_eq!(CloseCode::new(1006).from_client(), CloseCode::GOING_AWAY, "connection dropped");
    for invalid in [0, 999, 1004, 1015, 1016, 2999, 5000, u16::MAX] {
        assert_eq!(CloseCode::new(invalid).from_client(), CloseCode::PROTOCOL_ERROR, "{invalid}");
    }
}

#[test]
fn tenant_names_are_checked_for_charset_length_and_path_steps() {
    for good in ["default", "room-1", "a.b_c", "x", "...", &"x".repeat(MAX_TENANT_LEN)] {
        assert!(is_valid_tenant(good), "{good}");
    }
    for bad in ["", ".", "..", "a b", "a/b", "a%2fb", "é", &"x".repeat(MAX_TENANT_LEN + 1)] {
        assert!(!is_valid_tenant(bad), "{bad}");
    }
}

/// The rule's text is written out for people; it must say what [`is_valid_tenant`] does.
#[test]
fn the_tenant_rule_states_the_rule() {
    let tenant = tenant_json();
    let lengths = format!("{}-{}", tenant["min_len"], tenant["max_len"]);
    assert!(TENANT_RULE.contains(&lengths), "{TENANT_RULE} states the lengths {lengths}");
    let (_, class) = TENANT_RULE.split_once('[').expect("a character class");
    let (class, _) = class.split_once(']').expect("a closed class");
    let mut stated: Vec<char> = Vec::new();
    let mut rest = class.chars().peekable();
    while let Some(c) = rest.next() {
        let mut ahead = rest.clone();
        match (ahead.next(), ahead.next()) {
            (Some('-'), Some(last)) => {
                stated.extend(c..=last);
                rest = ahead;
            }
            _ => stated.push(c),
        }
    }
    stated.sort_unstable();
    let derived: Vec<char> = tenant["chars"].as_str().expect("chars").chars().collect();
    assert_eq!(stated, derived, "{TENANT_RULE} states the characters");
}
