//! The token file's format: a 64-byte header (magic, id width, token count, the keyed
//! SHA-256 of the entry), the ids, and a trailer (XXH3-128 of the ids, the header's
//! digest); opened checked once ([`open_tokens`]) and mapped ([`map_tokens`]).
/// The layout of a token file's 64-byte header.
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::read_small;
use crate::data::prepare::{keyed_digest, write_atomically};
use crate::data::tokens::{MappedIds, HEADER};

pub(super) const MAGIC: &[u8; 8] = b"GDTOKS\0\x01";
pub(super) const TRAILER: usize = 16 + 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) width: u8,
    pub(super) tokens: u64,
    pub(super) train_end: u64,
    pub(super) test_start: u64,
    pub(super) train_docs: u64,
    pub(super) test_docs: u64,
}

impl Header {
    pub(super) fn bytes(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[..8].copy_from_slice(MAGIC);
        b[8] = self.width;
        for (i, v) in [
            self.tokens,
            self.train_end,
            self.test_start,
            self.train_docs,
            self.test_docs,
        ]
        .iter()
        .enumerate()
        {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    pub(super) fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < HEADER || &b[..8] != MAGIC || !matches!(b[8], 2 | 4) {
            bail!("not a gptdash token file of this version");
        }
        let at =
            |i: usize| u64::from_le_bytes(b[16 + 8 * i..24 + 8 * i].try_into().unwrap_or([0; 8]));
        let h = Self {
            width: b[8],
            tokens: at(0),
            train_end: at(1),
            test_start: at(2),
            train_docs: at(3),
            test_docs: at(4),
        };
        if h.train_end > h.tokens || h.test_start > h.train_end || h.test_start >= h.tokens {
            bail!("its split lies outside its {} tokens", h.tokens);
        }
        Ok(h)
    }
}

/// Opens a token file, trusting nothing in it (see the module's notes).
pub(super) fn open_tokens(path: &Path, key: &[u8], vocab: usize) -> Result<(Header, MappedIds)> {
    let mut file = crate::data::files::open_regular(path, "cache entry", u64::MAX)?;
    let len = file.metadata()?.len();
    let mut head = [0u8; HEADER];
    file.read_exact(&mut head)
        .context("shorter than its header")?;
    let h = Header::parse(&head)?;
    let expected = (HEADER as u64)
        .checked_add(
            h.tokens
                .checked_mul(u64::from(h.width))
                .ok_or_else(|| anyhow!("bad count"))?,
        )
        .and_then(|n| n.checked_add(TRAILER as u64))
        .ok_or_else(|| anyhow!("bad count"))?;
    if len != expected {
        bail!("it is {len} bytes, its header says {expected}");
    }
    let mut trailer = [0u8; TRAILER];
    file.seek(SeekFrom::Start(len - TRAILER as u64))?;
    file.read_exact(&mut trailer)?;
    let mut tagged = head.to_vec();
    tagged.extend_from_slice(&trailer[..16]);
    if keyed_digest(key, &tagged) != trailer[16..] {
        bail!("its checksum does not match (damaged, or filed under another key)");
    }
    // The ids, read in chunks — their XXH3 and their range — the first time this file is
    // opened; a marker beside it (keyed to the entry and to the file's size, inode and
    // modification time) then lets later starts skip the scan, whatever the disk.
    let marker = path.with_extension("verified");
    let stamp = {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata()?;
        let mut b = Vec::new();
        for v in [m.len(), m.ino(), m.dev()] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&m.mtime().to_le_bytes());
        b.extend_from_slice(&m.mtime_nsec().to_le_bytes());
        b.extend_from_slice(&(vocab as u64).to_le_bytes());
        b.extend_from_slice(&tagged);
        keyed_digest(key, &b)
    };
    if read_small(&marker).is_ok_and(|m| m == stamp) {
        return map_tokens(file, h, vocab, path);
    }
    file.seek(SeekFrom::Start(HEADER as u64))?;
    let mut left = h.tokens * u64::from(h.width);
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut max = 0u32;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        file.read_exact(&mut buf[..n])?;
        hash.update(&buf[..n]);
        let chunk_max = if h.width == 2 {
            buf[..n]
                .chunks_exact(2)
                .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
                .max()
        } else {
            buf[..n]
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .max()
        };
        max = max.max(chunk_max.unwrap_or(0));
        left -= n as u64;
    }
    if hash.digest128().to_le_bytes() != trailer[..16] {
        bail!("its ids' checksum does not match (damaged)");
    }
    if h.tokens > 0 && max as usize >= vocab {
        bail!("token id {max} is outside the vocabulary of {vocab}");
    }
    write_atomically(&marker, |w| Ok(w.write_all(&stamp)?));
    map_tokens(file, h, vocab, path)
}

pub(super) fn map_tokens(
    file: std::fs::File,
    h: Header,
    vocab: usize,
    path: &Path,
) -> Result<(Header, MappedIds)> {
    // SAFETY: the file is gptdash's own cache entry, written once and renamed into place,
    // never written again (a rebuilt entry is a new file renamed over the name, which
    // leaves this map on the old one). Every id was checked once, and `extend_into`
    // clamps ids, so a file edited in place gives wrong tokens, never an out-of-range
    // index; one truncated under the map would stop the process (SIGBUS), as for any
    // program reading a file someone truncates.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    #[cfg(unix)]
    let _ = map.advise(memmap2::Advice::Random);
    Ok((
        h,
        MappedIds {
            map,
            width: usize::from(h.width),
            tokens: h.tokens as usize,
            vocab: vocab as u32,
            path: path.to_path_buf(),
        },
    ))
}
