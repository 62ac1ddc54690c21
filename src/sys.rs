//! The system calls nix-ledger makes that the standard library does not wrap. This is the
//! only module with `unsafe` code (`#![deny(unsafe_code)]` holds everywhere else): each
//! call here has no preconditions beyond what its signature enforces, and each wrapper
//! turns a failure into a plain value.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    effective_uid() == 0
}

/// Ignores SIGXFSZ and SIGPIPE: a file-size limit or a closed stderr must turn into a
/// failed write, not a signal that kills the process (the hook's caller is Nix).
pub fn ignore_write_signals() {
    // SAFETY: setting a signal's disposition to SIG_IGN is async-signal-safe and has no
    // preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Sends `signal` to every process of the process group `pgid`. Returns whether the
/// kernel accepted it (a group that is gone already is not an error worth more).
pub fn signal_process_group(pgid: i32, signal: i32) -> bool {
    if pgid <= 1 {
        // kill(0 or -1) would signal our own group or every process we may signal.
        return false;
    }
    // SAFETY: kill(2) with a negative pid signals the group; pgid > 1 was checked above.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// Asks the kernel for a pipe buffer of `bytes`; failure leaves the default size.
pub fn set_pipe_size(pipe: &impl AsRawFd, bytes: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: F_SETPIPE_SZ on a descriptor the caller owns; it only resizes a buffer.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, bytes);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (pipe.as_raw_fd(), bytes);
}

/// Lowers the calling thread to the lowest priority (nice 19), so that it runs on CPU
/// time nothing else of the process or its children wants. Returns whether it worked.
/// Linux keeps a nice value per thread: `setpriority` on the thread's id changes that
/// thread only.
pub fn lower_this_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority on our own thread id only
        // changes its scheduling weight.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 19) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// Clock ticks per second, the unit of CPU times in `/proc/<pid>/stat`.
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The size of a memory page, the unit of RSS in `/proc/<pid>/stat`.
pub fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// Maps a regular file that is open for reading into memory, read-only.
pub fn map_read_only(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is read-only and the caller maps store paths, which nothing
    // modifies or truncates once they are valid (a truncation by root would turn a read
    // into SIGBUS, not into wrong data).
    unsafe { memmap2::Mmap::map(file) }
}

/// Whether this process may write `path` (access(2) with W_OK: the real uid's rights,
/// which is what a user running `nix-ledger` has).
pub fn can_write(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access() only reads the NUL-terminated path, which outlives the call.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}

/// Bytes available to this user on the file system holding `path` (statvfs: blocks
/// available to unprivileged users × fragment size); `None` when it cannot be asked.
pub fn free_space(path: &Path) -> Option<u64> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: statvfs writes one statvfs struct into the buffer we own, and only reads
    // the NUL-terminated path, which outlives the call.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct (it was zeroed before anyway).
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Whether a process `pid` exists (kill with signal 0; EPERM means it exists).
pub fn process_exists(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 performs only the existence and permission checks.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calls_answer_plausibly() {
        assert!(clock_ticks_per_second() >= 1.0);
        let lowered = std::thread::spawn(|| {
            let ok = lower_this_thread();
            let nice = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            (
                ok,
                nice.rsplit(')')
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .nth(16)
                    .map(String::from),
            )
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (true, Some("19".to_string())));
        // The calling thread is not changed.
        let me = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        assert_ne!(
            me.rsplit(')').next().unwrap().split_whitespace().nth(16),
            Some("19")
        );
        assert!(page_size() >= 4096);
        assert!(can_write(&std::env::temp_dir()));
        assert!(!can_write(Path::new("/proc/version")) || is_root());
        assert!(!signal_process_group(0, 0));
        assert!(!signal_process_group(1, 0));
        assert!(free_space(&std::env::temp_dir()).is_some_and(|b| b > 0));
        assert!(free_space(Path::new("/no/such/dir")).is_none());
        assert!(process_exists(i64::from(std::process::id())));
        assert!(!process_exists(0));
        assert!(!process_exists(i64::from(i32::MAX)));
    }
}
