//! The `sql_tenant` target on fixed inputs: the seed corpus, every seed cut
//! in half, pairs of seeds glued together, random bytes, and each directive
//! (cached steps across schema changes, long names, stores that fail, panic
//! or hang) at every store call of a small workload and in seeded random
//! mixes.

#![cfg(feature = "sql")]

mod common;

use std::path::PathBuf;

use std::time::{Duration, Instant};

use common::Rng;
use vfs_fuzz::sql_tenant::{
    MAX_STEPS, Report, Step, StepKind, StoreFault, expand_long, run, run_with_report, steps,
    store_directive,
};

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

fn report(label: &str, input: &str) -> Report {
    run_with_report(input.as_bytes()).unwrap_or_else(|finding| panic!("{label}: {finding}"))
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

#[test]
fn panic_and_hang_directives_are_read_only_at_the_start() {
    assert_eq!(
        store_directive("-- panic_after 4\nSELECT 1"),
        Some(StoreFault::Panic(4))
    );
    assert_eq!(
        store_directive("-- hang_after 0"),
        Some(StoreFault::Hang(0))
    );
    assert_eq!(
        store_directive("-- hang_after 123456"),
        Some(StoreFault::Hang(10_000))
    );
    assert_eq!(
        store_directive("-- fail_after 2"),
        Some(StoreFault::Fail(2))
    );
    assert_eq!(store_directive("-- panic_after"), None);
    assert_eq!(store_directive("SELECT 1;\n-- hang_after 1"), None);
    assert_eq!(
        vfs_fuzz::sql_tenant::fault_directive("-- panic_after 3"),
        None
    );
}

#[test]
fn step_markers_and_long_names_are_parsed() {
    let input = "-- fail_after 1\nCREATE TABLE t (x);\n--> query\nSELECT * FROM t\n\
                 -->execute more words\nINSERT INTO t VALUES (1)\n--> whatever\nDROP TABLE t";
    let parsed = steps(input);
    let kinds: Vec<StepKind> = parsed.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            StepKind::Exec,
            StepKind::Query,
            StepKind::Execute,
            StepKind::Exec
        ]
    );
    assert_eq!(parsed[0].sql, "-- fail_after 1\nCREATE TABLE t (x);\n");
    assert_eq!(parsed[1].sql, "SELECT * FROM t\n");
    assert_eq!(parsed[3].sql, "DROP TABLE t");
    // No marker: the whole input is one script, as before the markers.
    assert_eq!(
        steps("SELECT 1; -->x"),
        [Step {
            kind: StepKind::Exec,
            sql: "SELECT 1; -->x"
        }]
    );
    let many = "--> query\nSELECT 1\n".repeat(40);
    let parsed = steps(&many);
    assert_eq!(parsed.len(), MAX_STEPS);
    assert!(parsed[MAX_STEPS - 1].sql.contains("--> query"));

    assert_eq!(expand_long("SELECT 1"), "SELECT 1");
    let long = expand_long("SELECT '{{2}}' AS \"{{0}}\", {{x}}, {{12345}}");
    assert!(long.starts_with("SELECT 'abcdefghijklmnopqrstuvwxyzabc"));
    assert!(long.ends_with("uvwxyzabcdefghijklmnopqrst' AS \"\", {{x}}, {{12345}}"));
    assert_eq!(
        long.len(),
        "SELECT '' AS \"\", {{x}}, {{12345}}".len() + 2048
    );
    // Expansions stop at their total budget.
    assert!(expand_long(&"{{1100}}".repeat(10)).len() <= 3 << 20);
}

/// A table whose shape changes under cached `SELECT *` statements, with the
/// co-tenant's secret read between every two steps.
const SCHEMA_DANCE: &str = "CREATE TABLE t (x, y, z); INSERT INTO t VALUES (1, 2, 3);
--> query
SELECT * FROM t
--> query
SELECT *, rowid FROM t WHERE x IS NOT NULL ORDER BY 1
--> execute
INSERT INTO t (x) VALUES (randomblob(40))
--> exec
ALTER TABLE t DROP COLUMN z
--> exec
ALTER TABLE t DROP COLUMN y
--> exec
ALTER TABLE t ADD COLUMN w DEFAULT 'new'
--> exec
ALTER TABLE t RENAME COLUMN x TO renamed
--> exec
DROP TABLE t
--> exec
CREATE TABLE t (only_one)
--> exec
ALTER TABLE t ADD COLUMN a; ALTER TABLE t ADD COLUMN b; ALTER TABLE t ADD COLUMN c; INSERT INTO t VALUES (1, 2, 3, 4)
--> exec
DROP TABLE t; CREATE VIEW t AS SELECT 1 AS v, 2 AS w, 3, 4, 5, 6, 7, 8
";

#[test]
fn cached_statements_follow_every_schema_change() {
    let r = report("schema dance", SCHEMA_DANCE);
    assert!(r.leak_checked);
    // Both queries ran after each later step, until DROP TABLE.
    assert!(r.results >= 12, "{r:?}");
    assert!(r.calls >= 30, "{r:?}");
    assert_eq!(r.acked, 12, "{r:?}");
    assert!(!r.poisoned);
}

