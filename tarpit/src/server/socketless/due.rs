//! A held flow's entry in the holder's deadline heap: its due time and its slot packed into
//! one `u64`, ordered by due time, then slot. Eight bytes where a `(u64, u32)` tuple takes
//! sixteen: at 100,000 held flows that is 0.8 MB, 8 of the 256 bytes a held flow may cost.

/// Bits of the slot: a worker holds fewer flows than the hook's map, and the map holds at most
/// `[tarpit] socketless_max` (at most 2^24, checked with the configuration).
const SLOT_BITS: u32 = 24;

/// The latest due time an entry holds: 2^40 - 1 ms of the holder's clock (34 years of
/// uptime); later times are held as this one.
pub const LATEST_MS: u64 = (1 << (64 - SLOT_BITS)) - 1;

/// A flow's due time (holder ms, 64-bit: never wraps) and slot in one ordered word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Due(u64);

impl Due {
    /// Slot `slot` is due at `due_ms`.
    pub fn new(due_ms: u64, slot: u32) -> Self {
        debug_assert!(
            slot < 1 << SLOT_BITS,
            "slot {slot} past socketless_max's bound"
        );
        Self((due_ms.min(LATEST_MS) << SLOT_BITS) | u64::from(slot & ((1 << SLOT_BITS) - 1)))
    }

    /// When the flow is due (holder ms).
    pub fn due_ms(self) -> u64 {
        self.0 >> SLOT_BITS
    }

    /// The flow's slot in the holder's slab.
    pub fn slot(self) -> u32 {
        (self.0 & ((1 << SLOT_BITS) - 1)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_order_by_due_time_then_slot_and_keep_both() {
        let largest_slot = (1 << SLOT_BITS) - 1;
        let entries = [
            Due::new(5, largest_slot),
            Due::new(6, 0),
            Due::new(5, 3),
            Due::new(1 << 39, 7),
        ];
        let mut sorted = entries;
        sorted.sort();
        let as_pairs: Vec<(u64, u32)> = sorted.iter().map(|d| (d.due_ms(), d.slot())).collect();
        assert_eq!(
            as_pairs,
            [(5, 3), (5, largest_slot), (6, 0), (1 << 39, 7)],
            "the order of (due, slot) tuples"
        );
        assert_eq!(std::mem::size_of::<Due>(), 8);
    }

    #[test]
    fn a_due_time_past_the_latest_is_held_as_the_latest() {
        let due = Due::new(u64::MAX, 9);
        assert_eq!((due.due_ms(), due.slot()), (LATEST_MS, 9));
        assert!(Due::new(LATEST_MS - 1, 10) < due);
    }
}
