//! Request classes, from [`Critical`](Priority::Critical) down to [`Background`](Priority::Background).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// The class of a request: what is shed first and served first.
///
/// Ordered by importance: `Priority::Critical > Priority::Background`. The numeric
/// [`rank`](Priority::rank) runs the other way (`0` is Critical), as in RFC 9218 urgency and
/// in the `x-priority: 0..4` header form.
///
/// ```
/// use brownout_core::Priority;
///
/// assert!(Priority::Critical > Priority::Low);
/// assert_eq!("HIGH".parse::<Priority>(), Ok(Priority::High));
/// assert_eq!("0".parse::<Priority>(), Ok(Priority::Critical));
/// assert_eq!(Priority::from_urgency(7), Priority::Background);
/// assert_eq!(Priority::default(), Priority::Medium);
/// // Malformed input never panics: parsing fails, callers fall back to a default.
/// assert!("urgent!!".parse::<Priority>().is_err());
/// assert_eq!(Priority::parse_or_default("urgent!!"), Priority::Medium);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Priority {
    /// Must be served even in an emergency (health checks, payments).
    Critical = 0,
    /// User-facing work (queries, admin).
    High = 1,
    /// Ordinary work; the default class.
    #[default]
    Medium = 2,
    /// Work that can wait (analytics).
    Low = 3,
    /// Work nobody waits for (maintenance, prefetch).
    Background = 4,
}

impl Priority {
    /// All classes, most important first.
    pub const ALL: [Priority; 5] = [
        Priority::Critical,
        Priority::High,
        Priority::Medium,
        Priority::Low,
        Priority::Background,
    ];

    /// The number of classes.
    pub const COUNT: usize = 5;

    /// The rank, `0` (Critical) to `4` (Background). Lower is more important.
    #[inline]
    pub const fn rank(self) -> u8 {
        self as u8
    }

    /// The rank as an index into a five-element table (Critical first).
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The class with rank `rank`, or `None` when `rank > 4`.
    #[inline]
    pub const fn from_rank(rank: u8) -> Option<Priority> {
        match rank {
            0 => Some(Priority::Critical),
            1 => Some(Priority::High),
            2 => Some(Priority::Medium),
            3 => Some(Priority::Low),
            4 => Some(Priority::Background),
            _ => None,
        }
    }

    /// Maps an RFC 9218 urgency (`u=0` most urgent … `u=7`, default `3`) onto a class.
    ///
    /// `0` → Critical, `1`–`2` → High, `3` → Medium, `4`–`5` → Low, `6`–`7` (and anything
    /// larger) → Background.
    pub const fn from_urgency(urgency: u8) -> Priority {
        match urgency {
            0 => Priority::Critical,
            1 | 2 => Priority::High,
            3 => Priority::Medium,
            4 | 5 => Priority::Low,
            _ => Priority::Background,
        }
    }

    /// Parses an RFC 9218 `priority` header value (a structured-field dictionary such as
    /// `u=1, i`) and maps its urgency with [`from_urgency`](Priority::from_urgency).
    ///
    /// Returns `None` when the value has no valid `u` member; unknown members are ignored,
    /// as the RFC asks.
    pub fn from_rfc9218(value: &str) -> Option<Priority> {
        let mut found = None;
        for member in value.split(',') {
            let member = member.trim();
            let Some(rest) = member.strip_prefix('u') else {
                continue;
            };
            let Some(number) = rest.trim_start().strip_prefix('=') else {
                continue;
            };
            // Parameters (`;x=y`) may follow an item; ignore them.
            let number = number.split(';').next().unwrap_or("").trim();
            match number.as_bytes() {
                [digit @ b'0'..=b'7'] => found = Some(Priority::from_urgency(digit - b'0')),
                _ => return None,
            }
        }
        found
    }

    /// Parses `s` like [`FromStr`], falling back to the default class (Medium) on malformed input.
    pub fn parse_or_default(s: &str) -> Priority {
        s.parse().unwrap_or_default()
    }

