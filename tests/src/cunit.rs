//! libiscsi's conformance suite `iscsi-test-cu`: running a family of it against a target
//! and reading its verdicts. CUnit counts a skipped test as passed, so a run also reports
//! the `[SKIPPED]` notices it printed: they say what was not tested.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::{describe_output, run_command, TempDir};

/// One test's verdict from CUnit's results file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `Suite.Test`.
    pub name: String,
    pub passed: bool,
    /// The failed assertions (`file:line condition`), empty when passed.
    pub failures: Vec<String>,
}

fn tag_text<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = line.find(&open)? + open.len();
    let end = line[start..].find(&close)? + start;
    Some(line[start..end].trim())
}

/// Reads `CUnitAutomated-Results.xml`: one verdict per test record, suites that could not
/// even start as failed pseudo-tests named `Suite.<suite setup>`.
pub fn parse_cunit_results(xml: &str) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    let mut suite = String::new();
    let mut in_suite_failure = false;
    let mut current: Option<Verdict> = None;
    let mut failure_file = String::new();
    for line in xml.lines() {
        let line = line.trim();
        if let Some(name) = tag_text(line, "SUITE_NAME") {
            suite = name.to_string();
            if in_suite_failure {
                verdicts.push(Verdict {
                    name: format!("{suite}.<suite setup>"),
                    passed: false,
                    failures: vec!["suite failed to start".into()],
                });
            }
        } else if line.starts_with("<CUNIT_RUN_SUITE_FAILURE>") {
            in_suite_failure = true;
        } else if line.starts_with("</CUNIT_RUN_SUITE_FAILURE>") {
            in_suite_failure = false;
        } else if line.starts_with("<CUNIT_RUN_TEST_SUCCESS>") {
            current = Some(Verdict {
                name: String::new(),
                passed: true,
                failures: Vec::new(),
            });
        } else if line.starts_with("<CUNIT_RUN_TEST_FAILURE>") {
            current = Some(Verdict {
                name: String::new(),
                passed: false,
                failures: Vec::new(),
            });
        } else if let Some(test) = tag_text(line, "TEST_NAME") {
            if let Some(verdict) = current.as_mut() {
                verdict.name = format!("{suite}.{test}");
            }
        } else if let Some(file) = tag_text(line, "FILE_NAME") {
            failure_file = file.to_string();
        } else if let Some(line_number) = tag_text(line, "LINE_NUMBER") {
            failure_file = format!("{failure_file}:{line_number}");
        } else if let Some(condition) = tag_text(line, "CONDITION") {
            if let Some(verdict) = current.as_mut() {
                verdict.failures.push(format!("{failure_file} {condition}"));
            }
        } else if line.starts_with("</CUNIT_RUN_TEST_SUCCESS>")
            || line.starts_with("</CUNIT_RUN_TEST_FAILURE>")
        {
            // CUnit writes one FAILURE element per failed assertion of the same test.
            if let Some(verdict) = current.take() {
                match verdicts
                    .iter_mut()
                    .find(|v: &&mut Verdict| !verdict.passed && v.name == verdict.name)
                {
                    Some(existing) => {
                        existing.passed = false;
                        existing.failures.extend(verdict.failures);
                    }
                    None => verdicts.push(verdict),
                }
            }
        }
    }
    verdicts
}

/// What one run of a family gave.
#[derive(Debug)]
pub struct FamilyRun {
    pub verdicts: Vec<Verdict>,
    /// The `[SKIPPED]` lines it printed.
    pub skipped: Vec<String>,
    pub elapsed: Duration,
}

impl FamilyRun {
    pub fn failed(&self) -> Vec<&Verdict> {
        self.verdicts.iter().filter(|v| !v.passed).collect()
    }
}

