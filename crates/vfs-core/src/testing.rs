//! Test support shared by the property tests, the fuzzers and anyone
//! building on [`KvFile`]: a plain `Vec<u8>` model of one file and a checker
//! that runs a sequence of [`FileOp`]s against both, with store failures
//! injected through [`FaultyKv`].
//!
//! It lives in the library, not in a test file, so the proptest state
//! machine (`tests/model.rs`) and the `kv_file_ops` fuzz target check the
//! very same contract instead of two copies drifting apart. It needs no
//! dependency beyond the crate's own; the checker is `async` and any
//! executor can drive it (the stores it builds never return `Pending`).
//!
//! What the contract promises, and so what is checked after every step:
//! - The handle always reads exactly what the model holds, and a fresh
//!   handle on the store (opened on the inner store, bypassing the faults)
//!   reads the model outside a batch and the pre-batch state inside one.
//! - An atomic batch is all or nothing: after a failed commit the store
//!   still holds the state from before `begin_atomic`, never a mix, and
//!   after a successful one it holds the model.
//! - Outside a batch SQLite does not get all-or-nothing (that is what its
//!   journal is for): a failed write may leave some pages written. The
//!   checker then verifies the damage is bounded — the size is unchanged and
//!   every page holds either its old or its new content — and
//!   resynchronises the model from the store. A failed truncate leaves
//!   the new file, or the old one with the region being cut reading zeros
//!   from its start (the cut pages are deleted lowest first, and the size
//!   is stored last, in one batch with the new last page).
//! - Operations that only read or buffer (reads, writes and truncates inside
//!   a batch, sync) change nothing when they fail.
//! - Every stored key decodes, and after a final clean sync no page is left
//!   past the end of the file.
//!
//! It also holds [`report`], which tests across the workspace use to assert
//! on the words of an error's causes.

use std::fmt;
use std::sync::Arc;

use crate::file::{KvFile, ReadOutcome};
use crate::format::{DecodedKey, FileTag, PAGE_SIZE, decode_key};
use crate::kv::{FaultyKv, KvLimits, KvStore, MemoryKv};
use crate::sqlite;

/// Keys per batch of the store the checker builds: small, so that writes of
/// a few pages already need several plain batches and large atomic batches
/// exceed the limit (the journal fallback SQLite relies on).
pub const MODEL_BATCH_KEYS: usize = 8;

/// Largest file the checker accepts before calling the run a divergence:
/// the operations it is given stay far below, so a size beyond this is a
/// bug, and refusing it keeps a buggy size from exhausting memory.
pub const MODEL_MAX_FILE: u64 = 1 << 24;

/// One step of a [`check_file_ops`] run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    /// Writes `len` bytes derived from `seed` (see [`fill`]) at `offset`.
    Write {
        /// Byte offset.
        offset: u64,
        /// Number of bytes.
        len: usize,
        /// Varies the content.
        seed: u8,
    },
    /// Reads `len` bytes at `offset`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Number of bytes.
        len: usize,
    },
    /// Sets the file size.
    Truncate {
        /// The new size.
        size: u64,
    },
    /// Flushes (outside a batch) whatever the handle holds.
    Sync,
    /// `begin_atomic`.
    Begin,
    /// `commit_atomic`; a failed commit is followed by the rollback SQLite
    /// would issue.
    Commit,
    /// `rollback_atomic`.
    Rollback,
    /// The next `n` store calls fail.
    FailNext(u32),
    /// `n` more store calls succeed, then all fail until [`FileOp::Heal`].
    FailAfter(u32),
    /// Clears injected faults.
    Heal,
}

/// The file diverged from its model: what was expected and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", match (.step, .op) {
    (Some(step), Some(op)) => format!("step {step} ({op:?})"),
    _ => "after the last step".to_owned(),
})]
pub struct Divergence {
    /// Index of the operation after which the check failed; `None` for the
    /// final checks after all operations.
    pub step: Option<usize>,
    /// The operation at `step`.
    pub op: Option<FileOp>,
    /// What was violated.
    pub message: String,
}

/// The content [`FileOp::Write`] writes: never zero, so a page that wrongly
/// reads as a hole is noticed.
pub fn fill(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i as u8) ^ seed) | 0x80).collect()
}

/// Fails the check with a formatted message unless `$cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Fails the check unless both sides are equal, showing both.
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $what:expr) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err(format!(
                "{}: {:?} != {:?}",
                $what,
                Short(left),
                Short(right)
            ));
        }
    }};
}

