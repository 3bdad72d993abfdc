//! Close codes as the object uses them, all from the protocol's one table
//! (`protocol::facts`).

use protocol::facts::CloseCode;

pub(crate) use protocol::facts::{
    ends_session, error_close, CLIENT_LOST, CLIENT_REPLACED, SESSION_EXPIRED, SESSION_MOVED,
};

/// The code an application's close is sent with: the one it gave if a close frame may
/// carry it and a client accepts it, else 1000.
pub fn sendable_close_code(code: u16) -> u16 {
    let code = CloseCode::new(code);
    if code.is_allowed() {
        code.get()
    } else {
        CloseCode::NORMAL.get()
    }
}

/// The close code to answer a peer's close with: the same, except the codes a close
/// frame may not carry, which become 1000.
pub fn reciprocal_close_code(code: usize) -> u16 {
    u16::try_from(code).map_or(CloseCode::NORMAL, |c| CloseCode::new(c).sendable()).get()
}
