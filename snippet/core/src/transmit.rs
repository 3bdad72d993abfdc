//! What goes out on an upstream and what comes back: batches built at transmit time,
//! and the frames the backend sends routed to their streams.

use protocol::{Close, ErrorFrame, FrameKind, Response, StreamId};

use crate::idmap::IdMap;
use crate::link::{barrier_token, is_barrier_pong, Link, Probe, UpstreamId, MAX_PROBES_OUT, PROBE_PING, PROBE_PONG};
use crate::stream::{encode_out, Out, Role, Stream};
use crate::{Action, Delivery, Mux};

/// What a pump does next with its upstream, from [`Mux::poll_transmit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Send this as one binary WebSocket message.
    Message(Vec<u8>),
    /// Send this as one text WebSocket message: a heartbeat, idle check or keep-warm
    /// `ping`, which the backend's runtime answers with `pong` without waking the object.
    Text(&'static str),
    /// Close the socket with this code and reason, and stop: the core is done with it.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: &'static str,
    },
}

/// Whether a link's open connection has anything it may send now. Client frames wait
/// while the old connection drains; requests and session frames do not.
pub(crate) fn wants_transmit(link: &Link, streams: &IdMap<StreamId, Stream>) -> bool {
    if link.up().is_none() {
        return false;
    }
    if !link.pongs.is_empty() || !link.probes_due.is_empty() {
        return true;
    }
    if !link.held() {
        return !link.ready.is_empty();
    }
    link.ready.iter().any(|id| streams.get(id).is_some_and(|s| !s.is_client()))
}

impl Mux {
    /// What upstream `id`'s pump does next: a batch to send, a close, or nothing (sleep
    /// until woken).
    ///
    /// With batching on, takes one frame per stream in round-robin turns until the
    /// batch would exceed [`crate::Config::max_batch_bytes`] (a lone frame may exceed
    /// it). With batching off, every message holds one frame. A draining connection
    /// only ever carries its barrier ping.
    pub fn poll_transmit(&mut self, id: UpstreamId, now: u64) -> Option<Transmit> {
        if let Some((code, reason, _)) = self.closing.remove(&id) {
            return Some(Transmit::Close { code, reason });
        }
        let Some(tenant) = self.link_of(id) else {
            // Evicted or abandoned while its pump slept.
            return Some(Transmit::Close { code: 1000, reason: "no longer needed" });
        };
        let link = self.links.get_mut(&tenant)?;
        link.wake_sent = false;
        if let Some(d) = link.drain.as_mut().filter(|d| d.id == id) {
            if d.barrier_sent {
                return None;
            }
            d.barrier_sent = true;
            let token = barrier_token(id);
            return Some(Transmit::Message(protocol::single_frame_message(FrameKind::Ping, StreamId::SESSION, &token)));
        }
        if link.up().map(|(up, _)| up) != Some(id) || !wants_transmit(link, &self.streams) {
            return None;
        }
        // A probe is a message of its own (text), sent first: it asks whether the
        // connection is alive, and waits behind nothing.
        if let Some(probe) = link.probes_due.pop_front() {
            if link.probes_out.len() >= MAX_PROBES_OUT {
                link.probes_out.pop_front();
            }
            link.probes_out.push_back((id, probe));
            link.pending_since = wants_transmit(link, &self.streams).then_some(now);
            self.counters.upstream_pings += 1;
            return Some(Transmit::Text(PROBE_PING));
        }
        let limit = if self.cfg.batching { self.cfg.max_batch_bytes } else { 0 };
        let mut msg = Vec::new();
        protocol::begin_message(&mut msg);
        let mut frames = 0u64;
        while let Some(payload) = link.pongs.front() {
            if frames > 0 && msg.len() + protocol::frame_len(payload.len()) > limit {
                break;
            }
            let _ = protocol::encode_frame(&mut msg, FrameKind::Pong, StreamId::SESSION, payload);
            link.pongs.pop_front();
            frames += 1;
        }
        // Held streams keep their turn: set aside, then put back in front, in order.
        let held = link.held();
        let mut set_aside = Vec::new();
        let mut finished = Vec::new();
        let mut failed = Vec::new();
        let mut sent_data = false;
        while let Some(&sid) = link.ready.front() {
            let Some(stream) = self.streams.get_mut(&sid) else {
                link.ready.pop_front();
                continue;
            };
            if held && stream.is_client() {
                set_aside.push(sid);
                link.ready.pop_front();
                continue;
            }
            let Some((_, size)) = stream.outbox.front() else {
                link.ready.pop_front();
                continue;
            };
            let size = *size;
            if frames > 0 && msg.len() + size > limit {
                break;
            }
            link.ready.pop_front();
            let Some((out, _)) = stream.outbox.pop_front() else { continue };
            stream.outbox_bytes -= size;
            self.queued_bytes -= size;
            if encode_out(&mut msg, sid, &out, stream.client()) {
                frames += 1;
                sent_data = true;
                match (&mut stream.role, &out) {
                    (Role::Request(p), Out::Request(_)) => p.sent = Some((id, now)),
                    (Role::Client(c), Out::Open) => {
                        c.on = Some(id);
                        // A session that waited for a new upstream has one again.
                        if let Some(t) = c.session.as_mut().and_then(|s| s.reattach_by.take()) {
                            self.reattach.remove(&(t, sid));
                            self.counters.sessions_reattached += 1;
                        }
                    }
                    _ => {}
                }
            } else {
                failed.push(sid);
            }
            if stream.outbox.is_empty() {
                if stream.detached {
                    finished.push(sid);
                }
            } else {
                link.ready.push_back(sid);
            }
        }
        for sid in set_aside.into_iter().rev() {
            link.ready.push_front(sid);
        }
        if sent_data {
            link.unanswered_since.get_or_insert(now);
        }
        // The watchdog measures how long sendable frames wait for a transmit.
        link.pending_since = wants_transmit(link, &self.streams).then_some(now);
        for sid in finished {
            self.forget(sid, now);
        }
        // A departing client's Close was the last thing an expired owner's link carried.
        self.retire_if_unwanted(&tenant, now);
        for sid in failed {
            self.fail_stream(sid, "a frame for this stream could not be encoded (too large for a message)", now);
        }
        if frames == 0 {
            return None;
        }
        self.counters.batches_sent += 1;
        self.counters.frames_sent += frames;
        self.counters.upstream_bytes_out += msg.len() as u64;
        Some(Transmit::Message(msg))
    }

