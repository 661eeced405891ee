//! fio's `continue_on_error` and `ignore_error` (fio(1), "Error handling"; fio's
//! `td_error.c`): which failed I/Os end a job and which are only counted.
//!
//! An error has a type (read, write, or verify for EILSEQ; a trim counts as a write, as in
//! fio) and an errno. It is *non-fatal* when `continue_on_error` names its type **and** its
//! errno is in that type's ignore list: `ignore_error`'s list when one is given for the
//! type, else fio's default, EIO and EILSEQ. Every other error ends the job (fio's default,
//! `continue_on_error=none`). So `continue_on_error=all` goes on after a SCSI error (EIO)
//! but stops at a timeout (ETIMEDOUT) unless `ignore_error` names ETIMEDOUT too.
//!
//! `ignore_error` is three lists, read, write and verify, separated by `,`; the errors of one
//! list are separated by `:` and are errno names (`EIO`, `ETIMEDOUT`) or numbers.

use crate::io::Direction;

/// fio's errno for a verification failure and for a failed I/O.
pub const EIO: i32 = libc::EIO;
pub const EILSEQ: i32 = libc::EILSEQ;
/// Errnos fio treats as non-fatal under `continue_on_error` when `ignore_error` is unset.
const DEFAULT_NON_FATAL: [i32; 2] = [EIO, EILSEQ];
/// Most errnos one list may hold (fio has no limit; a job file's line has).
const IGNORE_LIST_MAX: usize = 64;

/// The error types fio tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Read,
    Write,
    Verify,
}

impl ErrorType {
    /// The type of an I/O error in `direction` (verification failures are
    /// [`ErrorType::Verify`] whatever their direction).
    pub fn of_io(direction: Direction) -> ErrorType {
        match direction {
            Direction::Read => ErrorType::Read,
            Direction::Write | Direction::Trim => ErrorType::Write,
        }
    }

    fn index(self) -> usize {
        match self {
            ErrorType::Read => 0,
            ErrorType::Write => 1,
            ErrorType::Verify => 2,
        }
    }
}

/// A job's `continue_on_error` and `ignore_error`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorPolicy {
    /// `continue_on_error`, per type (read, write, verify).
    pub continue_on: [bool; 3],
    /// `ignore_error`, per type; `None` keeps fio's default list.
    pub ignore: [Option<Vec<i32>>; 3],
    /// `error_dump`: print the errors that let the job go on too. fio prints every
    /// fatal error whatever it says (io_u.c `__io_u_log_error`); off by default, as fio
    /// runs it (its HOWTO says on, but the option's default of 0 wins).
    pub dump_non_fatal: bool,
}

impl ErrorPolicy {
    /// Whether an error of `kind` with `errno` lets the job go on.
    pub fn is_non_fatal(&self, kind: ErrorType, errno: i32) -> bool {
        let i = kind.index();
        if !self.continue_on[i] {
            return false;
        }
        match &self.ignore[i] {
            Some(list) => list.contains(&errno),
            None => DEFAULT_NON_FATAL.contains(&errno),
        }
    }

    /// Whether a failed I/O is printed on stderr (fio's "io_u error" line).
    pub fn is_dumped(&self, non_fatal: bool) -> bool {
        !non_fatal || self.dump_non_fatal
    }

    /// `ignore_error` as fio applies it: each type given a list also continues on its
    /// errors (until a later `continue_on_error` says otherwise).
    pub fn ignore_from_now_on(&mut self, ignore: [Option<Vec<i32>>; 3]) {
        for (i, list) in ignore.iter().enumerate() {
            if list.as_ref().is_some_and(|l| !l.is_empty()) {
                self.continue_on[i] = true;
            }
        }
        self.ignore = ignore;
    }