/// Runs `iscsi-test-cu --dataloss --allow-sanitize --xml --test FAMILY` against `urls` (more than one for
/// the multipath tests), with `initiators` as its first and second initiator names (`-i`,
/// `-I`) when given: the tests that need two nexuses skip without them.
pub fn run_family(
    urls: &[&str],
    family: &str,
    initiators: Option<(&str, &str)>,
    timeout: Duration,
) -> FamilyRun {
    let scratch = TempDir::new("iscsi-test-cu").expect("scratch directory");
    let mut command = Command::new("iscsi-test-cu");
    command.args(["--dataloss", "--allow-sanitize", "--xml", "--test", family]);
    if let Some((first, second)) = initiators {
        command.args(["-i", first, "-I", second]);
    }
    command.args(urls).current_dir(scratch.path());
    let started = Instant::now();
    let output = run_command(command, timeout);
    let elapsed = started.elapsed();
    let results = std::fs::read_to_string(scratch.join("CUnitAutomated-Results.xml"))
        .unwrap_or_else(|error| {
            panic!(
                "iscsi-test-cu -t {family} wrote no results ({error}) after {elapsed:?}: {}",
                describe_output(&output)
            )
        });
    assert!(
        results.contains("</CUNIT_TEST_RUN_REPORT>"),
        "iscsi-test-cu -t {family} did not finish within {timeout:?}: {}",
        describe_output(&output)
    );
    let skipped = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains("[SKIPPED]"))
        .map(|line| line.trim().to_string())
        .collect();
    eprintln!("iscsi-test-cu -t {family}: {elapsed:?}");
    FamilyRun {
        verdicts: parse_cunit_results(&results),
        skipped,
        elapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cunit_results_parse_into_verdicts() {
        let xml = r#"<CUNIT_RESULT_LISTING>
        <CUNIT_RUN_SUITE>
          <CUNIT_RUN_SUITE_SUCCESS>
            <SUITE_NAME> Alpha </SUITE_NAME>
            <CUNIT_RUN_TEST_RECORD>
              <CUNIT_RUN_TEST_SUCCESS>
                <TEST_NAME> Good </TEST_NAME>
              </CUNIT_RUN_TEST_SUCCESS>
            </CUNIT_RUN_TEST_RECORD>
            <CUNIT_RUN_TEST_RECORD>
              <CUNIT_RUN_TEST_FAILURE>
                <TEST_NAME> Bad </TEST_NAME>
                <FILE_NAME> t.c </FILE_NAME>
                <LINE_NUMBER> 7 </LINE_NUMBER>
                <CONDITION> CU_ASSERT_EQUAL(a,0) </CONDITION>
              </CUNIT_RUN_TEST_FAILURE>
            </CUNIT_RUN_TEST_RECORD>
            <CUNIT_RUN_TEST_RECORD>
              <CUNIT_RUN_TEST_FAILURE>
                <TEST_NAME> Bad </TEST_NAME>
                <FILE_NAME> t.c </FILE_NAME>
                <LINE_NUMBER> 9 </LINE_NUMBER>
                <CONDITION> CU_FAIL </CONDITION>
              </CUNIT_RUN_TEST_FAILURE>
            </CUNIT_RUN_TEST_RECORD>
          </CUNIT_RUN_SUITE_SUCCESS>
        </CUNIT_RUN_SUITE>
        <CUNIT_RUN_SUITE>
          <CUNIT_RUN_SUITE_FAILURE>
            <SUITE_NAME> Beta </SUITE_NAME>
          </CUNIT_RUN_SUITE_FAILURE>
        </CUNIT_RUN_SUITE>
      </CUNIT_RESULT_LISTING>"#;
        let verdicts = parse_cunit_results(xml);
        assert_eq!(
            verdicts,
            vec![
                Verdict {
                    name: "Alpha.Good".into(),
                    passed: true,
                    failures: vec![],
                },
                Verdict {
                    name: "Alpha.Bad".into(),
                    passed: false,
                    failures: vec!["t.c:7 CU_ASSERT_EQUAL(a,0)".into(), "t.c:9 CU_FAIL".into()],
                },
                Verdict {
                    name: "Beta.<suite setup>".into(),
                    passed: false,
                    failures: vec!["suite failed to start".into()],
                },
            ]
        );
    }
}
