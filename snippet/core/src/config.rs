/// Limits and switches of the multiplexer. Every limit has a reason; the glue may
/// override each from a wrangler var.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest single client message or HTTP body. 1 MiB: Cloudflare's WebSocket limit is
    /// 32 MiB, but one huge message blocks every other stream's frames behind it on the
    /// shared socket (head-of-line blocking), so the proxy keeps messages small.
    pub max_message_bytes: usize,
    /// Most open streams per isolate. Each holds queues and a request context; 10,000
    /// keeps an isolate well inside its 128 MB memory even with full queues.
    pub max_streams: usize,
    /// Bytes one stream may have queued for the upstream: one chatty client cannot fill
    /// the isolate's memory. Past it the client gets backpressure (1013 / 503).
    pub max_queued_bytes_per_stream: usize,
    /// Bytes all streams together may have queued for the upstream.
    pub max_queued_bytes: usize,
    /// Put several frames in one upstream message when they are queued together.
    pub batching: bool,
    /// Upper bound of a batch in bytes: large enough to amortise the per-message cost,
    /// small enough that the backend is never handed a huge message at once.
    pub max_batch_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_bytes: 1024 * 1024,
            max_streams: 10_000,
            max_queued_bytes_per_stream: 4 * 1024 * 1024,
            max_queued_bytes: 32 * 1024 * 1024,
            batching: true,
            max_batch_bytes: 256 * 1024,
        }
    }
}
