//! Human durations and byte sizes: parsed from the command line and the
//! config (`2s`, `1h30m`, `64MB`, `2GiB`), rendered for tables (`1.5 GiB`)
//! and back in config syntax (`15m`, `100GB`).
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

/// A config-style byte size: `64MB`, `1.5GB`, `512KiB`, `10 MB`, `4096`.
/// KB/MB/GB/TB (and K/M/G/T) are powers of 1000, KiB/MiB/GiB/TiB of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty size (expected e.g. 64MB, 1.5GiB)".into());
    }
    let not_a_size = || format!("`{t}` is not a size (expected e.g. 64MB, 1.5GiB)");
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..num_end], t[num_end..].trim_start());
    if !num.bytes().any(|b| b.is_ascii_digit()) {
        return Err(not_a_size());
    }
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ if unit.starts_with(|c: char| c.is_ascii_alphabetic()) => {
            return Err(format!(
                "`{t}` is not a size: unknown unit `{unit}` (use B, KB, MB, GB, TB or KiB, MiB, GiB, TiB)"
            ));
        }
        _ => return Err(not_a_size()),
    };
    let out_of_range = || format!("`{t}` is not a size: out of range");
    // Whole numbers stay in integers so that large byte counts are exact.
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(out_of_range);
    }
    let n: f64 = num.parse().map_err(|_| not_a_size())?;
    let bytes = n * mult as f64;
    if (bytes - bytes.round()).abs() > 1e-6 * bytes.max(1.0) {
        return Err(format!("`{t}` is not a size: not a whole number of bytes"));
    }
    if bytes.round() >= u64::MAX as f64 {
        return Err(out_of_range());
    }
    Ok(bytes.round() as u64)
}

/// A size as a config would write it, readable back by [`parse_size`]: in
/// the largest unit that renders it exactly with up to two decimals (`64MiB`,
/// `1.5GB`, `512B`), otherwise rounded to two decimals of SI (`1.23GB`).
pub fn size(b: u64) -> String {
    const UNITS: [(&str, u64); 8] = [
        ("TiB", 1 << 40),
        ("TB", 1_000_000_000_000),
        ("GiB", 1 << 30),
        ("GB", 1_000_000_000),
        ("MiB", 1 << 20),
        ("MB", 1_000_000),
        ("KiB", 1 << 10),
        ("KB", 1_000),
    ];
    // Exact in hundredths, so 1.5GB stays 1.5GB rather than 1500MB.
    let exact = |m: u64| u128::from(b) * 100 % u128::from(m) == 0;
    if let Some((u, m)) = UNITS.iter().find(|(_, m)| b >= *m && exact(*m)) {
        let v = format!("{:.2}", b as f64 / *m as f64);
        return format!("{}{u}", trim_decimals(&v));
    }
    let si = [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)];
    match si.iter().find(|(_, m)| b as f64 >= *m) {
        Some((u, m)) => format!("{}{u}", trim_decimals(&format!("{:.2}", b as f64 / m))),
        None => format!("{b}B"),
    }
}

/// A duration as a config would write it, readable back by
/// [`parse_duration`]: `15m`, `1h30m`, `7d`, `500ms`, `0s`.
pub fn duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let mut out = String::new();
    let mut secs = d.as_secs();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    let nanos = d.subsec_nanos();
    if nanos > 0 {
        let ms = format!("{:.6}", f64::from(nanos) / 1e6);
        out.push_str(&format!("{}ms", trim_decimals(&ms)));
    }
    out
}

fn trim_decimals(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
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

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MB"), Ok(64_000_000));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("100GB"), Ok(100_000_000_000));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10 MB"), Ok(10_000_000));
        assert_eq!(parse_size(" 10mb "), Ok(10_000_000));
        assert_eq!(parse_size("3g"), Ok(3_000_000_000));
        assert_eq!(parse_size("7 b"), Ok(7));
        assert_eq!(parse_size("0.5K"), Ok(500));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));

        let err = parse_size("20 parsecs").unwrap_err();
        assert!(err.contains("`20 parsecs` is not a size"), "{err}");
        assert!(err.contains("unknown unit `parsecs`"), "{err}");
        assert!(parse_size("").unwrap_err().contains("empty"));
        assert!(parse_size("MB").unwrap_err().contains("is not a size"));
        assert!(parse_size("-5MB").unwrap_err().contains("is not a size"));
        assert!(parse_size("1.2.3MB").unwrap_err().contains("is not a size"));
        assert!(parse_size("1.5").unwrap_err().contains("whole number"));
        assert!(
            parse_size("20000000TB")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_size("1e400GB").is_err());
    }

    #[test]
    fn size_rendering_round_trips() {
        assert_eq!(size(100_000_000_000), "100GB");
        assert_eq!(size(67_108_864), "64MiB");
        assert_eq!(size(64_000_000), "64MB");
        assert_eq!(size(1_500_000_000), "1.5GB");
        assert_eq!(size(3 << 29), "1.5GiB");
        assert_eq!(size(1_024_000), "1000KiB");
        assert_eq!(size(1_234_567_891), "1.23GB");
        assert_eq!(size(4096), "4KiB");
        assert_eq!(size(512), "512B");
        assert_eq!(size(0), "0B");
        for b in [
            0,
            1,
            999,
            4096,
            1_500_000_000,
            3 << 29,
            64_000_000,
            67_108_864,
            3 << 40,
            100_000_000_000,
        ] {
            assert_eq!(parse_size(&size(b)), Ok(b), "{b}");
        }
    }

    #[test]
    fn duration_rendering_round_trips() {
        assert_eq!(duration(Duration::from_secs(900)), "15m");
        assert_eq!(duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(duration(Duration::from_millis(500)), "500ms");
        assert_eq!(duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(duration(Duration::ZERO), "0s");
        for s in ["30s", "15m", "1h30m", "7d", "500ms", "1d6h", "2m5s"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&duration(d)), Ok(d), "{s}");
        }
    }
}
