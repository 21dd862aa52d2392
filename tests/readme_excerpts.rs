//! The README's server code is excerpted from the examples, which CI compiles: every line
//! of those excerpts must still be found in its example, so the README cannot drift from
//! code that builds. Lines are compared without whitespace and without `//` comments, so
//! an excerpt may wrap lines differently and comment them in its own words.

use std::path::Path;

/// Each README heading whose first Rust block is an excerpt, and the example it comes from.
const EXCERPTS: [(&str, &str); 3] = [
    ("### axum", "examples/axum.rs"),
    ("### tonic", "examples/tonic.rs"),
    ("### Plain hyper", "examples/hyper.rs"),
];

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// `line` without its `//` comment and without any whitespace.
fn code_of(line: &str) -> String {
    let code = match line.find("//") {
        // A `//` inside a string literal (an even number of quotes before it) is code.
        Some(at) if line[..at].matches('"').count() % 2 == 0 => &line[..at],
        _ => line,
    };
    code.split_whitespace().collect()
}

/// The first `rust` code block after `heading`.
fn block_after<'a>(readme: &'a str, heading: &str) -> &'a str {
    let from = readme
        .lines()
        .position(|line| line.starts_with(heading))
        .unwrap_or_else(|| panic!("no heading {heading:?} in the README"));
    let mut lines = readme.lines().skip(from);
    lines
        .by_ref()
        .find(|line| line.starts_with("```rust"))
        .unwrap_or_else(|| panic!("no Rust block after {heading:?}"));
    let first = lines.next().expect("a block with a line");
    let start = first.as_ptr() as usize - readme.as_ptr() as usize;
    let end = readme[start..].find("\n```").expect("a closed block");
    &readme[start..start + end]
}

#[test]
fn server_excerpts_match_their_examples() {
    let readme = read("README.md");
    let mut drifted = Vec::new();
    for (heading, example) in EXCERPTS {
        let source: String = read(example).lines().map(code_of).collect();
        for line in block_after(&readme, heading).lines() {
            let code = code_of(line);
            if !code.is_empty() && !source.contains(&code) {
                drifted.push(format!("{example}: {}", line.trim()));
            }
        }
    }
    assert!(
        drifted.is_empty(),
        "README lines not found in their example:\n{}",
        drifted.join("\n")
    );
}
