//! The page logic of one SQLite file stored in a [`KvStore`].
//!
//! SQLite's VFS speaks in byte ranges; the store speaks in 4 KiB pages and
//! atomic batches. [`KvFile`] translates between the two and enforces the
//! VFS rules once, here, so the WebAssembly glue stays a thin adapter:
//! short reads are zero-filled, partial pages are read-modify-written, an
//! atomic write batch becomes exactly one `put_batch`, a batch too large for
//! the store fails before touching it (so SQLite falls back to its journal),
//! and every store failure becomes the `SQLITE_IOERR_*` code of the
//! operation while the original [`KvError`] is kept for the caller.
//!
//! Invariants kept for every stored file:
//! - the metadata holds the file size; chunks at or beyond the end are
//!   garbage and never read;
//! - the bytes of the last page past the end of the file are zero, so
//!   growing the file exposes zeros;
//! - a page below the end without a chunk reads as zeros.
//!
//! A truncate leaves no garbage chunks past the end, even when it fails or
//! the process dies half way: it deletes the pages it cuts before it stores
//! the smaller size. A file delete likewise removes the pages, lowest first,
//! before the metadata, so it leaves no chunks without a file. Garbage can
//! still exist after a failed (or interrupted) multi-batch write, or
//! deletion after a shrinking atomic commit (the cut pages belong to the old
//! state until the commit, so they cannot go first). SQLite makes neither:
//! it never truncates inside a batch (it shrinks the database with a plain
//! truncate once the transaction is committed), and its writes touch at
//! most two pages, one batch unless `max_batch_keys` is below 3. A handle
//! remembers the page range it may have left behind and deletes it before
//! growing the file over it with a gap (a region it does not write). A
//! crash loses that memory: such leftovers stay invisible until the file
//! grows over them, which SQLite mostly does by writing every page (main
//! file, journal and WAL grow sequentially).

use std::cmp::{max, min};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::format::{FileMeta, FileTag, MAX_FILE_SIZE, PAGE_SIZE, chunk_key, meta_key};
use crate::kv::{KvError, KvLimits, KvStore};
use crate::sqlite::{self, HEADER_MAGIC};

/// A failed file operation: the SQLite result code to hand the pager, and
/// the original store error (if a store call failed) for the caller.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} (SQLite code {code})")]
pub struct VfsError {
    code: i32,
    message: String,
    #[source]
    kv: Option<KvError>,
}

impl VfsError {
    /// An error with a SQLite `code` and no store error behind it.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        VfsError {
            code,
            message: message.into(),
            kv: None,
        }
    }

    /// An error caused by the store failure `kv`.
    ///
    /// `code` is the operation's code (`SQLITE_IOERR_WRITE`, ...), except
    /// that a full store ([`KvError::is_storage_full`]) is always
    /// `SQLITE_FULL`, as a full disk is for SQLite's own VFS: SQLite then
    /// gives up at once instead of retrying the commit through its rollback
    /// journal, so the caller sees this error and not a later one.
    pub fn from_kv(code: i32, message: impl Into<String>, kv: KvError) -> Self {
        VfsError {
            code: if kv.is_storage_full() {
                sqlite::SQLITE_FULL
            } else {
                code
            },
            message: message.into(),
            kv: Some(kv),
        }
    }

    /// The (extended) SQLite result code.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// What failed, in words.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The store error that caused this one, if any.
    pub fn kv_error(&self) -> Option<&KvError> {
        self.kv.as_ref()
    }

    /// Takes the store error out.
    pub fn into_kv_error(self) -> Option<KvError> {
        self.kv
    }
}

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The whole buffer was read from the file.
    Full,
    /// The read reached the end of the file; the rest of the buffer was
    /// zero-filled (SQLite expects `SQLITE_IOERR_SHORT_READ`).
    Short,
}

/// Pages read ahead together with the metadata when a file is opened.
const READ_AHEAD_PAGES: u64 = 8;

/// Most pages a sequential run of reads keeps fetched ahead of the reader:
/// 64 × 4 KiB = 256 KiB per open file.
const MAX_RUN_AHEAD: usize = 64;

/// Sidecar files whose existence a main file probes when it opens.
const SIDECAR_PROBES: [FileTag; 2] = [FileTag::Journal, FileTag::Wal];

const PAGE: u64 = PAGE_SIZE as u64;

static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

/// Number of pages holding `size` bytes.
fn pages_for(size: u64) -> u64 {
    size.div_ceil(PAGE)
}

/// Page index as stored in keys; every page of a file below
/// [`MAX_FILE_SIZE`] fits.
fn page_index(page: u64) -> u32 {
    debug_assert!(page < (1 << 32), "page {page} beyond the u32 index space");
    page as u32
}

/// The page size recorded in a SQLite database header, if `page` starts
/// with one. Every chunk holds one SQLite page, so a database written with
/// another page size cannot be served and is refused at open.
fn sqlite_page_size(page: &[u8]) -> Option<u64> {
    if page.len() < 18 || !page.starts_with(HEADER_MAGIC) {
        return None;
    }
    // Stored big-endian at offset 16; 1 means 65536.
    match u16::from_be_bytes([page[16], page[17]]) {
        1 => Some(65_536),
        size => Some(u64::from(size)),
    }
}

/// Pages only partly covered by `offset..end` (at most two).
fn partial_pages(offset: u64, end: u64) -> Vec<u64> {
    let first = offset / PAGE;
    let last = (end - 1) / PAGE;
    let mut pages = Vec::with_capacity(2);
    if !offset.is_multiple_of(PAGE) || end < (first + 1) * PAGE {
        pages.push(first);
    }
    if last != first && !end.is_multiple_of(PAGE) {
        pages.push(last);
    }
    pages
}

