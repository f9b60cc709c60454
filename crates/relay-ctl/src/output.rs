//! Printing: aligned tables, human sizes and ages, and JSON.
//!
//! Every line goes through [`line`] (the `outln!` macro): a reader that
//! stops early (`relayctl ... | grep -q x`, `| head`) closes the pipe, and
//! the command then ends quietly with status 0 instead of panicking.

use std::io::Write;

use serde::Serialize;

/// `println!` for relayctl: through [`line`], so a closed pipe is quiet.
macro_rules! outln {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes one line to stdout. A closed pipe (the reader has what it
/// wanted) exits 0 at once, without a message; any other write failure
/// exits 1 with one.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
    {
        write_failed(&e);
    }
}

/// Writes `bytes` to stdout as they are (generated scripts, man pages),
/// with the same handling of a closed pipe as [`line`].
pub fn raw(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        write_failed(&e);
    }
}

fn write_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    // stderr may be gone too; never panic on it.
    let _ = writeln!(std::io::stderr(), "relayctl: cannot write output: {e}");
    std::process::exit(1);
}

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => line(format_args!("{text}")),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "relayctl: cannot encode JSON: {e}");
            std::process::exit(1);
        }
    }
}

/// Prints left-aligned columns, two spaces apart, trailing spaces trimmed.
pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.to_vec()).collect();
    table_dyn(&header, &rows);
}

/// [`table`] for a column count known only at run time.
pub fn table_dyn(header: &[String], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        outln!("{}", parts.join("  ").trim_end());
    };
    line(header);
    for row in rows {
        line(row);
    }
}

/// `512 B`, `1.5 KiB`, `3.0 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration in the two largest units: `42s`, `3m12s`, `5h03m`, `2d04h`.
pub fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// How long ago `at_ms` was, seen from `now_ms`.
pub fn age(now_ms: u64, at_ms: u64) -> String {
    duration_ms(now_ms.saturating_sub(at_ms))
}

/// When `at_ms` comes, seen from `now_ms`: `now` if past, else `in 4m10s`.
pub fn until(now_ms: u64, at_ms: u64) -> String {
    if at_ms <= now_ms {
        "now".into()
    } else {
        format!("in {}", duration_ms(at_ms - now_ms))
    }
}

/// Milliseconds since the epoch now (the client's clock; only for display).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `yes`/`NO` (capitals draw the eye to the bad case).
pub fn yes_no(ok: bool) -> String {
    if ok { "yes".into() } else { "NO".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(duration_ms(42_000), "42s");
        assert_eq!(duration_ms(192_000), "3m12s");
        assert_eq!(duration_ms(5 * 3_600_000 + 180_000), "5h03m");
        assert_eq!(duration_ms(2 * 86_400_000 + 4 * 3_600_000), "2d04h");
        assert_eq!(until(10_000, 5_000), "now");
        assert_eq!(until(0, 250_000), "in 4m10s");
    }
}
