//! What each kernel said, and the support table made from it.

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::MARK;

const README_START: &str = "<!-- kernel-matrix:start";
const README_END: &str = "<!-- kernel-matrix:end -->";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    Pass,
    Skip,
    Fail,
}

pub struct TestResult {
    pub name: String,
    pub outcome: Outcome,
    pub secs: f64,
    /// Why it was skipped.
    pub reason: String,
    /// The end of a failed test's output.
    pub log: Vec<String>,
}

/// One kernel's run, read from its console.
#[derive(Default)]
pub struct KernelRun {
    pub name: String,
    pub package: String,
    pub release: String,
    pub accel: String,
    pub secs: f64,
    pub check: Option<Value>,
    pub tests: Vec<TestResult>,
    /// Setup that went wrong inside the VM (a module, the disk).
    pub errors: Vec<String>,
    pub done: bool,
    pub timed_out: bool,
}

impl KernelRun {
    /// Reads the init's `MARK` lines; anything else on the console is the
    /// kernel's or a test's own output.
    pub fn read(&mut self, lines: &[String]) {
        for line in lines {
            let Some(rest) = line
                .find(MARK)
                .map(|at| line[at + MARK.len()..].trim_start())
            else {
                continue;
            };
            let (tag, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            match tag {
                "check-json" => self.check = serde_json::from_str(rest).ok(),
                "error" => self.errors.push(rest.to_string()),
                "done" => self.done = true,
                "test" => {
                    let mut f = rest.splitn(4, ' ');
                    let (Some(name), Some(outcome), Some(secs)) = (f.next(), f.next(), f.next())
                    else {
                        continue;
                    };
                    let outcome = match outcome {
                        "pass" => Outcome::Pass,
                        "skip" => Outcome::Skip,
                        _ => Outcome::Fail,
                    };
                    self.tests.push(TestResult {
                        name: name.to_string(),
                        outcome,
                        secs: secs.parse().unwrap_or(0.0),
                        reason: f.next().unwrap_or("").to_string(),
                        log: Vec::new(),
                    });
                }
                "log" => {
                    if let Some(t) = self.tests.last_mut() {
                        t.log.push(rest.to_string());
                    }
                }
                _ => {}
            }
        }
    }

    pub fn count(&self, o: Outcome) -> usize {
        self.tests.iter().filter(|t| t.outcome == o).count()
    }

    /// Why this run does not pass, if it does not.
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.errors.clone();
        if self.timed_out {
            p.push(format!("timed out after {:.0} s", self.secs));
        } else if !self.done {
            p.push("the VM stopped before the init said `done`".into());
        }
        if self.check.is_none() {
            p.push("no `sentinel check --json` output".into());
        }
        p.extend(
            self.tests
                .iter()
                .filter(|t| t.outcome == Outcome::Fail)
                .map(|t| format!("{} failed", t.name)),
        );
        p
    }

    pub fn to_json(&self) -> Value {
        json!({
            "kernel": self.name,
            "package": self.package,
            "release": self.release,
            "accel": self.accel,
            "seconds": (self.secs * 10.0).round() / 10.0,
            "check": self.check,
            "tests": self.tests.iter().map(|t| json!({
                "name": t.name,
                "outcome": format!("{:?}", t.outcome).to_lowercase(),
                "seconds": t.secs,
                "reason": t.reason,
            })).collect::<Vec<_>>(),
            "problems": self.problems(),
        })
    }
}

/// `yes`, `fallback: <how>` or `no`, and for the last two the reason.
fn cell(check: Option<&Value>, probe: &str) -> (String, Option<String>) {
    let Some(p) = check
        .and_then(|c| c["probes"].as_array())
        .and_then(|ps| ps.iter().find(|p| p["name"] == probe))
    else {
        return ("?".into(), Some("not in `sentinel check`".into()));
    };
    let detail = p["detail"].as_str().unwrap_or("").to_string();
    let ty = p["program_type"].as_str();
    let first_attached = p["variants"][0]["outcome"] == "attached";
    match p["status"].as_str().unwrap_or("") {
        "attached" if first_attached => (format!("yes ({})", ty.unwrap_or("?")), None),
        "attached" | "degraded" => (
            format!("fallback ({})", ty.unwrap_or("/proc")),
            Some(detail),
        ),
        other => (format!("no ({other})"), Some(detail)),
    }
}

