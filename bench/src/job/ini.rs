//! fio's INI job-file syntax, read into a flat list of sections and options.
//!
//! As fio 3.33 reads job files (`man fio`, "JOB FILE FORMAT", checked against
//! `fio --debug=parse`):
//! - `[name]` starts a section; `[global]` is the defaults section.
//! - A `;` or `#` starts a comment, at the start of a line or after text: fio cuts every
//!   line at the first `;` or `#` (`description=a#b` is `a`), so values cannot hold them.
//! - `key=value`, or a bare `key` for options that need no value. Blanks around the key,
//!   the `=` and the value are ignored (fio keeps a blank after `=` in the value and then
//!   misreads `size = 1m` as 1 byte; iscsi-bench trims it).
//! - `include <file>` reads the options of another file into the current section. As in
//!   fio, included files hold options only (no `[sections]`), and the path is taken as
//!   given if that file exists, else relative to the including file's folder. Nesting is
//!   bounded and cycles are refused.
//! - `${NAME}` in a value is replaced by the environment variable NAME. fio replaces an
//!   unset variable with an empty string; iscsi-bench refuses it and names the variable.
//! - Lines are at most 8192 bytes, as in fio.

use std::path::{Path, PathBuf};

use super::error::{JobError, Origin};

/// Longest line fio reads.
pub const MAX_LINE_BYTES: usize = 8192;
/// Largest job file read.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Deepest `include` nesting.
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// Most lines over a job file and everything it includes.
pub const MAX_TOTAL_LINES: usize = 1_000_000;

/// One meaningful line of a job file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Section {
        name: String,
        at: Origin,
    },
    Option {
        key: String,
        value: Option<String>,
        /// The line; the column points at the value when there is one.
        at: Origin,
    },
}

/// Reads a job file and its includes, with `env` answering `${NAME}`.
pub struct IniReader<'env> {
    env: &'env dyn Fn(&str) -> Option<String>,
    stack: Vec<PathBuf>,
    lines_read: usize,
    items: Vec<Item>,
}

