//! A small script that uses every supported feature passes on both engines,
//! with the same counts.

mod common;

use common::{data, run};
use vfs_slt::Engine;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_script_passes_on_both_engines() {
    for engine in [Engine::Native, Engine::Pool] {
        let report = run(&[data("small.test")], engine).await.unwrap();
        let failures: Vec<String> = report.failures().map(ToString::to_string).collect();
        assert!(failures.is_empty(), "{engine}: {failures:#?}");
        assert_eq!(report.files.len(), 1);
        let file = &report.files[0];
        assert_eq!(
            (file.passed, file.failed, file.skipped),
            (15, 0, 3),
            "{engine}: {file}"
        );
        assert_eq!(report.summary(), "slt: 15 passed, 0 failed, 3 skipped");
        assert!(report.success());
    }
}
