//! The daemon's configuration, a TOML file in which every section and key is
//! optional (a missing one keeps its default, an empty file is all defaults).
//! Durations are written as strings (`"15m"`), sizes too (`"64MB"`).
//!
//! The file is parsed into a plain `toml::Table` and walked against a fixed
//! schema rather than deserialized straight into the structs: that gives
//! every error its dotted key and a reason worded for a person editing
//! `/etc`, where serde's would say `invalid type: integer, expected a string`
//! without saying which key. The table keeps no positions, so `locate` finds
//! the line by scanning the source.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Serialize, Serializer};
use toml::{Table, Value};

use crate::event::Severity;
use crate::units;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Config {
    pub daemon: Daemon,
    pub memory: Memory,
    pub deadlock: Deadlock,
    pub writes: Writes,
    pub threads: Threads,
    pub thrashing: Thrashing,
    pub log: Log,
    pub metrics: Metrics,
    pub api: Api,
    pub spool: Spool,
    pub recorder: Recorder,
    /// `[[sink.webhook]]`, in file order.
    #[serde(rename = "sink", serialize_with = "as_sink")]
    pub webhooks: Vec<Webhook>,
}

/// Where the daemon reads its config when `--config` is not given. A
/// missing file there means all defaults.
/// Where the daemon's API listens unless `[api] socket` says otherwise,
/// and where `sentinel events` and `sentinel top` look for it.
pub const DEFAULT_SOCKET: &str = "/run/sentinel/sentinel.sock";
pub const DEFAULT_PATH: &str = "/etc/sentinel/sentinel.toml";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Daemon {
    /// Sampling period.
    #[serde(serialize_with = "human_duration")]
    pub interval: Duration,
    /// How long a condition must stay clear before its event resolves.
    #[serde(serialize_with = "human_duration")]
    pub resolve_after: Duration,
    /// While an incident stays open, a reminder fires after this long, and
    /// after twice as long each time until `repeat_max`.
    #[serde(serialize_with = "human_duration")]
    pub repeat_after: Duration,
    #[serde(serialize_with = "human_duration")]
    pub repeat_max: Duration,
    /// Spools (and, later, the flight recorder) live here.
    pub state_dir: PathBuf,
    /// `mlockall`, so that the daemon is never paged out when the host is
    /// out of memory, which is when it matters.
    pub lock_memory: bool,
}

impl Default for Daemon {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            resolve_after: Duration::from_secs(30),
            repeat_after: Duration::from_secs(15 * 60),
            repeat_max: Duration::from_secs(3600),
            state_dir: PathBuf::from("/var/lib/sentinel"),
            lock_memory: true,
        }
    }
}

/// How events are written to stdout (the log sink, always on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// One human line per event.
    Text,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Log {
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// None: no endpoint (`listen = ""`).
    #[serde(serialize_with = "or_empty")]
    pub listen: Option<std::net::SocketAddr>,
    /// Per-process series only for this many processes by each signal.
    pub top_processes: usize,
    /// Cgroups younger than this are folded into `container="other"`.
    #[serde(serialize_with = "human_duration")]
    pub min_container_age: Duration,
    /// Past this many containers, the smallest are folded into "other".
    pub max_containers: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464))),
            top_processes: 10,
            min_container_age: Duration::from_secs(60),
            max_containers: 200,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Api {
    /// None: no local API (`socket = ""`).
    #[serde(serialize_with = "or_empty")]
    pub socket: Option<PathBuf>,
    /// A group whose members may connect too (the socket becomes 0660).
    #[serde(serialize_with = "or_empty")]
    pub group: Option<String>,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            socket: Some(PathBuf::from(DEFAULT_SOCKET)),
            group: None,
        }
    }
}

/// Per webhook sink, under `<state_dir>/spool/<name>/`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spool {
    pub max_events: usize,
    #[serde(serialize_with = "human_size")]
    pub max_bytes: u64,
}

impl Default for Spool {
    fn default() -> Self {
        Self {
            max_events: 10_000,
            max_bytes: 64_000_000,
        }
    }
}

/// The flight recorder (`record/`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recorder {
    pub enabled: bool,
    /// None: `<daemon.state_dir>/recorder`.
    #[serde(serialize_with = "or_empty")]
    pub dir: Option<PathBuf>,
    /// How often a frame (host, containers, top processes) is recorded.
    #[serde(serialize_with = "human_duration")]
    pub interval: Duration,
    /// The store's bounds: past either, the oldest segments go.
    #[serde(serialize_with = "human_size")]
    pub max_size: u64,
    #[serde(serialize_with = "human_duration")]
    pub max_age: Duration,
    /// Recording pauses while the filesystem has less free than this, so
    /// the recorder never takes the last of a disk others need.
    #[serde(serialize_with = "human_size")]
    pub min_free: u64,
    /// Each frame keeps this many processes by each signal (RSS, growth,
    /// CPU, faults, reads, writes, blocked threads), plus every flagged one.
    pub top_processes: usize,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            interval: Duration::from_secs(5),
            max_size: 1_000_000_000,
            max_age: Duration::from_secs(7 * 86_400),
            min_free: 256 << 20,
            top_processes: 10,
        }
    }
}

