//! Planned I/O of a unit whose backend has a queue that calls back
//! ([`crate::backend::QueuedIo`], the `iscsi:` backend): handed over from the event loop,
//! answered through the loop's inbox like a blocking-pool job (same table, same deadline),
//! with no thread waiting for it.

use std::sync::Arc;

use crate::backend::{QueuedKind, QueuedRequest};
use crate::disk::IoKind;

use super::blocking::Reply;
use super::FileIo;

/// Starts `io` on its unit's queue; the result goes to `reply`'s inbox.
pub(super) fn submit(mut io: FileIo, reply: Reply) {
    let unit = Arc::clone(&io.unit);
    let Some(queue) = unit.backend().queued_io() else {
        // Not for a plan the unit made: it plans queued I/O only over a queue.
        let error = std::io::Error::new(std::io::ErrorKind::Unsupported, "backend has no queue");
        let Reply {
            inbox,
            token,
            command,
            ..
        } = reply;
        inbox.post(token, command, io.complete(Err(error)));
        return;
    };
    let kind = match io.plan.kind {
        IoKind::Read => QueuedKind::Read,
        IoKind::Write => QueuedKind::Write {
            durable: io.plan.flush_after,
        },
        IoKind::Flush => QueuedKind::Flush,
    };
    let request = QueuedRequest {
        kind,
        offset: io.plan.offset,
        len: io.plan.len,
        data: std::mem::take(&mut io.data_out),
    };
    queue.submit(
        request,
        Box::new(move |outcome| {
            let Reply {
                inbox,
                token,
                command,
                ..
            } = reply;
            // The plan (and a write's ticket) ends here, once the far side answered.
            inbox.post(token, command, io.complete(outcome));
        }),
    );
}
