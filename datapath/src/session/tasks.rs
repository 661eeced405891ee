//! The commands a session has accepted and not yet completed: a slab indexed by the
//! Initiator Task Tag (RFC 7143 section 11.2.1.8: the initiator chooses the tag, it must be
//! unique among the session's tasks, and 0xffffffff is reserved).
//!
//! # Tags
//! A tag is `generation << index_bits | slot`. Looking a tag up is one array access and a
//! compare. Freeing a slot moves its generation on, so a tag that named an earlier command
//! in that slot (a late, duplicated or forged PDU from the target) no longer matches and
//! is treated as an unknown tag. A slot's tag repeats only after `2^(32 - index_bits)`
//! reuses of that slot.
//!
//! The highest slot index never holds a command: the session's other exchanges (login,
//! SendTargets, NOP-Out pings, logout) take their tags there, from their own counter, so
//! they can never collide with a command's tag. The reserved tag (all ones) has that
//! index too, and the allocator of those tags skips it; a command's tag can never be it.
//!
//! # Bounds
//! `index_bits` is sized at start-up from the configured bounds (commands waiting plus
//! commands in flight, plus the one control index), at most [`MAX_INDEX_BITS`]. Slots are
//! created only when no freed one is left, so the slab never holds more slots than the
//! most commands ever alive at once, and never more than `2^index_bits - 1`.
//!
//! # Submission order
//! Beside the slab, a queue keeps every command in the order it was submitted. Command
//! deadlines are the submission instant plus one fixed timeout, so the oldest command has
//! the earliest deadline: the timer looks at the front only. Entries of completed commands
//! are dropped lazily: from the front as soon as they get there, and all at once when they
//! outnumber the live ones (so the queue stays within about twice the live commands, and
//! each entry is dropped once: O(1) amortized). The same order fails every command when
//! the connection fails, as the tag order of the map this replaced did.

use std::collections::VecDeque;
use std::time::Instant;

use super::command::Task;
use super::{ScsiCommandRequest, TaskId};
use crate::pdu::{Tag, RESERVED_TAG};

/// The largest slot index width: a million slots, leaving 12 bits (4096 reuses of a slot
/// before its tag repeats) even then.
pub(crate) const MAX_INDEX_BITS: u32 = 20;

/// Dead entries the submission queue may hold beyond the live ones before it is compacted.
const ORDER_SLACK: usize = 32;

/// One slot of the slab.
struct Slot {
    /// The generation the slot's current (or next) command's tag carries.
    generation: u32,
    /// The submission number of the command in the slot; ties a submission-queue entry to
    /// that command even if the slot's tag has come round again.
    seq: u64,
    task: Option<Task>,
}

/// An entry of the submission queue: a slot and the submission it was made for.
#[derive(Debug, Clone, Copy)]
struct OrderEntry {
    index: u32,
    seq: u64,
}

/// The commands in progress. See the module docs.
pub(crate) struct TaskTable {
    slots: Vec<Slot>,
    /// Freed slot indices; the most recently freed is reused first (warm in cache).
    free: Vec<u32>,
    live: usize,
    index_bits: u32,
    /// Every live command in submission order, plus dead entries not yet dropped; the
    /// front, if any, is always live.
    order: VecDeque<OrderEntry>,
    next_seq: u64,
    /// The generation the next control tag carries.
    next_control: u32,
}

impl TaskTable {
    /// A table for at most `max_tasks` commands alive at once.
    pub(crate) fn new(max_tasks: usize) -> TaskTable {
        // Room for the command slots and the control index.
        let needed = max_tasks.saturating_add(1);
        let bits = usize::BITS - needed.saturating_sub(1).leading_zeros();
        TaskTable {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            index_bits: bits.clamp(1, MAX_INDEX_BITS),
            order: VecDeque::new(),
            next_seq: 0,
            next_control: 0,
        }
    }

    fn generation_mask(&self) -> u32 {
        u32::MAX >> self.index_bits
    }

    /// The index reserved for the session's control exchanges; also the number of slots
    /// commands may use.
    fn control_index(&self) -> u32 {
        (1u32 << self.index_bits) - 1
    }

