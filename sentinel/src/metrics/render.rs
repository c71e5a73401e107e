//! The Prometheus text exposition format (version 0.0.4): one writer that
//! gets the escaping and number syntax right once, so the page builder only
//! says which families and samples there are.
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
        }
    }
}

/// A sample value: integers are written exactly, floats in the syntax
/// Prometheus parses (`NaN`, `+Inf`, `-Inf` spelled its way).
pub trait Value {
    fn write_to(&self, out: &mut String);
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn write_to(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
int_value!(u64, u32, usize, i64, i32);

impl Value for f64 {
    fn write_to(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// Builds one page. Families must be written whole, one after the other:
/// the format (and promtool) reject a family whose samples are split.
pub struct Writer {
    out: String,
    family: &'static str,
}

impl Writer {
    /// `capacity`: the previous page's size, so a steady page is built
    /// without regrowing.
    pub fn with_capacity(capacity: usize) -> Writer {
        Writer {
            out: String::with_capacity(capacity),
            family: "",
        }
    }

    /// Starts a family: its HELP and TYPE lines.
    pub fn family(&mut self, name: &'static str, kind: Type, help: &str) {
        self.family = name;
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_help(&mut self.out, help);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.name());
        self.out.push('\n');
    }

    /// One sample of the current family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Value) {
        debug_assert!(!self.family.is_empty(), "a sample before any family");
        self.out.push_str(self.family);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        value.write_to(&mut self.out);
        self.out.push('\n');
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text escapes backslash and line feed only.
fn escape_help(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A strict reading of the text format, enough to catch what would make
    /// Prometheus reject a scrape: every sample belongs to the family whose
    /// HELP and TYPE precede it, no family appears twice, no series is
    /// repeated, names and label names are legal, label values are escaped
    /// and values parse. Returns the samples as (series, value).
    pub fn parse(page: &str) -> Result<Vec<(String, f64)>, String> {
        use std::collections::HashSet;
        let mut families = HashSet::new();
        let mut series = HashSet::new();
        let mut current: Option<(String, String)> = None;
        let mut out = Vec::new();
        let legal_name = |n: &str| {
            !n.is_empty()
                && n.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
                })
        };
        for (no, line) in page.lines().enumerate() {
            let err = |what: &str| format!("line {}: {what}: {line:?}", no + 1);
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or("");
                if !legal_name(name) || !families.insert(name.to_string()) {
                    return Err(err("bad or repeated family"));
                }
                current = Some((name.to_string(), String::new()));
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let (name, kind) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
                match &mut current {
                    Some((n, k))
                        if n == name && k.is_empty() && matches!(kind, "counter" | "gauge") =>
                    {
                        *k = kind.to_string()
                    }
                    _ => return Err(err("TYPE without its HELP")),
                }
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                return Err(err("unexpected comment or blank line"));
            }
            let Some((name, kind)) = &current else {
                return Err(err("sample before any family"));
            };
            let name_end = line.find(['{', ' ']).ok_or_else(|| err("no value"))?;
            if &line[..name_end] != name {
                return Err(err("sample outside its family"));
            }
            let mut rest = &line[name_end..];
            if let Some(r) = rest.strip_prefix('{') {
                let mut r = r;
                loop {
                    if let Some(after) = r.strip_prefix('}') {
                        r = after;
                        break;
                    }
                    let eq = r.find("=\"").ok_or_else(|| err("label without =\""))?;
                    if !legal_name(&r[..eq]) || r[..eq].contains(':') {
                        return Err(err("bad label name"));
                    }
                    r = &r[eq + 2..];
                    let mut chars = r.char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((_, '\\')) => match chars.next() {
                                Some((_, '\\' | '"' | 'n')) => {}
                                _ => return Err(err("bad escape")),
                            },
                            Some((i, '"')) => break i,
                            Some((_, '\n')) => return Err(err("raw newline")),
                            Some(_) => {}
                            None => return Err(err("unterminated label value")),
                        }
                    };
                    r = &r[end + 1..];
                    r = r.strip_prefix(',').unwrap_or(r);
                }
                rest = r;
            }
            let value = rest
                .strip_prefix(' ')
                .ok_or_else(|| err("no space before value"))?;
            let v: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().map_err(|_| err("bad value"))?,
            };
            if kind == "counter" && (v.is_nan() || v < 0.0) {
                return Err(err("negative or NaN counter"));
            }
            let key = line[..line.len() - value.len()].to_string();
            if !series.insert(key.clone()) {
                return Err(err("repeated series"));
            }
            out.push((key.trim_end().to_string(), v));
        }
        Ok(out)
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut w = Writer::with_capacity(0);
        w.family("x_bytes", Type::Gauge, "a \\ help\nline");
        w.sample(&[("comm", "a\"b\\c\nd"), ("pid", "1")], 5u64);
        w.sample(&[], f64::NAN);
        let page = w.finish();
        assert_eq!(
            page,
            "# HELP x_bytes a \\\\ help\\nline\n# TYPE x_bytes gauge\n\
             x_bytes{comm=\"a\\\"b\\\\c\\nd\",pid=\"1\"} 5\nx_bytes NaN\n"
        );
        let samples = parse(&page).unwrap();
        assert_eq!(samples.len(), 2);
    }

    #[test]
    fn floats_use_prometheus_spelling() {
        let mut s = String::new();
        for v in [f64::INFINITY, f64::NEG_INFINITY, 0.5, 1e21, 3.0] {
            v.write_to(&mut s);
            s.push(' ');
        }
        assert_eq!(s, "+Inf -Inf 0.5 1000000000000000000000 3 ");
    }

    #[test]
    fn the_checker_rejects_what_prometheus_would() {
        assert!(parse("# HELP a x\n# TYPE a gauge\nb 1\n").is_err());
        assert!(parse("# HELP a x\n# TYPE a gauge\na 1\na 2\n").is_err());
        assert!(parse("# HELP a x\n# TYPE a gauge\na{l=\"x\"y\"} 1\n").is_err());
        assert!(parse("# HELP a x\n# TYPE a counter\na -1\n").is_err());
        assert!(parse("# HELP a x\n# TYPE a gauge\na 1\n# HELP a x\n").is_err());
        assert!(parse("# HELP a x\n# TYPE a gauge\na{l=\"\"} 1\n").is_ok());
    }
}
