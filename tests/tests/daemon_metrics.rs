//! The Prometheus endpoint end to end: the daemon's page passes `promtool
//! check metrics`, and a real Prometheus scraping it computes the write
//! rate of a test workload's container with PromQL.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use sentinel_tests::prometheus::{
    Prometheus, prometheus_bin, promtool_bin, promtool_check_metrics,
};
use sentinel_tests::receiver::{free_port, http_get};
use sentinel_tests::{
    Daemon, MIB, ScratchDir, TestCgroup, Workload, measured, require_root, secs, serial, skip,
    truncate, wait_for, workload_bin,
};

const RATE_MIB_S: u64 = 16;
const WRITE_SECONDS: u64 = 40;
/// From go until the container's series is on the page.
const ON_PAGE_WITHIN: Duration = Duration::from_secs(15);
/// From go until PromQL must agree with the workload.
const RATE_WITHIN: Duration = Duration::from_secs(35);
/// How far the PromQL rate may be from the workload's pace, once the 10 s
/// window is full of scrapes (before that, Prometheus extrapolates a
/// partial window only so far, and the rate ramps up).
const TOLERANCE: f64 = 0.1;
const WINDOW: Duration = Duration::from_secs(10);

/// A workload appends 16 MiB/s in a cgroup of its own. Within 15 s of go
/// its container has series on the daemon's `/metrics`, the page passes
/// `promtool check metrics`, and the workload is among the top writers;
/// a real Prometheus scraping every second then answers
/// `rate(sentinel_container_write_bytes_total{container=~".*<cgroup>"}[10s])`
/// with 16 MiB/s ± 10% (once it has 10 s of scrapes) within 35 s of go.
#[test]
fn prometheus_computes_a_containers_write_rate() -> Result<()> {
    let _serial = serial();
    require_root!();
    let Some(prometheus) = prometheus_bin() else {
        skip!("no /usr/bin/prometheus (Debian package `prometheus`)");
    };
    let Some(promtool) = promtool_bin() else {
        skip!("no /usr/bin/promtool (Debian package `prometheus`)");
    };
    let Some(dir) = ScratchDir::on_disk("daemon-metrics")? else {
        skip!(
            "the target dir and /var/tmp are both on tmpfs/ramfs; writes there never reach a disk"
        );
    };
    let file = dir.path().join("data");
    let cg = TestCgroup::new("daemon-metrics")?;
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let daemon = Daemon::start(&format!(
        "[metrics]\nlisten = \"{listen}\"\nmin_container_age = \"1s\"\n"
    ))?;

    let mut w = Workload::writer(workload_bin!(), &cg, &file, RATE_MIB_S, WRITE_SECONDS)?;
    let pid = w.pid();
    w.go()?;
    let go = Instant::now();

    // The page, once the container (1 s old at least) has its own series
    // and the workload is among the top writers.
    let series = format!(
        "sentinel_container_write_bytes_total{{container=\"{}\"}} ",
        cg.path()
    );
    let writer = format!("sentinel_process_write_bytes_per_second{{pid=\"{pid}\",");
    let mut last_page = String::new();
    let page = wait_for(
        &format!("a positive {series}and {writer}..}} on http://{listen}/metrics"),
        ON_PAGE_WITHIN,
        || {
            let (status, body) = match http_get(listen, "/metrics", Duration::from_secs(5)) {
                Ok(r) => r,
                Err(e) => return Err(daemon.failure(&format!("GET /metrics: {e:#}"))),
            };
            if status != 200 {
                bail!(
                    "GET http://{listen}/metrics: status {status}: {}",
                    truncate(&body, 2000)
                );
            }
            let written = body
                .lines()
                .find_map(|l| l.strip_prefix(&series))
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v > 0.0);
            let found = written && body.contains(&writer);
            last_page = body;
            std::thread::sleep(Duration::from_millis(200));
            Ok(found.then(|| last_page.clone()))
        },
    )
    .map_err(|e| anyhow::anyhow!("{e:#}\n--- last page ---\n{}", truncate(&last_page, 20_000)))?;
    let on_page = go.elapsed();

    if let Err(why) = promtool_check_metrics(&promtool, &page)? {
        bail!("{why}\n--- page ---\n{}", truncate(&page, 20_000));
    }
    for needed in [
        "sentinel_build_info{version=",
        "sentinel_probe_up{probe=\"writes\"} 1",
        "process_resident_memory_bytes ",
        "sentinel_sink_delivered_total{sink=\"log\"}",
    ] {
        if !page.contains(needed) {
            bail!(
                "{needed:?} is not on the page\n--- page ---\n{}",
                truncate(&page, 20_000)
            );
        }
    }

    let prom = Prometheus::start(&prometheus, &[listen])?;
    let query = format!(
        "rate(sentinel_container_write_bytes_total{{container=~\".*{}\"}}[10s])",
        cg.name()
    );
    let want = (RATE_MIB_S * MIB) as f64;
    let mut seen: Vec<String> = Vec::new();
    let mut first_positive = None;
    let rate = loop {
        let got = prom.query(&query)?;
        let value = match got.as_slice() {
            [(_, v)] => Some(*v),
            [] => None,
            more => {
                return Err(prom.failure(&format!("{query}: one series expected, got {more:?}")));
            }
        };
        seen.push(value.map_or("none".into(), |v| format!("{:.1}", v / MIB as f64)));
        if let Some(v) = value.filter(|v| *v > 0.0) {
            let first = *first_positive.get_or_insert(go.elapsed());
            if go.elapsed() >= first + WINDOW && (v - want).abs() <= want * TOLERANCE {
                break v;
            }
        }
        if go.elapsed() >= RATE_WITHIN {
            return Err(prom.failure(&format!(
                "{query} did not come within {:.0}% of {RATE_MIB_S} MiB/s, 10 s after its first \
                 positive answer, within {RATE_WITHIN:?} of go; MiB/s answered, one query a second: [{}]",
                TOLERANCE * 100.0,
                seen.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let update_us = page
        .lines()
        .find_map(|l| l.strip_prefix("sentinel_metrics_update_seconds "))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or("null".into(), |s| format!("{:.0}", s * 1e6));
    measured(
        "daemon_metrics",
        &[
            ("on_page_s", &secs(on_page)),
            (
                "first_positive_rate_s",
                &first_positive.map_or("null".into(), secs),
            ),
            ("close_rate_s", &secs(go.elapsed())),
            ("promql_mib_per_s", &format!("{:.1}", rate / MIB as f64)),
            ("answers", &seen.join(",")),
            ("page_bytes", &page.len()),
            ("page_lines", &page.lines().count()),
            ("update_us", &update_us),
        ],
    );
    drop(prom);
    drop(w);
    daemon.stop()?;
    Ok(())
}
