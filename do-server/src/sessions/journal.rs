//! How sessions reach storage cheaply: one **record** per input of the object, not rows
//! per session and per message. Storage rows are billed by the row written (far more
//! than an incoming message costs), so a broadcast to a hundred sessions must not write
//! hundreds of rows.
//!
//! A record holds, for one input, every session's new positions (the last client message
//! taken, the last message sent) and every message sent in a session, each payload once
//! with the sessions and numbers it went to (a broadcast is one payload). A record is
//! deleted once nothing in it is needed: each of its messages acknowledged, dropped by the
//! replay limits or its session ended, and each of its positions superseded by a later
//! record or by the session's summary row. So an echo costs one row written and, later,
//! one deleted; a broadcast the same, however many it reaches.

use std::rc::Rc;

use protocol::session::SessionId;

/// Largest record before the input's next messages start another: well below what one
/// stored value may hold (2 MiB), so a busy input never fails to be stored.
pub(crate) const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// One message of a record: its payload once, and where it went.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) text: bool,
    pub(crate) at: u64,
    pub(crate) payload: Rc<[u8]>,
    pub(crate) to: Vec<(SessionId, u64)>,
}

/// What one record says.
#[derive(Debug, Clone, Default)]
pub(crate) struct Record {
    /// Sessions' positions after the input: (session, taken, sent).
    pub(crate) positions: Vec<(SessionId, u64, u64)>,
    pub(crate) entries: Vec<Entry>,
}

impl Record {
    /// Where a message of `payload` for `session` goes: with the last entry if it is the
    /// same message (a broadcast's next recipient), else a new entry.
    pub(crate) fn add(&mut self, session: SessionId, seq: u64, text: bool, at: u64, payload: &[u8]) -> Rc<[u8]> {
        if let Some(last) = self.entries.last_mut().filter(|e| e.text == text && *e.payload == *payload) {
            last.to.push((session, seq));
            return Rc::clone(&last.payload);
        }
        let payload: Rc<[u8]> = Rc::from(payload);
        self.entries.push(Entry { text, at, payload: Rc::clone(&payload), to: vec![(session, seq)] });
        payload
    }

    /// Its encoded size so far (close enough to split on).
    pub(crate) fn size(&self) -> usize {
        self.positions.len() * 32 + self.entries.iter().map(|e| 17 + e.payload.len() + 24 * e.to.len()).sum::<usize>()
    }

    /// `positions:u32 (session:16 taken:u64 sent:u64)* entries:u32 (text:u8 at:u64
    /// len:u32 payload to:u32 (session:16 seq:u64)*)*`, big-endian.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size() + 8);
        out.extend_from_slice(&(self.positions.len() as u32).to_be_bytes());
        for (s, taken, sent) in &self.positions {
            out.extend_from_slice(s.as_bytes());
            out.extend_from_slice(&taken.to_be_bytes());
            out.extend_from_slice(&sent.to_be_bytes());
        }
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            out.push(u8::from(e.text));
            out.extend_from_slice(&e.at.to_be_bytes());
            out.extend_from_slice(&(e.payload.len() as u32).to_be_bytes());
            out.extend_from_slice(&e.payload);
            out.extend_from_slice(&(e.to.len() as u32).to_be_bytes());
            for (s, seq) in &e.to {
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
            }
        }
        out
    }

    /// Reads [`Record::encode`]'s output; `None` if malformed.
    pub(crate) fn decode(b: &[u8]) -> Option<Record> {
        let mut r = Cursor { b, at: 0 };
        let mut record = Record::default();
        for _ in 0..r.u32()? {
            record.positions.push((r.session()?, r.u64()?, r.u64()?));
        }
        for _ in 0..r.u32()? {
            let (text, at, len) = (r.take(1)?.first()? == &1, r.u64()?, r.u32()? as usize);
            let payload: Rc<[u8]> = Rc::from(r.take(len)?);
            let mut to = Vec::new();
            for _ in 0..r.u32()? {
                to.push((r.session()?, r.u64()?));
            }
            record.entries.push(Entry { text, at, payload, to });
        }
        (r.at == b.len()).then_some(record)
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn session(&mut self) -> Option<SessionId> {
        Some(SessionId::from_bytes(self.take(16)?.try_into().ok()?))
    }
}

/// What a stored record still holds: messages not yet acknowledged (or dropped), and
/// sessions whose latest positions are in it. At zero and zero it is deleted.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Holds {
    pub(crate) messages: usize,
    pub(crate) positions: usize,
}

impl Holds {
    pub(crate) fn empty(&self) -> bool {
        self.messages == 0 && self.positions == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_a_broadcast_is_one_payload() {
        let (a, b) = (SessionId::from_bytes([1; 16]), SessionId::from_bytes([2; 16]));
        let mut r = Record::default();
        r.positions.push((a, 3, 7));
        r.add(a, 7, true, 9, b"hi");
        r.add(b, 1, true, 9, b"hi");
        r.add(b, 2, false, 9, &[0, 1]);
        assert_eq!(r.entries.len(), 2, "the broadcast's payload is stored once");
        let back = Record::decode(&r.encode()).expect("decodes");
        assert_eq!(back.positions, r.positions);
        assert_eq!(back.entries.len(), 2);
        assert_eq!(back.entries[0].to, vec![(a, 7), (b, 1)]);
        assert_eq!(&*back.entries[1].payload, &[0, 1]);
        assert!(Record::decode(&r.encode()[..10]).is_none());
        let mut long = r.encode();
        long.push(0);
        assert!(Record::decode(&long).is_none());
    }
}