/// Copies the part of `data` (placed at `offset`) that falls into `page`.
fn copy_into_page(page: u64, buf: &mut [u8], data: &[u8], offset: u64) {
    let page_start = page * PAGE;
    let end = offset + data.len() as u64;
    let lo = max(offset, page_start);
    let hi = min(end, page_start + PAGE);
    buf[(lo - page_start) as usize..(hi - page_start) as usize]
        .copy_from_slice(&data[(lo - offset) as usize..(hi - offset) as usize]);
}

/// Deletes the chunks of `pages` of file `tag` from the lowest up, in
/// batches within `limits`, then (with `and_meta`) the file's metadata, in
/// the last batch if it has room. Each batch is atomic, so a crash leaves
/// the region deleted from its start, and the metadata until the very end.
async fn delete_upward(
    store: &dyn KvStore,
    tag: FileTag,
    limits: KvLimits,
    pages: Range<u64>,
    and_meta: bool,
) -> Result<(), KvError> {
    let limit = limits.max_batch_keys.max(1);
    let mut lo = pages.start;
    let mut meta_pending = and_meta;
    loop {
        let hi = min(pages.end, lo.saturating_add(limit as u64));
        let mut keys: Vec<Bytes> = (lo..hi)
            .map(|page| chunk_key(tag, page_index(page)))
            .collect();
        let last = hi >= pages.end;
        if last && meta_pending && keys.len() < limit {
            keys.push(meta_key(tag));
            meta_pending = false;
        }
        if !keys.is_empty() {
            store.delete_batch(&keys).await?;
        }
        if last {
            break;
        }
        lo = hi;
    }
    if meta_pending {
        store.delete_batch(&[meta_key(tag)]).await?;
    }
    Ok(())
}

/// State of an open atomic write batch (`SQLITE_FCNTL_BEGIN_ATOMIC_WRITE`).
#[derive(Debug)]
struct AtomicBatch {
    /// Size as seen inside the batch.
    size: u64,
    /// Smallest size the batch truncated to: stored bytes at or beyond it
    /// are hidden (read as zeros) unless a dirty page overrides them.
    min_size: u64,
    /// Full page images written in the batch, all below `pages_for(size)`.
    dirty: BTreeMap<u64, Box<[u8]>>,
}

/// Read-ahead for a sequential run of reads.
///
/// SQLite reads a large blob by walking its chain of overflow pages, one
/// page per read, and those pages are mostly consecutive. Fetching one page
/// per store call makes a 10 MiB blob cost 2,500 round trips, so a read
/// that continues the previous one fetches, in the same `get_batch`, the
/// pages that follow it: one at first, twice as many at each further call,
/// up to [`MAX_RUN_AHEAD`] (and within the store's `max_batch_keys`). A
/// read anywhere else ends the run and releases the pages, so point reads
/// fetch nothing extra.
#[derive(Debug)]
struct RunAhead {
    /// Byte offset just past the previous read: a read starting there
    /// continues the run.
    next: Option<u64>,
    /// Pages the next store call of the run fetches beyond what it needs.
    window: usize,
    /// Pages fetched and not yet read to their end: the stored image, or
    /// `None` for a page without a chunk (it reads as zeros). Only pages
    /// the file holds as stored; anything that changes the file clears it.
    pages: BTreeMap<u64, Option<Bytes>>,
}

impl RunAhead {
    const fn new() -> Self {
        RunAhead {
            next: None,
            window: 1,
            pages: BTreeMap::new(),
        }
    }

    /// Whether a read at `offset`, starting in page `first`, continues the
    /// run: it starts where the last read ended, or in a page read ahead
    /// (SQLite skips the pages its own cache holds).
    fn continues(&self, offset: u64, first: u64) -> bool {
        self.next == Some(offset) || self.pages.contains_key(&first)
    }

    /// Keeps only the pages from `page` on.
    fn drop_before(&mut self, page: u64) {
        self.pages = self.pages.split_off(&page);
    }
}

/// One open file whose pages live in a [`KvStore`].
///
/// Not shareable between tasks by design: SQLite serialises calls on one
/// file handle. The handle assumes it is the only writer of its file while
/// open (the registry allows one database per name, and a database has one
/// connection): it caches the size, the pages read ahead at open, the
/// last page it wrote (so sequential journal and WAL appends need no
/// read-modify-write round trip) and up to 64 pages fetched ahead of a
/// sequential run of reads (see [`read`](Self::read)). A VFS that lets
/// another handle change the file must call
/// [`drop_prefetch`](Self::drop_prefetch) when it may have.
pub struct KvFile {
    store: Arc<dyn KvStore>,
    tag: FileTag,
    /// Committed size (also the stored metadata once `meta_stored`).
    size: u64,
    limits: KvLimits,
    /// False for a created file whose metadata was not written yet.
    meta_stored: bool,
    /// Stored page images known to be current: read ahead at open, or the
    /// last page written. A read to the end of a page consumes it.
    prefetch: HashMap<u64, Bytes>,
    /// Pages fetched ahead of a sequential run of reads.
    ahead: RunAhead,
    /// Most pages `ahead` fetches beyond a read (at most [`MAX_RUN_AHEAD`]).
    run_ahead_limit: usize,
    /// Pages at or past the end that may still hold garbage chunks.
    stale: Option<Range<u64>>,
    batch: Option<AtomicBatch>,
    /// For a main file: whether its sidecar files existed when it was opened.
    probed: Vec<(FileTag, bool)>,
}

impl std::fmt::Debug for KvFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvFile")
            .field("tag", &self.tag)
            .field("size", &self.size())
            .field("in_atomic", &self.in_atomic())
            .field("meta_stored", &self.meta_stored)
            .field("stale", &self.stale)
            .finish_non_exhaustive()
    }
}

