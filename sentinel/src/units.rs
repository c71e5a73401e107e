//! Human durations in (`2s`, `500ms`, `5m`, `1h30m`), and byte sizes out
//! (`1.5 GiB`).
use std::time::Duration;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return Err(format!(
                "`{s}` is not a duration (expected e.g. 2s, 500ms, 5m, 1h30m)"
            ));
        }
        let n: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("bad number in duration `{s}`"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ms" => 1e-3,
            "s" | "" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            u => {
                return Err(format!(
                    "unknown unit `{u}` in duration `{s}` (use ms, s, m, h, d)"
                ));
            }
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("duration `{s}` is out of range"))
}

/// `1.5 GiB`-style rendering for tables.
pub fn bytes(b: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(
            parse_duration("3 weeks")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(
            parse_duration("99999999999999999999999d")
                .unwrap_err()
                .contains("out of range")
        );
    }

    #[test]
    fn byte_rendering() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }
}
