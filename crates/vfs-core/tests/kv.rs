//! The stores shared by every crate's tests: `MemoryKv` must enforce the
//! contract like a real backend, and each `FaultyKv` control must do
//! exactly what it documents, or tests built on them prove nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::executor::block_on;
use vfs_core::{CountingKv, FaultyKv, InjectedFault, KvError, KvLimits, KvOp, KvStore, MemoryKv};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn entry(k: &str, v: &str) -> (Bytes, Bytes) {
    (b(k), b(v))
}

fn faulty() -> (Arc<MemoryKv>, FaultyKv) {
    let mem = Arc::new(MemoryKv::new());
    let faulty = FaultyKv::new(mem.clone());
    (mem, faulty)
}

#[test]
fn memory_get_put_delete() {
    block_on(async {
        let kv = MemoryKv::new();
        assert!(kv.is_empty());
        kv.put_batch(&[entry("a", "1"), entry("b", "2")])
            .await
            .unwrap();
        let got = kv.get_batch(&[b("b"), b("missing"), b("a")]).await.unwrap();
        assert_eq!(got, vec![Some(b("2")), None, Some(b("1"))]);
        kv.delete_batch(&[b("a"), b("never-there")]).await.unwrap();
        assert_eq!(kv.len(), 1);
        assert_eq!(
            kv.snapshot().into_iter().collect::<Vec<_>>(),
            vec![entry("b", "2")]
        );
        assert_eq!(kv.limits(), KvLimits::DEFAULT);
    });
}

#[test]
fn memory_enforces_limits_without_applying() {
    block_on(async {
        let kv = MemoryKv::with_limits(KvLimits {
            max_batch_keys: 2,
            max_value_bytes: 3,
        });
        let err = kv
            .put_batch(&[entry("a", "1"), entry("b", "2"), entry("c", "3")])
            .await
            .unwrap_err();
        assert!(
            matches!(err, KvError::BatchTooLarge { keys: 3, limit: 2 }),
            "{err}"
        );
        let err = kv
            .put_batch(&[entry("a", "1"), entry("b", "long")])
            .await
            .unwrap_err();
        assert!(
            matches!(err, KvError::ValueTooLarge { bytes: 4, limit: 3 }),
            "{err}"
        );
        assert!(kv.is_empty(), "a refused batch must apply nothing");
        let err = kv.get_batch(&[b("a"), b("b"), b("c")]).await.unwrap_err();
        assert!(matches!(err, KvError::BatchTooLarge { .. }));
        let err = kv
            .delete_batch(&[b("a"), b("b"), b("c")])
            .await
            .unwrap_err();
        assert!(matches!(err, KvError::BatchTooLarge { .. }));
    });
}

#[test]
fn fail_next_fails_exactly_n_calls_and_applies_nothing() {
    block_on(async {
        let (mem, kv) = faulty();
        kv.fail_next(2);
        let err = kv.put_batch(&[entry("a", "1")]).await.unwrap_err();
        assert!(matches!(
            err,
            KvError::Injected {
                fault: InjectedFault::FailNext,
                op: KvOp::Put
            }
        ));
        assert_eq!(err.to_string(), "injected fault (fail_next) on put_batch");
        let err = kv.get_batch(&[b("a")]).await.unwrap_err();
        assert_eq!(err.to_string(), "injected fault (fail_next) on get_batch");
        assert!(mem.is_empty(), "failed put must not apply");
        kv.put_batch(&[entry("a", "1")]).await.unwrap();
        assert_eq!(mem.len(), 1);
        assert_eq!(kv.calls(), 3);
    });
}

#[test]
fn fail_after_lets_n_calls_through_then_fails_until_heal() {
    block_on(async {
        let (mem, kv) = faulty();
        kv.fail_after(2);
        kv.put_batch(&[entry("a", "1")]).await.unwrap();
        kv.get_batch(&[b("a")]).await.unwrap();
        for _ in 0..3 {
            let err = kv.delete_batch(&[b("a")]).await.unwrap_err();
            assert!(matches!(
                err,
                KvError::Injected {
                    fault: InjectedFault::FailAfter,
                    op: KvOp::Delete
                }
            ));
            assert_eq!(
                err.to_string(),
                "injected fault (fail_after) on delete_batch"
            );
        }
        assert_eq!(mem.len(), 1, "failed delete must not apply");
        kv.heal();
        kv.delete_batch(&[b("a")]).await.unwrap();
        assert!(mem.is_empty());
        assert_eq!(kv.calls(), 6);
    });
}