impl KvFile {
    /// Opens file `tag` of the database held by `store`.
    ///
    /// Reads the metadata and the first pages in one `get_batch`, so
    /// opening an existing database and reading its header costs one round
    /// trip. A missing file is `SQLITE_CANTOPEN` unless `create`. A created
    /// main file with `seed_page1` (exactly [`PAGE_SIZE`] bytes, a valid
    /// empty database page 1) is stored with that page in one `put_batch`;
    /// any other created file starts empty, and its metadata is written
    /// lazily by the first write, truncate or sync (so merely opening a
    /// journal costs no write; [`exists`](Self::exists) is false until then).
    /// `seed_page1` is ignored for existing files and other tags.
    pub async fn open(
        store: Arc<dyn KvStore>,
        tag: FileTag,
        create: bool,
        seed_page1: Option<&[u8]>,
    ) -> Result<KvFile, VfsError> {
        let limits = store.limits();
        if limits.max_value_bytes < PAGE_SIZE || limits.max_batch_keys < 2 {
            return Err(VfsError::new(
                sqlite::SQLITE_CANTOPEN,
                format!(
                    "store limits {limits:?} too small: need values of {PAGE_SIZE} bytes and 2 keys per batch"
                ),
            ));
        }
        if let Some(seed) = seed_page1
            && seed.len() != PAGE_SIZE
        {
            return Err(VfsError::new(
                sqlite::SQLITE_MISUSE,
                format!("seed page has {} bytes, expected {PAGE_SIZE}", seed.len()),
            ));
        }
        // A main file also probes its journal and WAL in the same call: SQLite
        // asks whether they exist (hot-journal check) before its first read.
        let probes: &[FileTag] = if tag == FileTag::Main && limits.max_batch_keys >= 4 {
            &SIDECAR_PROBES
        } else {
            &[]
        };
        let read_ahead = min(
            READ_AHEAD_PAGES,
            (limits.max_batch_keys - 1 - probes.len()) as u64,
        );
        let mut keys = Vec::with_capacity(1 + read_ahead as usize + probes.len());
        keys.push(meta_key(tag));
        keys.extend((0..read_ahead).map(|page| chunk_key(tag, page_index(page))));
        keys.extend(probes.iter().map(|t| meta_key(*t)));
        let mut values = store.get_batch(&keys).await.map_err(|e| {
            VfsError::from_kv(sqlite::SQLITE_CANTOPEN, format!("open {tag:?} file"), e)
        })?;
        if values.len() != keys.len() {
            return Err(VfsError::new(
                sqlite::SQLITE_CANTOPEN,
                format!(
                    "store returned {} values for {} keys",
                    values.len(),
                    keys.len()
                ),
            ));
        }
        let probed: Vec<(FileTag, bool)> = probes
            .iter()
            .zip(values.split_off(values.len() - probes.len()))
            .map(|(t, v)| (*t, v.is_some()))
            .collect();
        let mut values = values.into_iter();
        let meta = values.next().flatten();
        let mut file = KvFile {
            store,
            tag,
            size: 0,
            limits,
            meta_stored: false,
            prefetch: HashMap::new(),
            ahead: RunAhead::new(),
            run_ahead_limit: MAX_RUN_AHEAD,
            stale: None,
            batch: None,
            probed,
        };
        if let Some(meta) = meta {
            let meta = FileMeta::decode(&meta).map_err(|e| {
                VfsError::new(
                    sqlite::SQLITE_CORRUPT,
                    format!("{tag:?} file metadata: {e}"),
                )
            })?;
            file.size = meta.size;
            file.meta_stored = true;
            let live = pages_for(meta.size);
            file.prefetch = (0..read_ahead)
                .zip(values)
                .filter_map(|(page, value)| Some((page, value?)))
                .filter(|(page, _)| *page < live)
                .collect();
            if tag == FileTag::Main
                && let Some(page) = file.prefetch.get(&0)
                && let Some(found) = sqlite_page_size(page)
                && found != PAGE
            {
                return Err(VfsError::new(
                    sqlite::SQLITE_CANTOPEN,
                    format!(
                        "database page size is {found}, this VFS stores {PAGE_SIZE}-byte pages"
                    ),
                ));
            }
            return Ok(file);
        }
        if !create {
            return Err(VfsError::new(
                sqlite::SQLITE_CANTOPEN,
                format!("{tag:?} file does not exist"),
            ));
        }
        // Chunks without metadata are leftovers of a created file's first
        // write that failed after some of its batches, or of a delete
        // interrupted by a crash in an earlier version (it removed the
        // metadata first).
        if let Some(found) = (0..read_ahead)
            .zip(values)
            .filter_map(|(page, value)| value.map(|_| page))
            .last()
        {
            file.stale = Some(0..found + 1);
        }
        if let (FileTag::Main, Some(seed)) = (tag, seed_page1) {
            let page = Bytes::copy_from_slice(seed);
            let entries = [
                (chunk_key(tag, 0), page.clone()),
                (meta_key(tag), FileMeta { size: PAGE }.encode()),
            ];
            file.store.put_batch(&entries).await.map_err(|e| {
                VfsError::from_kv(
                    sqlite::SQLITE_CANTOPEN,
                    "store seed page of new database",
                    e,
                )
            })?;
            file.size = PAGE;
            file.meta_stored = true;
            file.trim_stale();
            file.prefetch.insert(0, page);
        }
        Ok(file)
    }

