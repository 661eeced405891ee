//! Byte-stream helpers the models share.

use std::io::{self, IoSlice, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
/// (false) once `stop` is set. While it waits it announces what it posted before, unless
/// `announce` says the doorbell is stalled.
pub fn post_waiting<T>(
    ring: &Producer<T>,
    mut entry: T,
    stop: &AtomicBool,
    announce: impl Fn() -> bool,
) -> bool {
    loop {
        match ring.post(entry) {
            Ok(_) => return true,
            Err(RingFull(back)) => {
                if stop.load(Ordering::SeqCst) {
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