#[test]
fn fail_after_zero_fails_now() {
    block_on(async {
        let (_mem, kv) = faulty();
        kv.fail_after(0);
        assert!(kv.get_batch(&[b("a")]).await.is_err());
        assert!(kv.get_batch(&[b("a")]).await.is_err());
        kv.heal();
        assert!(kv.get_batch(&[b("a")]).await.is_ok());
    });
}

#[test]
fn heal_clears_fail_next_too() {
    block_on(async {
        let (_mem, kv) = faulty();
        kv.fail_next(5);
        kv.heal();
        assert!(kv.get_batch(&[b("a")]).await.is_ok());
    });
}

#[test]
fn latency_delays_every_call_until_healed() {
    block_on(async {
        let (_mem, kv) = faulty();
        kv.set_latency(Duration::from_millis(30));
        let start = Instant::now();
        kv.get_batch(&[b("a")]).await.unwrap();
        kv.put_batch(&[entry("a", "1")]).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(60));
        kv.heal();
        let start = Instant::now();
        kv.get_batch(&[b("a")]).await.unwrap();
        assert!(start.elapsed() < Duration::from_millis(30));
    });
}

#[test]
fn lose_answers_applies_writes_but_answers_outcome_unknown_until_healed() {
    block_on(async {
        let (mem, kv) = faulty();
        kv.lose_answers(true);
        let err = kv.put_batch(&[entry("a", "1")]).await.unwrap_err();
        assert!(err.is_outcome_unknown(), "{err}");
        assert!(err.to_string().contains("put_batch"), "{err}");
        assert_eq!(mem.snapshot().get(&b("a")), Some(&b("1")), "the put landed");
        assert_eq!(kv.get_batch(&[b("a")]).await.unwrap(), vec![Some(b("1"))]);
        let err = kv.delete_batch(&[b("a")]).await.unwrap_err();
        assert!(err.is_outcome_unknown(), "{err}");
        assert!(err.to_string().contains("delete_batch"), "{err}");
        assert!(mem.is_empty(), "the delete landed");
        // A call the inner store refuses keeps its own error.
        let too_many: Vec<_> = (0..=KvLimits::DEFAULT.max_batch_keys)
            .map(|i| entry(&i.to_string(), "v"))
            .collect();
        let err = kv.put_batch(&too_many).await.unwrap_err();
        assert!(matches!(err, KvError::BatchTooLarge { .. }), "{err}");
        assert!(mem.is_empty());
        kv.lose_answers(false);
        kv.put_batch(&[entry("a", "1")]).await.unwrap();
        kv.lose_answers(true);
        kv.heal();
        kv.delete_batch(&[b("a")]).await.unwrap();
        assert!(mem.is_empty());
        assert_eq!(kv.calls(), 6);
    });
}

#[test]
fn set_fenced_refuses_check_owner_and_otherwise_asks_the_inner_store() {
    block_on(async {
        let (mem, kv) = faulty();
        kv.check_owner().unwrap();
        kv.set_fenced(true);
        let err = kv.check_owner().unwrap_err();
        assert!(matches!(err, KvError::Fenced { .. }), "{err}");
        // Only check_owner is refused; calls are not counted by it.
        kv.put_batch(&[entry("a", "1")]).await.unwrap();
        assert_eq!(mem.len(), 1);
        assert_eq!(kv.calls(), 1);
        kv.set_fenced(false);
        kv.check_owner().unwrap();
        kv.set_fenced(true);
        kv.heal();
        kv.check_owner().unwrap();

        // Not fenced itself, it passes on the inner store's answer.
        let inner = Arc::new(FaultyKv::new(Arc::new(MemoryKv::new())));
        let outer = FaultyKv::new(inner.clone());
        inner.set_fenced(true);
        assert!(matches!(outer.check_owner(), Err(KvError::Fenced { .. })));
        inner.set_fenced(false);
        outer.check_owner().unwrap();
    });
}

