//! Token ids of a packed stream, in memory or read from a token file of the cache
//! memory-mapped ([`crate::data::stream`] writes and checks those files).
use std::path::PathBuf;

/// The size of a token file's header, before its ids.
pub(crate) const HEADER: usize = 64;

/// Token ids of a packed stream: in memory, or a token file of the cache read
/// memory-mapped (see [`crate::data::stream`]).
#[derive(Debug)]
pub(crate) enum TokenIds {
    Memory(Vec<u32>),
    Mapped(MappedIds),
}

impl TokenIds {
    pub(crate) fn len(&self) -> usize {
        match self {
            TokenIds::Memory(v) => v.len(),
            TokenIds::Mapped(m) => m.len(),
        }
    }

    /// Appends ids `[start, end)` to `out`.
    pub(crate) fn extend_into(&self, start: usize, end: usize, out: &mut Vec<i64>) {
        match self {
            TokenIds::Memory(v) => out.extend(v[start..end].iter().map(|&i| i64::from(i))),
            TokenIds::Mapped(m) => m.extend_into(start, end, out),
        }
    }
}

impl PartialEq for TokenIds {
    fn eq(&self, other: &Self) -> bool {
        let mut a = Vec::new();
        let mut b = Vec::new();
        self.extend_into(0, self.len(), &mut a);
        other.extend_into(0, other.len(), &mut b);
        a == b
    }
}

/// A token file's ids, memory-mapped.
pub(crate) struct MappedIds {
    pub(crate) map: memmap2::Mmap,
    pub(crate) width: usize,
    pub(crate) tokens: usize,
    pub(crate) vocab: u32,
    pub(crate) path: PathBuf,
}

impl std::fmt::Debug for MappedIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MappedIds({}, {} tokens)",
            self.path.display(),
            self.tokens
        )
    }
}

impl MappedIds {
    pub(crate) fn len(&self) -> usize {
        self.tokens
    }

    /// Appends ids `[start, end)` (as checked when the file was opened; an id past the
    /// vocabulary, the file changed since, becomes the last id rather than a crash).
    pub(crate) fn extend_into(&self, start: usize, end: usize, out: &mut Vec<i64>) {
        let (from, to) = (HEADER + start * self.width, HEADER + end * self.width);
        self.read_into(&self.map[from..to], out);
        // The pages just read leave this process's resident memory (they stay in the
        // kernel's page cache, shared and reclaimable): otherwise random windows would
        // map, one by one, the whole file into the run's RSS.
        // SAFETY: a read-only map of a file nobody writes through: MADV_DONTNEED only
        // drops page-table entries, and the next read faults the pages in from the file.
        // The kernel maps neighbouring pages along with a faulting one (fault-around,
        // 64 KB by default), so the whole aligned 2 MB around the read goes.
        const SPAN: usize = 2 << 20;
        let lo = from / SPAN * SPAN;
        let hi = to.div_ceil(SPAN).saturating_mul(SPAN).min(self.map.len());
        let _ = unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, lo, hi - lo)
        };
    }

    fn read_into(&self, bytes: &[u8], out: &mut Vec<i64>) {
        let last = i64::from(self.vocab.saturating_sub(1));
        if self.width == 2 {
            out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| i64::from(u16::from_le_bytes([b[0], b[1]])).min(last)),
            );
        } else {
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| i64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).min(last)),
            );
        }
    }
}
