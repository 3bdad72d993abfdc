//! A Durable Object server for snippet-proxy's multiplexed upstream (`protocol/PROTOCOL.md`).
//!
//! The snippet carries many clients over one WebSocket per edge isolate; this crate turns
//! that socket back into clients. An application implements [`App`] — a stream opened
//! (with the caller's [`Identity`]), a message on a stream, an
//! HTTP-like request, a stream closed — and answers through [`Out`]: reply or close on one
//! stream, broadcast to every stream that matches a filter. It never sees a frame.
//!
//! Two layers, like the rest of the project:
//!
//! - the core (always built, no runtime types, tested natively): [`Session`] is one mux
//!   socket's stream table and the handling of each incoming batch — admission by tenant
//!   and expiry, `Ping` → `Pong` in order (the snippet's hand-over barrier), session
//!   errors, reply batches under [`MAX_BATCH_BYTES`] — and its storage form, so a table
//!   survives hibernation;
//! - the operator's view ([`View`], from [`Object::view`]): the upstreams (mux sockets)
//!   connected, the streams on each, and what the object did since it woke, as JSON or
//!   Prometheus text;
//! - `glue` (feature `worker`): `glue::MuxServer`, what a worker-rs Durable Object
//!   calls from `fetch`, `websocket_message`, `websocket_close` and `websocket_error`
//!   (the Hibernation API, attachments, the synchronous KV store). See `README.md`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// Compiled into a Durable Object's wasm, where a panic resets the instance (RUNTIME.md §5).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

mod admit;
mod app;
mod close;
mod frames;
mod ids;
mod object;
mod out;
mod sessions;
pub mod store;
mod table;
#[cfg(test)]
mod vectors;
mod view;

#[cfg(feature = "worker")]
pub mod glue;

pub use admit::{authorized, check_open, check_request, constant_time_eq};
pub use app::{App, Client, Msg, Refusal, MAX_SERVICES};
pub use close::{reciprocal_close_code, sendable_close_code};
pub use frames::MAX_STREAMS;
pub use ids::{ClientId, SocketId};
pub use object::{Action, Counters, Object, Refusals, HANDOVER_GRACE_MS, HANDOVER_WINDOW_MS};
pub use out::{Out, MAX_BATCH_BYTES, MAX_CLOSE_REASON};
pub use protocol::{Identity, Request, Response, StreamId};
pub use sessions::SessionCounters;
pub use view::{SocketView, View, MAX_LISTED_SOCKETS, METRICS_CONTENT_TYPE};