    /// One stream fails in the proxy; the rest carry on.
    fn fail_stream(&mut self, id: StreamId, why: &str, now: u64) {
        let d = match self.streams.get(&id).map(Stream::is_client) {
            Some(true) => Delivery::Aborted { code: 1011, reason: "proxy error", detail: why.to_owned() },
            Some(false) => Delivery::Failed { status: 500, reason: "proxy error", detail: why.to_owned() },
            None => return,
        };
        self.counters.errors += 1;
        self.deliver(id, d, now);
    }

    /// Feeds one message received on upstream `id`. Frames for unknown or departed
    /// streams are dropped (and counted). A malformed message, or a session-level error
    /// from the backend, ends the connection: nothing after it can be trusted to be
    /// framed right or answered, so every stream on it hears its fate and the pump
    /// closes the socket with 1002.
    pub fn handle_upstream_message(&mut self, id: UpstreamId, msg: &[u8], now: u64) {
        let Some(tenant) = self.link_of(id) else { return };
        self.counters.upstream_bytes_in += msg.len() as u64;
        self.counters.batches_received += 1;
        self.heard(&tenant, now);
        if let Err(e) = self.route_frames(&tenant, id, msg, now) {
            self.end_upstream(id, 1002, "protocol error", &format!("malformed message from the backend: {e}"), now);
        }
    }

    /// Feeds one text message received on upstream `id`. The runtime's `pong` answers a
    /// probe ([`Transmit::Text`]); anything else is read as the bytes of a batch, as a
    /// backend that sends text has always been read (PROTOCOL.md §1).
    pub fn handle_upstream_text(&mut self, id: UpstreamId, text: &[u8], now: u64) {
        if text != PROBE_PONG.as_bytes() {
            return self.handle_upstream_message(id, text, now);
        }
        let Some(tenant) = self.link_of(id) else { return };
        self.counters.upstream_bytes_in += text.len() as u64;
        self.heard(&tenant, now);
        let Some(link) = self.links.get_mut(&tenant) else { return };
        let Some(at) = link.probes_out.iter().position(|(on, _)| *on == id) else { return };
        if let Some((_, Probe::Warm)) = link.probes_out.remove(at) {
            self.counters.keep_warm_pongs += 1;
        }
    }

    /// Something arrived from `tenant`'s backend: it is there (the heartbeat's and the
    /// idle check's question); the heartbeat's clock restarts for requests still owed.
    fn heard(&mut self, tenant: &str, now: u64) {
        if let Some(link) = self.links.get_mut(tenant) {
            link.unanswered_since = (link.requests > 0).then_some(now);
            link.heartbeat_sent = None;
            link.last_heard = now;
        }
    }

