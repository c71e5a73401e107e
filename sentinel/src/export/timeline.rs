//! The timelines as CSV: one row per recorded frame in which the subject
//! appears. Columns are defined once here (name and value side by side),
//! so a header can never drift from its rows. Units are in the column
//! names; an empty cell means "not known" (a rate needs two samples), never
//! zero.
use std::{
    fmt::Write as _,
    fs::OpenOptions,
    io::{self, Write},
    path::{Path, PathBuf},
};

use crate::{
    event::rfc3339,
    top::frame::{ContainerRow, Flag, Frame, ProcRow},
};

type Col<T> = (&'static str, fn(&T, &mut String));

fn num(v: impl std::fmt::Display, out: &mut String) {
    let _ = write!(out, "{v}");
}

/// Rates and percentages with two decimals; None is an empty cell.
fn opt(v: Option<f64>, out: &mut String) {
    if let Some(v) = v.filter(|v| v.is_finite()) {
        let _ = write!(out, "{}", (v * 100.0).round() / 100.0);
    }
}

fn flags(f: &[Flag], out: &mut String) {
    let kinds: Vec<&str> = f.iter().map(|f| f.kind.as_str()).collect();
    text(&kinds.join(";"), out);
}

/// RFC 4180: a field holding a comma, quote or line break is quoted, with
/// quotes doubled. Names come from processes and runtimes, so anything can
/// be in them.
pub fn text(s: &str, out: &mut String) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

pub const PROCESS: &[Col<ProcRow>] = &[
    ("pid", |p, o| num(p.pid, o)),
    ("comm", |p, o| text(&p.comm, o)),
    ("state", |p, o| o.push(p.state)),
    ("rss_bytes", |p, o| num(p.rss, o)),
    ("rss_growth_bytes_per_min", |p, o| {
        opt(p.rss_growth_per_min, o)
    }),
    ("cpu_pct", |p, o| opt(p.cpu_pct, o)),
    ("faults_per_s", |p, o| opt(p.faults_per_s, o)),
    ("major_faults_per_s", |p, o| opt(p.majflt_per_s, o)),
    ("read_bytes_per_s", |p, o| opt(p.read_per_s, o)),
    ("write_bytes_per_s", |p, o| opt(p.write_per_s, o)),
    ("threads", |p, o| num(p.threads, o)),
    ("blocked_threads", |p, o| num(p.blocked, o)),
    ("longest_wait_s", |p, o| opt(p.longest_wait_s, o)),
    ("container", |p, o| {
        text(p.container.as_deref().unwrap_or(""), o)
    }),
    ("cgroup", |p, o| text(p.cgroup.as_deref().unwrap_or(""), o)),
    ("flags", |p, o| flags(&p.flags, o)),
];

pub const CONTAINER: &[Col<ContainerRow>] = &[
    ("name", |c, o| text(&c.name, o)),
    ("path", |c, o| text(&c.path, o)),
    ("processes", |c, o| num(c.procs, o)),
    ("threads", |c, o| num(c.threads, o)),
    ("rss_bytes", |c, o| num(c.rss, o)),
    ("anon_bytes", |c, o| num(c.anon, o)),
    ("rss_growth_bytes_per_min", |c, o| {
        opt(c.rss_growth_per_min, o)
    }),
    ("cpu_pct", |c, o| opt(c.cpu_pct, o)),
    ("faults_per_s", |c, o| opt(c.faults_per_s, o)),
    ("read_bytes_per_s", |c, o| opt(c.read_per_s, o)),
    ("write_bytes_per_s", |c, o| opt(c.write_per_s, o)),
    ("blocked_threads", |c, o| num(c.blocked, o)),
    ("longest_wait_s", |c, o| opt(c.longest_wait_s, o)),
    ("flags", |c, o| flags(&c.flags, o)),
];

fn psi(p: Option<crate::top::frame::Psi>, full: bool) -> Option<f64> {
    p.map(|p| if full { p.full } else { p.some })
}

pub const HOST: &[Col<Frame>] = &[
    ("mem_total_bytes", |f, o| num(f.header.mem_total, o)),
    ("mem_available_bytes", |f, o| num(f.header.mem_available, o)),
    ("swap_total_bytes", |f, o| num(f.header.swap_total, o)),
    ("swap_free_bytes", |f, o| num(f.header.swap_free, o)),
    ("psi_memory_some_pct", |f, o| {
        opt(psi(f.header.psi_memory, false), o)
    }),
    ("psi_memory_full_pct", |f, o| {
        opt(psi(f.header.psi_memory, true), o)
    }),
    ("psi_io_some_pct", |f, o| {
        opt(psi(f.header.psi_io, false), o)
    }),
    ("psi_io_full_pct", |f, o| opt(psi(f.header.psi_io, true), o)),
    ("load1", |f, o| opt(Some(f.header.load[0]), o)),
    ("load5", |f, o| opt(Some(f.header.load[1]), o)),
    ("load15", |f, o| opt(Some(f.header.load[2]), o)),
    ("mem_exhaustion_s", |f, o| opt(f.header.mem_exhaustion_s, o)),
    ("open_critical", |f, o| num(f.header.open_critical, o)),
    ("open_warning", |f, o| num(f.header.open_warning, o)),
    ("processes_recorded", |f, o| num(f.procs.len(), o)),
    ("containers", |f, o| num(f.containers.len(), o)),
    ("blocked_threads_recorded", |f, o| {
        num(f.procs.iter().map(|p| u64::from(p.blocked)).sum::<u64>(), o)
    }),
    ("sentinel_cpu_pct", |f, o| {
        opt(Some(f.header.sentinel.cpu_pct), o)
    }),
    ("sentinel_rss_bytes", |f, o| num(f.header.sentinel.rss, o)),
];

/// `time,unix_ms,` then the columns' names.
pub fn header<T>(cols: &[Col<T>]) -> String {
    let mut s = String::from("time,unix_ms");
    for (name, _) in cols {
        s.push(',');
        s.push_str(name);
    }
    s.push('\n');
    s
}

pub fn row<T>(cols: &[Col<T>], unix_ms: u64, v: &T, out: &mut String) {
    out.push_str(&rfc3339(unix_ms));
    let _ = write!(out, ",{unix_ms}");
    for (_, f) in cols {
        out.push(',');
        f(v, out);
    }
    out.push('\n');
}

/// A CSV file being written a frame at a time. Rows wait in memory and go
/// to disk in chunks, the file opened only for each chunk: an export may
/// write hundreds of timelines at once and must not hold a descriptor for
/// each.
pub struct Sink {
    path: PathBuf,
    buf: String,
    pub rows: u64,
}

const FLUSH_AT: usize = 32 << 10;

impl Sink {
    pub fn create(path: &Path, header: String) -> io::Result<Sink> {
        std::fs::write(path, b"")?;
        Ok(Sink {
            path: path.to_owned(),
            buf: header,
            rows: 0,
        })
    }

    pub fn row<T>(&mut self, cols: &[Col<T>], unix_ms: u64, v: &T) -> io::Result<()> {
        row(cols, unix_ms, v, &mut self.buf);
        self.rows += 1;
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut f = OpenOptions::new().append(true).open(&self.path)?;
        f.write_all(self.buf.as_bytes())?;
        self.buf.clear();
        Ok(())
    }
}

/// A name safe as one path component in any archive tool: letters, digits,
/// `.`, `_`, `-`; anything else becomes `_`. Never empty, never starting
/// with a dot, at most 60 bytes.
pub fn file_name(s: &str) -> String {
    let mut out: String = s
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    if out.starts_with('.') {
        out.replace_range(0..1, "_");
    }
    if out.is_empty() {
        out.push_str("root");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_with_separators_are_quoted() {
        let p = ProcRow {
            pid: 7,
            comm: "a,\"b\"\nc".into(),
            rss: 1 << 20,
            cpu_pct: Some(12.345),
            state: 'R',
            ..Default::default()
        };
        let mut s = String::new();
        row(PROCESS, 1_000, &p, &mut s);
        assert!(
            s.starts_with("1970-01-01T00:00:01.000Z,1000,7,\"a,\"\"b\"\"\nc\",R,1048576,,12.35,"),
            "{s}"
        );
        assert_eq!(
            header(PROCESS).matches(',').count(),
            s.matches(',').count() - 1,
            "one comma is inside the quoted comm"
        );
    }

    #[test]
    fn file_names_cannot_escape_their_directory() {
        assert_eq!(file_name("../../etc/passwd"), "_._.._etc_passwd");
        assert_eq!(
            file_name("/system.slice/web.service"),
            "system.slice_web.service"
        );
        assert_eq!(file_name("/"), "root");
        assert_eq!(file_name(".hidden"), "_hidden");
        assert_eq!(file_name("<b>"), "_b_");
    }
}