/// Debug output that keeps long byte vectors readable in a failure message.
struct Short<'a, T>(&'a T);

impl<T: fmt::Debug> fmt::Debug for Short<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{:?}", self.0);
        if text.len() > 200 {
            write!(
                f,
                "{}… ({} chars)",
                &text[..text.floor_char_boundary(200)],
                text.len()
            )
        } else {
            f.write_str(&text)
        }
    }
}

fn apply_write(model: &mut Vec<u8>, offset: u64, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let end = offset as usize + data.len();
    if model.len() < end {
        model.resize(end, 0);
    }
    model[offset as usize..end].copy_from_slice(data);
}

fn size_of(file: &KvFile) -> Result<usize, String> {
    ensure!(
        file.size() <= MODEL_MAX_FILE,
        "file size {} beyond anything the operations wrote",
        file.size()
    );
    Ok(file.size() as usize)
}

/// The file as stored, read through a fresh handle on the fault-free store.
async fn stored(inner: &Arc<dyn KvStore>) -> Result<Vec<u8>, String> {
    let mut file = match KvFile::open(Arc::clone(inner), FileTag::Main, false, None).await {
        Ok(file) => file,
        Err(e) if e.code() == sqlite::SQLITE_CANTOPEN && e.kv_error().is_none() => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(format!("reopen failed: {e}")),
    };
    let mut buf = vec![0xAA; size_of(&file)?];
    match file.read(&mut buf, 0).await {
        Ok(ReadOutcome::Full) => Ok(buf),
        Ok(ReadOutcome::Short) => Err("reading the stored file to its size was short".into()),
        Err(e) => Err(format!("reading the stored file failed: {e}")),
    }
}

/// The file as the handle sees it; reading must not be disturbed by faults
/// (an injected read failure is healed and retried).
async fn handle_view(file: &mut KvFile, faulty: &FaultyKv) -> Result<Vec<u8>, String> {
    let saved_calls = faulty.calls();
    let mut buf = vec![0xAA; size_of(file)?];
    let outcome = loop {
        match file.read(&mut buf, 0).await {
            Ok(outcome) => break outcome,
            Err(e) => {
                ensure_eq!(e.code(), sqlite::SQLITE_IOERR_READ, "read error code");
                ensure!(
                    faulty.calls() > saved_calls,
                    "read failed without a store call: {e}"
                );
                faulty.heal();
            }
        }
    };
    ensure_eq!(outcome, ReadOutcome::Full, "reading the handle to its size");
    Ok(buf)
}

/// Every page of `got` holds the corresponding bytes of `old` or of `new`.
fn pagewise_old_or_new(got: &[u8], old: &[u8], new: &[u8]) -> bool {
    got.chunks(PAGE_SIZE).enumerate().all(|(i, page)| {
        let range = i * PAGE_SIZE..i * PAGE_SIZE + page.len();
        let slice = |v: &[u8]| -> Vec<u8> {
            let mut out = v.get(range.clone()).map(<[u8]>::to_vec).unwrap_or_default();
            if out.len() < page.len() {
                let start = range.start.min(v.len());
                out = v[start..].to_vec();
                out.resize(page.len(), 0);
            }
            out
        };
        page == slice(old).as_slice() || page == slice(new).as_slice()
    })
}

/// Whether `got` is `old` with the first pages of the region a truncate to
/// `new_size` cuts reading zeros, and the rest of it unchanged: what a
/// truncate that stopped (a crash, a failed call) before storing the new
/// size leaves, since it deletes the cut pages lowest first.
pub fn cut_started(got: &[u8], old: &[u8], new_size: u64) -> bool {
    let from = (new_size as usize).next_multiple_of(PAGE_SIZE);
    if got.len() != old.len() || from > old.len() || got[..from] != old[..from] {
        return false;
    }
    let pages = got[from..]
        .chunks(PAGE_SIZE)
        .zip(old[from..].chunks(PAGE_SIZE));
    let zeroed = pages
        .clone()
        .take_while(|(page, _)| page.iter().all(|&b| b == 0))
        .count();
    pages.skip(zeroed).all(|(page, before)| page == before)
}

/// The state of one run: the file, its stores and the model.
struct Run {
    memory: Arc<MemoryKv>,
    inner: Arc<dyn KvStore>,
    faulty: Arc<FaultyKv>,
    file: KvFile,
    model: Vec<u8>,
    /// What the store must hold: the model, or the pre-batch state in a batch.
    committed: Vec<u8>,
    in_batch: bool,
}