impl Config {
    /// Where the flight recorder's store is.
    pub fn recorder_dir(&self) -> PathBuf {
        self.recorder
            .dir
            .clone()
            .unwrap_or_else(|| self.daemon.state_dir.join("recorder"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The event object as documented.
    Json,
    /// Slack incoming-webhook payload (Mattermost and others accept it).
    Slack,
    /// Alertmanager API v2: a list of alerts POSTed to `/api/v2/alerts`.
    Alertmanager,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Webhook {
    /// Names the spool directory and the `sink` label of its metrics; the
    /// URL never appears anywhere. Default `webhook1`, `webhook2`, ...
    pub name: String,
    /// From `url`, `url_env` or `url_file`.
    pub url: Secret,
    pub format: WebhookFormat,
    /// Values from the file, or `{ env = "VAR" }`, or `{ file = "/path" }`.
    pub headers: Vec<(String, Secret)>,
    pub min_severity: crate::event::Severity,
    #[serde(serialize_with = "human_duration")]
    pub timeout: Duration,
    /// Events past this rate are folded into one summary per minute.
    pub max_per_minute: u32,
}

impl Default for Webhook {
    /// Everything but the URL, which has no default.
    fn default() -> Self {
        Self {
            name: String::new(),
            url: Secret::new(""),
            format: WebhookFormat::Json,
            headers: Vec::new(),
            min_severity: crate::event::Severity::Info,
            timeout: Duration::from_secs(5),
            max_per_minute: 30,
        }
    }
}

/// A value that must never be printed: `Debug` and `Serialize` show
/// `<secret>`; only `expose` gives the text, for the request itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<secret>")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    #[serde(serialize_with = "human_duration")]
    pub warn_horizon: Duration,
    #[serde(serialize_with = "human_duration")]
    pub crit_horizon: Duration,
    /// How long growth must be sustained to count.
    #[serde(serialize_with = "human_duration")]
    pub min_duration: Duration,
    /// Bytes: the smallest rise over a window that counts as growth.
    #[serde(serialize_with = "human_size")]
    pub min_growth: u64,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            warn_horizon: Duration::from_secs(15 * 60),
            crit_horizon: Duration::from_secs(3 * 60),
            min_duration: Duration::from_secs(20),
            min_growth: 64_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deadlock {
    #[serde(serialize_with = "human_duration")]
    pub min_wait: Duration,
    #[serde(serialize_with = "human_duration")]
    pub hang_after: Duration,
}

impl Default for Deadlock {
    fn default() -> Self {
        Self {
            min_wait: Duration::from_secs(30),
            hang_after: Duration::from_secs(5 * 60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Writes {
    /// Bytes per day.
    #[serde(serialize_with = "human_size")]
    pub daily_budget: u64,
    #[serde(serialize_with = "human_duration")]
    pub fill_warn_horizon: Duration,
    #[serde(serialize_with = "human_duration")]
    pub fill_crit_horizon: Duration,
    #[serde(serialize_with = "human_duration")]
    pub min_duration: Duration,
}

impl Default for Writes {
    fn default() -> Self {
        Self {
            daily_budget: 100_000_000_000,
            fill_warn_horizon: Duration::from_secs(7 * 86_400),
            fill_crit_horizon: Duration::from_secs(6 * 3_600),
            min_duration: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threads {
    pub max_threads: u32,
}

impl Default for Threads {
    fn default() -> Self {
        Self { max_threads: 2000 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thrashing {
    /// Percent (PSI memory `some`).
    pub memory_pressure: f64,
    /// Per second, host-wide.
    pub major_faults: u64,
    #[serde(serialize_with = "human_duration")]
    pub min_duration: Duration,
}

impl Default for Thrashing {
    fn default() -> Self {
        Self {
            memory_pressure: 10.0,
            major_faults: 200,
            min_duration: Duration::from_secs(30),
        }
    }
}

fn human_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&units::duration(*d))
}

/// As the file spells "none": an empty string.
fn or_empty<T: Serialize, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => v.serialize(s),
        None => s.serialize_str(""),
    }
}

fn as_sink<S: Serializer>(w: &[Webhook], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(1))?;
    m.serialize_entry("webhook", w)?;
    m.end()
}

fn human_size<S: Serializer>(b: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&units::size(*b))
}

/// Every section and its keys, for rejecting unknown names. `parse` reads
/// exactly these; a test keeps the two in step.
const SCHEMA: &[(&str, &[&str])] = &[
    (
        "daemon",
        &[
            "interval",
            "resolve_after",
            "repeat_after",
            "repeat_max",
            "state_dir",
            "lock_memory",
        ],
    ),
    (
        "memory",
        &["warn_horizon", "crit_horizon", "min_duration", "min_growth"],
    ),
    ("deadlock", &["min_wait", "hang_after"]),
    (
        "writes",
        &[
            "daily_budget",
            "fill_warn_horizon",
            "fill_crit_horizon",
            "min_duration",
        ],
    ),
    ("threads", &["max_threads"]),
    (
        "thrashing",
        &["memory_pressure", "major_faults", "min_duration"],
    ),
    ("log", &["format"]),
    (
        "metrics",
        &[
            "listen",
            "top_processes",
            "min_container_age",
            "max_containers",
        ],
    ),
    ("api", &["socket", "group"]),
    ("spool", &["max_events", "max_bytes"]),
    (
        "recorder",
        &[
            "enabled",
            "dir",
            "interval",
            "max_size",
            "max_age",
            "min_free",
            "top_processes",
        ],
    ),
    ("sink", &["webhook"]),
];

/// The keys of one `[[sink.webhook]]`.
const WEBHOOK_KEYS: &[&str] = &[
    "name",
    "url",
    "url_env",
    "url_file",
    "format",
    "headers",
    "min_severity",
    "timeout",
    "max_per_minute",
];

const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The detectors' shortest windows (10 s of host pressure, `min_duration`
/// of growth) need several points each.
const MAX_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A syntax error, or a section, key or value the schema rejects.
    #[error("{}", invalid(.path, *.pos, .key.as_deref(), .reason))]
    Invalid {
        path: PathBuf,
        /// 1-based line and column.
        pos: Option<(usize, usize)>,
        /// Dotted, e.g. `memory.warn_horizon`; absent for syntax errors.
        key: Option<String>,
        reason: String,
    },
}

fn invalid(path: &Path, pos: Option<(usize, usize)>, key: Option<&str>, reason: &str) -> String {
    let mut out = path.display().to_string();
    if let Some((line, col)) = pos {
        out.push_str(&format!(":{line}:{col}"));
    }
    if let Some(key) = key {
        out.push_str(&format!(": {key}"));
    }
    format!("{out}: {reason}")
}

impl ConfigError {
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Invalid { pos, .. } => pos.map(|(line, _)| line),
            Self::Read { .. } => None,
        }
    }

    pub fn column(&self) -> Option<usize> {
        match self {
            Self::Invalid { pos, .. } => pos.map(|(_, col)| col),
            Self::Read { .. } => None,
        }
    }

    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => key.as_deref(),
            Self::Read { .. } => None,
        }
    }
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let root: Table = toml::from_str(text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        pos: e.span().map(|span| line_col(text, span.start)),
        key: None,
        // toml's message runs over several lines; errors here are one line.
        reason: e.message().trim().lines().collect::<Vec<_>>().join("; "),
    })?;
    let mut r = Reader {
        text,
        path,
        root: &root,
        errors: Vec::new(),
    };
    r.check_names();

    let d = Config::default();
    let config = Config {
        daemon: Daemon {
            interval: r.get("daemon", "interval", d.daemon.interval, duration),
            resolve_after: r.get("daemon", "resolve_after", d.daemon.resolve_after, duration),
            repeat_after: r.get(
                "daemon",
                "repeat_after",
                d.daemon.repeat_after,
                positive_duration,
            ),
            repeat_max: r.get("daemon", "repeat_max", d.daemon.repeat_max, positive_duration),
            state_dir: r.get("daemon", "state_dir", d.daemon.state_dir.clone(), abs_path),
            lock_memory: r.get("daemon", "lock_memory", d.daemon.lock_memory, boolean),
        },
        memory: Memory {
            warn_horizon: r.get(
                "memory",
                "warn_horizon",
                d.memory.warn_horizon,
                positive_duration,
            ),
            crit_horizon: r.get(
                "memory",
                "crit_horizon",
                d.memory.crit_horizon,
                positive_duration,
            ),
            min_duration: r.get("memory", "min_duration", d.memory.min_duration, duration),
            min_growth: r.get("memory", "min_growth", d.memory.min_growth, size),
        },
        deadlock: Deadlock {
            min_wait: r.get("deadlock", "min_wait", d.deadlock.min_wait, duration),
            hang_after: r.get("deadlock", "hang_after", d.deadlock.hang_after, duration),
        },
        writes: Writes {
            daily_budget: r.get(
                "writes",
                "daily_budget",
                d.writes.daily_budget,
                positive_size,
            ),
            fill_warn_horizon: r.get(
                "writes",
                "fill_warn_horizon",
                d.writes.fill_warn_horizon,
                positive_duration,
            ),
            fill_crit_horizon: r.get(
                "writes",
                "fill_crit_horizon",
                d.writes.fill_crit_horizon,
                positive_duration,
            ),
            min_duration: r.get("writes", "min_duration", d.writes.min_duration, duration),
        },
        threads: Threads {
            max_threads: r.get("threads", "max_threads", d.threads.max_threads, |v| {
                integer(v, 1, u32::MAX.into()).map(|n| n as u32)
            }),
        },
        thrashing: Thrashing {
            memory_pressure: r.get(
                "thrashing",
                "memory_pressure",
                d.thrashing.memory_pressure,
                percent,
            ),
            major_faults: r.get("thrashing", "major_faults", d.thrashing.major_faults, |v| {
                integer(v, 0, i64::MAX).map(|n| n as u64)
            }),
            min_duration: r.get(
                "thrashing",
                "min_duration",
                d.thrashing.min_duration,
                duration,
            ),
        },
        log: Log {
            format: r.get("log", "format", d.log.format, |v| {
                match string(v)?.as_str() {
                    "text" => Ok(LogFormat::Text),
                    "json" => Ok(LogFormat::Json),
                    other => Err(format!("{other:?}: expected \"text\" or \"json\"")),
                }
            }),
        },
        metrics: Metrics {
            listen: r.get("metrics", "listen", d.metrics.listen, |v| {
                let s = string(v)?;
                if s.is_empty() {
                    return Ok(None);
                }
                s.parse().map(Some).map_err(|_| {
                    format!("{s:?} is not an address (expected e.g. \"127.0.0.1:9464\", or \"\" for none)")
                })
            }),
            top_processes: r.get("metrics", "top_processes", d.metrics.top_processes, |v| {
                integer(v, 0, 1000).map(|n| n as usize)
            }),
            min_container_age: r.get(
                "metrics",
                "min_container_age",
                d.metrics.min_container_age,
                duration,
            ),
            max_containers: r.get("metrics", "max_containers", d.metrics.max_containers, |v| {
                integer(v, 1, 100_000).map(|n| n as usize)
            }),
        },
        api: Api {
            socket: r.get("api", "socket", d.api.socket.clone(), |v| {
                if string(v)?.is_empty() {
                    Ok(None)
                } else {
                    abs_path(v).map(Some)
                }
            }),
            group: r.get("api", "group", d.api.group.clone(), |v| {
                let g = string(v)?;
                Ok((!g.is_empty()).then_some(g))
            }),
        },
        spool: Spool {
            max_events: r.get("spool", "max_events", d.spool.max_events, |v| {
                integer(v, 1, 10_000_000).map(|n| n as usize)
            }),
            max_bytes: r.get("spool", "max_bytes", d.spool.max_bytes, positive_size),
        },
        recorder: Recorder {
            enabled: r.get("recorder", "enabled", d.recorder.enabled, boolean),
            dir: r.get("recorder", "dir", d.recorder.dir.clone(), |v| {
                if string(v)?.is_empty() {
                    Ok(None)
                } else {
                    abs_path(v).map(Some)
                }
            }),
            interval: r.get("recorder", "interval", d.recorder.interval, |v| {
                let d = positive_duration(v)?;
                if d < MIN_INTERVAL || d > Duration::from_secs(3600) {
                    return Err(format!(
                        "{} is out of range: between {} and 1h",
                        units::duration(d),
                        units::duration(MIN_INTERVAL)
                    ));
                }
                Ok(d)
            }),
            max_size: r.get("recorder", "max_size", d.recorder.max_size, |v| {
                let b = positive_size(v)?;
                if b < 1 << 20 {
                    return Err(format!("{} is too small: at least 1MiB", units::size(b)));
                }
                Ok(b)
            }),
            max_age: r.get("recorder", "max_age", d.recorder.max_age, positive_duration),
            min_free: r.get("recorder", "min_free", d.recorder.min_free, size),
            top_processes: r.get("recorder", "top_processes", d.recorder.top_processes, |v| {
                integer(v, 1, 1000).map(|n| n as usize)
            }),
        },
        webhooks: r.webhooks(),
    };
    // Cross-field checks would judge a rejected value's default stand-in.
    if r.errors.is_empty() {
        if config.daemon.interval < MIN_INTERVAL {
            r.fail(
                "daemon",
                Some("interval"),
                At::Value,
                format!(
                    "{} is too short: sampling needs at least {}",
                    units::duration(config.daemon.interval),
                    units::duration(MIN_INTERVAL)
                ),
            );
        }
        if config.daemon.interval > MAX_INTERVAL {
            r.fail(
                "daemon",
                Some("interval"),
                At::Value,
                format!(
                    "{} is too long: the detectors' 10 s windows need a sample at least every {}",
                    units::duration(config.daemon.interval),
                    units::duration(MAX_INTERVAL)
                ),
            );
        }
        let (after, max) = (config.daemon.repeat_after, config.daemon.repeat_max);
        if after > max {
            let key = if r.value("daemon", "repeat_after").is_some() {
                "repeat_after"
            } else {
                "repeat_max"
            };
            r.fail(
                "daemon",
                Some(key),
                At::Value,
                format!(
                    "repeat_after ({}) must not be longer than repeat_max ({})",
                    units::duration(after),
                    units::duration(max)
                ),
            );
        }
        r.shorter(
            "memory",
            ("crit_horizon", config.memory.crit_horizon),
            ("warn_horizon", config.memory.warn_horizon),
        );
        r.shorter(
            "writes",
            ("fill_crit_horizon", config.writes.fill_crit_horizon),
            ("fill_warn_horizon", config.writes.fill_warn_horizon),
        );
    }
    // The first problem in the file, not in the schema's order.
    r.errors.sort_by_key(|e| e.line().unwrap_or(usize::MAX));
    match r.errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(config),
    }
}

/// Where in a key-value pair an error points.
#[derive(Clone, Copy)]
enum At {
    Key,
    Value,
}

struct Reader<'a> {
    text: &'a str,
    path: &'a Path,
    root: &'a Table,
    errors: Vec<ConfigError>,
}

