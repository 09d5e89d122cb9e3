//! Every seed and every regression input through every fuzz target, on each
//! `cargo test` (no libFuzzer needed): the corpus stays valid as the code
//! changes, and an input that once crashed a target keeps being tried.
//!
//! `cargo run -p rack-agent-fuzz --example write_seeds` rewrites the
//! generated seeds (`fuzz/seeds/`) from the agent's own encoders.

use std::path::{Path, PathBuf};

use rack_agent_fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The directories a target's inputs are read from: its seeds, its
/// regressions, and the project's own files of that kind.
pub fn input_dirs(target: &str) -> Vec<PathBuf> {
    let fuzz = fuzz_dir();
    let root = fuzz.parent().unwrap().to_path_buf();
    let mut dirs = vec![
        fuzz.join("seeds").join(target),
        fuzz.join("regressions").join(target),
    ];
    match target {
        "redfish_json" => dirs.push(root.join("tests/fixtures/redfish")),
        "config" | "policy" => dirs.push(root.join("config")),
        _ => {}
    }
    dirs
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.map(Result::unwrap) {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.file_name().is_some_and(|n| n != "README.md") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn every_seed_and_regression_input_passes_every_target() {
    for (name, target) in TARGETS {
        let inputs: Vec<PathBuf> = input_dirs(name).iter().flat_map(|d| files(d)).collect();
        assert!(inputs.len() >= 3, "{name}: fewer than 3 seeds");
        for path in &inputs {
            let data = std::fs::read(path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(
                outcome.is_ok(),
                "{name} fails on {} (run it alone: scripts/fuzz.sh repro {name} {})",
                path.display(),
                path.display()
            );
        }
    }
}

/// The generated config and policy seeds load: a seed the loader refuses
/// would only teach the fuzzer the first error.
#[test]
fn config_and_policy_seeds_load() {
    for f in files(&fuzz_dir().join("seeds/config")) {
        let text = std::fs::read_to_string(&f).unwrap();
        rack_agent::config::Config::parse(&text, &f).unwrap_or_else(|e| panic!("{e}"));
    }
    for f in files(&fuzz_dir().join("seeds/policy")) {
        let text = std::fs::read_to_string(&f).unwrap();
        rack_agent::policy::Policy::parse(&text, &f).unwrap_or_else(|e| panic!("{e}"));
    }
}
