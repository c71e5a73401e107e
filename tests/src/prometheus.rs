//! A real Prometheus server (Debian's `prometheus`) on 127.0.0.1 that
//! scrapes the targets a test gives every second, and `promtool check
//! metrics`, for the metrics endpoint test. Config and TSDB live in a
//! scratch directory; the server is killed, and the directory removed, on
//! drop (every path out of a test, panics included).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::alertmanager::percent_encode;
use crate::receiver::{free_port, http_get, log_tail, wait_http_ready};
use crate::{ScratchDir, truncate};

/// Where Debian installs them.
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
pub const PROMTOOL_BIN: &str = "/usr/bin/promtool";

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary, or `None` when the package is not installed.
pub fn prometheus_bin() -> Option<PathBuf> {
    let p = Path::new(PROMETHEUS_BIN);
    p.is_file().then(|| p.to_path_buf())
}

pub fn promtool_bin() -> Option<PathBuf> {
    let p = Path::new(PROMTOOL_BIN);
    p.is_file().then(|| p.to_path_buf())
}

/// `promtool check metrics` on `page` (its stdin): `Ok(Err(output))` when
/// promtool finds a problem, lint included.
pub fn promtool_check_metrics(bin: &Path, page: &str) -> Result<std::result::Result<(), String>> {
    let mut child = Command::new(bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {} check metrics", bin.display()))?;
    let mut stdin = child.stdin.take().context("promtool's stdin is piped")?;
    // Written from a thread: promtool may answer (and fill its stdout pipe)
    // before it has read all of a large page.
    let page = page.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(page.as_bytes()));
    let out = child
        .wait_with_output()
        .context("waiting for promtool check metrics")?;
    let _ = writer.join();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(if out.status.success() && text.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool check metrics ({}): {text}", out.status))
    })
}

pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    // Removed on drop, after the child is gone.
    dir: ScratchDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`/metrics`) every second and
    /// waits for `/-/ready`.
    pub fn start(bin: &Path, targets: &[SocketAddr]) -> Result<Self> {
        let dir = ScratchDir::new_in(&std::env::temp_dir(), "prometheus")?;
        let config = dir.path().join("prometheus.yml");
        let storage = dir.path().join("data");
        std::fs::create_dir(&storage)?;
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: sentinel\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )?;
        let log = dir.path().join("prometheus.log");
        let log_file = std::fs::File::create(&log)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", storage.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut prom = Self {
            child,
            addr,
            log,
            dir,
        };
        wait_http_ready(&mut prom.child, addr, "prometheus", READY_TIMEOUT, || {
            log_tail(&prom.log, 8000)
        })?;
        Ok(prom)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log so far (the last 8000 bytes).
    pub fn log(&self) -> String {
        log_tail(&self.log, 8000)
    }

    /// An instant PromQL query (`/api/v1/query`) whose result is a vector:
    /// each element's labels and value.
    pub fn query(&self, promql: &str) -> Result<Vec<(Value, f64)>> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let data = self.api(&path)?;
        if data["resultType"] != "vector" {
            bail!("{promql}: not a vector: {data}");
        }
        let Some(results) = data["result"].as_array() else {
            bail!("{promql}: no result array: {data}");
        };
        results
            .iter()
            .map(|r| {
                let v = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .ok_or_else(|| anyhow!("{promql}: bad sample {r}"))?;
                Ok((r["metric"].clone(), v))
            })
            .collect()
    }

    /// Each scrape target's URL, health and last error, for messages.
    pub fn targets(&self) -> Result<Vec<String>> {
        let data = self.api("/api/v1/targets")?;
        Ok(data["activeTargets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| {
                        format!(
                            "{} health={} last_error={:?} last_scrape={}",
                            t["scrapeUrl"], t["health"], t["lastError"], t["lastScrape"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `GET path` on the HTTP API: the `data` of a `success` answer.
    fn api(&self, path: &str) -> Result<Value> {
        let (status, body) = http_get(self.addr, path, Duration::from_secs(5))?;
        let v: Value = serde_json::from_str(&body).with_context(|| {
            format!(
                "GET {path} on prometheus: status {status}, not JSON: {}",
                truncate(&body, 2000)
            )
        })?;
        if status != 200 || v["status"] != "success" {
            bail!(
                "GET {path} on prometheus: status {status}: {}",
                truncate(&body, 2000)
            );
        }
        Ok(v["data"].clone())
    }

    /// An error with the targets' state and Prometheus's log.
    pub fn failure(&self, what: &str) -> anyhow::Error {
        let targets = self
            .targets()
            .map(|t| t.join("\n"))
            .unwrap_or_else(|e| format!("(targets unavailable: {e:#})"));
        anyhow!(
            "{what}\n--- prometheus targets ---\n{targets}\n--- prometheus log ---\n{}",
            self.log()
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
