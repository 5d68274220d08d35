/*
 * Guest side of the host VFS.
 *
 * SQLite is built with SQLITE_OS_OTHER, so it has no file system of its own:
 * this file registers a VFS ("host") whose every file operation is forwarded
 * to a host import (module "env"). The host keeps the real state (key-value
 * pages through vfs-core) and knows which tenant is running, so the guest
 * never decides what a name means.
 *
 * Rules kept here:
 *  - every guest pointer handed to the host travels with its length;
 *  - files opened without a name (sorter spill files) live in guest memory,
 *    allocated with sqlite3_malloc, so they count against the heap limit and
 *    can never grow host memory;
 *  - a few exported helpers spare the host from juggling guest function
 *    pointers (authorizer, progress handler, destructors);
 *  - every heap allocation is charged to the database the host is running
 *    (shim_set_tenant), so one tenant cannot take the memory of the others;
 *  - built-in functions that SQLite implements in quadratic time are
 *    replaced by linear ones, or by ones that check the time budget as
 *    they go: the progress handler never runs inside a function call, so
 *    a quadratic built-in could outlive any budget.
 */
#define _GNU_SOURCE /* memmem */
#include <stdlib.h>
#include <string.h>
#include "sqlite3.h"

#define IMPORT(n) __attribute__((import_module("env"), import_name(#n)))
#define EXPORT(n) __attribute__((export_name(#n)))

/* ---- host imports ------------------------------------------------------ */

IMPORT(vfs_open) int host_open(const char *name, int name_len, int flags, int *out_id);
IMPORT(vfs_close) int host_close(int id);
IMPORT(vfs_read) int host_read(int id, void *buf, int amt, sqlite3_int64 off);
IMPORT(vfs_write) int host_write(int id, const void *buf, int amt, sqlite3_int64 off);
IMPORT(vfs_truncate) int host_truncate(int id, sqlite3_int64 size);
IMPORT(vfs_sync) int host_sync(int id, int flags);
IMPORT(vfs_file_size) int host_file_size(int id, sqlite3_int64 *out);
IMPORT(vfs_file_control) int host_file_control(int id, int op);
IMPORT(vfs_delete) int host_delete(const char *name, int name_len, int sync_dir);
IMPORT(vfs_access) int host_access(const char *name, int name_len, int flags, int *out);
IMPORT(host_random) void host_random(void *buf, int len);
IMPORT(host_time_ms) sqlite3_int64 host_time_ms(void);
IMPORT(host_sleep) int host_sleep(int micros);
IMPORT(host_progress) int host_progress(void);

/* ---- memory accounting -------------------------------------------------- */

/* Each allocation carries an 8-byte header: the tenant slot it is charged to
 * and its size. Slot 0 is the instance itself (library state), bounded only
 * by SQLite's hard heap limit; slots 1.. are databases, each bounded by the
 * limit the host set for it. The charge follows the block: freeing or
 * resizing it credits the slot that allocated it, whoever runs then.
 *
 * Shares may add up to more than the heap, so each open database also has
 * a reserve: memory up to `reserve` that the others may not take from it.
 * A database past its own reserve is refused a block when the heap left
 * would no longer cover what the other open databases have not yet used of
 * their reserves (at most half the heap is held back that way). */
typedef struct Tenant {
  sqlite3_int64 used;
  sqlite3_int64 limit;
  int open;                 /* counted in `shortfall` */
} Tenant;

static Tenant *tenants;     /* indexed by slot; grown with libc realloc */
static int tenant_cap;
/* The call the host is running: the slot charged for new allocations,
 * and whether a tenant's share (1) or the others' reserves (2) refused a
 * block since the call began. The host sets both around every call: with
 * shim_set_tenant when a slot is first used after it was (re)opened, and
 * otherwise by writing them at the address shim_call_state gives, which
 * spares a crossing into the guest. */
static struct {
  int slot;
  int refused;
} call;
static sqlite3_int64 total_used;   /* every slot's charges, 0 included */
static sqlite3_int64 heap_cap;     /* SQLite's hard heap limit */
static sqlite3_int64 reserve;      /* per open database */
static sqlite3_int64 shortfall;    /* unused reserves of open databases */

#define HEADER 8

static sqlite3_int64 unusedReserve(const Tenant *t) {
  return (t->open && t->used < reserve) ? reserve - t->used : 0;
}

static int charge(int slot, sqlite3_int64 delta) {
  if (slot <= 0 || slot >= tenant_cap) {
    total_used += delta;
    return 1;
  }
  Tenant *t = &tenants[slot];
  sqlite3_int64 before = unusedReserve(t);
  if (delta > 0) {
    if (t->used + delta > t->limit) {
      call.refused = 1;
      return 0;
    }
    sqlite3_int64 others = shortfall - before;
    if (others > heap_cap / 2) others = heap_cap / 2;
    if (t->used + delta > reserve && total_used + delta + others > heap_cap) {
      call.refused = 2;
      return 0;
    }
  }
  t->used += delta;
  total_used += delta;
  shortfall += unusedReserve(t) - before;
  return 1;
}

static void *mMalloc(int n) {
  if (n <= 0 || n > 0x7fffffff - HEADER) return 0;
  if (!charge(call.slot, n)) return 0;
  unsigned int *p = malloc((size_t)n + HEADER);
  if (p == 0) {
    charge(call.slot, -(sqlite3_int64)n);
    return 0;
  }
  p[0] = (unsigned int)call.slot;
  p[1] = (unsigned int)n;
  return (char *)p + HEADER;
}
static void mFree(void *q) {
  if (q == 0) return;
  unsigned int *p = (unsigned int *)((char *)q - HEADER);
  charge((int)p[0], -(sqlite3_int64)p[1]);
  free(p);
}
static int mSize(void *q) {
  return q ? (int)((unsigned int *)((char *)q - HEADER))[1] : 0;
}
static void *mRealloc(void *q, int n) {
  if (q == 0) return mMalloc(n);
  if (n <= 0 || n > 0x7fffffff - HEADER) return 0;
  unsigned int *p = (unsigned int *)((char *)q - HEADER);
  int slot = (int)p[0];
  sqlite3_int64 delta = (sqlite3_int64)n - (sqlite3_int64)p[1];
  if (!charge(slot, delta)) return 0;
  unsigned int *np = realloc(p, (size_t)n + HEADER);
  if (np == 0) {
    charge(slot, -delta);
    return 0;
  }
  np[1] = (unsigned int)n;
  return (char *)np + HEADER;
}
static int mRoundup(int n) { return (n + 7) & ~7; }
static int mInit(void *arg) { (void)arg; return SQLITE_OK; }
static void mShutdown(void *arg) { (void)arg; }

