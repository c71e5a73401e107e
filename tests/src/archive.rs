//! Reading what `sentinel export` wrote: the `.tar.gz` unpacked into
//! memory with the same crates sentinel writes it with, its layout checked
//! on the way (one top directory, no path that could land outside it).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

pub struct Archive {
    path: PathBuf,
    /// The top directory every entry is under.
    pub top: String,
    /// Regular files by their path under `top`.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Archive {
    pub fn open(path: &Path) -> Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut top: Option<String> = None;
        let mut files = BTreeMap::new();
        for entry in ar
            .entries()
            .with_context(|| format!("reading {} as a .tar.gz", path.display()))?
        {
            let mut entry = entry.with_context(|| format!("an entry of {}", path.display()))?;
            let name = entry.path()?.into_owned();
            let mut parts = Vec::new();
            for c in name.components() {
                match c {
                    Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                    other => bail!(
                        "{}: entry {} has a {other:?} component: it could land outside the directory it is unpacked in",
                        path.display(),
                        name.display()
                    ),
                }
            }
            let Some((first, rest)) = parts.split_first() else {
                bail!("{}: an entry with an empty path", path.display());
            };
            match &top {
                None => top = Some(first.clone()),
                Some(t) => ensure!(
                    t == first,
                    "{}: entries under both {t}/ and {first}/; expected one top directory",
                    path.display()
                ),
            }
            if entry.header().entry_type().is_dir() {
                continue;
            }
            ensure!(
                !rest.is_empty(),
                "{}: file {first} is not inside a top directory",
                path.display()
            );
            let mut body = Vec::new();
            entry
                .read_to_end(&mut body)
                .with_context(|| format!("{}: reading {}", path.display(), name.display()))?;
            files.insert(rest.join("/"), body);
        }
        Ok(Self {
            path: path.to_owned(),
            top: top.with_context(|| format!("{} is an empty archive", path.display()))?,
            files,
        })
    }

    pub fn names(&self) -> Vec<&str> {
        self.files.keys().map(String::as_str).collect()
    }

    pub fn text(&self, rel: &str) -> Result<&str> {
        let b = self.files.get(rel).with_context(|| {
            format!(
                "no {rel} in {}; it holds {:?}",
                self.path.display(),
                self.names()
            )
        })?;
        std::str::from_utf8(b).with_context(|| format!("{rel} is not UTF-8"))
    }

    pub fn json(&self, rel: &str) -> Result<Value> {
        serde_json::from_str(self.text(rel)?).with_context(|| format!("{rel} is not JSON"))
    }

    /// One JSON value per non-empty line.
    pub fn ndjson(&self, rel: &str) -> Result<Vec<Value>> {
        self.text(rel)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).with_context(|| format!("{rel} line {}: {l}", i + 1))
            })
            .collect()
    }

    pub fn csv(&self, rel: &str) -> Result<Csv> {
        Csv::parse(self.text(rel)?).with_context(|| format!("parsing {rel}"))
    }

    /// Writes the files to `dir/<top>/…` (for a browser to open) and
    /// returns that directory.
    pub fn unpack_to(&self, dir: &Path) -> Result<PathBuf> {
        let root = dir.join(&self.top);
        for (rel, body) in &self.files {
            let p = root.join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(root)
    }
}

/// An RFC 4180 CSV with a header line.
pub struct Csv {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Csv {
    pub fn parse(text: &str) -> Result<Self> {
        let mut records = Vec::new();
        let mut field = String::new();
        let mut record = Vec::new();
        let mut quoted = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') if field.is_empty() => quoted = true,
                (false, ',') => record.push(std::mem::take(&mut field)),
                (false, '\n') => {
                    record.push(std::mem::take(&mut field));
                    records.push(std::mem::take(&mut record));
                }
                (false, '\r') => {}
                (false, c) => field.push(c),
            }
        }
        ensure!(!quoted, "a quoted field runs to the end of the file");
        if !field.is_empty() || !record.is_empty() {
            record.push(field);
            records.push(record);
        }
        let mut it = records.into_iter();
        let header = it.next().context("no header line")?;
        let rows: Vec<Vec<String>> = it.collect();
        for (i, r) in rows.iter().enumerate() {
            ensure!(
                r.len() == header.len(),
                "row {} has {} fields, the header {}",
                i + 1,
                r.len(),
                header.len()
            );
        }
        Ok(Self { header, rows })
    }

    /// The values of one column, by header name.
    pub fn column(&self, name: &str) -> Result<Vec<&str>> {
        let i = self
            .header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("no column {name} in {:?}", self.header))?;
        Ok(self.rows.iter().map(|r| r[i].as_str()).collect())
    }

    /// A column of numbers; empty cells ("not known") are None.
    pub fn numbers(&self, name: &str) -> Result<Vec<Option<f64>>> {
        self.column(name)?
            .into_iter()
            .map(|v| {
                if v.is_empty() {
                    Ok(None)
                } else {
                    v.parse()
                        .map(Some)
                        .with_context(|| format!("{name}: {v:?} is not a number"))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes() {
        let c = Csv::parse("a,b\n\"x,\"\"y\"\"\n\",2\n,3\n").unwrap();
        assert_eq!(c.rows, vec![vec!["x,\"y\"\n", "2"], vec!["", "3"]]);
        assert_eq!(c.numbers("b").unwrap(), vec![Some(2.0), Some(3.0)]);
    }
}
