//! Background threads (admission's signature verification, the transaction index) run at a
//! lower CPU priority than the rest of the node: when the machine is saturated, consensus and the
//! network go first and the background work waits, instead of stretching every view.

/// How much CPU a background thread may take from the rest of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Background {
    /// Nice 5: about a third of the share of a normal thread on a busy CPU.
    Low,
    /// Linux's idle scheduling class: only a CPU that nothing else wants.
    Idle,
}

/// The nice value of [`Background::Low`] threads.
#[cfg(target_os = "linux")]
const BACKGROUND_NICENESS: libc::c_int = 5;

/// Moves the calling thread to `class`.
#[cfg(target_os = "linux")]
pub fn set_this_thread(class: Background) {
    let policy = match class {
        Background::Low => libc::SCHED_OTHER,
        Background::Idle => libc::SCHED_IDLE,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler and setpriority on this thread (id 0, and its own tid) only
    // change its scheduling.
    let ok = unsafe {
        libc::sched_setscheduler(0, policy, &param) == 0
            && libc::setpriority(
                libc::PRIO_PROCESS,
                libc::gettid() as libc::id_t,
                BACKGROUND_NICENESS,
            ) == 0
    };
    if !ok {
        tracing::debug!(
            ?class,
            "could not lower the priority of a background thread"
        );
    }
}

#[cfg(not(target_os = "linux"))]
pub fn set_this_thread(_: Background) {}