impl<'a> Reader<'a> {
    fn fail(&mut self, section: &str, key: Option<&str>, at: At, reason: String) {
        let spot = locate(self.text, section, key).or_else(|| locate(self.text, section, None));
        let key = match key {
            Some(key) => format!("{section}.{key}"),
            None => section.to_owned(),
        };
        self.push(spot, at, key, reason);
    }

    fn push(&mut self, spot: Option<Spot>, at: At, key: String, reason: String) {
        self.errors.push(ConfigError::Invalid {
            path: self.path.to_owned(),
            pos: spot.map(|s| match at {
                At::Key => (s.line, s.key_col),
                At::Value => (s.line, s.value_col),
            }),
            key: Some(key),
            reason,
        });
    }

    fn check_names(&mut self) {
        let root = self.root;
        for (name, item) in root {
            let Some((_, keys)) = SCHEMA.iter().find(|(s, _)| *s == name.as_str()) else {
                let reason = unknown_section(name, item);
                self.fail(name, None, At::Key, reason);
                continue;
            };
            let Value::Table(table) = item else {
                let reason = format!("must be a [{name}] section, found {}", describe(item));
                self.fail(name, None, At::Value, reason);
                continue;
            };
            for key in table.keys().filter(|k| !keys.contains(&k.as_str())) {
                let reason = format!("unknown key (valid in [{name}]: {})", keys.join(", "));
                self.fail(name, Some(key), At::Key, reason);
            }
        }
    }