    /// fio's `continue_on_error` values: `none`/`0`, `read`, `write`, `io` (read and write),
    /// `verify`, `all`/`1`.
    pub fn parse_continue_on_error(text: &str) -> Result<[bool; 3], String> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "none" | "0" => [false, false, false],
            "read" => [true, false, false],
            "write" => [false, true, false],
            "io" => [true, true, false],
            "verify" => [false, false, true],
            "all" | "1" => [true, true, true],
            other => {
                return Err(format!(
                    "'{other}' is not none, read, write, io, verify or all"
                ))
            }
        })
    }

    /// fio's `ignore_error`: up to three `:`-separated lists, separated by `,`.
    pub fn parse_ignore_error(text: &str) -> Result<[Option<Vec<i32>>; 3], String> {
        let mut lists: [Option<Vec<i32>>; 3] = [None, None, None];
        let parts: Vec<&str> = text.split(',').collect();
        if parts.len() > 3 {
            return Err(format!(
                "{} lists given; at most three (read, write, verify) separated by ','",
                parts.len()
            ));
        }
        for (slot, part) in lists.iter_mut().zip(parts) {
            if part.trim().is_empty() {
                continue;
            }
            let names: Vec<&str> = part.split(':').collect();
            if names.len() > IGNORE_LIST_MAX {
                return Err(format!(
                    "{} errors in one list; at most {IGNORE_LIST_MAX}",
                    names.len()
                ));
            }
            let errnos = names
                .into_iter()
                .map(parse_errno)
                .collect::<Result<Vec<i32>, String>>()?;
            *slot = Some(errnos);
        }
        Ok(lists)
    }

    /// `continue_on_error` back in fio's words, for the job's options in the report;
    /// `None` for read with verify or write with verify, which only `ignore_error` makes
    /// (its lists then say it).
    pub fn continue_on_error_name(&self) -> Option<&'static str> {
        Some(match self.continue_on {
            [false, false, false] => "none",
            [true, false, false] => "read",
            [false, true, false] => "write",
            [true, true, false] => "io",
            [false, false, true] => "verify",
            [true, true, true] => "all",
            [true, false, true] | [false, true, true] => return None,
        })
    }
}

/// The errno of an I/O error (see [`crate::io::IoError::errno`]).
fn parse_errno(text: &str) -> Result<i32, String> {
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        if number > 0 {
            return Ok(number);
        }
    }
    ERRNO_NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, errno)| *errno)
        .ok_or_else(|| {
            format!("'{text}' is not an errno (a positive number or a name such as EIO, ETIMEDOUT)")
        })
}

/// What C's `strerror` says for `errno` (fio prints that in its error lines): std's text
/// for an OS error, without the " (os error N)" it adds.
pub fn errno_text(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(end) => text[..end].to_string(),
        None => text,
    }
}

