//! Sizes: bytes as people read them (`1.5 KiB`) and as they type them (`40M`, `2GiB`,
//! `500 MB`), the way Nix's own `--max-freed` reads suffixes (powers of 1024).

use crate::{Error, Result};

/// A byte count with binary units: `512 B`, `1.5 KiB`, `300.0 MiB`.
pub fn human_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Parses a size: a number with an optional suffix `K`, `M`, `G`, `T` (also `KiB`, `KB`,
/// `k`…; every suffix is a power of 1024, as in Nix's `--max-freed`), e.g. `40M`,
/// `1.5G`, `16 GiB`, `4096`.
pub fn parse_size(input: &str) -> Result<u64> {
    let bad = || Error::BadSize {
        input: crate::error::shorten(input),
    };
    let text = input.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let bytes = number * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(300 << 20), "300.0 MiB");
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("40M").unwrap(), 40 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("16 GiB").unwrap(), 16 << 30);
        assert_eq!(parse_size("2k").unwrap(), 2048);
        for bad in ["", "M", "12X", "-1G", "1..2G"] {
            let err = parse_size(bad).unwrap_err().to_string();
            assert!(err.contains("not a size"), "{bad}: {err}");
        }
    }
}
