//! Reads a recorder store back. `index` walks the segments by their record
//! headers alone, seeking over payloads; `load` reads one record and checks
//! its payload. A record that fails a check is counted and skipped: after a
//! bad header the walk looks for the next magic, so one torn or rotten
//! record costs that record, never the rest of the segment.
use std::{
    fs::File,
    io::{self, BufReader, Read, Seek, SeekFrom},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::{
    Record, SCHEMA, Start,
    format::{self, Corrupt, HEADER_LEN, Header, MAGIC, RecordKind},
};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{}: no flight recorder store here (is the daemon running with [recorder] enabled, and is this its dir?)", .0.display())]
    Missing(PathBuf),
    #[error("{}: {source}", .dir.display())]
    Io { dir: PathBuf, source: io::Error },
}

#[derive(Debug, Clone)]
struct Segment {
    path: PathBuf,
    first_ms: u64,
    bytes: u64,
}

/// Where one record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub unix_ms: u64,
    pub kind: RecordKind,
    seg: u32,
    /// Of the payload.
    off: u64,
    header: Header,
}

/// What a walk found, for manifests and diagnostics.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub segments: u64,
    pub bytes: u64,
    /// Records with a good header.
    pub records: u64,
    /// Stretches of bytes skipped because no good header was there: torn
    /// tails and corruption. Payload failures are counted by whoever loads.
    pub corrupt: u64,
    pub corrupt_bytes: u64,
    /// Records of a kind or schema newer than this sentinel reads.
    pub unknown: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Index {
    /// In time order.
    pub locs: Vec<Loc>,
    pub stats: Stats,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: record at byte {off}: {what}", .path.display())]
    Corrupt {
        path: PathBuf,
        off: u64,
        what: Corrupt,
    },
    #[error("{}: record at byte {off} is not valid JSON for its kind: {err}", .path.display())]
    Json {
        path: PathBuf,
        off: u64,
        err: String,
    },
}