static const sqlite3_mem_methods tenant_mem = {
  mMalloc, mFree, mRealloc, mSize, mRoundup, mInit, mShutdown, 0,
};

/* Charge new allocations to `slot` (0: the instance), whose limit becomes
 * `limit` bytes. Returns 0 if the slot table cannot grow. */
EXPORT(shim_set_tenant) int shim_set_tenant(int slot, sqlite3_int64 limit) {
  if (slot < 0) return 0;
  if (slot >= tenant_cap) {
    int cap = tenant_cap ? tenant_cap : 64;
    while (cap <= slot) cap *= 2;
    Tenant *t = realloc(tenants, (size_t)cap * sizeof(Tenant));
    if (t == 0) return 0;
    memset(t + tenant_cap, 0, (size_t)(cap - tenant_cap) * sizeof(Tenant));
    tenants = t;
    tenant_cap = cap;
  }
  if (slot > 0) {
    Tenant *t = &tenants[slot];
    t->limit = limit;
    if (!t->open) {
      t->open = 1;
      shortfall += unusedReserve(t);
    }
  }
  call.slot = slot;
  call.refused = 0;
  return 1;
}

/* The database of `slot` closed: its reserve is no longer held for it. */
EXPORT(shim_release_tenant) void shim_release_tenant(int slot) {
  if (slot <= 0 || slot >= tenant_cap || !tenants[slot].open) return;
  shortfall -= unusedReserve(&tenants[slot]);
  tenants[slot].open = 0;
}

/* Where the host writes the running call's slot and clears `refused`. */
EXPORT(shim_call_state) void *shim_call_state(void) { return &call; }

/* Bytes charged to `slot` right now. */
EXPORT(shim_tenant_used) sqlite3_int64 shim_tenant_used(int slot) {
  return (slot > 0 && slot < tenant_cap) ? tenants[slot].used : 0;
}

/* Whether a tenant's share (1) or the others' reserves (2) refused an
 * allocation since the last shim_set_tenant. */
EXPORT(shim_refused) int shim_refused(void) { return call.refused; }

/* ---- files ------------------------------------------------------------- */

typedef struct ShimFile {
  sqlite3_file base;
  int id;                    /* host file id (host-backed files) */
  unsigned char *mem;        /* contents (memory files) */
  sqlite3_int64 size, cap;   /* logical size and allocation (memory files) */
} ShimFile;

static int hClose(sqlite3_file *f) { return host_close(((ShimFile *)f)->id); }
static int hRead(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off) {
  return host_read(((ShimFile *)f)->id, buf, amt, off);
}
static int hWrite(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off) {
  return host_write(((ShimFile *)f)->id, buf, amt, off);
}
static int hTruncate(sqlite3_file *f, sqlite3_int64 size) {
  return host_truncate(((ShimFile *)f)->id, size);
}
static int hSync(sqlite3_file *f, int flags) { return host_sync(((ShimFile *)f)->id, flags); }
static int hFileSize(sqlite3_file *f, sqlite3_int64 *out) {
  return host_file_size(((ShimFile *)f)->id, out);
}
/* One connection per file and locking_mode EXCLUSIVE: locks are no-ops. */
static int noLock(sqlite3_file *f, int level) { (void)f; (void)level; return SQLITE_OK; }
static int noReserved(sqlite3_file *f, int *out) { (void)f; *out = 0; return SQLITE_OK; }
static int hFileControl(sqlite3_file *f, int op, void *arg) {
  (void)arg;
  switch (op) {
    case SQLITE_FCNTL_BEGIN_ATOMIC_WRITE:
    case SQLITE_FCNTL_COMMIT_ATOMIC_WRITE:
    case SQLITE_FCNTL_ROLLBACK_ATOMIC_WRITE:
      return host_file_control(((ShimFile *)f)->id, op);
    default:
      return SQLITE_NOTFOUND;
  }
}
static int sectorSize(sqlite3_file *f) { (void)f; return 4096; }
/* Pages are separate values: writing one never disturbs another, and the host
 * can commit a batch of pages in one atomic put. */
static int hDevice(sqlite3_file *f) {
  (void)f;
  return SQLITE_IOCAP_BATCH_ATOMIC | SQLITE_IOCAP_POWERSAFE_OVERWRITE;
}

static const sqlite3_io_methods host_io = {
  1, hClose, hRead, hWrite, hTruncate, hSync, hFileSize, noLock, noLock,
  noReserved, hFileControl, sectorSize, hDevice,
};

