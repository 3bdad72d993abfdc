use super::*;

/// Records statements; answers `select` with one row per param and fails on `boom`.
#[derive(Default)]
pub(crate) struct FakeDb {
    pub calls: Vec<(String, Vec<Value>)>,
    pub rows: usize,
    pub pushed: Vec<String>,
}

impl Db for FakeDb {
    fn sql(&mut self, sql: &str, params: &[Value]) -> Result<SqlResult, DbError> {
        self.calls.push((sql.to_owned(), params.to_vec()));
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
    let out = handle(input.as_bytes(), &mut db).expect("a reply");
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
    assert_eq!(handle(br#"[{"jsonrpc":"2.0","method":"ping"}]"#, &mut db), None);
    assert_eq!(handle(br#"{"jsonrpc":"2.0","method":"ping"}"#, &mut db), None);
    let big = format!("[{}]", vec![r#"{"jsonrpc":"2.0","method":"ping","id":1}"#; MAX_BATCH + 1].join(","));
    assert_eq!(call(&big)["error"]["code"], code::INVALID_REQUEST);
}

#[test]
fn sql_binds_params_and_never_splices_them() {
    let mut db = FakeDb::default();
    let out = handle(
        br#"{"jsonrpc":"2.0","method":"sql","params":{"sql":"select ?","params":["x'); drop table t; --"]},"id":1}"#,
        &mut db,
    )
    .expect("reply");
    assert_eq!(db.calls, vec![("select ?".to_owned(), vec![json!("x'); drop table t; --")])]);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["result"]["columns"], json!(["v"]));
    assert_eq!(v["result"]["rows"], json!([["x'); drop table t; --"]]));
    assert!(v["result"].get("rowsRead").is_some() && v["result"].get("rowsWritten").is_some());
    // positional form
    handle(br#"{"jsonrpc":"2.0","method":"sql","params":["select ?, ?",[1,null]],"id":2}"#, &mut db).expect("reply");
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
    let out =
        handle(br#"{"jsonrpc":"2.0","method":"sql","params":{"sql":"select 1"},"id":1}"#, &mut db).expect("reply");
    assert!(out.contains(&code::RESULT_TOO_LARGE.to_string()));
    // byte cap: a few thousand rows of long strings
    let long = "y".repeat(1000);
    let params: Vec<Value> = (0..600).map(|_| json!(long)).collect();
    let req = json!({"jsonrpc":"2.0","method":"sql","params":{"sql":"select ?","params":params},"id":9});
    let mut db = FakeDb::default();
    let out = handle(req.to_string().as_bytes(), &mut db).expect("reply");
    assert!(out.contains("over the limit"), "{}", &out[..200.min(out.len())]);
}

#[test]
fn query_body_shape() {
    let mut db = FakeDb::default();
    let (status, body) = handle_query(br#"{"sql":"select ?","params":[5]}"#, &mut db);
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).expect("json")["rows"], json!([[5]]));
    assert_eq!(handle_query(b"[1]", &mut db).0, 400);
    assert_eq!(handle_query(b"{", &mut db).0, 400);
    assert_eq!(handle_query(br#"{"sql":"boom"}"#, &mut db).0, 400);
}

#[test]
fn broadcast_pushes_a_notification_and_counts_receivers() {
    let mut db = FakeDb::default();
    let out = handle(br#"{"jsonrpc":"2.0","method":"broadcast","params":{"message":{"hi":1}},"id":1}"#, &mut db)
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
