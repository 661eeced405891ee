//! Output for people (aligned text) or scripts (one JSON document on stdout).

use datapath::shard::PathStatus;
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

impl Output {
    /// [`Output::emit`], with what each path carried when a multipath client ran the
    /// command (`--paths`): a `paths` array in the JSON, a line per path after the text.
    pub fn emit_with_paths(
        &self,
        mut value: Value,
        paths: &[PathStatus],
        human: impl FnOnce() -> String,
    ) {
        if paths.is_empty() {
            return self.emit(&value, human);
        }
        if let Value::Object(fields) = &mut value {
            fields.insert(
                "paths".into(),
                paths.iter().map(path_json).collect::<Vec<_>>().into(),
            );
        }
        self.emit(&value, || {
            let mut text = human();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            for path in paths {
                text.push_str(&path_line(path));
            }
            text
        });
    }
}

/// One path of a multipath client, as JSON.
fn path_json(path: &PathStatus) -> Value {
    serde_json::json!({
        "portal": path.portal.to_string(),
        "state": if path.up { "up" } else { "down" },
        "alua": path.alua.map(|state| state.name()),
        "group": path.group,
        "ios": path.ios,
        "losses": path.losses,
    })
}

/// One path of a multipath client, as a line of text.
fn path_line(path: &PathStatus) -> String {
    let alua = match (path.alua, path.group) {
        (Some(state), Some(group)) => format!(", ALUA {state} (group {group})"),
        (Some(state), None) => format!(", ALUA {state}"),
        _ => String::new(),
    };
    format!(
        "path {}  {}{alua}, {} commands, {} lost\n",
        path.portal,
        if path.up { "up" } else { "down" },
        path.ios,
        path.losses
    )
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
