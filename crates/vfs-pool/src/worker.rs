//! One OS thread per instance.
//!
//! A wasm instance runs SQLite synchronously, and SQLite's VFS calls block on
//! the tenant's key-value store. Running that on a tokio worker would stall
//! every task scheduled on it; running it on a thread of its own means a slow
//! store stalls only the tenants of its own instance. Callers send closures to
//! the thread and await the reply on a oneshot channel.
//!
//! The thread enters the caller's tokio runtime (when there is one) so that
//! stores built on tokio (timers, sockets) work when their futures are polled
//! here; the futures themselves are driven on this thread, never on a tokio
//! worker.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};
use vfs_wasm::{Instance, InstanceConfig, ModuleConfig, SqliteModule};

use crate::{Error, Result};

/// A unit of work for the instance's thread.
type Job = Box<dyn FnOnce(&mut Instance) + Send>;

/// What the instance's thread receives.
enum Message {
    /// Run this job.
    Run(Job),
    /// Finish: jobs queued before this one have run; drop the instance and exit.
    Stop,
}

/// Start-up state of a worker, observed by the acquires waiting for it.
#[derive(Debug, Clone)]
pub(crate) enum Startup {
    /// The instance is being created.
    Starting,
    /// The instance is serving.
    Ready,
    /// The instance could not be created; the message says why.
    Failed(Arc<str>),
}

/// The owning side of an instance's thread.
pub(crate) struct Worker {
    jobs: mpsc::Sender<Message>,
    thread: Option<JoinHandle<()>>,
    startup: watch::Receiver<Startup>,
}

/// A cloneable sender of jobs to one worker.
#[derive(Clone)]
pub(crate) struct WorkerSender {
    jobs: mpsc::Sender<Message>,
}

impl Worker {
    /// Spawns the thread, which creates the instance and then serves jobs
    /// until every sender is dropped.
    pub(crate) fn spawn(
        name: String,
        module: ModuleConfig,
        config: InstanceConfig,
        live: &Arc<AtomicUsize>,
    ) -> Result<Worker> {
        let (jobs, receiver) = mpsc::channel::<Message>();
        let (startup_tx, startup) = watch::channel(Startup::Starting);
        let runtime = tokio::runtime::Handle::try_current().ok();
        live.fetch_add(1, Ordering::SeqCst);
        let live_in_thread = Arc::clone(live);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let _runtime = runtime.as_ref().map(tokio::runtime::Handle::enter);
            serve(&module, config, &receiver, &startup_tx);
            live_in_thread.fetch_sub(1, Ordering::SeqCst);
        });
        match spawned {
            Ok(thread) => Ok(Worker {
                jobs,
                thread: Some(thread),
                startup,
            }),
            Err(e) => {
                live.fetch_sub(1, Ordering::SeqCst);
                Err(Error::InstanceStart(format!(
                    "spawning a worker thread: {e}"
                )))
            }
        }
    }

    pub(crate) fn sender(&self) -> WorkerSender {
        WorkerSender {
            jobs: self.jobs.clone(),
        }
    }

    pub(crate) fn startup(&self) -> watch::Receiver<Startup> {
        self.startup.clone()
    }

    /// Asks the thread to finish the jobs queued so far, drop the instance and
    /// exit (senders held elsewhere then get `InstanceGone`). Returns the
    /// thread to join.
    pub(crate) fn stop(mut self) -> Option<JoinHandle<()>> {
        // A send error means the thread is already gone, which is the goal.
        let _ = self.jobs.send(Message::Stop);
        self.thread.take()
    }
}

/// The thread's body: create the instance, then run jobs in order.
fn serve(
    module: &ModuleConfig,
    config: InstanceConfig,
    receiver: &mpsc::Receiver<Message>,
    startup: &watch::Sender<Startup>,
) {
    let created = SqliteModule::shared(module).and_then(|m| Instance::new(&m, config));
    let mut instance = match created {
        Ok(instance) => instance,
        Err(e) => {
            tracing::warn!(error = %e, "instance start failed");
            startup.send_replace(Startup::Failed(e.to_string().into()));
            return;
        }
    };
    startup.send_replace(Startup::Ready);
    while let Ok(Message::Run(job)) = receiver.recv() {
        // A job never panics by design (the engine reports errors as values);
        // should one do so anyway, the thread survives and the caller sees its
        // reply channel dropped, which it reports as `InstanceGone`.
        if catch_unwind(AssertUnwindSafe(|| job(&mut instance))).is_err() {
            tracing::error!("a job panicked on an instance worker");
        }
    }
}

impl WorkerSender {
    /// Runs `f` on the instance's thread and returns its result.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Instance) -> T + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |instance| {
            // The caller may have gone away; nobody to tell then.
            let _ = reply.send(f(instance));
        });
        self.jobs
            .send(Message::Run(job))
            .map_err(|_| Error::InstanceGone)?;
        answer.await.map_err(|_| Error::InstanceGone)
    }
}

/// Waits until the worker has started or failed.
pub(crate) async fn wait_ready(mut startup: watch::Receiver<Startup>) -> Result<()> {
    let state = startup
        .wait_for(|s| !matches!(s, Startup::Starting))
        .await
        .map_err(|_| Error::InstanceGone)?
        .clone();
    match state {
        Startup::Failed(reason) => Err(Error::InstanceStart(reason.to_string())),
        Startup::Ready | Startup::Starting => Ok(()),
    }
}