    /// For a main file, whether the sidecar file `tag` (journal or WAL)
    /// existed when this file was opened: its metadata was probed in the
    /// same call. `None` for other files and tags. A caller that sees every
    /// change to the sidecar (the VFS that owns the database) can answer
    /// SQLite's existence check from this without a round trip.
    pub fn sidecar_existed_at_open(&self, tag: FileTag) -> Option<bool> {
        self.probed
            .iter()
            .find_map(|(t, exists)| (*t == tag).then_some(*exists))
    }

    /// Whether file `tag` exists in `store` (its metadata is stored).
    /// Store failures are `SQLITE_IOERR_ACCESS`.
    pub async fn exists(store: &Arc<dyn KvStore>, tag: FileTag) -> Result<bool, VfsError> {
        let values = store.get_batch(&[meta_key(tag)]).await.map_err(|e| {
            VfsError::from_kv(
                sqlite::SQLITE_IOERR_ACCESS,
                format!("check {tag:?} file exists"),
                e,
            )
        })?;
        Ok(matches!(values.first(), Some(Some(_))))
    }

    /// Deletes file `tag` from `store`: its pages from the lowest up, in
    /// batches within the limits, and the metadata last (in the batch of the
    /// highest pages when there is room). Deleting a missing file is an error
    /// with `SQLITE_IOERR_DELETE_NOENT`, what SQLite's `xDelete` expects;
    /// store failures are `SQLITE_IOERR_DELETE`.
    ///
    /// The order is the one of a shrinking [`truncate`](Self::truncate), for
    /// the same reasons. A crash (or failure) in the middle leaves the file
    /// with its old size and its pages reading zeros from the start, never
    /// chunks without a file: a new file of the same tag would not know
    /// about those, and growing it with a gap would serve them. And a
    /// rollback journal, whose deletion is the commit of
    /// `journal_mode=DELETE`, loses its header in the first batch: a crash
    /// leaves either the whole journal (SQLite finds it hot and rolls the
    /// transaction back) or one whose first byte is zero (not hot: the
    /// commit stands), never a hot journal missing records. Retrying the
    /// delete finishes it.
    pub async fn delete(store: &Arc<dyn KvStore>, tag: FileTag) -> Result<(), VfsError> {
        let fail = |e| {
            VfsError::from_kv(
                sqlite::SQLITE_IOERR_DELETE,
                format!("delete {tag:?} file"),
                e,
            )
        };
        let values = store.get_batch(&[meta_key(tag)]).await.map_err(fail)?;
        let Some(Some(meta)) = values.into_iter().next() else {
            return Err(VfsError::new(
                sqlite::SQLITE_IOERR_DELETE_NOENT,
                format!("{tag:?} file does not exist"),
            ));
        };
        let size = FileMeta::decode(&meta)
            .map_err(|e| {
                VfsError::new(
                    sqlite::SQLITE_IOERR_DELETE,
                    format!("{tag:?} file metadata: {e}"),
                )
            })?
            .size;
        delete_upward(
            store.as_ref(),
            tag,
            store.limits(),
            0..pages_for(size),
            true,
        )
        .await
        .map_err(fail)
    }

    /// Which file of the database this is.
    pub fn tag(&self) -> FileTag {
        self.tag
    }

    /// The store holding the file.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    /// The store limits read at open.
    pub fn limits(&self) -> KvLimits {
        self.limits
    }

    /// Current size in bytes; inside an atomic batch, the batch's size.
    pub fn size(&self) -> u64 {
        self.batch.as_ref().map_or(self.size, |batch| batch.size)
    }

    /// True between [`begin_atomic`](Self::begin_atomic) and the commit or
    /// rollback.
    pub fn in_atomic(&self) -> bool {
        self.batch.is_some()
    }

    /// Forgets the cached page images (read ahead at open or during a
    /// sequential run of reads, or last written). Only needed when another
    /// handle may have changed the file since (for example when SQLite
    /// takes a lock while several connections share a file), so no stale
    /// page is served.
    pub fn drop_prefetch(&mut self) {
        self.forget_pages();
    }

    /// Caps how many pages a sequential run of reads fetches ahead of the
    /// reader: at most 64 (the default, 256 KiB), and 0 turns run read-ahead
    /// off (each read then fetches only the pages it needs). For
    /// measurements and stores where a larger `get_batch` costs more than
    /// the round trips it saves.
    pub fn set_run_ahead_limit(&mut self, pages: usize) {
        self.run_ahead_limit = min(pages, MAX_RUN_AHEAD);
        self.ahead = RunAhead::new();
    }

    /// Forgets every cached page image: the file is about to change (or
    /// may have been changed by someone else).
    fn forget_pages(&mut self) {
        self.prefetch.clear();
        self.ahead = RunAhead::new();
    }

