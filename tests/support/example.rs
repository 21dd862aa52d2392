//! The binaries of `examples/`, for tests that run them as child processes.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The built example `name`, which must be newer than every file under `sources` (paths from
/// the crate's root). `cargo test` builds every example first; `cargo test --test NAME` does
/// not, and an example older than its sources would test old code without a word.
pub fn example_binary(name: &str, sources: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/<test>-<hash> → target/debug/examples/<name>
    let debug = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = debug
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let advice = format!("run `cargo build --example {name}` (plain `cargo test` builds it)");
    assert!(binary.exists(), "{} is missing: {advice}", binary.display());
    let built = modified(&binary);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let newer = sources
        .iter()
        .flat_map(|source| files(&root.join(source)))
        .find(|source| modified(source) > built);
    if let Some(source) = newer {
        panic!(
            "{} is older than {}: {advice}",
            binary.display(),
            source.display()
        );
    }
    binary
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// `path` itself if it is a file, else every file under it.
fn files(path: &Path) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    std::fs::read_dir(path)
        .unwrap()
        .flat_map(|entry| files(&entry.unwrap().path()))
        .collect()
}
