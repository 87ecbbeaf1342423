// `sqlx::migrate!` embeds the migration files at compile time, but cargo
// does not know that: without this, a migration added to a built tree is
// left out until something else makes the crate compile again.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