    /// Reads `buf.len()` bytes at `offset`.
    ///
    /// SQLite's rule for `xRead`: "If xRead() returns SQLITE_IOERR_SHORT_READ
    /// it must also fill in the unread portion of the buffer with zeros. A
    /// VFS that fails to zero-fill short reads might seem to work. However,
    /// failure to zero-fill short reads will eventually lead to database
    /// corruption." So a read past the end zero-fills the rest of `buf` and
    /// returns [`ReadOutcome::Short`]. Inside an atomic batch, reads see the
    /// batch's writes. Store failures are `SQLITE_IOERR_READ`.
    ///
    /// A read that starts where the previous one ended (or in a page read
    /// ahead) continues a sequential run, such as SQLite walking the
    /// overflow pages of a large blob: when it needs a store call, that
    /// `get_batch` also fetches the pages that follow, one at first and
    /// twice as many at each further call of the run, up to 64 pages, and
    /// the next reads are served from them. Reading `n` consecutive pages
    /// costs about `log2(min(n, 64)) + n / 64` round trips instead of `n`.
    /// Any other read ends the run and drops those pages, so a point read
    /// fetches only its own pages; any write, truncate or batch commit or
    /// rollback drops them too.
    pub async fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<ReadOutcome, VfsError> {
        if buf.is_empty() {
            return Ok(ReadOutcome::Full);
        }
        let size = self.size();
        let end = offset.saturating_add(buf.len() as u64);
        let avail_end = min(end, size);
        if offset >= avail_end {
            buf.fill(0);
            return Ok(ReadOutcome::Short);
        }
        let first = offset / PAGE;
        let last = (avail_end - 1) / PAGE;
        let in_run = self.ahead.continues(offset, first);
        if in_run {
            self.ahead.drop_before(first);
        } else {
            self.ahead = RunAhead::new();
        }
        let need: Vec<u64> = (first..=last)
            .filter(|&page| {
                self.dirty_page(page).is_none()
                    && self.stored_visible(page)
                    && !self.ahead.pages.contains_key(&page)
            })
            .collect();
        // Whether the read uses the last page to its end (or to the end of
        // the file); if not, the run keeps it for the next read.
        let last_used = avail_end >= min((last + 1) * PAGE, size);
        let extra = if in_run {
            self.run_ahead_pages(&need, last, !last_used)
        } else {
            0..0
        };
        let mut want = need;
        want.extend(extra.clone());
        let mut fetched = self.fetch(&want, sqlite::SQLITE_IOERR_READ, "read").await?;
        for page in first..=last {
            let src: &[u8] = if let Some(dirty) = self.dirty_page(page) {
                dirty
            } else if !self.stored_visible(page) {
                &ZERO_PAGE
            } else if let Some(value) = fetched.get(&page) {
                value
            } else if let Some(Some(value)) = self.ahead.pages.get(&page) {
                value
            } else {
                &ZERO_PAGE
            };
            let page_start = page * PAGE;
            let lo = max(offset, page_start);
            let hi = min(avail_end, page_start + PAGE);
            buf[(lo - offset) as usize..(hi - offset) as usize]
                .copy_from_slice(&src[(lo - page_start) as usize..(hi - page_start) as usize]);
            // A page read to its end (or to the end of the file) was used.
            if avail_end >= min(page_start + PAGE, size) {
                self.prefetch.remove(&page);
            }
        }
        // Keep what the run reads next: the last page unless it was read to
        // its end, and the pages fetched ahead.
        self.ahead
            .drop_before(if last_used { last + 1 } else { last });
        if !last_used && want.contains(&last) {
            self.ahead.pages.insert(last, fetched.remove(&last));
        }
        if !extra.is_empty() {
            for page in extra {
                self.ahead.pages.insert(page, fetched.remove(&page));
            }
            self.ahead.window = min(self.ahead.window * 2, MAX_RUN_AHEAD);
        }
        self.ahead.next = Some(end);
        buf[(avail_end - offset) as usize..].fill(0);
        Ok(if avail_end < end {
            ReadOutcome::Short
        } else {
            ReadOutcome::Full
        })
    }