impl<'env> IniReader<'env> {
    pub fn new(env: &'env dyn Fn(&str) -> Option<String>) -> IniReader<'env> {
        IniReader {
            env,
            stack: Vec::new(),
            lines_read: 0,
            items: Vec::new(),
        }
    }

    /// Read a top-level job file from disk.
    pub fn read_file(mut self, path: &Path) -> Result<Vec<Item>, JobError> {
        let text = read_bounded(path, &Origin::Builtin)?;
        self.read_text(path, &text, false, 0)?;
        Ok(self.items)
    }

    /// Read job-file text already in memory; `path` names it in errors and anchors includes.
    pub fn read_str(mut self, path: &Path, text: &str) -> Result<Vec<Item>, JobError> {
        self.read_text(path, text, false, 0)?;
        Ok(self.items)
    }

    fn read_text(
        &mut self,
        path: &Path,
        text: &str,
        included: bool,
        depth: usize,
    ) -> Result<(), JobError> {
        let key = canonical(path);
        self.stack.push(key);
        let result = self.read_lines(path, text, included, depth);
        self.stack.pop();
        result
    }

    fn read_lines(
        &mut self,
        path: &Path,
        text: &str,
        included: bool,
        depth: usize,
    ) -> Result<(), JobError> {
        for (index, raw_line) in text.split('\n').enumerate() {
            let line_number = u32::try_from(index + 1).unwrap_or(u32::MAX);
            let at = Origin::file(path, line_number);
            self.lines_read += 1;
            if self.lines_read > MAX_TOTAL_LINES {
                return Err(JobError::TooLarge {
                    at,
                    what: "the number of job-file lines",
                    limit: MAX_TOTAL_LINES as u64,
                });
            }
            if raw_line.len() > MAX_LINE_BYTES {
                return Err(JobError::TooLarge {
                    at,
                    what: "the line length in bytes",
                    limit: MAX_LINE_BYTES as u64,
                });
            }
            let raw_line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
            // fio cuts each line at its first comment character.
            let content = match raw_line.find([';', '#']) {
                Some(at) => &raw_line[..at],
                None => raw_line,
            };
            let trimmed = content.trim();
            if trimmed.is_empty() {
                continue;
            }
            if let Some(inner) = trimmed.strip_prefix('[') {
                let name = inner
                    .strip_suffix(']')
                    .ok_or_else(|| JobError::Syntax {
                        at: at.clone(),
                        text: trimmed.to_string(),
                        reason: "a section header ends with ']'",
                    })?
                    .trim();
                if name.is_empty() {
                    return Err(JobError::Syntax {
                        at,
                        text: trimmed.to_string(),
                        reason: "empty section name",
                    });
                }
                if included {
                    return Err(JobError::SectionInInclude {
                        at,
                        section: name.to_string(),
                    });
                }
                self.items.push(Item::Section {
                    name: name.to_string(),
                    at,
                });
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix("include") {
                if rest.starts_with(char::is_whitespace) {
                    self.include(path, rest.trim(), &at, depth)?;
                    continue;
                }
            }
            let (key, value) = match content.split_once('=') {
                Some((key, value)) => (key.trim(), Some(value)),
                None => (trimmed, None),
            };
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(JobError::Syntax {
                    at,
                    text: trimmed.to_string(),
                    reason: "expected [section], key=value, key, or include <file>",
                });
            }
            let (value, at) = match value {
                Some(raw_value) => {
                    let leading = raw_value.len() - raw_value.trim_start().len();
                    let value_start = content.len() - raw_value.len() + leading;
                    let column = column_of(raw_line, value_start);
                    let value_at = at.at_column(column);
                    let expanded = self.expand_env(raw_value.trim(), &at, column)?;
                    (Some(expanded), value_at)
                }
                None => (None, at),
            };
            self.items.push(Item::Option {
                key: key.to_string(),
                value,
                at,
            });
        }
        Ok(())
    }

    fn include(
        &mut self,
        including: &Path,
        name: &str,
        at: &Origin,
        depth: usize,
    ) -> Result<(), JobError> {
        if name.is_empty() {
            return Err(JobError::Syntax {
                at: at.clone(),
                text: "include".into(),
                reason: "include needs a file name",
            });
        }
        if !self
            .items
            .iter()
            .any(|item| matches!(item, Item::Section { .. }))
            && self.stack.len() == 1
        {
            return Err(JobError::OutsideSection {
                at: at.clone(),
                option: format!("include {name}"),
            });
        }
        if depth + 1 > MAX_INCLUDE_DEPTH {
            return Err(JobError::IncludeDepth {
                at: at.clone(),
                limit: MAX_INCLUDE_DEPTH,
            });
        }
        let given = PathBuf::from(name);
        let path = if given.is_absolute() || given.exists() {
            given
        } else {
            including
                .parent()
                .map(|folder| folder.join(&given))
                .unwrap_or(given)
        };
        if self.stack.contains(&canonical(&path)) {
            return Err(JobError::IncludeCycle {
                at: at.clone(),
                path,
            });
        }
        let text = read_bounded(&path, at)?;
        self.read_text(&path, &text, true, depth + 1)
    }

    /// Replace `${NAME}` by the variable's value. Values are not expanded again.
    fn expand_env(&self, value: &str, at: &Origin, value_column: u32) -> Result<String, JobError> {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        let mut consumed_chars: u32 = 0;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let column = value_column + consumed_chars + rest[..start].chars().count() as u32;
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| JobError::Syntax {
                at: at.at_column(column),
                text: value.to_string(),
                reason: "unterminated ${ in the value",
            })?;
            let name = &after[..end];
            if name.is_empty() {
                return Err(JobError::Syntax {
                    at: at.at_column(column),
                    text: value.to_string(),
                    reason: "empty variable name in ${}",
                });
            }
            match (self.env)(name) {
                Some(found) => out.push_str(&found),
                None => {
                    return Err(JobError::UnsetEnv {
                        at: at.at_column(column),
                        name: name.to_string(),
                    })
                }
            }
            let used = start + 2 + end + 1;
            consumed_chars += rest[..used].chars().count() as u32;
            rest = &rest[used..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// 1-based character column of byte offset `byte` in `line`.
fn column_of(line: &str, byte: usize) -> u32 {
    let prefix = line.get(..byte).unwrap_or(line);
    u32::try_from(prefix.chars().count() + 1).unwrap_or(u32::MAX)
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn read_bounded(path: &Path, at: &Origin) -> Result<String, JobError> {
    let read_error = |source| JobError::Read {
        at: at.clone(),
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if metadata.len() > MAX_FILE_BYTES {
        return Err(JobError::TooLarge {
            at: Origin::file(path, 1),
            what: "the job file size in bytes",
            limit: MAX_FILE_BYTES,
        });
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    String::from_utf8(bytes).map_err(|error| {
        let valid = error.utf8_error().valid_up_to();
        let line = error.as_bytes()[..valid]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        JobError::Syntax {
            at: Origin::file(path, u32::try_from(line).unwrap_or(u32::MAX)),
            text: String::new(),
            reason: "the line is not valid UTF-8",
        }
    })
}

/// The process environment, for `${NAME}`.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn read(text: &str) -> Result<Vec<Item>, JobError> {
        IniReader::new(&no_env).read_str(Path::new("t.fio"), text)
    }

    fn option(key: &str, value: Option<&str>, line: u32, column: Option<u32>) -> Item {
        Item::Option {
            key: key.into(),
            value: value.map(Into::into),
            at: Origin::File {
                path: "t.fio".into(),
                line,
                column,
            },
        }
    }

    #[test]
    fn sections_options_comments_and_blanks() {
        let items = read(
            "; leading comment\n# another\n[global]\n  bs = 4k  ; trailing\ntime_based\n\n\
             [job1]\r\ndescription=a#b;c\nfilename=/tmp/x # note\n",
        )
        .unwrap();
        assert_eq!(
            items,
            vec![
                Item::Section {
                    name: "global".into(),
                    at: Origin::file(Path::new("t.fio"), 3)
                },
                option("bs", Some("4k"), 4, Some(8)),
                option("time_based", None, 5, None),
                Item::Section {
                    name: "job1".into(),
                    at: Origin::file(Path::new("t.fio"), 7)
                },
                option("description", Some("a"), 8, Some(13)),
                option("filename", Some("/tmp/x"), 9, Some(10)),
            ]
        );
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let error = read("[j]\nbs=4k\n[oops\n").unwrap_err();
        assert!(matches!(
            &error,
            JobError::Syntax {
                at: Origin::File { line: 3, .. },
                ..
            }
        ));
        assert!(error.to_string().starts_with("t.fio:3"), "{error}");
        assert!(read("[]\n").is_err());
        assert!(matches!(
            read("[j]\nbad key=1\n"),
            Err(JobError::Syntax { .. })
        ));
        assert!(matches!(read("[j]\n=1\n"), Err(JobError::Syntax { .. })));
        let long = format!("[j]\ndescription={}\n", "x".repeat(MAX_LINE_BYTES));
        assert!(matches!(read(&long), Err(JobError::TooLarge { .. })));
    }

    #[test]
    fn env_expansion_and_unset_variables() {
        let env = |name: &str| (name == "SZ").then(|| "64k".to_string());
        let items = IniReader::new(&env)
            .read_str(Path::new("t.fio"), "[j]\nsize=${SZ}\nbs=x${SZ}y${SZ}\n")
            .unwrap();
        assert_eq!(items[1], option("size", Some("64k"), 2, Some(6)));
        assert_eq!(items[2], option("bs", Some("x64ky64k"), 3, Some(4)));
        let error = IniReader::new(&env)
            .read_str(Path::new("t.fio"), "[j]\nsize=ab${NOPE}\n")
            .unwrap_err();
        match &error {
            JobError::UnsetEnv { at, name } => {
                assert_eq!(name, "NOPE");
                assert_eq!(at.to_string(), "t.fio:2:8");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            read("[j]\nsize=${X\n"),
            Err(JobError::Syntax { .. })
        ));
        assert!(matches!(
            read("[j]\nsize=${}\n"),
            Err(JobError::Syntax { .. })
        ));
        // A lone `$` stays (fio's $ncpus keywords are not expanded here either).
        assert_eq!(
            read("[j]\nx=$a\n").unwrap()[1],
            option("x", Some("$a"), 2, Some(3))
        );
    }

    #[test]
    fn includes_read_options_relative_to_the_including_file() {
        let dir = std::env::temp_dir().join(format!("iscsi-bench-ini-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/opts.inc"), "bs=16k\ninclude more.inc\n").unwrap();
        std::fs::write(dir.join("sub/more.inc"), "iodepth=8\n").unwrap();
        std::fs::write(
            dir.join("sub/main.fio"),
            "[global]\ninclude opts.inc\n[a]\n",
        )
        .unwrap();
        std::fs::write(dir.join("sub/section.inc"), "[x]\n").unwrap();
        std::fs::write(dir.join("sub/bad.fio"), "[a]\ninclude section.inc\n").unwrap();
        std::fs::write(dir.join("sub/self.fio"), "[a]\ninclude self.fio\n").unwrap();
        std::fs::write(dir.join("sub/loop.inc"), "include loop.inc\n").unwrap();
        std::fs::write(dir.join("sub/loop.fio"), "[a]\ninclude loop.inc\n").unwrap();
        std::fs::write(dir.join("sub/top.fio"), "include opts.inc\n[a]\n").unwrap();
        std::fs::write(dir.join("sub/missing.fio"), "[a]\ninclude nope.inc\n").unwrap();

        let items = IniReader::new(&no_env)
            .read_file(&dir.join("sub/main.fio"))
            .unwrap();
        let keys: Vec<_> = items
            .iter()
            .map(|item| match item {
                Item::Section { name, .. } => format!("[{name}]"),
                Item::Option { key, value, at } => {
                    format!("{key}={} @{at}", value.clone().unwrap_or_default())
                }
            })
            .collect();
        assert_eq!(keys[0], "[global]");
        assert!(
            keys[1].starts_with("bs=16k @") && keys[1].contains("opts.inc:1"),
            "{keys:?}"
        );
        assert!(
            keys[2].starts_with("iodepth=8 @") && keys[2].contains("more.inc:1"),
            "{keys:?}"
        );
        assert_eq!(keys[3], "[a]");

        let error = |name: &str| {
            IniReader::new(&no_env)
                .read_file(&dir.join(name))
                .unwrap_err()
        };
        let bad = error("sub/bad.fio");
        assert!(matches!(bad, JobError::SectionInInclude { .. }), "{bad}");
        let own = error("sub/self.fio");
        assert!(matches!(own, JobError::IncludeCycle { .. }), "{own}");
        let cycle = error("sub/loop.fio");
        assert!(matches!(cycle, JobError::IncludeCycle { .. }), "{cycle}");
        let top = error("sub/top.fio");
        assert!(matches!(top, JobError::OutsideSection { .. }), "{top}");
        let missing = error("sub/missing.fio");
        assert!(matches!(missing, JobError::Read { .. }));
        assert!(missing.to_string().contains("missing.fio:2"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn include_depth_is_bounded() {
        let dir = std::env::temp_dir().join(format!("iscsi-bench-deep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for level in 0..=MAX_INCLUDE_DEPTH + 1 {
            std::fs::write(
                dir.join(format!("{level}.inc")),
                format!("include {}.inc\n", level + 1),
            )
            .unwrap();
        }
        std::fs::write(dir.join("top.fio"), "[a]\ninclude 0.inc\n").unwrap();
        let result = IniReader::new(&no_env).read_file(&dir.join("top.fio"));
        assert!(
            matches!(result, Err(JobError::IncludeDepth { .. })),
            "{result:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
