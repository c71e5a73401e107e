//! A webhook's durable queue, one file per item under
//! `<state_dir>/spool/<sink name>/`, so undelivered events survive
//! `kill -9`, reboots and a receiver that is down for hours.
//!
//! A file is `<seq:016x>-<i|w|c>.json`: the sequence number orders delivery
//! and the letter (severity) lets a full spool choose what to drop without
//! reading anything. Its content is one JSON [`Item`]. Files are written
//! as `.<name>.tmp`, fsynced, linked to their name and the directory
//! fsynced, so a crash leaves either the whole file or a `.tmp` that the
//! next start removes. A file that does not parse is renamed `<name>.corrupt` and
//! skipped: one bad file must not stop a sink.
use std::collections::VecDeque;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;

use super::summary::Item;
use crate::event::Severity;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_events: usize,
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    seq: u64,
    severity: Severity,
    size: u64,
}

/// An item the full spool gave up, for the loss report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub id: String,
    /// The event kind, `summary`, or `unknown` if the file was unreadable.
    pub kind: String,
    pub severity: Severity,
    pub host: String,
}

impl Lost {
    pub fn of(item: &Item) -> Lost {
        Lost {
            id: item.id().to_string(),
            kind: item.kind().to_string(),
            severity: item.severity(),
            host: item.host().to_string(),
        }
    }
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limits: Limits,
    /// Oldest first.
    entries: VecDeque<Entry>,
    bytes: u64,
    next_seq: u64,
}

impl Spool {
    /// Creates the directory (0700: events name processes and containers),
    /// checks that a file can be written there, removes half-written files
    /// and indexes what an earlier run left, oldest first.
    pub fn open(dir: &Path, limits: Limits) -> anyhow::Result<Spool> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create spool directory {}", dir.display()))?;
        probe(dir).with_context(|| format!("spool directory {} is not writable", dir.display()))?;