    /// Writes `data` at `offset`, growing the file if needed (a gap between
    /// the old end and `offset` reads as zeros).
    ///
    /// Pages only partly covered are read first (in one `get_batch`); whole
    /// pages are written without reading. Outside an atomic batch the pages
    /// and the new size go to the store in as few `put_batch` calls as the
    /// limits allow, the size (with the old last page) in the last one; a
    /// failure may leave some pages written — SQLite's journal covers that.
    /// Inside a batch the pages are only buffered. Writing past
    /// [`MAX_FILE_SIZE`] is `SQLITE_FULL`; store failures are
    /// `SQLITE_IOERR_WRITE`.
    pub async fn write(&mut self, data: &[u8], offset: u64) -> Result<(), VfsError> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= MAX_FILE_SIZE)
            .ok_or_else(|| {
                VfsError::new(
                    sqlite::SQLITE_FULL,
                    format!(
                        "write of {} bytes at {offset} exceeds the maximum file size {MAX_FILE_SIZE}",
                        data.len()
                    ),
                )
            })?;
        let need: Vec<u64> = partial_pages(offset, end)
            .into_iter()
            .filter(|&page| self.dirty_page(page).is_none() && self.stored_visible(page))
            .collect();
        let mut base = self
            .fetch(&need, sqlite::SQLITE_IOERR_WRITE, "write")
            .await?;
        self.forget_pages();
        let first = offset / PAGE;
        let last = (end - 1) / PAGE;
        let page_image = |page: u64, base: &mut HashMap<u64, Bytes>| -> Vec<u8> {
            let mut image = base
                .remove(&page)
                .map_or_else(|| vec![0; PAGE_SIZE], |value| value.to_vec());
            copy_into_page(page, &mut image, data, offset);
            image
        };
        if let Some(batch) = &mut self.batch {
            for page in first..=last {
                if let Some(dirty) = batch.dirty.get_mut(&page) {
                    copy_into_page(page, dirty, data, offset);
                } else {
                    let image = page_image(page, &mut base);
                    batch.dirty.insert(page, image.into_boxed_slice());
                }
            }
            batch.size = max(batch.size, end);
            return Ok(());
        }

        let old_pages = pages_for(self.size);
        if first > old_pages {
            self.purge_stale(old_pages..first, sqlite::SQLITE_IOERR_WRITE)
                .await?;
        }
        let new_size = max(self.size, end);
        // The old last page, if partly beyond the old end, is stored with
        // the new size so its tail never shows garbage.
        let straddle = (!self.size.is_multiple_of(PAGE)).then_some(self.size / PAGE);
        let mut entries = Vec::with_capacity((last - first + 2) as usize);
        let mut tail = Vec::with_capacity(2);
        let mut last_image = Bytes::new();
        for page in first..=last {
            let image = Bytes::from(page_image(page, &mut base));
            if page == last {
                last_image = image.clone();
            }
            let entry = (chunk_key(self.tag, page_index(page)), image);
            if Some(page) == straddle {
                tail.push(entry);
            } else {
                entries.push(entry);
            }
        }
        entries.append(&mut tail);
        if new_size != self.size || !self.meta_stored {
            entries.push((meta_key(self.tag), FileMeta { size: new_size }.encode()));
        }
        let groups: Vec<&[(Bytes, Bytes)]> =
            entries.rchunks(self.limits.max_batch_keys).rev().collect();
        for (i, group) in groups.iter().enumerate() {
            if let Err(e) = self.store.put_batch(group).await {
                if i > 0 && last + 1 > old_pages {
                    self.add_stale(max(first, old_pages)..last + 1);
                }
                return Err(VfsError::from_kv(
                    sqlite::SQLITE_IOERR_WRITE,
                    format!(
                        "write {} bytes at {offset} to {:?} file",
                        data.len(),
                        self.tag
                    ),
                    e,
                ));
            }
        }
        self.size = new_size;
        self.meta_stored = true;
        self.trim_stale();
        // The next sequential write starts in this page: keep its image.
        self.prefetch.insert(last, last_image);
        Ok(())
    }

    /// Sets the file size to `size`.
    ///
    /// Shrinking first deletes the pages past the new end, from the lowest
    /// up, in batches within the limits, and only then stores the metadata
    /// (together with the new last page, its tail zeroed when `size` is not
    /// on a page boundary). So no chunk past the end outlives a crash in the
    /// middle, where nobody would remember to delete it before a later
    /// write grows the file over it with a gap. The price is that a crash
    /// (or a failed deletion, reported as `SQLITE_IOERR_TRUNCATE`) may leave
    /// the old size with the region being cut reading zeros from its start.
    /// Those are pages SQLite was discarding, and it copes with a truncate
    /// that did not happen atomically (it journals every page a commit
    /// truncates away). The lowest-first order matters for a rollback
    /// journal truncated to 0, the commit of `journal_mode=TRUNCATE`: its
    /// header goes first, so a crash leaves a journal SQLite no longer finds
    /// hot (the commit stands), never a hot journal missing its last
    /// records, whose partial playback would corrupt the database.
    /// Growing writes only the metadata. Inside an atomic batch the change
    /// is buffered.
    pub async fn truncate(&mut self, size: u64) -> Result<(), VfsError> {
        if size > MAX_FILE_SIZE {
            return Err(VfsError::new(
                sqlite::SQLITE_FULL,
                format!("truncate to {size} exceeds the maximum file size {MAX_FILE_SIZE}"),
            ));
        }
        let cur = self.size();
        let fail = |e| {
            VfsError::from_kv(
                sqlite::SQLITE_IOERR_TRUNCATE,
                format!("truncate to {size}"),
                e,
            )
        };
        // The new last page, if the file shrinks to the middle of it.
        let cut = (size < cur && !size.is_multiple_of(PAGE)).then_some(size / PAGE);
        let need: Vec<u64> = cut
            .filter(|&page| self.dirty_page(page).is_none() && self.stored_visible(page))
            .into_iter()
            .collect();
        let mut base = self
            .fetch(&need, sqlite::SQLITE_IOERR_TRUNCATE, "truncate")
            .await?;
        self.forget_pages();
        let zero_tail = |image: &mut [u8]| image[(size % PAGE) as usize..].fill(0);

        if let Some(batch) = &mut self.batch {
            if size < batch.size {
                batch.dirty.split_off(&pages_for(size));
                if let Some(page) = cut {
                    let image = batch.dirty.entry(page).or_insert_with(|| {
                        base.remove(&page).map_or_else(
                            || vec![0; PAGE_SIZE].into_boxed_slice(),
                            |value| value.to_vec().into_boxed_slice(),
                        )
                    });
                    zero_tail(image);
                }
                batch.min_size = min(batch.min_size, size);
            }
            batch.size = size;
            return Ok(());
        }

        let old_size = self.size;
        if size == old_size && self.meta_stored {
            return Ok(());
        }
        if size > old_size {
            self.purge_stale(
                pages_for(old_size)..pages_for(size),
                sqlite::SQLITE_IOERR_TRUNCATE,
            )
            .await?;
        }
        if size < old_size {
            self.delete_cut(pages_for(size)..pages_for(old_size))
                .await
                .map_err(fail)?;
        }
        let mut entries = Vec::with_capacity(2);
        if let Some(page) = cut {
            let mut image = base
                .remove(&page)
                .map_or_else(|| vec![0; PAGE_SIZE], |value| value.to_vec());
            zero_tail(&mut image);
            entries.push((chunk_key(self.tag, page_index(page)), Bytes::from(image)));
        }
        entries.push((meta_key(self.tag), FileMeta { size }.encode()));
        self.store.put_batch(&entries).await.map_err(fail)?;
        self.size = size;
        self.meta_stored = true;
        self.trim_stale();
        if size < old_size
            && let Some(stale) = self.stale.clone()
        {
            // Garbage an earlier failure left past the old end.
            self.purge_stale(stale, sqlite::SQLITE_IOERR_TRUNCATE)
                .await?;
        }
        Ok(())
    }

    /// Deletes the stored pages in `pages`, still below the end, from the
    /// lowest up (see [`truncate`](Self::truncate) for why that order).
    async fn delete_cut(&self, pages: Range<u64>) -> Result<(), KvError> {
        delete_upward(self.store.as_ref(), self.tag, self.limits, pages, false).await
    }

    /// Makes the file durable. Every acknowledged store call already is, so
    /// this only stores the metadata of a created file nothing was written
    /// to yet, and retries deleting garbage pages an earlier failure left
    /// past the end. A no-op inside an atomic batch. Store failures are
    /// `SQLITE_IOERR_FSYNC`.
    pub async fn sync(&mut self) -> Result<(), VfsError> {
        if self.batch.is_some() {
            return Ok(());
        }
        if let Some(stale) = self.stale.clone() {
            self.purge_stale(stale, sqlite::SQLITE_IOERR_FSYNC).await?;
        }
        if !self.meta_stored {
            let entries = [(meta_key(self.tag), FileMeta { size: self.size }.encode())];
            self.store.put_batch(&entries).await.map_err(|e| {
                VfsError::from_kv(
                    sqlite::SQLITE_IOERR_FSYNC,
                    format!("sync {:?} file", self.tag),
                    e,
                )
            })?;
            self.meta_stored = true;
        }
        Ok(())
    }

    /// Starts an atomic write batch (`SQLITE_FCNTL_BEGIN_ATOMIC_WRITE`):
    /// writes and truncates are buffered until
    /// [`commit_atomic`](Self::commit_atomic). Nested batches are refused
    /// with `SQLITE_IOERR_BEGIN_ATOMIC`.
    pub fn begin_atomic(&mut self) -> Result<(), VfsError> {
        if self.batch.is_some() {
            return Err(VfsError::new(
                sqlite::SQLITE_IOERR_BEGIN_ATOMIC,
                "an atomic write batch is already open",
            ));
        }
        self.batch = Some(AtomicBatch {
            size: self.size,
            min_size: self.size,
            dirty: BTreeMap::new(),
        });
        Ok(())
    }

    /// Commits the atomic batch (`SQLITE_FCNTL_COMMIT_ATOMIC_WRITE`) with
    /// ONE `put_batch` holding every changed page and the size.
    ///
    /// If that batch would exceed the store's `max_batch_keys`, it fails with
    /// `SQLITE_IOERR_COMMIT_ATOMIC` without calling the store, so SQLite
    /// rolls the batch back and retries the transaction with its journal.
    /// A store failure is also `SQLITE_IOERR_COMMIT_ATOMIC` (with the
    /// [`KvError`]); the store is then unchanged and the batch stays open
    /// until [`rollback_atomic`](Self::rollback_atomic). Pages a shrinking
    /// batch left past the end are deleted after the commit; a failure there
    /// does not fail the commit (they are retried later).
    pub async fn commit_atomic(&mut self) -> Result<(), VfsError> {
        let Some(batch) = &self.batch else {
            return Err(VfsError::new(
                sqlite::SQLITE_MISUSE,
                "commit without an open atomic write batch",
            ));
        };
        let new_pages = pages_for(batch.size);
        let before_pages = pages_for(self.size);
        let hidden_from = pages_for(batch.min_size);
        // Pages below the new end the batch did not write but whose stored
        // content must read as zeros: truncated-away pages and garbage.
        let mut zero_ranges = Vec::with_capacity(2);
        zero_ranges.push(hidden_from..min(before_pages, new_pages));
        if let Some(stale) = &self.stale {
            zero_ranges.push(max(stale.start, hidden_from)..min(stale.end, new_pages));
        }
        zero_ranges.retain(|range| !range.is_empty());
        let zero_count: u64 = zero_ranges
            .iter()
            .map(|range| {
                (range.end - range.start) - batch.dirty.range(range.clone()).count() as u64
            })
            .sum();
        let total = (batch.dirty.len() as u64)
            .saturating_add(zero_count)
            .saturating_add(1);
        if total > self.limits.max_batch_keys as u64 {
            return Err(VfsError::new(
                sqlite::SQLITE_IOERR_COMMIT_ATOMIC,
                format!(
                    "atomic batch of {total} keys exceeds the store limit of {}",
                    self.limits.max_batch_keys
                ),
            ));
        }
        if total == 1 && batch.size == self.size && self.meta_stored {
            self.batch = None;
            return Ok(());
        }
        let mut entries = Vec::with_capacity(total as usize);
        for (&page, image) in &batch.dirty {
            entries.push((
                chunk_key(self.tag, page_index(page)),
                Bytes::copy_from_slice(image),
            ));
        }
        for range in &zero_ranges {
            for page in range.clone() {
                if !batch.dirty.contains_key(&page) {
                    entries.push((
                        chunk_key(self.tag, page_index(page)),
                        Bytes::from_static(&ZERO_PAGE),
                    ));
                }
            }
        }
        entries.push((meta_key(self.tag), FileMeta { size: batch.size }.encode()));
        if let Err(e) = self.store.put_batch(&entries).await {
            return Err(VfsError::from_kv(
                sqlite::SQLITE_IOERR_COMMIT_ATOMIC,
                format!(
                    "commit atomic batch of {} keys to {:?} file",
                    entries.len(),
                    self.tag
                ),
                e,
            ));
        }
        self.size = batch.size;
        self.batch = None;
        self.meta_stored = true;
        self.forget_pages();
        self.trim_stale();
        if new_pages < before_pages {
            self.add_stale(new_pages..before_pages);
            if let Some(stale) = self.stale.clone() {
                // Committed already; garbage left here is retried later.
                let _ = self
                    .purge_stale(stale, sqlite::SQLITE_IOERR_COMMIT_ATOMIC)
                    .await;
            }
        }
        Ok(())
    }

    /// Abandons the atomic batch (`SQLITE_FCNTL_ROLLBACK_ATOMIC_WRITE`):
    /// drops the buffered pages and restores the size from before
    /// [`begin_atomic`](Self::begin_atomic). Nothing reached the store. A
    /// no-op without a batch.
    pub fn rollback_atomic(&mut self) {
        self.batch = None;
        self.ahead = RunAhead::new();
    }

    /// The buffered image of `page` in the open batch.
    fn dirty_page(&self, page: u64) -> Option<&[u8]> {
        self.batch
            .as_ref()?
            .dirty
            .get(&page)
            .map(|image| &image[..])
    }

    /// Whether the stored chunk of `page` is part of the file as currently
    /// seen (below the end, and not truncated away by the open batch).
    fn stored_visible(&self, page: u64) -> bool {
        let limit = self
            .batch
            .as_ref()
            .map_or(self.size, |batch| batch.min_size);
        page * PAGE < limit
    }

    /// The pages to fetch ahead of a read of a sequential run whose last
    /// page is `last` (kept for the next read if `keep_last`) and that needs
    /// `need` from the store: as many as the
    /// run's window allows, without an extra store call (they fill the last
    /// `get_batch` the read makes anyway, and none is made when the read
    /// needs nothing from the store), within [`MAX_RUN_AHEAD`] buffered
    /// pages and below the end of the file. None inside an atomic batch.
    fn run_ahead_pages(&self, need: &[u64], last: u64, keep_last: bool) -> Range<u64> {
        let start = self
            .ahead
            .pages
            .last_key_value()
            .map_or(last + 1, |(&page, _)| max(page + 1, last + 1));
        let from_store = need
            .iter()
            .filter(|page| !self.prefetch.contains_key(page))
            .count();
        if self.batch.is_some() || from_store == 0 {
            return start..start;
        }
        let limit = self.limits.max_batch_keys;
        let room = (limit - from_store % limit) % limit;
        // Pages still buffered after the read.
        let kept = self.ahead.pages.range(last + 1..).count() + usize::from(keep_last);
        let count = self
            .ahead
            .window
            .min(self.run_ahead_limit)
            .min(room)
            .min(MAX_RUN_AHEAD.saturating_sub(kept));
        let end = min(start + count as u64, pages_for(self.size));
        start..max(start, end)
    }

    /// Loads stored `pages` (prefetched ones without a store call, the rest
    /// with `get_batch` calls within the limits). Missing pages are absent
    /// from the map and read as zeros.
    async fn fetch(
        &self,
        pages: &[u64],
        code: i32,
        what: &str,
    ) -> Result<HashMap<u64, Bytes>, VfsError> {
        let mut found = HashMap::with_capacity(pages.len());
        let mut missing = Vec::new();
        for &page in pages {
            match self.prefetch.get(&page) {
                Some(value) => {
                    found.insert(page, value.clone());
                }
                None => missing.push(page),
            }
        }
        for group in missing.chunks(self.limits.max_batch_keys) {
            let keys: Vec<Bytes> = group
                .iter()
                .map(|&page| chunk_key(self.tag, page_index(page)))
                .collect();
            let values = self.store.get_batch(&keys).await.map_err(|e| {
                VfsError::from_kv(code, format!("{what} {:?} file pages", self.tag), e)
            })?;
            if values.len() != keys.len() {
                return Err(VfsError::new(
                    code,
                    format!(
                        "store returned {} values for {} keys",
                        values.len(),
                        keys.len()
                    ),
                ));
            }
            for (&page, value) in group.iter().zip(values) {
                if let Some(value) = value {
                    found.insert(page, value);
                }
            }
        }
        if let Some((&page, value)) = found.iter().find(|(_, value)| value.len() != PAGE_SIZE) {
            let e = crate::format::FormatError::ChunkLength {
                page: page_index(page),
                len: value.len(),
            };
            return Err(VfsError::new(
                sqlite::SQLITE_CORRUPT,
                format!("{what} {:?} file: {e}", self.tag),
            ));
        }
        Ok(found)
    }

    /// Records pages that may hold garbage chunks past the end.
    fn add_stale(&mut self, pages: Range<u64>) {
        if pages.is_empty() {
            return;
        }
        self.stale = Some(match self.stale.take() {
            Some(old) => min(old.start, pages.start)..max(old.end, pages.end),
            None => pages,
        });
        self.trim_stale();
    }

    /// Drops the stale pages now below the end (they were rewritten).
    fn trim_stale(&mut self) {
        let live = pages_for(self.size);
        self.stale = self
            .stale
            .take()
            .map(|stale| max(stale.start, live)..stale.end)
            .filter(|stale| !stale.is_empty());
    }

    /// Deletes the garbage chunks in `pages`, from the highest down.
    async fn purge_stale(&mut self, pages: Range<u64>, code: i32) -> Result<(), VfsError> {
        let Some(stale) = self.stale.clone() else {
            return Ok(());
        };
        let target = max(stale.start, pages.start)..min(stale.end, pages.end);
        if target.is_empty() {
            return Ok(());
        }
        let limit = self.limits.max_batch_keys as u64;
        let covers_top = target.end == stale.end;
        let mut hi = target.end;
        while hi > target.start {
            let lo = max(target.start, hi.saturating_sub(limit));
            let keys: Vec<Bytes> = (lo..hi)
                .rev()
                .map(|page| chunk_key(self.tag, page_index(page)))
                .collect();
            if let Err(e) = self.store.delete_batch(&keys).await {
                return Err(VfsError::from_kv(
                    code,
                    format!("delete {:?} file pages {lo}..{hi} past the end", self.tag),
                    e,
                ));
            }
            if covers_top {
                // Everything from `lo` up is gone.
                self.stale = Some(stale.start..lo).filter(|s| !s.is_empty());
            }
            hi = lo;
        }
        if !covers_top && target.start == stale.start {
            self.stale = Some(target.end..stale.end);
        }
        Ok(())
    }
}
