use super::*;
use crate::authz::Caller;
use protocol::Identity;

/// A caller with `scopes`, at time 1,000 s, whose token expires at 2,000 s.
pub(crate) fn caller(scopes: &str) -> Caller {
    let id = Identity { subject: "alice".into(), tenant: "t".into(), scopes: scopes.into(), expires_at: 2_000 };
    Caller::new(id, 1_000)
}

fn admin() -> Caller {
    caller("admin")
}

/// Records statements; answers `select` with one row per param and fails on `boom`.
/// Statements starting with `insert` "write": in read-only mode they fail as the real
/// database's rolled-back transaction reports it.
#[derive(Default)]
pub(crate) struct FakeDb {
    pub calls: Vec<(String, Vec<Value>)>,
    pub modes: Vec<SqlMode>,
    pub rows: usize,
    pub pushed: Vec<String>,
}

impl Db for FakeDb {
    fn sql(&mut self, sql: &str, params: &[Value], mode: SqlMode) -> Result<SqlResult, DbError> {
        self.calls.push((sql.to_owned(), params.to_vec()));
        self.modes.push(mode);
        if mode == SqlMode::ReadOnly && sql.starts_with("insert") {
            return Err(DbError::ReadOnly);
        }
        if sql.contains("boom") {
            return Err(DbError::Sqlite("near \"boom\": syntax error".into()));
        }
        if self.rows > MAX_ROWS {
            return Err(DbError::TooManyRows);
        }
        Ok(SqlResult {
            columns: vec!["v".into()],
            rows: (0..self.rows.max(params.len()))
                .map(|i| vec![params.get(i).cloned().unwrap_or(Value::from(i))])
                .collect(),
            rows_read: self.rows as u64,
            rows_written: 0,
        })
    }
    fn stats(&mut self) -> Value {
        stats_object(&[("sockets", 2), ("wakes", 1)])
    }
    fn broadcast(&mut self, notification: &str) -> u64 {
        self.pushed.push(notification.to_owned());
        3
    }
}

fn call(input: &str) -> Value {
    let mut db = FakeDb::default();
    let out = handle(input.as_bytes(), &mut db, &admin()).expect("a reply");
    serde_json::from_str(&out).expect("reply is JSON")
}

