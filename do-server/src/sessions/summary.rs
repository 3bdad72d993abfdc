//! A session's summary row: who it is and where it is attached, written when that
//! changes (begin, attach, detach), not per message: its positions between those writes
//! live in the journal's records.

use protocol::session::SessionId;
use protocol::StreamId;

use super::Session;
use crate::app::Client;
use crate::ids::{ClientId, SocketId};

/// A session's stored summary: `taken:u64 sent:u64 origin:u64 origin_stream:u32
/// at_socket:u64 at_stream:u32 (0, 0 = detached) detached_at:u64 since:u64` then the
/// client's [`Client::encode`]. `since` is the first journal record that can be this
/// session's: an earlier session under the same id (ended, begun anew) left records that
/// another session may still keep, and they are not this one's.
pub(super) fn encode_summary(s: &Session) -> Vec<u8> {
    let (at_socket, at_stream) = s.at.map_or((0, 0), |(so, st)| (so.bits(), st.0));
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&s.taken.to_be_bytes());
    out.extend_from_slice(&s.sent.to_be_bytes());
    out.extend_from_slice(&s.client.id().origin().bits().to_be_bytes());
    out.extend_from_slice(&s.client.id().stream().0.to_be_bytes());
    out.extend_from_slice(&at_socket.to_be_bytes());
    out.extend_from_slice(&at_stream.to_be_bytes());
    out.extend_from_slice(&s.detached_at.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&s.since.to_be_bytes());
    out.extend_from_slice(&s.client.encode());
    out
}

pub(super) type Placed = Option<(SocketId, StreamId)>;

pub(super) fn decode_summary(id: SessionId, b: &[u8], services: &'static [&'static str]) -> Option<(Session, Placed)> {
    let u64_at = |i: usize| Some(u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?));
    let u32_at = |i: usize| Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let (taken, sent) = (u64_at(0)?, u64_at(8)?);
    let origin = ClientId::new(SocketId::from_bits(u64_at(16)?), StreamId(u32_at(24)?));
    let (at_socket, at_stream, detached_at) = (u64_at(28)?, u32_at(36)?, u64_at(40)?);
    let at = (at_stream != 0).then(|| (SocketId::from_bits(at_socket), StreamId(at_stream)));
    let stream = at.map_or(origin.stream(), |(_, st)| st);
    let client = Client::decode(origin, stream, b.get(56..)?, services)?.with_session(id);
    let mut session = Session::new(client, None, taken, sent, u64_at(48)?);
    session.detached_at = (detached_at != 0).then_some(detached_at);
    Some((session, at))
}