#[test]
fn long_names_and_messages_never_break_the_instance() {
    let inputs = [
        "--> query\nSELECT '{{1000}}' AS \"{{20}}\"",
        "--> query\nSELECT * FROM \"{{1023}}\"",
        "--> query\nSELECT {{1023}}",
        "SELECT '{{1100}}'",
        "CREATE TABLE \"{{60}}\" (\"{{60}}x\", \"{{60}}y\");\n--> query\nSELECT * FROM \"{{60}}\"\n\
         --> exec\nALTER TABLE \"{{60}}\" RENAME COLUMN \"{{60}}x\" TO \"{{200}}\"",
        // A message built at run time, past the 1 MiB at which it is cut.
        "--> query\nSELECT json_extract('{}', printf('%.*c', 1500000, 'x'))",
        "CREATE TABLE t (v);\nCREATE TRIGGER tr BEFORE INSERT ON t \
         BEGIN SELECT raise(ABORT, printf('%.*c', 1048500, 'x')); END;\n--> execute\nINSERT INTO t VALUES (1)",
        "--> query\nSELECT raise(ABORT, '{{900}}')",
        "CREATE TABLE t (v CHECK (length(v) < 3) CONSTRAINT \"{{500}}\");\n--> execute\nINSERT INTO t VALUES ('long')",
    ];
    let mut longest = 0;
    for input in inputs {
        longest = longest.max(report(input, input).longest_text);
    }
    assert!(longest > 1 << 20, "longest text {longest}");
}

/// A workload of several commits (some through the journal), in steps.
const COMMITS: &str = "CREATE TABLE f (k INTEGER PRIMARY KEY, x);
--> execute
INSERT INTO f (x) VALUES (randomblob(3000))
--> exec
INSERT INTO f (x) SELECT randomblob(3000) FROM f; INSERT INTO f (x) SELECT x FROM f
--> query
SELECT k, length(x) FROM f ORDER BY k DESC LIMIT 3
--> exec
BEGIN; UPDATE f SET x = zeroblob(100) WHERE k % 2 = 0; DELETE FROM f WHERE k > 5; COMMIT
--> exec
VACUUM
";

#[test]
fn panicking_stores_at_every_call_poison_only_the_tenant_and_lose_no_acknowledged_commit() {
    let mut poisoned = 0;
    for calls in 0..24 {
        let input = format!("-- panic_after {calls}\n{COMMITS}");
        let r = report(&format!("panic_after {calls}"), &input);
        assert_eq!(r.panics > 0, r.poisoned, "panic_after {calls}: {r:?}");
        poisoned += usize::from(r.poisoned);
    }
    // Most positions fall inside the workload.
    assert!(poisoned >= 15, "only {poisoned} inputs reached a panic");
}

#[test]
fn hanging_stores_cost_milliseconds_and_heal_after_a_reopen() {
    let mut hung = 0;
    for calls in (0..24).step_by(2) {
        let input = format!("-- hang_after {calls}\n{COMMITS}");
        let started = Instant::now();
        let r = report(&format!("hang_after {calls}"), &input);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "hang_after {calls} took {took:?}"
        );
        hung += usize::from(r.hangs > 0);
    }
    assert!(hung >= 8, "only {hung} inputs reached a hang");
}

#[test]
fn failing_stores_in_steps_lose_no_acknowledged_commit() {
    for calls in 0..24 {
        let input = format!("-- fail_after {calls}\n{COMMITS}");
        let r = report(&format!("fail_after {calls}"), &input);
        assert!(!r.poisoned, "fail_after {calls}: {r:?}");
    }
}

/// Fragments the seeded mixes draw from: schema changes, cached reads and
/// writes, long names and transaction control.
const FRAGMENTS: &[&str] = &[
    "--> query\nSELECT * FROM t",
    "--> query\nSELECT *, * FROM t ORDER BY 1 DESC",
    "--> query\nSELECT count(*), max(x) FROM t",
    "--> execute\nINSERT INTO t (x) VALUES (randomblob(2000))",
    "--> execute\nUPDATE t SET x = x || 'z'",
    "--> exec\nALTER TABLE t ADD COLUMN c{{0}} DEFAULT 5",
    "--> exec\nALTER TABLE t DROP COLUMN y",
    "--> exec\nALTER TABLE t RENAME COLUMN x TO x2",
    "--> exec\nALTER TABLE t RENAME COLUMN x2 TO x",
    "--> exec\nDROP TABLE t",
    "--> exec\nCREATE TABLE IF NOT EXISTS t (x, y)",
    "--> exec\nCREATE TABLE IF NOT EXISTS t (x, y, z, \"{{3}}\")",
    "--> exec\nBEGIN",
    "--> exec\nCOMMIT",
    "--> exec\nROLLBACK",
    "--> exec\nINSERT INTO t (x) SELECT randomblob(3000) FROM t",
    "--> query\nSELECT \"{{2}}\" FROM t",
    "--> exec\nVACUUM",
];

#[test]
fn seeded_mixes_of_steps_and_store_faults_run_without_findings() {
    for seed in 0..60 {
        let mut rng = Rng::new(seed);
        let directive = match rng.next() % 4 {
            0 => String::new(),
            1 => format!("-- fail_after {}\n", rng.next() % 40),
            2 => format!("-- panic_after {}\n", rng.next() % 40),
            _ => format!("-- hang_after {}\n", rng.next() % 40),
        };
        let mut input = directive + "CREATE TABLE t (x, y); INSERT INTO t VALUES (1, 2);\n";
        for _ in 0..2 + rng.next() % 10 {
            input.push_str(FRAGMENTS[(rng.next() % FRAGMENTS.len() as u64) as usize]);
            input.push('\n');
        }
        let r = report(&format!("seed {seed}:\n{input}"), &input);
        assert!(r.leak_checked);
    }
}
