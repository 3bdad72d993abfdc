//! backend-do's logic without the runtime: everything here runs natively under
//! `cargo test`. The Durable Object glue supplies a [`Db`] (its SQLite storage) and
//! moves bytes; the mux clients are `snippet-proxy-do`'s, with [`Backend`] as the app.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// Compiled into the Durable Object's wasm, where a panic resets the instance (RUNTIME.md §5).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod app;
pub mod authz;
pub mod blob;
pub mod route;
pub mod rpc;
pub mod settings;

pub use app::Backend;
pub use authz::{Caller, Grants};
pub use rpc::{Db, SqlResult};
