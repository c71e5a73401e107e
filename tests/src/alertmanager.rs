//! A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) on
//! 127.0.0.1, for the `format = "alertmanager"` sink test.
//!
//! Clustering is off (`--cluster.listen-address=`), storage and config live
//! in a scratch directory, and the only route sends notifications (firing
//! and resolved, grouped per alert, flushed every second) to a webhook URL
//! the test gives, so the test sees what Alertmanager itself made of the
//! alerts. Killed, and its directory removed, on drop.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::receiver::{free_port, http_get, log_tail, wait_http_ready};
use crate::{ScratchDir, truncate};

/// Where Debian installs it.
pub const ALERTMANAGER_BIN: &str = "/usr/bin/prometheus-alertmanager";

pub struct Alertmanager {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    // Removed on drop, after the child is gone.
    dir: ScratchDir,
}

/// The binary, or `None` when the package is not installed.
pub fn alertmanager_bin() -> Option<PathBuf> {
    let p = Path::new(ALERTMANAGER_BIN);
    p.is_file().then(|| p.to_path_buf())
}

impl Alertmanager {
    /// Starts Alertmanager and waits for `/-/ready`. `notify_url` receives
    /// its webhook notifications (`send_resolved: true`).
    pub fn start(bin: &Path, notify_url: &str) -> Result<Self> {
        let dir = ScratchDir::new_in(&std::env::temp_dir(), "alertmanager")?;
        let config = dir.path().join("alertmanager.yml");
        let storage = dir.path().join("data");
        std::fs::create_dir(&storage)?;
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: test\n  group_by: ['incident']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: test\n    webhook_configs:\n      - url: '{notify_url}'\n        send_resolved: true\n"
            ),
        )?;
        let log = dir.path().join("alertmanager.log");
        let log_file = std::fs::File::create(&log)?;
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut am = Self {
            child,
            addr,
            log,
            dir,
        };
        wait_http_ready(
            &mut am.child,
            addr,
            "alertmanager",
            Duration::from_secs(30),
            || log_tail(&am.log, 8000),
        )?;
        Ok(am)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no path: the sink appends /api/v2/alerts).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log so far (the last 8000 bytes).
    pub fn log(&self) -> String {
        log_tail(&self.log, 8000)
    }

    /// `GET /api/v2/alerts` with `filter` matchers (`label="value"`), every
    /// state included (active, silenced, inhibited, unprocessed). Note that
    /// Alertmanager never lists an alert whose `endsAt` has passed: a
    /// resolved alert drops out of this list.
    pub fn alerts(&self, filters: &[String]) -> Result<Vec<Value>> {
        let mut path =
            "/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true".to_string();
        for f in filters {
            path.push_str("&filter=");
            path.push_str(&percent_encode(f));
        }
        let (status, body) = http_get(self.addr, &path, Duration::from_secs(5))?;
        if status != 200 {
            bail!(
                "GET {path} on alertmanager: status {status}: {}",
                truncate(&body, 2000)
            );
        }
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("GET {path}: not JSON: {}", truncate(&body, 2000)))?;
        match v {
            Value::Array(a) => Ok(a),
            other => Err(anyhow!("GET {path}: not a JSON array: {other}")),
        }
    }

    /// An error with Alertmanager's log.
    pub fn failure(&self, what: &str) -> anyhow::Error {
        anyhow!("{what}\n--- alertmanager log ---\n{}", self.log())
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Seconds since the epoch of an RFC 3339 UTC-or-offset timestamp such as
/// `2026-11-23T13:40:00.123Z` or `2026-11-23T13:40:00.123456789+00:00`.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        frac = format!("0.{}", &r[..n]).parse().ok()?;
        rest = &r[n..];
    }
    let offset = if rest == "Z" || rest == "z" {
        0
    } else {
        let sign = match rest.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let oh: i64 = rest.get(1..3)?.parse().ok()?;
        let om: i64 = rest.get(4..6)?.parse().ok()?;
        sign * (oh * 3600 + om * 60)
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86400 + h * 3600 + mi * 60 + sec - offset) as f64 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:01.5Z"), Some(951_868_801.5));
        assert_eq!(
            parse_rfc3339("2000-03-01T01:00:01.5+01:00"),
            Some(951_868_801.5)
        );
        assert_eq!(parse_rfc3339("nonsense"), None);
    }

    #[test]
    fn encode() {
        assert_eq!(percent_encode("a=\"b c\""), "a%3D%22b%20c%22");
    }
}