/* Memory files: anonymous temporary files (the sorter spills into these). */
static int mClose(sqlite3_file *f) {
  sqlite3_free(((ShimFile *)f)->mem);
  return SQLITE_OK;
}
static int mRead(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off) {
  ShimFile *p = (ShimFile *)f;
  sqlite3_int64 have = p->size > off ? p->size - off : 0;
  if (have >= amt) {
    memcpy(buf, p->mem + off, (size_t)amt);
    return SQLITE_OK;
  }
  if (have > 0) memcpy(buf, p->mem + off, (size_t)have);
  /* SQLite requires short reads to zero-fill the rest of the buffer. */
  memset((char *)buf + have, 0, (size_t)(amt - have));
  return SQLITE_IOERR_SHORT_READ;
}
static int mGrow(ShimFile *p, sqlite3_int64 need) {
  if (need <= p->cap) return SQLITE_OK;
  sqlite3_int64 cap = p->cap ? p->cap : 65536;
  while (cap < need) cap *= 2;
  unsigned char *m = sqlite3_realloc64(p->mem, (sqlite3_uint64)cap);
  if (m == 0) return SQLITE_IOERR_NOMEM;
  p->mem = m;
  p->cap = cap;
  return SQLITE_OK;
}
static int mWrite(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off) {
  ShimFile *p = (ShimFile *)f;
  int rc = mGrow(p, off + amt);
  if (rc != SQLITE_OK) return rc;
  if (off > p->size) memset(p->mem + p->size, 0, (size_t)(off - p->size));
  memcpy(p->mem + off, buf, (size_t)amt);
  if (off + amt > p->size) p->size = off + amt;
  return SQLITE_OK;
}
static int mTruncate(sqlite3_file *f, sqlite3_int64 size) {
  ShimFile *p = (ShimFile *)f;
  if (size < p->size) p->size = size;
  return SQLITE_OK;
}
static int mSync(sqlite3_file *f, int flags) { (void)f; (void)flags; return SQLITE_OK; }
static int mFileSize(sqlite3_file *f, sqlite3_int64 *out) {
  *out = ((ShimFile *)f)->size;
  return SQLITE_OK;
}
static int mFileControl(sqlite3_file *f, int op, void *arg) {
  (void)f; (void)op; (void)arg;
  return SQLITE_NOTFOUND;
}
static int mDevice(sqlite3_file *f) { (void)f; return 0; }

static const sqlite3_io_methods mem_io = {
  1, mClose, mRead, mWrite, mTruncate, mSync, mFileSize, noLock, noLock,
  noReserved, mFileControl, sectorSize, mDevice,
};

/* ---- the VFS ------------------------------------------------------------ */

static int vOpen(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *outFlags) {
  ShimFile *p = (ShimFile *)f;
  (void)vfs;
  memset(p, 0, sizeof(*p));
  if (name == 0) {
    p->base.pMethods = &mem_io;
  } else {
    int id = -1;
    int rc = host_open(name, (int)strlen(name), flags, &id);
    /* On failure pMethods stays NULL so SQLite never calls xClose. */
    if (rc != SQLITE_OK) return rc;
    p->id = id;
    p->base.pMethods = &host_io;
  }
  if (outFlags) *outFlags = flags;
  return SQLITE_OK;
}
static int vDelete(sqlite3_vfs *vfs, const char *name, int syncDir) {
  (void)vfs;
  return host_delete(name, (int)strlen(name), syncDir);
}
static int vAccess(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
  (void)vfs;
  return host_access(name, (int)strlen(name), flags, out);
}
/* Names are opaque keys: the full path of a name is the name itself. */
static int vFullPathname(sqlite3_vfs *vfs, const char *name, int nOut, char *out) {
  size_t n = strlen(name);
  (void)vfs;
  if (n + 1 > (size_t)nOut) return SQLITE_CANTOPEN;
  memcpy(out, name, n + 1);
  return SQLITE_OK;
}
static int vRandomness(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs;
  host_random(out, n);
  return n;
}
static int vSleep(sqlite3_vfs *vfs, int micros) { (void)vfs; return host_sleep(micros); }
/* Julian day number of the Unix epoch, in milliseconds. */
#define UNIX_EPOCH_JD_MS 210866760000000LL
static int vCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *out) {
  (void)vfs;
  *out = host_time_ms() + UNIX_EPOCH_JD_MS;
  return SQLITE_OK;
}
static int vCurrentTime(sqlite3_vfs *vfs, double *out) {
  sqlite3_int64 ms = 0;
  vCurrentTimeInt64(vfs, &ms);
  *out = (double)ms / 86400000.0;
  return SQLITE_OK;
}
static int vGetLastError(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs; (void)n; (void)out;
  return 0;
}

static sqlite3_vfs host_vfs = {
  2, sizeof(ShimFile), 512, 0, "host", 0,
  vOpen, vDelete, vAccess, vFullPathname,
  0, 0, 0, 0, /* no extension loading */
  vRandomness, vSleep, vCurrentTime, vGetLastError, vCurrentTimeInt64,
  0, 0, 0,
};

/* SQLITE_OS_OTHER: SQLite calls these from sqlite3_initialize/shutdown. */
int sqlite3_os_init(void) { return sqlite3_vfs_register(&host_vfs, 1); }
int sqlite3_os_end(void) { return SQLITE_OK; }

/* ---- exported helpers -------------------------------------------------- */

/* ---- linear replacements of quadratic built-ins ------------------------- */

/* Steps between two checks of the time budget inside a function. */
#define CHECK_EVERY 65536

/* instr(X, Y): SQLite's own scans X and compares Y at every position, which
 * is O(|X| * |Y|): instr(zeroblob(600000), zeroblob(300000)||x'01') ran for
 * almost a minute. This one finds the same position with memmem (linear in
 * wasi-libc) and returns the same results, NULLs and types included. */
static void instrLinear(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  int th = sqlite3_value_type(argv[0]), tn = sqlite3_value_type(argv[1]);
  if (th == SQLITE_NULL || tn == SQLITE_NULL) return;
  sqlite3_value *c1 = 0, *c2 = 0;
  const unsigned char *h, *n;
  int nh = sqlite3_value_bytes(argv[0]);
  int nn = sqlite3_value_bytes(argv[1]);
  int isText = 1;
  int result = 1;
  if (nn > 0) {
    if (th == SQLITE_BLOB && tn == SQLITE_BLOB) {
      h = sqlite3_value_blob(argv[0]);
      n = sqlite3_value_blob(argv[1]);
      isText = 0;
    } else if (th != SQLITE_BLOB && tn != SQLITE_BLOB) {
      h = sqlite3_value_text(argv[0]);
      n = sqlite3_value_text(argv[1]);
    } else {
      c1 = sqlite3_value_dup(argv[0]);
      h = sqlite3_value_text(c1);
      nh = sqlite3_value_bytes(c1);
      c2 = sqlite3_value_dup(argv[1]);
      n = h ? sqlite3_value_text(c2) : 0;
      nn = sqlite3_value_bytes(c2);
    }
    if (n == 0 || (nh && h == 0)) {
      sqlite3_result_error_nomem(ctx);
      goto done;
    }
    /* SQLite compares at byte 0 and, in text, at every byte that starts a
     * character; the result counts those positions. A needle starting with
     * a continuation byte can therefore only match at byte 0. */
    const unsigned char *at = 0;
    if (nn <= nh) {
      if (isText && (n[0] & 0xc0) == 0x80) {
        at = memcmp(h, n, (size_t)nn) == 0 ? h : 0;
      } else {
        at = memmem(h, (size_t)nh, n, (size_t)nn);
      }
    }
    if (at == 0) {
      result = 0;
    } else if (!isText) {
      result = (int)(at - h) + 1;
    } else {
      for (const unsigned char *p = h + 1; p <= at; p++) {
        if ((*p & 0xc0) != 0x80) result++;
      }
    }
  }
  sqlite3_result_int(ctx, result);
done:
  sqlite3_value_free(c1);
  sqlite3_value_free(c2);
}

