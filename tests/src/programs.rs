//! Workloads written in other languages: C programs under `tests/c/`
//! (compiled with frame pointers, once per test process, into the target
//! directory) and Python scripts under `tests/py/` (run with `python3`).
//! They speak the workload protocol of [`crate::workload`] as far as they
//! can, so [`crate::Workload::spawn`] drives them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

use crate::{target_dir, truncate, workspace_dir};

/// The first of `names` found as an executable on PATH.
pub fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| {
                p.metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    })
}

/// `cc`, else `gcc`.
pub fn c_compiler() -> Result<PathBuf> {
    find_on_path(&["cc", "gcc"]).ok_or_else(|| {
        anyhow::anyhow!(
            "no C compiler: neither `cc` nor `gcc` is on PATH; the tests compile workloads from tests/c/. \
             Install gcc (`apt-get install gcc`, or `cargo xtask bootstrap` as root on Debian)"
        )
    })
}

/// `python3` on PATH.
pub fn python3() -> Result<PathBuf> {
    find_on_path(&["python3"]).ok_or_else(|| {
        anyhow::anyhow!(
            "no python3 on PATH; the tests run workloads from tests/py/. \
             Install python3 (`apt-get install python3`, or `cargo xtask bootstrap` as root on Debian)"
        )
    })
}

/// `tests/py/<name>`.
pub fn py_script(name: &str) -> Result<PathBuf> {
    let path = workspace_dir().join("tests").join("py").join(name);
    if !path.is_file() {
        bail!("Python workload {} not found", path.display());
    }
    Ok(path)
}

/// Compiles `tests/c/<name>.c` into `<target>/sentinel-tests/c/<name>`
/// with `cc -O1 -g -fno-omit-frame-pointer -pthread`, once per test
/// process, and returns the binary's path.
pub fn c_program(name: &str) -> Result<PathBuf> {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(name) {
        return Ok(path.clone());
    }
    let source = workspace_dir()
        .join("tests")
        .join("c")
        .join(format!("{name}.c"));
    if !source.is_file() {
        bail!("C workload {} not found", source.display());
    }
    let out_dir = target_dir().join("sentinel-tests").join("c");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out = out_dir.join(name);
    compile(&source, &out)?;
    built.insert(name.to_string(), out.clone());
    Ok(out)
}

fn compile(source: &Path, out: &Path) -> Result<()> {
    let cc = c_compiler()?;
    // Built under a private name and renamed into place, so a concurrent
    // test process never runs a half-written binary.
    let tmp = out.with_file_name(format!(
        "{}.tmp-{}",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("prog"),
        std::process::id()
    ));
    let mut cmd = Command::new(&cc);
    cmd.args([
        "-O1",
        "-g",
        "-fno-omit-frame-pointer",
        "-pthread",
        "-Wall",
        "-o",
    ])
    .arg(&tmp)
    .arg(source);
    let line = format!(
        "{} -O1 -g -fno-omit-frame-pointer -pthread -Wall -o {} {}",
        cc.display(),
        tmp.display(),
        source.display()
    );
    let output = cmd.output().with_context(|| format!("running {line}"))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "`{line}` failed ({}):\n{}{}",
            output.status,
            truncate(&String::from_utf8_lossy(&output.stdout), 4000),
            truncate(&String::from_utf8_lossy(&output.stderr), 4000)
        );
    }
    std::fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))
}