    /// The class a header value's bytes name, as [`FromStr`] reads text (a name in any case,
    /// surrounding white space ignored, or a rank digit); `None` for anything else, non-UTF-8
    /// included. The lower-case names and the digits, what clients send, are matched on the
    /// bytes first, without the UTF-8 check, trim and case-insensitive search of the general
    /// parse (this runs on every request a header classifier sees).
    ///
    /// ```
    /// use brownout_core::Priority;
    ///
    /// assert_eq!(Priority::from_bytes(b"high"), Some(Priority::High));
    /// assert_eq!(Priority::from_bytes(b" Low "), Some(Priority::Low));
    /// assert_eq!(Priority::from_bytes(b"\xff"), None);
    /// ```
    #[inline]
    pub fn from_bytes(bytes: &[u8]) -> Option<Priority> {
        let exact = match bytes {
            b"critical" | b"0" => Priority::Critical,
            b"high" | b"1" => Priority::High,
            b"medium" | b"2" => Priority::Medium,
            b"low" | b"3" => Priority::Low,
            b"background" | b"4" => Priority::Background,
            _ => return std::str::from_utf8(bytes).ok()?.parse().ok(),
        };
        Some(exact)
    }

    /// The lower-case name, as used in headers and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
            Priority::Background => "background",
        }
    }
}

impl Ord for Priority {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        // Lower rank is more important, so it compares greater.
        other.rank().cmp(&self.rank())
    }
}

impl PartialOrd for Priority {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned when a string names no [`Priority`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsePriorityError(());

impl fmt::Display for ParsePriorityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid priority: expected critical, high, medium, low, background or 0-4")
    }
}

impl std::error::Error for ParsePriorityError {}

impl FromStr for Priority {
    type Err = ParsePriorityError;

    /// Parses a class name (case-insensitive, surrounding white space ignored) or a rank
    /// digit `0` (Critical) to `4` (Background).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let [digit @ b'0'..=b'4'] = s.as_bytes() {
            return Priority::from_rank(digit - b'0').ok_or(ParsePriorityError(()));
        }
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or(ParsePriorityError(()))
    }
}

/// A set of [`Priority`] classes, stored as a bit set (one byte, `Copy`).
///
/// ```
/// use brownout_core::{Priority, PrioritySet};
///
/// let shed = PrioritySet::at_or_below(Priority::Low);
/// assert!(shed.contains(Priority::Background));
/// assert!(!shed.contains(Priority::Medium));
/// assert_eq!(shed.len(), 2);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PrioritySet(u8);

impl PrioritySet {
    /// No class.
    pub const EMPTY: PrioritySet = PrioritySet(0);
    /// Every class.
    pub const ALL: PrioritySet = PrioritySet(0b1_1111);

    /// The set holding exactly `priority`.
    #[inline]
    pub const fn only(priority: Priority) -> PrioritySet {
        PrioritySet(1 << priority.rank())
    }

    /// Every class at or below `priority` in importance (`Low` gives Low and Background).
    #[inline]
    pub const fn at_or_below(priority: Priority) -> PrioritySet {
        PrioritySet(PrioritySet::ALL.0 & !((1u8 << priority.rank()) - 1))
    }

    /// Every class strictly below `priority` in importance (`Critical` gives all but Critical).
    #[inline]
    pub const fn below(priority: Priority) -> PrioritySet {
        PrioritySet(PrioritySet::ALL.0 & !((1u8 << (priority.rank() + 1)) - 1))
    }

    /// The set with `priority` added.
    #[inline]
    #[must_use]
    pub const fn with(self, priority: Priority) -> PrioritySet {
        PrioritySet(self.0 | (1 << priority.rank()))
    }

    /// Whether `priority` is in the set.
    #[inline]
    pub const fn contains(self, priority: Priority) -> bool {
        self.0 & (1 << priority.rank()) != 0
    }