    fn value(&self, section: &str, key: &str) -> Option<&'a Value> {
        self.root.get(section)?.as_table()?.get(key)
    }

    /// The value of `section.key` if written, else `default`; a rejected
    /// value is recorded and also yields `default`.
    fn get<T>(
        &mut self,
        section: &str,
        key: &str,
        default: T,
        parse: impl Fn(&Value) -> Result<T, String>,
    ) -> T {
        let Some(value) = self.value(section, key) else {
            return default;
        };
        match parse(value) {
            Ok(v) => v,
            Err(reason) => {
                self.fail(section, Some(key), At::Value, reason);
                default
            }
        }
    }

    /// Every `[[sink.webhook]]`. Secrets (`url_env`, `url_file`, header
    /// values from `env`/`file`) are read here, so a missing one is a
    /// config error at start or reload, not a delivery failure at 3 am;
    /// errors name the variable or file, never the value.
    fn webhooks(&mut self) -> Vec<Webhook> {
        let Some(v) = self.value("sink", "webhook") else {
            return Vec::new();
        };
        let Value::Array(items) = v else {
            let reason = format!(
                "must be written as [[sink.webhook]] tables, found {}",
                describe(v)
            );
            self.fail("sink", Some("webhook"), At::Value, reason);
            return Vec::new();
        };
        let mut out: Vec<Webhook> = Vec::new();
        for (n, item) in items.iter().enumerate() {
            let Value::Table(t) = item else {
                let reason = format!("must be a table, found {}", describe(item));
                self.fail("sink", Some("webhook"), At::Value, reason);
                continue;
            };
            if let Some(w) = self.webhook(n, t) {
                if out.iter().any(|o| o.name == w.name) {
                    let reason = format!("{:?} is already the name of another webhook", w.name);
                    self.fail_webhook(n, Some("name"), At::Value, reason);
                }
                out.push(w);
            }
        }
        out
    }

    fn webhook(&mut self, n: usize, t: &'a Table) -> Option<Webhook> {
        let mut ok = true;
        for key in t.keys().filter(|k| !WEBHOOK_KEYS.contains(&k.as_str())) {
            let reason = format!(
                "unknown key (valid in [[sink.webhook]]: {})",
                WEBHOOK_KEYS.join(", ")
            );
            self.fail_webhook(n, Some(key), At::Key, reason);
            ok = false;
        }
        let mut get = |key: &str, parse: &dyn Fn(&Value) -> Result<(), String>| {
            if let Some(v) = t.get(key)
                && let Err(reason) = parse(v)
            {
                self.fail_webhook(n, Some(key), At::Value, reason);
                ok = false;
            }
        };
        let d = Webhook::default();
        let name = t.get("name").and_then(|v| v.as_str()).map(str::to_owned);
        get("name", &|v| {
            let s = string(v)?;
            if s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                || s.starts_with('.')
            {
                return Err(format!(
                    "{s:?}: a name is letters, digits, '-', '_' and '.' (it names a directory)"
                ));
            }
            Ok(())
        });
        let format = t.get("format").map(|v| match v.as_str() {
            Some("json") => Ok(WebhookFormat::Json),
            Some("slack") => Ok(WebhookFormat::Slack),
            Some("alertmanager") => Ok(WebhookFormat::Alertmanager),
            _ => Err(format!(
                "{}: expected \"json\", \"slack\" or \"alertmanager\"",
                describe(v)
            )),
        });
        get("format", &|v| match v.as_str() {
            Some("json" | "slack" | "alertmanager") => Ok(()),
            _ => Err(format!(
                "{}: expected \"json\", \"slack\" or \"alertmanager\"",
                describe(v)
            )),
        });
        get("min_severity", &|v| severity(v).map(|_| ()));
        get("timeout", &|v| positive_duration(v).map(|_| ()));
        get("max_per_minute", &|v| integer(v, 0, 1_000_000).map(|_| ()));

        let sources: Vec<&str> = ["url", "url_env", "url_file"]
            .into_iter()
            .filter(|k| t.contains_key(*k))
            .collect();
        let url = match sources.as_slice() {
            [key] => match secret(t, key) {
                Ok(s) if s.expose().is_empty() => {
                    let reason = "the URL is empty".to_string();
                    self.fail_webhook(n, Some(key), At::Value, reason);
                    None
                }
                Ok(s) => match url_problem(s.expose()) {
                    None => Some(s),
                    Some(reason) => {
                        self.fail_webhook(n, Some(key), At::Value, reason);
                        None
                    }
                },
                Err(reason) => {
                    self.fail_webhook(n, Some(key), At::Value, reason);
                    None
                }
            },
            [] => {
                let reason = "a webhook needs one of url, url_env or url_file".to_string();
                self.fail_webhook(n, None, At::Key, reason);
                None
            }
            [_, second, ..] => {
                let reason = format!(
                    "give only one of url, url_env and url_file (found {})",
                    sources.join(", ")
                );
                self.fail_webhook(n, Some(second), At::Key, reason);
                None
            }
        };
        let mut headers = Vec::new();
        match t.get("headers") {
            None => {}
            Some(Value::Table(h)) => {
                for (name, v) in h {
                    if name.eq_ignore_ascii_case("idempotency-key") {
                        let reason = "sentinel sets Idempotency-Key itself, one per event \
                                      (receivers drop retried deliveries by it); remove it"
                            .to_string();
                        self.fail_webhook(n, Some(&format!("headers.{name}")), At::Key, reason);
                        ok = false;
                        continue;
                    }
                    match header_value(v) {
                        Ok(s) => headers.push((name.clone(), s)),
                        Err(reason) => {
                            self.fail_webhook(
                                n,
                                Some(&format!("headers.{name}")),
                                At::Value,
                                reason,
                            );
                            ok = false;
                        }
                    }
                }
            }
            Some(other) => {
                let reason = format!(
                    "expected a table such as {{ Authorization = \"Bearer ...\" }}, found {}",
                    describe(other)
                );
                self.fail_webhook(n, Some("headers"), At::Value, reason);
                ok = false;
            }
        }
        let url = url?;
        if !ok {
            return None;
        }
        Some(Webhook {
            name: name.unwrap_or_else(|| format!("webhook{}", n + 1)),
            url,
            format: format.and_then(Result::ok).unwrap_or(d.format),
            headers,
            min_severity: t
                .get("min_severity")
                .and_then(|v| severity(v).ok())
                .unwrap_or(d.min_severity),
            timeout: t
                .get("timeout")
                .and_then(|v| positive_duration(v).ok())
                .unwrap_or(d.timeout),
            max_per_minute: t
                .get("max_per_minute")
                .and_then(|v| integer(v, 0, 1_000_000).ok())
                .map_or(d.max_per_minute, |n| n as u32),
        })
    }

    fn fail_webhook(&mut self, n: usize, key: Option<&str>, at: At, reason: String) {
        let spot = locate_webhook(self.text, n, key).or_else(|| locate_webhook(self.text, n, None));
        let key = match key {
            Some(key) => format!("sink.webhook[{}].{key}", n + 1),
            None => format!("sink.webhook[{}]", n + 1),
        };
        self.push(spot, at, key, reason);
    }

    /// `short` must be shorter than `long`; blames the one the file sets,
    /// since the other is a default the user may not know about.
    fn shorter(&mut self, section: &str, short: (&str, Duration), long: (&str, Duration)) {
        if short.1 < long.1 {
            return;
        }
        let show = |(key, d): (&str, Duration)| {
            let default = if self.value(section, key).is_none() {
                ", the default"
            } else {
                ""
            };
            format!("{section}.{key} ({}{default})", units::duration(d))
        };
        let (blamed, reason) = if self.value(section, short.0).is_some() {
            let other = show(long);
            (
                short.0,
                format!("{} must be shorter than {other}", units::duration(short.1)),
            )
        } else {
            let other = show(short);
            (
                long.0,
                format!("{} must be longer than {other}", units::duration(long.1)),
            )
        };
        self.fail(section, Some(blamed), At::Value, reason);
    }
}

fn unknown_section(name: &str, item: &Value) -> String {
    let sections: Vec<&str> = SCHEMA.iter().map(|(s, _)| *s).collect();
    let mut reason = format!("unknown section (valid: {})", sections.join(", "));
    // A key written above any section header lands at the top level.
    if !item.is_table()
        && let Some((section, _)) = SCHEMA.iter().find(|(_, keys)| keys.contains(&name))
    {
        reason.push_str(&format!("; `{name}` belongs under [{section}]"));
    }
    reason
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(n) => format!("integer {n}"),
        Value::Float(f) => format!("float {f}"),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Datetime(d) => format!("datetime {d}"),
        Value::Array(_) => "an array".into(),
        Value::Table(_) => "a table".into(),
    }
}

fn duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::String(s) => units::parse_duration(s).map_err(|e| {
            if e.contains("is not a duration") {
                e
            } else {
                format!("{s:?} is not a duration: {e}")
            }
        }),
        // A bare number has no unit, and guessing seconds is how 30 becomes
        // half a minute when milliseconds were meant.
        Value::Integer(n) => Err(format!(
            "expected a duration string such as \"30s\", found integer {n} (write \"{n}s\")"
        )),
        other => Err(format!(
            "expected a duration string such as \"30s\", found {}",
            describe(other)
        )),
    }
}

fn string(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("expected a string, found {}", describe(other))),
    }
}

fn boolean(v: &Value) -> Result<bool, String> {
    match v {
        Value::Boolean(b) => Ok(*b),
        other => Err(format!("expected true or false, found {}", describe(other))),
    }
}

fn abs_path(v: &Value) -> Result<PathBuf, String> {
    let s = string(v)?;
    if !s.starts_with('/') {
        return Err(format!("{s:?} must be an absolute path"));
    }
    Ok(PathBuf::from(s))
}

