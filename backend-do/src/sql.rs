//! The Durable Object's SQLite storage as a [`backend_core::Db`].
//!
//! Read-only callers: the statement runs inside `storage.transactionSync()`, whose
//! callback always throws after the rows are read, so the transaction is always rolled
//! back. Whatever the statement is — DML, DDL, a write inside a CTE or a trigger, several
//! statements in one string — nothing it did survives. The caller is told
//! [`DbError::ReadOnly`] instead of a result when SQLite counted rows written, or when the
//! schema read inside the same transaction differs after the statement (DDL reports 0
//! rows written: measured, `drop table` gave `rowsWritten: 0`). The connection's settings
//! (`backend_core::settings`) are flags a rollback does not undo, so they are read before
//! and after the transaction: any that changed is set back and the statement refused the
//! same way. This is SQLite's own undo and a comparison of state, not a reading of the
//! statement's text.

use std::cell::RefCell;
use std::rc::Rc;

use backend_core::rpc::{DbError, SqlMode, MAX_RESULT_BYTES, MAX_ROWS};
use backend_core::settings::{self, Setting, Snapshot};

/// The size bound while reading is an overestimate (every string character counted as a
/// six-byte escape); the exact size is checked on the serialised result. Reading stops at
/// this multiple of `MAX_RESULT_BYTES`, so the memory a statement can take stays bounded.
const RESULT_BOUND_SLACK: usize = 6;
use backend_core::SqlResult;
use serde_json::Value;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::{SqlStorage, SqlStorageValue, State};

fn to_js(v: &Value) -> JsValue {
    match v {
        Value::Null => JsValue::NULL,
        // SQLite has no boolean: store 1/0 as it would.
        Value::Bool(b) => JsValue::from(u8::from(*b)),
        Value::Number(n) => JsValue::from(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => JsValue::from(s.as_str()),
        // Refused by the validator before we get here.
        Value::Array(_) | Value::Object(_) => JsValue::NULL,
    }
}

fn to_json(v: SqlStorageValue) -> Value {
    match v {
        SqlStorageValue::Null => Value::Null,
        SqlStorageValue::Boolean(b) => Value::Bool(b),
        SqlStorageValue::Integer(i) => Value::from(i),
        SqlStorageValue::Float(f) => serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null),
        SqlStorageValue::String(s) => Value::String(s),
        SqlStorageValue::Blob(b) => backend_core::blob::to_json(&b),
    }
}

fn sqlite_message(e: worker::Error) -> String {
    let text = e.to_string();
    text.strip_prefix("Error: ").unwrap_or(&text).to_owned()
}

/// An upper bound of a value's size in the JSON reply.
fn json_size(v: &SqlStorageValue) -> usize {
    match v {
        SqlStorageValue::Null | SqlStorageValue::Boolean(_) => 5,
        SqlStorageValue::Integer(_) | SqlStorageValue::Float(_) => 24,
        SqlStorageValue::String(s) => 2 + s.len() * 6,
        SqlStorageValue::Blob(b) => backend_core::blob::json_len(b.len()),
    }
}

/// Runs one statement with bound parameters, reading at most `MAX_ROWS` rows and stopping
/// as soon as the rows read could exceed `MAX_RESULT_BYTES` (so a huge result is never
/// built in memory first).
fn run_plain(storage: &SqlStorage, sql: &str, params: &[Value]) -> Result<SqlResult, DbError> {
    let bindings: Vec<JsValue> = params.iter().map(to_js).collect();
    let cursor = storage.exec_raw(sql, bindings).map_err(|e| DbError::Sqlite(sqlite_message(e)))?;
    let columns = cursor.column_names();
    let mut rows = Vec::new();
    let mut size = 0usize;
    for row in cursor.raw() {
        let row = row.map_err(|e| DbError::Sqlite(sqlite_message(e)))?;
        if rows.len() == MAX_ROWS {
            return Err(DbError::TooManyRows);
        }
        size = row.iter().fold(size.saturating_add(2), |n, v| n.saturating_add(json_size(v)));
        if size > MAX_RESULT_BYTES.saturating_mul(RESULT_BOUND_SLACK) {
            return Err(DbError::TooLarge);
        }
        rows.push(row.into_iter().map(to_json).collect());
    }
    Ok(SqlResult { columns, rows, rows_read: cursor.rows_read() as u64, rows_written: cursor.rows_written() as u64 })
}

