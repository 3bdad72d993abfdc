//! The object's synchronous key-value storage (`ctx.storage.kv`, SQLite-backed objects
//! only), which workers-rs 0.8.7 does not wrap. Its rows live in a hidden table that the
//! SQL API cannot read or write, whatever the statement: that is why the stream tables
//! live here and not in a SQL table (an application's SQL can never touch them), and why
//! an application may keep its own bookkeeping here too ([`super::MuxServer::kv`]).
//! Synchronous matters as well: a stream table is read and written while one message is
//! handled, with no await in between that would let the next message overtake.

use js_sys::{Array, Function, Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

/// A handle on `storage.kv`. Every call is synchronous and, like any storage call of a
/// Durable Object, part of the object's implicit transaction.
#[derive(Clone)]
pub struct Kv(JsValue);

fn method(target: &JsValue, name: &str) -> Result<Function, String> {
    Reflect::get(target, &name.into())
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok())
        .ok_or_else(|| format!("storage.kv.{name} is missing (needs a SQLite-backed Durable Object)"))
}

fn describe(e: JsValue) -> String {
    e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())).unwrap_or_else(|| format!("{e:?}"))
}

impl Kv {
    /// `storage.kv` of a raw `DurableObjectStorage` object.
    pub fn of(storage: &JsValue) -> Result<Kv, String> {
        let kv = Reflect::get(storage, &"kv".into()).map_err(describe)?;
        if kv.is_undefined() || kv.is_null() {
            return Err("storage.kv is missing (needs a SQLite-backed Durable Object)".into());
        }
        Ok(Kv(kv))
    }

    /// The bytes stored at `key`, if any (values are stored as `Uint8Array`).
    pub fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let v = method(&self.0, "get")?.call1(&self.0, &key.into()).map_err(describe)?;
        Ok(v.dyn_ref::<Uint8Array>().map(Uint8Array::to_vec))
    }

    /// The number stored at `key`, if any.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, String> {
        let v = method(&self.0, "get")?.call1(&self.0, &key.into()).map_err(describe)?;
        Ok(v.as_f64())
    }

    /// Stores `value` at `key`.
    pub fn put(&self, key: &str, value: &JsValue) -> Result<(), String> {
        method(&self.0, "put")?.call2(&self.0, &key.into(), value).map_err(describe).map(drop)
    }

    /// Stores bytes at `key` (a JS-owned copy).
    pub fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<(), String> {
        self.put(key, &Uint8Array::from(bytes).into())
    }

    /// Removes `key`.
    pub fn delete(&self, key: &str) -> Result<(), String> {
        method(&self.0, "delete")?.call1(&self.0, &key.into()).map_err(describe).map(drop)
    }

    /// Every (key, bytes) under `prefix`, in key order. Values that are not bytes are skipped.
    pub fn list_bytes(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        let opts = Object::new();
        Reflect::set(&opts, &"prefix".into(), &prefix.into()).map_err(describe)?;
        let it = method(&self.0, "list")?.call1(&self.0, &opts).map_err(describe)?;
        let mut out = Vec::new();
        let iter = js_sys::try_iter(&it).map_err(describe)?.ok_or("storage.kv.list returned no iterator")?;
        for entry in iter {
            let pair: Array = entry.map_err(describe)?.unchecked_into();
            let key = pair.get(0).as_string().unwrap_or_default();
            if let Some(bytes) = pair.get(1).dyn_ref::<Uint8Array>() {
                out.push((key, bytes.to_vec()));
            }
        }
        Ok(out)
    }
}