impl LoadError {
    /// The segment was deleted (retention) since it was indexed: not damage.
    pub fn is_gone(&self) -> bool {
        matches!(self, LoadError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

pub struct Store {
    dir: PathBuf,
    segments: Vec<Segment>,
}

/// `<first unix ms>.seg`
pub(crate) fn segment_name(first_ms: u64) -> String {
    format!("{first_ms:016}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")?.parse().ok()
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, OpenError> {
        let rd = std::fs::read_dir(dir).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => OpenError::Missing(dir.to_owned()),
            _ => OpenError::Io {
                dir: dir.to_owned(),
                source,
            },
        })?;
        let mut segments = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(first_ms) = name.to_str().and_then(parse_segment_name) else {
                continue;
            };
            let bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
            segments.push(Segment {
                path: e.path(),
                first_ms,
                bytes,
            });
        }
        segments.sort_by(|a, b| a.first_ms.cmp(&b.first_ms).then(a.path.cmp(&b.path)));
        Ok(Store {
            dir: dir.to_owned(),
            segments,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.bytes == 0)
    }

    /// The records of `kinds` stamped in `since..=until` (Unix ms), in time
    /// order. Every segment's headers are walked: a segment's name is when
    /// it was opened, not a bound on what it holds (events kept back while
    /// the disk was full are written later with their own time; a clock
    /// stepped back leaves names ahead of records), and a header walk costs
    /// about 25 ms per day of frames.
    pub fn index(&self, since: u64, until: u64, kinds: &[RecordKind]) -> Index {
        let mut out = Index::default();
        for (i, seg) in self.segments.iter().enumerate() {
            out.stats.segments += 1;
            out.stats.bytes += seg.bytes;
            if let Err(e) = walk(seg, i as u32, &mut out, |h| {
                h.unix_ms >= since
                    && h.unix_ms <= until
                    && h.kind.is_some_and(|k| kinds.contains(&k))
            }) {
                tracing::warn!("{}: {e}", seg.path.display());
            }
        }
        out.locs.sort_by_key(|l| l.unix_ms);
        out
    }

    /// The first and last record times.
    pub fn span(&self) -> Option<(u64, u64)> {
        let all = [RecordKind::Start, RecordKind::Event, RecordKind::Frame];
        let idx = self.index(0, u64::MAX, &all);
        Some((idx.locs.first()?.unix_ms, idx.locs.last()?.unix_ms))
    }

    pub fn load(&self, loc: &Loc) -> Result<Record, LoadError> {
        let seg = &self.segments[loc.seg as usize];
        let path = || seg.path.clone();
        let file = File::open(&seg.path).map_err(|source| LoadError::Io {
            path: path(),
            source,
        })?;
        let mut stored = vec![0u8; loc.header.len as usize];
        file.read_exact_at(&mut stored, loc.off)
            .map_err(|source| LoadError::Io {
                path: path(),
                source,
            })?;
        let off = loc.off - HEADER_LEN as u64;
        let json =
            format::decode_payload(&loc.header, &stored).map_err(|what| LoadError::Corrupt {
                path: path(),
                off,
                what,
            })?;
        let bad = |e: serde_json::Error| LoadError::Json {
            path: path(),
            off,
            err: e.to_string(),
        };
        Ok(match loc.kind {
            RecordKind::Start => Record::Start(Box::new(
                serde_json::from_slice::<Start>(&json).map_err(bad)?,
            )),
            RecordKind::Event => {
                Record::Event(Box::new(serde_json::from_slice(&json).map_err(bad)?))
            }
            RecordKind::Frame => {
                Record::Frame(Box::new(serde_json::from_slice(&json).map_err(bad)?))
            }
        })
    }
}

/// Walks one segment's headers, adding those `want` accepts to `out`.
fn walk(
    seg: &Segment,
    seg_no: u32,
    out: &mut Index,
    want: impl Fn(&Header) -> bool,
) -> io::Result<()> {
    let file = File::open(&seg.path)?;
    let len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(64 << 10, file);
    let mut off = 0u64;
    // Where a run of bad bytes began, while resynchronizing.
    let mut bad_from: Option<u64> = None;
    while off + HEADER_LEN as u64 <= len {
        let mut b = [0u8; HEADER_LEN];
        r.seek(SeekFrom::Start(off))?;
        r.read_exact(&mut b)?;
        let h = match format::decode_header(&b) {
            Ok(h) if off + (HEADER_LEN as u64) + u64::from(h.len) <= len => h,
            // A good header whose payload runs past the end: the torn tail.
            Ok(_) => break,
            Err(_) => {
                bad_from.get_or_insert(off);
                off = next_magic(&mut r, off + 1, len)?;
                continue;
            }
        };
        if let Some(from) = bad_from.take() {
            out.stats.corrupt += 1;
            out.stats.corrupt_bytes += off - from;
        }
        out.stats.records += 1;
        let payload = off + HEADER_LEN as u64;
        match h.kind {
            Some(kind) if h.schema <= SCHEMA => {
                if want(&h) {
                    out.locs.push(Loc {
                        unix_ms: h.unix_ms,
                        kind,
                        seg: seg_no,
                        off: payload,
                        header: h,
                    });
                }
            }
            _ => out.stats.unknown += 1,
        }
        off = payload + u64::from(h.len);
    }
    let tail = len.saturating_sub(bad_from.unwrap_or(off));
    if tail > 0 {
        out.stats.corrupt += 1;
        out.stats.corrupt_bytes += tail;
    }
    Ok(())
}

/// The offset of the next "SNTR" at or after `from`, or `len`.
fn next_magic<R: Read + Seek>(r: &mut R, from: u64, len: u64) -> io::Result<u64> {
    let mut pos = from;
    r.seek(SeekFrom::Start(pos))?;
    let mut buf = vec![0u8; 64 << 10];
    while pos < len {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].windows(4).position(|w| w == MAGIC) {
            return Ok(pos + i as u64);
        }
        // A magic split across reads is found by the next one.
        let step = n.saturating_sub(3).max(1);
        pos += step as u64;
        r.seek(SeekFrom::Start(pos))?;
    }
    Ok(len)
}
