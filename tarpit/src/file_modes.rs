//! What the tarpit writes (the database, the JSON log, exports, `.pre-migration` copies, state
//! files) holds everything scanners sent, credentials and tokens included. Under systemd the
//! unit's `UMask=0027` keeps it from other users; started by hand, the inherited umask (often
//! 0022) would make it readable by everyone. So every command sets the process umask to
//! [`UMASK`] before it creates anything: files 0640, directories 0750, whatever the umask was.

use nix::sys::stat::{Mode, umask};

/// The umask every tarpit process runs with: no write for the group, nothing for others.
pub const UMASK: u32 = 0o027;

/// Sets the process umask to [`UMASK`] (for every thread: the umask is per process).
pub fn restrict() {
    umask(Mode::from_bits_truncate(UMASK));
}

/// Makes a file this process copied (which kept its source's mode) 0640.
pub fn make_private(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640))
}
