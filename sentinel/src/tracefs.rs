//! tracefs: where it is, mounting it when missing, and the field layout of
//! each tracepoint on *this* kernel (from its `format` file), so no offset
//! is baked in for one kernel.
use std::{
    collections::HashMap,
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

pub const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Test-only switch: tracepoints listed here (comma separated,
/// `category:name`) are treated as absent, to exercise degradation paths.
pub const HIDE_ENV: &str = "SENTINEL_TEST_HIDE_TRACEPOINTS";

#[derive(Debug, Clone)]
pub struct Tracefs {
    pub root: PathBuf,
    pub mounted_by_us: bool,
    hidden: Vec<String>,
}

/// A tracepoint field: byte offset and size in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
    /// Declared as an array (`char rwbs[8]`): its size says nothing about
    /// its alignment.
    pub array: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Format {
    pub fields: HashMap<String, Field>,
}

impl Tracefs {
    /// Finds tracefs, mounting it at /sys/kernel/tracing when nothing is
    /// mounted (a fresh machine has it unmounted; aya needs it to attach).
    pub fn open() -> Result<Tracefs> {
        let hidden = std::env::var(HIDE_ENV)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if access_denied() {
            bail!("{}", denied_message());
        }
        for root in [TRACEFS, DEBUGFS_TRACING] {
            if Path::new(root).join("events").is_dir() {
                return Ok(Tracefs {
                    root: root.into(),
                    mounted_by_us: false,
                    hidden,
                });
            }
        }
        mount_tracefs(TRACEFS)?;
        if !Path::new(TRACEFS).join("events").is_dir() {
            bail!("mounted tracefs at {TRACEFS} but it has no events/ directory");
        }
        // Mounting changes the host: say so even at the default level.
        tracing::warn!("tracefs was not mounted: mounted it at {TRACEFS}");
        Ok(Tracefs {
            root: TRACEFS.into(),
            mounted_by_us: true,
            hidden,
        })
    }

    pub fn is_hidden(&self, category: &str, name: &str) -> bool {
        self.hidden
            .iter()
            .any(|h| h == &format!("{category}:{name}"))
    }

    pub fn exists(&self, category: &str, name: &str) -> bool {
        !self.is_hidden(category, name) && self.event_dir(category, name).join("format").is_file()
    }

    fn event_dir(&self, category: &str, name: &str) -> PathBuf {
        self.root.join("events").join(category).join(name)
    }

    /// The parsed format file, or `None` when the tracepoint is absent.
    pub fn format(&self, category: &str, name: &str) -> Result<Option<Format>> {
        if self.is_hidden(category, name) {
            return Ok(None);
        }
        let path = self.event_dir(category, name).join("format");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(parse_format(&text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// tracefs is mounted at /sys/kernel/tracing but this process may not look
/// inside: the mount is mode 0700, so CAP_BPF and CAP_PERFMON alone do not
/// get past it. Not "absent": mounting it again would fail too, less
/// clearly.
pub fn access_denied() -> bool {
    fs::metadata(Path::new(TRACEFS).join("events"))
        .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
}

pub fn denied_message() -> String {
    format!(
        "cannot read tracefs at {TRACEFS}: permission denied (needs root or CAP_DAC_READ_SEARCH, \
         because tracefs is readable by its owner only)"
    )
}

fn mount_tracefs(target: &str) -> Result<()> {
    let src = CString::new("nodev")?;
    let tgt = CString::new(target)?;
    let fstype = CString::new("tracefs")?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "tracefs is not mounted and mounting it at {target} failed: {err} (run `mount -t tracefs nodev {target}` as root)"
        );
    }
    Ok(())
}

/// Parses a tracefs `format` file: `field:TYPE NAME; offset:N; size:N; ...`.
pub fn parse_format(text: &str) -> Format {
    let mut fmt = Format::default();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';').map(str::trim);
        let Some(decl) = parts.next() else { continue };
        let mut offset = None;
        let mut size = None;
        for p in parts {
            if let Some(v) = p.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = p.strip_prefix("size:") {
                size = v.parse().ok();
            }
        }
        // The name is the last identifier once array brackets are dropped:
        // `char comm[16]`, `__data_loc char[] cmd`, `u32 * uaddr`.
        let mut bare = String::with_capacity(decl.len());
        let mut depth = 0;
        for c in decl.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ if depth == 0 => bare.push(c),
                _ => {}
            }
        }
        let name = bare
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .find(|s| !s.is_empty())
            .unwrap_or_default();
        if let (Some(offset), Some(size)) = (offset, size) {
            let array = decl.contains('[');
            fmt.fields.insert(
                name.to_string(),
                Field {
                    offset,
                    size,
                    array,
                },
            );
        }
    }
    fmt
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSS: &str = "name: rss_stat
ID: 526
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:unsigned int mm_id;	offset:8;	size:4;	signed:0;
	field:unsigned int curr;	offset:12;	size:4;	signed:0;
	field:int member;	offset:16;	size:4;	signed:1;
	field:long size;	offset:24;	size:8;	signed:1;

print fmt: \"mm_id=%u curr=%d type=%s size=%ldB\", REC->mm_id";

    #[test]
    fn parses_fields() {
        let f = parse_format(RSS);
        assert_eq!(
            f.fields["size"],
            Field {
                offset: 24,
                size: 8,
                array: false,
            }
        );
        assert_eq!(
            f.fields["member"],
            Field {
                offset: 16,
                size: 4,
                array: false,
            }
        );
        assert!(!f.fields.contains_key("nope"));
    }

    #[test]
    fn parses_pointer_array_and_data_loc_fields() {
        let f = parse_format(
            "\tfield:u32 * uaddr;\toffset:16;\tsize:8;\tsigned:0;\n\
             \tfield:char rwbs[10];\toffset:34;\tsize:10;\tsigned:0;\n\
             \tfield:__data_loc char[] cmd;\toffset:60;\tsize:4;\tsigned:0;\n",
        );
        let at = |n: &str| f.fields.get(n).map(|f| (f.offset, f.size));
        assert_eq!(at("uaddr"), Some((16, 8)));
        assert_eq!(at("rwbs"), Some((34, 10)));
        assert_eq!(at("cmd"), Some((60, 4)));
    }
}
