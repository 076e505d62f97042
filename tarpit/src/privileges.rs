//! Dropping the capabilities the running tarpit no longer needs.
//!
//! The unit grants CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (to load and attach the eBPF hook)
//! and CAP_NET_BIND_SERVICE (to bind a port below 1024). All of them are used once, at start;
//! a process facing hostile input all day should hold none of them afterwards. [`drop_after_start`]
//! runs right after the hook is attached and the listeners are bound, before any other thread
//! exists (capabilities are per thread, and threads inherit them), and empties every set.
//!
//! Map lookups on an already open map fd need no capability since Linux 6.5 (the
//! `unprivileged_bpf_disabled` check moved to map creation and program load); on an older
//! kernel that sets that sysctl they need CAP_BPF. The map is probed with no capability in
//! effect, and CAP_BPF is kept (alone) only if the probe is refused.

use caps::{CapSet, Capability, CapsHashSet};

/// Why capabilities could not be dropped.
#[derive(Debug, thiserror::Error)]
#[error("dropping capabilities: {0}")]
pub struct DropError(String);

/// What remains after the drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Capabilities still permitted and effective (empty, or CAP_BPF on an old kernel).
    pub capabilities: Vec<Capability>,
    /// Threads in the process when the drop ran: 1, or other threads kept their sets.
    pub threads: usize,
}

/// Empties every capability set of this thread, keeping CAP_BPF only when `map_probe` (a map
/// lookup, run with no capability in effect) is refused without it. `map_probe` is `None`
/// when the eBPF hook is not in use. `keep_net_admin`: socketless hold puts sockets in TCP
/// repair mode on every hand-over, which needs CAP_NET_ADMIN for the life of the process (its
/// raw sockets are open by now, so CAP_NET_RAW goes).
pub fn drop_after_start(
    map_probe: Option<&dyn Fn() -> Result<(), nix::errno::Errno>>,
    keep_net_admin: bool,
) -> Result<Kept, DropError> {
    let err = |e: caps::errors::CapsError| DropError(e.to_string());
    let none = CapsHashSet::new();
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    caps::set(None, CapSet::Inheritable, &none).map_err(err)?;
    caps::set(None, CapSet::Effective, &none).map_err(err)?;
    let mut keep = CapsHashSet::new();
    if keep_net_admin
        && caps::has_cap(None, CapSet::Permitted, Capability::CAP_NET_ADMIN).map_err(err)?
    {
        keep.insert(Capability::CAP_NET_ADMIN);
        caps::set(None, CapSet::Effective, &keep).map_err(err)?;
    }
    if let Some(probe) = map_probe
        && probe().is_err()
        && caps::has_cap(None, CapSet::Permitted, Capability::CAP_BPF).map_err(err)?
    {
        keep.insert(Capability::CAP_BPF);
        caps::set(None, CapSet::Effective, &keep).map_err(err)?;
        if let Err(errno) = probe() {
            tracing::warn!("the eBPF map refuses lookups even with CAP_BPF: {errno}");
        }
    }
    caps::set(None, CapSet::Permitted, &keep).map_err(err)?;
    let mut capabilities: Vec<Capability> = keep.into_iter().collect();
    capabilities.sort_by_key(|c| c.index());
    Ok(Kept {
        capabilities,
        threads: thread_count(),
    })
}

/// Threads of this process, from /proc (1 when it cannot be read).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |tasks| tasks.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs in a thread of its own, so the test harness's other threads keep their sets.
    #[test]
    fn every_set_is_empty_afterwards_and_a_refused_probe_keeps_only_cap_bpf() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("TARPIT_E2E").is_none(),
                "TARPIT_E2E is set but the test is not root"
            );
            eprintln!("SKIPPED: needs root (TARPIT_E2E=1 makes this a failure)");
            return;
        }
        std::thread::spawn(|| {
            let kept = drop_after_start(None, false).unwrap();
            assert!(kept.capabilities.is_empty());
            for set in [
                CapSet::Effective,
                CapSet::Permitted,
                CapSet::Inheritable,
                CapSet::Ambient,
            ] {
                assert!(caps::read(None, set).unwrap().is_empty(), "{set:?}");
            }
        })
        .join()
        .unwrap();
        // Socketless hold keeps CAP_NET_ADMIN alone.
        std::thread::spawn(|| {
            let kept = drop_after_start(None, true).unwrap();
            assert_eq!(kept.capabilities, vec![Capability::CAP_NET_ADMIN]);
            let effective = caps::read(None, CapSet::Effective).unwrap();
            assert_eq!(
                effective.into_iter().collect::<Vec<_>>(),
                vec![Capability::CAP_NET_ADMIN]
            );
        })
        .join()
        .unwrap();
        std::thread::spawn(|| {
            let refused = || {
                if caps::has_cap(None, CapSet::Effective, Capability::CAP_BPF).unwrap() {
                    Ok(())
                } else {
                    Err(nix::errno::Errno::EPERM)
                }
            };
            let kept = drop_after_start(Some(&refused), false).unwrap();
            assert_eq!(kept.capabilities, vec![Capability::CAP_BPF]);
            let permitted = caps::read(None, CapSet::Permitted).unwrap();
            assert_eq!(
                permitted.into_iter().collect::<Vec<_>>(),
                vec![Capability::CAP_BPF]
            );
        })
        .join()
        .unwrap();
    }
}