/* replace(X, Y, Z): the same bytes as SQLite's, found with memmem instead of
 * a comparison at every position. */
static void replaceLinear(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  const unsigned char *str = sqlite3_value_text(argv[0]);
  if (str == 0) return;
  int nStr = sqlite3_value_bytes(argv[0]);
  const unsigned char *pat = sqlite3_value_text(argv[1]);
  if (pat == 0) return;
  if (pat[0] == 0) {
    sqlite3_result_text(ctx, (const char *)str, nStr, SQLITE_TRANSIENT);
    return;
  }
  int nPat = sqlite3_value_bytes(argv[1]);
  const unsigned char *rep = sqlite3_value_text(argv[2]);
  if (rep == 0) return;
  int nRep = sqlite3_value_bytes(argv[2]);
  sqlite3_str *out = sqlite3_str_new(sqlite3_context_db_handle(ctx));
  const unsigned char *p = str, *end = str + nStr;
  while (end - p >= nPat) {
    const unsigned char *hit = memmem(p, (size_t)(end - p), pat, (size_t)nPat);
    if (hit == 0) break;
    sqlite3_str_append(out, (const char *)p, (int)(hit - p));
    sqlite3_str_append(out, (const char *)rep, nRep);
    p = hit + nPat;
  }
  sqlite3_str_append(out, (const char *)p, (int)(end - p));
  int rc = sqlite3_str_errcode(out);
  int len = sqlite3_str_length(out);
  char *z = sqlite3_str_finish(out);
  if (rc == SQLITE_TOOBIG) {
    sqlite3_free(z);
    sqlite3_result_error_toobig(ctx);
  } else if (rc != SQLITE_OK) {
    sqlite3_free(z);
    sqlite3_result_error_nomem(ctx);
  } else if (z == 0) {
    sqlite3_result_text(ctx, "", 0, SQLITE_STATIC);
  } else {
    sqlite3_result_text(ctx, z, len, sqlite3_free);
  }
}

/* trim(X, Y), ltrim(X, Y), rtrim(X, Y): SQLite's algorithm, comparing every
 * character of the set Y at each end of X (O(|X| * |Y|), almost a minute for
 * 200 kB against a 20,000-character set), unchanged in its results but
 * asking the host every CHECK_EVERY comparisons whether the call's budget
 * is spent. The user data says which ends: 1 left, 2 right, 3 both. */
static void trimChecked(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return;
  const unsigned char *in = sqlite3_value_text(argv[0]);
  if (in == 0) return;
  unsigned int nIn = (unsigned int)sqlite3_value_bytes(argv[0]);
  const unsigned char *set = sqlite3_value_text(argv[1]);
  if (set == 0) return;
  /* Characters of the set as SQLite splits them: a byte >= 0xc0 and the
   * continuation bytes after it, or any other single byte. */
  int nChar = 0;
  for (const unsigned char *z = set; *z; nChar++) {
    if (*z++ >= 0xc0) while ((*z & 0xc0) == 0x80) z++;
  }
  if (nChar > 0) {
    const unsigned char **chars =
        sqlite3_malloc64((sqlite3_uint64)nChar * (sizeof(char *) + sizeof(unsigned int)));
    if (chars == 0) {
      sqlite3_result_error_nomem(ctx);
      return;
    }
    unsigned int *lens = (unsigned int *)&chars[nChar];
    int i = 0;
    for (const unsigned char *z = set; *z; i++) {
      chars[i] = z;
      if (*z++ >= 0xc0) while ((*z & 0xc0) == 0x80) z++;
      lens[i] = (unsigned int)(z - chars[i]);
    }
    int flags = (int)(size_t)sqlite3_user_data(ctx);
    unsigned int work = 0;
    for (int side = 1; side <= 2; side++) {
      if (!(flags & side)) continue;
      while (nIn > 0) {
        unsigned int len = 0;
        for (i = 0; i < nChar; i++) {
          len = lens[i];
          if (len <= nIn && memcmp(side == 1 ? in : in + nIn - len, chars[i], len) == 0) break;
          if (++work == CHECK_EVERY) {
            work = 0;
            if (host_progress()) {
              sqlite3_free(chars);
              sqlite3_result_error_code(ctx, SQLITE_INTERRUPT);
              return;
            }
          }
        }
        if (i >= nChar) break;
        if (side == 1) in += len;
        nIn -= len;
      }
    }
    sqlite3_free(chars);
  }
  sqlite3_result_text(ctx, (const char *)in, (int)nIn, SQLITE_TRANSIENT);
}

/* LIKE and GLOB: SQLite's matcher is O(|X| * |P|) without ever reaching
 * the progress handler (a 1 MB string against a 2,000-byte pattern ran six
 * seconds). This one gives the same answers and checks the call's budget
 * as it goes. The pattern is first cut into tokens the way SQLite reads it
 * (a wildcard, any one character, a literal, a GLOB set, or something that
 * can never match), then matched with backtracking to the last wildcard. */

/* Reads one character as SQLite reads UTF-8: a byte >= 0xc0 takes the
 * continuation bytes after it; overlong forms and surrogates become
 * U+FFFD; anything else is its own byte value. */
