/// Monotonic counters kept by the multiplexer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Client WebSocket streams opened.
    pub ws_streams_opened: u64,
    /// HTTP streams opened.
    pub http_streams_opened: u64,
    /// Client messages queued for the backend.
    pub messages_up: u64,
    /// Backend messages delivered to client WebSockets.
    pub messages_down: u64,
    /// Payload bytes of `messages_up`.
    pub bytes_up: u64,
    /// Payload bytes of `messages_down`.
    pub bytes_down: u64,
    /// Upstream messages sent (each a batch of one or more frames).
    pub batches_sent: u64,
    /// Frames inside those batches.
    pub frames_sent: u64,
    /// Upstream messages received.
    pub batches_received: u64,
    /// Frames inside those.
    pub frames_received: u64,
    /// Bytes written to the upstream, framing included.
    pub upstream_bytes_out: u64,
    /// Bytes read from the upstream, framing included.
    pub upstream_bytes_in: u64,
    /// Times an upstream came up because its tenant had none (first connects and
    /// reconnects, every tenant; hand-overs are counted in `handovers`).
    pub backend_connects: u64,
    /// Upstreams that came up for a tenant that had had one before.
    pub backend_reconnects: u64,
    /// Connection attempts started.
    pub connect_attempts: u64,
    /// HTTP requests that timed out (504).
    pub timeouts: u64,
    /// Owner hand-overs completed.
    pub handovers: u64,
    /// Upstreams closed because their bounded (HTTP, scheduled) owner's lifetime was up
    /// and no client was there to take them over.
    pub retirements: u64,
    /// HTTP requests whose context never collected its reply (the context ended first):
    /// forgotten and their tasks dropped.
    pub abandoned_requests: u64,
    /// Times the watchdog declared the upstream dead.
    pub watchdog_trips: u64,
    /// Times an open upstream went down.
    pub backend_disconnects: u64,
    /// Backend frames for streams whose client had left.
    pub dropped_deliveries: u64,
    /// Errors: backend error frames, and whatever the glue counts.
    pub errors: u64,
    /// Clients and requests refused for a full isolate or a caller's connection limit.
    pub refused: u64,
    /// Messages and requests refused for a rate limit.
    pub rate_limited: u64,
    /// Requests that reached the snippet (any route).
    pub requests_handled: u64,
    /// HTTP requests sent to the backend directly because no upstream could carry them.
    pub fallbacks: u64,
    /// Idle upstreams closed to free a slot or after their idle TTL.
    pub pool_evictions: u64,
    /// Streams refused because every upstream slot was busy.
    pub pool_refusals: u64,
    /// Keep-warm pings queued.
    pub keep_warm_pings: u64,
    /// Keep-warm pings answered.
    pub keep_warm_pongs: u64,
    /// Upstreams dropped because the backend did not answer a heartbeat or idle-check ping.
    pub heartbeat_failures: u64,
    /// Text pings sent on upstreams (heartbeat, idle check, keep-warm).
    pub upstream_pings: u64,
    /// Session clients' pings answered by the snippet itself (never forwarded).
    pub edge_pongs: u64,
    /// Session streams re-opened on a new upstream after theirs was lost.
    pub sessions_reattached: u64,
    /// Session streams that waited `REATTACH_MS` for a new upstream in vain.
    pub reattach_timeouts: u64,
}

/// Upper bounds of [`RttHistogram`]'s buckets: Prometheus's default buckets (5 ms to 10 s),
/// in ms for counting and as the `le` label `/__metrics` writes, in seconds. Fixed, so a
/// scrape is comparable with every earlier one and across isolates.
pub const RTT_BUCKETS: [(u64, &str); 11] = [
    (5, "0.005"),
    (10, "0.01"),
    (25, "0.025"),
    (50, "0.05"),
    (100, "0.1"),
    (250, "0.25"),
    (500, "0.5"),
    (1_000, "1"),
    (2_500, "2.5"),
    (5_000, "5"),
    (10_000, "10"),
];

/// Round trips of HTTP requests over an upstream, counted into [`RTT_BUCKETS`] since the
/// isolate started: unlike the recent samples behind the percentiles of `/__stats`, it
/// never forgets, so a scraper can take rates between any two scrapes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RttHistogram {
    /// Samples per bucket, not cumulative: `[i]` counts those above bucket `i - 1`'s bound
    /// and at most bucket `i`'s; the last counts those above every bound.
    counts: [u64; RTT_BUCKETS.len() + 1],
    /// Sum of every sample (ms).
    sum_ms: u64,
    /// Samples counted.
    count: u64,
}

impl RttHistogram {
    /// Counts one round trip of `ms`.
    pub fn record(&mut self, ms: u64) {
        let at = RTT_BUCKETS.iter().position(|(bound, _)| ms <= *bound).unwrap_or(RTT_BUCKETS.len());
        if let Some(c) = self.counts.get_mut(at) {
            *c += 1;
        }
        self.sum_ms = self.sum_ms.saturating_add(ms);
        self.count += 1;
    }

    /// `(le label, samples at most that bound)` for every bucket, cumulative as Prometheus
    /// wants them, `+Inf` (every sample) last.
    pub fn cumulative(&self) -> Vec<(&'static str, u64)> {
        let mut total = 0;
        let labels = RTT_BUCKETS.iter().map(|(_, le)| *le).chain(std::iter::once("+Inf"));
        labels
            .zip(self.counts.iter())
            .map(|(le, n)| {
                total += n;
                (le, total)
            })
            .collect()
    }

    /// Sum of every sample (ms).
    pub fn sum_ms(&self) -> u64 {
        self.sum_ms
    }

    /// Samples counted.
    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_fall_into_the_first_bucket_that_holds_them() {
        let mut h = RttHistogram::default();
        // On a bound (le is "at most"), between two, and past the last.
        for ms in [0, 5, 6, 10, 999, 1_000, 10_000, 10_001, 60_000] {
            h.record(ms);
        }
        let c = h.cumulative();
        assert_eq!(c.len(), RTT_BUCKETS.len() + 1);
        let at = |le: &str| c.iter().find(|(l, _)| *l == le).map(|(_, n)| *n);
        assert_eq!(at("0.005"), Some(2));
        assert_eq!(at("0.01"), Some(4));
        assert_eq!(at("0.5"), Some(4));
        assert_eq!(at("1"), Some(6));
        assert_eq!(at("10"), Some(7));
        assert_eq!(c.last(), Some(&("+Inf", 9)));
        assert!(c.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative: {c:?}");
        assert_eq!((h.count(), h.sum_ms()), (9, 5 + 6 + 10 + 999 + 1_000 + 10_000 + 10_001 + 60_000));
    }
}
