//! `sentinel export` after a real incident: a process grows into its
//! cgroup's memory limit until the kernel kills it, and the archive
//! exported around that oom_kill must tell the story: the event, the
//! victim's growth row by row, and a report whose charts a browser
//! (Debian's headless Chromium) actually draws. Then what a user can get
//! wrong: a range with no data, an unknown event id, an unwritable output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sentinel_tests::archive::Archive;
use sentinel_tests::sentinel::{CheckOutput, run_command, run_sentinel};
use sentinel_tests::{
    Daemon, Kind, MIB, ScratchDir, TestCgroup, Workload, measured, require_root, sentinel_bin,
    serial, skip, truncate, workload_bin,
};

const LIMIT: u64 = 256 * MIB;
/// MiB/s and the ceiling without the limit: killed about 13 s after go.
const RATE_MIB_S: u64 = 20;
const MAX_MIB: u64 = 400;
const OOM_TIMEOUT: Duration = Duration::from_secs(90);
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(120);

/// Frames every second, so the victim's ~13 s of growth is a dozen rows.
fn config(rec: &Path) -> String {
    format!(
        "[recorder]\ninterval = \"1s\"\nmin_free = \"0\"\ndir = \"{}\"\n",
        rec.display()
    )
}

fn export(args: &[&str]) -> Result<CheckOutput> {
    run_sentinel(&sentinel_bin()?, "export", args, |_| {})
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn export_around_an_oom_kill_tells_the_story_and_the_report_renders() -> Result<()> {
    let _serial = serial();
    require_root!();
    let scratch = ScratchDir::new_in(&std::env::temp_dir(), "export")?;
    let rec = scratch.path().join("rec");
    let cg = TestCgroup::with_memory_limit("export", LIMIT)?;
    let limit_path = cg.memory_path().expect("cgroup has a memory limit");
    let daemon = Daemon::start(&config(&rec))?;

    let mut w = Workload::spawn(
        workload_bin!(),
        &["grow", &RATE_MIB_S.to_string(), &MAX_MIB.to_string()],
        &cg,
    )?;
    let pid = w.pid();
    w.expect("ready", Duration::from_secs(60))?;
    w.go()?;
    let oom = daemon.wait_for(
        &format!(
            "an oom_kill event for pid {pid} (growing {RATE_MIB_S} MiB/s into the {} MiB limit of {limit_path})",
            LIMIT / MIB
        ),
        OOM_TIMEOUT,
        |e| e.kind == Kind::OomKill && e.pid_is(pid),
    )?;
    w.wait_exit(Duration::from_secs(10))?;
    // Two more frames after the kill, then export while the daemon runs
    // (as someone would during an incident).
    std::thread::sleep(Duration::from_millis(2500));

    let out = scratch.path().join("x.tar.gz");
    let started = Instant::now();
    let run = export(&[
        "--around",
        &oom.id,
        "-o",
        &s(&out),
        "--store",
        &s(&rec),
        "--config",
        &s(daemon.config_path()),
    ])?;
    let took = started.elapsed();
    ensure!(
        run.status.success(),
        "sentinel export --around {} failed: {}",
        oom.id,
        run.describe()
    );
    ensure!(
        run.stdout.trim() == s(&out),
        "export should print the archive's path {}; stdout: {:?}",
        out.display(),
        run.stdout
    );
    let ar = Archive::open(&out)?;
    ensure!(
        ar.top == "x",
        "the archive's top directory should be named after it (x), got {}",
        ar.top
    );
    for want in [
        "manifest.json",
        "events.ndjson",
        "report.html",
        "stacks.txt",
        "host.json",
        "timelines/host.csv",
    ] {
        ensure!(
            ar.files.contains_key(want),
            "{want} missing from the archive; it holds {:?}",
            ar.names()
        );
    }

    // The event.
    let events = ar.ndjson("events.ndjson")?;
    ensure!(
        events.iter().any(|e| e["id"] == oom.id.as_str()),
        "events.ndjson lacks the oom_kill {}; it holds {} events: {}",
        oom.id,
        events.len(),
        truncate(ar.text("events.ndjson")?, 3000)
    );
    let manifest = ar.json("manifest.json")?;
    ensure!(
        manifest["range"]["around"]["id"] == oom.id.as_str(),
        "manifest.range.around should name {}: {}",
        oom.id,
        manifest["range"]
    );

    // The victim's growth, row by row.
    let prefix = format!("timelines/processes/{pid}-");
    let Some(victim) = ar
        .names()
        .into_iter()
        .find(|n| n.starts_with(&prefix) && n.ends_with(".csv"))
        .map(str::to_string)
    else {
        bail!(
            "no timeline of the victim pid {pid} ({prefix}*.csv) in the archive; it holds {:?}; manifest selection: {}",
            ar.names(),
            manifest["selection"]
        );
    };
    let csv = ar.csv(&victim)?;
    let rss: Vec<f64> = csv.numbers("rss_bytes")?.into_iter().flatten().collect();
    let (first, peak) = (
        rss.first().copied().unwrap_or(0.0),
        rss.iter().copied().fold(0.0, f64::max),
    );
    ensure!(
        rss.len() >= 5 && peak - first > 100.0 * MIB as f64,
        "{victim} should show the growth: at least 5 rows and RSS rising by over 100 MiB; got {} rows, from {:.0} MiB to a peak of {:.0} MiB:\n{}",
        rss.len(),
        first / MIB as f64,
        peak / MIB as f64,
        truncate(ar.text(&victim)?, 3000)
    );
    let report = ar.text("report.html")?;
    ensure!(
        report.contains(&format!("pid {pid} (")) && report.contains("OOM-killed"),
        "report.html's summary should tell of pid {pid}'s OOM kill:\n{}",
        truncate(report, 4000)
    );
    daemon.stop()?;
    measured(
        "export_around_an_oom_kill",
        &[
            ("export_ms", &took.as_millis()),
            ("archive_bytes", &std::fs::metadata(&out)?.len()),
            ("victim_rows", &rss.len()),
            ("frames", &manifest["store"]["frames"]),
        ],
    );

    // The report in a browser.
    let Some(chromium) = find_chromium() else {
        if std::env::var_os("CI").is_some() {
            bail!(
                "no chromium in PATH, and CI is set: the report must be rendered in CI (cargo xtask bootstrap installs Debian's chromium)"
            );
        }
        skip!(
            "no chromium in PATH: report.html was checked as text only (apt-get install chromium to render it)"
        );
    };
    let dir = ar.unpack_to(&scratch.path().join("unpacked"))?;
    let page = dir.join("report.html");
    let profile = scratch.path().join("chromium-profile");
    let dom = chromium_run(&chromium, &profile, &["--dump-dom".into(), file_url(&page)])?;
    check_dom(&dom, pid, &oom.id)?;

    // Painted, not only present: the same page with and without the
    // victim's line, screenshotted; the pixels that differ must be the
    // line's colour, many of them, rising from left to right.
    let colour = series_colour(&dom, pid)?;
    let without = dir.join("without-victim.html");
    std::fs::write(&without, remove_series(report, pid)?)?;
    let shot = |html: &Path, name: &str| -> Result<Image> {
        let png = scratch.path().join(name);
        chromium_run(
            &chromium,
            &profile,
            &[
                format!("--screenshot={}", png.display()),
                "--window-size=1280,2400".into(),
                "--hide-scrollbars".into(),
                file_url(html),
            ],
        )?;
        Image::read(&png)
    };
    let with_line = shot(&page, "with.png")?;
    let without_line = shot(&without, "without.png")?;
    ensure!(
        (with_line.width, with_line.height) == (without_line.width, without_line.height),
        "the two screenshots differ in size"
    );
    let mut painted: Vec<(u32, u32)> = Vec::new();
    for y in 0..with_line.height {
        for x in 0..with_line.width {
            let a = with_line.rgb(x, y);
            if a != without_line.rgb(x, y) && near(a, colour, 40) {
                painted.push((x, y));
            }
        }
    }
    ensure!(
        painted.len() >= 300,
        "the victim's RSS line (colour #{:02x}{:02x}{:02x}) should be painted in Chromium's screenshot: only {} pixels of it differ from the page without the line (screenshot {})",
        colour[0],
        colour[1],
        colour[2],
        painted.len(),
        scratch.path().join("with.png").display()
    );
    let xs = painted.iter().map(|p| p.0);
    let (xmin, xmax) = (xs.clone().min().unwrap_or(0), xs.max().unwrap_or(0));
    let band = ((xmax - xmin) / 5).max(1);
    let mean_y = |from: u32, to: u32| {
        let ys: Vec<f64> = painted
            .iter()
            .filter(|p| p.0 >= from && p.0 <= to)
            .map(|p| f64::from(p.1))
            .collect();
        ys.iter().sum::<f64>() / ys.len().max(1) as f64
    };
    let (left, right) = (mean_y(xmin, xmin + band), mean_y(xmax - band, xmax));
    ensure!(
        right + 20.0 < left,
        "the victim's RSS line should rise from left to right on screen (its right end higher, i.e. smaller y): left end at y={left:.0}, right end at y={right:.0}"
    );
    measured(
        "export_report_renders",
        &[
            ("line_pixels", &painted.len()),
            ("rise_px", &format!("{:.0}", left - right)),
        ],
    );
    Ok(())
}

/// The bad inputs of the issue: each a clear error naming what was wrong,
/// exit code 1, and no archive (nor a partial one) left behind.
#[test]
fn export_refuses_bad_input_and_leaves_nothing_behind() -> Result<()> {
    let _serial = serial();
    require_root!();
    let scratch = ScratchDir::new_in(&std::env::temp_dir(), "export-bad")?;
    let rec = scratch.path().join("rec");
    let daemon = Daemon::start(&config(&rec))?;
    std::thread::sleep(Duration::from_secs(3));
    daemon.stop()?;
    let outdir = scratch.path().join("out");
    std::fs::create_dir(&outdir)?;
    let out = outdir.join("x.tar.gz");
    let missing = scratch.path().join("no-such-store");
    let cases: Vec<(&str, Vec<String>, Vec<String>)> = vec![
        (
            "a range with no data",
            vec![
                "--since".into(),
                "2001-01-01T00:00:00Z".into(),
                "--until".into(),
                "2001-01-02T00:00:00Z".into(),
                "-o".into(),
                s(&out),
            ],
            vec![
                "no records between 2001-01-01T00:00:00.000Z".into(),
                "the store holds".into(),
            ],
        ),
        (
            "an unknown event id",
            vec![
                "--around".into(),
                "0123456789abcdef0123456789abcdef".into(),
                "-o".into(),
                s(&out),
            ],
            vec!["0123456789abcdef0123456789abcdef".into(), "no event".into()],
        ),
        (
            "an unwritable output",
            vec!["-o".into(), "/proc/sentinel-export-test.tar.gz".into()],
            vec!["/proc/sentinel-export-test.tar.gz".into()],
        ),
    ];
    for (what, args, says) in &cases {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        let rec_s = s(&rec);
        all.extend(["--store", &rec_s]);
        let run = export(&all)?;
        ensure!(
            run.code() == Some(1),
            "export with {what} should exit 1: {}",
            run.describe()
        );
        for word in says {
            ensure!(
                run.stderr.contains(word.as_str()),
                "export with {what}: stderr should say {word:?}: {}",
                run.describe()
            );
        }
        ensure!(
            run.stderr.lines().filter(|l| !l.trim().is_empty()).count() <= 2,
            "export with {what}: the error should be a line or two: {}",
            run.describe()
        );
        let left: Vec<String> = std::fs::read_dir(&outdir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        ensure!(
            left.is_empty(),
            "export with {what} left {left:?} in {}",
            outdir.display()
        );
    }
    ensure!(
        !Path::new("/proc/sentinel-export-test.tar.gz").exists(),
        "an archive appeared under /proc"
    );
    let run = export(&["--store", &s(&missing), "-o", &s(&out)])?;
    ensure!(
        run.code() == Some(1) && run.stderr.contains(&s(&missing)),
        "export from a store that does not exist should exit 1 naming it: {}",
        run.describe()
    );
    Ok(())
}

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"]
        .iter()
        .flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// Runs headless Chromium (as root, so without its sandbox) and returns
/// its stdout.
fn chromium_run(bin: &Path, profile: &Path, args: &[String]) -> Result<String> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--force-device-scale-factor=1",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args);
    let command = format!("{} {}", bin.display(), args.join(" "));
    let run = run_command(cmd, command, CHROMIUM_TIMEOUT)?;
    ensure!(
        run.status.success(),
        "{} failed ({}): {}",
        run.command,
        run.status,
        truncate(&run.stderr, 3000)
    );
    Ok(run.stdout)
}

/// The opening tag of the first element carrying all of `needles`.
fn tag_with<'a>(html: &'a str, needles: &[&str]) -> Option<&'a str> {
    let mut at = 0;
    while let Some(i) = html[at..].find('<') {
        let start = at + i;
        let end = start + html[start..].find('>')?;
        let tag = &html[start..=end];
        if needles.iter().all(|n| tag.contains(n)) {
            return Some(tag);
        }
        at = end;
    }
    None
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let i = tag.find(&key)? + key.len();
    Some(&tag[i..i + tag[i..].find('"')?])
}

