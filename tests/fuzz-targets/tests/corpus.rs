//! Replays every fuzz target over its committed corpus (`fuzz/corpus/<target>/`) and the
//! in-memory seeds, so regressions show on a stable toolchain without cargo-fuzz.
//!
//! `TIDINGS_WRITE_FUZZ_CORPUS=1` (re)writes the `seed-*` files first.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use tidings_fuzz_targets::{TARGETS, seeds};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

#[test]
fn every_target_survives_its_corpus() {
    let seeds = seeds::all();
    if std::env::var_os("TIDINGS_WRITE_FUZZ_CORPUS").is_some() {
        for seed in &seeds {
            let dir = corpus_dir(seed.target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{}", seed.name)), &seed.bytes).unwrap();
        }
    }
    for (target, run) in TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(
            files.iter().any(|p| p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))),
            "{target}: no committed seeds in {}",
            dir.display()
        );
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            // A panic names the input, so it can be reproduced with `cargo fuzz run`.
            eprintln!("{target}: {}", file.display());
            run(&bytes);
        }
        let fresh: Vec<_> = seeds.iter().filter(|s| s.target == *target).collect();
        assert!(!fresh.is_empty(), "{target}: no seeds");
        for seed in fresh {
            run(&seed.bytes);
        }
        println!("{target}: {} corpus files replayed", files.len());
    }
}

#[test]
fn every_target_has_a_cargo_fuzz_binary() {
    let manifest =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/Cargo.toml"))
            .expect("fuzz/Cargo.toml");
    for (target, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "fuzz/Cargo.toml has no [[bin]] {target}"
        );
    }
}

#[test]
fn valid_seeds_pass_validation() {
    // The seeds are meant to reach deep: the signed requests must be accepted, or the
    // fuzzer would start from inputs the relay throws away at the first check.
    use prost::Message;
    use tidings_fuzz_targets::{Apps, NOW_S, relay_keys};
    use tidings_proto::v1::{StoreRequest, SubscribeRequest};
    use tidings_relay::{config::Limits, mailbox::validate, relay_service};
    let seeds = seeds::all();
    let get = |name: &str| {
        seeds
            .iter()
            .find(|s| s.target == "request" && s.name == name)
            .map(|s| s.bytes[1..].to_vec())
            .unwrap()
    };
    let store = StoreRequest::decode(get("store-owner-signed").as_slice()).unwrap();
    validate::store(store, &Limits::default(), NOW_S).unwrap();
    let sub = SubscribeRequest::decode(get("subscribe").as_slice()).unwrap();
    relay_service::validate_subscribe(&sub, &relay_keys(), &Apps, &Limits::default(), NOW_S).unwrap();
}
