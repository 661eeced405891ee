//! fio's `exec_prerun` and `exec_postrun` (backend.c `exec_string`): a shell command run
//! through `system(3)` before and after the job's I/O, its output sent to
//! `<job>.prerun.txt` or `<job>.postrun.txt` in the working directory.
//!
//! fio appends the redirection to the command as written (`cmd > j.prerun.txt 2>&1`), so
//! in `a; b` only `b`'s output lands in the file, and so it does here. A prerun command
//! that fails (it cannot run, or exits non-zero) makes fio skip the job's I/O and its
//! postrun, without an error: the job reports nothing done. A failed postrun changes
//! nothing.

use std::process::Command;

/// Which of the two commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerun,
    Postrun,
}

impl Hook {
    fn mode(self) -> &'static str {
        match self {
            Hook::Prerun => "prerun",
            Hook::Postrun => "postrun",
        }
    }
}

/// The command line `system(3)` gets for `command` of job `job`.
pub fn shell_line(job: &str, hook: Hook, command: &str) -> String {
    format!("{command} > {job}.{}.txt 2>&1", hook.mode())
}

/// Runs `command` as fio does; `Err` with the reason when it could not run or exited
/// with a failure.
pub fn run(job: &str, hook: Hook, command: &str) -> Result<(), String> {
    let mode = hook.mode();
    // fio says where the output goes, on its standard output, whatever the format.
    println!("{job} : Saving output of {mode} in {job}.{mode}.txt");
    let line = shell_line(job, hook, command);
    match Command::new("/bin/sh").arg("-c").arg(&line).status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("exec_{mode} <{line}> ended with {status}")),
        Err(e) => Err(format!("exec_{mode} <{line}> could not run: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirection_follows_the_command_as_fio_writes_it() {
        assert_eq!(
            shell_line("j", Hook::Prerun, "echo a; echo b"),
            "echo a; echo b > j.prerun.txt 2>&1"
        );
        assert_eq!(
            shell_line("x", Hook::Postrun, "true"),
            "true > x.postrun.txt 2>&1"
        );
    }
}
