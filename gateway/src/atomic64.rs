//! `AtomicU64` for the counters, on every router CPU.
//!
//! 32-bit MIPS has no 64-bit atomic instructions, so std has no `AtomicU64` there. Counters
//! must not wrap at 2^32 (a busy store passes that in weeks), so on such CPUs a mutex guards
//! a plain u64; it is uncontended in practice and costs tens of nanoseconds.

#[cfg(target_has_atomic = "64")]
pub use std::sync::atomic::AtomicU64;

#[cfg(not(target_has_atomic = "64"))]
pub use locked::AtomicU64;

#[cfg(not(target_has_atomic = "64"))]
mod locked {
    use std::sync::Mutex;
    use std::sync::atomic::Ordering;

    /// The subset of std's `AtomicU64` that probegate uses, with the same signatures.
    #[derive(Debug, Default)]
    pub struct AtomicU64(Mutex<u64>);

    impl AtomicU64 {
        pub const fn new(v: u64) -> AtomicU64 {
            AtomicU64(Mutex::new(v))
        }

        fn get(&self) -> std::sync::MutexGuard<'_, u64> {
            // A counter stays meaningful even if a holder panicked mid-add.
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        pub fn load(&self, _: Ordering) -> u64 {
            *self.get()
        }

        pub fn store(&self, v: u64, _: Ordering) {
            *self.get() = v;
        }

        pub fn fetch_add(&self, n: u64, _: Ordering) -> u64 {
            let mut guard = self.get();
            let old = *guard;
            *guard = old.wrapping_add(n);
            old
        }
    }
}