    /// Whether every class of `self` is also in `other`.
    #[inline]
    pub const fn is_subset(self, other: PrioritySet) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether the set is empty.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The number of classes in the set.
    #[inline]
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The most important class in the set, if any.
    #[inline]
    pub const fn highest(self) -> Option<Priority> {
        if self.0 == 0 {
            None
        } else {
            Priority::from_rank(self.0.trailing_zeros() as u8)
        }
    }

    /// The classes in the set, most important first.
    pub fn iter(self) -> impl Iterator<Item = Priority> {
        Priority::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Priority> for PrioritySet {
    fn from_iter<I: IntoIterator<Item = Priority>>(iter: I) -> Self {
        iter.into_iter().fold(PrioritySet::EMPTY, PrioritySet::with)
    }
}

impl fmt::Debug for PrioritySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordering_puts_critical_first() {
        let mut all = Priority::ALL;
        all.sort();
        assert_eq!(all[0], Priority::Background);
        assert_eq!(all[4], Priority::Critical);
        assert!(Priority::High > Priority::Medium);
    }

    #[test]
    fn parses_names_and_digits() {
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>(), Ok(p));
            assert_eq!(p.as_str().to_uppercase().parse::<Priority>(), Ok(p));
            assert_eq!(p.rank().to_string().parse::<Priority>(), Ok(p));
        }
        for bad in ["", "5", "-0", "01", "crit", "medium low", "\u{feff}high"] {
            assert!(bad.parse::<Priority>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rfc9218_urgency() {
        assert_eq!(Priority::from_rfc9218("u=0"), Some(Priority::Critical));
        assert_eq!(Priority::from_rfc9218("u=3, i"), Some(Priority::Medium));
        assert_eq!(Priority::from_rfc9218("i, u=6"), Some(Priority::Background));
        assert_eq!(Priority::from_rfc9218("u=1;x=2"), Some(Priority::High));
        assert_eq!(Priority::from_rfc9218("i"), None);
        assert_eq!(Priority::from_rfc9218("u=8"), None);
        assert_eq!(Priority::from_rfc9218("u=-1"), None);
        assert_eq!(Priority::from_rfc9218("u="), None);
        assert_eq!(Priority::from_rfc9218(""), None);
        for u in 0..=255u8 {
            let _ = Priority::from_urgency(u);
        }
    }

    #[test]
    fn sets() {
        assert_eq!(
            PrioritySet::at_or_below(Priority::Critical),
            PrioritySet::ALL
        );
        assert_eq!(
            PrioritySet::below(Priority::Critical),
            [
                Priority::High,
                Priority::Medium,
                Priority::Low,
                Priority::Background
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(PrioritySet::below(Priority::Background), PrioritySet::EMPTY);
        assert_eq!(PrioritySet::at_or_below(Priority::Background).len(), 1);
        assert_eq!(
            PrioritySet::at_or_below(Priority::Low).highest(),
            Some(Priority::Low)
        );
        assert!(
            PrioritySet::only(Priority::Low).is_subset(PrioritySet::at_or_below(Priority::Medium))
        );
        assert_eq!(format!("{:?}", PrioritySet::only(Priority::High)), "{High}");
    }

    proptest! {
        // The byte fast path names the same class as `FromStr`, for values made of class
        // names, digits, case changes, white space and junk alike.
        #[test]
        fn from_bytes_agrees_with_from_str(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("critical"), Just("high"), Just("medium"), Just("low"),
                    Just("background"), Just("HIGH"), Just("Low"), Just("0"), Just("4"),
                    Just("5"), Just(" "), Just("\t"), Just("x"), Just("é"),
                ],
                0..4,
            )
        ) {
            let text = parts.concat();
            prop_assert_eq!(Priority::from_bytes(text.as_bytes()), text.parse::<Priority>().ok());
        }

        #[test]
        fn parsing_never_panics(s in ".*") {
            let _ = s.parse::<Priority>();
            let _ = Priority::from_rfc9218(&s);
            let _ = Priority::parse_or_default(&s);
        }

        #[test]
        fn rfc9218_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let s = String::from_utf8_lossy(&bytes);
            let _ = Priority::from_rfc9218(&s);
        }
    }
}
