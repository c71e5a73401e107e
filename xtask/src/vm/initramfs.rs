//! The VM's root filesystem: one initramfs shared by every kernel (busybox,
//! sentinel, the test binaries and their libraries, the init) and one small
//! archive per kernel with its modules. The kernel unpacks concatenated
//! archives in order, so a kernel's initrd is the two files end to end.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use super::apt::Kernel;
use super::{MARK, TestBin};

/// What the tests need the kernel to have: the virtio disk they write to,
/// the ext4 on it, and loop devices. Debian's cloud kernels build these as
/// modules (or some of them in); their dependencies come along.
const MODULES: &[&str] = &["virtio_pci", "virtio_blk", "ext4", "loop"];

/// Where the test binaries' compiled-in paths point: `workload_bin!()` is
/// the absolute path cargo built the workload at, so it goes there.
pub struct Payload<'a> {
    pub sentinel: &'a Path,
    pub workload: &'a Path,
    pub tests: &'a [TestBin],
}

/// busybox, sentinel, the tests and the init, as a gzipped newc archive.
pub fn common(cache: &Path, p: &Payload) -> Result<PathBuf> {
    let root = cache.join("initramfs");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    for d in ["bin", "proc", "sys", "dev", "tmp", "var/tmp", "tests"] {
        mkdir(&root.join(d))?;
    }
    let busybox = busybox()?;
    copy(&busybox, &root.join("bin/busybox"))?;
    copy(p.sentinel, &root.join("sentinel"))?;
    copy(p.workload, &under(&root, p.workload))?;
    let mut bins: Vec<&Path> = vec![p.sentinel, p.workload];
    for t in p.tests {
        copy(&t.exe, &root.join("tests").join(&t.name))?;
        bins.push(&t.exe);
    }
    let mut libs = BTreeSet::new();
    for bin in bins {
        libs.extend(shared_libs(bin)?);
    }
    for lib in &libs {
        copy(lib, &under(&root, lib))?;
    }
    let init = root.join("init");
    fs::write(&init, init_script(p.tests))
        .with_context(|| format!("writing {}", init.display()))?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    let out = cache.join("common.cpio.gz");
    cpio_gz(&busybox, &root, &out)?;
    Ok(out)
}

/// The kernel's modules the tests need, with what they depend on, under
/// /modules, and /modules/order: the order to insmod them in. A kernel
/// package has no modules.dep (depmod makes it at install), so the
/// dependencies come from each module's own `.modinfo`.
pub fn modules(cache: &Path, k: &Kernel) -> Result<PathBuf> {
    let root = cache.join(format!("modules-{}", k.release));
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    let dir = root.join("modules");
    mkdir(&dir)?;
    let mut found = Modules {
        index: index_modules(&k.modules.join("kernel"))?,
        builtin: fs::read_to_string(k.modules.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .map(module_name)
            .collect(),
        order: Vec::new(),
    };
    for m in MODULES {
        found
            .add(m)
            .with_context(|| format!("{}: the modules for module {m}", k.package))?;
    }
    let mut names = String::new();
    for (name, elf) in &found.order {
        let file = format!("{name}.ko");
        fs::write(dir.join(&file), elf).with_context(|| format!("writing {file}"))?;
        names.push_str(&file);
        names.push('\n');
    }
    fs::write(dir.join("order"), names)?;
    let out = cache.join(format!("modules-{}.cpio.gz", k.release));
    cpio_gz(&busybox()?, &root, &out)?;
    Ok(out)
}

struct Modules {
    /// Module name to its file.
    index: HashMap<String, PathBuf>,
    builtin: HashSet<String>,
    /// Name and plain ELF, each after what it depends on.
    order: Vec<(String, Vec<u8>)>,
}

impl Modules {
    fn add(&mut self, name: &str) -> Result<()> {
        if self.builtin.contains(name) || self.order.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        let path = self
            .index
            .get(name)
            .with_context(|| format!("module {name} is neither built in nor shipped"))?
            .clone();
        let elf = read_module(&path)?;
        for dep in depends(&elf) {
            // A dependency cycle cannot load either; stop rather than recurse.
            if dep != name {
                self.add(&dep)?;
            }
        }
        if !self.order.iter().any(|(n, _)| n == name) {
            self.order.push((name.to_string(), elf));
        }
        Ok(())
    }
}

/// Every `*.ko*` under `dir`, by module name.
fn index_modules(dir: &Path) -> Result<HashMap<String, PathBuf>> {
    let mut index = HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(n) = path.file_name().and_then(|n| n.to_str())
                && n.contains(".ko")
            {
                index.insert(module_name(n), path);
            }
        }
    }
    Ok(index)
}