impl Run {
    async fn start() -> Result<Run, String> {
        let memory = Arc::new(MemoryKv::with_limits(KvLimits {
            max_batch_keys: MODEL_BATCH_KEYS,
            max_value_bytes: PAGE_SIZE,
        }));
        let inner: Arc<dyn KvStore> = memory.clone();
        let faulty = Arc::new(FaultyKv::new(Arc::clone(&inner)));
        let store: Arc<dyn KvStore> = faulty.clone();
        let file = KvFile::open(store, FileTag::Main, true, None)
            .await
            .map_err(|e| format!("creating the file failed: {e}"))?;
        Ok(Run {
            memory,
            inner,
            faulty,
            file,
            model: Vec::new(),
            committed: Vec::new(),
            in_batch: false,
        })
    }

    async fn step(&mut self, op: &FileOp) -> Result<(), String> {
        match *op {
            FileOp::Write { offset, len, seed } => self.write(offset, len, seed).await?,
            FileOp::Read { offset, len } => self.read(offset, len).await?,
            FileOp::Truncate { size } => self.truncate(size).await?,
            FileOp::Sync => {
                if let Err(e) = self.file.sync().await {
                    ensure_eq!(e.code(), sqlite::SQLITE_IOERR_FSYNC, "sync error code");
                }
            }
            FileOp::Begin => {
                let result = self.file.begin_atomic();
                if self.in_batch {
                    match result {
                        Ok(()) => return Err("begin_atomic inside a batch succeeded".into()),
                        Err(e) => ensure_eq!(
                            e.code(),
                            sqlite::SQLITE_IOERR_BEGIN_ATOMIC,
                            "nested begin error code"
                        ),
                    }
                } else {
                    result.map_err(|e| format!("begin_atomic failed: {e}"))?;
                    self.in_batch = true;
                }
            }
            FileOp::Commit => self.commit().await?,
            FileOp::Rollback => {
                self.file.rollback_atomic();
                if self.in_batch {
                    self.model.clone_from(&self.committed);
                    self.in_batch = false;
                }
            }
            FileOp::FailNext(n) => self.faulty.fail_next(n),
            FileOp::FailAfter(n) => self.faulty.fail_after(n),
            FileOp::Heal => self.faulty.heal(),
        }
        if !self.in_batch {
            self.committed.clone_from(&self.model);
        }
        ensure_eq!(self.file.in_atomic(), self.in_batch, "in_atomic");
        ensure_eq!(self.file.size(), self.model.len() as u64, "size");
        ensure_eq!(stored(&self.inner).await?, self.committed, "store diverged");
        for key in self.memory.snapshot().keys() {
            ensure!(decode_key(key).is_ok(), "malformed stored key {key:?}");
        }
        Ok(())
    }

    async fn write(&mut self, offset: u64, len: usize, seed: u8) -> Result<(), String> {
        let data = fill(len, seed);
        let mut after = self.model.clone();
        apply_write(&mut after, offset, &data);
        match self.file.write(&data, offset).await {
            Ok(()) => self.model = after,
            Err(e) => {
                ensure_eq!(
                    e.code(),
                    sqlite::SQLITE_IOERR_WRITE,
                    format!("write error {e}")
                );
                ensure!(
                    e.kv_error().is_some(),
                    "write failed without a store error: {e}"
                );
                if !self.in_batch {
                    let got = stored(&self.inner).await?;
                    ensure_eq!(got.len(), self.model.len(), "size moved on failure");
                    ensure!(
                        pagewise_old_or_new(&got, &self.model, &after),
                        "a failed write left a page that is neither old nor new"
                    );
                    self.model = got;
                }
            }
        }
        Ok(())
    }

    async fn read(&mut self, offset: u64, len: usize) -> Result<(), String> {
        let mut buf = vec![0x55; len];
        match self.file.read(&mut buf, offset).await {
            Ok(outcome) => {
                let model = &self.model;
                let mut expected = vec![0; len];
                let start = (offset as usize).min(model.len());
                let end = (offset as usize + len).min(model.len());
                expected[..end - start].copy_from_slice(&model[start..end]);
                ensure_eq!(buf, expected, "read content");
                let short = len > 0 && offset as usize + len > model.len();
                ensure_eq!(outcome == ReadOutcome::Short, short, "short read");
            }
            Err(e) => ensure_eq!(e.code(), sqlite::SQLITE_IOERR_READ, "read error code"),
        }
        Ok(())
    }

