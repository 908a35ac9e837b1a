//! Open-file limit: every simulated instance holds a listening socket, so ten thousand instances
//! need a descriptor limit far above the usual default soft limit of 1024.

use super::SimError;

/// Raises `RLIMIT_NOFILE`'s soft limit to the hard limit (and the hard limit to `needed` when the
/// process may, e.g. as root), then checks that `needed` descriptors fit. Returns the soft limit.
// rlim_t is u64 on 64-bit Linux but not everywhere.
#[allow(clippy::unnecessary_cast)]
pub fn ensure_fd_limit(needed: u64) -> Result<u64, SimError> {
    let get = || {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        (rc == 0).then_some(lim)
    };
    let set = |cur: libc::rlim_t, max: libc::rlim_t| {
        let lim = libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        };
        // SAFETY: setrlimit only reads the struct.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 }
    };
    let lim = get().ok_or_else(|| SimError::Io {
        context: "getrlimit(RLIMIT_NOFILE)".into(),
        error: std::io::Error::last_os_error(),
    })?;
    let needed = needed as libc::rlim_t;
    if lim.rlim_max != libc::RLIM_INFINITY && lim.rlim_max < needed {
        // Only privileged processes may raise the hard limit; failure is checked below.
        let _ = set(needed, needed);
    }
    if let Some(lim) = get() {
        let target = if lim.rlim_max == libc::RLIM_INFINITY {
            lim.rlim_cur.max(needed)
        } else {
            lim.rlim_max
        };
        if lim.rlim_cur < target {
            let _ = set(target, lim.rlim_max);
        }
    }
    let lim = get().ok_or_else(|| SimError::Io {
        context: "getrlimit(RLIMIT_NOFILE)".into(),
        error: std::io::Error::last_os_error(),
    })?;
    if lim.rlim_cur < needed {
        return Err(SimError::Config(format!(
            "need at least {needed} open files (one listening socket per instance plus headroom), \
             but RLIMIT_NOFILE is {} (hard {}); raise it with `ulimit -n` or LimitNOFILE=",
            lim.rlim_cur, lim.rlim_max
        )));
    }
    Ok(lim.rlim_cur as u64)
}
