//! Output formats shared by the commands: a human table, JSON or YAML.

use clap::ValueEnum;
use serde::Serialize;
use toucan_core::time::{self, Millis};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// Prints a value as JSON or YAML; `Table` is handled by each command.
pub fn print_structured<T: Serialize>(format: Format, value: &T) -> anyhow::Result<()> {
    match format {
        Format::Json | Format::Table => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
    }
    Ok(())
}

/// A table with a header row and left-aligned columns, no borders.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(header.iter().map(|h| h.to_string()));
    for row in rows {
        t.add_row(row);
    }
    // comfy-table pads each line on the left by one space with this preset.
    t.lines()
        .map(|l| l.trim_start_matches(' ').trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Milliseconds as a short human duration (`850ms`, `3.2s`, `2m05s`).
pub fn duration(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC, to the second; the number itself when it is
/// past any date.
pub fn timestamp(ms: Millis) -> String {
    time::rfc3339_seconds(ms).unwrap_or_else(|_| format!("{ms} ms since the epoch"))
}

/// An age as kubectl prints it: `45s`, `12m`, `5h`, `3d`.
pub fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A metric's value to four decimals, without trailing zeros: `0.9123`, `0.5`, `12`.
pub fn metric(value: f64) -> String {
    let text = format!("{value:.4}");
    if !text.contains('.') {
        return text;
    }
    match text.trim_end_matches('0').trim_end_matches('.') {
        "-0" => "0".to_string(),
        trimmed => trimmed.to_string(),
    }
}

/// Values as a line of block characters, lowest to highest: `▁▃▅█`.
pub fn sparkline(values: &[f64]) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (lo, hi) = values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                return ' ';
            }
            let at = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
            BLOCKS[((at * 7.0).round() as usize).min(7)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_spans_lowest_to_highest() {
        assert_eq!(sparkline(&[0.0, 0.5, 1.0, f64::NAN]), "▁▅█ ");
        assert_eq!(sparkline(&[2.0, 2.0]), "▅▅");
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        for (ms, text) in [
            (-5, "0s"),
            (59_999, "59s"),
            (60_000, "1m"),
            (3_599_000, "59m"),
            (3_600_000, "1h"),
            (86_399_000, "23h"),
            (86_400_000 * 3, "3d"),
        ] {
            assert_eq!(age(ms), text, "{ms}");
        }
    }

    #[test]
    fn metrics_keep_four_decimals_at_most() {
        for (value, text) in [
            (0.912_345, "0.9123"),
            (0.5, "0.5"),
            (12.0, "12"),
            (-0.000_01, "0"),
            (-1.25, "-1.25"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(metric(value), text, "{value}");
        }
    }
}