/// The README's support table: one row per kernel, with the host's own
/// `sentinel check` last, then what the runs cost (`wall_secs`: all of
/// them, side by side), then why each cell that is not a plain yes is so.
pub fn table(runs: &[KernelRun], host: Option<&KernelRun>, wall_secs: f64) -> String {
    // The columns are the probes, in the order `sentinel check` lists them.
    let probes: Vec<&str> = runs
        .iter()
        .chain(host)
        .find_map(|r| r.check.as_ref()?["probes"].as_array())
        .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| kernel | {} | tests in the VM | one run |",
        probes.join(" | ")
    );
    let _ = writeln!(t, "|---|{}---|---|", "---|".repeat(probes.len()));
    let mut notes = Vec::new();
    for r in runs.iter().chain(host) {
        let is_host = host.is_some_and(|h| std::ptr::eq(h, r));
        let label = if is_host {
            format!("{} (this host: lockdown, no VM)", r.release)
        } else {
            format!("{} (Debian `{}`)", r.name, r.package)
        };
        let _ = write!(t, "| {label} |");
        for probe in &probes {
            let (c, why) = cell(r.check.as_ref(), probe);
            let _ = write!(t, " {c} |");
            if let Some(why) = why.filter(|w| !w.is_empty()) {
                notes.push(format!("- {} `{probe}`: {}", r.name, shorten(&why, 300)));
            }
        }
        if is_host {
            let _ = writeln!(t, " the host suite | |");
        } else {
            let _ = writeln!(
                t,
                " {} passed, {} skipped, {} failed | {:.0} s |",
                r.count(Outcome::Pass),
                r.count(Outcome::Skip),
                r.count(Outcome::Fail),
                r.secs
            );
        }
    }
    let secs: Vec<f64> = runs.iter().map(|r| r.secs).collect();
    let (lo, hi) = secs
        .iter()
        .fold((f64::MAX, 0.0_f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    if !runs.is_empty() {
        let _ = writeln!(
            t,
            "\nOne kernel's boot and tests took {lo:.0} to {hi:.0} s under QEMU {}; the {} kernels ran side by side, {wall_secs:.0} s in all.",
            runs[0].accel,
            runs.len()
        );
    }
    let skips: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.tests
                .iter()
                .filter(|t| t.outcome == Outcome::Skip)
                .map(move |t| {
                    format!(
                        "- {} skipped `{}`: {}",
                        r.name,
                        t.name,
                        shorten(&t.reason, 300)
                    )
                })
        })
        .collect();
    if !notes.is_empty() {
        t.push_str("\nWhy a probe is not a plain yes:\n");
        t.push_str(&notes.join("\n"));
        t.push('\n');
    }
    if !skips.is_empty() {
        t.push_str("\nTests skipped, with the reason they printed:\n");
        t.push_str(&skips.join("\n"));
        t.push('\n');
    }
    t
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}…")
}

/// Replaces the README's generated block with `body`.
pub fn write_readme(readme: &Path, body: &str, stamp: &str) -> Result<()> {
    let text =
        fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
    let (Some(start), Some(end)) = (text.find(README_START), text.find(README_END)) else {
        bail!(
            "{}: no `{README_START} ... -->` and `{README_END}` markers to put the kernel table between",
            readme.display()
        );
    };
    let start_line_end = text[start..]
        .find('\n')
        .map(|i| start + i + 1)
        .context("README marker line")?;
    if end < start_line_end {
        bail!(
            "{}: the kernel table's end marker comes before its start",
            readme.display()
        );
    }
    let new = format!(
        "{}{README_START}: made by `cargo xtask vm-test --kernel all --readme`; {stamp} -->\n{body}{}",
        &text[..start],
        &text[end..]
    );
    fs::write(readme, new).with_context(|| format!("writing {}", readme.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> KernelRun {
        let lines: Vec<String> = [
            "[    1.0] random kernel line",
            "SENTINEL-VM kernel 5.10.0-32-cloud-amd64",
            r#"SENTINEL-VM check-json {"probes":[{"name":"faults","status":"attached","program_type":"tp_btf","detail":"","variants":[{"program_type":"tp_btf","outcome":"attached"}]},{"name":"rss","status":"degraded","program_type":null,"detail":"reading /proc","variants":[]}]}"#,
            "SENTINEL-VM test probes_faults::a pass 12.5",
            "SENTINEL-VM test probes_faults::b skip 3.0 probe rss cannot run as tp_btf: too old",
            "SENTINEL-VM test probes_io::c fail 9.0",
            "SENTINEL-VM log thread panicked",
            "SENTINEL-VM done",
        ]
        .map(String::from)
        .to_vec();
        let mut r = KernelRun {
            name: "5.10".into(),
            ..Default::default()
        };
        r.read(&lines);
        r
    }

    #[test]
    fn console_lines_become_results() {
        let r = run();
        assert!(r.done);
        assert_eq!(r.tests.len(), 3);
        assert_eq!(r.tests[1].reason, "probe rss cannot run as tp_btf: too old");
        assert_eq!(r.tests[2].log, ["thread panicked"]);
        assert_eq!(r.problems(), ["probes_io::c failed"]);
    }

    #[test]
    fn cells_say_yes_fallback_or_no() {
        let r = run();
        let check = r.check.as_ref();
        assert_eq!(cell(check, "faults").0, "yes (tp_btf)");
        assert_eq!(
            cell(check, "rss"),
            ("fallback (/proc)".into(), Some("reading /proc".into()))
        );
        assert_eq!(cell(check, "futex").0, "?");
        assert!(table(&[run()], None, 1.0).starts_with("| kernel | faults | rss | tests"));
        let t = table(&[r], None, 130.0);
        assert!(t.contains("| 1 passed, 1 skipped, 1 failed |"), "{t}");
        assert!(
            t.contains("- 5.10 skipped `probes_faults::b`: probe rss"),
            "{t}"
        );
    }

    #[test]
    fn readme_block_is_replaced_between_markers() {
        let dir = std::env::temp_dir().join(format!("xtask-readme-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let readme = dir.join("README.md");
        fs::write(
            &readme,
            format!("a\n{README_START}: old -->\nold table\n{README_END}\nb\n"),
        )
        .unwrap();
        write_readme(&readme, "new table\n", "when").unwrap();
        let text = fs::read_to_string(&readme).unwrap();
        assert_eq!(
            text,
            format!(
                "a\n{README_START}: made by `cargo xtask vm-test --kernel all --readme`; when -->\nnew table\n{README_END}\nb\n"
            )
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
