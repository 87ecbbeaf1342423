//! `dialtone generate-assets DIR` (hidden): shell completions and man pages
//! written from the clap definitions, so they can never describe another
//! command line than the binary's. `scripts/package` runs the binary it
//! packages and ships what this writes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Args)]
pub struct AssetsArgs {
    /// Folder to write into (created if missing): completions/ with the
    /// bash, zsh and fish files, man/ with a page per command.
    pub out: PathBuf,
}

/// The shells Debian has completion directories for.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

pub fn run(args: &AssetsArgs) -> Result<()> {
    let completions = args.out.join("completions");
    let man = args.out.join("man");
    for dir in [&completions, &man] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_completions(&completions)?;
    clap_mangen::generate_to(crate::Cli::command(), &man)
        .with_context(|| format!("writing man pages into {}", man.display()))?;
    Ok(())
}

fn write_completions(dir: &Path) -> Result<()> {
    let mut command = crate::Cli::command();
    for shell in SHELLS {
        clap_complete::generate_to(shell, &mut command, "dialtone", dir)
            .with_context(|| format!("writing {shell} completions into {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument and subcommand, hidden ones included, says what it
    /// is: the help text is what `--help`, the man pages and the shells'
    /// completions show.
    #[test]
    fn every_argument_and_subcommand_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                // clap's own --help and --version describe themselves.
                if matches!(id, "help" | "version") {
                    continue;
                }
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_name() == "help" {
                    continue;
                }
                let about = sub.get_about().map(|h| h.to_string()).unwrap_or_default();
                if about.trim().is_empty() {
                    missing.push(name.clone());
                }
                walk(sub, &name, missing);
            }
        }
        let mut command = crate::Cli::command();
        command.build();
        let mut missing = Vec::new();
        walk(&command, "dialtone", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn the_clap_definitions_are_consistent() {
        crate::Cli::command().debug_assert();
    }

    #[test]
    fn writes_completions_for_each_shell_and_a_man_page_per_command() {
        let dir = tempfile::tempdir().unwrap();
        run(&AssetsArgs {
            out: dir.path().to_path_buf(),
        })
        .unwrap();
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        for (file, needle) in [
            ("completions/dialtone.bash", "global-admin"),
            ("completions/_dialtone", "global-admin"),
            ("completions/dialtone.fish", "global-admin"),
            ("man/dialtone.1", "serve"),
            // roff escapes the hyphen.
            ("man/dialtone-token-create.1", r"global\-admin"),
            ("man/dialtone-phlem-pbx.1", "seconds"),
        ] {
            assert!(read(file).contains(needle), "{file} lacks {needle:?}");
        }
        // Hidden commands are for packaging, not for operators' manuals.
        assert!(!dir.path().join("man/dialtone-generate-assets.1").exists());
    }
}
