//! Byte-stream helpers the models share.

use std::io::{self, IoSlice, Write};
use std::time::{Duration, Instant};

use datapath::adapter::{Producer, RingFull};

/// Writes every byte of `bufs` in order (a gather write, repeated after short writes).
pub fn write_all_vectored(stream: &mut impl Write, bufs: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| IoSlice::new(b))
        .collect();
    let mut remaining: &mut [IoSlice<'_>] = &mut slices;
    while !remaining.is_empty() {
        match stream.write_vectored(remaining) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut remaining, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Posts a completion, waiting for a free slot while the host drains the ring; gives up
/// (false) once `give_up()` says so. While it waits it announces what it posted before,
/// unless `announce` says the doorbell is stalled.
pub fn post_waiting<T>(
    ring: &Producer<T>,
    mut entry: T,
    give_up: impl Fn() -> bool,
    announce: impl Fn() -> bool,
) -> bool {
    loop {
        match ring.post(entry) {
            Ok(_) => return true,
            Err(RingFull(back)) => {
                if give_up() {
                    return false;
                }
                if announce() {
                    ring.ring_doorbell();
                }
                entry = back;
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

/// How long an engine that stops on a fault waits to post it: a host that drains
/// nothing for this long is resetting the queue pair or sees a stalled doorbell anyway.
pub const FAULT_POST_WAIT: Duration = Duration::from_secs(1);

/// A `give_up` for [`post_waiting`]: true once `wait` has passed.
pub fn after(wait: Duration) -> impl Fn() -> bool {
    let deadline = Instant::now() + wait;
    move || Instant::now() >= deadline
}
