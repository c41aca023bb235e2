//! Writes the seed corpus: `fuzz/corpus/<target>/seed-<name>` for every
//! seed of `xdpsec_fuzz_harness::seeds`. Run it after changing a target's
//! input layout: `cargo run -p xdpsec-fuzz-harness --bin fuzz-seeds`.
//! Every seed comes out the same each time except the certificate ones,
//! whose ECDSA signatures are randomised.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let mut written = 0;
    for (target, name, bytes) in xdpsec_fuzz_harness::seeds::all() {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), &bytes)?;
        written += 1;
    }
    for (target, _) in xdpsec_fuzz_harness::TARGETS {
        std::fs::create_dir_all(corpus.join(target))?;
    }
    println!("wrote {written} seeds under {}", corpus.display());
    Ok(())
}