/// The errno names fio's `ignore_error` takes (options.c `str2error`, fio 3.42), each
/// with Linux's value.
const ERRNO_NAMES: &[(&str, i32)] = &[
    ("EPERM", libc::EPERM),
    ("ENOENT", libc::ENOENT),
    ("ESRCH", libc::ESRCH),
    ("EINTR", libc::EINTR),
    ("EIO", libc::EIO),
    ("ENXIO", libc::ENXIO),
    ("E2BIG", libc::E2BIG),
    ("ENOEXEC", libc::ENOEXEC),
    ("EBADF", libc::EBADF),
    ("ECHILD", libc::ECHILD),
    ("EAGAIN", libc::EAGAIN),
    ("ENOMEM", libc::ENOMEM),
    ("EACCES", libc::EACCES),
    ("EFAULT", libc::EFAULT),
    ("ENOTBLK", libc::ENOTBLK),
    ("EBUSY", libc::EBUSY),
    ("EEXIST", libc::EEXIST),
    ("EXDEV", libc::EXDEV),
    ("ENODEV", libc::ENODEV),
    ("ENOTDIR", libc::ENOTDIR),
    ("EISDIR", libc::EISDIR),
    ("EINVAL", libc::EINVAL),
    ("ENFILE", libc::ENFILE),
    ("EMFILE", libc::EMFILE),
    ("ENOTTY", libc::ENOTTY),
    ("ETXTBSY", libc::ETXTBSY),
    ("EFBIG", libc::EFBIG),
    ("ENOSPC", libc::ENOSPC),
    ("ESPIPE", libc::ESPIPE),
    ("EROFS", libc::EROFS),
    ("EMLINK", libc::EMLINK),
    ("EPIPE", libc::EPIPE),
    ("EDOM", libc::EDOM),
    ("ERANGE", libc::ERANGE),
    ("EDEADLK", libc::EDEADLK),
    ("ENAMETOOLONG", libc::ENAMETOOLONG),
    ("ENOLCK", libc::ENOLCK),
    ("ENOSYS", libc::ENOSYS),
    ("ENOTEMPTY", libc::ENOTEMPTY),
    ("ELOOP", libc::ELOOP),
    ("EWOULDBLOCK", libc::EWOULDBLOCK),
    ("ENOMSG", libc::ENOMSG),
    ("EIDRM", libc::EIDRM),
    ("ECHRNG", libc::ECHRNG),
    ("EL2NSYNC", libc::EL2NSYNC),
    ("EL3HLT", libc::EL3HLT),
    ("EL3RST", libc::EL3RST),
    ("ELNRNG", libc::ELNRNG),
    ("EUNATCH", libc::EUNATCH),
    ("ENOCSI", libc::ENOCSI),
    ("EL2HLT", libc::EL2HLT),
    ("EBADE", libc::EBADE),
    ("EBADR", libc::EBADR),
    ("EXFULL", libc::EXFULL),
    ("ENOANO", libc::ENOANO),
    ("EBADRQC", libc::EBADRQC),
    ("EBADSLT", libc::EBADSLT),
    ("EDEADLOCK", libc::EDEADLOCK),
    ("EBFONT", libc::EBFONT),
    ("ENOSTR", libc::ENOSTR),
    ("ENODATA", libc::ENODATA),
    ("ETIME", libc::ETIME),
    ("ENOSR", libc::ENOSR),
    ("ENONET", libc::ENONET),
    ("ENOPKG", libc::ENOPKG),
    ("EREMOTE", libc::EREMOTE),
    ("ENOLINK", libc::ENOLINK),
    ("EADV", libc::EADV),
    ("ESRMNT", libc::ESRMNT),
    ("ECOMM", libc::ECOMM),
    ("EPROTO", libc::EPROTO),
    ("EMULTIHOP", libc::EMULTIHOP),
    ("EDOTDOT", libc::EDOTDOT),
    ("EBADMSG", libc::EBADMSG),
    ("EOVERFLOW", libc::EOVERFLOW),
    ("ENOTUNIQ", libc::ENOTUNIQ),
    ("EBADFD", libc::EBADFD),
    ("EREMCHG", libc::EREMCHG),
    ("ELIBACC", libc::ELIBACC),
    ("ELIBBAD", libc::ELIBBAD),
    ("ELIBSCN", libc::ELIBSCN),
    ("ELIBMAX", libc::ELIBMAX),
    ("ELIBEXEC", libc::ELIBEXEC),
    ("EILSEQ", libc::EILSEQ),
    ("ERESTART", libc::ERESTART),
    ("ESTRPIPE", libc::ESTRPIPE),
    ("EUSERS", libc::EUSERS),
    ("ENOTSOCK", libc::ENOTSOCK),
    ("EDESTADDRREQ", libc::EDESTADDRREQ),
    ("EMSGSIZE", libc::EMSGSIZE),
    ("EPROTOTYPE", libc::EPROTOTYPE),
    ("ENOPROTOOPT", libc::ENOPROTOOPT),
    ("EPROTONOSUPPORT", libc::EPROTONOSUPPORT),
    ("ESOCKTNOSUPPORT", libc::ESOCKTNOSUPPORT),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ("EPFNOSUPPORT", libc::EPFNOSUPPORT),
    ("EAFNOSUPPORT", libc::EAFNOSUPPORT),
    ("EADDRINUSE", libc::EADDRINUSE),
    ("EADDRNOTAVAIL", libc::EADDRNOTAVAIL),
    ("ENETDOWN", libc::ENETDOWN),
    ("ENETUNREACH", libc::ENETUNREACH),
    ("ENETRESET", libc::ENETRESET),
    ("ECONNABORTED", libc::ECONNABORTED),
    ("ECONNRESET", libc::ECONNRESET),
    ("ENOBUFS", libc::ENOBUFS),
    ("EISCONN", libc::EISCONN),
    ("ENOTCONN", libc::ENOTCONN),
    ("ESHUTDOWN", libc::ESHUTDOWN),
    ("ETOOMANYREFS", libc::ETOOMANYREFS),
    ("ETIMEDOUT", libc::ETIMEDOUT),
    ("ECONNREFUSED", libc::ECONNREFUSED),
    ("EHOSTDOWN", libc::EHOSTDOWN),
    ("EHOSTUNREACH", libc::EHOSTUNREACH),
    ("EALREADY", libc::EALREADY),
    ("EINPROGRESS", libc::EINPROGRESS),
    ("ESTALE", libc::ESTALE),
    ("EUCLEAN", libc::EUCLEAN),
    ("ENOTNAM", libc::ENOTNAM),
    ("ENAVAIL", libc::ENAVAIL),
    ("EISNAM", libc::EISNAM),
    ("EREMOTEIO", libc::EREMOTEIO),
    ("EDQUOT", libc::EDQUOT),
    ("ENOMEDIUM", libc::ENOMEDIUM),
    ("EMEDIUMTYPE", libc::EMEDIUMTYPE),
    ("ECANCELED", libc::ECANCELED),
    ("ENOKEY", libc::ENOKEY),
    ("EKEYEXPIRED", libc::EKEYEXPIRED),
    ("EKEYREVOKED", libc::EKEYREVOKED),
    ("EKEYREJECTED", libc::EKEYREJECTED),
    ("EOWNERDEAD", libc::EOWNERDEAD),
    ("ENOTRECOVERABLE", libc::ENOTRECOVERABLE),
    ("ERFKILL", libc::ERFKILL),
    ("EHWPOISON", libc::EHWPOISON),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_text_is_strerrors() {
        assert_eq!(errno_text(libc::EIO), "Input/output error");
        assert_eq!(errno_text(libc::ENOSPC), "No space left on device");
    }

    #[test]
    fn only_error_dump_prints_the_errors_the_job_rides_out() {
        let mut policy = ErrorPolicy::default();
        assert!(policy.is_dumped(false));
        assert!(!policy.is_dumped(true));
        policy.dump_non_fatal = true;
        assert!(policy.is_dumped(true));
    }

    #[test]
    fn default_stops_at_every_error() {
        let policy = ErrorPolicy::default();
        assert!(!policy.is_non_fatal(ErrorType::Write, EIO));
        assert!(!policy.is_non_fatal(ErrorType::Verify, EILSEQ));
    }

    #[test]
    fn continue_on_error_takes_fios_defaults_per_type() {
        let policy = ErrorPolicy {
            continue_on: ErrorPolicy::parse_continue_on_error("io").unwrap(),
            ..ErrorPolicy::default()
        };
        assert!(policy.is_non_fatal(ErrorType::Read, EIO));
        assert!(policy.is_non_fatal(ErrorType::Write, EIO));
        assert!(!policy.is_non_fatal(ErrorType::Verify, EILSEQ));
        assert!(
            !policy.is_non_fatal(ErrorType::Write, libc::ETIMEDOUT),
            "a timeout is not in fio's default list"
        );
        assert_eq!(policy.continue_on_error_name(), Some("io"));
        assert!(ErrorPolicy::parse_continue_on_error("sometimes").is_err());
    }

    #[test]
    fn ignore_error_replaces_the_list_of_each_type_given() {
        let ignore = ErrorPolicy::parse_ignore_error("EIO:ETIMEDOUT,110").unwrap();
        assert_eq!(ignore[0], Some(vec![libc::EIO, libc::ETIMEDOUT]));
        assert_eq!(ignore[1], Some(vec![110]));
        assert_eq!(ignore[2], None);
        let policy = ErrorPolicy {
            continue_on: [true, true, true],
            ignore,
            ..ErrorPolicy::default()
        };
        assert!(policy.is_non_fatal(ErrorType::Read, libc::ETIMEDOUT));
        assert!(!policy.is_non_fatal(ErrorType::Write, EIO), "replaced");
        assert!(
            policy.is_non_fatal(ErrorType::Verify, EILSEQ),
            "default kept"
        );
        assert!(ErrorPolicy::parse_ignore_error("EIO,EIO,EIO,EIO").is_err());
        let error = ErrorPolicy::parse_ignore_error("EWHAT").unwrap_err();
        assert!(error.contains("EWHAT"), "{error}");
        assert!(ErrorPolicy::parse_ignore_error("-5").is_err());
    }
}