/// Everything in `sqlite_master` (and `sqlite_temp_master`, where the runtime lets it be
/// read): changes whenever the schema does.
fn schema_fingerprint(storage: &SqlStorage) -> Option<Vec<Vec<Value>>> {
    const MAIN: &str = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name";
    const TEMP: &str = "SELECT type, name, tbl_name, sql FROM sqlite_temp_master ORDER BY type, name";
    let mut rows = run_plain(storage, MAIN, &[]).ok()?.rows;
    if let Ok(temp) = run_plain(storage, TEMP, &[]) {
        rows.extend(temp.rows);
    }
    Some(rows)
}

/// A `State` wrapper around the object's raw `DurableObjectState` (workers-rs's `State`
/// is not `Clone`, and the transaction callback must own one).
pub fn state_of(raw: &JsValue) -> State {
    State::from(raw.clone().unchecked_into::<worker::worker_sys::DurableObjectState>())
}

/// Runs one statement for a caller in `mode`. `raw` is the object's `DurableObjectState`.
pub fn run(raw: &JsValue, sql: &str, params: &[Value], mode: SqlMode) -> Result<SqlResult, DbError> {
    let storage = state_of(raw).storage().sql();
    if mode == SqlMode::ReadWrite {
        return run_plain(&storage, sql, params);
    }
    let before = snapshot(&storage);
    let result = run_rolled_back(raw, sql, params);
    let after = snapshot(&storage);
    if after == before {
        return result;
    }
    // A setting of the connection outlived the rollback: set it back before anyone else's
    // statement runs (nothing else runs in between: the object is one thread).
    restore(&storage, &before, &after);
    Err(DbError::ReadOnly)
}

/// One setting's current value, if the runtime lets it be read.
fn read_setting(storage: &SqlStorage, setting: &Setting) -> Option<i64> {
    let result = run_plain(storage, setting.read, &[]).ok()?;
    result.rows.first()?.first()?.as_i64()
}

/// Every connection setting a statement could change ([`settings::SETTINGS`]).
fn snapshot(storage: &SqlStorage) -> Snapshot {
    settings::SETTINGS.iter().map(|s| read_setting(storage, s)).collect()
}

/// Sets back what changed from `before`, and says so in the log if that did not work:
/// the next statements, anyone's, would then run with a setting a reader chose.
fn restore(storage: &SqlStorage, before: &Snapshot, after: &Snapshot) {
    for statement in settings::restore(before, after) {
        if let Err(e) = run_plain(storage, &statement, &[]) {
            worker::console_error!("read-only SQL: could not restore a connection setting ({statement}): {e:?}");
        }
    }
    if snapshot(storage) != *before {
        worker::console_error!("read-only SQL: a connection setting a reader changed could not be set back");
    }
}

/// Runs the statement inside `storage.transactionSync()` and always rolls it back; a
/// statement that wrote rows or changed the schema is refused.
fn run_rolled_back(raw: &JsValue, sql: &str, params: &[Value]) -> Result<SqlResult, DbError> {
    let result: Rc<RefCell<Option<Result<SqlResult, DbError>>>> = Rc::new(RefCell::new(None));
    let (out, state, sql, params) = (result.clone(), raw.clone(), sql.to_owned(), params.to_vec());
    let body = Closure::once_into_js(move || -> Result<JsValue, JsValue> {
        let storage = state_of(&state).storage().sql();
        let schema_before = schema_fingerprint(&storage);
        let r = run_plain(&storage, &sql, &params).and_then(|r| {
            // A fingerprint that cannot be read proves nothing: count it as a write.
            let after = schema_fingerprint(&storage);
            let wrote = r.rows_written > 0 || schema_before.is_none() || after != schema_before;
            if wrote {
                Err(DbError::ReadOnly)
            } else {
                Ok(r)
            }
        });
        *out.borrow_mut() = Some(r);
        // Always throw: transactionSync then rolls back everything the statement did.
        Err(JsValue::from_str("snippet-proxy: read-only rollback"))
    });
    let storage = js_sys::Reflect::get(raw, &"storage".into()).unwrap_or(JsValue::UNDEFINED);
    let Some(tx) = js_sys::Reflect::get(&storage, &"transactionSync".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
    else {
        // Fail closed: without a transaction there is no way to undo a write.
        return Err(DbError::Sqlite("read-only statements need storage.transactionSync".into()));
    };
    // The rethrown rollback marker is expected; an error before the callback ran is not.
    let _ = tx.call1(&storage, &body);
    let taken = result.borrow_mut().take();
    match taken {
        Some(result) => result,
        None => Err(DbError::Sqlite("the read-only transaction did not run".into())),
    }
}
