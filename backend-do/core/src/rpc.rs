//! JSON-RPC 2.0 (single and batch) with the methods `ping`, `echo`, `whoami`, `sql`,
//! `broadcast` and `stats`, plus the `POST /query` body
//! `{ "sql": …, "params": [...] }`. One handler serves every entry point, and every call
//! is authorized from its [`Caller`] (see [`crate::authz`]).

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::authz::Caller;

/// Most rows a `sql` result may hold. A Durable Object answers one request at a time;
/// a huge scan would stall every other client of the tenant, so big reads must page.
pub const MAX_ROWS: usize = 10_000;
/// Most bytes a serialised result may have: it must fit in one WebSocket message with
/// room to spare, and the snippet refuses messages over 1 MiB by default.
pub const MAX_RESULT_BYTES: usize = 512 * 1024;
/// Most requests in one JSON-RPC batch, so one message cannot monopolise the object.
pub const MAX_BATCH: usize = 100;
/// Largest reply text (one call, or one batch together). A reply travels as one frame on
/// the shared upstream, and every other stream's replies wait behind it: 4 MiB is eight
/// full SQL results, and a few tens of ms on the wire. A larger reply becomes a
/// `REPLY_TOO_LARGE` error for the call (in a batch: for its largest calls) — never
/// silence.
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;
/// Largest `broadcast` notification (its JSON text). A broadcast is copied to every
/// listening stream, so its size is multiplied by their number on the upstream: 64 KiB
/// to 1,000 listeners is already 64 MiB of frames.
pub const MAX_BROADCAST_BYTES: usize = 64 * 1024;

/// JSON-RPC error codes used here.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Bad params.
    pub const INVALID_PARAMS: i64 = -32602;
    /// SQLite refused the statement; the message is SQLite's.
    pub const SQL_ERROR: i64 = -32000;
    /// The result exceeds [`super::MAX_ROWS`] or [`super::MAX_RESULT_BYTES`].
    pub const RESULT_TOO_LARGE: i64 = -32001;
    /// The caller's scopes do not allow the method.
    pub const FORBIDDEN: i64 = -32002;
    /// The caller's token has expired.
    pub const EXPIRED: i64 = -32003;
    /// A caller with only `read` ran a statement that wrote; it was rolled back.
    pub const READ_ONLY: i64 = -32004;
    /// The call ran, but its reply exceeds [`super::MAX_REPLY_BYTES`].
    pub const REPLY_TOO_LARGE: i64 = -32005;
}

/// How a statement may touch the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlMode {
    /// Any statement; changes are kept.
    ReadWrite,
    /// The statement runs in a transaction that is always rolled back, and reports
    /// [`DbError::ReadOnly`] if it wrote or changed a connection setting (which is set
    /// back; see [`crate::settings`]): nothing it does can persist.
    ReadOnly,
}

/// A statement's result, shaped for the wire.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SqlResult {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows, each a list of values in column order.
    pub rows: Vec<Vec<Value>>,
    /// Rows SQLite read.
    pub rows_read: u64,
    /// Rows SQLite wrote.
    pub rows_written: u64,
}

/// Why a statement failed.
#[derive(Debug, Clone, PartialEq)]
pub enum DbError {
    /// SQLite's own message.
    Sqlite(String),
    /// More than [`MAX_ROWS`] rows.
    TooManyRows,
    /// A [`SqlMode::ReadOnly`] statement wrote (and was rolled back), or changed a
    /// connection setting (and it was set back).
    ReadOnly,
    /// The rows read so far already exceed what a result may hold.
    TooLarge,
}

/// The storage the handler runs statements against.
pub trait Db {
    /// Runs one statement with `?` parameters bound (never spliced into the text).
    /// Implementations stop reading after `MAX_ROWS + 1` rows and report `TooManyRows`,
    /// and honour `mode` by a mechanism of the database (a rolled-back transaction), not
    /// by reading the statement's text.
    fn sql(&mut self, sql: &str, params: &[Value], mode: SqlMode) -> Result<SqlResult, DbError>;
    /// The `stats` method's result.
    fn stats(&mut self) -> Value;
    /// Server push: sends `notification` (a JSON-RPC notification) to every JSON-RPC
    /// stream and socket of this tenant, unprompted. Returns how many got it.
    fn broadcast(&mut self, notification: &str) -> u64;
}

struct RpcError {
    code: i64,
    message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError { code, message: message.into() }
    }
}

fn error_response(id: Value, e: RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "error": { "code": e.code, "message": e.message }, "id": id })
}