#[test]
fn faulty_passes_limits_through() {
    let limits = KvLimits {
        max_batch_keys: 5,
        max_value_bytes: 8192,
    };
    let kv = FaultyKv::new(Arc::new(MemoryKv::with_limits(limits)));
    assert_eq!(kv.limits(), limits);
}

#[test]
fn counting_counts_round_trips_per_kind() {
    block_on(async {
        let kv = CountingKv::new(Arc::new(MemoryKv::new()));
        kv.put_batch(&[entry("a", "1"), entry("b", "2")])
            .await
            .unwrap();
        kv.get_batch(&[b("a")]).await.unwrap();
        kv.get_batch(&[b("b")]).await.unwrap();
        kv.delete_batch(&[b("a")]).await.unwrap();
        assert_eq!(
            (
                kv.get_calls(),
                kv.put_calls(),
                kv.delete_calls(),
                kv.total()
            ),
            (2, 1, 1, 4)
        );
        kv.reset();
        assert_eq!(kv.total(), 0);
    });
}

#[test]
fn stores_are_usable_as_trait_objects_across_threads() {
    let store: Arc<dyn KvStore> = Arc::new(FaultyKv::new(Arc::new(MemoryKv::new())));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                block_on(store.put_batch(&[entry(&format!("k{i}"), "v")])).unwrap();
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let got = block_on(store.get_batch(&[b("k0"), b("k1"), b("k2"), b("k3")])).unwrap();
    assert!(got.iter().all(Option::is_some));
}

#[test]
fn backend_error_keeps_its_source() {
    let err = KvError::backend("disk gone", std::io::Error::other("EIO"));
    let cloned = err.clone();
    let source = std::error::Error::source(&cloned).expect("source kept");
    assert_eq!(source.to_string(), "EIO");
    assert!(!err.is_transient());
    assert!(
        KvError::Unavailable {
            message: "x".into()
        }
        .is_transient()
    );
}

#[test]
fn storage_full_says_no_space_left_and_keeps_its_source() {
    let io = std::io::Error::from(std::io::ErrorKind::StorageFull);
    let err = KvError::storage_full("writing pages", io);
    assert!(err.is_storage_full());
    assert!(!err.is_transient());
    assert!(
        err.to_string()
            .starts_with("no space left on the storage device: writing pages"),
        "{err}"
    );
    let source = std::error::Error::source(&err).expect("source kept");
    assert_eq!(
        source.to_string(),
        std::io::Error::from(std::io::ErrorKind::StorageFull).to_string()
    );
    let bare = KvError::StorageFull {
        message: "quota".into(),
        source: None,
    };
    assert!(bare.is_storage_full());
    assert!(std::error::Error::source(&bare).is_none());
    assert!(!KvError::backend("x", std::io::Error::other("EIO")).is_storage_full());
}

#[test]
fn deadlines_nest_to_the_earliest_and_a_nested_call_can_start_without_one() {
    use std::time::{Duration, Instant};
    let now = Instant::now();
    let (early, late) = (now + Duration::from_secs(1), now + Duration::from_secs(2));
    assert_eq!(vfs_core::call_deadline(), None);
    vfs_core::with_deadline(early, || {
        assert_eq!(vfs_core::call_deadline(), Some(early));
        vfs_core::with_deadline(late, || {
            assert_eq!(
                vfs_core::call_deadline(),
                Some(early),
                "the earlier one holds"
            );
            vfs_core::without_deadline(|| {
                assert_eq!(vfs_core::call_deadline(), None, "a call of its own");
                vfs_core::with_deadline(late, || {
                    assert_eq!(vfs_core::call_deadline(), Some(late));
                });
            });
            assert_eq!(vfs_core::call_deadline(), Some(early), "restored");
        });
        let unwound = std::panic::catch_unwind(|| {
            vfs_core::without_deadline(|| panic!("store panicked"));
        });
        assert!(unwound.is_err());
        assert_eq!(
            vfs_core::call_deadline(),
            Some(early),
            "restored after a panic"
        );
    });
    assert_eq!(vfs_core::call_deadline(), None);
}
