//! `sentinel daemon` refuses bad arguments and bad config with exit code 2
//! before loading anything, so these run without root.
//!
//! A config error is one stderr line:
//! `sentinel: error: <path>:<line>:<col>: <dotted.key>: <reason>`.

use std::path::Path;

use anyhow::{Result, anyhow, ensure};
use sentinel_tests::sentinel::CheckOutput;
use sentinel_tests::{ScratchDir, run_daemon_expect_exit, serial};

/// The parts of a config error line.
#[derive(Debug)]
struct ConfigError {
    line: u32,
    col: u32,
    key: String,
    reason: String,
}

/// Parses the single stderr line of a config error about `path`.
fn config_error(out: &CheckOutput, path: &Path) -> Result<ConfigError> {
    let path = path.to_string_lossy();
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    ensure!(
        lines.len() == 1,
        "expected exactly one stderr line `sentinel: error: {path}:<line>:<col>: <key>: <reason>`, got {}; {}",
        lines.len(),
        out.describe()
    );
    let bad = |what: &str| {
        anyhow!(
            "expected the stderr line to read `sentinel: error: {path}:<line>:<col>: <key>: <reason>` ({what}); {}",
            out.describe()
        )
    };
    let rest = lines[0]
        .strip_prefix("sentinel: error: ")
        .ok_or_else(|| bad("no `sentinel: error: ` prefix"))?;
    let rest = rest
        .strip_prefix(path.as_ref())
        .and_then(|r| r.strip_prefix(':'))
        .ok_or_else(|| bad("the config path does not follow the prefix"))?;
    let mut parts = rest.splitn(4, ':');
    let mut number = |what: &str| -> Result<u32> {
        parts
            .next()
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| bad(&format!("no {what} number")))
    };
    let line = number("line")?;
    let col = number("column")?;
    let key = parts.next().map(str::trim).unwrap_or_default().to_string();
    let reason = parts.next().map(str::trim).unwrap_or_default().to_string();
    ensure!(
        !key.is_empty() && !reason.is_empty(),
        "{}",
        bad("no key or no reason")
    );
    ensure!(col >= 1, "{}", bad("columns count from 1"));
    Ok(ConfigError {
        line,
        col,
        key,
        reason,
    })
}

fn expect_exit_2(out: &CheckOutput, what: &str) -> Result<()> {
    ensure!(
        out.code() == Some(2),
        "expected exit code 2 for {what}; {}",
        out.describe()
    );
    ensure!(
        out.stdout.trim().is_empty(),
        "expected nothing on stdout for {what} (stdout carries only events); {}",
        out.describe()
    );
    Ok(())
}

/// Writes `text` to `<scratch>/<name>` and runs the daemon on it.
fn run_with_config(dir: &ScratchDir, name: &str, text: &str) -> Result<(CheckOutput, String)> {
    let path = dir.path().join(name);
    std::fs::write(&path, text)?;
    let path = path.to_string_lossy().into_owned();
    let out = run_daemon_expect_exit(&["--config", &path, "--log-format", "json"])?;
    Ok((out, path))
}

#[test]
fn bad_duration_names_file_line_and_key() -> Result<()> {
    let _serial = serial();
    let dir = ScratchDir::new_in(&std::env::temp_dir(), "daemon-config")?;
    let (out, path) = run_with_config(&dir, "bad.toml", "[memory]\nwarn_horizon = \"15 mins\"\n")?;
    let what = format!("`warn_horizon = \"15 mins\"` on line 2 of {path}");
    expect_exit_2(&out, &what)?;
    let err = config_error(&out, Path::new(&path))?;
    ensure!(
        err.line == 2 && err.key == "memory.warn_horizon",
        "expected line 2 and key memory.warn_horizon for {what}, got {err:?}; {}",
        out.describe()
    );
    ensure!(
        err.reason.contains("15 mins"),
        "expected the reason to quote the bad value \"15 mins\", got {:?}; {}",
        err.reason,
        out.describe()
    );
    eprintln!("config error column for the value: {}", err.col);
    Ok(())
}

#[test]
fn unknown_key_is_named() -> Result<()> {
    let _serial = serial();
    let dir = ScratchDir::new_in(&std::env::temp_dir(), "daemon-config")?;
    let (out, path) = run_with_config(&dir, "typo.toml", "[deadlock]\nmin_wiat = \"1s\"\n")?;
    let what = format!("the unknown key `min_wiat` on line 2 of {path}");
    expect_exit_2(&out, &what)?;
    let err = config_error(&out, Path::new(&path))?;
    ensure!(
        err.line == 2 && err.key == "deadlock.min_wiat",
        "expected line 2 and key deadlock.min_wiat for {what}, got {err:?}; {}",
        out.describe()
    );
    eprintln!("config error column for the unknown key: {}", err.col);
    Ok(())
}

#[test]
fn missing_config_file_is_named() -> Result<()> {
    let _serial = serial();
    let dir = ScratchDir::new_in(&std::env::temp_dir(), "daemon-config")?;
    let path = dir.path().join("absent.toml");
    let path = path.to_string_lossy();
    let out = run_daemon_expect_exit(&["--config", &path, "--log-format", "json"])?;
    let what = format!("a config file that does not exist ({path})");
    expect_exit_2(&out, &what)?;
    ensure!(
        out.stderr.contains(path.as_ref()),
        "expected stderr to name {path} for {what}; {}",
        out.describe()
    );
    Ok(())
}

#[test]
fn unknown_log_format_is_refused() -> Result<()> {
    let _serial = serial();
    let out = run_daemon_expect_exit(&["--log-format", "xml"])?;
    let what = "`--log-format xml` (json and text only)";
    expect_exit_2(&out, what)?;
    ensure!(
        out.stderr.contains("xml"),
        "expected stderr to name the refused value xml for {what}; {}",
        out.describe()
    );
    Ok(())
}
