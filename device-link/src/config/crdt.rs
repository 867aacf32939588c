//! The generic CRDT pieces the documents are built from: last-writer-wins and maximum
//! registers, records of optional registers, map entries with an existence register,
//! and device marks. Every join here is commutative, associative and idempotent.
//!
//! Joins take a `min_wall`: registers of the other side whose wall clock is below it are
//! ignored. That is how a state with a higher floor stays authoritative below its floor
//! (see [`super::Replica::merge`]); `min_wall = 0` is the plain join.

use std::collections::BTreeMap;
use std::fmt::Debug;

use super::hlc::{DeviceId, Stamp};

/// A register every document field is made of: it knows its stamp and how to join.
pub trait Register: Clone + PartialEq + Debug {
    /// The stamp of the write this register holds.
    fn stamp(&self) -> Stamp;
    /// Replaces `self` by `other` when `other` wins.
    fn join(&mut self, other: &Self);
    /// The register without its writes older than `floor_ms`; `None` when none is left.
    /// Dropping must distribute over the join (dropping a join equals joining what each
    /// side keeps), or a merge with a floor would not be associative.
    fn above(&self, floor_ms: u64) -> Option<Self>;
}

/// Last-writer-wins register: the greater stamp wins; equal stamps (which one writer
/// never issues twice) fall back to the greater value, so the join stays commutative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lww<T> {
    /// The write's stamp.
    pub stamp: Stamp,
    /// The value written.
    pub value: T,
}

impl<T> Lww<T> {
    /// A register holding `value` written at `stamp`.
    pub fn new(stamp: Stamp, value: T) -> Lww<T> {
        Lww { stamp, value }
    }
}

impl<T: Ord + Clone + Debug> Register for Lww<T> {
    fn stamp(&self) -> Stamp {
        self.stamp
    }

    fn join(&mut self, other: &Self) {
        if (other.stamp, &other.value) > (self.stamp, &self.value) {
            *self = other.clone();
        }
    }

    fn above(&self, floor_ms: u64) -> Option<Self> {
        (self.stamp.wall_ms() >= floor_ms).then(|| self.clone())
    }
}

/// One write to a [`MaxReg`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxWrite {
    /// The write's stamp.
    pub stamp: Stamp,
    /// The value written.
    pub value: u64,
}

/// Grow-only maximum (read markers): reads as the greatest value written.
///
/// It keeps every write that no other write dominates (greater-or-equal value *and*
/// stamp), not only the greatest. With clock skew the greatest value can carry an older
/// stamp than a smaller one; a floor above that stamp must then drop the greatest value
/// and leave the smaller, newer write, whichever order the states met in. Keeping only
/// the winner made the merge lose that write or keep it depending on the order (not
/// associative). Local writes dominate what the device has seen, so the set holds one
/// write except after concurrent writes of skewed devices, and a floor trims it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaxReg {
    /// Sorted by stamp, strictly ascending; values strictly descending. Never empty.
    writes: Vec<MaxWrite>,
}

impl MaxReg {
    /// A register holding one write of `value` at `stamp`.
    pub fn new(stamp: Stamp, value: u64) -> MaxReg {
        MaxReg {
            writes: vec![MaxWrite { stamp, value }],
        }
    }

    /// The register of the undominated ones among `writes`; `None` when there are none.
    pub fn from_writes(writes: impl IntoIterator<Item = MaxWrite>) -> Option<MaxReg> {
        let mut all: Vec<MaxWrite> = writes.into_iter().collect();
        // Newest first (equal stamps: greatest value first); a write survives when its
        // value beats every newer one's.
        all.sort_by_key(|w| std::cmp::Reverse((w.stamp, w.value)));
        let mut kept: Vec<MaxWrite> = Vec::with_capacity(all.len());
        for w in all {
            if kept.last().is_none_or(|k| w.value > k.value) {
                kept.push(w);
            }
        }
        kept.reverse();
        (!kept.is_empty()).then_some(MaxReg { writes: kept })
    }

    /// The greatest value written.
    pub fn value(&self) -> u64 {
        // Values descend with the stamps, so the oldest write holds the greatest.
        self.writes.first().map_or(0, |w| w.value)
    }

    /// The undominated writes, oldest first.
    pub fn writes(&self) -> &[MaxWrite] {
        &self.writes
    }
}

impl Register for MaxReg {
    fn stamp(&self) -> Stamp {
        // Never empty (every constructor checks), so `last` is the newest write.
        self.writes.last().map_or_else(Stamp::default, |w| w.stamp)
    }

