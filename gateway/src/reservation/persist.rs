//! APTPL: the persistent reservation state of a unit kept across power loss (SPC-4
//! 5.12.5), in a small text file beside the unit's storage. Written before GOOD: a
//! temporary file in the same directory, fsync, rename over the old one, fsync of the
//! directory. A crash leaves either the old file or the new one, never half of one; a
//! file without its final `end` line is refused at load.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use datapath::scsi::reservation::{split_port_name, PrType, TransportId};

use super::state::Persistent;

const MAGIC: &str = "iscsi-gateway persistent reservations v1";
/// A state file is small (at most 256 registrations); longer is not ours.
const MAX_FILE_BYTES: u64 = 1 << 20;

#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Format {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn render(state: &Persistent) -> String {
    let mut text = format!("{MAGIC}\ngeneration {}\n", state.generation);
    for (id, port, key, all_tg_pt) in &state.registrations {
        text.push_str(&format!(
            "registration {port} {key:016x} {} {}\n",
            u8::from(*all_tg_pt),
            id.port_name()
        ));
    }
    if let Some((id, port, pr_type)) = &state.reservation {
        text.push_str(&format!(
            "reservation {port} {} {}\n",
            *pr_type as u8,
            id.port_name()
        ));
    }
    text.push_str("end\n");
    text
}

pub(super) fn parse(path: &Path, text: &str) -> Result<Persistent, PersistError> {
    let bad = |line: usize, reason| PersistError::Format {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut lines = text.lines().enumerate();
    if lines.next().map(|(_, l)| l) != Some(MAGIC) {
        return Err(bad(1, "not a persistent reservation file"));
    }
    let mut state = Persistent::default();
    let port_id = |text: &str| -> Option<TransportId> {
        let (name, isid) = split_port_name(text)?;
        Some(TransportId {
            name: name.to_string(),
            isid: Some(isid),
        })
    };
    for (index, line) in lines {
        let number = index + 1;
        let fields: Vec<&str> = line.splitn(5, ' ').collect();
        match fields.as_slice() {
            ["generation", n] => {
                state.generation = n.parse().map_err(|_| bad(number, "bad generation"))?
            }
            ["registration", port, key, all, id] => state.registrations.push((
                port_id(id).ok_or(bad(number, "bad initiator port name"))?,
                port.parse().map_err(|_| bad(number, "bad target port"))?,
                u64::from_str_radix(key, 16).map_err(|_| bad(number, "bad key"))?,
                *all == "1",
            )),
            ["reservation", port, kind, id] | ["reservation", port, kind, id, ..] => {
                state.reservation = Some((
                    port_id(id).ok_or(bad(number, "bad initiator port name"))?,
                    port.parse().map_err(|_| bad(number, "bad target port"))?,
                    kind.parse()
                        .ok()
                        .and_then(PrType::from_code)
                        .ok_or(bad(number, "bad reservation type"))?,
                ))
            }
            ["end"] => return Ok(state),
            _ => return Err(bad(number, "unknown line")),
        }
    }
    Err(bad(
        text.lines().count(),
        "no end line: the file was cut short",
    ))
}

/// Where one unit's APTPL state lives.
#[derive(Debug, Clone)]
pub(super) struct Store {
    path: PathBuf,
}

impl Store {
    pub(super) fn new(path: PathBuf) -> Store {
        Store { path }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state, if there is one.
    pub(super) fn load(&self) -> Result<Option<Persistent>, PersistError> {
        let file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&self.path)(e)),
        };
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_FILE_BYTES), &mut text)
            .map_err(io(&self.path))?;
        parse(&self.path, &text).map(Some)
    }

    /// Writes `state` durably, or removes the file when `state` is `None` (APTPL off).
    pub(super) fn save(&self, state: Option<&Persistent>) -> Result<(), PersistError> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        match state {
            Some(state) => {
                let mut temp = self.path.clone().into_os_string();
                temp.push(".tmp");
                let temp = PathBuf::from(temp);
                let mut file = std::fs::File::create(&temp).map_err(io(&temp))?;
                file.write_all(render(state).as_bytes())
                    .map_err(io(&temp))?;
                file.sync_all().map_err(io(&temp))?;
                drop(file);
                std::fs::rename(&temp, &self.path).map_err(io(&self.path))?;
            }
            None => match std::fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io(&self.path)(e)),
            },
        }
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))
    }
}
