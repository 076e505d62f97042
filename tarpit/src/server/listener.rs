//! Listening sockets: one per worker, all bound to the same address with SO_REUSEPORT so the
//! kernel spreads incoming connections over the workers without any shared accept lock.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage, bind,
    getsockname, listen, setsockopt, socket, sockopt,
};

/// Binds `count` listeners to `addr`. When `addr` has port 0 the first listener picks a port and
/// the others bind that same port, so a test can ask for "any free port". `peer_timeout` is set
/// on the listeners ([`set_peer_timeout`]): accepted sockets inherit it, so accept costs no
/// extra syscalls for it. `dual_stack` (sk_lookup steering, which may hand these listeners
/// IPv4 and IPv6 connections alike): the sockets are IPv6 without `IPV6_V6ONLY`, an IPv4
/// address bound in its IPv4-mapped form, so plain connections to `addr` still arrive.
pub fn bind_all(
    addr: SocketAddr,
    count: usize,
    peer_timeout: std::time::Duration,
    dual_stack: bool,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let addr = match addr {
        SocketAddr::V4(v4) if dual_stack => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        other => other,
    };
    let first = bind_one(addr, peer_timeout, dual_stack)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind_one(bound, peer_timeout, dual_stack)?);
    }
    Ok(listeners)
}

