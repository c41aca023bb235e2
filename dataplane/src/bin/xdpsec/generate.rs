//! `xdpsec __generate man|completions DIR`: man pages (one per command:
//! `xdpsec.1`, `xdpsec-dataplane.1`, ...) and bash, zsh and fish
//! completions, from the same clap definitions that parse the command
//! line, so the package's pages never describe another binary. Hidden and
//! outside the clap tree: `cargo xtask deb` is its only caller, and the
//! CLI's own parsing stays as it is.

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::Path;
use std::process::ExitCode;

/// The word that selects the generator in `argv[1]`.
const GENERATE: &str = "__generate";

/// Runs the generator if the command line asks for it, else `None`.
pub fn intercept<C: CommandFactory>() -> Option<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some(GENERATE) {
        return None;
    }
    let result = match args.get(1..).unwrap_or_default() {
        [what, dir] if what == "man" => man_pages(C::command(), Path::new(dir)),
        [what, dir] if what == "completions" => completions(C::command(), Path::new(dir)),
        _ => Err(format!("usage: xdpsec {GENERATE} man|completions DIR")),
    };
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdpsec {GENERATE}: {e}");
            ExitCode::FAILURE
        }
    })
}

fn man_pages(command: clap::Command, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    clap_mangen::generate_to(command, dir)
        .map_err(|e| format!("writing man pages to {}: {e}", dir.display()))
}

fn completions(mut command: clap::Command, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command, "xdpsec", dir)
            .map_err(|e| format!("writing {shell} completions to {}: {e}", dir.display()))?;
    }
    Ok(())
}
