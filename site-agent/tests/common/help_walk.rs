//! Walks a binary's subcommand tree through its own `--help` output (shared by the `help` tests
//! of site-agent, aggregator and certs via `#[path]`): every command's help must show an example
//! invocation of that very command, the top level must document the exit codes, and `--version`
//! must name the protocol version the binary speaks.

use std::path::Path;
use std::process::Command;

fn help(bin: &Path, path: &[String]) -> String {
    let out = Command::new(bin).args(path).arg("--help").output().unwrap();
    assert!(
        out.status.success(),
        "{} {} --help failed: {}",
        bin.display(),
        path.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Subcommand names listed under `Commands:` (without clap's own `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // Descriptions that wrap are indented further than the names.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|n| n != "help")
        .collect()
}

/// Checks every command of `bin` (name as typed by a user, e.g. "site-agent"); returns the
/// command paths checked, for the caller to assert coverage.
pub fn check_all(bin: &Path, name: &str, protocol_version: u32) -> Vec<String> {
    let out = Command::new(bin).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{name} --version failed");
    assert!(
        version.contains(&format!("protocol v{protocol_version}")),
        "{name} --version does not name protocol v{protocol_version}: {version:?}"
    );
    let top = help(bin, &[]);
    assert!(
        top.contains("Exit codes:"),
        "{name} --help does not document its exit codes:\n{top}"
    );
    let mut checked = Vec::new();
    let mut todo: Vec<Vec<String>> = subcommands(&top).into_iter().map(|s| vec![s]).collect();
    while let Some(path) = todo.pop() {
        let text = help(bin, &path);
        // An example is a line under an "Example(s):" heading that runs this very command
        // (directly or through `cargo run … --`).
        let invocation = format!("{name} {}", path.join(" "));
        let cargo = format!("-- {}", path.join(" "));
        let has_example = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("Example"))
            .any(|l| {
                let l = l.trim_start();
                l.starts_with(&invocation) || (l.starts_with("cargo run") && l.contains(&cargo))
            });
        assert!(
            has_example,
            "`{invocation} --help` shows no example line starting with {invocation:?}:\n{text}"
        );
        for s in subcommands(&text) {
            let mut p = path.clone();
            p.push(s);
            todo.push(p);
        }
        checked.push(path.join(" "));
    }
    checked.sort();
    checked
}

/// Every `name …` command in README.md's shell blocks (also `cargo run … -p <crate> -- …`) names
/// an existing subcommand, and each `--flag` it uses appears in that subcommand's `--help`; so
/// the deployment walkthrough cannot drift from the binaries. Returns how many lines were checked.
pub fn check_readme(bin: &Path, name: &str) -> usize {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let mut in_block = false;
    let mut checked = 0;
    // Joined continuation lines (`\` at the end).
    let mut lines: Vec<String> = Vec::new();
    let mut pending = String::new();
    for l in text.lines() {
        if l.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let l = l.split(" #").next().unwrap_or("").trim();
        if let Some(head) = l.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(l);
        lines.push(std::mem::take(&mut pending));
    }
    let cargo_prefix = format!("-p {name} -- ");
    for line in lines {
        let cmd = if let Some(rest) = line.strip_prefix(&format!("{name} ")) {
            rest.to_string()
        } else if line.starts_with("cargo run")
            && let Some(i) = line.find(&cargo_prefix)
        {
            line[i + cargo_prefix.len()..].to_string()
        } else {
            continue;
        };
        let words: Vec<&str> = cmd.split_whitespace().collect();
        // The subcommand path: leading words that are listed as subcommands.
        let mut path: Vec<String> = Vec::new();
        let mut text = help(bin, &[]);
        for w in &words {
            if subcommands(&text).iter().any(|s| s == w) {
                path.push(w.to_string());
                text = help(bin, &path);
            } else {
                break;
            }
        }
        assert!(
            !path.is_empty(),
            "README.md: `{line}` names no subcommand of {name}"
        );
        for w in &words[path.len()..] {
            if let Some(flag) = w.strip_prefix("--") {
                let flag = flag.split('=').next().unwrap();
                assert!(
                    text.contains(&format!("--{flag} ")) || text.contains(&format!("--{flag}\n")),
                    "README.md: `{line}`: {name} {} has no --{flag}:\n{text}",
                    path.join(" ")
                );
            }
        }
        checked += 1;
    }
    checked
}