fn severity(v: &Value) -> Result<Severity, String> {
    match v.as_str() {
        Some("info") => Ok(Severity::Info),
        Some("warning") => Ok(Severity::Warning),
        Some("critical") => Ok(Severity::Critical),
        _ => Err(format!(
            "{}: expected \"info\", \"warning\" or \"critical\"",
            describe(v)
        )),
    }
}

/// `url`, `url_env` or `url_file` of a webhook table. Never echoes the
/// secret: a literal URL's problems are described without it.
fn secret(t: &Table, key: &str) -> Result<Secret, String> {
    let v = t.get(key).ok_or_else(|| format!("{key} is missing"))?;
    let s = match v {
        Value::String(s) => s,
        other => return Err(format!("expected a string, found {}", kind_of(other))),
    };
    match key {
        "url_env" => from_env(s),
        "url_file" => from_file(s),
        _ => Ok(Secret::new(s.trim())),
    }
}

fn from_env(var: &str) -> Result<Secret, String> {
    match std::env::var(var) {
        Ok(s) => Ok(Secret::new(s.trim())),
        Err(std::env::VarError::NotPresent) => {
            Err(format!("environment variable {var} is not set"))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("environment variable {var} is not UTF-8"))
        }
    }
}

fn from_file(path: &str) -> Result<Secret, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must be an absolute path"));
    }
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(|s| Secret::new(s.trim()))
            .map_err(|_| format!("{path}: not UTF-8 text")),
        Err(e) => Err(format!("cannot read {path}: {}", io_reason(&e))),
    }
}

/// The OS reason without the path (which `io::Error` never holds anyway)
/// and without Rust's `(os error N)` tail.
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A header value: a literal, or `{ env = "VAR" }`, or `{ file = "/path" }`.
fn header_value(v: &Value) -> Result<Secret, String> {
    match v {
        Value::String(s) => Ok(Secret::new(s.clone())),
        Value::Table(t) if t.len() == 1 => match t.iter().next() {
            Some((k, Value::String(s))) if k == "env" => from_env(s),
            Some((k, Value::String(s))) if k == "file" => from_file(s),
            _ => Err("expected a string, { env = \"VAR\" } or { file = \"/path\" }".into()),
        },
        other => Err(format!(
            "expected a string, {{ env = \"VAR\" }} or {{ file = \"/path\" }}, found {}",
            kind_of(other)
        )),
    }
}

/// Like `describe` but never shows a string's content.
fn kind_of(v: &Value) -> String {
    match v {
        Value::String(_) => "a string".into(),
        other => describe(other),
    }
}

/// What is wrong with a webhook URL, in words that do not repeat it.
fn url_problem(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let Some(rest) = rest else {
        return Some("the URL must start with http:// or https://".into());
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Some("the URL has no valid host".into());
    }
    None
}

fn positive_duration(v: &Value) -> Result<Duration, String> {
    let d = duration(v)?;
    if d.is_zero() {
        return Err("must be longer than 0s".into());
    }
    Ok(d)
}

fn size(v: &Value) -> Result<u64, String> {
    match v {
        Value::String(s) => units::parse_size(s).map_err(|e| {
            if e.contains("is not a size") {
                e
            } else {
                format!("{s:?} is not a size: {e}")
            }
        }),
        Value::Integer(n) => Err(format!(
            "expected a size string such as \"64MB\", found integer {n} \
             (write \"{n}MB\", or \"{n}\" for bytes)"
        )),
        other => Err(format!(
            "expected a size string such as \"64MB\", found {}",
            describe(other)
        )),
    }
}

fn positive_size(v: &Value) -> Result<u64, String> {
    match size(v)? {
        0 => Err("must be more than 0 bytes".into()),
        b => Ok(b),
    }
}

fn integer(v: &Value, min: i64, max: i64) -> Result<i64, String> {
    match v {
        Value::Integer(n) if (min..=max).contains(n) => Ok(*n),
        Value::Integer(n) => Err(format!("{n} is out of range ({min} to {max})")),
        other => Err(format!("expected an integer, found {}", describe(other))),
    }
}

fn percent(v: &Value) -> Result<f64, String> {
    let p = match v {
        Value::Integer(n) => *n as f64,
        Value::Float(f) => *f,
        Value::String(s) => {
            let number = s.trim().strip_suffix('%').unwrap_or(s.trim()).trim_end();
            number.parse().map_err(|_| {
                format!("{s:?} is not a percentage (expected e.g. \"10%\", 10 or 12.5)")
            })?
        }
        other => {
            return Err(format!(
                "expected a percentage such as \"10%\" or 10, found {}",
                describe(other)
            ));
        }
    };
    if !(p > 0.0 && p <= 100.0) {
        return Err(format!("{p}% is out of range (above 0%, at most 100%)"));
    }
    Ok(p)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// Where a key is written: its line, and the columns of the key and of its
/// value.
#[derive(Debug, PartialEq)]
struct Spot {
    line: usize,
    key_col: usize,
    value_col: usize,
}

/// Finds where `section` (with `key`: where `section.key`) is written: under
/// a `[section]` header, as a dotted `section.key = …`, or inside an inline
/// table `section = { key = … }`. Only positions come from here, so it is a
/// line scanner, not a TOML parser: it skips the inside of multi-line
/// strings but can be fooled by a multi-line array, and a miss costs only
/// the position in the message.
fn locate(text: &str, section: &str, key: Option<&str>) -> Option<Spot> {
    let want: Vec<&str> = std::iter::once(section).chain(key).collect();
    let mut table: Vec<String> = Vec::new();
    let mut in_string: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(delim) = in_string {
            if line.contains(delim) {
                in_string = None;
            }
            continue;
        }
        let start = line.len() - line.trim_start().len();
        let body = &line[start..];
        let col = |byte: usize| line[..byte].chars().count() + 1;
        let spot = |key_at: usize, value_at: usize| Spot {
            line: i + 1,
            key_col: col(key_at),
            value_col: col(value_at),
        };
        if let Some(header) = body.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            table = split_key(&header[..header.find(']').unwrap_or(header.len())]);
            if has_prefix(&table, &want) {
                return Some(spot(start, start));
            }
            continue;
        }
        let Some(eq) = find_unquoted(body, '=') else {
            continue;
        };
        let mut path = table.clone();
        path.extend(split_key(&body[..eq]));
        let after_eq = &body[eq + 1..];
        let value_at = start + eq + 1 + (after_eq.len() - after_eq.trim_start().len());
        let value = &line[value_at..];
        if has_prefix(&path, &want) {
            return Some(spot(start, value_at));
        }
        if value.starts_with('{')
            && path.len() + 1 == want.len()
            && has_prefix(&path, &want[..path.len()])
            && let Some((k, v)) = find_inline_key(value, want[path.len()])
        {
            return Some(spot(value_at + k, value_at + v));
        }
        for delim in ["\"\"\"", "'''"] {
            if value.starts_with(delim) && !value[3..].contains(delim) {
                in_string = Some(delim);
            }
        }
    }
    None
}

/// Where the `n`-th `[[sink.webhook]]` (0-based) or its `key` is written.
/// Keys are found at the start of a line, or as `key.` for a dotted
/// `headers.X = …`; headers written as an inline table point at their line.
fn locate_webhook(text: &str, n: usize, key: Option<&str>) -> Option<Spot> {
    let mut seen = 0;
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        let start = line.len() - line.trim_start().len();
        let body = &line[start..];
        let col = |byte: usize| line[..byte].chars().count() + 1;
        if body.starts_with('[') {
            let is_webhook = body.starts_with("[[")
                && split_key(body.trim_start_matches('[').split(']').next().unwrap_or(""))
                    == ["sink", "webhook"];
            inside = false;
            if is_webhook {
                seen += 1;
                if seen == n + 1 {
                    if key.is_none() {
                        return Some(Spot {
                            line: i + 1,
                            key_col: col(start),
                            value_col: col(start),
                        });
                    }
                    inside = true;
                }
            }
            continue;
        }
        let (Some(key), true) = (key, inside) else {
            continue;
        };
        let top = key.split('.').next().unwrap_or(key);
        let Some(eq) = find_unquoted(body, '=') else {
            continue;
        };
        let path = split_key(&body[..eq]);
        if path.first().map(String::as_str) == Some(top) {
            let after = &body[eq + 1..];
            let value_at = start + eq + 1 + (after.len() - after.trim_start().len());
            return Some(Spot {
                line: i + 1,
                key_col: col(start),
                value_col: col(value_at),
            });
        }
    }
    None
}