/// The DOM as Chromium built it: three charts, the victim's RSS line with
/// many points, and the oom_kill marked on the RSS chart.
fn check_dom(dom: &str, pid: i32, oom_id: &str) -> Result<()> {
    for id in ["chart-rss", "chart-write", "chart-blocked"] {
        ensure!(
            tag_with(dom, &["<svg", "class=\"chart\"", &format!("id=\"{id}\"")]).is_some(),
            "Chromium's DOM has no <svg class=\"chart\" id=\"{id}\">:\n{}",
            truncate(dom, 4000)
        );
    }
    let rss_start = dom.find("id=\"chart-rss\"").unwrap_or(0);
    let rss = &dom[rss_start..rss_start + dom[rss_start..].find("</svg>").unwrap_or(0)];
    let data_pid = format!("data-pid=\"{pid}\"");
    let path = tag_with(rss, &["<path", "class=\"series\"", &data_pid]).with_context(|| {
        format!(
            "the RSS chart has no series for pid {pid}:\n{}",
            truncate(rss, 4000)
        )
    })?;
    let d = attr(path, "d").unwrap_or("");
    let points = d.matches(['M', 'L']).count();
    ensure!(
        points >= 5,
        "the victim's RSS line should have at least 5 points, it has {points}: {path}"
    );
    let mark = format!("data-event-id=\"{oom_id}\"");
    ensure!(
        tag_with(rss, &["<line", "event-mark", &mark]).is_some(),
        "the RSS chart has no event mark for the oom_kill {oom_id}:\n{}",
        truncate(rss, 4000)
    );
    Ok(())
}