/// Handles one JSON-RPC message (single or batch). Returns the reply text, or `None`
/// when nothing must be sent back (only notifications).
pub fn handle(input: &[u8], db: &mut dyn Db, caller: &Caller) -> Option<String> {
    let parsed: Value = match serde_json::from_slice(input) {
        Ok(v) => v,
        Err(e) => {
            let e = RpcError::new(code::PARSE_ERROR, format!("parse error: {e}"));
            return Some(error_response(Value::Null, e).to_string());
        }
    };
    match parsed {
        Value::Array(items) if items.is_empty() => {
            Some(error_response(Value::Null, RpcError::new(code::INVALID_REQUEST, "empty batch")).to_string())
        }
        Value::Array(items) if items.len() > MAX_BATCH => {
            let msg = format!("batch of {} requests exceeds the limit of {MAX_BATCH}", items.len());
            Some(error_response(Value::Null, RpcError::new(code::INVALID_REQUEST, msg)).to_string())
        }
        Value::Array(items) => {
            let replies: Vec<Value> = items.into_iter().filter_map(|item| handle_one(item, db, caller)).collect();
            (!replies.is_empty()).then(|| bounded_batch(replies))
        }
        single => handle_one(single, db, caller).map(|v| {
            let text = v.to_string();
            if text.len() <= MAX_REPLY_BYTES {
                return text;
            }
            too_large(&v, text.len()).to_string()
        }),
    }
}

/// The error that replaces a reply of `size` bytes (the call itself did run).
fn too_large(reply: &Value, size: usize) -> Value {
    let id = reply.get("id").cloned().unwrap_or(Value::Null);
    let msg =
        format!("the call ran, but its reply of {size} bytes exceeds the limit of {MAX_REPLY_BYTES}; ask for less");
    error_response(id, RpcError::new(code::REPLY_TOO_LARGE, msg))
}

/// A batch reply within [`MAX_REPLY_BYTES`]: the largest replies are replaced by
/// `REPLY_TOO_LARGE` errors until the rest fits, so small answers still arrive.
fn bounded_batch(replies: Vec<Value>) -> String {
    let mut texts: Vec<String> = replies.iter().map(Value::to_string).collect();
    // Each text plus its comma, and the brackets.
    let mut total = texts.iter().map(|t| t.len() + 1).sum::<usize>() + 1;
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(texts.get(*i).map_or(0, String::len)));
    for i in order {
        if total <= MAX_REPLY_BYTES {
            break;
        }
        let (Some(text), Some(reply)) = (texts.get_mut(i), replies.get(i)) else { continue };
        let error = too_large(reply, text.len()).to_string();
        total = total - text.len() + error.len();
        *text = error;
    }
    format!("[{}]", texts.join(","))
}

fn handle_one(req: Value, db: &mut dyn Db, caller: &Caller) -> Option<Value> {
    let Value::Object(mut obj) = req else {
        return Some(error_response(Value::Null, RpcError::new(code::INVALID_REQUEST, "request must be an object")));
    };
    // A request without an `id` member is a notification: run it, answer nothing.
    let id = obj.remove("id");
    let is_notification = id.is_none();
    let id = id.unwrap_or(Value::Null);
    if !matches!(id, Value::Null | Value::Number(_) | Value::String(_)) {
        return Some(error_response(
            Value::Null,
            RpcError::new(code::INVALID_REQUEST, "id must be a string, number or null"),
        ));
    }
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(error_response(id, RpcError::new(code::INVALID_REQUEST, "jsonrpc must be \"2.0\"")));
    }
    let Some(Value::String(method)) = obj.remove("method") else {
        return Some(error_response(id, RpcError::new(code::INVALID_REQUEST, "method must be a string")));
    };
    let params = obj.remove("params").unwrap_or(Value::Null);
    if !matches!(params, Value::Null | Value::Array(_) | Value::Object(_)) {
        return Some(error_response(id, RpcError::new(code::INVALID_REQUEST, "params must be an array or object")));
    }
    let outcome = dispatch(&method, params, db, caller);
    if is_notification {
        return None;
    }
    Some(match outcome {
        Ok(result) => json!({ "jsonrpc": "2.0", "result": result, "id": id }),
        Err(e) => error_response(id, e),
    })
}

fn forbidden(method: &str, scope: &str) -> RpcError {
    RpcError::new(code::FORBIDDEN, format!("{method} needs the {scope} scope"))
}

fn dispatch(method: &str, params: Value, db: &mut dyn Db, caller: &Caller) -> Result<Value, RpcError> {
    if caller.expired() {
        return Err(RpcError::new(code::EXPIRED, "the caller's token has expired"));
    }
    let g = caller.grants;
    match method {
        "ping" | "echo" | "whoami" | "sql" if !g.read() => Err(forbidden(method, "read")),
        "ping" => Ok(Value::String("pong".into())),
        "echo" => Ok(params),
        "whoami" => {
            let id = &caller.identity;
            Ok(json!({
                "subject": id.subject,
                "tenant": id.tenant,
                "scopes": id.scopes,
                "expiresAt": id.expires_at,
                "anonymous": id.is_anonymous(),
            }))
        }
        "sql" => {
            let (sql, args) = sql_params(params)?;
            run_sql(db, &sql, &args, caller)
        }
        "stats" if !g.admin() => Err(forbidden(method, "admin")),
        "stats" => Ok(db.stats()),
        "broadcast" if !g.publish() => Err(forbidden(method, "publish")),
        "broadcast" => {
            let message = match params {
                Value::Object(mut o) => o.remove("message"),
                Value::Array(a) => a.into_iter().next(),
                _ => None,
            };
            let Some(message) = message else {
                return Err(RpcError::new(code::INVALID_PARAMS, "broadcast needs {\"message\": ...}"));
            };
            let note = json!({ "jsonrpc": "2.0", "method": "broadcast", "params": { "message": message } }).to_string();
            if note.len() > MAX_BROADCAST_BYTES {
                let msg = format!("broadcast of {} bytes exceeds the limit of {MAX_BROADCAST_BYTES}", note.len());
                return Err(RpcError::new(code::INVALID_PARAMS, msg));
            }
            Ok(json!({ "delivered": db.broadcast(&note) }))
        }
        other => Err(RpcError::new(code::METHOD_NOT_FOUND, format!("method not found: {other}"))),
    }
}

