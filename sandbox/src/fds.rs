//! Closing inherited file descriptors: the child keeps exactly the descriptors it is given
//! (stdio and the control socket), so nothing the supervisor had open leaks into it.

use std::io;
use std::os::fd::RawFd;

/// Closes every descriptor >= 3 except those in `keep`, using `close_range(2)` on the gaps.
pub fn close_all_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd >= 3).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut start: u32 = 3;
    for fd in keep {
        let fd = fd as u32;
        if fd > start {
            close_range(start, fd - 1)?;
        }
        start = fd + 1;
    }
    close_range(start, u32::MAX)
}

fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range only closes descriptors of this process; it takes plain integers and
    // the caller owns every descriptor in the range (no Rust object outlives this in the child).
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