fn bind_one(
    addr: SocketAddr,
    peer_timeout: std::time::Duration,
    dual_stack: bool,
) -> std::io::Result<std::net::TcpListener> {
    let family = match addr.ip() {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd: OwnedFd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    if dual_stack && family == AddressFamily::Inet6 {
        setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
    }
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    set_peer_timeout(&fd, peer_timeout)?;
    set_save_syn(&fd)?;
    match addr {
        SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?,
        SocketAddr::V6(v6) => bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?,
    }
    // SOMAXCONN (4096 on current kernels): bursts of scanner connects queue instead of failing.
    listen(&fd, Backlog::MAXCONN)?;
    Ok(std::net::TcpListener::from(fd))
}

/// The local address of an accepted socket (the address and port the client reached after any
/// NAT), read with getsockname.
pub fn local_addr(fd: &impl AsRawFd) -> std::io::Result<SocketAddr> {
    let storage: SockaddrStorage = getsockname(fd.as_raw_fd())?;
    if let Some(v4) = storage.as_sockaddr_in() {
        return Ok(SocketAddr::from(*v4));
    }
    if let Some(v6) = storage.as_sockaddr_in6() {
        return Ok(SocketAddr::from(*v6));
    }
    Err(std::io::Error::other("socket is not an IP socket"))
}

/// The local address every socket accepted on a listener bound to `listen` has, when that is
/// known without asking: a listener bound to one address (not `0.0.0.0` or `::`) only receives
/// connections to that address and port, whatever NAT did before, unless sk_lookup `steering`
/// hands it connections to any address. Then [`local_addr`] (a getsockname per connection) is
/// not needed: one system call less on every accept.
pub fn fixed_local_addr(listen: SocketAddr, steering: bool) -> Option<SocketAddr> {
    (!steering && !listen.ip().is_unspecified()).then_some(listen)
}

/// Makes a vanished peer (no FIN, no RST: a scanner that died or was firewalled) end the
/// connection within `timeout`: TCP_USER_TIMEOUT bounds how long sent data may stay
/// unacknowledged (our drip), and keepalive probes cover the idle phases. The kernel then
/// fails the next read or write with ETIMEDOUT. Set on a listener, accepted sockets inherit it.
fn set_peer_timeout(fd: &impl AsRawFd, timeout: std::time::Duration) -> std::io::Result<()> {
    use std::os::fd::BorrowedFd;
    // SAFETY: the caller's socket stays open for the duration of this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    let millis = timeout.as_millis().clamp(1, u32::MAX as u128) as u32;
    let idle = (timeout.as_secs() as u32 / 3).max(1);
    setsockopt(&fd, sockopt::TcpUserTimeout, &millis)?;
    setsockopt(&fd, sockopt::KeepAlive, &true)?;
    setsockopt(&fd, sockopt::TcpKeepIdle, &idle)?;
    setsockopt(&fd, sockopt::TcpKeepInterval, &idle.div_ceil(3).max(1))?;
    setsockopt(&fd, sockopt::TcpKeepCount, &3)?;
    Ok(())
}

/// Asks the kernel to keep each incoming SYN's IP and TCP headers (`TCP_SAVE_SYN`, Linux 4.2)
/// until [`saved_syn`] reads them: the SYN fingerprint. Set on a listener, it applies to every
/// connection it accepts.
fn set_save_syn(fd: &impl AsRawFd) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and a pointer to an int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SAVE_SYN,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The client's SYN, parsed (`TCP_SAVED_SYN`). Reading it also frees the kernel's copy, so it
/// is read once per accepted connection, fingerprint wanted or not. `None` when the kernel kept
/// none (a listener without `TCP_SAVE_SYN`) or the headers are not IPv4/IPv6 + TCP.
pub fn saved_syn(fd: &impl AsRawFd) -> Option<crate::fingerprint::SynFields> {
    // IPv6 header (40) + the largest TCP header (60), with room to spare.
    let mut buf = [0u8; 128];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: a valid socket; the kernel writes at most `len` bytes into `buf` and sets `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SAVED_SYN,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    crate::fingerprint::syn::parse(buf.get(..len as usize)?)
}

/// The destination the client asked for before NAT, as conntrack recorded it
/// (`SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`). `None` when conntrack has no entry (no
/// netfilter NAT or conntrack in this namespace) or the address family is not IP.
pub fn original_dst(fd: &impl AsRawFd, local: SocketAddr) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::BorrowedFd;
    // SAFETY: the caller's socket stays open for the duration of this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    if local.ip().to_canonical().is_ipv4() {
        // IPv4, or IPv4-mapped on a dual-stack socket: conntrack keeps it as IPv4.
        let addr = nix::sys::socket::getsockopt(&fd, sockopt::OriginalDst).ok()?;
        let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        Some(SocketAddr::V4(SocketAddrV4::new(
            ip,
            u16::from_be(addr.sin_port),
        )))
    } else {
        let addr = nix::sys::socket::getsockopt(&fd, sockopt::Ip6tOriginalDst).ok()?;
        let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
        Some(SocketAddr::V6(SocketAddrV6::new(
            ip,
            u16::from_be(addr.sin6_port),
            0,
            0,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// One plain listener on `addr` (peer timeout 7 s, not dual-stack).
    fn one_listener(addr: &str) -> std::net::TcpListener {
        let mut listeners =
            bind_all(addr.parse().unwrap(), 1, Duration::from_secs(7), false).unwrap();
        listeners.remove(0)
    }

    #[test]
    fn accepted_sockets_inherit_the_peer_timeout_from_the_listener() {
        let listener = one_listener("127.0.0.1:0");
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(
            nix::sys::socket::getsockopt(&accepted, sockopt::TcpUserTimeout).unwrap(),
            7000
        );
        assert!(nix::sys::socket::getsockopt(&accepted, sockopt::KeepAlive).unwrap());
        assert_eq!(
            nix::sys::socket::getsockopt(&accepted, sockopt::TcpKeepIdle).unwrap(),
            2
        );
    }

    #[test]
    fn a_listener_bound_to_one_address_accepts_only_sockets_with_that_local_address() {
        // Bound to one address: every accepted socket's getsockname is the listener's.
        let one = one_listener("127.0.0.1:0");
        let bound = one.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(bound).unwrap();
        let (accepted, _) = one.accept().unwrap();
        assert_eq!(
            fixed_local_addr(bound, false),
            Some(local_addr(&accepted).unwrap())
        );
        // Bound to every address: the address a client reached is known only from the socket.
        let any = one_listener("0.0.0.0:0");
        let port = any.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.3", port)).unwrap();
        let (accepted, _) = any.accept().unwrap();
        assert_eq!(fixed_local_addr(any.local_addr().unwrap(), false), None);
        assert_eq!(
            local_addr(&accepted).unwrap(),
            SocketAddr::from(([127, 0, 0, 3], port))
        );
        // Steering hands even a one-address listener connections to other addresses.
        assert_eq!(fixed_local_addr(bound, true), None);
        assert_eq!(fixed_local_addr("[::]:80".parse().unwrap(), false), None);
    }

    #[test]
    fn accepted_sockets_give_their_syn_once() {
        let listener = one_listener("127.0.0.1:0");
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let syn = saved_syn(&accepted).expect("the listener saved the SYN");
        assert_eq!((syn.ip_version, syn.ttl, syn.df), (4, 64, Some(true)));
        assert!(syn.mss.is_some(), "Linux always sends MSS");
        assert_eq!(saved_syn(&accepted), None, "reading frees the saved SYN");
    }

    #[test]
    fn several_listeners_share_one_ephemeral_port() {
        let listeners = bind_all(
            "127.0.0.1:0".parse().unwrap(),
            3,
            Duration::from_secs(60),
            false,
        )
        .unwrap();
        let port = listeners[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        for l in &listeners {
            assert_eq!(l.local_addr().unwrap().port(), port);
        }
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert_eq!(local_addr(&client).unwrap(), client.local_addr().unwrap());
    }

    #[test]
    fn dual_stack_listeners_keep_their_ipv4_address() {
        let any_port = "127.0.0.1:0".parse().unwrap();
        let listeners = bind_all(any_port, 1, Duration::from_secs(60), true).unwrap();
        let bound = listeners[0].local_addr().unwrap();
        assert_eq!(bound.ip(), "::ffff:127.0.0.1".parse::<IpAddr>().unwrap());
        assert!(!nix::sys::socket::getsockopt(&listeners[0], sockopt::Ipv6V6Only).unwrap());
        // A plain IPv4 client still reaches it; the accepted socket names the IPv4 address.
        let _client = std::net::TcpStream::connect(("127.0.0.1", bound.port())).unwrap();
        let (accepted, _) = listeners[0].accept().unwrap();
        assert_eq!(
            local_addr(&accepted).unwrap().ip().to_canonical(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ipv6_loopback_binds() {
        let listener = one_listener("[::1]:0");
        assert!(listener.local_addr().unwrap().is_ipv6());
    }
}