    async fn truncate(&mut self, size: u64) -> Result<(), String> {
        let mut after = self.model.clone();
        after.resize(size as usize, 0);
        match self.file.truncate(size).await {
            Ok(()) => self.model = after,
            Err(e) => {
                ensure_eq!(
                    e.code(),
                    sqlite::SQLITE_IOERR_TRUNCATE,
                    format!("truncate error {e}")
                );
                if !self.in_batch {
                    let got = stored(&self.inner).await?;
                    ensure!(
                        got == self.model || got == after || cut_started(&got, &self.model, size),
                        "truncate left a mix"
                    );
                    self.model = got;
                }
            }
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), String> {
        if !self.in_batch {
            match self.file.commit_atomic().await {
                Ok(()) => return Err("commit_atomic without a batch succeeded".into()),
                Err(e) => ensure_eq!(e.code(), sqlite::SQLITE_MISUSE, "commit without a batch"),
            }
            return Ok(());
        }
        match self.file.commit_atomic().await {
            Ok(()) => self.in_batch = false,
            Err(e) => {
                ensure_eq!(
                    e.code(),
                    sqlite::SQLITE_IOERR_COMMIT_ATOMIC,
                    "failed commit code"
                );
                ensure!(self.file.in_atomic(), "batch stays open until rollback");
                // Nothing of the batch reached the store.
                ensure_eq!(
                    stored(&self.inner).await?,
                    self.committed,
                    "a failed commit changed the store"
                );
                // What SQLite does next.
                self.file.rollback_atomic();
                self.model.clone_from(&self.committed);
                self.in_batch = false;
            }
        }
        Ok(())
    }

    /// With faults healed: the handle reads the model, a pending batch
    /// commits (or is too large and rolls back), a sync leaves exactly the
    /// model in the store and no page past its end.
    async fn finish(&mut self) -> Result<(), String> {
        self.faulty.heal();
        ensure_eq!(
            handle_view(&mut self.file, &self.faulty).await?,
            self.model,
            "handle view after healing"
        );
        if self.in_batch && self.file.commit_atomic().await.is_err() {
            // Only a batch too large for the store can fail without faults.
            self.file.rollback_atomic();
            self.model.clone_from(&self.committed);
        }
        self.file
            .sync()
            .await
            .map_err(|e| format!("sync without faults failed: {e}"))?;
        ensure_eq!(
            stored(&self.inner).await?,
            self.model,
            "store after the final sync"
        );
        let pages = self.model.len().div_ceil(PAGE_SIZE) as u32;
        for key in self.memory.snapshot().keys() {
            if let Ok(DecodedKey::Chunk(_, page)) = decode_key(key) {
                ensure!(
                    page < pages,
                    "chunk {page} left past the end ({pages} pages)"
                );
            }
        }
        Ok(())
    }
}

/// Runs `ops` on a new [`KvFile`] over a [`FaultyKv`] wrapping a
/// [`MemoryKv`] with [`MODEL_BATCH_KEYS`] keys per batch, checking the file
/// and its store against a `Vec<u8>` model after every step (see the module
/// documentation for the contract), then heals the store and checks the
/// final state.
///
/// Offsets and sizes are expected to stay small (a few dozen pages): the
/// model is a plain vector, and a file beyond [`MODEL_MAX_FILE`] is
/// reported as a divergence.
pub async fn check_file_ops(ops: &[FileOp]) -> Result<(), Divergence> {
    let mut run = Run::start().await.map_err(|message| Divergence {
        step: None,
        op: None,
        message,
    })?;
    for (step, op) in ops.iter().enumerate() {
        let too_large = match *op {
            FileOp::Write { offset, len, .. } | FileOp::Read { offset, len } => {
                offset.saturating_add(len as u64)
            }
            FileOp::Truncate { size } => size,
            _ => 0,
        } > MODEL_MAX_FILE;
        let result = if too_large {
            Err(format!(
                "operation beyond the model's {MODEL_MAX_FILE} bytes"
            ))
        } else {
            run.step(op).await
        };
        result.map_err(|message| Divergence {
            step: Some(step),
            op: Some(op.clone()),
            message,
        })?;
    }
    run.finish().await.map_err(|message| Divergence {
        step: None,
        op: None,
        message,
    })
}

/// `error` and all its sources on one line, each after a `": "`, as an
/// error reporter prints them. Errors in this workspace keep their causes
/// in `source()` and out of their own message, so a test that looks for a
/// cause's words looks here.
pub fn report(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