static unsigned int readChar(const unsigned char **pz) {
  static const unsigned char lead[64] = {
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 0, 1, 0, 0,
  };
  unsigned int c = *(*pz)++;
  if (c >= 0xc0) {
    c = lead[c - 0xc0];
    while ((**pz & 0xc0) == 0x80) c = (c << 6) + (0x3f & *(*pz)++);
    if (c < 0x80 || (c & 0xFFFFF800) == 0xD800) c = 0xFFFD;
  }
  return c;
}

enum { T_ALL, T_ONE, T_LIT, T_SET, T_NEVER };

typedef struct Token {
  unsigned char kind;
  unsigned char invert;      /* T_SET: "[^...]" */
  unsigned int c;            /* T_LIT: the character */
  int first, count;          /* T_SET: its ranges */
} Token;

typedef struct Range {
  unsigned int lo, hi;
} Range;

static unsigned int asciiLower(unsigned int c) {
  return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

static int tokenMatches(const Token *t, const Range *ranges, unsigned int c, int noCase) {
  switch (t->kind) {
    case T_ONE:
      return 1;
    case T_LIT:
      return t->c == c || (noCase && t->c < 0x80 && c < 0x80 && asciiLower(t->c) == asciiLower(c));
    case T_SET: {
      int seen = 0;
      for (int i = 0; i < t->count && !seen; i++) {
        seen = c >= ranges[t->first + i].lo && c <= ranges[t->first + i].hi;
      }
      return seen ^ t->invert;
    }
    default:
      return 0;
  }
}

/* Cuts `pat` into tokens. `all`/`one` are the wildcards (0: none), `other`
 * the escape character (LIKE) or '[' (GLOB). Returns the token count. */
static int tokenize(const unsigned char *pat, unsigned int all, unsigned int one,
                    unsigned int other, int isGlob, Token *toks, Range *ranges) {
  int nt = 0, nr = 0;
  unsigned int c;
  while ((c = readChar(&pat)) != 0) {
    Token *t = &toks[nt++];
    memset(t, 0, sizeof(*t));
    if (c == all) {
      t->kind = T_ALL;
    } else if (c == other && !isGlob) {
      c = readChar(&pat);
      t->kind = c ? T_LIT : T_NEVER;
      t->c = c;
      if (c == 0) return nt;
    } else if (c == other) {
      unsigned int c2 = readChar(&pat), prior = 0;
      if (c2 == '^') {
        t->invert = 1;
        c2 = readChar(&pat);
      }
      t->first = nr;
      if (c2 == ']') {
        ranges[nr].lo = ranges[nr].hi = ']';
        nr++;
        c2 = readChar(&pat);
      }
      while (c2 && c2 != ']') {
        if (c2 == '-' && pat[0] != ']' && pat[0] != 0 && prior > 0) {
          c2 = readChar(&pat);
          ranges[nr].lo = prior;
          ranges[nr].hi = c2;
          prior = 0;
        } else {
          ranges[nr].lo = ranges[nr].hi = c2;
          prior = c2;
        }
        nr++;
        c2 = readChar(&pat);
      }
      t->count = nr - t->first;
      t->kind = c2 ? T_SET : T_NEVER;
      if (c2 == 0) return nt;
    } else if (c == one) {
      t->kind = T_ONE;
    } else {
      t->kind = T_LIT;
      t->c = c;
    }
  }
  return nt;
}

/* 1 on a match, 0 on none, -1 when the budget ran out. */
static int matchTokens(const Token *toks, int nt, const Range *ranges,
                       const unsigned char *s, int noCase) {
  int ti = 0, starT = -1;
  const unsigned char *starS = 0;
  unsigned int work = 0;
  for (;;) {
    if (++work == CHECK_EVERY) {
      work = 0;
      if (host_progress()) return -1;
    }
    if (ti < nt && toks[ti].kind == T_ALL) {
      starT = ti++;
      starS = s;
      continue;
    }
    if (ti == nt) {
      if (*s == 0) return 1;
    } else if (toks[ti].kind != T_NEVER && *s != 0) {
      const unsigned char *next = s;
      unsigned int c = readChar(&next);
      if (tokenMatches(&toks[ti], ranges, c, noCase)) {
        s = next;
        ti++;
        continue;
      }
    }
    /* Mismatch: the last wildcard takes one more character, if any. */
    if (starT < 0 || *starS == 0) return 0;
    readChar(&starS);
    s = starS;
    ti = starT + 1;
  }
}

/* like(P, X [, E]) and glob(P, X); the user data is 1 for GLOB. */
static void likeChecked(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  int isGlob = sqlite3_user_data(ctx) != 0;
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  int nPat = sqlite3_value_bytes(argv[0]);
  if (nPat > sqlite3_limit(db, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, -1)) {
    sqlite3_result_error(ctx, "LIKE or GLOB pattern too complex", -1);
    return;
  }
  unsigned int all = isGlob ? '*' : '%', one = isGlob ? '?' : '_';
  unsigned int other = isGlob ? '[' : 0;
  if (argc == 3) {
    const unsigned char *esc = sqlite3_value_text(argv[2]);
    if (esc == 0) return;
    int chars = 0;
    for (const unsigned char *z = esc; *z; chars++) {
      if (*z++ >= 0xc0) while ((*z & 0xc0) == 0x80) z++;
    }
    if (chars != 1) {
      sqlite3_result_error(ctx, "ESCAPE expression must be a single character", -1);
      return;
    }
    other = readChar(&esc);
    if (other == all) all = 0;
    if (other == one) one = 0;
  }
  const unsigned char *pat = sqlite3_value_text(argv[0]);
  const unsigned char *str = sqlite3_value_text(argv[1]);
  if (pat == 0 || str == 0) return;
  /* A token per character at most, a range per character at most. */
  size_t n = strlen((const char *)pat) + 1;
  Token *toks = sqlite3_malloc64(n * sizeof(Token) + n * sizeof(Range));
  if (toks == 0) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  Range *ranges = (Range *)(toks + n);
  int nt = tokenize(pat, all, one, other, isGlob, toks, ranges);
  int r = matchTokens(toks, nt, ranges, str, !isGlob);
  sqlite3_free(toks);
  if (r < 0) {
    sqlite3_result_error_code(ctx, SQLITE_INTERRUPT);
  } else {
    sqlite3_result_int(ctx, r);
  }
}

/* json_patch(T, P) and jsonb_patch(T, P): SQLite merges each member of P by
 * scanning the members of T (O(|T| * |P|); two 1.3 MB objects held one call
 * for 55 s). The merge itself is SQLite's, run on a private connection
 * without these replacements, after refusing the inputs whose product of
 * sizes could hold a call for more than about half a second. */
#define PATCH_WORK_LIMIT (1LL << 30)

static sqlite3 *helper;              /* private: built-ins only */
static sqlite3_stmt *patchStmt[2];   /* json_patch, jsonb_patch */

static sqlite3_stmt *patchStatement(int binary) {
  if (patchStmt[binary]) return patchStmt[binary];
  /* Library state: charged to the instance, not to the first caller. */
  int was = call.slot;
  call.slot = 0;
  if (helper == 0 && sqlite3_open_v2(":memory:", &helper, SQLITE_OPEN_READWRITE, "host") != SQLITE_OK) {
    sqlite3_close(helper);
    helper = 0;
  }
  if (helper) {
    const char *sql = binary ? "SELECT jsonb_patch(?1, ?2)" : "SELECT json_patch(?1, ?2)";
    sqlite3_prepare_v3(helper, sql, -1, SQLITE_PREPARE_PERSISTENT, &patchStmt[binary], 0);
  }
  call.slot = was;
  return patchStmt[binary];
}

static void patchChecked(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  int binary = sqlite3_user_data(ctx) != 0;
  sqlite3_int64 work = (sqlite3_int64)sqlite3_value_bytes(argv[0]) * sqlite3_value_bytes(argv[1]);
  if (work > PATCH_WORK_LIMIT) {
    char *msg = sqlite3_mprintf(
        "%s of %d by %d bytes exceeds the merge work one call may do (%lld)",
        binary ? "jsonb_patch" : "json_patch", sqlite3_value_bytes(argv[0]),
        sqlite3_value_bytes(argv[1]), (long long)PATCH_WORK_LIMIT);
    sqlite3_result_error(ctx, msg ? msg : "json_patch input too large", -1);
    sqlite3_result_error_code(ctx, SQLITE_TOOBIG);
    sqlite3_free(msg);
    return;
  }
  sqlite3_stmt *stmt = patchStatement(binary);
  if (stmt == 0) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  sqlite3_bind_value(stmt, 1, argv[0]);
  sqlite3_bind_value(stmt, 2, argv[1]);
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) {
    sqlite3_result_value(ctx, sqlite3_column_value(stmt, 0));
    if (!binary && sqlite3_column_type(stmt, 0) == SQLITE_TEXT) {
      sqlite3_result_subtype(ctx, 'J');
    }
  } else {
    rc = sqlite3_errcode(helper);
    if (rc == SQLITE_NOMEM) {
      sqlite3_result_error_nomem(ctx);
    } else {
      sqlite3_result_error(ctx, sqlite3_errmsg(helper), -1);
      if (rc != SQLITE_ERROR) sqlite3_result_error_code(ctx, rc);
    }
  }
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
}