    fn tag_of(&self, index: u32, generation: u32) -> Tag {
        (generation << self.index_bits) | index
    }

    /// The slot of `tag` if it names the command now in that slot.
    fn index_of(&self, tag: Tag) -> Option<usize> {
        let index = (tag & self.control_index()) as usize;
        let slot = self.slots.get(index)?;
        (slot.task.is_some() && slot.generation == tag >> self.index_bits).then_some(index)
    }

    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Accepts a command; hands the request back when every slot is taken.
    pub(crate) fn insert(
        &mut self,
        now: Instant,
        request: ScsiCommandRequest,
    ) -> Result<TaskId, ScsiCommandRequest> {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = self.slots.len() as u32;
                if index >= self.control_index() {
                    return Err(request);
                }
                self.slots.push(Slot {
                    generation: 0,
                    seq: 0,
                    task: None,
                });
                index
            }
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let Some(generation) = self.slots.get(index as usize).map(|s| s.generation) else {
            return Err(request);
        };
        let id = TaskId(self.tag_of(index, generation));
        if let Some(slot) = self.slots.get_mut(index as usize) {
            slot.seq = seq;
            slot.task = Some(Task::new(id, request, now));
        }
        self.live += 1;
        self.order.push_back(OrderEntry { index, seq });
        if self.order.len() > 2 * self.live + ORDER_SLACK {
            let slots = &self.slots;
            self.order.retain(|e| is_live(slots, *e));
        }
        Ok(id)
    }

    pub(crate) fn get(&self, tag: Tag) -> Option<&Task> {
        let index = self.index_of(tag)?;
        self.slots.get(index)?.task.as_ref()
    }

    pub(crate) fn get_mut(&mut self, tag: Tag) -> Option<&mut Task> {
        let index = self.index_of(tag)?;
        self.slots.get_mut(index)?.task.as_mut()
    }

    /// Takes a command out; its tag is unknown from now on.
    pub(crate) fn remove(&mut self, tag: Tag) -> Option<Task> {
        let index = self.index_of(tag)?;
        let mask = self.generation_mask();
        let slot = self.slots.get_mut(index)?;
        let task = slot.task.take()?;
        slot.generation = slot.generation.wrapping_add(1) & mask;
        self.free.push(index as u32);
        self.live -= 1;
        while let Some(&front) = self.order.front() {
            if is_live(&self.slots, front) {
                break;
            }
            self.order.pop_front();
        }
        Some(task)
    }

    /// The live commands, oldest submission first.
    pub(crate) fn in_submission_order(&self) -> impl Iterator<Item = (Tag, &Task)> + '_ {
        self.order.iter().filter_map(|e| {
            let slot = self.slots.get(e.index as usize)?;
            let task = slot.task.as_ref().filter(|_| slot.seq == e.seq)?;
            Some((self.tag_of(e.index, slot.generation), task))
        })
    }

    /// The tags of the live commands, oldest submission first.
    pub(crate) fn tags_in_submission_order(&self) -> Vec<Tag> {
        self.in_submission_order().map(|(tag, _)| tag).collect()
    }

    /// The oldest live command.
    pub(crate) fn oldest(&self) -> Option<&Task> {
        // The front is live by construction; the iterator checks all the same.
        self.in_submission_order().next().map(|(_, task)| task)
    }

    /// A tag for a control exchange (login, SendTargets, ping, logout): never the reserved
    /// tag, never a command's, and not one `busy` says is in use.
    pub(crate) fn control_tag(&mut self, busy: impl Fn(Tag) -> bool) -> Tag {
        let mask = self.generation_mask();
        loop {
            let tag = self.tag_of(self.control_index(), self.next_control);
            self.next_control = self.next_control.wrapping_add(1) & mask;
            // At most four control tags are in use at once (login, text, ping, logout),
            // and the generations run through at least 4096 values, so this ends within
            // six steps.
            if tag != RESERVED_TAG && !busy(tag) {
                return tag;
            }
        }
    }
}

fn is_live(slots: &[Slot], entry: OrderEntry) -> bool {
    slots
        .get(entry.index as usize)
        .is_some_and(|s| s.seq == entry.seq && s.task.is_some())
}
