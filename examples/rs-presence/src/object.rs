//! The Durable Object: one presence room per tenant. All it adds to a worker-rs object
//! is a [`MuxServer`] and one call in each handler; the room itself is [`Room`].

use protocol::Identity;
use snippet_proxy_do::glue::MuxServer;
use worker::*;

use crate::room::Room;
use crate::{json_error, route, Endpoint};

/// One tenant's room.
#[durable_object]
pub struct Presence {
    /// The snippet's mux sockets and the app. Built in the constructor, which runs again
    /// after every wake from hibernation: the server reads its clients back from storage.
    mux: MuxServer<Room>,
    /// The token the snippet's upgrade carries (`BACKEND_TOKEN`; the Worker checked it
    /// already, the server checks it again on accepting).
    token: String,
}

impl DurableObject for Presence {
    fn new(state: State, env: Env) -> Self {
        let token = env.secret("BACKEND_TOKEN").map(|s| s.to_string()).unwrap_or_default();
        Presence { mux: MuxServer::new(state, Room), token }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        let Some((tenant, endpoint)) = route(&path) else {
            return json_error(404, "not found");
        };
        match endpoint {
            // Bearer check (401), upgrade check (426), then a hibernatable socket.
            Endpoint::Mux => self.mux.accept(&req, &self.token, tenant),
            // Plain HTTP: the snippet's fallback when it has no upstream, or an operator.
            // Answered by the same `Room::on_request`, after the same admission.
            // The caller is the snippet's `X-Snippet-Identity`, or the token holder.
            Endpoint::Rpc => self.mux.fetch(&mut req, tenant, "/rpc", operator()).await,
            // The operator's view (the Worker let only the token's holders through).
            Endpoint::Stats => self.mux.view_response(false),
        }
    }

    // Every socket this object accepts is a mux socket, so `message` never hands one back
    // (it would be `Ok(Some(msg))`), and `close` and `error` always handle theirs.
    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
        self.mux.message(&ws, message).map(drop)
    }

    async fn websocket_close(&self, ws: WebSocket, code: usize, reason: String, _was_clean: bool) -> Result<()> {
        self.mux.close(&ws, code, &reason);
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: Error) -> Result<()> {
        self.mux.error(&ws);
        Ok(())
    }
}

/// The caller of plain HTTP without the snippet's identity header: the backend token's
/// holder, an operator of every tenant.
fn operator() -> Identity {
    Identity { subject: "operator".into(), tenant: protocol::ANY_TENANT.into(), ..Identity::default() }
}