static int replace_builtins(sqlite3 *db) {
  int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;
  int rc = sqlite3_create_function_v2(db, "instr", 2, flags, 0, instrLinear, 0, 0, 0);
  if (rc == SQLITE_OK) {
    rc = sqlite3_create_function_v2(db, "replace", 3, flags, 0, replaceLinear, 0, 0, 0);
  }
  if (rc == SQLITE_OK) {
    rc = sqlite3_create_function_v2(db, "like", 2, flags, 0, likeChecked, 0, 0, 0);
  }
  if (rc == SQLITE_OK) {
    rc = sqlite3_create_function_v2(db, "like", 3, flags, 0, likeChecked, 0, 0, 0);
  }
  if (rc == SQLITE_OK) {
    rc = sqlite3_create_function_v2(db, "glob", 2, flags, (void *)1, likeChecked, 0, 0, 0);
  }
  if (rc == SQLITE_OK) {
    rc = sqlite3_create_function_v2(db, "json_patch", 2, flags | SQLITE_RESULT_SUBTYPE, 0,
                                    patchChecked, 0, 0, 0);
  }
  if (rc == SQLITE_OK) {
    rc = sqlite3_create_function_v2(db, "jsonb_patch", 2, flags, (void *)1, patchChecked, 0, 0, 0);
  }
  /* The one-argument forms trim spaces only, in linear time: kept. */
  static const char *const trims[] = {"ltrim", "rtrim", "trim"};
  for (int i = 0; i < 3 && rc == SQLITE_OK; i++) {
    rc = sqlite3_create_function_v2(db, trims[i], 2, flags, (void *)(size_t)(i + 1),
                                    trimChecked, 0, 0, 0);
  }
  return rc;
}

static int progress(void *arg) {
  (void)arg;
  return host_progress();
}

/* Open a connection on the host VFS with extended result codes, defensive
 * mode and the host-driven progress handler. The handle is written even on
 * failure so the host can read the message and close it. */
EXPORT(shim_open) int shim_open(const char *name, sqlite3 **out, int progress_ops) {
  sqlite3 *db = 0;
  int rc = sqlite3_open_v2(name, &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_EXRESCODE, "host");
  *out = db;
  if (rc != SQLITE_OK) return rc;
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)0);
  sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)0);
  sqlite3_progress_handler(db, progress_ops, progress, 0);
  return replace_builtins(db);
}

/* Configure the library before its first use: the lookaside every
 * connection gets (slot size x count, 0 disables it), the hard heap limit
 * that turns a memory bomb into SQLITE_NOMEM, and a soft limit at 3/4 of it
 * past which SQLite recycles page-cache memory before asking for more (so
 * tenants' caches give way instead of failing). Must be the first call. */
static int statement_buffers(int scratch_bytes);