/// Accepts `{ "sql": "...", "params": [...] }` or `["...", [...]]`.
fn sql_params(params: Value) -> Result<(String, Vec<Value>), RpcError> {
    let (sql, args) = match params {
        Value::Object(mut o) => (o.remove("sql"), o.remove("params")),
        Value::Array(a) => {
            let mut it = a.into_iter();
            (it.next(), it.next())
        }
        _ => (None, None),
    };
    let Some(Value::String(sql)) = sql else {
        return Err(RpcError::new(code::INVALID_PARAMS, "sql must be a string: {\"sql\": \"...\", \"params\": [...]}"));
    };
    let args = match args {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(RpcError::new(code::INVALID_PARAMS, "params must be an array")),
    };
    if let Some((i, _)) = args.iter().enumerate().find(|(_, v)| matches!(v, Value::Array(_) | Value::Object(_))) {
        return Err(RpcError::new(
            code::INVALID_PARAMS,
            format!("param {i} must be null, a boolean, a number or a string"),
        ));
    }
    Ok((sql, args))
}

fn run_sql(db: &mut dyn Db, sql: &str, args: &[Value], caller: &Caller) -> Result<Value, RpcError> {
    let mode = if caller.grants.write() { SqlMode::ReadWrite } else { SqlMode::ReadOnly };
    let result = db.sql(sql, args, mode).map_err(|e| match e {
        DbError::Sqlite(m) => RpcError::new(code::SQL_ERROR, m),
        DbError::ReadOnly => RpcError::new(
            code::READ_ONLY,
            "the read scope cannot change data or the connection's settings; the statement was undone (the write scope can)",
        ),
        DbError::TooManyRows => {
            RpcError::new(code::RESULT_TOO_LARGE, format!("result has more than {MAX_ROWS} rows; add LIMIT/OFFSET"))
        }
        DbError::TooLarge => RpcError::new(
            code::RESULT_TOO_LARGE,
            format!("result is over the limit of {MAX_RESULT_BYTES} bytes; select fewer rows or columns"),
        ),
    })?;
    let value = serde_json::to_value(&result).map_err(|e| RpcError::new(code::SQL_ERROR, e.to_string()))?;
    let size = value.to_string().len();
    if size > MAX_RESULT_BYTES {
        return Err(RpcError::new(
            code::RESULT_TOO_LARGE,
            format!("result is {size} bytes, over the limit of {MAX_RESULT_BYTES}; select fewer rows or columns"),
        ));
    }
    Ok(value)
}

/// `POST /query` with `{ "sql": …, "params": [...] }`: returns (HTTP status, JSON body).
/// 200 with the result; 400 for a bad body or SQL error; 401 for an expired caller; 403
/// for a caller without `read`, or a `read` caller whose statement wrote; 413 past the
/// result caps.
pub fn handle_query(body: &[u8], db: &mut dyn Db, caller: &Caller) -> (u16, String) {
    if caller.expired() {
        return (401, json!({ "error": "the caller's token has expired", "code": code::EXPIRED }).to_string());
    }
    if !caller.grants.read() {
        return (403, json!({ "error": "sql needs the read scope", "code": code::FORBIDDEN }).to_string());
    }
    let params: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return (
                400,
                json!({ "error": "body must be a JSON object {\"sql\": ..., \"params\": [...]}" }).to_string(),
            )
        }
        Err(e) => return (400, json!({ "error": format!("invalid JSON: {e}") }).to_string()),
    };
    let outcome = sql_params(params).and_then(|(sql, args)| run_sql(db, &sql, &args, caller));
    match outcome {
        Ok(v) => (200, v.to_string()),
        Err(e) => {
            let status = match e.code {
                code::RESULT_TOO_LARGE => 413,
                code::READ_ONLY | code::FORBIDDEN => 403,
                _ => 400,
            };
            (status, json!({ "error": e.message, "code": e.code }).to_string())
        }
    }
}

/// Builds a `stats` result object from named counters.
pub fn stats_object(fields: &[(&str, u64)]) -> Value {
    let mut m = Map::new();
    for (k, v) in fields {
        m.insert((*k).to_owned(), Value::from(*v));
    }
    Value::Object(m)
}

#[cfg(test)]
pub(crate) mod tests;
