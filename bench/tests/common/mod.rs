//! What the bench crate's integration tests share: the tests crate's rule for a missing
//! tool (`system_tests::require_tools!`, which this crate cannot depend on: the tests crate
//! depends on it), skipped loudly on a developer machine, a failure under CI.

/// `true` when `present`; otherwise prints a loud `SKIPPED:` notice naming `tool` and
/// returns `false`, or panics when `CI` is set (`true`, `1`, `yes`): `scripts/install-deps.sh`
/// installs the anchors, so a green CI run must mean they were used.
pub fn require_tool(tool: &str, present: bool) -> bool {
    if present {
        return true;
    }
    let in_ci = std::env::var("CI")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
        .unwrap_or(false);
    if in_ci {
        panic!("tool missing under CI: {tool} (run scripts/install-deps.sh)");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED: {tool} is not installed (install with scripts/install-deps.sh; under CI=true this fails) !!!!!!!!\n"
    );
    false
}