EXPORT(shim_init) int shim_init(int lookaside_slot, int lookaside_count, sqlite3_int64 heap_limit,
                                sqlite3_int64 tenant_reserve, int scratch_bytes) {
  heap_cap = heap_limit;
  reserve = tenant_reserve;
  int rc = sqlite3_config(SQLITE_CONFIG_MALLOC, &tenant_mem);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_config(SQLITE_CONFIG_LOOKASIDE, lookaside_slot, lookaside_count);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_initialize();
  if (rc != SQLITE_OK) return rc;
  sqlite3_hard_heap_limit64(heap_limit);
  sqlite3_soft_heap_limit64(heap_limit / 4 * 3);
  return statement_buffers(scratch_bytes);
}

/* Pragmas a tenant may read but never change: they fix the storage format,
 * the journal the VFS supports and the memory a tenant may claim. */
static const char *const locked_pragmas[] = {
  "journal_mode", "locking_mode", "page_size", "cache_size", "temp_store",
  "mmap_size", "writable_schema", "soft_heap_limit", "hard_heap_limit",
  "threads", "cache_spill", "max_page_count", "auto_vacuum", "encoding",
  "synchronous",
  /* Would put SQLite's own LIKE back, which ignores the time budget. */
  "case_sensitive_like", 0,
};

static int authorize(void *arg, int action, const char *a, const char *b,
                     const char *dbname, const char *trigger) {
  (void)arg; (void)dbname; (void)trigger;
  switch (action) {
    /* Another file would escape the tenant's namespace. The one exception
     * is the empty name: VACUUM attaches "" as its scratch copy, which with
     * temp_store=MEMORY lives in guest memory and is no file at all. */
    case SQLITE_ATTACH:
      return (a != 0 && a[0] == 0) ? SQLITE_OK : SQLITE_DENY;
    case SQLITE_DETACH:
      return SQLITE_DENY;
    case SQLITE_PRAGMA:
      if (b != 0 && a != 0) {
        for (int i = 0; locked_pragmas[i]; i++) {
          if (sqlite3_stricmp(a, locked_pragmas[i]) == 0) return SQLITE_DENY;
        }
      }
      return SQLITE_OK;
    default:
      return SQLITE_OK;
  }
}

/* Traps the guest on purpose: lets tests prove that a trap breaks only its
 * instance (SQLite itself offers no reliable way to trap any more). */
EXPORT(shim_trap) void shim_trap(void) { __builtin_trap(); }

/* Seal the connection once the host has applied its own pragmas. */
EXPORT(shim_lockdown) int shim_lockdown(sqlite3 *db) {
  return sqlite3_set_authorizer(db, authorize, 0);
}

/* ---- statements --------------------------------------------------------- *
 * A call of the host runs a cached statement with one call into the guest
 * per step: the first also binds every parameter, each writes its row,
 * and the one that completes the statement also resets it. That replaces
 * a call per parameter, per column and per bookkeeping step: each
 * crossing costs about as much as SQLite takes to find a row by its key. */

/* Library state, charged to the instance rather than to the tenant that
 * happens to need a larger buffer first. Returns 0 when out of memory. */
static int grow_buffer(unsigned char **buf, int *cap, int need) {
  if (need <= *cap) return 1;
  int was = call.slot;
  call.slot = 0;
  unsigned char *b = sqlite3_realloc(*buf, need);
  call.slot = was;
  if (b == 0) return 0;
  *buf = b;
  *cap = need;
  return 1;
}

/* The buffer the host fills with parameters for shim_step, of the size
 * it asked for at shim_init, and the one shim_step writes a row's column
 * records into (grown for wide rows). Both exist from the start, so that
 * no call can fail for want of them and they never take the headroom the
 * heap holds for the databases' reserves; the row buffer grows only for a
 * row of more than ROW_COLUMNS columns. */
#define ROW_COLUMNS 64
static unsigned char *scratch;
static unsigned char *row_buf;
static int row_cap;

static int statement_buffers(int scratch_bytes) {
  if (scratch_bytes <= 0) return SQLITE_MISUSE;
  scratch = sqlite3_malloc(scratch_bytes);
  row_buf = sqlite3_malloc(ROW_COLUMNS * 16);
  if (scratch == 0 || row_buf == 0) return SQLITE_NOMEM;
  row_cap = ROW_COLUMNS * 16;
  return SQLITE_OK;
}

/* The parameter buffer (see statement_buffers). */
EXPORT(shim_scratch) unsigned char *shim_scratch(void) { return scratch; }

/* A parameter record's type for a text or blob in a block of
 * sqlite3_malloc the host allocated and SQLite takes over. */
#define OWNED 0x100
/* What bind_records returns when `n` is not the statement's parameter count. */
#define WRONG_COUNT (-1)

static void free_owned(const unsigned char *recs, int from, int n) {
  for (int i = from; i < n; i++) {
    int type;
    sqlite3_int64 v;
    memcpy(&type, recs + i * 16, 4);
    memcpy(&v, recs + i * 16 + 8, 8);
    if (type & OWNED) sqlite3_free((void *)(size_t)v);
  }
}

/* Binds `n` parameters (?1 .. ?n) from records of 16 bytes at `recs`
 * (for shim_step, which binds them before a call's first step):
 * {i32 type, i32 len, i64 value}. NULL, INTEGER and FLOAT carry the
 * integer or the double's bits; TEXT and BLOB point at `len` bytes that
 * SQLite copies (the host's scratch buffer), and with OWNED at a block of
 * sqlite3_malloc that SQLite takes over. Every owned block is freed or
 * handed over whatever happens. An empty text is '' and an empty blob
 * x'', never NULL. Returns SQLITE_OK, WRONG_COUNT (nothing bound) or the
 * code of the bind that failed. */
