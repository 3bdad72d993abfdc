//! The object's mux sockets and the clients open on each.

use std::collections::BTreeMap;

use protocol::StreamId;

use crate::app::Client;
use crate::ids::{ClientId, SocketId};

/// One mux socket: the tenant it serves and its clients, by stream id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    pub(crate) tenant: String,
    pub(crate) clients: BTreeMap<StreamId, Client>,
    /// When its last hand-over barrier arrived (ms): for a while after it, its clients
    /// may be re-opened on another socket and move there (PROTOCOL.md §5.2).
    pub(crate) barrier_at: Option<u64>,
    /// Messages (batches) received on it since this instance knew it (not stored).
    pub(crate) messages_in: u64,
    /// Messages (batches) sent on it since this instance knew it (not stored).
    pub(crate) messages_out: u64,
}

/// Every mux socket of the object, and where each client is.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    sockets: BTreeMap<SocketId, Table>,
    /// Where each client is: a session's client may be on another stream id than the
    /// one its id was made from.
    located: BTreeMap<ClientId, (SocketId, StreamId)>,
}

impl Tables {
    pub(crate) fn socket(&self, socket: SocketId) -> Option<&Table> {
        self.sockets.get(&socket)
    }

    pub(crate) fn socket_mut(&mut self, socket: SocketId) -> Option<&mut Table> {
        self.sockets.get_mut(&socket)
    }

    /// The sockets, in id order.
    pub(crate) fn sockets(&self) -> impl Iterator<Item = (SocketId, &Table)> {
        self.sockets.iter().map(|(id, t)| (*id, t))
    }

    /// Adds an empty socket (keeps one that exists).
    pub(crate) fn add_socket(&mut self, socket: SocketId, tenant: &str) {
        self.sockets.entry(socket).or_insert_with(|| Table { tenant: tenant.to_owned(), ..Table::default() });
    }

    /// Removes a socket with its clients.
    pub(crate) fn remove_socket(&mut self, socket: SocketId) -> Option<Table> {
        let table = self.sockets.remove(&socket)?;
        for client in table.clients.values() {
            self.located.remove(&client.id());
        }
        Some(table)
    }

    /// Client `id`, with its socket, if it is open.
    pub(crate) fn find(&self, id: ClientId) -> Option<(SocketId, &Client)> {
        let (socket, stream) = *self.located.get(&id)?;
        let client = self.sockets.get(&socket)?.clients.get(&stream)?;
        Some((socket, client))
    }

    /// Every open client, with its socket, socket by socket in stream order.
    pub(crate) fn clients(&self) -> impl Iterator<Item = (SocketId, &Client)> {
        self.sockets.iter().flat_map(|(s, t)| t.clients.values().map(move |c| (*s, c)))
    }

    /// The client on `socket`'s `stream`.
    pub(crate) fn client(&self, socket: SocketId, stream: StreamId) -> Option<&Client> {
        self.sockets.get(&socket)?.clients.get(&stream)
    }

    /// The client on `socket`'s `stream` (tests).
    #[cfg(test)]
    pub(crate) fn find_by(&self, socket: SocketId, stream: StreamId) -> Option<&Client> {
        self.client(socket, stream)
    }

    /// Puts `client` on `socket` (which must exist), at its stream id.
    pub(crate) fn insert(&mut self, socket: SocketId, client: Client) {
        if let Some(table) = self.sockets.get_mut(&socket) {
            self.located.insert(client.id(), (socket, client.stream));
            table.clients.insert(client.stream, client);
        }
    }

    /// Takes the client off `socket`'s `stream`.
    pub(crate) fn remove(&mut self, socket: SocketId, stream: StreamId) -> Option<Client> {
        let client = self.sockets.get_mut(&socket)?.clients.remove(&stream)?;
        self.located.remove(&client.id());
        Some(client)
    }

    /// Open clients on every socket.
    pub(crate) fn len(&self) -> usize {
        self.located.len()
    }
}
