//! State-machine test: random acquire / open / write / close / release / reap
//! sequences against a model of the pool. Instance count, actor count, which
//! instance serves each actor (bin-packing), handle stickiness and each
//! actor's data must always agree with the model. Short names are checked
//! indirectly: every open the model expects to succeed must succeed, which it
//! cannot if two actors of one instance shared a name.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use proptest::prelude::*;
use vfs_pool::{Error, KvStore, MemoryKv, PooledHandle, SqliteVfsPool, Value};

const ACTORS: usize = 6;

#[derive(Debug, Clone)]
enum Op {
    Acquire(usize),
    Open(usize),
    Write(usize),
    Close(usize),
    Release(usize),
    Reap,
}

fn op() -> impl Strategy<Value = Op> {
    let actor = 0..ACTORS;
    prop_oneof![
        3 => actor.clone().prop_map(Op::Acquire),
        2 => actor.clone().prop_map(Op::Open),
        3 => actor.clone().prop_map(Op::Write),
        1 => actor.clone().prop_map(Op::Close),
        2 => actor.prop_map(Op::Release),
        1 => Just(Op::Reap),
    ]
}

#[derive(Default)]
struct Model {
    cap: usize,
    next_instance: u64,
    /// instance id -> actors seated there
    instances: BTreeMap<u64, usize>,
    /// actor -> (instance, database open)
    seated: HashMap<usize, (u64, bool)>,
    /// rows each actor has written (its store outlives its seat)
    rows: [i64; ACTORS],
}

impl Model {
    fn seat(&mut self, actor: usize) -> u64 {
        if let Some((instance, _)) = self.seated.get(&actor) {
            return *instance;
        }
        let fullest = self
            .instances
            .iter()
            .filter(|(_, n)| **n < self.cap)
            .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        let instance = fullest.unwrap_or_else(|| {
            let id = self.next_instance;
            self.next_instance += 1;
            self.instances.insert(id, 0);
            id
        });
        *self.instances.get_mut(&instance).expect("seated instance") += 1;
        self.seated.insert(actor, (instance, false));
        instance
    }
}

struct Real {
    pool: SqliteVfsPool,
    handles: HashMap<usize, PooledHandle>,
    dbs: HashMap<usize, vfs_pool::Database>,
    stores: Vec<Arc<dyn KvStore>>,
}

async fn run(cap: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let pool = SqliteVfsPool::new(common::config(cap)).map_err(|e| fail(&e))?;
    let mut real = Real {
        pool,
        handles: HashMap::new(),
        dbs: HashMap::new(),
        stores: (0..ACTORS)
            .map(|_| Arc::new(MemoryKv::new()) as Arc<dyn KvStore>)
            .collect(),
    };
    let mut model = Model {
        cap,
        ..Model::default()
    };
    for op in ops {
        step(&mut real, &mut model, &op).await?;
        prop_assert_eq!(
            real.pool.instance_count(),
            model.instances.len(),
            "after {:?}",
            op
        );
        prop_assert_eq!(
            real.pool.actor_count(),
            model.seated.len(),
            "after {:?}",
            op
        );
        for (actor, (instance, _)) in &model.seated {
            prop_assert_eq!(real.handles[actor].instance_id(), *instance);
        }
    }
    real.pool.shutdown().await;
    prop_assert_eq!(real.pool.worker_threads(), 0);
    Ok(())
}

fn fail(e: &Error) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

async fn step(real: &mut Real, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match *op {
        Op::Acquire(a) => {
            let previous = model.seated.contains_key(&a);
            model.seat(a);
            let handle = real
                .pool
                .acquire(&format!("actor-{a}"))
                .await
                .map_err(|e| fail(&e))?;
            if previous {
                prop_assert!(handle.same_as(&real.handles[&a]), "acquire is sticky");
            }
            real.handles.insert(a, handle);
        }
        Op::Open(a) => match model.seated.get_mut(&a) {
            Some((_, open)) => {
                let result = real.handles[&a].open(Arc::clone(&real.stores[a])).await;
                if *open {
                    prop_assert!(
                        matches!(result, Err(Error::AlreadyOpen { .. })),
                        "second open must fail"
                    );
                } else {
                    real.dbs.insert(a, result.map_err(|e| fail(&e))?);
                    *open = true;
                }
            }
            None => {
                if let Some(stale) = real.handles.get(&a) {
                    let result = stale.open(Arc::clone(&real.stores[a])).await;
                    prop_assert!(
                        matches!(result, Err(Error::Released { .. })),
                        "stale handle must fail"
                    );
                }
            }
        },
        Op::Write(a) => {
            let open = model.seated.get(&a).is_some_and(|(_, open)| *open);
            if let Some(db) = real.dbs.get(&a) {
                let result = async {
                    db.exec("CREATE TABLE IF NOT EXISTS t (v INTEGER)").await?;
                    db.execute("INSERT INTO t VALUES (?1)", &[Value::Integer(1)])
                        .await?;
                    db.query("SELECT count(*) FROM t", &[]).await
                }
                .await;
                if open {
                    model.rows[a] += 1;
                    let rows = result.map_err(|e| fail(&e))?;
                    prop_assert_eq!(&rows.rows, &vec![vec![Value::Integer(model.rows[a])]]);
                } else {
                    prop_assert!(
                        result.is_err(),
                        "a closed or released database refuses calls"
                    );
                }
            }
        }
        Op::Close(a) => {
            if let Some(db) = real.dbs.remove(&a) {
                db.close().await.map_err(|e| fail(&e))?;
                if let Some((_, open)) = model.seated.get_mut(&a) {
                    *open = false;
                }
            }
        }
        Op::Release(a) => {
            if let Some(handle) = real.handles.get(&a) {
                handle.release().await;
                if let Some((instance, _)) = model.seated.remove(&a) {
                    *model.instances.get_mut(&instance).expect("instance") -= 1;
                }
            }
        }
        Op::Reap => {
            let idle: Vec<u64> = model
                .instances
                .iter()
                .filter(|(_, n)| **n == 0)
                .map(|(id, _)| *id)
                .collect();
            for id in &idle {
                model.instances.remove(id);
            }
            prop_assert_eq!(real.pool.reap_idle().await, idle.len());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn pool_agrees_with_its_model(cap in 1usize..4, ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(run(cap, ops))?;
    }
}