static int bind_records(sqlite3_stmt *s, const unsigned char *recs, int n) {
  if (n != sqlite3_bind_parameter_count(s)) {
    free_owned(recs, 0, n);
    return WRONG_COUNT;
  }
  for (int i = 0; i < n; i++) {
    const unsigned char *rec = recs + i * 16;
    int type, len, rc;
    sqlite3_int64 v;
    memcpy(&type, rec, 4);
    memcpy(&len, rec + 4, 4);
    memcpy(&v, rec + 8, 8);
    void *p = (void *)(size_t)v;
    switch (type) {
      case SQLITE_INTEGER: rc = sqlite3_bind_int64(s, i + 1, v); break;
      case SQLITE_FLOAT: {
        double d;
        memcpy(&d, &v, 8);
        rc = sqlite3_bind_double(s, i + 1, d);
        break;
      }
      case SQLITE_TEXT:
        rc = len == 0 ? sqlite3_bind_text(s, i + 1, "", 0, SQLITE_STATIC)
                      : sqlite3_bind_text64(s, i + 1, p, (sqlite3_uint64)len,
                                            SQLITE_TRANSIENT, SQLITE_UTF8);
        break;
      case SQLITE_BLOB:
        rc = len == 0 ? sqlite3_bind_zeroblob(s, i + 1, 0)
                      : sqlite3_bind_blob64(s, i + 1, p, (sqlite3_uint64)len,
                                            SQLITE_TRANSIENT);
        break;
      case SQLITE_TEXT | OWNED:
        rc = sqlite3_bind_text64(s, i + 1, p, (sqlite3_uint64)len, sqlite3_free,
                                 SQLITE_UTF8);
        break;
      case SQLITE_BLOB | OWNED:
        rc = sqlite3_bind_blob64(s, i + 1, p, (sqlite3_uint64)len, sqlite3_free);
        break;
      default: rc = sqlite3_bind_null(s, i + 1); break;
    }
    if (rc != SQLITE_OK) {
      free_owned(recs, i + 1, n);
      return rc;
    }
  }
  return SQLITE_OK;
}

/* Ends a call's use of `s`: returns the rows the connection's last write
 * changed, then resets the statement and clears its bindings, so nothing
 * of this call reaches the next. */
EXPORT(shim_finish) sqlite3_int64 shim_finish(sqlite3 *db, sqlite3_stmt *s) {
  sqlite3_int64 changes = sqlite3_changes64(db);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return changes;
}

/* Steps `s` once and describes the outcome in a 32-byte header:
 * {i32 rc, i32 ncol, u32 reprepared, i32 finished, i64 changes,
 *  u32 records, i32 unbound}.
 * - With `nrecs` >= 0 (the first step of a call), the `nrecs` parameter
 *   records at `recs` are bound first (bind_records). If that fails,
 *   nothing is stepped: `unbound` is 1 and `rc` is bind_records' result.
 * - `ncol` is the statement's column count after this step, and
 *   `reprepared` how often SQLite has prepared it again since it was first
 *   prepared (a step may do so when the schema changed, and with it the
 *   columns): the host trusts the column names it kept only while that
 *   count stands still.
 * - Given its connection `db`, a step that completes the statement (DONE)
 *   also finishes it as shim_finish does, and says so (`finished` 1, with
 *   `changes`): that spares the host one more crossing.
 * - For a row the host asked for (`want_row`), `records` points at `ncol`
 *   records of 16 bytes {i32 type, i32 len, i64 value}, where value is the
 *   integer, the double's bits or a pointer to the bytes (valid until the
 *   next step or reset); it is 0 when no row was asked for, and when there
 *   was no memory for a wide row's records. Type -1 marks an out-of-memory
 *   conversion. The host reads exactly the records written here.
 * The header is static: the step's result code always reaches the host. */
static unsigned char step_head[32];

EXPORT(shim_step) unsigned char *shim_step(sqlite3_stmt *s, int want_row, sqlite3 *db,
                                           const unsigned char *recs, int nrecs) {
  if (nrecs >= 0) {
    int rc = bind_records(s, recs, nrecs);
    if (rc != SQLITE_OK) {
      int unbound = 1;
      memset(step_head, 0, sizeof step_head);
      memcpy(step_head, &rc, 4);
      memcpy(step_head + 28, &unbound, 4);
      return step_head;
    }
  }
  int rc = sqlite3_step(s);
  int n = sqlite3_column_count(s);
  unsigned int reprepared =
      (unsigned int)sqlite3_stmt_status(s, SQLITE_STMTSTATUS_REPREPARE, 0);
  int finished = 0;
  sqlite3_int64 changes = 0;
  if (rc == SQLITE_DONE && db != 0) {
    changes = shim_finish(db, s);
    finished = 1;
  }
  unsigned char *records = 0;
  if (want_row && rc == SQLITE_ROW && grow_buffer(&row_buf, &row_cap, n * 16)) {
    records = row_buf;
  }
  unsigned int records_at = (unsigned int)(size_t)records;
  memset(step_head, 0, sizeof step_head);
  memcpy(step_head, &rc, 4);
  memcpy(step_head + 4, &n, 4);
  memcpy(step_head + 8, &reprepared, 4);
  memcpy(step_head + 12, &finished, 4);
  memcpy(step_head + 16, &changes, 8);
  memcpy(step_head + 24, &records_at, 4);
  for (int i = 0; records && i < n; i++) {
    int type = sqlite3_column_type(s, i);
    int len = 0;
    sqlite3_int64 v = 0;
    switch (type) {
      case SQLITE_INTEGER:
        v = sqlite3_column_int64(s, i);
        break;
      case SQLITE_FLOAT: {
        double d = sqlite3_column_double(s, i);
        memcpy(&v, &d, 8);
        break;
      }
      case SQLITE_TEXT: {
        const unsigned char *t = sqlite3_column_text(s, i);
        len = sqlite3_column_bytes(s, i);
        if (t == 0) type = -1;
        v = (sqlite3_int64)(size_t)t;
        break;
      }
      case SQLITE_BLOB: {
        const void *b = sqlite3_column_blob(s, i);
        len = sqlite3_column_bytes(s, i);
        if (b == 0 && len > 0) type = -1;
        v = (sqlite3_int64)(size_t)b;
        break;
      }
      default:
        break;
    }
    unsigned char *rec = records + i * 16;
    memcpy(rec, &type, 4);
    memcpy(rec + 4, &len, 4);
    memcpy(rec + 8, &v, 8);
  }
  return step_head;
}

