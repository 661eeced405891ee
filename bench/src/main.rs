//! `iscsi-bench`: a fio-style load tool for iSCSI arrays. fio's options, job files and
//! output; with no target named it runs against a target it starts itself.
//!
//! Exit status: 0 when every job ran clean, 1 when a job failed (I/O errors or
//! verification), 2 when nothing ran (bad options or job files, a target that could not
//! be opened), 128 when SIGINT or SIGTERM ended the run early (as fio; the results of the
//! time run are still written).

use std::io::Write;
use std::process::ExitCode;

use bench::job::{self, Action, Invocation};
use bench::output::{human, json};
use bench::run::{self, RunOutcome};

/// I/O buffers start on a page, so `O_DIRECT` needs no bounce copy (see the module).
#[global_allocator]
static ALLOCATOR: bench::page_alloc::PageAlignedLarge = bench::page_alloc::PageAlignedLarge;

/// fio's exit value after a signal ended the run.
const EXIT_INTERRUPTED: u8 = 128;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ISCSI_BENCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: in a log file or a journal they are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("copy-offload") {
        return bench::copy_offload::main(&args[1..]);
    }
    // --server, --client, --launcher and merge (bench::cluster); None for a plain run.
    if let Some(exit) = bench::cluster::command::main(&args) {
        return exit;
    }
    let invocation = match job::parse_command_line(&args) {
        Ok(invocation) => invocation,
        Err(e) => {
            eprintln!("iscsi-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match invocation.action {
        Action::Help => print_and_exit(&job::help_text()),
        Action::Version => print_and_exit(&job::version_text()),
        Action::CmdHelp(text) => print_and_exit(&text),
        Action::ShowCmd => print_and_exit(&job::render_command_line(&invocation.jobs)),
        Action::ParseOnly => ExitCode::SUCCESS,
        Action::Run if invocation.jobs.iter().any(|j| j.rw_copy) => {
            bench::copy_jobs::main(&invocation.jobs, invocation.tool.output_formats.json)
        }
        Action::Run => run_and_report(&invocation, &args),
    }
}

fn print_and_exit(text: &str) -> ExitCode {
    println!("{}", text.trim_end());
    ExitCode::SUCCESS
}

fn run_and_report(invocation: &Invocation, args: &[String]) -> ExitCode {
    let tool = &invocation.tool;
    if tool.output_formats.normal && tool.output.is_none() {
        print_banners(&invocation.jobs);
    }
    // Every place results go is checked before the first I/O (fio opens its output first
    // too): a bad path must not cost the run.
    let output_file = match &tool.output {
        Some(path) => match std::fs::File::create(path) {
            Ok(file) => Some(file),
            Err(e) => {
                eprintln!(
                    "iscsi-bench: cannot open the output file {}: {e}",
                    path.display()
                );
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    if let Some(dir) = &tool.report_dir {
        if let Err(e) = bench::report::check_report_dir(dir) {
            eprintln!("iscsi-bench: --report: {e}");
            return ExitCode::from(2);
        }
    }
    if let Err(e) = run::interrupt::install() {
        eprintln!("iscsi-bench: installing the SIGINT/SIGTERM handler: {e}");
        return ExitCode::from(2);
    }
    let mut output_file = output_file;
    let mut print_status = |report: &bench::output::RunReport| {
        // A report every --status-interval, where the final one goes (fio does the same).
        let text = results_text(tool.output_formats, report);
        let written = match output_file.as_mut() {
            Some(file) => file.write_all(text.as_bytes()),
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes()).and_then(|()| out.flush())
            }
        };
        if let Err(e) = written {
            eprintln!("iscsi-bench: writing a status report: {e}");
        }
    };
    let outcome = match run::run(tool, &invocation.jobs, &mut print_status) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("iscsi-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(signal) = outcome.interrupted_by {
        // fio prints this on stdout; stderr keeps a JSON document on stdout whole.
        eprintln!("iscsi-bench: terminating on signal {signal}");
    }
    if let Err(e) = write_results(invocation, output_file, &outcome, args) {
        eprintln!("iscsi-bench: {e}");
        return ExitCode::from(2);
    }
    // The text report on stdout names each failed job in its header ("err=84 (...)"):
    // say it here only when that report is not in front of the user.
    let report_shown = tool.output_formats.normal && tool.output.is_none();
    for job in outcome
        .report
        .jobs
        .iter()
        .filter(|j| j.error != 0 && !report_shown)
    {
        eprintln!(
            "iscsi-bench: job {} failed (error {}): {}",
            job.name, job.error, job.error_text
        );
    }
    if outcome.interrupted_by.is_some() {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if outcome.failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Writes the results to `output_file` (opened from `--output` before the run) or stdout,
/// and the HTML report.
fn write_results(
    invocation: &Invocation,
    output_file: Option<std::fs::File>,
    outcome: &RunOutcome,
    args: &[String],
) -> Result<(), String> {
    let tool = &invocation.tool;
    let text = results_text(tool.output_formats, &outcome.report);
    match (output_file, &tool.output) {
        (Some(mut file), Some(path)) => file
            .write_all(text.as_bytes())
            .map_err(|e| format!("writing the results to {}: {e}", path.display()))?,
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| format!("writing the results: {e}"))?;
        }
    }
    if let Some(dir) = &tool.report_dir {
        let interval_ms = tool.interval_results.map_or(1000, |i| i.as_millis() as u64);
        let command_line = std::iter::once("iscsi-bench".to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let data = run::report::report_data(&outcome.report, &command_line, interval_ms);
        let page = bench::report::write_report(dir, &data).map_err(|e| e.to_string())?;
        eprintln!("iscsi-bench: report written to {}", page.display());
    }
    Ok(())
}

/// The report in every format asked for, in fio's order.
fn results_text(formats: bench::job::OutputFormats, report: &bench::output::RunReport) -> String {
    let mut text = String::new();
    if formats.normal {
        text.push_str(&human::render(report));
    }
    if formats.terse {
        text.push_str(&bench::output::terse::render(report));
    }
    if formats.json_plus {
        text.push_str(&json::to_string(report, json::Flavor::JsonPlus));
        text.push('\n');
    } else if formats.json {
        text.push_str(&json::to_string(report, json::Flavor::Json));
        text.push('\n');
    }
    text
}

/// What fio prints before a run: one line per job, its version, how many jobs start.
fn print_banners(jobs: &[bench::job::JobSpec]) {
    use bench::io::Direction;
    let mut text = String::new();
    for spec in jobs {
        let sizes = [Direction::Read, Direction::Write, Direction::Trim].map(|d| {
            let bs = spec.block_size.get(d);
            (bs.min_bytes(), bs.max_bytes())
        });
        text.push_str(&human::job_banner(
            &spec.name,
            spec.group_id,
            spec.rw.kind.fio_name(),
            sizes,
            spec.engine_name(),
            spec.iodepth,
            spec.report.significant_figures as usize,
        ));
    }
    text.push_str(&format!("{}\n", job::version_text()));
    let threads: u32 = jobs.iter().map(|s| s.numjobs.max(1)).sum();
    text.push_str(&human::starting_line(threads as usize));
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
