//! Replays every committed fuzz input through its target: the corpus
//! (`fuzz/corpus/<target>/`, seeds and what the fuzzer found worth
//! keeping) and every crash reproducer (`fuzz/artifacts/<target>/`). A
//! reproducer is kept after its bug is fixed, so the bug cannot come back
//! unnoticed. Runs on stable in `cargo test`, without libFuzzer.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The files of `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_target_has_a_fuzz_target_and_a_corpus() {
    for (name, _) in xdpsec_fuzz_harness::TARGETS {
        let target = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(target.is_file(), "{} is missing", target.display());
        let corpus = fuzz_dir().join("corpus").join(name);
        assert!(
            !files(&corpus).is_empty(),
            "{} is empty: run `cargo run -p xdpsec-fuzz-harness --bin fuzz-seeds`",
            corpus.display()
        );
    }
    // And no fuzz target without a body here (the other direction).
    for f in files(&fuzz_dir().join("fuzz_targets")) {
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        assert!(
            xdpsec_fuzz_harness::target(stem).is_some(),
            "fuzz target {stem} is not in TARGETS"
        );
    }
}

#[test]
fn corpora_and_crash_reproducers_replay() {
    let mut total = 0;
    for (name, body) in xdpsec_fuzz_harness::TARGETS {
        for kind in ["corpus", "artifacts"] {
            for file in files(&fuzz_dir().join(kind).join(name)) {
                let data = std::fs::read(&file).expect("read a fuzz input");
                let run = std::panic::catch_unwind(|| body(&data));
                assert!(run.is_ok(), "{} fails again", file.display());
                total += 1;
            }
        }
    }
    assert!(total > 0);
    eprintln!("replayed {total} inputs");
}
