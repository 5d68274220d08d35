//! The `sql_tenant` target on fixed inputs: the seed corpus, every seed cut
//! in half, pairs of seeds glued together, and random bytes.

#![cfg(feature = "sql")]

mod common;

use std::path::PathBuf;

use common::Rng;
use vfs_fuzz::sql_tenant::run;

fn seeds() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds/sql_tenant");
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("seed directory")
        .map(|entry| {
            let path = entry.expect("seed entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("seed file"))
        })
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 10, "seed corpus missing");
    seeds
}

fn check(label: &str, input: &[u8]) {
    if let Err(finding) = run(input) {
        panic!("{label}: {finding}");
    }
}

#[test]
fn seed_corpus_runs_without_findings() {
    for (name, seed) in seeds() {
        check(&name, &seed);
    }
}

#[test]
fn cut_and_glued_seeds_run_without_findings() {
    let seeds = seeds();
    for (name, seed) in &seeds {
        check(&format!("first half of {name}"), &seed[..seed.len() / 2]);
        check(&format!("second half of {name}"), &seed[seed.len() / 2..]);
    }
    for pair in seeds.windows(2) {
        let glued = [pair[0].1.as_slice(), pair[1].1.as_slice()].concat();
        check(&format!("{} + {}", pair[0].0, pair[1].0), &glued);
    }
}

#[test]
fn random_bytes_and_odd_text_run_without_findings() {
    for seed in 0..50 {
        let input = Rng::new(seed).bytes(300);
        check(&format!("random seed {seed}"), &input);
    }
    let odd: [&[u8]; 6] = [
        b"",
        b"\0",
        b"SELECT 1;\0SELECT 2",
        b"\xff\xfe SELECT 'caf\xc3\xa9'",
        b"/* unterminated",
        b"SELECT '",
    ];
    for input in odd {
        check(&format!("{input:?}"), input);
    }
}

#[test]
fn fault_directive_is_read_only_at_the_start() {
    use vfs_fuzz::sql_tenant::fault_directive;
    assert_eq!(fault_directive("-- fail_after 3\nSELECT 1"), Some(3));
    assert_eq!(fault_directive("-- fail_after 0"), Some(0));
    assert_eq!(fault_directive("-- fail_after 99999999"), Some(10_000));
    assert_eq!(fault_directive("-- fail_after x"), None);
    assert_eq!(fault_directive("SELECT 1; -- fail_after 3"), None);
    assert_eq!(fault_directive(""), None);
}

#[test]
fn store_faults_at_every_call_of_a_commit_leave_a_sound_tenant() {
    for calls in 0..30 {
        let sql = format!(
            "-- fail_after {calls}\nCREATE TABLE f (x);
             INSERT INTO f SELECT randomblob(3000) FROM
               (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 40) SELECT i FROM c);
             UPDATE f SET x = zeroblob(100) WHERE rowid % 2 = 0;"
        );
        check(&format!("fail_after {calls}"), sql.as_bytes());
    }
}