        let mut entries = Vec::new();
        let list = fs::read_dir(dir)
            .with_context(|| format!("cannot read spool directory {}", dir.display()))?;
        for de in list {
            let de =
                de.with_context(|| format!("cannot read spool directory {}", dir.display()))?;
            let name = de.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                tracing::debug!(file = %de.path().display(), "removing a half-written spool file");
                if let Err(e) = fs::remove_file(de.path()) {
                    tracing::warn!(file = %de.path().display(), "cannot remove a half-written spool file: {e}");
                }
                continue;
            }
            let Some((seq, severity)) = parse_name(name) else {
                continue;
            };
            // A file that vanished since the listing is simply not there.
            let Ok(meta) = de.metadata() else { continue };
            entries.push(Entry {
                seq,
                severity,
                size: meta.len(),
            });
        }
        entries.sort_unstable_by_key(|e| e.seq);
        let mut spool = Spool {
            dir: dir.to_owned(),
            limits,
            bytes: entries.iter().map(|e| e.size).sum(),
            next_seq: entries.last().map_or(0, |e| e.seq + 1),
            entries: entries.into(),
        };
        // The limits may have shrunk since the files were written.
        let (victims, _) = plan(&spool.entries, spool.bytes, limits, None);
        let lost = spool.evict(&victims);
        if !lost.is_empty() {
            tracing::warn!(
                spool = %dir.display(),
                "dropped {} spooled events to fit the configured limits",
                lost.len()
            );
        }
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Stores `item` durably, first dropping what the limits require:
    /// the oldest info items, then the oldest warnings. Criticals are
    /// always kept, past the limits if need be. Returns what was dropped,
    /// which may be `item` itself (an info item when only warnings and
    /// criticals are left).
    pub fn push(&mut self, item: &Item) -> io::Result<Vec<Lost>> {
        let body = serde_json::to_vec(item)?;
        let incoming = Entry {
            seq: self.next_seq,
            severity: item.severity(),
            size: body.len() as u64,
        };
        let (victims, drop_incoming) = plan(&self.entries, self.bytes, self.limits, Some(incoming));
        let mut lost = self.evict(&victims);
        if drop_incoming {
            lost.push(Lost::of(item));
            return Ok(lost);
        }
        let mut incoming = incoming;
        let tmp = self.dir.join(temp_name());
        let written = write_synced(&tmp, &body).and_then(|()| {
            incoming.seq = self.publish(&tmp, incoming)?;
            File::open(&self.dir)?.sync_all()
        });
        let _ = fs::remove_file(&tmp);
        written?;
        self.next_seq = incoming.seq + 1;
        self.bytes += incoming.size;
        self.entries.push_back(incoming);
        Ok(lost)
    }

    /// Gives the written `tmp` its final name, at the first free sequence
    /// number from `e.seq`. A link, unlike a rename, never replaces a file:
    /// a sink being replaced (SIGHUP) may still be spooling into the same
    /// directory with its own numbering.
    fn publish(&self, tmp: &Path, e: Entry) -> io::Result<u64> {
        let mut seq = e.seq;
        loop {
            let taken = [Severity::Info, Severity::Warning, Severity::Critical]
                .into_iter()
                .any(|s| s != e.severity && self.dir.join(file_name(seq, s)).exists());
            if taken {
                seq += 1;
                continue;
            }
            match fs::hard_link(tmp, self.dir.join(file_name(seq, e.severity))) {
                Ok(()) => return Ok(seq),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists && seq - e.seq < 1000 => {
                    seq += 1;
                }
                // A file system without hard links.
                Err(_) => {
                    fs::rename(tmp, self.dir.join(file_name(seq, e.severity)))?;
                    return Ok(seq);
                }
            }
        }
    }

    /// The oldest item and its sequence number. Files that vanished are
    /// forgotten; files that do not parse are set aside as `.corrupt`.
    pub fn front(&mut self) -> Option<(u64, Item)> {
        while let Some(&e) = self.entries.front() {
            let path = self.path(&e);
            let parsed = fs::read(&path).map(|b| serde_json::from_slice::<Item>(&b));
            match parsed {
                Ok(Ok(item)) => return Some((e.seq, item)),
                // Delivered by a sink this one replaced (SIGHUP) after it
                // was indexed.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Ok(Err(err)) => quarantine(&path, &err.to_string()),
                Err(err) => quarantine(&path, &err.to_string()),
            }
            self.forget(0);
        }
        None
    }

    /// Deletes a delivered (or given up) item.
    pub fn remove(&mut self, seq: u64) {
        let Some(i) = self.entries.iter().position(|e| e.seq == seq) else {
            return;
        };
        let e = self.entries[i];
        match fs::remove_file(self.path(&e)) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            // It will be delivered again after a restart: at least once.
            Err(err) => tracing::warn!(
                file = %self.path(&e).display(),
                "cannot remove a delivered spool file: {err}"
            ),
        }
        self.forget(i);
    }

    fn forget(&mut self, i: usize) {
        if let Some(e) = self.entries.remove(i) {
            self.bytes -= e.size;
        }
    }

    /// Removes the entries at `victims` (ascending indices), reading each
    /// first so the loss report can say what went.
    fn evict(&mut self, victims: &[usize]) -> Vec<Lost> {
        let mut lost = Vec::with_capacity(victims.len());
        for &i in victims.iter().rev() {
            let e = self.entries[i];
            let path = self.path(&e);
            let item = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Item>(&b).ok());
            lost.push(match item {
                Some(item) => Lost::of(&item),
                None => Lost {
                    id: String::new(),
                    kind: "unknown".into(),
                    severity: e.severity,
                    host: String::new(),
                },
            });
            if let Err(err) = fs::remove_file(&path)
                && err.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(file = %path.display(), "cannot remove a dropped spool file: {err}");
            }
            self.forget(i);
        }
        lost.reverse();
        lost
    }

    fn path(&self, e: &Entry) -> PathBuf {
        self.dir.join(file_name(e.seq, e.severity))
    }
}

