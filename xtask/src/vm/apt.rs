//! Debian's cloud kernels, fetched with an apt configuration of our own
//! under `target/vm/apt`: its sources list, package lists and cache. The
//! machine's sources, lists and dpkg database are never touched, and no
//! package is installed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// The suites whose `linux-image-cloud-amd64` the matrix boots.
pub const SUITES: &[&str] = &["bullseye", "bookworm", "trixie"];
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Package lists older than this are fetched again (about 40 MB, 4 s).
const LISTS_MAX_AGE: Duration = Duration::from_secs(86_400);

pub struct Apt {
    dir: PathBuf,
    opts: Vec<String>,
}

/// An unpacked kernel package.
pub struct Kernel {
    /// `linux-image-6.1.0-50-cloud-amd64`.
    pub package: String,
    /// `uname -r`: `6.1.0-50-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` (or under usr/).
    pub modules: PathBuf,
}

impl Apt {
    pub fn new(cache: &Path) -> Result<Apt> {
        if !Path::new(KEYRING).is_file() {
            bail!(
                "{KEYRING} is missing: it verifies the Debian archive the kernels come from (apt-get install debian-archive-keyring)"
            );
        }
        let dir = cache.join("apt");
        for d in ["lists/partial", "cache/archives/partial", "debs", "kernels"] {
            let d = dir.join(d);
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let sources = dir.join("sources.list");
        let text: String = SUITES
            .iter()
            .map(|s| format!("deb [signed-by={KEYRING}] http://deb.debian.org/debian {s} main\n"))
            .collect();
        fs::write(&sources, text).with_context(|| format!("writing {}", sources.display()))?;
        let d = dir.display();
        let opts = vec![
            format!("-oDir::Etc::SourceList={}", sources.display()),
            "-oDir::Etc::SourceParts=/dev/null".into(),
            format!("-oDir::State::Lists={d}/lists"),
            format!("-oDir::Cache={d}/cache"),
            // Our lists and cache are ours alone; the machine's apt lock is
            // not needed and may be held by an unrelated upgrade.
            "-oDebug::NoLocking=1".into(),
            // Downloads land in a root-owned directory of ours, which the
            // `_apt` sandbox user could not write.
            "-oAPT::Sandbox::User=root".into(),
        ];
        let apt = Apt { dir, opts };
        let stamp = apt.dir.join("lists/.updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|e| e < LISTS_MAX_AGE));
        if !fresh {
            cmd::run(Command::new("apt-get").args(&apt.opts).args(["-q", "update"]))
                .context("fetching the package lists of Debian's bullseye, bookworm and trixie (needs deb.debian.org)")?;
            fs::write(&stamp, "")?;
        }
        Ok(apt)
    }

    /// The suite's current cloud kernel, downloaded and unpacked once.
    pub fn kernel(&self, suite: &str) -> Result<Kernel> {
        let meta = format!("linux-image-cloud-amd64/{suite}");
        let deps = cmd::query(
            Command::new("apt-cache")
                .args(&self.opts)
                .args(["depends", &meta]),
        )
        .with_context(|| format!("apt-cache depends {meta}: not in the package lists"))?;
        let package = deps
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"))
            .with_context(|| format!("{meta} depends on no linux-image package"))?
            .to_string();
        let unpacked = self.dir.join("kernels").join(&package);
        if !unpacked.join("boot").is_dir() {
            let debs = self.dir.join("debs");
            cmd::run(
                Command::new("apt-get")
                    .current_dir(&debs)
                    .args(&self.opts)
                    .args(["-q", "download", &package]),
            )?;
            let deb = find_entry(&debs, &format!("{package}_")).with_context(|| {
                format!("{package}: downloaded, but no .deb in {}", debs.display())
            })?;
            let partial = self.dir.join("kernels").join(format!("{package}.partial"));
            let _ = fs::remove_dir_all(&partial);
            cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
            fs::rename(&partial, &unpacked)
                .with_context(|| format!("renaming {} into place", partial.display()))?;
        }
        let vmlinuz = find_entry(&unpacked.join("boot"), "vmlinuz-")
            .with_context(|| format!("no vmlinuz in {}/boot", unpacked.display()))?;
        let release = vmlinuz
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .context("vmlinuz file name")?
            .to_string();
        // trixie's packages follow the merged /usr.
        let modules = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|d| unpacked.join(d).join(&release))
            .find(|d| d.join("kernel").is_dir())
            .with_context(|| format!("{package} has no lib/modules/{release}/kernel"))?;
        Ok(Kernel {
            package,
            release,
            vmlinuz,
            modules,
        })
    }
}

/// The first entry of `dir` whose name starts with `prefix`.
fn find_entry(dir: &Path, prefix: &str) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
}
