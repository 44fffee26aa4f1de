//! Fuzz target `config`: the appliance configuration (`config::parse`: TOML
//! via `toml_edit`, `--set` overrides, validation with line-numbered
//! problems).
//!
//! Input: a config file (UTF-8; other bytes are skipped). A line that is
//! exactly `#%set` ends the file text: every later line is one `--set
//! KEY=VALUE` override (at most 16).
//!
//! Invariants checked (beyond "never panics"):
//! * parsing is deterministic (same input, same `Config` or same problems);
//! * a refusal lists at least one problem, each with a non-empty message and
//!   coming from the file or from `--set`;
//! * a problem's line, when known, is a line of the file (1..=lines+1), and
//!   `--set` problems carry no line;
//! * the errors display as exactly one line per problem (operators read
//!   them in a terminal and in logs), each starting with its origin.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::config::{self, OVERRIDE_LABEL};

const LABEL: &str = "fuzz.toml";
const MARKER: &str = "\n#%set\n";

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (text, overrides): (&str, Vec<String>) = match input.find(MARKER) {
        Some(i) => (
            &input[..i + 1],
            input[i + MARKER.len()..]
                .lines()
                .take(16)
                .map(str::to_owned)
                .collect(),
        ),
        None => (input, Vec::new()),
    };

    let first = config::parse(LABEL, text, &overrides);
    let second = config::parse(LABEL, text, &overrides);
    assert_eq!(first, second, "config parsing is not deterministic");

    let Err(errors) = first else {
        return;
    };
    assert!(!errors.0.is_empty(), "refused without a problem");
    let lines = text.lines().count() + 1;
    for p in &errors.0 {
        assert!(!p.message.is_empty(), "problem without a message: {p:?}");
        if p.file == OVERRIDE_LABEL {
            assert_eq!(p.line, None, "--set problem with a line: {p:?}");
        } else {
            assert_eq!(p.file, LABEL, "problem from nowhere: {p:?}");
            if let Some(l) = p.line {
                assert!(
                    (1..=lines).contains(&l),
                    "line {l} outside the file ({lines} lines): {p:?}"
                );
            }
        }
    }
    let shown = errors.to_string();
    let shown_lines: Vec<&str> = shown.split('\n').collect();
    assert_eq!(
        shown_lines.len(),
        errors.0.len(),
        "problems do not display one per line:\n{shown}"
    );
    for (line, p) in shown_lines.iter().zip(&errors.0) {
        assert!(
            line.starts_with(&p.file),
            "{line:?} does not start with {}",
            p.file
        );
    }
});
