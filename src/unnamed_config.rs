//! A command run without a configuration on a machine the package set up.
//!
//! Without `--config` dialtone works on `./dialtone.db`, made on first use:
//! right for a first try in a folder of one's own, but on an installed node
//! an operator who forgets the flag gets a token no node knows, an upgrade
//! check that "passes" on an empty database, a migration of nothing. The
//! installed config file is what tells the two apart.

use std::path::Path;

/// The config file the .deb installs.
pub const INSTALLED_CONFIG: &str = "/etc/dialtone/dialtone.toml";

/// The database a command named no other one uses (`database.url`'s default).
pub const DEFAULT_DATABASE: &str = "dialtone.db";

/// Why a command that named no configuration (`named` false: no
/// `--config`, `DIALTONE_CONFIG`, `--database-url` or
/// `DIALTONE_DATABASE__URL`) must not run: `default_database` is not there
/// yet, so it would be made empty, while `installed_config` says the
/// machine's real one is elsewhere. `None` where it may run.
pub fn refusal(named: bool, default_database: &Path, installed_config: &Path) -> Option<String> {
    // `exists` follows links, and a dangling one is still "something
    // there" that the operator put: only a missing name is refused.
    let there = |path: &Path| path.symlink_metadata().is_ok();
    if named || there(default_database) || !there(installed_config) {
        return None;
    }
    let installed = installed_config.display();
    Some(format!(
        "no --config given: this would create a new empty database ./{}; this machine has \
         {installed}: run `dialtone --config {installed} ...` or set DIALTONE_CONFIG",
        default_database.file_name().map_or_else(
            || default_database.display().to_string(),
            |name| { name.to_string_lossy().into_owned() }
        )
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_only_without_a_name_or_a_database_where_the_package_installed_a_config() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("dialtone.db");
        let installed = dir.path().join("etc-dialtone.toml");
        // No installed config: a first try anywhere makes its database.
        assert_eq!(refusal(false, &database, &installed), None);
        std::fs::write(&installed, "").unwrap();
        let refused = refusal(false, &database, &installed).expect("refused");
        assert!(
            refused.contains("no --config given")
                && refused.contains("./dialtone.db")
                && refused.contains(&format!("--config {}", installed.display()))
                && refused.contains("DIALTONE_CONFIG"),
            "{refused}"
        );
        // A configuration or database named on the command line or in the
        // environment is what the operator meant.
        assert_eq!(refusal(true, &database, &installed), None);
        // A folder with its own database is one the operator works in.
        std::fs::write(&database, "").unwrap();
        assert_eq!(refusal(false, &database, &installed), None);
    }

    /// A first start and the commands that need no data may make or
    /// describe the default database; every other command works on data
    /// that must be there already.
    #[test]
    fn only_first_starts_and_commands_without_data_go_without_a_config() {
        use clap::Parser;
        let wants_data = |args: &[&str]| {
            let cli = crate::Cli::try_parse_from([&["dialtone"][..], args].concat()).unwrap();
            crate::works_on_an_existing_database(&cli.command)
        };
        for free in [
            &["serve"][..],
            &["demo"],
            &["check-config"],
            &["phlem", "fetch", "tftp://127.0.0.1:6969/x.cfg"],
            &[
                "phlem",
                "run",
                "--target",
                "127.0.0.1:6969",
                "--phones",
                "demo",
            ],
        ] {
            assert!(!wants_data(free), "{free:?}");
        }
        for refused in [
            &["migrate"][..],
            &["token", "list"],
            &[
                "token",
                "create",
                "--scope",
                "global-admin",
                "--name",
                "ops",
            ],
            &["export", "-"],
            &["import", "x.csv"],
            &["render", "--all", "--out", "out"],
            &["lookup", "+15550100", "--tenant", "acme"],
            &["reload-all"],
            &["rekey", "--new-key-file", "k"],
            &[
                "phlem",
                "run",
                "--target",
                "127.0.0.1:6969",
                "--phones",
                "database",
            ],
        ] {
            assert!(wants_data(refused), "{refused:?}");
        }
    }
}
