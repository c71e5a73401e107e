//! Booting a kernel under QEMU and reading what its console says.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// Nested KVM on these machines hangs rather than fails: a boot that has
/// not reached userspace in this long is taken as "no KVM".
const KVM_PROBE: Duration = Duration::from_secs(15);
/// The tests write at most 256 MiB at once; the rest is ext4's room.
const DISK_MIB: u64 = 1024;
/// The tests hold at most 256 MiB of page cache plus a 200 MiB workload.
const MEMORY_MIB: u64 = 1536;

pub struct Vm<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub disk: Option<&'a Path>,
    pub accel: &'a str,
}

impl Vm<'_> {
    /// Boots, calls `on_line` with each console line as it comes, and
    /// returns them all once the VM powers off; killed after `timeout`.
    pub fn run(&self, timeout: Duration, mut on_line: impl FnMut(&str)) -> Result<Boot> {
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-accel", self.accel, "-cpu", "max", "-smp", "2"])
            .args(["-m", &MEMORY_MIB.to_string()])
            .args([
                "-nographic",
                "-no-reboot",
                "-nodefaults",
                "-serial",
                "stdio",
            ])
            .arg("-kernel")
            .arg(self.vmlinuz)
            .arg("-initrd")
            .arg(self.initrd)
            // loglevel=1: kernel messages (an OOM kill's report, say) would
            // otherwise land in the middle of the init's result lines.
            .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=1"]);
        if let Some(disk) = self.disk {
            qemu.arg("-drive").arg(format!(
                "file={},format=raw,if=virtio,cache=unsafe",
                disk.display()
            ));
        }
        let mut child = qemu
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running qemu-system-x86_64")?;
        let out = child.stdout.take().context("qemu stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut lines = Vec::new();
        let mut timed_out = false;
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    on_line(&line);
                    lines.push(line);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if started.elapsed() >= timeout {
                timed_out = true;
                let _ = child.kill();
                break;
            }
        }
        let status = child.wait().context("waiting for qemu")?;
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        if !timed_out && !status.success() {
            bail!("qemu-system-x86_64 failed ({status}): {}", stderr.trim());
        }
        Ok(Boot {
            lines,
            timed_out,
            secs: started.elapsed().as_secs_f64(),
        })
    }
}

pub struct Boot {
    pub lines: Vec<String>,
    pub timed_out: bool,
    pub secs: f64,
}

/// KVM when a boot under it reaches userspace quickly, else TCG. The
/// answer is kept for this host's boot, so only the first run pays the
/// probe.
pub fn pick_accel(cache: &Path, vmlinuz: &Path, initrd: &Path, mark: &str) -> &'static str {
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let memo = cache.join("accel");
    if let Ok(text) = fs::read_to_string(&memo)
        && let Some((id, accel)) = text.split_once(' ')
        && id == boot_id.trim()
    {
        match accel.trim() {
            "kvm" => return "kvm",
            "tcg" => return "tcg",
            _ => {}
        }
    }
    let kvm_works = Path::new("/dev/kvm").exists()
        && Vm {
            vmlinuz,
            initrd,
            disk: None,
            accel: "kvm",
        }
        .run(KVM_PROBE, |_| {})
        .is_ok_and(|b| b.lines.iter().any(|l| l.starts_with(mark)));
    let accel = if kvm_works { "kvm" } else { "tcg" };
    if !kvm_works {
        eprintln!(
            "vm-test: KVM did not boot a kernel within {} s; using QEMU's software emulation (TCG)",
            KVM_PROBE.as_secs()
        );
    }
    let _ = fs::write(&memo, format!("{} {accel}\n", boot_id.trim()));
    accel
}

/// A fresh ext4 image for one boot: the I/O tests need a real block
/// device under them, which the initramfs is not.
pub fn fresh_disk(cache: &Path, name: &str) -> Result<PathBuf> {
    let path = cache.join(format!("disk-{name}.img"));
    let _ = fs::remove_file(&path);
    let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.set_len(DISK_MIB << 20)
        .with_context(|| format!("sizing {}", path.display()))?;
    drop(file);
    cmd::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "nodiscard"])
            .arg(&path),
    )
    .context("making the VM's test disk (mkfs.ext4 is in e2fsprogs)")?;
    Ok(path)
}
