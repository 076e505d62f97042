//! Which TCP ports other services of this network namespace listen on, asked of the kernel
//! through `sock_diag` (`NETLINK_SOCK_DIAG`, the interface `ss -lnt` uses), so that steering
//! steps aside for them: sshd, the metrics endpoint, a web server started later.
//!
//! Only listening sockets are dumped (the kernel filters by state), so the cost does not grow
//! with the connections the tarpit holds. The netlink socket is opened once at start, before
//! the system-call allow-list is installed; later scans only send and receive on it.

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr};

use super::ports::PortSet;

/// A socket for asking the kernel which TCP sockets listen.
#[derive(Debug)]
pub struct ListenerScanner {
    socket: Socket,
    buffer: Vec<u8>,
}

/// A listening socket the scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// Its port.
    pub port: u16,
    /// Its inode (what `fstat` of its descriptor reports), to tell the tarpit's own apart.
    pub inode: u32,
}

impl ListenerScanner {
    /// Opens the netlink socket.
    pub fn open() -> std::io::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            buffer: vec![0; 64 * 1024],
        })
    }

    /// Every TCP socket listening in this namespace, IPv4 and IPv6.
    pub fn listening(&mut self) -> std::io::Result<Vec<Listening>> {
        let mut found = Vec::new();
        for family in [AF_INET, AF_INET6] {
            self.dump(family, &mut found)?;
        }
        Ok(found)
    }

    /// The ports other services listen on: every listening port except those of sockets whose
    /// inode is in `own` (the tarpit's listeners).
    pub fn ports_of_others(&mut self, own: &[u32]) -> std::io::Result<PortSet> {
        let mut ports = PortSet::empty();
        for socket in self.listening()? {
            if socket.port != 0 && !own.contains(&socket.inode) {
                ports.insert(socket.port);
            }
        }
        Ok(ports)
    }

    fn dump(&mut self, family: u8, found: &mut Vec<Listening>) -> std::io::Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let socket_id = if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        };
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::LISTEN,
                socket_id,
            })
            .into(),
        );
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        loop {
            let size = self.socket.recv(&mut &mut self.buffer[..], 0)?;
            let mut offset = 0;
            while offset < size {
                let message =
                    NetlinkMessage::<SockDiagMessage>::deserialize(&self.buffer[offset..size])
                        .map_err(|e| std::io::Error::other(format!("sock_diag reply: {e}")))?;
                match message.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                        found.push(Listening {
                            port: response.header.socket_id.source_port,
                            inode: response.header.inode,
                        });
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(error) => {
                        return Err(std::io::Error::other(format!("sock_diag: {error:?}")));
                    }
                    _ => {}
                }
                let length = message.header.length as usize;
                if length == 0 {
                    break;
                }
                offset += length;
            }
        }
    }
}

/// The inode of a socket, as sock_diag reports it.
pub fn inode_of(socket: &impl std::os::fd::AsFd) -> std::io::Result<u32> {
    let stat = nix::sys::stat::fstat(socket.as_fd())?;
    Ok(stat.st_ino as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_listener_and_tells_our_own_apart() {
        let mut scanner = ListenerScanner::open().unwrap();
        let theirs = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = std::net::TcpListener::bind("[::1]:0").unwrap();
        let their_port = theirs.local_addr().unwrap().port();
        let our_port = ours.local_addr().unwrap().port();
        let others = scanner
            .ports_of_others(&[inode_of(&ours).unwrap()])
            .unwrap();
        assert!(others.contains(their_port), "an IPv4 listener is found");
        assert!(
            !others.contains(our_port),
            "our own listener is not counted"
        );
        let all = scanner.listening().unwrap();
        assert!(
            all.iter().any(|l| l.port == our_port),
            "an IPv6 one is found"
        );
        // A connected socket is not a listener.
        let client = std::net::TcpStream::connect(theirs.local_addr().unwrap()).unwrap();
        let client_port = client.local_addr().unwrap().port();
        let others = scanner.ports_of_others(&[]).unwrap();
        assert!(!others.contains(client_port));
        drop(theirs);
        let others = scanner.ports_of_others(&[]).unwrap();
        assert!(!others.contains(their_port), "a closed listener is gone");
    }
}