fn series_colour(dom: &str, pid: i32) -> Result<[u8; 3]> {
    let data_pid = format!("data-pid=\"{pid}\"");
    let tag = tag_with(dom, &["<path", "class=\"series\"", &data_pid])
        .context("no series path for the victim")?;
    let hex = attr(tag, "stroke")
        .and_then(|s| s.strip_prefix('#'))
        .filter(|h| h.len() == 6)
        .with_context(|| format!("the victim's series has no #rrggbb stroke: {tag}"))?;
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16);
    Ok([byte(0)?, byte(2)?, byte(4)?])
}

/// report.html without the victim's path in the RSS chart.
fn remove_series(html: &str, pid: i32) -> Result<String> {
    let data_pid = format!("data-pid=\"{pid}\"");
    let tag = tag_with(html, &["<path", "class=\"series\"", &data_pid])
        .context("no series path for the victim in report.html")?;
    let start = html.find(tag).context("the tag is in the page")?;
    let end = start
        + html[start..]
            .find("</path>")
            .context("the victim's path is not closed")?
        + "</path>".len();
    Ok(format!("{}{}", &html[..start], &html[end..]))
}

fn near(a: [u8; 3], b: [u8; 3], tol: i32) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (i32::from(*x) - i32::from(y)).abs() <= tol)
}

struct Image {
    width: u32,
    height: u32,
    /// RGB or RGBA, row by row.
    pixels: Vec<u8>,
    channels: usize,
}

impl Image {
    fn read(path: &Path) -> Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut dec = png::Decoder::new(std::io::BufReader::new(file));
        dec.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = dec
            .read_info()
            .with_context(|| format!("{} is not a PNG", path.display()))?;
        let mut pixels = vec![0; reader.output_buffer_size().context("PNG too large")?];
        let info = reader
            .next_frame(&mut pixels)
            .with_context(|| format!("decoding {}", path.display()))?;
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => bail!("{}: unexpected PNG colour type {other:?}", path.display()),
        };
        pixels.truncate(info.buffer_size());
        Ok(Self {
            width: info.width,
            height: info.height,
            pixels,
            channels,
        })
    }

    fn rgb(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * self.channels;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }
}
