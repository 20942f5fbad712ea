//! The README's Rust samples are compiled code: every ```rust block of README.md must be one
//! of the `// README: NAME` ... `// README END` regions of `examples/readme.rs` (which
//! `cargo test` and CI build, with and without `tls`), character for character once the
//! region's indentation is removed. A sample edited in one place only fails here.

/// The ```rust blocks of `markdown` (any info string starting with `rust`), with the line
/// each starts on.
fn rust_blocks(markdown: &str) -> Vec<(usize, String)> {
    enum State {
        Text,
        Rust(usize, String),
        Other,
    }
    let mut blocks = Vec::new();
    let mut state = State::Text;
    for (i, line) in markdown.lines().enumerate() {
        // A fence's info string has no backtick (CommonMark); else it is inline code.
        let fence = line
            .trim_start()
            .strip_prefix("```")
            .filter(|info| !info.contains('`'));
        state = match (state, fence) {
            (State::Text, Some(info)) => {
                if info.split(',').next().unwrap_or("").trim() == "rust" {
                    State::Rust(i + 2, String::new())
                } else {
                    State::Other
                }
            }
            (State::Text, None) => State::Text,
            (State::Rust(start, text), Some(_)) => {
                blocks.push((start, text));
                State::Text
            }
            (State::Rust(start, mut text), None) => {
                text.push_str(line);
                text.push('\n');
                State::Rust(start, text)
            }
            (State::Other, Some(_)) => State::Text,
            (State::Other, None) => State::Other,
        };
    }
    assert!(matches!(state, State::Text), "unclosed code block");
    blocks
}

/// The `// README: NAME` regions of `source`, without their common indentation.
fn regions(source: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in source.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("// README: ") {
            assert!(current.is_none(), "nested region {name}");
            current = Some((name.to_string(), Vec::new()));
        } else if t == "// README END" {
            let (name, lines) = current.take().expect("README END without a start");
            out.push((name, dedent(&lines)));
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line);
        }
    }
    assert!(current.is_none(), "unclosed region");
    out
}

fn dedent(lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| format!("{}\n", l.get(indent..).unwrap_or("")))
        .collect()
}

#[test]
fn every_readme_sample_is_compiled_code() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/readme.rs");
    let blocks = rust_blocks(readme);
    let regions = regions(example);
    assert!(blocks.len() >= 5, "README samples: {}", blocks.len());
    for (line, block) in &blocks {
        assert!(
            regions.iter().any(|(_, r)| r == block),
            "README.md line {line}: this ```rust block is not a region of examples/readme.rs \
             (copy the compiled region, without its indentation):\n{block}"
        );
    }
    for (name, region) in &regions {
        assert!(
            blocks.iter().any(|(_, b)| b == region),
            "examples/readme.rs region {name} is not in README.md:\n{region}"
        );
    }
}

#[test]
fn the_checker_reads_fences_and_regions() {
    let md = "text\n```sh\nls\n```\n```rust\nlet a = 1;\n\n```\n```` ```rust ````\n```rust,ignore\nb\n```\n";
    assert_eq!(
        rust_blocks(md),
        vec![(6, "let a = 1;\n\n".into()), (11, "b\n".into())]
    );
    let src = "fn f() {\n    // README: x\n    let a = 1;\n\n    // README END\n}\n";
    assert_eq!(regions(src), vec![("x".into(), "let a = 1;\n\n".into())]);
}
