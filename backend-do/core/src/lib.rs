//! backend-do's logic without the runtime: everything here runs natively under
//! `cargo test`. The Durable Object glue supplies a [`Db`] (its SQLite storage) and
//! moves bytes.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod route;
pub mod rpc;
pub mod session;

pub use rpc::{Db, SqlResult};
pub use session::{Service, Session};
