//! The clock the XDP program reads with `bpf_ktime_get_coarse_ns`:
//! CLOCK_MONOTONIC (the program's reading lags by up to a scheduler tick).

use std::time::Duration;

pub fn monotonic_now() -> Duration {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    Duration::new(now.tv_sec() as u64, now.tv_nsec() as u32)
}
