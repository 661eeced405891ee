//! Output for people (aligned text) or scripts (one JSON document on stdout).

use serde_json::Value;

pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints `value` as JSON, or the text `human` renders, depending on the mode.
    pub fn emit(&self, value: &Value, human: impl FnOnce() -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
            );
        } else {
            let text = human();
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
        }
    }
}

/// Rows of `label: value`, labels padded to one width.
pub fn table(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(label, value)| format!("{label:<width$}  {value}\n"))
        .collect()
}

/// A classic 16-bytes-per-line hex dump with offsets and printable characters.
pub fn hex_dump(data: &[u8], base_offset: u64) -> String {
    let mut out = String::with_capacity(data.len() * 4);
    for (i, chunk) in data.chunks(16).enumerate() {
        let offset = base_offset + (i * 16) as u64;
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!("{offset:08x}  {:<47}  |{text}|\n", hex.join(" ")));
    }
    out
}

/// Lowercase hex without separators.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes as a human size: 1073741824 -> "1.00 GiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_dumps() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1 << 30), "1.00 GiB");
        let dump = hex_dump(b"ABC\x00", 0x10);
        assert!(dump.starts_with("00000010  41 42 43 00"), "{dump}");
        assert!(dump.trim_end().ends_with("|ABC.|"), "{dump}");
    }
}