/// Which entries (ascending indices) to drop so that `incoming` fits, and
/// whether `incoming` itself is dropped: oldest info first, then oldest
/// warning, the incoming item counting as the newest.
fn plan(
    entries: &VecDeque<Entry>,
    bytes: u64,
    limits: Limits,
    incoming: Option<Entry>,
) -> (Vec<usize>, bool) {
    let mut count = entries.len() + usize::from(incoming.is_some());
    let mut total = bytes + incoming.map_or(0, |e| e.size);
    let fits = |count: usize, total: u64| count <= limits.max_events && total <= limits.max_bytes;
    let mut victims = Vec::new();
    let mut drop_incoming = false;
    for sev in [Severity::Info, Severity::Warning] {
        let candidates = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (Some(i), e))
            .chain(incoming.iter().map(|e| (None, e)));
        for (i, e) in candidates {
            if fits(count, total) {
                break;
            }
            if e.severity != sev {
                continue;
            }
            match i {
                Some(i) => victims.push(i),
                None => drop_incoming = true,
            }
            count -= 1;
            total -= e.size;
        }
    }
    victims.sort_unstable();
    (victims, drop_incoming)
}

fn letter(s: Severity) -> char {
    match s {
        Severity::Info => 'i',
        Severity::Warning => 'w',
        Severity::Critical => 'c',
    }
}

fn file_name(seq: u64, severity: Severity) -> String {
    format!("{seq:016x}-{}.json", letter(severity))
}

fn parse_name(name: &str) -> Option<(u64, Severity)> {
    let stem = name.strip_suffix(".json")?;
    let (seq, sev) = stem.split_once('-')?;
    if seq.len() != 16 {
        return None;
    }
    let seq = u64::from_str_radix(seq, 16).ok()?;
    let severity = match sev {
        "i" => Severity::Info,
        "w" => Severity::Warning,
        "c" => Severity::Critical,
        _ => return None,
    };
    Some((seq, severity))
}

/// Unique among the writers that may share a directory: this process's
/// sinks, and another process.
fn temp_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(".{}-{n}.tmp", std::process::id())
}

fn write_synced(path: &Path, body: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(body)?;
    f.sync_all()
}

/// Writing the directory's permission bits says nothing on a read-only
/// mount, and root passes every permission check: try a real file.
fn probe(dir: &Path) -> io::Result<()> {
    let path = dir.join(temp_name());
    let r = write_synced(&path, b"");
    let _ = fs::remove_file(&path);
    r
}