    fn join(&mut self, other: &Self) {
        if let Some(joined) = MaxReg::from_writes(self.writes.iter().chain(&other.writes).copied()) {
            *self = joined;
        }
    }

    fn above(&self, floor_ms: u64) -> Option<Self> {
        MaxReg::from_writes(
            self.writes
                .iter()
                .filter(|w| w.stamp.wall_ms() >= floor_ms)
                .copied(),
        )
    }
}

/// Joins an optional register slot, ignoring `theirs` when its wall clock is below `min_wall`.
pub fn join_slot<R: Register>(mine: &mut Option<R>, theirs: Option<&R>, min_wall: u64) {
    let Some(theirs) = theirs.and_then(|r| r.above(min_wall)) else {
        return;
    };
    match mine {
        Some(m) => m.join(&theirs),
        None => *mine = Some(theirs),
    }
}

/// Drops the writes of a slot's register older than `floor_ms`, and the register when
/// none is left.
pub fn drop_slot_below<R: Register>(slot: &mut Option<R>, floor_ms: u64) {
    *slot = slot.as_ref().and_then(|r| r.above(floor_ms));
}

/// A set of optional registers (the fields of a document or of a map entry), joined field
/// by field. Implemented by the [`record!`](crate::config::crdt::record) macro.
pub trait Record: Default + Clone + PartialEq + Debug {
    /// Joins `other` field by field, ignoring its registers below `min_wall`.
    fn join(&mut self, other: &Self, min_wall: u64);
    /// Drops the registers older than `floor_ms`.
    fn drop_below(&mut self, floor_ms: u64);
    /// The greatest stamp of any register.
    fn max_stamp(&self) -> Option<Stamp>;
    /// No register at all.
    fn is_empty(&self) -> bool;
    /// Every register present (a whole record).
    fn is_complete(&self) -> bool;
}

/// Declares a struct of `Option<register>` fields and implements [`Record`] for it.
macro_rules! record {
    ($(#[$meta:meta])* pub struct $name:ident {
        $($(#[$fmeta:meta])* pub $field:ident : $ty:ty),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: Option<$ty>,)+
        }

        impl $crate::config::crdt::Record for $name {
            fn join(&mut self, other: &Self, min_wall: u64) {
                $($crate::config::crdt::join_slot(&mut self.$field, other.$field.as_ref(), min_wall);)+
            }

            fn drop_below(&mut self, floor_ms: u64) {
                $($crate::config::crdt::drop_slot_below(&mut self.$field, floor_ms);)+
            }

            fn max_stamp(&self) -> Option<$crate::config::hlc::Stamp> {
                use $crate::config::crdt::Register as _;
                [$(self.$field.as_ref().map(|r| r.stamp())),+].into_iter().flatten().max()
            }

            fn is_empty(&self) -> bool {
                true $(&& self.$field.is_none())+
            }

            fn is_complete(&self) -> bool {
                true $(&& self.$field.is_some())+
            }
        }
    };
}
pub(crate) use record;

/// One entry of a map document: an existence register and the record's field registers.
///
/// The entry is shown only when `exists` holds `true` and every field is present. A
/// deletion writes `exists = false` and keeps the fields; an edit writes its fields and
/// `exists = true` with one stamp. So whichever of a deletion and a concurrent edit has
/// the greater stamp decides, and an edit that wins shows the whole record as it was
/// plus the edit — never a part of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry<R> {
    /// Present (`true`) or deleted (`false`) at its stamp; `None` until a write arrives.
    pub exists: Option<Lww<bool>>,
    /// The field registers.
    pub fields: R,
}

impl<R: Record> Entry<R> {
    /// Joins `other`, ignoring its registers below `min_wall`.
    pub fn join(&mut self, other: &Self, min_wall: u64) {
        join_slot(&mut self.exists, other.exists.as_ref(), min_wall);
        self.fields.join(&other.fields, min_wall);
    }

    /// Drops the registers older than `floor_ms`.
    pub fn drop_below(&mut self, floor_ms: u64) {
        drop_slot_below(&mut self.exists, floor_ms);
        self.fields.drop_below(floor_ms);
    }

    /// Exists and is a whole record.
    pub fn is_visible(&self) -> bool {
        self.exists.as_ref().is_some_and(|e| e.value) && self.fields.is_complete()
    }

    /// The greatest stamp in the entry.
    pub fn max_stamp(&self) -> Option<Stamp> {
        self.exists.as_ref().map(|e| e.stamp).max(self.fields.max_stamp())
    }

    /// Holds no register at all.
    pub fn is_empty(&self) -> bool {
        self.exists.is_none() && self.fields.is_empty()
    }
}

/// A map document: key → entry, sorted by key.
pub type EntryMap<R> = BTreeMap<String, Entry<R>>;

/// Joins map `theirs` into `mine`, ignoring registers below `min_wall`.
pub fn join_map<R: Record>(mine: &mut EntryMap<R>, theirs: &EntryMap<R>, min_wall: u64) {
    for (key, entry) in theirs {
        if min_wall > 0 && entry.max_stamp().is_none_or(|s| s.wall_ms() < min_wall) {
            continue;
        }
        let slot = mine.entry(key.clone()).or_default();
        slot.join(entry, min_wall);
        if slot.is_empty() {
            mine.remove(key);
        }
    }
}

/// Drops the registers below `floor_ms` from every entry, and the entries left empty.
pub fn drop_map_below<R: Record>(map: &mut EntryMap<R>, floor_ms: u64) {
    map.retain(|_, e| {
        e.drop_below(floor_ms);
        !e.is_empty()
    });
}

/// Removes the entries that are not shown (deleted, or never whole) and whose every
/// register is older than `floor_ms`. Returns how many went.
pub fn prune_map<R: Record>(map: &mut EntryMap<R>, floor_ms: u64) -> usize {
    let before = map.len();
    map.retain(|_, e| e.is_visible() || e.max_stamp().is_some_and(|s| s.wall_ms() >= floor_ms));
    before - map.len()
}

/// The greatest stamp anywhere in a map.
pub fn map_max_stamp<R: Record>(map: &EntryMap<R>) -> Option<Stamp> {
    map.values().filter_map(Entry::max_stamp).max()
}

/// One device's word on what its state contained when it wrote a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    /// The device's clock then: its state held every write of its own below this wall time.
    pub clock_ms: u64,
    /// For each device it knew: the state held every write of that device below this.
    pub seen: BTreeMap<DeviceId, u64>,
}