/// The `depends=a,b` of a module's `.modinfo` strings, which are
/// NUL-separated `key=value` pairs.
fn depends(elf: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = elf.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &elf[at + KEY.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect()
}

/// The kernel's initrd: the common archive, then its modules.
pub fn initrd(cache: &Path, common: &Path, modules: &Path, release: &str) -> Result<PathBuf> {
    let out = cache.join(format!("initrd-{release}"));
    let mut bytes = fs::read(common).with_context(|| format!("reading {}", common.display()))?;
    bytes.extend(fs::read(modules).with_context(|| format!("reading {}", modules.display()))?);
    fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

/// `kernel/drivers/block/virtio_blk.ko.xz` -> `virtio_blk`; the kernel
/// treats `-` and `_` in module names alike.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The module as plain ELF: busybox's insmod takes nothing else, and
/// trixie ships them xz'd.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        return fs::read(path).with_context(|| format!("reading {}", path.display()));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} -dc {}", path.display()))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed ({})", path.display(), out.status);
    }
    Ok(out.stdout)
}

/// The init: mounts what sentinel needs (cgroup2 alone, the production
/// layout), loads the modules, mounts the virtio disk at /var/tmp (where
/// the I/O tests write), runs `sentinel check` and then each test on its
/// own, and says how each went on the console in lines starting with
/// `MARK`. Kernel messages are kept off the console (loglevel=1 on the
/// command line) so they cannot split those lines.
fn init_script(tests: &[TestBin]) -> String {
    let mut s = format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/tmp SENTINEL_BIN=/sentinel
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t securityfs securityfs /sys/kernel/security
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# No tmpfs on /tmp: the rootfs is memory already, and a tmpfs would hide
# the workload of a checkout under /tmp (its compiled-in path).
say() {{ echo "{MARK} $*"; }}
say kernel "$(uname -r)"
say lockdown "$(cat /sys/kernel/security/lockdown 2>/dev/null)"
for m in $(cat /modules/order); do
    insmod "/modules/$m" 2>/tmp/insmod || say error "insmod $m: $(cat /tmp/insmod)"
done
mount -t ext4 /dev/vda /var/tmp 2>/tmp/mount || say error "mounting the virtio disk /dev/vda on /var/tmp: $(cat /tmp/mount)"
/sentinel check --json > /tmp/check.json 2>/tmp/check.err
say check-exit $?
say check-json "$(tr -d '\n' < /tmp/check.json)"
now() {{ cut -d' ' -f1 /proc/uptime; }}
t() {{
    start=$(now)
    /tests/$1 --exact "$2" --test-threads=1 --nocapture > /tmp/out 2>&1
    rc=$?
    secs=$(awk -v a="$start" -v b="$(now)" 'BEGIN {{ printf "%.1f", b - a }}')
    why=$(sed -n 's/^\*\*\*\*\*\*\*\*\*\* SKIP [^ ]*: \(.*\) \*\*\*\*\*\*\*\*\*\*$/\1/p' /tmp/out | head -n 1)
    if [ $rc -ne 0 ]; then
        say test "$1::$2" fail "$secs"
        tail -n 60 /tmp/out | sed 's/^/{MARK} log /'
    elif [ -n "$why" ]; then
        say test "$1::$2" skip "$secs" "$why"
    else
        say test "$1::$2" pass "$secs"
    fi
}}
"#
    );
    for bin in tests {
        for t in &bin.tests {
            s.push_str(&format!("t {} {t}\n", bin.name));
        }
    }
    s.push_str("say done\npoweroff -f\n");
    s
}

fn busybox() -> Result<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("no busybox (apt-get install busybox-static)")
}

/// What `ldd` says the binary loads, the dynamic loader included.
fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .with_context(|| format!("running ldd {}", bin.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from)
        .collect())
}

/// `path` (absolute) under `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn mkdir(d: &Path) -> Result<()> {
    fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(p) = to.parent() {
        mkdir(p)?;
    }
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

/// busybox's cpio: the machine may not have GNU cpio.
fn cpio_gz(busybox: &Path, root: &Path, out: &Path) -> Result<()> {
    let list = Command::new("find")
        .arg(".")
        .current_dir(root)
        .output()
        .with_context(|| format!("listing {}", root.display()))?;
    let mut cpio = Command::new(busybox)
        .args(["cpio", "-o", "-H", "newc"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running busybox cpio")?;
    let mut stdin = cpio.stdin.take().context("cpio stdin")?;
    // Written from a thread: cpio's output fills its pipe long before the
    // list is all written.
    let writer = std::thread::spawn(move || stdin.write_all(&list.stdout));
    let archive = cpio.wait_with_output().context("busybox cpio")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("cpio writer panicked"))?
        .context("writing the file list to cpio")?;
    if !archive.status.success() {
        bail!(
            "busybox cpio -o failed in {} ({})",
            root.display(),
            archive.status
        );
    }
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(&archive.stdout)?;
    gz.finish()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_come_from_modinfo() {
        let elf =
            b"\x7fELF junk\0license=GPL\0depends=virtio_ring,virtio,crc-t10dif\0retpoline=Y\0";
        assert_eq!(depends(elf), ["virtio_ring", "virtio", "crc_t10dif"]);
        assert_eq!(depends(b"\0depends=\0name=loop\0"), Vec::<String>::new());
        assert_eq!(depends(b"no modinfo"), Vec::<String>::new());
    }

    #[test]
    fn module_names_ignore_compression_and_dashes() {
        assert_eq!(module_name("kernel/drivers/block/loop.ko"), "loop");
        assert_eq!(module_name("kernel/x/virtio-pci.ko.zst"), "virtio_pci");
    }
}