#[test]
fn ping_echo_and_stats() {
    assert_eq!(call(r#"{"jsonrpc":"2.0","method":"ping","id":1}"#), json!({"jsonrpc":"2.0","result":"pong","id":1}));
    assert_eq!(
        call(r#"{"jsonrpc":"2.0","method":"echo","params":{"a":[1,"x"]},"id":"k"}"#),
        json!({"jsonrpc":"2.0","result":{"a":[1,"x"]},"id":"k"})
    );
    assert_eq!(call(r#"{"jsonrpc":"2.0","method":"stats","id":2}"#)["result"]["sockets"], 2);
}

#[test]
fn standard_error_codes() {
    assert_eq!(call("{nope")["error"]["code"], code::PARSE_ERROR);
    assert_eq!(call("{nope")["id"], Value::Null);
    assert_eq!(call(r#"{"method":"ping","id":1}"#)["error"]["code"], code::INVALID_REQUEST);
    assert_eq!(call(r#"{"jsonrpc":"2.0","method":7,"id":1}"#)["error"]["code"], code::INVALID_REQUEST);
    assert_eq!(call(r#"{"jsonrpc":"2.0","method":"x","params":3,"id":1}"#)["error"]["code"], code::INVALID_REQUEST);
    assert_eq!(call(r#"{"jsonrpc":"2.0","method":"nope","id":1}"#)["error"]["code"], code::METHOD_NOT_FOUND);
    assert_eq!(call(r#"{"jsonrpc":"2.0","method":"sql","params":{},"id":1}"#)["error"]["code"], code::INVALID_PARAMS);
    assert_eq!(call(r#"[]"#)["error"]["code"], code::INVALID_REQUEST);
    assert_eq!(call(r#"5"#)["error"]["code"], code::INVALID_REQUEST);
}

#[test]
fn batches_answer_each_request_and_skip_notifications() {
    let out = call(
        r#"[{"jsonrpc":"2.0","method":"ping","id":1},{"jsonrpc":"2.0","method":"ping"},{"jsonrpc":"2.0","method":"nope","id":2},3]"#,
    );
    let arr = out.as_array().expect("batch reply");
    assert_eq!(arr.len(), 3);
    assert_eq!(arr[0]["result"], "pong");
    assert_eq!(arr[1]["error"]["code"], code::METHOD_NOT_FOUND);
    assert_eq!(arr[2]["error"]["code"], code::INVALID_REQUEST);
    let mut db = FakeDb::default();
    assert_eq!(handle(br#"[{"jsonrpc":"2.0","method":"ping"}]"#, &mut db, &admin()), None);
    assert_eq!(handle(br#"{"jsonrpc":"2.0","method":"ping"}"#, &mut db, &admin()), None);
    let big = format!("[{}]", vec![r#"{"jsonrpc":"2.0","method":"ping","id":1}"#; MAX_BATCH + 1].join(","));
    assert_eq!(call(&big)["error"]["code"], code::INVALID_REQUEST);
}

#[test]
fn sql_binds_params_and_never_splices_them() {
    let mut db = FakeDb::default();
    let out = handle(
        br#"{"jsonrpc":"2.0","method":"sql","params":{"sql":"select ?","params":["x'); drop table t; --"]},"id":1}"#,
        &mut db,
        &admin(),
    )
    .expect("reply");
    assert_eq!(db.calls, vec![("select ?".to_owned(), vec![json!("x'); drop table t; --")])]);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["result"]["columns"], json!(["v"]));
    assert_eq!(v["result"]["rows"], json!([["x'); drop table t; --"]]));
    assert!(v["result"].get("rowsRead").is_some() && v["result"].get("rowsWritten").is_some());
    // positional form
    handle(br#"{"jsonrpc":"2.0","method":"sql","params":["select ?, ?",[1,null]],"id":2}"#, &mut db, &admin())
        .expect("reply");
    assert_eq!(db.calls[1].1, vec![json!(1), Value::Null]);
    // nested values are refused before reaching SQLite
    let bad = call(r#"{"jsonrpc":"2.0","method":"sql","params":{"sql":"select ?","params":[[1]]},"id":3}"#);
    assert_eq!(bad["error"]["code"], code::INVALID_PARAMS);
}

#[test]
fn sql_errors_and_caps() {
    let e = call(r#"{"jsonrpc":"2.0","method":"sql","params":{"sql":"boom"},"id":1}"#);
    assert_eq!(e["error"]["code"], code::SQL_ERROR);
    assert!(e["error"]["message"].as_str().unwrap_or_default().contains("syntax error"));
    let mut db = FakeDb { rows: MAX_ROWS + 1, ..FakeDb::default() };
    let out = handle(br#"{"jsonrpc":"2.0","method":"sql","params":{"sql":"select 1"},"id":1}"#, &mut db, &admin())
        .expect("reply");
    assert!(out.contains(&code::RESULT_TOO_LARGE.to_string()));
    // byte cap: a few thousand rows of long strings
    let long = "y".repeat(1000);
    let params: Vec<Value> = (0..600).map(|_| json!(long)).collect();
    let req = json!({"jsonrpc":"2.0","method":"sql","params":{"sql":"select ?","params":params},"id":9});
    let mut db = FakeDb::default();
    let out = handle(req.to_string().as_bytes(), &mut db, &admin()).expect("reply");
    assert!(out.contains("over the limit"), "{}", &out[..200.min(out.len())]);
}

#[test]
fn query_body_shape() {
    let mut db = FakeDb::default();
    let (status, body) = handle_query(br#"{"sql":"select ?","params":[5]}"#, &mut db, &admin());
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).expect("json")["rows"], json!([[5]]));
    assert_eq!(handle_query(b"[1]", &mut db, &admin()).0, 400);
    assert_eq!(handle_query(b"{", &mut db, &admin()).0, 400);
    assert_eq!(handle_query(br#"{"sql":"boom"}"#, &mut db, &admin()).0, 400);
}

#[test]
fn broadcast_pushes_a_notification_and_counts_receivers() {
    let mut db = FakeDb::default();
    let out =
        handle(br#"{"jsonrpc":"2.0","method":"broadcast","params":{"message":{"hi":1}},"id":1}"#, &mut db, &admin())
            .expect("reply");
    assert_eq!(serde_json::from_str::<Value>(&out).expect("json")["result"], json!({"delivered": 3}));
    let pushed: Value = serde_json::from_str(&db.pushed[0]).expect("json");
    assert_eq!(pushed, json!({"jsonrpc":"2.0","method":"broadcast","params":{"message":{"hi":1}}}));
    assert!(pushed.get("id").is_none(), "a notification has no id");
    assert_eq!(
        call(r#"{"jsonrpc":"2.0","method":"broadcast","params":{},"id":2}"#)["error"]["code"],
        code::INVALID_PARAMS
    );
}

fn call_as(who: &Caller, input: &str) -> Value {
    let mut db = FakeDb::default();
    serde_json::from_str(&handle(input.as_bytes(), &mut db, who).expect("a reply")).expect("JSON")
}

#[test]
fn each_method_needs_its_scope() {
    let rpc =
        |m: &str| format!(r#"{{"jsonrpc":"2.0","method":"{m}","params":{{"message":1,"sql":"select 1"}},"id":1}}"#);
    let allowed = |scopes: &str, m: &str| call_as(&caller(scopes), &rpc(m)).get("error").is_none();
    for m in ["ping", "echo", "whoami", "sql"] {
        assert!(allowed("read", m) && allowed("write", m) && allowed("admin", m), "{m}");
        assert!(!allowed("publish", m) && !allowed("", m), "{m}");
    }
    assert!(allowed("publish", "broadcast") && allowed("admin", "broadcast"));
    assert!(!allowed("read write", "broadcast"));
    assert!(allowed("admin", "stats"));
    assert!(!allowed("read write publish", "stats"));
    let e = call_as(&caller("read"), &rpc("stats"));
    assert_eq!(e["error"]["code"], code::FORBIDDEN);
    assert!(e["error"]["message"].as_str().unwrap_or_default().contains("admin"), "{e}");
}

#[test]
fn read_callers_run_sql_read_only_and_writers_read_write() {
    let mut db = FakeDb::default();
    let q = br#"{"jsonrpc":"2.0","method":"sql","params":{"sql":"insert into t values (1)"},"id":1}"#;
    let out: Value = serde_json::from_str(&handle(q, &mut db, &caller("read")).expect("reply")).expect("json");
    assert_eq!(out["error"]["code"], code::READ_ONLY, "{out}");
    let out: Value = serde_json::from_str(&handle(q, &mut db, &caller("write")).expect("reply")).expect("json");
    assert!(out.get("result").is_some(), "{out}");
    assert_eq!(db.modes, vec![SqlMode::ReadOnly, SqlMode::ReadWrite]);
    let (status, body) = handle_query(br#"{"sql":"insert into t values (1)"}"#, &mut db, &caller("read"));
    assert_eq!(status, 403, "{body}");
    assert_eq!(handle_query(br#"{"sql":"select 1"}"#, &mut db, &caller("publish")).0, 403);
}

#[test]
fn an_expired_caller_is_refused_everything() {
    let late = Caller::new(caller("admin").identity, 2_000);
    let e = call_as(&late, r#"{"jsonrpc":"2.0","method":"ping","id":1}"#);
    assert_eq!(e["error"]["code"], code::EXPIRED);
    assert_eq!(handle_query(br#"{"sql":"select 1"}"#, &mut FakeDb::default(), &late).0, 401);
}

#[test]
fn whoami_reports_the_identity_from_the_frame_not_from_params() {
    let out = call_as(
        &caller("read"),
        r#"{"jsonrpc":"2.0","method":"whoami","params":{"subject":"mallory","scopes":"admin"},"id":1}"#,
    );
    assert_eq!(
        out["result"],
        json!({"subject":"alice","tenant":"t","scopes":"read","expiresAt":2000,"anonymous":false})
    );
}

#[test]
fn a_reply_over_the_limit_becomes_an_error_for_that_call_and_small_ones_still_arrive() {
    let big = "x".repeat(MAX_REPLY_BYTES / 3);
    let call = |id: u64, s: &str| json!({ "jsonrpc": "2.0", "method": "echo", "params": [s], "id": id });
    // One call whose reply alone is too large.
    let huge = "y".repeat(MAX_REPLY_BYTES);
    let reply = call_as(&caller("read"), &call(7, &huge).to_string());
    assert_eq!(reply["error"]["code"], code::REPLY_TOO_LARGE, "{}", &reply.to_string()[..200]);
    assert_eq!(reply["id"], 7);
    // Four replies of a third each: the largest become errors, the small one arrives.
    let batch = json!([call(1, &big), call(2, &big), call(3, "small"), call(4, &big), call(5, &big)]);
    let mut db = FakeDb::default();
    let text = handle(batch.to_string().as_bytes(), &mut db, &caller("read")).expect("a reply");
    assert!(text.len() <= MAX_REPLY_BYTES, "{}", text.len());
    let replies: Vec<Value> = serde_json::from_str(&text).expect("JSON");
    assert_eq!(replies.len(), 5);
    assert_eq!(replies[2]["result"], json!(["small"]));
    let errors = replies.iter().filter(|r| r["error"]["code"] == code::REPLY_TOO_LARGE).count();
    let answered = replies.iter().filter(|r| r["result"].is_array()).count();
    // Three thirds plus the JSON around them do not fit: two large replies do.
    assert_eq!((errors, answered), (2, 3), "two large replies fit beside the small one");
}

#[test]
fn a_broadcast_over_its_limit_is_refused_before_anyone_gets_it() {
    let mut db = FakeDb::default();
    let msg = "z".repeat(MAX_BROADCAST_BYTES);
    let req = json!({ "jsonrpc": "2.0", "method": "broadcast", "params": { "message": msg }, "id": 1 });
    let out = handle(req.to_string().as_bytes(), &mut db, &caller("publish read")).expect("a reply");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("limit"), "{v}");
    assert!(db.pushed.is_empty(), "nobody was sent anything");
}
