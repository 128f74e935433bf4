//! Stopping a video analysis from outside, between frames: another thread
//! (a worker's heartbeat, on learning that the job was cancelled) sets a
//! flag, and [`crate::video::process_video`] checks it before each sampled
//! frame, ending with a [`CANCELLED`] error. The flag is attached to the
//! calling thread for the length of a closure ([`with_flag`]), so the
//! analysis entry points keep their signatures; analyses run without one
//! are never cancelled.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use osprey_core::{Error, Result};

/// The message of the error a cancelled analysis ends with.
pub const CANCELLED: &str = "analysis cancelled";

thread_local! {
    static FLAG: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Runs `f` with `flag` as this thread's cancel flag (the previous one is
/// restored afterwards, also when `f` panics).
pub fn with_flag<T>(flag: Arc<AtomicBool>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Arc<AtomicBool>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            FLAG.with(|c| *c.borrow_mut() = previous);
        }
    }
    let _restore = Restore(FLAG.with(|c| c.borrow_mut().replace(flag)));
    f()
}

/// Whether this thread's analysis was asked to stop.
pub fn requested() -> bool {
    FLAG.with(|c| c.borrow().as_ref().is_some_and(|f| f.load(Ordering::Relaxed)))
}

/// `Err` (`"<what>: analysis cancelled"`) once this thread's analysis was
/// asked to stop.
pub fn check(what: &str) -> Result<()> {
    if requested() { Err(Error::internal(format!("{what}: {CANCELLED}"))) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_holds_only_inside_the_closure() {
        let flag = Arc::new(AtomicBool::new(false));
        assert!(check("x").is_ok());
        with_flag(Arc::clone(&flag), || {
            assert!(check("x").is_ok());
            flag.store(true, Ordering::Relaxed);
            let e = check("clip.mp4").unwrap_err();
            assert_eq!(e.message(), "clip.mp4: analysis cancelled");
        });
        assert!(!requested(), "no flag outside");
    }
}
