//! The archive on disk: never a partial one. Everything is staged in the
//! target directory (so the final step is a rename on one filesystem),
//! written to a temporary file, flushed to disk, then renamed into place.
//! A guard removes the temporary file and the staging directory on every
//! way out, errors and panics included.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use flate2::{Compression, write::GzEncoder};

use super::Error;

/// One file of the archive, under its top directory.
pub struct Entry {
    /// Relative, `/`-separated: `timelines/host.csv`.
    pub path: String,
    pub body: Body,
}

pub enum Body {
    Bytes(Vec<u8>),
    /// A file staged on disk, streamed in.
    File(PathBuf),
}

impl Entry {
    pub fn size(&self) -> io::Result<u64> {
        match &self.body {
            Body::Bytes(b) => Ok(b.len() as u64),
            Body::File(p) => Ok(fs::metadata(p)?.len()),
        }
    }
}

/// Where the archive goes, and the scratch space that must not outlive
/// the export.
pub struct Output {
    dir: PathBuf,
    /// `-o FILE`; None: a default name in `dir`.
    file: Option<PathBuf>,
    tmp: PathBuf,
    staging: PathBuf,
    done: bool,
}

impl Output {
    /// Claims scratch space in the target directory now, before the store
    /// is read: an unwritable destination fails in a millisecond, not
    /// after a minute of reading. `-o` naming an existing directory means
    /// a default name inside it.
    pub fn prepare(output: Option<&Path>) -> Result<Output, Error> {
        let (dir, file) = match output {
            Some(p) if p.is_dir() => (p.to_owned(), None),
            Some(p) => {
                let dir = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
                    _ => PathBuf::from("."),
                };
                (dir, Some(p.to_owned()))
            }
            None => (PathBuf::from("."), None),
        };
        let named = file.clone().unwrap_or_else(|| dir.clone());
        let unwritable = |err: io::Error| Error::Unwritable {
            path: named.clone(),
            err,
        };
        let tag = format!(
            ".sentinel-export-{}-{}",
            std::process::id(),
            crate::event::unix_ms_now()
        );
        let tmp = dir.join(format!("{tag}.partial"));
        let staging = dir.join(format!("{tag}.staging"));
        // The archive can hold process names, stacks and container names:
        // only its owner reads it until they choose otherwise.
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(unwritable)?;
        let out = Output {
            dir,
            file,
            tmp,
            staging,
            done: false,
        };
        fs::create_dir(&out.staging).map_err(unwritable)?;
        Ok(out)
    }

    /// Where staged files go.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// The final path: `-o`'s, or `<default_stem>.tar.gz` (then `-2`, `-3`
    /// … should two exports land in the same second).
    pub fn path(&self, default_stem: &str) -> PathBuf {
        if let Some(f) = &self.file {
            return f.clone();
        }
        let mut n = 1;
        loop {
            let name = if n == 1 {
                format!("{default_stem}.tar.gz")
            } else {
                format!("{default_stem}-{n}.tar.gz")
            };
            let p = self.dir.join(name);
            if !p.exists() || n > 1000 {
                return p;
            }
            n += 1;
        }
    }

    /// Writes the archive to `path` (from [`Output::path`]): every entry
    /// under the top directory `stem/`, the directories first.
    pub fn write(mut self, path: &Path, entries: &[Entry]) -> Result<PathBuf, anyhow::Error> {
        use anyhow::Context;
        let stem = stem(path);
        let file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.tmp)
            .with_context(|| format!("opening {}", self.tmp.display()))?;
        let gz = GzEncoder::new(
            BufWriter::with_capacity(1 << 20, file),
            Compression::default(),
        );
        let mut tar = tar::Builder::new(gz);
        let mtime = crate::event::unix_ms_now() / 1000;
        let mut dirs: Vec<String> = vec![stem.clone()];
        for e in entries {
            let mut parts: Vec<&str> = e.path.split('/').collect();
            parts.pop();
            for i in 1..=parts.len() {
                let d = format!("{stem}/{}", parts[..i].join("/"));
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
        let write_err = |what: &str| format!("writing {} to {}", what, self.tmp.display());
        for d in &dirs {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_mtime(mtime);
            tar.append_data(&mut h, format!("{d}/"), io::empty())
                .with_context(|| write_err(d))?;
        }
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_mtime(mtime);
            h.set_size(e.size().with_context(|| write_err(&e.path))?);
            let name = format!("{stem}/{}", e.path);
            match &e.body {
                Body::Bytes(b) => tar.append_data(&mut h, &name, b.as_slice()),
                Body::File(p) => {
                    let f = File::open(p).with_context(|| format!("reading {}", p.display()))?;
                    tar.append_data(&mut h, &name, f)
                }
            }
            .with_context(|| write_err(&e.path))?;
        }
        let gz = tar
            .into_inner()
            .with_context(|| write_err("the tar trailer"))?;
        let buf = gz.finish().with_context(|| write_err("the gzip trailer"))?;
        let file = buf
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| write_err("the last block"))?;
        file.sync_all()
            .with_context(|| format!("flushing {} to disk", self.tmp.display()))?;
        fs::rename(&self.tmp, path).map_err(|err| Error::Unwritable {
            path: path.to_owned(),
            err,
        })?;
        self.done = true;
        // The rename itself reaches the disk with the directory.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(path.to_owned())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
        let _ = fs::remove_dir_all(&self.staging);
    }
}

/// `x.tar.gz` → `x`; also `.tgz`, `.tar`, or the name as it is.
pub fn stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sentinel-export".into());
    for ext in [".tar.gz", ".tgz", ".tar", ".gz"] {
        if let Some(s) = name.strip_suffix(ext)
            && !s.is_empty()
        {
            return s.to_string();
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems() {
        assert_eq!(stem(Path::new("/a/x.tar.gz")), "x");
        assert_eq!(stem(Path::new("y.tgz")), "y");
        assert_eq!(stem(Path::new("z")), "z");
    }

    #[test]
    fn a_failed_export_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let out = Output::prepare(Some(&tmp.path().join("x.tar.gz"))).unwrap();
            fs::write(out.staging().join("a.csv"), "x").unwrap();
            // Dropped without writing: an error somewhere in between.
        }
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn writes_the_entries_under_one_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let out = Output::prepare(Some(tmp.path())).unwrap();
        let staged = out.staging().join("s.csv");
        fs::write(&staged, "a,b\n").unwrap();
        let path = out.path("sentinel-h-20260101T000000Z");
        let got = out
            .write(
                &path,
                &[
                    Entry {
                        path: "manifest.json".into(),
                        body: Body::Bytes(b"{}".to_vec()),
                    },
                    Entry {
                        path: "timelines/host.csv".into(),
                        body: Body::File(staged),
                    },
                ],
            )
            .unwrap();
        let names: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["sentinel-h-20260101T000000Z.tar.gz"]);
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(File::open(got).unwrap()));
        let paths: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            paths,
            vec![
                "sentinel-h-20260101T000000Z/",
                "sentinel-h-20260101T000000Z/timelines/",
                "sentinel-h-20260101T000000Z/manifest.json",
                "sentinel-h-20260101T000000Z/timelines/host.csv",
            ]
        );
    }
}
