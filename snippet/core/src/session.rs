//! Resumable sessions at the snippet (PROTOCOL.md §14): which client streams carry one,
//! what such a client may send, and what the snippet remembers for it.
//!
//! The snippet does not take part in a session's numbering: it passes envelopes through
//! both ways, answers the client's `Ping` itself so an idle client never reaches the
//! Durable Object, and notes the highest `seq` of the backend's data envelopes it passed
//! on. That position is what it re-attaches the stream with when only its upstream was
//! lost (§14.3): the client then keeps its WebSocket, and the backend replays from there.

use protocol::session::{Envelope, MAX_PING_BYTES};

pub use protocol::session::{Attach, SessionId};

use crate::auth::form_decode;

/// The upgrade's query parameter naming the session: 32 lowercase hex digits.
pub const SESSION_PARAM: &str = "session";

/// The upgrade's query parameter giving the client's position: the highest backend
/// message number it has received, in decimal (0 at first).
pub const RECEIVED_PARAM: &str = "received";

/// The session parameters of a client upgrade's query (`url.search`, with or without
/// its `?`), read as `URLSearchParams` reads them: none, or both well formed and each
/// given once. The error says what is wrong, for a 400.
pub fn from_query(query: &str) -> Result<Option<Attach>, &'static str> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let (mut session, mut received) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match form_decode(name).as_str() {
            SESSION_PARAM => &mut session,
            RECEIVED_PARAM => &mut received,
            _ => continue,
        };
        // Two values leave which one counts to whichever parser reads it: refused.
        if slot.replace(form_decode(value)).is_some() {
            return Err("give session and received once each");
        }
    }
    let (session, received) = match (session, received) {
        (None, None) => return Ok(None),
        (Some(s), Some(r)) => (s, r),
        _ => return Err("session and received go together"),
    };
    let session = SessionId::parse(&session).ok_or("session must be 32 lowercase hex digits")?;
    let received = parse_decimal(&received).ok_or("received must be a whole number below 2^64")?;
    Ok(Some(Attach { session, received }))
}

/// Plain ASCII digits only (`u64::from_str` would take a leading `+`).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What the snippet keeps for a session stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Session {
    /// The session, sent in every `Open` of the stream.
    pub id: SessionId,
    /// The highest `seq` of the backend's data envelopes passed on to the client (at
    /// first, the client's own `received`): the position a re-open attaches with.
    pub delivered: u64,
    /// Its upstream was lost and it waits to be re-opened on the next one, until then
    /// ([`crate::Config::reattach_ms`] after the first loss).
    pub reattach_by: Option<u64>,
}

impl Session {
    pub fn new(attach: Attach) -> Session {
        Session { id: attach.session, delivered: attach.received, reattach_by: None }
    }

    /// The `Attach` its next `Open` carries: always the current position, so a re-open
    /// (after a hand-over or a lost upstream) asks only for what the client lacks.
    pub fn attach(&self) -> Attach {
        Attach { session: self.id, received: self.delivered }
    }

    /// Notes a backend message passed on to the client.
    pub fn passed_on(&mut self, payload: &[u8]) {
        if let Some(seq) = Envelope::data_seq(payload) {
            self.delivered = self.delivered.max(seq);
        }
    }
}

/// What becomes of a client's message on a session stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FromClient {
    /// A data or `Ack` envelope: upstream, unchanged.
    Forward,
    /// A heartbeat: answered here with its `Pong`, never forwarded.
    Ping,
}

/// Classifies one message of a session stream's client, or says why it ends the client
/// (1002): only the envelopes a client sends are accepted, and only as binary messages.
pub(crate) fn from_client(text: bool, payload: &[u8]) -> Result<FromClient, &'static str> {
    if text {
        return Err("a session stream carries binary envelopes only");
    }
    match Envelope::decode(payload) {
        Err(_) => Err("not a session envelope"),
        Ok(Envelope::Ping(body)) if body.len() > MAX_PING_BYTES => Err("ping too long"),
        Ok(Envelope::Ping(_)) => Ok(FromClient::Ping),
        Ok(Envelope::Welcome { .. } | Envelope::Pong(_)) => Err("a client sends no Welcome or Pong"),
        Ok(Envelope::Data { .. } | Envelope::Ack { .. }) => Ok(FromClient::Forward),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(hex: &str) -> SessionId {
        SessionId::parse(hex).expect("hex")
    }

    #[test]
    fn the_query_gives_both_parameters_or_neither() {
        let s = "0123456789abcdef0123456789abcdef";
        let want = Attach { session: id(s), received: 42 };
        assert_eq!(from_query(&format!("?session={s}&received=42")), Ok(Some(want)));
        assert_eq!(from_query(&format!("access_token=x&received=42&session={s}")), Ok(Some(want)));
        assert_eq!(from_query(&format!("?%73ession={s}&received=4%32")), Ok(Some(want)), "names and values decoded");
        assert_eq!(
            from_query(&format!("?session={s}&received=18446744073709551615")).map(|a| a.map(|a| a.received)),
            Ok(Some(u64::MAX))
        );
        assert_eq!(from_query(""), Ok(None));
        assert_eq!(from_query("?access_token=x&sessions=1"), Ok(None));
        for bad in [
            format!("?session={s}"),
            "?received=0".to_owned(),
            format!("?session={}&received=0", s.to_uppercase()),
            format!("?session={}&received=0", &s[..30]),
            format!("?session={s}&received="),
            format!("?session={s}&received=+1"),
            format!("?session={s}&received=-1"),
            format!("?session={s}&received=1.0"),
            format!("?session={s}&received=18446744073709551616"),
            format!("?session={s}&received=1&received=1"),
            format!("?session={s}&session={s}&received=1"),
        ] {
            assert!(from_query(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_client_may_send_data_acks_and_short_pings_in_binary_only() {
        let data = Envelope::Data { text: true, seq: 1, ack: 0, payload: b"hi" }.encode();
        assert_eq!(from_client(false, &data), Ok(FromClient::Forward));
        assert_eq!(from_client(false, &Envelope::Ack { ack: 3 }.encode()), Ok(FromClient::Forward));
        let ping = Envelope::Ping(&[7; MAX_PING_BYTES]).encode();
        assert_eq!(from_client(false, &ping), Ok(FromClient::Ping));
        assert!(from_client(true, &data).is_err(), "text");
        assert!(from_client(false, &Envelope::Ping(&[7; MAX_PING_BYTES + 1]).encode()).is_err(), "long ping");
        assert!(from_client(false, &Envelope::Welcome { resumed: true, ack: 1 }.encode()).is_err());
        assert!(from_client(false, &Envelope::Pong(b"x").encode()).is_err());
        assert!(from_client(false, b"").is_err());
        assert!(from_client(false, b"\x09").is_err());
        assert!(from_client(false, b"\x01\x00").is_err(), "truncated");
    }

    #[test]
    fn the_position_only_moves_forward_and_only_for_data() {
        let mut s = Session::new(Attach { session: id(&"ab".repeat(16)), received: 5 });
        s.passed_on(&Envelope::Data { text: false, seq: 9, ack: 0, payload: b"" }.encode());
        s.passed_on(&Envelope::Data { text: false, seq: 7, ack: 0, payload: b"" }.encode());
        s.passed_on(&Envelope::Welcome { resumed: true, ack: 100 }.encode());
        s.passed_on(&Envelope::Ack { ack: 100 }.encode());
        assert_eq!(s.attach().received, 9);
    }
}