/// The device marks of a state (a matrix clock in wall milliseconds), joined pointwise by max.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Marks(pub BTreeMap<DeviceId, Mark>);

impl Marks {
    /// Pointwise maximum.
    pub fn join(&mut self, other: &Marks) {
        for (device, theirs) in &other.0 {
            let mine = self.0.entry(*device).or_default();
            mine.clock_ms = mine.clock_ms.max(theirs.clock_ms);
            for (seen, wall) in &theirs.seen {
                let cell = mine.seen.entry(*seen).or_default();
                *cell = (*cell).max(*wall);
            }
        }
    }

    /// Forgets marks and cells older than `floor_ms`: such devices have been retired.
    pub fn drop_below(&mut self, floor_ms: u64) {
        self.0.retain(|_, m| {
            m.seen.retain(|_, wall| *wall >= floor_ms);
            m.clock_ms >= floor_ms
        });
    }

    /// The greatest wall time in any mark.
    pub fn max_wall(&self) -> u64 {
        self.0
            .values()
            .flat_map(|m| std::iter::once(m.clock_ms).chain(m.seen.values().copied()))
            .max()
            .unwrap_or(0)
    }

    /// The wall time below which every device in `known` had every write of every device
    /// in `known` (0 when some device has not yet vouched for some other).
    pub fn horizon(&self, known: &[DeviceId]) -> u64 {
        known
            .iter()
            .flat_map(|z| {
                known
                    .iter()
                    .map(move |v| self.0.get(z).and_then(|m| m.seen.get(v)).copied().unwrap_or(0))
            })
            .min()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::hlc::Hlc;
    use super::*;

    fn st(wall_ms: u64, dev: u8) -> Stamp {
        Stamp {
            hlc: Hlc { wall_ms, counter: 0 },
            device: DeviceId([dev; 16]),
        }
    }

    record! {
        /// A test record.
        pub struct Pair {
            /// a
            pub a: Lww<u32>,
            /// b
            pub b: MaxReg,
        }
    }

    #[test]
    fn lww_greater_stamp_wins_and_ties_break_on_value() {
        let mut r = Lww::new(st(1, 1), 5u32);
        r.join(&Lww::new(st(2, 0), 3));
        assert_eq!(r.value, 3);
        r.join(&Lww::new(st(1, 9), 100));
        assert_eq!(r.value, 3);
        let mut t = Lww::new(st(2, 0), 1u32);
        t.join(&Lww::new(st(2, 0), 2));
        assert_eq!(t.value, 2);
    }

    #[test]
    fn max_register_keeps_the_greatest_value_whatever_the_stamp() {
        let mut r = MaxReg::new(st(9, 0), 50);
        r.join(&MaxReg::new(st(1, 0), 70));
        r.join(&MaxReg::new(st(99, 0), 60));
        assert_eq!(r.value(), 70);
    }

    #[test]
    fn a_floor_over_the_greatest_value_leaves_the_newer_smaller_write() {
        // Device 1, its clock behind, marks read (70 at wall 9) while device 0 writes 0
        // at wall 10; a floor of 10 must leave 0 whether it meets the join or each side.
        let (old_big, new_small) = (MaxReg::new(st(9, 1), 70), MaxReg::new(st(10, 0), 0));
        let mut joined = old_big.clone();
        joined.join(&new_small);
        assert_eq!(joined.value(), 70);
        assert_eq!(joined.writes().len(), 2);
        assert_eq!(joined.above(10), new_small.above(10));
        assert_eq!(joined.above(10).map(|r| r.value()), Some(0));
        assert_eq!(joined.above(11), None);
    }

    fn max_reg() -> impl Strategy<Value = MaxReg> {
        proptest::collection::vec((0u64..6, 0u8..3, 0u64..5), 1..5).prop_map(|ws| {
            MaxReg::from_writes(ws.into_iter().map(|(t, d, value)| MaxWrite {
                stamp: st(t, d),
                value,
            }))
            .expect("at least one write")
        })
    }

    proptest! {
        /// The join is a semilattice and dropping below a floor distributes over it, which
        /// is what keeps `Replica::merge` associative.
        #[test]
        fn max_register_join_is_a_semilattice_and_floors_distribute(
            a in max_reg(), b in max_reg(), c in max_reg(), floor in 0u64..7,
        ) {
            let join = |x: &MaxReg, y: &MaxReg| { let mut z = x.clone(); z.join(y); z };
            prop_assert_eq!(join(&a, &b), join(&b, &a));
            prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
            prop_assert_eq!(join(&a, &a), a.clone());
            prop_assert_eq!(join(&a, &b).value(), a.value().max(b.value()));
            let kept = match (a.above(floor), b.above(floor)) {
                (Some(x), Some(y)) => Some(join(&x, &y)),
                (x, y) => x.or(y),
            };
            prop_assert_eq!(join(&a, &b).above(floor), kept);
        }
    }

    #[test]
    fn join_below_min_wall_is_ignored() {
        let mut slot: Option<Lww<u32>> = None;
        join_slot(&mut slot, Some(&Lww::new(st(5, 0), 1)), 10);
        assert!(slot.is_none());
        join_slot(&mut slot, Some(&Lww::new(st(10, 0), 1)), 10);
        assert!(slot.is_some());
    }

    #[test]
    fn entries_show_only_whole_existing_records() {
        let mut e: Entry<Pair> = Entry::default();
        e.fields.a = Some(Lww::new(st(1, 0), 1));
        e.exists = Some(Lww::new(st(1, 0), true));
        assert!(!e.is_visible(), "b is missing");
        e.fields.b = Some(MaxReg::new(st(1, 0), 0));
        assert!(e.is_visible());
        e.join(
            &Entry {
                exists: Some(Lww::new(st(2, 0), false)),
                fields: Pair::default(),
            },
            0,
        );
        assert!(!e.is_visible());
        assert!(e.fields.is_complete(), "a deletion keeps the fields");
    }

    #[test]
    fn pruning_removes_only_old_hidden_entries() {
        let mut m: EntryMap<Pair> = BTreeMap::new();
        let whole = |exists: bool, t: u64| Entry {
            exists: Some(Lww::new(st(t, 0), exists)),
            fields: Pair {
                a: Some(Lww::new(st(t, 0), 1)),
                b: Some(MaxReg::new(st(t, 0), 0)),
            },
        };
        m.insert("live-old".into(), whole(true, 1));
        m.insert("dead-old".into(), whole(false, 1));
        m.insert("dead-new".into(), whole(false, 50));
        assert_eq!(prune_map(&mut m, 10), 1);
        assert!(m.contains_key("live-old") && m.contains_key("dead-new"));
    }

    #[test]
    fn horizon_needs_every_device_to_vouch_for_every_device() {
        let (a, b) = (DeviceId([1; 16]), DeviceId([2; 16]));
        let mut marks = Marks::default();
        marks.0.insert(
            a,
            Mark {
                clock_ms: 100,
                seen: [(a, 100), (b, 80)].into(),
            },
        );
        assert_eq!(marks.horizon(&[a, b]), 0, "b has not vouched");
        marks.0.insert(
            b,
            Mark {
                clock_ms: 90,
                seen: [(a, 70), (b, 90)].into(),
            },
        );
        assert_eq!(marks.horizon(&[a, b]), 70);
        assert_eq!(marks.horizon(&[a]), 100);
    }
}