fn has_prefix(path: &[String], prefix: &[&str]) -> bool {
    path.len() >= prefix.len() && path.iter().zip(prefix).all(|(a, b)| a == b)
}

/// `a."b c" . d` -> `["a", "b c", "d"]` (escapes in quoted keys are left).
fn split_key(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(dot) = find_unquoted(rest, '.') {
        parts.push(unquote(&rest[..dot]));
        rest = &rest[dot + 1..];
    }
    parts.push(unquote(rest));
    parts
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner.to_owned();
        }
    }
    s.to_owned()
}

fn find_unquoted(s: &str, target: char) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == target => return Some(i),
            None => {}
        }
    }
    None
}

/// Byte offsets of `key` and of its value inside an inline table `{ … }`.
fn find_inline_key(table: &str, key: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(found) = table[from..].find(key) {
        let at = from + found;
        from = at + key.len();
        let before = table[..at]
            .trim_end()
            .trim_end_matches(['"', '\''])
            .trim_end();
        let after = table[from..].trim_start_matches(['"', '\'']);
        let after_trimmed = after.trim_start();
        if !(before.ends_with('{') || before.ends_with(',')) {
            continue;
        }
        // `key = value`, or `key.sub = …` when the key is itself a table.
        let key_at = if table[..at].ends_with(['"', '\'']) {
            at - 1
        } else {
            at
        };
        if let Some(value) = after_trimmed.strip_prefix('=') {
            let value_at = table.len() - value.trim_start().len();
            return Some((key_at, value_at));
        }
        if after_trimmed.starts_with('.') {
            return Some((key_at, key_at));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("/etc/sentinel.toml"))
    }

    /// The error for `text`, checked to carry `line` and `key`.
    fn error(text: &str, line: usize, key: Option<&str>) -> String {
        let e = parse_str(text).expect_err("config should be rejected");
        assert_eq!((e.line(), e.key()), (Some(line), key), "{e}");
        e.to_string()
    }

    const FULL: &str = r#"
# every key, none at its default
[daemon]
interval = "500ms"
resolve_after = "1m"

[memory]
warn_horizon = "30m"
crit_horizon = "5m"
min_duration = "1m"
min_growth = "128MiB"

[deadlock]
min_wait = "10s"
hang_after = "2m"

[writes]
daily_budget = "1.5TB"
fill_warn_horizon = "3d"
fill_crit_horizon = "12h"
min_duration = "45s"

[threads]
max_threads = 500

[thrashing]
memory_pressure = "25%"
major_faults = 1000
min_duration = "1m30s"

[log]
format = "json"

[metrics]
listen = "[::1]:9100"
top_processes = 5
min_container_age = "2m"
max_containers = 50

[api]
socket = "/run/s.sock"
group = "adm"

[spool]
max_events = 100
max_bytes = "1MB"

[recorder]
enabled = false
dir = "/srv/rec"
interval = "10s"
max_size = "200MB"
max_age = "2d"
min_free = "1GB"
top_processes = 20
"#;

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.daemon.interval, Duration::from_secs(1));
        assert_eq!(c.daemon.resolve_after, Duration::from_secs(30));
        assert_eq!(c.memory.warn_horizon, Duration::from_secs(900));
        assert_eq!(c.memory.crit_horizon, Duration::from_secs(180));
        assert_eq!(c.memory.min_duration, Duration::from_secs(20));
        assert_eq!(c.memory.min_growth, 64_000_000);
        assert_eq!(c.deadlock.min_wait, Duration::from_secs(30));
        assert_eq!(c.deadlock.hang_after, Duration::from_secs(300));
        assert_eq!(c.writes.daily_budget, 100_000_000_000);
        assert_eq!(c.writes.fill_warn_horizon, Duration::from_secs(7 * 86_400));
        assert_eq!(c.writes.fill_crit_horizon, Duration::from_secs(6 * 3600));
        assert_eq!(c.writes.min_duration, Duration::from_secs(20));
        assert_eq!(c.threads.max_threads, 2000);
        assert_eq!(c.thrashing.memory_pressure, 10.0);
        assert_eq!(c.thrashing.major_faults, 200);
        assert_eq!(c.thrashing.min_duration, Duration::from_secs(30));

        assert_eq!(parse_str("").unwrap(), c);
        assert_eq!(parse_str("# nothing set\n\n").unwrap(), c);
        assert_eq!(parse_str("[memory]\n[threads]\n").unwrap(), c);
    }

    #[test]
    fn full_file() {
        let c = parse_str(FULL).unwrap();
        let want = Config {
            daemon: Daemon {
                interval: Duration::from_millis(500),
                resolve_after: Duration::from_secs(60),
                ..Daemon::default()
            },
            memory: Memory {
                warn_horizon: Duration::from_secs(1800),
                crit_horizon: Duration::from_secs(300),
                min_duration: Duration::from_secs(60),
                min_growth: 128 << 20,
            },
            deadlock: Deadlock {
                min_wait: Duration::from_secs(10),
                hang_after: Duration::from_secs(120),
            },
            writes: Writes {
                daily_budget: 1_500_000_000_000,
                fill_warn_horizon: Duration::from_secs(3 * 86_400),
                fill_crit_horizon: Duration::from_secs(12 * 3600),
                min_duration: Duration::from_secs(45),
            },
            threads: Threads { max_threads: 500 },
            thrashing: Thrashing {
                memory_pressure: 25.0,
                major_faults: 1000,
                min_duration: Duration::from_secs(90),
            },
            log: Log {
                format: LogFormat::Json,
            },
            metrics: Metrics {
                listen: Some("[::1]:9100".parse().unwrap()),
                top_processes: 5,
                min_container_age: Duration::from_secs(120),
                max_containers: 50,
            },
            api: Api {
                socket: Some("/run/s.sock".into()),
                group: Some("adm".into()),
            },
            spool: Spool {
                max_events: 100,
                max_bytes: 1_000_000,
            },
            recorder: Recorder {
                enabled: false,
                dir: Some("/srv/rec".into()),
                interval: Duration::from_secs(10),
                max_size: 200_000_000,
                max_age: Duration::from_secs(2 * 86_400),
                min_free: 1_000_000_000,
                top_processes: 20,
            },
            webhooks: Vec::new(),
        };
        assert_eq!(c, want);
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = parse_str("[memory]\nwarn_horizon = \"1h\"\n").unwrap();
        assert_eq!(c.memory.warn_horizon, Duration::from_secs(3600));
        assert_eq!(
            Config {
                memory: Memory {
                    warn_horizon: Duration::from_secs(3600),
                    ..Memory::default()
                },
                ..Config::default()
            },
            c
        );
    }

    #[test]
    fn other_toml_spellings() {
        let c = parse_str(
            "memory.warn_horizon = \"20m\"\n\
             thrashing = { memory_pressure = 12.5, major_faults = 0 }\n\
             [threads]\n\"max_threads\" = 64\n",
        )
        .unwrap();
        assert_eq!(c.memory.warn_horizon, Duration::from_secs(1200));
        assert_eq!(c.thrashing.memory_pressure, 12.5);
        assert_eq!(c.thrashing.major_faults, 0);
        assert_eq!(c.threads.max_threads, 64);
        for p in ["10", "10.0", "\"10%\"", "\"10 %\"", "\"10\""] {
            let c = parse_str(&format!("[thrashing]\nmemory_pressure = {p}\n")).unwrap();
            assert_eq!(c.thrashing.memory_pressure, 10.0, "{p}");
        }
    }

    #[test]
    fn serializes_back_as_config_strings() {
        let json = serde_json::to_value(Config::default()).unwrap();
        assert_eq!(json["memory"]["warn_horizon"], "15m");
        assert_eq!(json["memory"]["min_growth"], "64MB");
        assert_eq!(json["writes"]["daily_budget"], "100GB");
        assert_eq!(json["writes"]["fill_warn_horizon"], "7d");
        assert_eq!(json["threads"]["max_threads"], 2000);
        assert_eq!(json["thrashing"]["memory_pressure"], 10.0);

        // SCHEMA (which names are accepted) and the structs (which are
        // read) must list the same keys.
        let sections = json.as_object().unwrap();
        assert_eq!(sections.len(), SCHEMA.len());
        for (section, keys) in SCHEMA.iter().filter(|(s, _)| *s != "sink") {
            let mut have: Vec<&str> = sections[*section]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut want = keys.to_vec();
            have.sort_unstable();
            want.sort_unstable();
            assert_eq!(have, want, "[{section}]");
        }

        // What is printed reads back as the same config.
        let c = parse_str(FULL).unwrap();
        let json = serde_json::to_value(&c).unwrap();
        let mut text = String::new();
        for (section, keys) in json.as_object().unwrap() {
            if section == "sink" {
                continue;
            }
            text.push_str(&format!("[{section}]\n"));
            for (key, value) in keys.as_object().unwrap() {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        assert_eq!(parse_str(&text).unwrap(), c, "{text}");
    }

    #[test]
    fn unknown_section() {
        let msg = error(
            "[daemon]\ninterval = \"2s\"\n\n[memroy]\n",
            4,
            Some("memroy"),
        );
        assert!(msg.contains("unknown section"), "{msg}");
        assert!(msg.contains("daemon, memory, deadlock"), "{msg}");
        assert!(msg.starts_with("/etc/sentinel.toml:4:1: memroy: "), "{msg}");

        let msg = error("interval = \"2s\"\n", 1, Some("interval"));
        assert!(msg.contains("belongs under [daemon]"), "{msg}");
    }

    #[test]
    fn unknown_key() {
        let msg = error(
            "[memory]\nwarn_horizon = \"15m\"\n  warn_horizn = \"5m\"\n",
            3,
            Some("memory.warn_horizn"),
        );
        assert_eq!(
            msg,
            "/etc/sentinel.toml:3:3: memory.warn_horizn: unknown key (valid in [memory]: \
             warn_horizon, crit_horizon, min_duration, min_growth)"
        );
        error("deadlock.min_wiat = \"1s\"\n", 1, Some("deadlock.min_wiat"));
        let msg = error(
            "\n[threads]\nmax_threads = 10\n[threads.extra]\nx = 1\n",
            4,
            Some("threads.extra"),
        );
        assert!(msg.contains(":4:1:"), "{msg}");
    }

    #[test]
    fn bad_duration() {
        let msg = error(
            "# sentinel\n[memory]\nwarn_horizon = \"15 mins\"\n",
            3,
            Some("memory.warn_horizon"),
        );
        assert!(
            msg.starts_with(
                "/etc/sentinel.toml:3:16: memory.warn_horizon: \"15 mins\" is not a duration: unknown unit"
            ),
            "{msg}"
        );
        let msg = error(
            "[deadlock]\nhang_after = \"soon\"\n",
            2,
            Some("deadlock.hang_after"),
        );
        assert!(msg.contains("`soon` is not a duration"), "{msg}");
        error("[daemon]\ninterval = \"-1s\"\n", 2, Some("daemon.interval"));
    }

    #[test]
    fn bad_size() {
        let msg = error(
            "[memory]\ncrit_horizon = \"1m\"\nmin_growth = \"20 parsecs\"\n",
            3,
            Some("memory.min_growth"),
        );
        assert!(msg.contains(":3:14: "), "{msg}");
        assert!(msg.contains("`20 parsecs` is not a size"), "{msg}");
        let msg = error(
            "[writes]\ndaily_budget = \"0GB\"\n",
            2,
            Some("writes.daily_budget"),
        );
        assert!(msg.contains("more than 0 bytes"), "{msg}");
    }

    #[test]
    fn wrong_types() {
        let msg = error("[deadlock]\nmin_wait = 30\n", 2, Some("deadlock.min_wait"));
        assert!(msg.contains(":2:12: "), "{msg}");
        assert!(msg.contains("found integer 30 (write \"30s\")"), "{msg}");
        let msg = error("[memory]\nmin_growth = 64\n", 2, Some("memory.min_growth"));
        assert!(msg.contains("\"64MB\""), "{msg}");
        let msg = error(
            "[threads]\nmax_threads = \"2000\"\n",
            2,
            Some("threads.max_threads"),
        );
        assert!(
            msg.contains("expected an integer, found string \"2000\""),
            "{msg}"
        );
        error(
            "[threads]\nmax_threads = 0\n",
            2,
            Some("threads.max_threads"),
        );
        error(
            "[threads]\nmax_threads = 5000000000\n",
            2,
            Some("threads.max_threads"),
        );
        error(
            "[thrashing]\nmajor_faults = -1\n",
            2,
            Some("thrashing.major_faults"),
        );
        error(
            "[thrashing]\nmemory_pressure = \"lots\"\n",
            2,
            Some("thrashing.memory_pressure"),
        );
        error(
            "[thrashing]\nmemory_pressure = 150\n",
            2,
            Some("thrashing.memory_pressure"),
        );
        error(
            "[thrashing]\nmemory_pressure = true\n",
            2,
            Some("thrashing.memory_pressure"),
        );
        let msg = error("\nmemory = 5\n", 2, Some("memory"));
        assert!(
            msg.contains(":2:10: memory: must be a [memory] section, found integer 5"),
            "{msg}"
        );
        error("[[memory]]\n", 1, Some("memory"));
        error(
            "[daemon]\ninterval = 1979-05-27T07:32:00Z\n",
            2,
            Some("daemon.interval"),
        );
        // Located inside an inline table.
        let msg = error(
            "deadlock = { hang_after = \"5m\", min_wait = 1 }\n",
            1,
            Some("deadlock.min_wait"),
        );
        assert!(msg.contains(":1:44: "), "{msg}");
    }

    #[test]
    fn horizons_and_interval() {
        let msg = error(
            "[memory]\nwarn_horizon = \"5m\"\ncrit_horizon = \"5m\"\n",
            3,
            Some("memory.crit_horizon"),
        );
        assert!(
            msg.contains("5m must be shorter than memory.warn_horizon (5m)"),
            "{msg}"
        );
        // Only the warning is set: it is the one to blame.
        let msg = error(
            "[memory]\nwarn_horizon = \"2m\"\n",
            2,
            Some("memory.warn_horizon"),
        );
        assert!(
            msg.contains("2m must be longer than memory.crit_horizon (3m, the default)"),
            "{msg}"
        );
        error(
            "[writes]\nfill_crit_horizon = \"8d\"\n",
            2,
            Some("writes.fill_crit_horizon"),
        );
        let msg = error(
            "[memory]\ncrit_horizon = \"0s\"\n",
            2,
            Some("memory.crit_horizon"),
        );
        assert!(msg.contains("must be longer than 0s"), "{msg}");
        error(
            "[writes]\nfill_warn_horizon = \"0m\"\n",
            2,
            Some("writes.fill_warn_horizon"),
        );
        let msg = error(
            "[daemon]\ninterval = \"50ms\"\n",
            2,
            Some("daemon.interval"),
        );
        assert!(msg.contains("at least 100ms"), "{msg}");
        assert!(parse_str("[daemon]\ninterval = \"100ms\"\n").is_ok());
        assert!(parse_str("[daemon]\ninterval = \"5s\"\n").is_ok());
        let msg = error("[daemon]\ninterval = \"10s\"\n", 2, Some("daemon.interval"));
        assert!(msg.contains("too long"), "{msg}");
    }

    #[test]
    fn first_error_in_the_file_wins() {
        // Not the schema's order, which would report [daemon] first.
        error(
            "[writes]\ndaily_budget = \"lots\"\n[daemon]\ninterval = \"x\"\n",
            2,
            Some("writes.daily_budget"),
        );
        // A rejected value does not also trip a cross-field check.
        error(
            "[memory]\nwarn_horizon = \"2m\"\ncrit_horizon = \"bogus\"\n",
            3,
            Some("memory.crit_horizon"),
        );
    }

    #[test]
    fn syntax_error() {
        let e = parse_str("[memory]\nwarn_horizon = \"15m\n").unwrap_err();
        assert_eq!((e.line(), e.key()), (Some(2), None), "{e}");
        let msg = e.to_string();
        assert!(msg.starts_with("/etc/sentinel.toml:2:"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");

        let e = parse_str("[daemon]\ninterval = \"1s\"\ninterval = \"2s\"\n").unwrap_err();
        assert_eq!(e.line(), Some(3), "{e}");
        let e = parse_str("\n\n[memory\n").unwrap_err();
        assert_eq!(e.line(), Some(3), "{e}");
    }

    #[test]
    fn unreadable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.toml");
        let e = load(&path).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert_eq!((e.line(), e.key()), (None, None));
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{}: cannot read config: ", path.display())),
            "{msg}"
        );

        std::fs::write(&path, "[threads]\nmax_threads = 8\n").unwrap();
        assert_eq!(load(&path).unwrap().threads.max_threads, 8);
    }

    #[test]
    fn locating() {
        let text = "a = 1\n[memory]\n  x = \"\"\"\n[fake]\n\"\"\"\nwarn_horizon = 1\n";
        assert_eq!(
            locate(text, "memory", Some("warn_horizon")),
            Some(Spot {
                line: 6,
                key_col: 1,
                value_col: 16
            })
        );
        assert_eq!(
            locate(text, "memory", None),
            Some(Spot {
                line: 2,
                key_col: 1,
                value_col: 1
            })
        );
        assert_eq!(locate(text, "fake", None), None);
        assert_eq!(
            locate(
                "\"memory\" . warn_horizon = 3",
                "memory",
                Some("warn_horizon")
            ),
            Some(Spot {
                line: 1,
                key_col: 1,
                value_col: 27
            })
        );
        assert_eq!(
            locate(
                "memory = { a = 1, 'warn_horizon' = 2 }",
                "memory",
                Some("warn_horizon")
            ),
            Some(Spot {
                line: 1,
                key_col: 19,
                value_col: 36
            })
        );
        assert_eq!(split_key(r#"a."b.c" . d"#), ["a", "b.c", "d"]);
        assert_eq!(find_unquoted(r#""k=\"=" = 1"#, '='), Some(8));
    }

    #[test]
    fn webhooks() {
        let dir = tempfile::tempdir().unwrap();
        let url_file = dir.path().join("url");
        std::fs::write(&url_file, "https://hooks.example/T0KEN\n").unwrap();
        // SAFETY: tests in this module do not read this variable elsewhere.
        unsafe { std::env::set_var("SENTINEL_TEST_HDR", "s3cret") };
        let text = format!(
            "[[sink.webhook]]\nurl = \"http://127.0.0.1:9/x\"\n\n\
             [[sink.webhook]]\nname = \"chat\"\nurl_file = \"{}\"\nformat = \"slack\"\n\
             min_severity = \"warning\"\ntimeout = \"2s\"\nmax_per_minute = 0\n\
             headers = {{ X-A = \"plain\", X-B = {{ env = \"SENTINEL_TEST_HDR\" }} }}\n",
            url_file.display()
        );
        let c = parse_str(&text).unwrap();
        assert_eq!(c.webhooks.len(), 2);
        let (a, b) = (&c.webhooks[0], &c.webhooks[1]);
        assert_eq!(a.name, "webhook1");
        assert_eq!(a.url.expose(), "http://127.0.0.1:9/x");
        assert_eq!(a.format, WebhookFormat::Json);
        assert_eq!((a.timeout, a.max_per_minute), (Duration::from_secs(5), 30));
        assert_eq!(b.name, "chat");
        assert_eq!(b.url.expose(), "https://hooks.example/T0KEN");
        assert_eq!(b.format, WebhookFormat::Slack);
        assert_eq!(b.min_severity, Severity::Warning);
        assert_eq!((b.timeout, b.max_per_minute), (Duration::from_secs(2), 0));
        let headers: Vec<(&str, &str)> = b
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(headers, [("X-A", "plain"), ("X-B", "s3cret")]);
        // Nothing that prints a config shows a secret.
        let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(
            !shown.contains("T0KEN") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(!shown.contains("127.0.0.1:9/x"), "{shown}");
    }

    #[test]
    fn webhook_errors() {
        let case = |text: &str, line: usize, key: &str, has: &str| {
            let e = parse_str(text).unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.line(), Some(line), "{msg}");
            assert_eq!(e.key(), Some(key), "{msg}");
            assert!(msg.contains(has), "{msg}");
            assert!(!msg.contains("T0KEN"), "a secret leaked: {msg}");
        };
        let two = "[[sink.webhook]]\nurl = \"http://a/\"\n[[sink.webhook]]\n";
        case(two, 3, "sink.webhook[2]", "needs one of url");
        case(
            &format!("{two}url = \"ftp://T0KEN@a/\"\n"),
            4,
            "sink.webhook[2].url",
            "http:// or https://",
        );
        case(
            &format!("{two}url = \"http://a/\"\nurl_env = \"X\"\n"),
            5,
            "sink.webhook[2].url_env",
            "only one of",
        );
        case(
            &format!("{two}url_file = \"/nonexistent/url\"\n"),
            4,
            "sink.webhook[2].url_file",
            "cannot read /nonexistent/",
        );
        case(
            &format!("{two}url_env = \"SENTINEL_TEST_UNSET_VAR\"\n"),
            4,
            "sink.webhook[2].url_env",
            "SENTINEL_TEST_UNSET_VAR is not set",
        );
        case(
            &format!("{two}url = \"http://b/\"\nformat = \"teams\"\n"),
            5,
            "sink.webhook[2].format",
            "alertmanager",
        );
        case(
            &format!("{two}url = \"http://b/\"\nretries = 3\n"),
            5,
            "sink.webhook[2].retries",
            "unknown key",
        );
        case(
            &format!("{two}url = \"http://b/\"\nname = \"webhook1\"\n"),
            5,
            "sink.webhook[2].name",
            "already the name",
        );
        case(
            &format!("{two}url = \"http://b/\"\nname = \"../etc\"\n"),
            5,
            "sink.webhook[2].name",
            "names a directory",
        );
        case(
            &format!(
                "{two}url = \"http://b/\"\nheaders = {{ A = {{ file = \"/nonexistent\" }} }}\n"
            ),
            5,
            "sink.webhook[2].headers.A",
            "cannot read /nonexistent",
        );
        case(
            &format!("{two}url = \"http://b/\"\nheaders = {{ Idempotency-Key = \"x\" }}\n"),
            5,
            "sink.webhook[2].headers.Idempotency-Key",
            "sentinel sets Idempotency-Key itself",
        );
        case(
            "[sink]\nwebhook = 3\n",
            2,
            "sink.webhook",
            "[[sink.webhook]]",
        );
        case(
            "[daemon]\nrepeat_after = \"2h\"\n",
            2,
            "daemon.repeat_after",
            "must not be longer than repeat_max",
        );
        case(
            "[metrics]\nlisten = \"localhost\"\n",
            2,
            "metrics.listen",
            "not an address",
        );
        case(
            "[api]\nsocket = \"run/s\"\n",
            2,
            "api.socket",
            "absolute path",
        );
        let off = parse_str("[metrics]\nlisten = \"\"\n[api]\nsocket = \"\"\n").unwrap();
        assert_eq!((off.metrics.listen, off.api.socket), (None, None));
    }
}
