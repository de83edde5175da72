//! The five load levels a [`Monitor`](https://docs.rs/brownout-monitor) publishes.

use std::fmt;
use std::str::FromStr;

/// How loaded the protected service is, from [`Normal`](LoadLevel::Normal) to
/// [`Emergency`](LoadLevel::Emergency).
///
/// Levels are ordered: `LoadLevel::Normal < LoadLevel::Emergency`. Every layer scales its
/// behaviour from the current level through a [`LevelTable`](crate::LevelTable).
///
/// ```
/// use brownout_core::LoadLevel;
///
/// let level: LoadLevel = "critical".parse().unwrap();
/// assert!(level > LoadLevel::High);
/// assert_eq!(level.as_u8(), 3);
/// assert_eq!(LoadLevel::from_u8(3), Some(level));
/// assert_eq!(level.to_string(), "critical");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum LoadLevel {
    /// No pressure: everything is served.
    #[default]
    Normal = 0,
    /// Early pressure: background work is shed.
    Elevated = 1,
    /// Sustained pressure: low-priority work is shed, handlers do limited work.
    High = 2,
    /// Heavy pressure: only high-priority work is served.
    Critical = 3,
    /// Survival mode: only critical work is served.
    Emergency = 4,
}

impl LoadLevel {
    /// All levels, lowest first.
    pub const ALL: [LoadLevel; 5] = [
        LoadLevel::Normal,
        LoadLevel::Elevated,
        LoadLevel::High,
        LoadLevel::Critical,
        LoadLevel::Emergency,
    ];

    /// The number of levels.
    pub const COUNT: usize = 5;

    /// The level as its numeric value, `0` (Normal) to `4` (Emergency).
    #[inline]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The level as an index into a five-element table.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The level with numeric value `value`, or `None` when `value > 4`.
    #[inline]
    pub const fn from_u8(value: u8) -> Option<LoadLevel> {
        match value {
            0 => Some(LoadLevel::Normal),
            1 => Some(LoadLevel::Elevated),
            2 => Some(LoadLevel::High),
            3 => Some(LoadLevel::Critical),
            4 => Some(LoadLevel::Emergency),
            _ => None,
        }
    }

    /// The level with numeric value `value`, saturating at [`Emergency`](LoadLevel::Emergency).
    #[inline]
    pub const fn saturating_from_u8(value: u8) -> LoadLevel {
        match LoadLevel::from_u8(value) {
            Some(level) => level,
            None => LoadLevel::Emergency,
        }
    }

    /// The next level up, or `self` at Emergency.
    #[inline]
    pub const fn up(self) -> LoadLevel {
        LoadLevel::saturating_from_u8(self as u8 + 1)
    }

    /// The next level down, or `self` at Normal.
    #[inline]
    pub const fn down(self) -> LoadLevel {
        match self {
            LoadLevel::Normal => LoadLevel::Normal,
            other => LoadLevel::saturating_from_u8(other as u8 - 1),
        }
    }

    /// The lower-case name, as used in headers, metrics labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            LoadLevel::Normal => "normal",
            LoadLevel::Elevated => "elevated",
            LoadLevel::High => "high",
            LoadLevel::Critical => "critical",
            LoadLevel::Emergency => "emergency",
        }
    }
}

impl fmt::Display for LoadLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned when a string names no [`LoadLevel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLevelError(());

impl fmt::Display for ParseLevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "invalid load level: expected normal, elevated, high, critical, emergency or 0-4",
        )
    }
}

impl std::error::Error for ParseLevelError {}

impl FromStr for LoadLevel {
    type Err = ParseLevelError;

    /// Parses a level name (case-insensitive, surrounding white space ignored) or a digit `0`–`4`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let [digit @ b'0'..=b'4'] = s.as_bytes() {
            return Ok(LoadLevel::saturating_from_u8(digit - b'0'));
        }
        LoadLevel::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(s))
            .ok_or(ParseLevelError(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for level in LoadLevel::ALL {
            assert_eq!(LoadLevel::from_u8(level.as_u8()), Some(level));
            assert_eq!(level.to_string().parse::<LoadLevel>(), Ok(level));
            assert_eq!(
                level.as_str().to_uppercase().parse::<LoadLevel>(),
                Ok(level)
            );
        }
        assert_eq!(LoadLevel::from_u8(5), None);
        assert_eq!(LoadLevel::saturating_from_u8(200), LoadLevel::Emergency);
    }

    #[test]
    fn ordered_and_stepped() {
        assert!(LoadLevel::Normal < LoadLevel::Elevated);
        assert!(LoadLevel::Critical < LoadLevel::Emergency);
        assert_eq!(LoadLevel::Emergency.up(), LoadLevel::Emergency);
        assert_eq!(LoadLevel::Normal.down(), LoadLevel::Normal);
        assert_eq!(LoadLevel::High.up(), LoadLevel::Critical);
        assert_eq!(LoadLevel::High.down(), LoadLevel::Elevated);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "5", "-1", "hig", "normal!", "\u{0}", "１"] {
            assert!(bad.parse::<LoadLevel>().is_err(), "{bad:?}");
        }
        assert_eq!(" High ".parse::<LoadLevel>(), Ok(LoadLevel::High));
        assert_eq!("2".parse::<LoadLevel>(), Ok(LoadLevel::High));
    }
}
