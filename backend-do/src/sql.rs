//! The Durable Object's SQLite storage as a [`backend_core::Db`].

use backend_core::rpc::{DbError, MAX_ROWS};
use backend_core::SqlResult;
use serde_json::Value;
use wasm_bindgen::JsValue;
use worker::{SqlStorage, SqlStorageValue};

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
        SqlStorageValue::Blob(b) => Value::Array(b.into_iter().map(Value::from).collect()),
    }
}

fn sqlite_message(e: worker::Error) -> String {
    let text = e.to_string();
    text.strip_prefix("Error: ").unwrap_or(&text).to_owned()
}

/// Runs one statement with bound parameters, reading at most `MAX_ROWS` rows.
pub fn run(storage: &SqlStorage, sql: &str, params: &[Value]) -> Result<SqlResult, DbError> {
    {
        let bindings: Vec<JsValue> = params.iter().map(to_js).collect();
        let cursor = storage.exec_raw(sql, bindings).map_err(|e| DbError::Sqlite(sqlite_message(e)))?;
        let columns = cursor.column_names();
        let mut rows = Vec::new();
        for row in cursor.raw() {
            let row = row.map_err(|e| DbError::Sqlite(sqlite_message(e)))?;
            if rows.len() == MAX_ROWS {
                return Err(DbError::TooManyRows);
            }
            rows.push(row.into_iter().map(to_json).collect());
        }
        Ok(SqlResult {
            columns,
            rows,
            rows_read: cursor.rows_read() as u64,
            rows_written: cursor.rows_written() as u64,
        })
    }
}