    fn route_frames(
        &mut self,
        tenant: &str,
        id: UpstreamId,
        msg: &[u8],
        now: u64,
    ) -> Result<(), protocol::DecodeError> {
        for frame in protocol::decode_message(msg)? {
            let frame = frame?;
            self.counters.frames_received += 1;
            let delivery = match frame.kind {
                // A session client reads envelopes, which are binary messages, whatever
                // kind of frame the backend carried one in.
                FrameKind::Text if self.is_session(frame.stream) => Delivery::Binary(frame.payload.to_vec()),
                FrameKind::Text => match std::str::from_utf8(frame.payload) {
                    Ok(s) => Delivery::Text(s.to_owned()),
                    Err(_) => Delivery::Binary(frame.payload.to_vec()),
                },
                FrameKind::Binary => Delivery::Binary(frame.payload.to_vec()),
                FrameKind::Close => Delivery::Close(Close::decode(frame.payload)?),
                FrameKind::Response => {
                    self.sample_rtt(tenant, frame.stream, now);
                    Delivery::Response(Response::decode(frame.payload)?)
                }
                FrameKind::Error if frame.stream == StreamId::SESSION => {
                    // The backend could not read (part of) what was sent — e.g. the other
                    // protocol version during a deploy. Which frames it dropped is unknown.
                    let e = ErrorFrame::decode(frame.payload)?;
                    let why = format!("backend session error {}: {}", e.code, e.message);
                    self.end_upstream(id, 1002, "protocol error", &why, now);
                    return Ok(());
                }
                FrameKind::Error => {
                    let e = ErrorFrame::decode(frame.payload)?;
                    self.counters.errors += 1;
                    if let Some(link) = self.links.get_mut(tenant) {
                        link.errors += 1;
                    }
                    self.stream_error(frame.stream, e)
                }
                FrameKind::Ping => {
                    self.queue_pong(tenant, frame.payload.to_vec(), now);
                    continue;
                }
                FrameKind::Pong if frame.stream == StreamId::SESSION => {
                    if is_barrier_pong(frame.payload, id) {
                        self.barrier_returned(tenant, id, now);
                    }
                    continue;
                }
                FrameKind::Pong | FrameKind::Open | FrameKind::Request => continue,
            };
            self.deliver(frame.stream, delivery, now);
        }
        Ok(())
    }

    fn sample_rtt(&mut self, tenant: &str, stream: StreamId, now: u64) {
        let sent = match self.streams.get(&stream).map(|s| &s.role) {
            Some(Role::Request(p)) => p.sent,
            _ => None,
        };
        let Some((_, at)) = sent else { return };
        let sample = now.saturating_sub(at);
        self.push_rtt(sample);
        if let Some(link) = self.links.get_mut(tenant) {
            link.push_rtt(sample);
        }
    }

    /// Queues the answer to the backend's `Ping` on `tenant`'s link and wakes its pump.
    fn queue_pong(&mut self, tenant: &str, payload: Vec<u8>, now: u64) {
        if let Some(link) = self.links.get_mut(tenant) {
            link.pongs.push_back(payload);
        }
        self.became_sendable(tenant, now);
    }

    /// Queues a text `ping` on `tenant`'s link and wakes its pump.
    pub(crate) fn queue_probe(&mut self, tenant: &str, probe: Probe, now: u64) {
        if let Some(link) = self.links.get_mut(tenant) {
            link.probes_due.push_back(probe);
        }
        self.became_sendable(tenant, now);
    }

    /// The backend refused a stream. Clients get a close code (or status) that says what
    /// kind of refusal it was; the backend's own message goes to the log.
    fn stream_error(&mut self, id: StreamId, e: ErrorFrame) -> Delivery {
        let (code, reason) = protocol::facts::error_close(e.code);
        let code = code.get();
        let detail = format!("backend refused stream {id} ({}): {}", e.code, e.message);
        match self.streams.get(&id).map(Stream::is_client) {
            Some(false) => Delivery::Failed { status: e.code.max(400), reason, detail },
            _ => Delivery::Aborted { code, reason, detail },
        }
    }

    /// Ends connection `id` from the core's side: every stream on it hears its fate,
    /// and its pump closes the socket with `code`.
    pub(crate) fn end_upstream(&mut self, id: UpstreamId, code: u16, reason: &'static str, why: &str, now: u64) {
        self.link_lost(id, why, now);
        self.closing.insert(id, (code, reason, now));
        self.actions.push_back(Action::WakeUpstream(id));
    }
}
