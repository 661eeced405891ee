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
use super::{Request, TaskId};
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
    pub(crate) fn insert(&mut self, now: Instant, request: Request) -> Result<TaskId, Request> {
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

#[cfg(test)]
impl TaskTable {
    /// Slots created so far (live or free).
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Entries in the submission queue, dead ones included.
    pub(crate) fn order_len(&self) -> usize {
        self.order.len()
    }

    /// The slot a tag names.
    pub(crate) fn slot_of(&self, tag: Tag) -> u32 {
        tag & self.control_index()
    }

    pub(crate) fn index_bits(&self) -> u32 {
        self.index_bits
    }
}

fn is_live(slots: &[Slot], entry: OrderEntry) -> bool {
    slots
        .get(entry.index as usize)
        .is_some_and(|s| s.seq == entry.seq && s.task.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request::new(0, crate::scsi::Cdb::test_unit_ready(), Vec::new(), 0)
    }

    #[test]
    fn index_bits_cover_the_bounds_and_the_control_index() {
        for (max_tasks, bits) in [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 2),
            (4, 3),
            (1152, 11),
            (2047, 11),
        ] {
            assert_eq!(TaskTable::new(max_tasks).index_bits(), bits, "{max_tasks}");
        }
        assert_eq!(TaskTable::new(2048).index_bits(), 12);
        assert_eq!(TaskTable::new(usize::MAX).index_bits(), MAX_INDEX_BITS);
    }

    #[test]
    fn a_full_table_hands_the_request_back() {
        // Two index bits: three command slots and the control index.
        let mut table = TaskTable::new(3);
        let now = Instant::now();
        let ids: Vec<TaskId> = (0..3)
            .map(|_| table.insert(now, request()).unwrap())
            .collect();
        assert!(ids.iter().all(|id| table.slot_of(id.itt()) != 3));
        let back = table.insert(now, request()).unwrap_err();
        assert_eq!(back, request());
        assert_eq!(table.len(), 3);
        // A freed slot is taken again, under a new tag.
        assert!(table.remove(ids[1].itt()).is_some());
        let again = table.insert(now, request()).unwrap();
        assert_eq!(table.slot_of(again.itt()), table.slot_of(ids[1].itt()));
        assert_ne!(again, ids[1]);
        assert!(table.get(ids[1].itt()).is_none());
        assert!(table.remove(ids[1].itt()).is_none());
        assert_eq!(table.slot_count(), 3);
    }

    #[test]
    fn a_tag_names_only_the_command_it_was_issued_for() {
        let mut table = TaskTable::new(16);
        let now = Instant::now();
        let a = table.insert(now, request()).unwrap();
        assert!(table.remove(a.itt()).is_some());
        let b = table.insert(now, request()).unwrap();
        assert_eq!(table.slot_of(a.itt()), table.slot_of(b.itt()));
        assert!(table.get(a.itt()).is_none());
        assert!(table.get(b.itt()).is_some());
        // Tags of slots never created, and of the control index, name nothing.
        assert!(table.get(b.itt() + 5).is_none());
        assert!(table.get(RESERVED_TAG).is_none());
        let control = table.control_tag(|_| false);
        assert!(table.get(control).is_none());
    }

    #[test]
    fn command_tags_wrap_per_slot_and_never_take_the_reserved_tag() {
        // 20 index bits leave 12 for the generation: a slot's tag comes round after 4096.
        let mut table = TaskTable::new(usize::MAX);
        let now = Instant::now();
        let period = 1usize << (32 - MAX_INDEX_BITS);
        let mut tags = Vec::new();
        for _ in 0..2 * period + 3 {
            let id = table.insert(now, request()).unwrap();
            assert_ne!(id.itt(), RESERVED_TAG);
            assert!(table.remove(id.itt()).is_some());
            tags.push(id.itt());
        }
        assert!(tags.iter().all(|&t| table.slot_of(t) == 0));
        let first: std::collections::HashSet<Tag> = tags[..period].iter().copied().collect();
        assert_eq!(first.len(), period, "distinct within one cycle");
        assert_eq!(tags[period], tags[0]);
        assert_eq!(tags[2 * period + 2], tags[2]);
    }

    #[test]
    fn control_tags_skip_the_reserved_tag_and_busy_ones() {
        let mut table = TaskTable::new(usize::MAX);
        let period = 1usize << (32 - MAX_INDEX_BITS);
        let control = (1u32 << MAX_INDEX_BITS) - 1;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 * period {
            let tag = table.control_tag(|_| false);
            assert_ne!(tag, RESERVED_TAG);
            assert_eq!(tag & control, control);
            seen.insert(tag);
        }
        // Every generation but the one that would make the reserved tag.
        assert_eq!(seen.len(), period - 1);
        let next = table.control_tag(|_| false);
        let busy = [next + (1 << MAX_INDEX_BITS), next + (2 << MAX_INDEX_BITS)];
        let after = table.control_tag(|t| busy.contains(&t));
        assert_eq!(after, next + (3 << MAX_INDEX_BITS));
    }

    #[test]
    fn submission_order_survives_slot_reuse_and_stays_bounded() {
        let mut table = TaskTable::new(64);
        let now = Instant::now();
        let oldest = table.insert(now, request()).unwrap();
        let mut live = std::collections::VecDeque::new();
        for i in 0..1000 {
            live.push_back(table.insert(now, request()).unwrap());
            // Compacted on insert: dead entries never outnumber the live ones by more
            // than the slack.
            assert!(table.order_len() <= 2 * table.len() + ORDER_SLACK);
            if i % 3 != 0 {
                // Complete out of order: the newest but one.
                let at = live.len().saturating_sub(2);
                let id = live.remove(at).unwrap();
                assert!(table.remove(id.itt()).is_some());
            }
            if live.len() > 20 {
                let id = live.pop_front().unwrap();
                assert!(table.remove(id.itt()).is_some());
            }
            // At most 22 live at once.
            assert!(table.order_len() <= 2 * 22 + ORDER_SLACK);
        }
        let order = table.tags_in_submission_order();
        let expected: Vec<Tag> = std::iter::once(oldest)
            .chain(live.iter().copied())
            .map(TaskId::itt)
            .collect();
        assert_eq!(order, expected);
        assert!(table.slot_count() <= 23);
        assert_eq!(
            table.in_submission_order().next().map(|(tag, _)| tag),
            Some(oldest.itt())
        );
    }
}
