//! HTTP/1.x as far as a tarpit needs it: reading request heads, building the drip response, and
//! deciding who the client is behind a proxy. Pure code, no sockets.

pub mod client_addr;
pub mod head;
pub mod proxy_protocol;
pub mod response;
