//! Places in Redis streams: entry ids as Redis orders them, and a message's place
//! within the entry that holds it, with the arithmetic a subscription's watermarks and
//! reads need.

/// A stream entry id, `ms-seq`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct EntryId(pub u64, pub u64);

impl EntryId {
    /// Parses `ms-seq`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }

    /// The entry just before this one.
    pub(crate) fn before(self) -> Self {
        match self {
            Self(ms, 0) => Self(ms.saturating_sub(1), u64::MAX),
            Self(ms, seq) => Self(ms, seq - 1),
        }
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// A message's place in a topic stream: its entry, and its index among the messages of
/// that entry, where the entry's last message has index [`Pos::LAST`]. So `(e, LAST)`
/// also means "all of entry `e`", and places order as the messages do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Pos {
    /// The stream entry.
    pub entry: EntryId,
    /// The index within the entry.
    pub index: u32,
}

impl Pos {
    /// The index of an entry's last message.
    pub(crate) const LAST: u32 = u32::MAX;

    /// All of entry `entry`.
    pub(crate) fn whole(entry: EntryId) -> Self {
        Self {
            entry,
            index: Self::LAST,
        }
    }

    /// Parses `ms-seq` (a whole entry) or `ms-seq/index`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text.split_once('/') {
            None => Some(Self::whole(EntryId::parse(text)?)),
            Some((entry, index)) => Some(Self {
                entry: EntryId::parse(entry)?,
                index: index.parse().ok()?,
            }),
        }
    }

    /// The place just before this one.
    pub(crate) fn before(self) -> Self {
        match self.index {
            0 => Self::whole(self.entry.before()),
            index => Self {
                entry: self.entry,
                index: index - 1,
            },
        }
    }

    /// The entry to read after so that a read returns what comes after this place:
    /// this entry once it is wholly behind, else the one before it.
    pub(crate) fn read_after(self) -> EntryId {
        if self.index == Self::LAST {
            self.entry
        } else {
            self.entry.before()
        }
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Self::LAST => write!(f, "{}", self.entry),
            index => write!(f, "{}/{index}", self.entry),
        }
    }
}
