//! Kubernetes resource quantities (`500m`, `2`, `4Gi`, `1.5G`, `1e3`).
//!
//! Written by hand: the grammar is small and fixed, and the crates that parse it bring a
//! Kubernetes client along. This parser is strict: no sign, no spaces, only the suffixes
//! Kubernetes defines.

use crate::echo::quote;

/// Binary suffixes, 1024-based.
const BINARY: &[(&str, i32)] = &[
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];
/// Decimal suffixes, as powers of ten.
const DECIMAL: &[(&str, i32)] = &[
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// Parses a non-negative quantity into its value in base units (cores, bytes).
pub fn parse_quantity(text: &str) -> Result<f64, String> {
    let invalid = || {
        format!(
            "invalid quantity {}: expected a number with an optional suffix (m, k, M, G, T, \
             P, E, Ki, Mi, Gi, Ti, Pi, Ei) or exponent (e3), e.g. 500m or 4Gi",
            quote(text)
        )
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits_ok(fraction) {
        return Err(invalid());
    }
    let mantissa: f64 = number.parse().map_err(|_| invalid())?;
    let scale = if let Some((_, power)) = BINARY.iter().find(|(s, _)| *s == suffix) {
        2f64.powi(*power)
    } else if let Some((_, power)) = DECIMAL.iter().find(|(s, _)| *s == suffix) {
        10f64.powi(*power)
    } else {
        let exponent = suffix.strip_prefix(['e', 'E']).ok_or_else(invalid)?;
        let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        if digits.is_empty() || !digits_ok(digits) {
            return Err(invalid());
        }
        let power: i32 = exponent.parse().map_err(|_| invalid())?;
        10f64.powi(power)
    };
    let value = mantissa * scale;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_quantities() {
        let cases: &[(&str, f64)] = &[
            ("2", 2.0),
            ("500m", 0.5),
            ("0.5", 0.5),
            (".5", 0.5),
            ("1.", 1.0),
            ("4Gi", 4.0 * 1024.0 * 1024.0 * 1024.0),
            ("512Mi", 512.0 * 1024.0 * 1024.0),
            ("1.5G", 1.5e9),
            ("1k", 1e3),
            ("2E", 2e18),
            ("1e3", 1e3),
            ("1E3", 1e3),
            ("5e-1", 0.5),
            ("100u", 1e-4),
        ];
        for (text, value) in cases {
            let parsed = parse_quantity(text).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                (parsed - value).abs() <= value * 1e-12,
                "{text}: {parsed} != {value}"
            );
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "", "Gi", "4GB", "4gi", "4 Gi", "-1", "+1", "1.2.3", "1e", "1e+", "0x10", "4K", "1ee3",
            "inf", ".",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_quantity("4GB").unwrap_err(),
            "invalid quantity \"4GB\": expected a number with an optional suffix (m, k, M, G, T, \
             P, E, Ki, Mi, Gi, Ti, Pi, Ei) or exponent (e3), e.g. 500m or 4Gi"
        );
    }
}