fn quarantine(path: &Path, why: &str) {
    let aside = path.with_extension("json.corrupt");
    tracing::warn!(
        file = %path.display(),
        "unreadable spool file set aside as {}: {why}",
        aside.display()
    );
    if let Err(e) = fs::rename(path, &aside) {
        tracing::warn!(file = %path.display(), "cannot set aside: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;
    use crate::sink::summary::tests::event;

    const ROOMY: Limits = Limits {
        max_events: 100,
        max_bytes: 1 << 20,
    };

    fn item(n: u32, sev: Severity) -> Item {
        Item::Event(event(n, Kind::Hang, sev))
    }

    fn drain(s: &mut Spool) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((seq, item)) = s.front() {
            out.push(item.id().to_string());
            s.remove(seq);
        }
        out
    }

    #[test]
    fn in_order_and_resumed_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool/hook");
        let mut s = Spool::open(&path, ROOMY).unwrap();
        for n in 0..5 {
            assert_eq!(s.push(&item(n, Severity::Warning)).unwrap(), vec![]);
        }
        assert_eq!(s.len(), 5);
        let (seq, first) = s.front().unwrap();
        assert_eq!(first.id(), "id0000");
        s.remove(seq);
        let bytes = s.bytes();
        drop(s);

        let mut s = Spool::open(&path, ROOMY).unwrap();
        assert_eq!((s.len(), s.bytes()), (4, bytes));
        s.push(&item(5, Severity::Info)).unwrap();
        assert_eq!(
            drain(&mut s),
            ["id0001", "id0002", "id0003", "id0004", "id0005"]
        );
        assert!(s.is_empty() && s.bytes() == 0);
        assert_eq!(fs::read_dir(&path).unwrap().count(), 0);
    }

    #[test]
    fn torn_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), ROOMY).unwrap();
        s.push(&item(0, Severity::Info)).unwrap();
        s.push(&item(1, Severity::Info)).unwrap();
        s.push(&item(2, Severity::Info)).unwrap();
        drop(s);
        // A crash mid-write, a file cut short, and a stranger.
        fs::write(dir.path().join("0000000000000003-c.json.tmp"), b"{\"ev").unwrap();
        let second = dir.path().join("0000000000000001-i.json");
        fs::write(&second, b"{\"event\": {\"id\"").unwrap();
        fs::write(dir.path().join("README"), b"hello").unwrap();

        let mut s = Spool::open(dir.path(), ROOMY).unwrap();
        assert!(!dir.path().join("0000000000000003-c.json.tmp").exists());
        assert_eq!(s.len(), 3);
        assert_eq!(drain(&mut s), ["id0000", "id0002"]);
        assert!(dir.path().join("0000000000000001-i.json.corrupt").exists());
        // Numbering continues after what was found.
        s.push(&item(9, Severity::Info)).unwrap();
        assert!(dir.path().join("0000000000000003-i.json").exists());
        // Nor does it replace a file another writer put there meanwhile.
        fs::write(dir.path().join("0000000000000004-w.json"), b"{}").unwrap();
        s.push(&item(10, Severity::Warning)).unwrap();
        assert!(dir.path().join("0000000000000005-w.json").exists());
        assert_eq!(
            fs::read(dir.path().join("0000000000000004-w.json")).unwrap(),
            b"{}"
        );
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn full_spool_drops_info_then_warnings_and_keeps_criticals() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_events: 4,
            max_bytes: 1 << 20,
        };
        let mut s = Spool::open(dir.path(), limits).unwrap();
        s.push(&item(0, Severity::Warning)).unwrap();
        s.push(&item(1, Severity::Info)).unwrap();
        s.push(&item(2, Severity::Critical)).unwrap();
        s.push(&item(3, Severity::Info)).unwrap();
        // Full: the oldest info goes.
        let lost = s.push(&item(4, Severity::Warning)).unwrap();
        assert_eq!(lost.len(), 1);
        assert_eq!(
            (lost[0].id.as_str(), lost[0].kind.as_str()),
            ("id0001", "hang")
        );
        // Then the other info, then the oldest warning.
        let lost = s.push(&item(5, Severity::Critical)).unwrap();
        assert_eq!(lost[0].id, "id0003");
        let lost = s.push(&item(6, Severity::Critical)).unwrap();
        assert_eq!(lost[0].id, "id0000");
        // An info item arriving when only warnings and criticals are left
        // is the oldest info: it goes itself.
        let lost = s.push(&item(7, Severity::Info)).unwrap();
        assert_eq!(lost[0].id, "id0007");
        let lost = s.push(&item(8, Severity::Critical)).unwrap();
        assert_eq!(lost[0].id, "id0004");
        // Only criticals left: they are all kept, past the limit.
        assert_eq!(s.push(&item(9, Severity::Critical)).unwrap(), vec![]);
        assert_eq!(s.len(), 5);
        assert_eq!(
            drain(&mut s),
            ["id0002", "id0005", "id0006", "id0008", "id0009"]
        );
    }

    #[test]
    fn byte_limit_and_shrunk_limits_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), ROOMY).unwrap();
        for n in 0..6 {
            s.push(&item(n, Severity::Info)).unwrap();
        }
        let one = s.bytes() / 6;
        drop(s);
        let limits = Limits {
            max_events: 100,
            max_bytes: one * 3 + one / 2,
        };
        let mut s = Spool::open(dir.path(), limits).unwrap();
        assert_eq!(s.len(), 3);
        let lost = s.push(&item(6, Severity::Info)).unwrap();
        assert_eq!(lost[0].id, "id0003");
        assert_eq!(drain(&mut s), ["id0004", "id0005", "id0006"]);
    }

    #[test]
    fn unwritable_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state");
        fs::write(&file, b"").unwrap();
        let err = Spool::open(&file.join("spool/hook"), ROOMY).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("cannot create spool directory"), "{msg}");
        assert!(
            msg.contains(&file.join("spool/hook").display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            file_name(0x1f, Severity::Critical),
            "000000000000001f-c.json"
        );
        assert_eq!(
            parse_name("000000000000001f-c.json"),
            Some((0x1f, Severity::Critical))
        );
        assert_eq!(parse_name("000000000000001f-x.json"), None);
        assert_eq!(parse_name("1f-c.json"), None);
        assert_eq!(parse_name("000000000000001f-c.json.tmp"), None);
    }
}
