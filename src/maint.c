/* SPDX-License-Identifier: MIT */
/* maint: VACUUM, ANALYZE, integrity checks, incremental vacuum and WAL
 * checkpoints on one database, each behind the checks of SQLITE-NOTES.md.
 * Runs on a worker. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "maint.h"
#include "util.h"
#include "vtabs.h"

/* A hostile database must not be able to take all memory: SQLite fails
 * allocations past this with SQLITE_NOMEM instead. Generous, since the
 * page cache of a VACUUM of a big database lives under it too. */
#define MAINT_HEAP_LIMIT (512LL * 1024 * 1024)
/* How often (in VM steps) a long statement checks for a stop request. */
#define MAINT_PROGRESS_STEPS 1000
/* PRAGMA integrity_check(N): the findings it stops after. */
#define INTEGRITY_MAX_ERRORS 100
/* The most findings kept from a check: the b-trees' and each R*Tree's
 * (rtreecheck() stops at 100 too) and the full-text indexes'. */
#define MAINT_MAX_PROBLEMS 1000
/* Incremental vacuum: pages freed per transaction when the caller sets none. */
#define INCREMENTAL_BATCH_PAGES 256
/* A read of a file without its -wal is verified afterwards (see
 * read_unchanged); a read that raced a writer is tried this many times. */
#define READ_ATTEMPTS 4
#define READ_RETRY_MS 20
/* fileformat2.html: the WAL header, and each frame's header before its page. */
#define WAL_HEADER_BYTES 32
#define WAL_FRAME_HEADER_BYTES 24
/* A rollback journal record is the page number, the page and a checksum
 * (fileformat2.html, "The Rollback Journal"), after a header sector. */
#define JOURNAL_RECORD_EXTRA 8
#define JOURNAL_HEADER_BYTES 512
/* walformat.html: the wal-index grows by 32 KiB blocks of 4096 frames. */
#define WALINDEX_BLOCK_BYTES 32768
#define WALINDEX_FRAMES 4096

int maint_init(void)
{
        int rc = sqlite3_initialize();

        if (rc != SQLITE_OK)
                return -EIO;
        sqlite3_hard_heap_limit64(MAINT_HEAP_LIMIT);
        return 0;
}

void maint_opts_from_conf(struct maint_opts *o, const struct vacuum_conf *v,
                          const struct analyze_conf *a, const struct retry_conf *r)
{
        *o = (struct maint_opts){
                .busy_timeout_ms = r->busy_timeout_ms,
                .integrity = v->integrity,
                .disk_space_factor = v->disk_space_factor,
                .analysis_limit = a->analysis_limit,
                .incremental_batch_pages = INCREMENTAL_BATCH_PAGES,
                .incremental_pause_ms = 50,
                .allow_rowid_change = v->allow_rowid_change,
                .analyze_threshold_rows = a->threshold_rows,
                .analyze_scale_factor = a->scale_factor_percent / 100.0,
                .analyze_large_table_rows = a->large_table_rows,
                .hook_timeout_ms = v->hook_timeout_ms,
        };
        memcpy(o->before_vacuum, v->before_vacuum, sizeof(o->before_vacuum));
        memcpy(o->after_vacuum, v->after_vacuum, sizeof(o->after_vacuum));
}

uint64_t maint_bytes_given_back(enum maint_op op, const struct maint_result *r)
{
        if (op == MAINT_OP_CHECKPOINT)
                return r->wal_bytes_before > r->wal_bytes_after ? r->wal_bytes_before - r->wal_bytes_after : 0;
        if (op == MAINT_OP_VACUUM || op == MAINT_OP_INCREMENTAL_VACUUM)
                return r->bytes_reclaimed;
        return 0;
}

int maint_cancel_init(struct maint_cancel *c)
{
        c->db = NULL;
        atomic_init(&c->requested, false);
        return -pthread_mutex_init(&c->lock, NULL);
}

void maint_cancel_destroy(struct maint_cancel *c)
{
        pthread_mutex_destroy(&c->lock);
}

/* Safe from any thread: the connection cannot be closed while we hold the
 * lock. A VACUUM in its copy-back phase ignores the interrupt and finishes. */
void maint_cancel_request(struct maint_cancel *c)
{
        atomic_store(&c->requested, true);
        pthread_mutex_lock(&c->lock);
        if (c->db)
                sqlite3_interrupt(c->db);
        pthread_mutex_unlock(&c->lock);
}

static bool cancelled(struct maint_cancel *c)
{
        return c && atomic_load(&c->requested);
}

static int progress_cb(void *arg)
{
        return cancelled(arg) ? 1 : 0;
}

/* The stop request of the connection this thread opened last (db_connect):
 * the connections an operation opens beside it (the full-text check's
 * snapshot) stop with it. */
static _Thread_local struct maint_cancel *thread_cancel;

const char *maint_phase_name(enum maint_phase p)
{
        static const char *const names[] = {
                [MAINT_PHASE_NONE] = "starting",          [MAINT_PHASE_BEFORE_HOOK] = "before_vacuum hook",
                [MAINT_PHASE_CHECKING] = "checking",      [MAINT_PHASE_COPYING] = "copying",
                [MAINT_PHASE_CHECKING_AFTER] = "checking after", [MAINT_PHASE_CHECKPOINT] = "checkpoint",
                [MAINT_PHASE_AFTER_HOOK] = "after_vacuum hook",
        };

        return (unsigned)p < ELEMENTSOF(names) && names[p] ? names[p] : "unknown";
}

static void phase(const struct maint_opts *o, enum maint_phase p)
{
        if (o->phase)
                o->phase(p);
}

const char *maint_status_name(enum maint_status s)
{
        static const char *const names[] = {
                [MAINT_OK] = "ok",
                [MAINT_SKIPPED] = "skipped",
                [MAINT_BUSY] = "busy",
                [MAINT_CORRUPT] = "corrupt",
                [MAINT_NOTADB] = "not_a_database",
                [MAINT_CANNOT] = "cannot_maintain",
                [MAINT_NOSPACE] = "no_space",
                [MAINT_IOERR] = "io_error",
                [MAINT_PERMISSION] = "permission_denied",
                [MAINT_MISSING] = "missing",
                [MAINT_INTERRUPTED] = "interrupted",
                [MAINT_ERROR] = "error",
                [MAINT_ROWIDS] = "rowids_would_change",
                [MAINT_HOT_JOURNAL] = "hot_journal",
                [MAINT_TIMEOUT] = "timed_out",
                [MAINT_HOOK_REFUSED] = "hook_refused",
        };
        return (size_t)s < ELEMENTSOF(names) && names[s] ? names[s] : "error";
}

const char *maint_table_verdict_name(enum maint_table_verdict v)
{
        switch (v) {
        case TABLE_ROWIDS_CHANGE: return "rowids_would_change";
        case TABLE_ANALYZED: return "analyzed";
        case TABLE_ANALYZED_LIMITED: return "analyzed_limited";
        case TABLE_MISSING_EMPTY: return "empty";
        case TABLE_UNCHANGED: return "unchanged";
        }
        return "unknown";
}

const char *maint_op_name(enum maint_op op)
{
        switch (op) {
        case MAINT_OP_STATS: return "poll";
        case MAINT_OP_VACUUM: return "vacuum";
        case MAINT_OP_ANALYZE: return "analyze";
        case MAINT_OP_CHECK: return "check";
        case MAINT_OP_INCREMENTAL_VACUUM: return "incremental_vacuum";
        case MAINT_OP_CHECKPOINT: return "checkpoint";
        case MAINT_OP_DEEP_SCAN: return "deep_scan";
        }
        return "unknown";
}

/* What an SQLite failure means for the admin. A schema we cannot load or an
 * index on a function only the application defines is not corruption: the
 * database may be perfectly healthy, we just cannot maintain it. */
static enum maint_status maint_classify(int rc, const char *msg)
{
        msg = msg ? msg : "";
        switch (rc) {
        case SQLITE_READONLY_ROLLBACK:
                return MAINT_HOT_JOURNAL;
        case SQLITE_READONLY_RECOVERY: /* a writer is recovering the WAL */
        case SQLITE_READONLY_CANTINIT: /* no reader mark to share yet */
                return MAINT_BUSY;
        default:
                break;
        }
        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_DONE:
        case SQLITE_ROW:
                return MAINT_OK;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return MAINT_BUSY;
        case SQLITE_CORRUPT:
                /* A schema this SQLite cannot parse (newer syntax, unsafe
                 * functions) is not damage; a schema pointing at pages that
                 * are not there is. */
                if (strstr(msg, "malformed database schema") && !strstr(msg, "database disk image is malformed") &&
                    !strstr(msg, "invalid rootpage") && !strstr(msg, "orphan index"))
                        return MAINT_CANNOT;
                return MAINT_CORRUPT;
        case SQLITE_NOTADB:
                return MAINT_NOTADB;
        case SQLITE_FULL:
                return MAINT_NOSPACE;
        case SQLITE_IOERR:
                return MAINT_IOERR;
        case SQLITE_CANTOPEN:
        case SQLITE_PERM:
        case SQLITE_READONLY:
        case SQLITE_AUTH:
                return MAINT_PERMISSION;
        case SQLITE_INTERRUPT:
                return MAINT_INTERRUPTED;
        case SQLITE_TOOBIG:
                return MAINT_CANNOT;
        case SQLITE_ERROR:
                if (strstr(msg, "no such function") || strstr(msg, "unknown function") ||
                    strstr(msg, "no such collation") ||
                    strstr(msg, "no such module") || strstr(msg, "no such tokenizer") ||
                    strstr(msg, "unknown tokenizer") || strstr(msg, "unrecognized option") ||
                    strstr(msg, "malformed database schema"))
                        return MAINT_CANNOT;
                return MAINT_ERROR;
        default:
                return MAINT_ERROR;
        }
}

static enum maint_status set_status(struct maint_result *r, enum maint_status s, int rc,
                                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum maint_status set_status(struct maint_result *r, enum maint_status s, int rc,
                                    const char *fmt, ...)
{
        va_list ap;

        r->status = s;
        r->sqlite_rc = rc;
        va_start(ap, fmt);
        vsnprintf(r->message, sizeof(r->message), fmt, ap);
        va_end(ap);
        return s;
}

/* Record a failed SQLite call: status from the code and text. */
static enum maint_status fail_sqlite(struct maint_result *r, sqlite3 *db, int rc, const char *what)
{
        const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);

        if (rc == SQLITE_READONLY_DIRECTORY)
                return set_status(r, MAINT_PERMISSION, rc,
                                  "%s: the database's owner (user %u, whom the job runs as) cannot create files in "
                                  "its directory, where SQLite writes the -journal or -wal: the application could "
                                  "not write this database either", what, (unsigned)geteuid());
        if (rc == SQLITE_READONLY_ROLLBACK)
                return set_status(r, MAINT_HOT_JOURNAL, rc,
                                  "%s: a hot journal: a transaction interrupted by a crash awaits rollback, "
                                  "which only a read-write open does (the application's next one, or a "
                                  "maintenance job's)", what);
        return set_status(r, maint_classify(rc, msg), rc, "%s: %s (%s)", what, msg, sqlite3_errstr(rc));
}

/* ---- opening a database we do not control -------------------------------- */

/* How the files of a database look before it is opened. */
struct layout {
        struct stat st;       /* the database file */
        bool wal_format;      /* the read version (header byte 19) is 2: SQLite reads it as WAL (btree.c lockBtree) */
        off_t wal_size;       /* -1: no -wal */
        bool shm;             /* a -shm exists */
        off_t journal_size;   /* -1: no -journal */
        bool journal_quiet;   /* the -journal cannot be hot now (journal_quiet()) */
        bool lockless;        /* a long read (the deep scan): rather no lock than a SHARED lock throughout */
};

/* How a read-only look opens the database (see maint.h, "Reads never
 * write"): whatever SQLite would otherwise create, truncate or rewrite. */
enum read_mode {
        READ_ROLLBACK,  /* mode=ro: a rollback-mode reader writes nothing */
        READ_SHARED,    /* mode=ro&readonly_shm=1: the -shm mapped read-only */
        READ_IMMUTABLE, /* immutable=1, verified afterwards: no -wal to read */
        READ_EXCLUSIVE, /* vfs=unix-excl, read-write but never written: a -wal without its -shm */
};

/* The disk space the database's files take: the file, its -wal and its
 * -journal, in allocated blocks (st_blocks, as du(1) counts: a file grown
 * in chunks holds more than its pages, a sparse one less). */
static uint64_t disk_bytes(const char *path)
{
        static const char *const suffixes[] = { "", DBSTAT_SUFFIX_WAL, DBSTAT_SUFFIX_JOURNAL };
        uint64_t sum = 0;

        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                char p[4096 + 16];
                struct stat st;

                if ((size_t)snprintf(p, sizeof(p), "%s%s", path, suffixes[i]) < sizeof(p) && lstat(p, &st) == 0 &&
                    S_ISREG(st.st_mode))
                        sum += (uint64_t)st.st_blocks * 512;
        }
        return sum;
}

static off_t side_size(const char *path, const char *suffix, bool *exists)
{
        char p[4096 + 16];
        struct stat st;

        *exists = false;
        if ((size_t)snprintf(p, sizeof(p), "%s%s", path, suffix) >= sizeof(p) || lstat(p, &st) < 0)
                return -1;
        *exists = true;
        return st.st_size;
}

/* SQLite's RESERVED lock byte (os_unix.c: PENDING_BYTE 0x40000000, then
 * RESERVED_BYTE one past it), held by the process with a write transaction
 * open. F_GETLK asks without taking a lock. */
#define SQLITE_RESERVED_BYTE (0x40000000 + 1)

/* A -journal that cannot be hot now, by pager.c hasHotJournal(): another
 * process holds the RESERVED lock (the journal is its live transaction's),
 * or the journal's first byte is 0 (a committed journal that
 * journal_mode=PERSIST keeps); or there is none any more. fd: the
 * database, open. Found without a lock of our own. */
static bool journal_quiet(const char *path, int fd)
{
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = SQLITE_RESERVED_BYTE, .l_len = 1 };
        unsigned char first = 1;
        char p[4096 + 16];
        int jfd;

        if (fd >= 0 && fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
                return true;
        if ((size_t)snprintf(p, sizeof(p), "%s-journal", path) >= sizeof(p))
                return false;
        jfd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (jfd < 0)
                return errno == ENOENT;
        if (pread(jfd, &first, 1, 0) == 0)
                first = 0; /* empty */
        close(jfd);
        return first == 0;
}

/* lstat and the side files, without opening the database; refuses what is
 * not a regular file. wal_format is left false. */
static enum maint_status probe_files(const char *path, struct layout *l, struct maint_result *r)
{
        bool exists;

        if (lstat(path, &l->st) < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return set_status(r, MAINT_MISSING, 0, "no such file");
                if (errno == EACCES)
                        return set_status(r, MAINT_PERMISSION, 0, "cannot look up the file: %s", strerror(errno));
                return set_status(r, MAINT_IOERR, 0, "cannot look up the file: %s", strerror(errno));
        }
        if (S_ISLNK(l->st.st_mode))
                return set_status(r, MAINT_PERMISSION, 0,
                                  "is a symbolic link; configure the real path instead");
        /* Opening a FIFO or device could block or have effects: never. */
        if (!S_ISREG(l->st.st_mode))
                return set_status(r, MAINT_NOTADB, 0, "not a regular file (%s)",
                                  S_ISDIR(l->st.st_mode) ? "a directory" : "a special file");
        l->wal_format = false;
        l->lockless = false;
        l->journal_quiet = false;
        l->journal_size = side_size(path, DBSTAT_SUFFIX_JOURNAL, &exists);
        l->wal_size = side_size(path, DBSTAT_SUFFIX_WAL, &exists);
        side_size(path, DBSTAT_SUFFIX_SHM, &l->shm);
        return MAINT_OK;
}

/* probe_files and the header's mode. Opens and closes the database: never
 * while a connection of this process holds locks on it (a close drops
 * them all). */
static enum maint_status probe(const char *path, struct layout *l, struct maint_result *r)
{
        unsigned char h[20];
        int fd;

        if (probe_files(path, l, r) != MAINT_OK)
                return r->status;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd >= 0) {
                l->wal_format = pread(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h) && h[19] == 2;
                if (l->journal_size > 0)
                        l->journal_quiet = journal_quiet(path, fd);
                close(fd);
        }
        return MAINT_OK;
}

static enum read_mode choose_read_mode(const struct layout *l)
{
        /* A WAL database with its -wal and -shm: the -shm read-only. A
         * -journal beside it is still checked for a hot one first, as any
         * open does (pager.c sqlite3PagerSharedLock: READONLY_ROLLBACK). */
        if (l->st.st_size > 0 && l->wal_size >= 0 && l->shm)
                return READ_SHARED;
        /* A -journal may be hot: only mode=ro tells (READONLY_ROLLBACK).
         * A long read need not ask of one that cannot be hot (an
         * application's live transaction's, whose commit a SHARED lock
         * held throughout would hold up): it goes without, verified
         * afterwards, the journal too (journal_settled). */
        if (l->journal_size > 0 && !(l->lockless && l->journal_quiet))
                return READ_ROLLBACK;
        /* An empty file is an empty database; a -wal beside it SQLite would
         * delete, even read-only. */
        if (l->st.st_size == 0)
                return READ_IMMUTABLE;
        if (l->wal_size > WAL_HEADER_BYTES)
                return READ_EXCLUSIVE;
        /* No frame to read: the database is the file alone, but any other
         * open would create a -wal and a -shm. */
        if (l->wal_format || l->wal_size >= 0)
                return READ_IMMUTABLE;
        /* A rollback-mode reader holds a SHARED lock for as long as it
         * reads, and no application can commit meanwhile: a read of the
         * whole file goes without, and is verified afterwards. */
        if (l->lockless)
                return READ_IMMUTABLE;
        return READ_ROLLBACK;
}

/* The VFSes that open a database and its side files (dirvfs.c in a job
 * process); NULL: SQLite's default and unix-excl. */
static const char *vfs_normal, *vfs_excl;

void maint_set_vfs(const char *normal, const char *excl)
{
        vfs_normal = normal;
        vfs_excl = excl;
}

/* "file:///..." (or "file:name" for a name relative to the working
 * directory) with every byte outside [A-Za-z0-9/._~-] as %HH, so that ?, #
 * and % in a path mean themselves (SQLite decodes %HH); then the
 * parameters, and the VFS to use. */
static char *path_uri(const char *path, const char *params, bool excl)
{
        static const char hex[] = "0123456789ABCDEF";
        const char *vfs = excl ? (vfs_excl ? vfs_excl : "unix-excl") : vfs_normal;
        size_t n = strlen(path), k = 0;
        char *s = malloc(7 + 3 * n + 2 + strlen(params) + 5 + (vfs ? strlen(vfs) : 0) + 1);

        if (!s)
                return NULL;
        k = (size_t)sprintf(s, "%s", path[0] == '/' ? "file://" : "file:");
        for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
                if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                    strchr("/._~-", *p)) {
                        s[k++] = (char)*p;
                } else {
                        s[k++] = '%';
                        s[k++] = hex[*p >> 4];
                        s[k++] = hex[*p & 15];
                }
        }
        s[k] = '\0';
        if (*params || vfs) {
                strcat(s, "?");
                strcat(s, params);
        }
        if (vfs) {
                strcat(s, *params ? "&vfs=" : "vfs=");
                strcat(s, vfs);
        }
        return s;
}

/* Open and set up a connection (SQLITE-NOTES.md, "Databases you do not
 * control"). Never creates the file; never checkpoints on close unless the
 * operation wrote (db_close). */
static enum maint_status db_connect(const char *path, const char *params, bool excl, int flags,
                                    const struct maint_opts *o, struct maint_cancel *cancel, sqlite3 **ret,
                                    struct maint_result *r)
{
        sqlite3 *db = NULL;
        char *uri = path_uri(path, params, excl);
        int rc;

        *ret = NULL;
        if (!uri)
                return set_status(r, MAINT_ERROR, SQLITE_NOMEM, "out of memory");
        rc = sqlite3_open_v2(uri, &db, flags | SQLITE_OPEN_URI | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_EXRESCODE, NULL);
        free(uri);
        if (rc != SQLITE_OK) {
                fail_sqlite(r, db, rc, "cannot open");
                sqlite3_close_v2(db);
                return r->status;
        }
        sqlite3_extended_result_codes(db, 1);
        sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
        /* The last connection to a WAL database checkpoints and deletes the
         * -wal on close even if it only read: not ours to do unasked. */
        sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
        /* VACUUM, ANALYZE and the checks need neither; a hostile schema's
         * triggers and views are never run. trusted_schema stays ON: see
         * SQLITE-NOTES.md (JSON indexes would read as corrupt). */
        sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, NULL);
        sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_VIEW, 0, NULL);
        /* conf caps busy_timeout well inside an int of milliseconds. */
        sqlite3_busy_timeout(db, o->busy_timeout_ms > INT_MAX ? INT_MAX : (int)o->busy_timeout_ms);
        sqlite3_progress_handler(db, MAINT_PROGRESS_STEPS, progress_cb, cancel);
        rc = sqlite3_exec(db, "PRAGMA cell_size_check=ON; PRAGMA mmap_size=0;", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
                fail_sqlite(r, db, rc, "cannot set up the connection");
                sqlite3_close_v2(db);
                return r->status;
        }
        if (cancel) {
                pthread_mutex_lock(&cancel->lock);
                cancel->db = db;
                pthread_mutex_unlock(&cancel->lock);
        }
        thread_cancel = cancel;
        *ret = db;
        return MAINT_OK;
}

/* A read-only connection: how it opens depends on the files (read_mode).
 * *mode tells the caller whether to verify the read (read_unchanged). */
static enum maint_status db_open_read(const char *path, const struct layout *l, const struct maint_opts *o,
                                      struct maint_cancel *cancel, enum read_mode *mode, sqlite3 **ret,
                                      struct maint_result *r)
{
        *mode = choose_read_mode(l);
        switch (*mode) {
        case READ_SHARED:
                return db_connect(path, "mode=ro&readonly_shm=1", false, SQLITE_OPEN_READONLY, o, cancel, ret, r);
        case READ_IMMUTABLE:
                return db_connect(path, "mode=ro&immutable=1", false, SQLITE_OPEN_READONLY, o, cancel, ret, r);
        case READ_EXCLUSIVE:
                /* Heap memory stands in for the -shm; the exclusive lock needs
                 * a read-write descriptor, but nothing is written. */
                if (db_connect(path, "", true, SQLITE_OPEN_READWRITE, o, cancel, ret, r) == MAINT_PERMISSION) {
                        char why[sizeof(r->message)];

                        util_strlcpy(why, r->message, sizeof(why));
                        set_status(r, MAINT_PERMISSION, r->sqlite_rc,
                                   "a -wal without its -shm (a restored copy, which no application has open): "
                                   "SQLite reads it only under an exclusive lock, which needs write access to "
                                   "the database, and there is none here (%s); copy the files elsewhere to check "
                                   "them", why);
                }
                return r->status;
        case READ_ROLLBACK:
                break;
        }
        return db_connect(path, "mode=ro", false, SQLITE_OPEN_READONLY, o, cancel, ret, r);
}

static void db_close(const char *path, sqlite3 *db, struct maint_cancel *cancel, bool wrote);

/* The journal mode that keeps an application's -journal as it keeps it: a
 * rollback-mode database whose -journal is there while no transaction is
 * (TRUNCATE leaves it empty, PERSIST with its header zeroed, pager.c
 * zeroJournalHdr) is written with that mode, so the job does not delete a
 * file the application may be unable to create again. NULL: SQLite's
 * default (DELETE), for a WAL database, no -journal, or a live or hot one. */
/* Whether another process holds path's RESERVED lock: the -journal beside
 * it is its live transaction's (with synchronous=FULL its header is zeros
 * until the commit's sync), which says nothing of its journal mode. Asked
 * before this process opens the database through SQLite: closing a
 * descriptor of it would drop that connection's locks. */
static bool journal_live(const char *path)
{
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = SQLITE_RESERVED_BYTE, .l_len = 1 };
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        bool live;

        if (fd < 0)
                return false;
        live = fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
        close(fd);
        return live;
}

/* The journal mode the application keeps, as its files show it (a
 * -journal left empty: TRUNCATE; left with a zeroed header: PERSIST), for
 * the VACUUM's connection to keep; NULL: DELETE, or nothing to tell. */
static const char *kept_journal_mode(const char *path, const struct layout *l)
{
        static const unsigned char magic[8] = { 0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7 };
        unsigned char h[8];
        char p[4096 + 16];
        bool persist;
        int fd;

        if (l->wal_format || l->journal_size < 0 || journal_live(path))
                return NULL;
        if (l->journal_size == 0)
                return "TRUNCATE";
        if ((size_t)snprintf(p, sizeof(p), "%s-journal", path) >= sizeof(p))
                return NULL;
        fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
                return NULL;
        persist = pread(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h) && memcmp(h, magic, sizeof(h)) != 0;
        close(fd);
        return persist ? "PERSIST" : NULL;
}

static enum maint_status db_open_write(const char *path, const struct maint_opts *o, struct maint_cancel *cancel,
                                       sqlite3 **ret, struct maint_result *r)
{
        const char *mode;
        struct layout l;
        char sql[64];
        int rc;

        if (probe(path, &l, r) != MAINT_OK)
                return r->status;
        mode = kept_journal_mode(path, &l);
        if (db_connect(path, "", false, SQLITE_OPEN_READWRITE, o, cancel, ret, r) != MAINT_OK)
                return r->status;
        if (!mode)
                return MAINT_OK;
        snprintf(sql, sizeof(sql), "PRAGMA main.journal_mode=%s", mode);
        rc = sqlite3_exec(*ret, sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
                fail_sqlite(r, *ret, rc, "cannot keep the application's journal mode");
                db_close(path, *ret, cancel, false);
                *ret = NULL;
        }
        return r->status;
}

/* A read of a database that has no -wal cannot take SQLite's locks without
 * creating one, so it was made without them (immutable=1); it holds if the
 * file did not change meanwhile. A write after started carries a change
 * time at or after it (the kernel stamps files from the same coarse clock);
 * on a filesystem with whole-second times (tv_nsec 0), whole seconds are
 * compared. */
static bool read_unchanged(const char *path, const struct layout *l, const struct timespec *started)
{
        struct stat now;

        if (lstat(path, &now) < 0)
                return false;
        if (now.st_dev != l->st.st_dev || now.st_ino != l->st.st_ino || now.st_size != l->st.st_size ||
            now.st_ctim.tv_sec != l->st.st_ctim.tv_sec || now.st_ctim.tv_nsec != l->st.st_ctim.tv_nsec)
                return false;
        if (now.st_ctim.tv_nsec == 0)
                return now.st_ctim.tv_sec < started->tv_sec;
        return now.st_ctim.tv_sec < started->tv_sec ||
               (now.st_ctim.tv_sec == started->tv_sec && now.st_ctim.tv_nsec < started->tv_nsec);
}

/* After a read without locks made beside a -journal that could not be
 * hot: it still cannot. One left by a crash during the read is hot: look
 * again, and the next look says so. */
static bool journal_settled(const char *path)
{
        bool quiet;
        int fd;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        quiet = journal_quiet(path, fd);
        if (fd >= 0)
                close(fd);
        return quiet;
}

static void db_close(const char *path, sqlite3 *db, struct maint_cancel *cancel, bool wrote)
{
        if (!db)
                return;
        if (cancel) {
                pthread_mutex_lock(&cancel->lock);
                cancel->db = NULL;
                pthread_mutex_unlock(&cancel->lock);
        }
        /* An operation that wrote may leave the tidying to SQLite: the last
         * connection checkpoints and removes the -wal and -shm, as the
         * application's own last close would. */
        if (wrote)
                sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0, NULL);
        /* Every statement is finalized by now; close_v2 cannot leave a zombie. */
        sqlite3_close_v2(db);
}

/* ---- small helpers ------------------------------------------------------------ */

/* Each finding once: a check may say the same thing twice (rtreecheck()
 * names a missing mapping once per cell that has it). Returns whether text
 * was added. */
static bool add_problem(struct maint_result *r, const char *text)
{
        char **p;

        if (!text)
                text = "(null)";
        if (r->n_problems >= MAINT_MAX_PROBLEMS)
                return false;
        for (size_t i = 0; i < r->n_problems; i++)
                if (strcmp(r->problems[i], text) == 0)
                        return false;
        p = realloc(r->problems, (r->n_problems + 1) * sizeof(*p));
        if (!p)
                return false;
        r->problems = p;
        r->problems[r->n_problems] = strdup(text);
        if (!r->problems[r->n_problems])
                return false;
        r->n_problems++;
        return true;
}

static struct maint_table *add_table(struct maint_result *r, const char *name, enum maint_table_verdict v)
{
        struct maint_table *t = realloc(r->tables, (r->n_tables + 1) * sizeof(*t));

        if (!t)
                return NULL;
        r->tables = t;
        t = &r->tables[r->n_tables];
        *t = (struct maint_table){ .name = strdup(name), .verdict = v };
        if (!t->name)
                return NULL;
        r->n_tables++;
        return t;
}

/* The names the query's first column gives, in order; NULL-terminated
 * array, or NULL with *rc set. */
static char **query_names(sqlite3 *db, const char *sql, int *rc)
{
        sqlite3_stmt *s;
        char **v = NULL;
        size_t n = 0;

        *rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
        if (*rc != SQLITE_OK)
                return NULL;
        while ((*rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *name = (const char *)sqlite3_column_text(s, 0);
                char **nv = realloc(v, (n + 2) * sizeof(*v));

                if (!nv || !name || !(nv[n] = strdup(name))) {
                        free(nv ? nv : v);
                        v = NULL;
                        if (nv)
                                for (size_t i = 0; i < n; i++)
                                        free(nv[i]);
                        *rc = name ? SQLITE_NOMEM : SQLITE_CORRUPT;
                        sqlite3_finalize(s);
                        return NULL;
                }
                v = nv;
                v[++n] = NULL;
        }
        sqlite3_finalize(s);
        if (*rc != SQLITE_DONE) {
                for (size_t i = 0; i < n; i++)
                        free(v[i]);
                free(v);
                return NULL;
        }
        *rc = SQLITE_OK;
        if (!v)
                v = calloc(1, sizeof(*v));
        if (!v)
                *rc = SQLITE_NOMEM;
        return v;
}

static void free_names(char **v)
{
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

/* One row of int64 from a statement with one text parameter; rc of the
 * step, SQLITE_ROW on success. */
static int query_ints(sqlite3 *db, const char *sql, const char *arg, int64_t *out, int n_out)
{
        sqlite3_stmt *s;
        int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);

        if (rc != SQLITE_OK)
                return rc;
        if (arg)
                sqlite3_bind_text(s, 1, arg, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
        for (int i = 0; rc == SQLITE_ROW && i < n_out; i++)
                out[i] = sqlite3_column_int64(s, i);
        sqlite3_finalize(s);
        return rc;
}

/* The tables with storage, as vacuum.c copies them (a virtual table has
 * rootpage 0), SQLite's own (sqlite_*) left out. From the schema table, not
 * PRAGMA table_list, which would instantiate every virtual table. */
#define ORDINARY_TABLES_SQL                                                                              \
        "SELECT name FROM main.sqlite_schema WHERE type = 'table' AND coalesce(rootpage, 1) > 0"      \
        " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"

/* ---- integrity ------------------------------------------------------------------- */

/* The directory SQLite puts temp files in (SQLITE_TMPDIR, TMPDIR, /var/tmp,
 * /usr/tmp, /tmp, .), as SQLite's unix VFS chooses it. */
static const char *maint_temp_dir(void)
{
        const char *dirs[] = { sqlite3_temp_directory, getenv("SQLITE_TMPDIR"), getenv("TMPDIR"),
                               "/var/tmp", "/usr/tmp", "/tmp" };
        struct stat st;

        /* The same choice as unixTempFileDir() in SQLite's os_unix.c. */
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++)
                if (dirs[i] && stat(dirs[i], &st) == 0 && S_ISDIR(st.st_mode) &&
                    access(dirs[i], W_OK | X_OK) == 0)
                        return dirs[i];
        return ".";
}

/* Free bytes for us where path is, and the filesystem's block (may be NULL). */
static int free_bytes(const char *path, uint64_t *ret, uint64_t *block)
{
        struct statvfs v;

        if (statvfs(path, &v) < 0)
                return -errno;
        /* f_bavail, not f_bfree: root's reserve is not ours to spend. */
        *ret = (uint64_t)v.f_bavail * v.f_frsize;
        if (block)
                *block = v.f_frsize;
        return 0;
}

/* The full-text 'integrity-check' command is an INSERT: it runs on a
 * snapshot, copied by SQLite's backup API (one read transaction) into a
 * private temp database that SQLite deletes on close. So no check ever
 * holds the database's write lock, and a read-only look can run it. */
static enum maint_status snapshot(sqlite3 *src, const struct dbstat *st, sqlite3 **ret, struct maint_result *r)
{
        uint64_t need = st->page_count * st->page_size, have = 0;
        const char *tmp = maint_temp_dir();
        sqlite3_backup *b;
        sqlite3 *copy = NULL;
        char need_s[32], have_s[32];
        int rc;

        *ret = NULL;
        if (free_bytes(tmp, &have, NULL) == 0 && have < need) {
                r->space_needed_tmp = need;
                r->space_free_tmp = have;
                util_strlcpy(r->tmp_dir, tmp, sizeof(r->tmp_dir));
                return set_status(r, MAINT_NOSPACE, 0,
                                  "not enough free space for a snapshot to check the full-text indexes in: "
                                  "it needs %s in the temp directory %s (has %s)",
                                  util_format_bytes(need, need_s, sizeof(need_s)), tmp,
                                  util_format_bytes(have, have_s, sizeof(have_s)));
        }
        rc = sqlite3_open_v2("", &copy, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_EXRESCODE, NULL);
        if (rc != SQLITE_OK) {
                fail_sqlite(r, copy, rc, "cannot open a snapshot for the full-text index check");
                sqlite3_close_v2(copy);
                return r->status;
        }
        /* as db_connect's: the file's triggers and views are not run (an
         * FTS5 table's content may be a view), and it stops with the job */
        sqlite3_db_config(copy, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
        sqlite3_db_config(copy, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, NULL);
        sqlite3_db_config(copy, SQLITE_DBCONFIG_ENABLE_VIEW, 0, NULL);
        sqlite3_progress_handler(copy, MAINT_PROGRESS_STEPS, progress_cb, thread_cancel);
        (void)sqlite3_exec(copy, "PRAGMA cell_size_check=ON", NULL, NULL, NULL);
        b = sqlite3_backup_init(copy, "main", src, "main");
        if (!b) {
                fail_sqlite(r, copy, sqlite3_errcode(copy), "cannot snapshot the database");
                sqlite3_close_v2(copy);
                return r->status;
        }
        rc = sqlite3_backup_step(b, -1);
        sqlite3_backup_finish(b);
        if (rc != SQLITE_DONE) {
                fail_sqlite(r, src, rc, "cannot snapshot the database");
                sqlite3_close_v2(copy);
                return r->status;
        }
        *ret = copy;
        return MAINT_OK;
}

static enum maint_status add_vtab(struct maint_result *r, const struct vtab *v, enum vtab_verdict verdict,
                                  char *why)
{
        struct maint_vtab *n = realloc(r->vtabs, (r->n_vtabs + 1) * sizeof(*n));

        if (!n || !(v->name)) {
                free(why);
                return set_status(r, MAINT_ERROR, SQLITE_NOMEM, "out of memory");
        }
        r->vtabs = n;
        n[r->n_vtabs] = (struct maint_vtab){ .name = strdup(v->name), .kind = v->kind, .verdict = verdict,
                                             .why = why };
        if (!n[r->n_vtabs].name) {
                free(why);
                return set_status(r, MAINT_ERROR, SQLITE_NOMEM, "out of memory");
        }
        r->n_vtabs++;
        return MAINT_OK;
}

/* Each full-text and R*Tree table checked on its own (vtabs.h); a damaged
 * one adds its findings to r->problems, one line each. An FTS table is
 * checked on a snapshot, an R*Tree on db itself (rtreecheck() only
 * reads). The auxiliary modules and unknown ones have nothing to check. */
static enum maint_status check_vtabs(sqlite3 *db, const struct dbstat *st, struct maint_result *r)
{
        struct vtab *v;
        sqlite3 *copy = NULL;
        size_t n;
        int rc = vtabs_list(db, &v, &n);

        if (rc != SQLITE_OK)
                return fail_sqlite(r, db, rc, "cannot list the virtual tables");
        for (size_t i = 0; i < n && r->status == MAINT_OK; i++) {
                bool fts = v[i].kind == VTAB_FTS3 || v[i].kind == VTAB_FTS5;
                sqlite3 *on = fts ? copy : db;
                enum vtab_verdict verdict;
                char *why;

                if (v[i].kind == VTAB_AUX || v[i].kind == VTAB_OTHER)
                        continue;
                if (fts && !copy && !(v[i].kind == VTAB_FTS3 && (v[i].contentless || v[i].compress[0]))) {
                        if (snapshot(db, st, &copy, r) != MAINT_OK)
                                break;
                        on = copy;
                }
                rc = vtab_check(on ? on : db, &v[i], &verdict, &why);
                if (rc != SQLITE_OK) {
                        char what[300];

                        snprintf(what, sizeof(what), "checking %s %s", vtab_kind_name(v[i].kind), v[i].name);
                        fail_sqlite(r, on ? on : db, rc, what);
                        break;
                }
                if (verdict == VTAB_VERDICT_CORRUPT) {
                        /* rtreecheck() reports one finding per line */
                        for (char *line = why, *next; line && *line; line = next) {
                                char *p;

                                next = strchr(line, '\n');
                                if (next)
                                        *next++ = '\0';
                                p = sqlite3_mprintf("%s %s: %s", vtab_kind_name(v[i].kind), v[i].name, line);
                                add_problem(r, p);
                                sqlite3_free(p);
                                if (next)
                                        next[-1] = '\n';
                        }
                }
                add_vtab(r, &v[i], verdict, why);
        }
        sqlite3_close_v2(copy);
        vtabs_free(v, n);
        return r->status;
}

static void free_vtabs(struct maint_result *r)
{
        for (size_t i = 0; i < r->n_vtabs; i++) {
                free(r->vtabs[i].name);
                free(r->vtabs[i].why);
        }
        free(r->vtabs);
        r->vtabs = NULL;
        r->n_vtabs = 0;
}

static size_t count_vtabs(const struct maint_result *r, enum vtab_verdict verdict)
{
        size_t n = 0;

        for (size_t i = 0; i < r->n_vtabs; i++)
                n += r->vtabs[i].verdict == verdict;
        return n;
}

/* "full-text index a (why), R*Tree index b (why)" of the tables with
 * verdict (the why when asked), as many as fit, then "and N more". */
static const char *vtab_list(const struct maint_result *r, enum vtab_verdict verdict, bool why, char *buf,
                             size_t len)
{
        size_t k = 0, shown = 0, all = count_vtabs(r, verdict);

        buf[0] = '\0';
        for (size_t i = 0; i < r->n_vtabs; i++) {
                const struct maint_vtab *t = &r->vtabs[i];
                char one[600];
                int n;

                if (t->verdict != verdict)
                        continue;
                why = why && t->why;
                n = snprintf(one, sizeof(one), "%s%s %s%s%s%s", shown ? ", " : "", vtab_kind_name(t->kind), t->name,
                             why ? " (" : "", why ? t->why : "", why ? ")" : "");
                if (n < 0 || k + (size_t)n + 24 >= len)
                        break;
                memcpy(buf + k, one, (size_t)n + 1);
                k += (size_t)n;
                shown++;
        }
        if (shown < all)
                snprintf(buf + k, len - k, "%sand %zu more", shown ? " " : "", all - shown);
        return buf;
}

/* One row of PRAGMA integrity_check / quick_check holds one finding or
 * several, one per line, under a "*** in database main ***" line
 * (pragma.c): each finding becomes one problem. Returns the findings
 * added (not those already listed). */
static size_t add_findings(struct maint_result *r, const char *row)
{
        size_t found = 0;

        while (row && *row) {
                const char *end = strchr(row, '\n');
                size_t n = end ? (size_t)(end - row) : strlen(row);

                if (n > 0 && !(n > 8 && strncmp(row, "*** in database ", 16) == 0 && strncmp(row + n - 4, " ***", 4) == 0)) {
                        char *line = strndup(row, n);

                        found += add_problem(r, line ? line : "(out of memory)");
                        free(line);
                }
                row = end ? end + 1 : NULL;
        }
        return found;
}

/* quick_check or integrity_check, and with full the checks of each
 * full-text and R*Tree table (check_vtabs), r->vtabs saying what each
 * found. The worst of them: MAINT_CORRUPT with each finding once in
 * r->problems; else MAINT_CANNOT when some virtual table could not be
 * checked; else MAINT_OK. Or the failure of the check itself. */
static enum maint_status run_check(sqlite3 *db, const struct dbstat *st, enum integrity_level level,
                                   const char *when, struct maint_result *r)
{
        const char *name = level == INTEGRITY_FULL ? "integrity_check" : "quick_check";
        size_t btree = 0, vt;
        sqlite3_stmt *s;
        char cannot[1024];
        int rc;

        if (level == INTEGRITY_NONE)
                return MAINT_OK;
        /* the verdicts of the latest check (a VACUUM's after its before) */
        free_vtabs(r);
        rc = sqlite3_prepare_v2(db, level == INTEGRITY_FULL ? "PRAGMA integrity_check(" STRINGIFY(INTEGRITY_MAX_ERRORS) ")"
                                                            : "PRAGMA quick_check(" STRINGIFY(INTEGRITY_MAX_ERRORS) ")",
                                -1, &s, NULL);
        if (rc != SQLITE_OK)
                return fail_sqlite(r, db, rc, "integrity check");
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *row = (const char *)sqlite3_column_text(s, 0);

                if (!row || strcmp(row, "ok") != 0)
                        btree += add_findings(r, row ? row : "(no text)");
        }
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE) {
                fail_sqlite(r, db, rc, "integrity check");
                if (r->status == MAINT_CORRUPT)
                        add_problem(r, sqlite3_errmsg(db));
                return r->status;
        }
        if (level == INTEGRITY_FULL && check_vtabs(db, st, r) != MAINT_OK)
                return r->status;
        /* Worst first: corrupt, then what could not be checked. Full means
         * full: a VACUUM does not run on what it could not check. */
        if (r->n_problems == 0 && count_vtabs(r, VTAB_VERDICT_CANNOT))
                return set_status(r, MAINT_CANNOT, 0, "%s%s%s: the b-trees are intact%s; not checked: %s%s", name,
                                  *when ? " " : "", when,
                                  count_vtabs(r, VTAB_VERDICT_OK) ? ", and so are the other indexes checked" : "",
                                  vtab_list(r, VTAB_VERDICT_CANNOT, true, (char[1024]){ 0 }, 1024),
                                  *when ? " (with vacuum.integrity: quick a VACUUM runs without the full-text and "
                                          "R*Tree checks)" : "");
        if (r->n_problems == 0)
                return MAINT_OK;
        vt = r->n_problems - btree;
        cannot[0] = '\0';
        if (count_vtabs(r, VTAB_VERDICT_CANNOT))
                snprintf(cannot, sizeof(cannot), "; not checked: %s",
                         vtab_list(r, VTAB_VERDICT_CANNOT, true, (char[768]){ 0 }, 768));
        return set_status(r, MAINT_CORRUPT, SQLITE_CORRUPT, "%s%s%s found %zu problem%s%s%s%s%s", name,
                          *when ? " " : "", when, r->n_problems, r->n_problems == 1 ? "" : "s",
                          btree >= INTEGRITY_MAX_ERRORS ? " (it stops at " STRINGIFY(INTEGRITY_MAX_ERRORS) ")" : "",
                          vt && btree ? ": in the b-trees and in " : vt ? ": in " : "",
                          vt ? vtab_list(r, VTAB_VERDICT_CORRUPT, false, (char[768]){ 0 }, 768) : "", cannot);
}

/* ---- free space --------------------------------------------------------------- */

/* The directory part of path, for messages ("." for a bare name). */
static void dir_of(const char *path, char *dir, size_t len)
{
        const char *slash = strrchr(path, '/');

        if (!slash)
                snprintf(dir, len, ".");
        else
                snprintf(dir, len, "%.*s", slash == path ? 1 : (int)(slash - path), path);
}

/* The directory to stat(): "." for a bare name, the working directory's. */
static const char *dir_of_path(const char *path, char *dir, size_t len)
{
        dir_of(path, dir, len);
        return dir;
}

/* What VACUUM writes (docs/DESIGN.md, "Free space for VACUUM"): a copy of
 * the live pages in the temp directory (vacuum.c builds the new database
 * there), then, beside the database, those pages again: as WAL frames, or
 * as the rollback journal's records of the pages the copy-back overwrites.
 * disk_space_factor is the margin on each; one filesystem must hold both. */
static enum maint_status check_space(const char *path, const struct dbstat *st,
                                     const struct maint_opts *o, struct maint_result *r)
{
        uint64_t pages = st->page_count > st->freelist_count ? st->page_count - st->freelist_count : 0;
        uint64_t live = pages * st->page_size, extra;
        char need_db[32], need_tmp[32], have_db[32], have_tmp[32], sum[32], live_s[32], dir[4096], pdir[4096];
        const char *tmp = maint_temp_dir();
        uint64_t block_db = 0, block_tmp = 0;
        struct stat sd, stt;
        bool same;
        int e;

        util_strlcpy(r->tmp_dir, tmp, sizeof(r->tmp_dir));
        dir_of(o->display_path ? o->display_path : path, dir, sizeof(dir));
        if ((e = free_bytes(path, &r->space_free_db, &block_db)) < 0)
                return set_status(r, MAINT_IOERR, 0, "cannot measure free space: %s", strerror(-e));
        if ((e = free_bytes(tmp, &r->space_free_tmp, &block_tmp)) < 0)
                return set_status(r, MAINT_IOERR, 0, "cannot measure free space in %s: %s", tmp, strerror(-e));
        /* Beside the database: the journal's records, or the WAL's frames and
         * its wal-index (-shm: 32 KiB per 4096 frames, walformat.html); each
         * file rounded up to the filesystem's block. The temp copy: one file. */
        extra = strcmp(st->journal_mode, "wal") == 0
              ? WAL_HEADER_BYTES + pages * WAL_FRAME_HEADER_BYTES + WALINDEX_BLOCK_BYTES * (1 + pages / WALINDEX_FRAMES) +
                2 * block_db
              : JOURNAL_HEADER_BYTES + pages * JOURNAL_RECORD_EXTRA + block_db;
        r->space_needed = (uint64_t)((double)(live + extra) * o->disk_space_factor);
        r->space_needed_tmp = (uint64_t)((double)(live + block_tmp) * o->disk_space_factor);
        same = stat(dir_of_path(path, pdir, sizeof(pdir)), &sd) == 0 && stat(tmp, &stt) == 0 && sd.st_dev == stt.st_dev;
        if (same ? r->space_free_db >= r->space_needed + r->space_needed_tmp
                 : r->space_free_db >= r->space_needed && r->space_free_tmp >= r->space_needed_tmp)
                return MAINT_OK;
        util_format_bytes(r->space_needed, need_db, sizeof(need_db));
        util_format_bytes(r->space_needed_tmp, need_tmp, sizeof(need_tmp));
        util_format_bytes(r->space_free_db, have_db, sizeof(have_db));
        util_format_bytes(r->space_free_tmp, have_tmp, sizeof(have_tmp));
        util_format_bytes(live, live_s, sizeof(live_s));
        if (same)
                return set_status(r, MAINT_NOSPACE, 0,
                                  "not enough free space for VACUUM: it needs %s in %s and %s in the temp "
                                  "directory %s, one filesystem: %s in all, which has %s (%.1f x the %s of "
                                  "live pages it copies, for each)", need_db, dir, need_tmp, tmp,
                                  util_format_bytes(r->space_needed + r->space_needed_tmp, sum, sizeof(sum)),
                                  have_db, o->disk_space_factor, live_s);
        return set_status(r, MAINT_NOSPACE, 0,
                          "not enough free space for VACUUM: it needs %s free in %s (has %s%s) and %s in the "
                          "temp directory %s (has %s%s) (%.1f x the %s of live pages it copies, for each)",
                          need_db, dir, have_db, r->space_free_db < r->space_needed ? ", too little" : "",
                          need_tmp, tmp, have_tmp, r->space_free_tmp < r->space_needed_tmp ? ", too little" : "",
                          o->disk_space_factor, live_s);
}

/* ---- statistics, rowids -------------------------------------------------------- */

/* Set by read_look while a look reads a WAL database without its -wal:
 * an immutable connection never opens the WAL, so PRAGMA journal_mode
 * names the connection's default; the file's mode is WAL. Per thread: the
 * daemon's workers look at different databases at once. */
static _Thread_local bool wal_format_read;

static bool is_wal(const struct dbstat *st)
{
        return strcmp(st->journal_mode, "wal") == 0;
}

static enum maint_status read_stats(sqlite3 *db, const char *path, struct dbstat *st, bool *have,
                                    struct maint_result *r)
{
        int rc = dbstat_read_db(db, path, st);

        if (rc != SQLITE_OK)
                return fail_sqlite(r, db, rc, "cannot read statistics");
        if (wal_format_read)
                util_strlcpy(st->journal_mode, "wal", sizeof(st->journal_mode));
        *have = true;
        return MAINT_OK;
}

/* An empty file is an empty database to SQLite: writing to it (VACUUM,
 * ANALYZE) would make it a real one with our page size, a choice that is
 * the application's. Nothing to do: SKIPPED. */
static bool empty_database(const struct dbstat *st, struct maint_result *r)
{
        if (st->page_count > 0)
                return false;
        set_status(r, MAINT_SKIPPED, 0, "empty database (0 pages), nothing to do");
        return true;
}

/* A name by which SQL reaches the table's rowid: one of rowid, _rowid_ and
 * oid that no column of the table has taken, or NULL. */
static const char *rowid_name(sqlite3 *db, const char *table, int *rc)
{
        static const char *const names[] = { "rowid", "_rowid_", "oid" };

        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                char *sql = sqlite3_mprintf("SELECT count(*) FROM pragma_table_xinfo(?1) WHERE name = '%q' "
                                            "COLLATE NOCASE", names[i]);
                int64_t taken = 1;

                if (!sql) {
                        *rc = SQLITE_NOMEM;
                        return NULL;
                }
                *rc = query_ints(db, sql, table, &taken, 1);
                sqlite3_free(sql);
                if (*rc != SQLITE_ROW)
                        return NULL;
                if (taken == 0)
                        return names[i];
        }
        *rc = SQLITE_ROW;
        return NULL;
}

/* The tables whose rowids this VACUUM would change (maint.h has the rule):
 * a rowid table with no PRIMARY KEY and no index, whose rowids are not
 * already 1..N (a WITHOUT ROWID table has a PRIMARY KEY). Each goes into
 * r->tables. */
static enum maint_status find_renumbered_tables(sqlite3 *db, struct maint_result *r)
{
        char **names;
        int rc;

        names = query_names(db, ORDINARY_TABLES_SQL, &rc);
        if (!names)
                return fail_sqlite(r, db, rc, "cannot list tables");
        for (size_t i = 0; names[i]; i++) {
                int64_t keyed = 0, v[3] = { 0, 0, 0 };
                struct maint_table *t;
                const char *rowid;
                char *sql;

                rc = query_ints(db, "SELECT EXISTS(SELECT 1 FROM pragma_index_list(?1)) OR "
                                    "EXISTS(SELECT 1 FROM pragma_table_info(?1) WHERE pk > 0)", names[i], &keyed, 1);
                if (rc != SQLITE_ROW)
                        break;
                if (keyed)
                        continue;
                r->unkeyed_tables++;
                rowid = rowid_name(db, names[i], &rc);
                if (rc != SQLITE_ROW)
                        break;
                /* Every name of the rowid taken by a column: it cannot be
                 * read, so assume it is not 1..N (min 0, max 0). */
                sql = rowid ? sqlite3_mprintf("SELECT count(*), min(\"%w\"), max(\"%w\") FROM main.\"%w\"", rowid,
                                              rowid, names[i])
                            : sqlite3_mprintf("SELECT count(*), 0, 0 FROM main.\"%w\"", names[i]);
                if (!sql) {
                        rc = SQLITE_NOMEM;
                        break;
                }
                rc = query_ints(db, sql, NULL, v, 3);
                sqlite3_free(sql);
                if (rc != SQLITE_ROW)
                        break;
                if (v[0] == 0 || (v[1] == 1 && v[2] == v[0]))
                        continue;
                t = add_table(r, names[i], TABLE_ROWIDS_CHANGE);
                if (!t) {
                        rc = SQLITE_NOMEM;
                        break;
                }
                t->rows = (uint64_t)v[0];
                t->rowid_min = v[1];
                t->rowid_max = v[2];
        }
        free_names(names);
        if (rc != SQLITE_ROW && rc != SQLITE_OK)
                return fail_sqlite(r, db, rc, "cannot look at the tables' rowids");
        return MAINT_OK;
}

/* Refuse (MAINT_ROWIDS) unless allowed; the tables stay in r->tables, and
 * the message names as many as it can hold, then how many more. */
static enum maint_status rowid_guard(sqlite3 *db, const struct maint_opts *o, struct maint_result *r)
{
        char list[sizeof(r->message) - 400];
        size_t len = 0, i;

        if (find_renumbered_tables(db, r) != MAINT_OK || r->n_tables == 0 || o->allow_rowid_change)
                return r->status;
        for (i = 0; i < r->n_tables; i++) {
                char one[400];
                size_t n = (size_t)snprintf(one, sizeof(one), "%s%s (%llu rows, rowids %lld..%lld)", i ? ", " : "",
                                            r->tables[i].name, (unsigned long long)r->tables[i].rows,
                                            (long long)r->tables[i].rowid_min, (long long)r->tables[i].rowid_max);

                if (len + n + 40 >= sizeof(list))
                        break;
                memcpy(list + len, one, n + 1);
                len += n;
        }
        if (i < r->n_tables)
                snprintf(list + len, sizeof(list) - len, " and %zu more", r->n_tables - i);
        return set_status(r, MAINT_ROWIDS, 0,
                          "VACUUM would renumber the rows of %zu table%s without an INTEGER PRIMARY KEY or any "
                          "index to rowids 1..N: %s; whatever refers to those rowids (an external-content "
                          "full-text index, another table, the application) would point at the wrong rows; "
                          "allow it with vacuum.allow_rowid_change once nothing does",
                          r->n_tables, r->n_tables == 1 ? "" : "s", list);
}

/* ---- the operations ---------------------------------------------------------------- */

static void begin(struct maint_result *r, uint64_t *t0)
{
        maint_result_clear(r);
        *t0 = util_monotonic_ms();
}

static enum maint_status finish(const char *path, struct maint_result *r, uint64_t t0)
{
        r->duration_ms = util_monotonic_ms() - t0;
        return r->status;
}

/* The database file and its -wal as they are now (wal zeroed: none). */
static void files_now(const char *path, struct file_id *db, struct file_id *wal)
{
        char p[4096 + 16];

        *db = *wal = (struct file_id){ 0 };
        (void)file_id_get(path, db);
        if ((size_t)snprintf(p, sizeof(p), "%s-wal", path) < sizeof(p))
                (void)file_id_get(p, wal);
}

/* A read-only look: open as the files allow, run look(), verify the read
 * when it was made without locks, and try again if the file moved. An
 * operation that writes (writes) first rolls back a hot journal. */
typedef enum maint_status (*look_fn)(sqlite3 *db, const char *path, const struct maint_opts *o,
                                     struct maint_result *r);


/* A hot journal, found by the read-only look of an operation that writes
 * anyway: a read-write open rolls it back (pager.c, as the application's
 * next open would), and the operation says so. */
static enum maint_status roll_back_hot_journal(const char *path, const struct maint_opts *o,
                                               struct maint_cancel *cancel, struct maint_result *r)
{
        int64_t n;
        sqlite3 *db;
        int rc;

        maint_result_clear(r);
        if (db_open_write(path, o, cancel, &db, r) != MAINT_OK)
                return r->status;
        rc = query_ints(db, "SELECT count(*) FROM main.sqlite_schema", NULL, &n, 1);
        if (rc != SQLITE_ROW)
                fail_sqlite(r, db, rc, "cannot roll back the hot journal");
        db_close(path, db, cancel, true);
        return r->status;
}

/* Whether the side files appeared or went since l was taken. */
static bool layout_moved(const char *path, const struct layout *l)
{
        struct maint_result tmp = { .status = MAINT_OK };
        struct layout now;

        if (probe(path, &now, &tmp) != MAINT_OK)
                return true;
        return (now.wal_size >= 0) != (l->wal_size >= 0) || now.shm != l->shm ||
               (now.journal_size >= 0) != (l->journal_size >= 0) || now.st.st_ino != l->st.st_ino;
}

/* read_look's flags */
#define LOOK_WRITES 1u   /* the operation writes afterwards: it may roll back a hot journal */
#define LOOK_LOCKLESS 2u /* a long read: see struct layout */

/* SQLite's unix VFS, when it runs as root, gives each -wal and -shm it
 * opens the database's owner (os_unix.c robustFchown(), after
 * unixOpenSharedMemory() and unixOpen()): a chown to the owner the file
 * already has, which moves its change time all the same, and a backup
 * tool that goes by change times (restic's default) copies the files
 * again. A look that writes nothing leaves even that: fchown is a no-op
 * in the VFS's system call table meanwhile (xSetSystemCall; NULL puts
 * SQLite's own back). One look at a time per process: a job process, or
 * sqlite-maintctl. */
static int no_fchown(int fd, uid_t uid, gid_t gid)
{
        return 0;
}

static void owners_left_alone(bool on)
{
        sqlite3_vfs *unix_vfs = sqlite3_vfs_find("unix");

        if (unix_vfs && unix_vfs->iVersion >= 3 && unix_vfs->xSetSystemCall)
                (void)unix_vfs->xSetSystemCall(unix_vfs, "fchown", on ? (sqlite3_syscall_ptr)no_fchown : NULL);
}

static enum maint_status read_look_files(const char *path, const struct maint_opts *o, struct maint_cancel *cancel,
                                         unsigned flags, look_fn look, struct maint_result *r);

static enum maint_status read_look(const char *path, const struct maint_opts *o, struct maint_cancel *cancel,
                                   unsigned flags, look_fn look, struct maint_result *r)
{
        bool reads = !(flags & LOOK_WRITES);
        enum maint_status s;

        if (reads)
                owners_left_alone(true);
        s = read_look_files(path, o, cancel, flags, look, r);
        if (reads)
                owners_left_alone(false);
        return s;
}

static enum maint_status read_look_files(const char *path, const struct maint_opts *o, struct maint_cancel *cancel,
                                         unsigned flags, look_fn look, struct maint_result *r)
{
        bool writes = flags & LOOK_WRITES;
        bool rolled_back = false;

        for (int attempt = 1;; attempt++) {
                struct timespec started;
                enum read_mode mode;
                struct layout l;
                sqlite3 *db;

                if (probe(path, &l, r) != MAINT_OK)
                        return r->status;
                l.lockless = flags & LOOK_LOCKLESS;
                clock_gettime(CLOCK_REALTIME_COARSE, &started);
                wal_format_read = l.wal_format && choose_read_mode(&l) == READ_IMMUTABLE;
                if (db_open_read(path, &l, o, cancel, &mode, &db, r) == MAINT_OK)
                        look(db, path, o, r);
                wal_format_read = false;
                db_close(path, db, cancel, false);
                if (r->status == MAINT_HOT_JOURNAL && writes && !rolled_back) {
                        if (roll_back_hot_journal(path, o, cancel, r) != MAINT_OK)
                                return r->status;
                        rolled_back = true;
                        continue;
                }
                /* The files changed between the look at them and the open
                 * (the application's last close removed the -shm the open
                 * counted on): not a failure, a moving target. */
                if ((r->sqlite_rc & 0xff) == SQLITE_CANTOPEN && layout_moved(path, &l)) {
                        maint_result_clear(r);
                        if (attempt >= READ_ATTEMPTS)
                                return set_status(r, MAINT_BUSY, 0, "the database's files changed while it was "
                                                  "opened, %d times", attempt);
                        continue;
                }
                /* A read without locks may meet an application's commit
                 * half written (its writer descheduled between two page
                 * writes: the file unchanged before and after the read,
                 * the -journal not hot while it holds its lock). Corruption
                 * so found is looked for again under a SHARED lock. */
                if (mode == READ_IMMUTABLE && (flags & LOOK_LOCKLESS) && r->status == MAINT_CORRUPT &&
                    l.st.st_size > 0 && !l.wal_format) {
                        maint_result_clear(r);
                        flags &= ~LOOK_LOCKLESS;
                        continue;
                }
                if (mode != READ_IMMUTABLE ||
                    (read_unchanged(path, &l, &started) && (l.journal_size <= 0 || journal_settled(path)))) {
                        r->rolled_back_journal = rolled_back;
                        return r->status;
                }
                /* Read while the file changed: what was read may mix two
                 * states. Look again (the next look likely finds a -wal). */
                maint_result_clear(r);
                if (attempt >= READ_ATTEMPTS)
                        return set_status(r, MAINT_BUSY, 0, "the database changed while it was read, %d times",
                                          attempt);
                if (cancelled(cancel))
                        return set_status(r, MAINT_INTERRUPTED, SQLITE_INTERRUPT, "stopped");
                util_sleep_ms(READ_RETRY_MS << attempt);
        }
}

/* read_look, with the database file and its -wal as they were before the
 * look in r->db_id and r->wal_id: a write during the job leaves the files
 * different from those, so the next timer looks again (after a job that
 * wrote, once for nothing). ANALYZE and the deep scan skip a database whose
 * files still are what these say. */
static enum maint_status read_look_noting_files(const char *path, const struct maint_opts *o,
                                                struct maint_cancel *cancel, unsigned flags, look_fn look,
                                                struct maint_result *r)
{
        struct file_id db_id, wal_id;

        files_now(path, &db_id, &wal_id);
        read_look(path, o, cancel, flags, look, r);
        r->db_id = db_id;
        r->wal_id = wal_id;
        return r->status;
}

static enum maint_status look_stats(sqlite3 *db, const char *path, const struct maint_opts *o,
                                    struct maint_result *r)
{
        return read_stats(db, path, &r->after, &r->have_after, r);
}

/* A file's modification time from before the tick of now: a write after
 * now changes it (the kernel stamps files from the same coarse clock; on
 * a filesystem of whole seconds, whole seconds compared). */
static bool settled_before(const struct file_id *f, const struct timespec *now)
{
        if (f->ino == 0)
                return true; /* none */
        if (f->mtime.tv_nsec == 0)
                return f->mtime.tv_sec < now->tv_sec;
        return f->mtime.tv_sec < now->tv_sec || (f->mtime.tv_sec == now->tv_sec && f->mtime.tv_nsec < now->tv_nsec);
}

enum maint_status maint_stats(const char *path, const struct maint_opts *o, struct maint_result *r)
{
        struct file_id db_id, wal_id;
        struct timespec now;
        struct layout l;
        uint64_t t0;
        int e;

        begin(r, &t0);
        /* The files as the read starts: if they are the same at a later
         * poll, so are these figures (the daemon reads again only then).
         * Known only when a write after now would show. */
        clock_gettime(CLOCK_REALTIME_COARSE, &now);
        files_now(path, &db_id, &wal_id);
        if (!settled_before(&db_id, &now) || !settled_before(&wal_id, &now))
                db_id = wal_id = (struct file_id){ 0 };
        if (probe(path, &l, r) != MAINT_OK)
                return finish(path, r, t0);
        /* A -wal without its -shm: SQLite would create the -shm, or lock
         * the application out (unix-excl); the -wal itself tells. */
        if (choose_read_mode(&l) == READ_EXCLUSIVE) {
                e = dbstat_read_wal(path, &r->after);
                if (e == 0) {
                        r->have_after = true;
                        r->db_id = db_id;
                        r->wal_id = wal_id;
                        return finish(path, r, t0);
                }
                if (e != -EAGAIN) {
                        set_status(r, e == -EINVAL ? MAINT_NOTADB : e == -ENOENT ? MAINT_MISSING : MAINT_IOERR, 0,
                                   "cannot read the -wal: %s", strerror(-e));
                        return finish(path, r, t0);
                }
        }
        read_look(path, o, NULL, 0, look_stats, r);
        if (r->status == MAINT_OK) {
                r->db_id = db_id;
                r->wal_id = wal_id;
        }
        return finish(path, r, t0);
}

static enum maint_status look_check(sqlite3 *db, const char *path, const struct maint_opts *o,
                                    struct maint_result *r)
{
        enum integrity_level level = o->integrity == INTEGRITY_NONE ? INTEGRITY_QUICK : o->integrity;

        if (read_stats(db, path, &r->after, &r->have_after, r) == MAINT_OK)
                run_check(db, &r->after, level, "", r);
        return r->status;
}

enum maint_status maint_check(const char *path, const struct maint_opts *o,
                              struct maint_cancel *cancel, struct maint_result *r)
{
        uint64_t t0;

        begin(r, &t0);
        read_look(path, o, cancel, 0, look_check, r);
        return finish(path, r, t0);
}

static enum maint_status look_deep(sqlite3 *db, const char *path, const struct maint_opts *o,
                                   struct maint_result *r)
{
        int rc;

        if (read_stats(db, path, &r->after, &r->have_after, r) != MAINT_OK)
                return r->status;
        rc = deepscan_run(db, &r->deep);
        if (rc == SQLITE_CORRUPT && r->deep.corrupt_page)
                return set_status(r, MAINT_CORRUPT, SQLITE_CORRUPT,
                                  "deep scan: page %llu (of %s) is no b-tree page SQLite can read: dbstat calls "
                                  "it corrupted", (unsigned long long)r->deep.corrupt_page, r->deep.corrupt_btree);
        if (rc != SQLITE_OK)
                return fail_sqlite(r, db, rc, "deep scan (dbstat)");
        r->have_deep = true;
        return MAINT_OK;
}

enum maint_status maint_deep_scan(const char *path, const struct maint_opts *o, struct maint_cancel *cancel,
                                  struct maint_result *r)
{
        uint64_t t0;

        begin(r, &t0);
        read_look_noting_files(path, o, cancel, LOOK_LOCKLESS, look_deep, r);
        return finish(path, r, t0);
}

/* Before a VACUUM, read-only: statistics, the check (with full, each
 * full-text index's on a snapshot), the rowid guard, the free space.
 * MAINT_OK to go on. */
static enum maint_status look_before_vacuum(sqlite3 *db, const char *path, const struct maint_opts *o,
                                            struct maint_result *r)
{
        /* Corruption first: a refusal for rowids or space must not hide it. */
        if (read_stats(db, path, &r->before, &r->have_before, r) != MAINT_OK || empty_database(&r->before, r) ||
            run_check(db, &r->before, o->integrity, "before VACUUM", r) != MAINT_OK ||
            rowid_guard(db, o, r) != MAINT_OK ||
            (!o->skip_space_check && check_space(path, &r->before, o, r) != MAINT_OK))
                return r->status;
        return MAINT_OK;
}

/* PRAGMA wal_checkpoint(mode): 0 with busy, log and checkpointed frames,
 * or an SQLite error code. */
static int wal_checkpoint(sqlite3 *db, const char *mode, int64_t res[3])
{
        char sql[64];

        snprintf(sql, sizeof(sql), "PRAGMA wal_checkpoint(%s)", mode);
        res[0] = 1;
        res[1] = res[2] = -1;
        return query_ints(db, sql, NULL, res, 3) == SQLITE_ROW ? SQLITE_OK : sqlite3_errcode(db);
}

/* PRAGMA wal_checkpoint(TRUNCATE); busy=1 (a reader holds an old
 * snapshot) is reported, not ignored: the WAL stays large until a retry. */
static void checkpoint_truncate(sqlite3 *db, struct maint_result *r)
{
        int64_t res[3];
        int rc = wal_checkpoint(db, "TRUNCATE", res);

        /* busy: readers keep frames; an error of another kind (nothing was
         * written, the directory is read-only) is not */
        r->checkpoint_busy = rc == SQLITE_OK ? res[0] != 0 : (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
        if (r->checkpoint_busy && res[1] > res[2])
                r->wal_frames_left = (uint64_t)(res[1] - res[2]);
}

/* After pages were freed: truncate the WAL (it holds the rewritten pages),
 * then the figures after and the pages freed. */
static void conclude_shrink(sqlite3 *db, const char *path, struct maint_result *r)
{
        uint64_t was, now;

        if (is_wal(&r->before))
                checkpoint_truncate(db, r);
        if (read_stats(db, path, &r->after, &r->have_after, r) != MAINT_OK)
                return;
        was = r->before.page_count * r->before.page_size;
        now = r->after.page_count * r->after.page_size;
        r->page_bytes_reclaimed = was > now ? was - now : 0;
}

/* Tries of the check after a VACUUM that met the application's lock, and
 * the first wait between them (doubling). */
#define AFTER_CHECK_ATTEMPTS 5
#define AFTER_CHECK_WAIT_MS 100

/* After a VACUUM that committed: the check, then the figures (and the
 * -wal truncated). A lock conflict here is no reason to report the job
 * busy, which would have it retried: a second VACUUM of a packed file.
 * They wait for the application's commits; if they never get their read
 * lock, the VACUUM is done all the same (SQLite's commit is atomic, and the
 * check before passed), and r->message says what did not run. */
static enum maint_status after_vacuum(sqlite3 *db, const char *path, const struct maint_opts *o,
                                      struct maint_cancel *cancel, struct maint_result *r)
{
        for (int attempt = 1;; attempt++) {
                if (attempt > 1) /* the last try's lock conflict */
                        set_status(r, MAINT_OK, 0, "%s", "");
                phase(o, MAINT_PHASE_CHECKING_AFTER);
                if (run_check(db, &r->before, o->integrity, "after VACUUM", r) == MAINT_OK) {
                        if (is_wal(&r->before))
                                phase(o, MAINT_PHASE_CHECKPOINT);
                        conclude_shrink(db, path, r);
                }
                if (r->status != MAINT_BUSY)
                        return r->status;
                if (attempt >= AFTER_CHECK_ATTEMPTS || cancelled(cancel)) {
                        r->check_after_skipped = true;
                        return set_status(r, MAINT_OK, 0, "the check after it did not run: the application held "
                                          "its lock at each of %d tries", attempt);
                }
                util_sleep_ms((uint64_t)AFTER_CHECK_WAIT_MS << (attempt - 1));
        }
}

/* ---- no commit between the checks and the VACUUM -------------------------- */

/* The database's committed state, read from its files with pread() alone:
 * the change counter (header offset 24, which every commit in rollback mode
 * increments), the file's size and modification time (a checkpoint writes
 * the file), and in WAL mode the wal-index header's last frame and salts
 * (walformat.html: a commit moves the one, a restart of the log the
 * others). Equal versions taken while no one can commit in between mean
 * no commit. */
struct db_version {
        bool ok;
        uint32_t counter;
        off_t size, wal_size;       /* wal_size -1: no -wal */
        struct timespec mtime, wal_mtime;
        bool shm;            /* a -shm was there to read */
        uint32_t mx_frame, salt1, salt2;
};

/* Descriptors the versions are read through. Kept open until every SQLite
 * connection to the database is closed: closing a descriptor of a file
 * drops every POSIX lock this process holds on it, SQLite's included
 * (SQLITE-NOTES.md). */
struct version_fds {
        int db, shm;
};

static void version_read(const char *path, struct version_fds *f, struct db_version *v)
{
        unsigned char h[28], w[96];
        char p[4096 + 16];
        struct stat st;

        *v = (struct db_version){ 0 };
        if (f->db < 0)
                f->db = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (f->db < 0 || fstat(f->db, &st) < 0 || pread(f->db, h, sizeof(h), 0) != (ssize_t)sizeof(h))
                return;
        v->counter = (uint32_t)h[24] << 24 | (uint32_t)h[25] << 16 | (uint32_t)h[26] << 8 | h[27];
        v->size = st.st_size;
        v->mtime = st.st_mtim;
        v->wal_size = -1;
        if ((size_t)snprintf(p, sizeof(p), "%s-wal", path) < sizeof(p) && lstat(p, &st) == 0) {
                v->wal_size = st.st_size;
                v->wal_mtime = st.st_mtim;
        }
        if (f->shm < 0 && (size_t)snprintf(p, sizeof(p), "%s-shm", path) < sizeof(p))
                f->shm = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (f->shm >= 0 && pread(f->shm, w, sizeof(w), 0) == (ssize_t)sizeof(w)) {
                /* the two copies of the header agree unless a writer is
                 * midway: then this is no version to trust */
                if (memcmp(w, w + 48, 48) != 0)
                        return;
                v->shm = true;
                memcpy(&v->mx_frame, w + 16, 4); /* native byte order */
                memcpy(&v->salt1, w + 32, 4);
                memcpy(&v->salt2, w + 36, 4);
        }
        v->ok = true;
}

static bool same_time(const struct timespec *a, const struct timespec *b)
{
        return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

/* b (taken later) shows no commit since a: the same files, the -wal no
 * longer or newer (an empty one may appear: SQLite creates it), and when
 * a -shm was there at a, the same last frame and salts. */
static bool version_same(const struct db_version *a, const struct db_version *b)
{
        if (!a->ok || !b->ok || a->counter != b->counter || a->size != b->size || !same_time(&a->mtime, &b->mtime))
                return false;
        if (a->wal_size < 0 ? b->wal_size > 0 : b->wal_size != a->wal_size || !same_time(&a->wal_mtime, &b->wal_mtime))
                return false;
        return !a->shm || (b->shm && a->mx_frame == b->mx_frame && a->salt1 == b->salt1 && a->salt2 == b->salt2);
}

static void version_close(struct version_fds *f)
{
        if (f->db >= 0)
                close(f->db);
        if (f->shm >= 0)
                close(f->shm);
        f->db = f->shm = -1;
}

/* VACUUM copies what it finds once it holds the write lock; the checks saw
 * the database before. Its first statement prepared after that lock (after
 * ATTACH and BEGIN, vacuum.c sqlite3RunVacuum) reaches this authorizer,
 * which lets it go on only if what the checks decided still holds. A
 * commit since can change it only through the rowid guard: when some table
 * has no PRIMARY KEY and no index (its rowids may be renumbered), any
 * commit counts; otherwise only a schema change (a new such table), read
 * on a connection of its own while no one can commit. The integrity check
 * is not repeated for the application's own commits. */
struct vacuum_guard {
        const char *path;
        const struct maint_opts *o;
        struct version_fds *fds;
        struct db_version checked;
        uint32_t schema_version;  /* as the checks saw it */
        bool strict;              /* some table's rowids could be renumbered: no commit may come between */
        bool looked, changed;
};

/* The schema cookie now, while the VACUUM holds its write lock, with no
 * open() and close() of the database: a close drops every POSIX lock this
 * process holds on the file, the VACUUM's included. A rollback-mode
 * VACUUM holds EXCLUSIVE: the file is the last commit, and its header
 * (offset 40) is read through the descriptor the guard keeps open; a
 * connection of this process could not read then (its SHARED lock waits
 * for the VACUUM's EXCLUSIVE). A WAL database's header can be older than
 * its -wal: PRAGMA schema_version on a read-only connection of its own,
 * which SQLite opens beside the VACUUM's (same inode: its close keeps the
 * descriptor while the locks are held, os_unix.c setPendingFd). */
static bool schema_unchanged(const struct vacuum_guard *g)
{
        struct maint_result tmp = { .status = MAINT_OK };
        unsigned char h[44];
        enum read_mode mode;
        struct layout l;
        sqlite3 *db = NULL;
        int64_t v = -1;
        bool same = false, wal;

        if (g->fds->db < 0 || pread(g->fds->db, h, sizeof(h), 0) != (ssize_t)sizeof(h))
                return false;
        side_size(g->path, DBSTAT_SUFFIX_WAL, &wal);
        if (h[19] != 2 && !wal)
                return ((uint32_t)h[40] << 24 | (uint32_t)h[41] << 16 | (uint32_t)h[42] << 8 | h[43]) ==
                       g->schema_version;
        if (probe_files(g->path, &l, &tmp) == MAINT_OK &&
            db_open_read(g->path, &l, g->o, NULL, &mode, &db, &tmp) == MAINT_OK)
                same = query_ints(db, "PRAGMA main.schema_version", NULL, &v, 1) == SQLITE_ROW &&
                       (uint32_t)v == g->schema_version;
        db_close(g->path, db, NULL, false);
        maint_result_clear(&tmp);
        return same;
}

/* Whether path still names the file the checks looked at (fd, opened
 * then): a database renamed over it since was never checked. */
static bool still_checked_file(const char *path, int fd)
{
        struct stat a, b;

        return fd >= 0 && fstat(fd, &a) == 0 && lstat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int vacuum_authorizer(void *userdata, int action, const char *a, const char *b, const char *c,
                             const char *d)
{
        struct vacuum_guard *g = userdata;
        struct db_version now;

        if (g->looked || action == SQLITE_ATTACH || action == SQLITE_TRANSACTION)
                return SQLITE_OK;
        g->looked = true;
        version_read(g->path, g->fds, &now);
        if (still_checked_file(g->path, g->fds->db) &&
            (version_same(&g->checked, &now) || (!g->strict && schema_unchanged(g))))
                return SQLITE_OK;
        g->changed = true;
        return SQLITE_DENY;
}

/* The read-only look before a VACUUM, bracketed by two versions that must
 * agree (else looked at again) when some table's rowids could change: what
 * it checked is what was committed. */
static enum maint_status look_unchanged(const char *path, const struct maint_opts *o, struct maint_cancel *cancel,
                                        struct version_fds *fds, struct db_version *v, struct maint_result *r)
{
        struct db_version before;
        bool rolled_back = false;

        for (int attempt = 1;; attempt++) {
                version_read(path, fds, &before);
                if (read_look(path, o, cancel, LOOK_WRITES, look_before_vacuum, r) != MAINT_OK)
                        return r->status;
                /* its own rollback of a hot journal changed the file: once */
                rolled_back = rolled_back || r->rolled_back_journal;
                r->rolled_back_journal = rolled_back;
                version_read(path, fds, v);
                /* no table whose rowids could change: commits during the
                 * look change nothing it decided (see vacuum_guard) */
                if (version_same(&before, v) || r->unkeyed_tables == 0)
                        return MAINT_OK;
                if (attempt == READ_ATTEMPTS)
                        return set_status(r, MAINT_BUSY, 0, "the database changed while it was checked, %d times",
                                          attempt);
                maint_result_clear(r);
        }
}

/* What the file system got back: the files' disk space when the operation
 * began (before) and now, every connection closed (SQLite's last close
 * removes an empty -wal). */
static void account_disk(const char *path, uint64_t before, struct maint_result *r)
{
        r->disk_bytes_before = before;
        r->disk_bytes_after = disk_bytes(path);
        r->bytes_reclaimed = before > r->disk_bytes_after ? before - r->disk_bytes_after : 0;
}

enum maint_status maint_vacuum(const char *path, const struct maint_opts *o,
                               struct maint_cancel *cancel, struct maint_result *r)
{
        struct version_fds fds = { -1, -1 };
        struct vacuum_guard g = { .path = path, .o = o, .fds = &fds };
        uint64_t t0, disk_before = disk_bytes(path);
        sqlite3 *db = NULL;
        int rc;

        begin(r, &t0);
        phase(o, MAINT_PHASE_CHECKING);
        if (look_unchanged(path, o, cancel, &fds, &g.checked, r) != MAINT_OK)
                goto out;
        if (cancelled(cancel)) {
                set_status(r, MAINT_INTERRUPTED, SQLITE_INTERRUPT, "stopped before VACUUM");
                goto out;
        }
        g.schema_version = r->before.schema_cookie;
        g.strict = r->unkeyed_tables > 0;
        if (db_open_write(path, o, cancel, &db, r) != MAINT_OK)
                goto out;
        sqlite3_set_authorizer(db, vacuum_authorizer, &g);
        phase(o, MAINT_PHASE_COPYING);
        rc = sqlite3_exec(db, "VACUUM", NULL, NULL, NULL);
        sqlite3_set_authorizer(db, NULL, NULL);
        if (rc != SQLITE_OK && g.changed) {
                /* refused before it wrote a page: checked again next time */
                set_status(r, MAINT_BUSY, SQLITE_BUSY, "a commit came between the checks and the VACUUM; "
                           "checking again");
                db_close(path, db, cancel, false);
                goto out;
        }
        if (rc != SQLITE_OK) {
                /* SQLITE_FULL midway leaves the database intact, but in WAL
                 * mode the partial -wal keeps the disk full until the last
                 * connection closes, and the application's may stay open:
                 * truncate it now. */
                fail_sqlite(r, db, rc, "VACUUM failed");
                if (is_wal(&r->before))
                        checkpoint_truncate(db, r);
                /* SQLite can commit the VACUUM and still report SQLITE_FULL
                 * (the temp directory filled at the very end): the figures
                 * after tell what really happened. */
                r->have_after = dbstat_read_db(db, path, &r->after) == SQLITE_OK;
                r->wrote = r->have_after && r->after.page_count != r->before.page_count;
                /* It began writing: SQLite's tidy close (the last connection
                 * removes the -wal) gives the disk back. */
                db_close(path, db, cancel, true);
                goto out;
        }
        r->wrote = true;
        after_vacuum(db, path, o, cancel, r);
        db_close(path, db, cancel, true);
out:
        version_close(&fds);
        if (r->wrote)
                account_disk(path, disk_before, r);
        return finish(path, r, t0);
}

/* ---- ANALYZE ------------------------------------------------------------------ */

/* What sqlite_stat1 says of table: its rows as "idx=stat;..." in index
 * order, and the row count they describe (the first number of each
 * index's line; the largest, since a partial index covers fewer rows).
 * Returns false when it holds nothing for the table. */
static bool stat1_of(sqlite3 *db, bool have_stat1, const char *table, char **text, uint64_t *rows, int *rc)
{
        sqlite3_stmt *s;
        bool found = false;

        *text = NULL;
        *rows = 0;
        *rc = SQLITE_OK;
        if (!have_stat1)
                return false;
        *rc = sqlite3_prepare_v2(db,
                "SELECT group_concat(coalesce(idx, '') || '=' || coalesce(stat, ''), ';'),"
                " max(CAST(stat AS INTEGER)), count(*)"
                " FROM (SELECT idx, stat FROM main.sqlite_stat1 WHERE tbl = ?1 COLLATE NOCASE ORDER BY idx)", -1, &s, NULL);
        if (*rc != SQLITE_OK)
                return false;
        sqlite3_bind_text(s, 1, table, -1, SQLITE_STATIC);
        *rc = sqlite3_step(s);
        if (*rc == SQLITE_ROW && sqlite3_column_int64(s, 2) > 0) {
                const char *t = (const char *)sqlite3_column_text(s, 0);
                int64_t n = sqlite3_column_int64(s, 1);

                *text = strdup(t ? t : "");
                *rows = n > 0 ? (uint64_t)n : 0;
                found = *text != NULL;
                if (!found)
                        *rc = SQLITE_NOMEM;
        }
        if (*rc == SQLITE_ROW || *rc == SQLITE_DONE)
                *rc = SQLITE_OK;
        sqlite3_finalize(s);
        return found;
}

/* Stale: the row count moved by more than threshold + scale_factor x the
 * count the statistics describe (PostgreSQL's autovacuum_analyze_*). */
static bool stale(uint64_t rows, uint64_t baseline, const struct maint_opts *o)
{
        uint64_t moved = rows > baseline ? rows - baseline : baseline - rows;

        return (double)moved > (double)o->analyze_threshold_rows + o->analyze_scale_factor * (double)baseline;
}

/* An index without statistics (created since the last ANALYZE) leaves
 * the planner guessing: *complete is whether every index of table has
 * its line in sqlite_stat1. A partial index may have no entries and never
 * get statistics: not counted. SQLITE_ROW, or the error. */
static int index_stats_complete(sqlite3 *db, const char *table, bool *complete)
{
        int64_t bare = 0;
        int rc;

        /* names as SQLite matches them (analyze.c analysisLoader:
         * sqlite3FindTable, FindIndex, no case); the PRIMARY KEY of a
         * WITHOUT ROWID table is the table's own row, under the table's
         * name */
        rc = query_ints(db, "SELECT count(*) FROM pragma_index_list(?1) AS il WHERE il.partial = 0 "
                            "AND NOT EXISTS (SELECT 1 FROM main.sqlite_stat1 AS s "
                            "WHERE s.tbl = ?1 COLLATE NOCASE AND (s.idx = il.name COLLATE NOCASE "
                            "OR (il.origin = 'pk' AND s.idx = ?1 COLLATE NOCASE)))",
                        table, &bare, 1);
        if (rc == SQLITE_ROW)
                *complete = bare == 0;
        return rc;
}

/* One table's verdict into r->tables, from its statistics and its row
 * count: SQLITE_OK, or the error. */
static int look_at_table(sqlite3 *db, const char *name, bool have_stat1, const struct maint_opts *o,
                         struct maint_result *r)
{
        uint64_t baseline = 0, known;
        int64_t count = 0;
        struct maint_table *t;
        bool has_stats, ours;
        char *text, *sql;
        int rc;

        has_stats = stat1_of(db, have_stat1, name, &text, &baseline, &rc);
        if (rc != SQLITE_OK)
                return rc;
        sql = sqlite3_mprintf("SELECT count(*) FROM main.\"%w\"", name);
        rc = sql ? query_ints(db, sql, NULL, &count, 1) : SQLITE_NOMEM;
        sqlite3_free(sql);
        if (rc == SQLITE_ROW && has_stats && count > 0)
                rc = index_stats_complete(db, name, &has_stats);
        if (rc != SQLITE_ROW) {
                free(text);
                return rc;
        }
        /* A sampled ANALYZE writes an estimated count; whoever knows
         * the exact count behind statistics it wrote says so. */
        ours = text && o->analyze_baseline && o->analyze_baseline(o->analyze_baseline_userdata, name, text, &known);
        if (has_stats && ours)
                baseline = known;
        t = add_table(r, name, TABLE_UNCHANGED);
        if (!t) {
                free(text);
                return SQLITE_NOMEM;
        }
        t->rows = (uint64_t)count;
        t->baseline_rows = baseline;
        t->stat = text;
        if (!has_stats && count == 0)
                t->verdict = TABLE_MISSING_EMPTY;
        /* Sampled statistics never replace statistics sqlite-maintd
         * did not sample itself (the application's full ANALYZE,
         * shipped ones): analysis_limit only for a large table
         * without any, or with ours. */
        else if (o->analyze_all || !has_stats || stale(t->rows, baseline, o))
                t->verdict = o->analysis_limit > 0 && t->rows > o->analyze_large_table_rows && (!text || ours)
                           ? TABLE_ANALYZED_LIMITED : TABLE_ANALYZED;
        return SQLITE_OK;
}

/* Read-only: every ordinary table's verdict into r->tables; those to
 * analyze get TABLE_ANALYZED (or _LIMITED) before the fact. */
static enum maint_status look_before_analyze(sqlite3 *db, const char *path, const struct maint_opts *o,
                                             struct maint_result *r)
{
        int64_t have_stat1 = 0;
        char **names;
        int rc;

        if (read_stats(db, path, &r->before, &r->have_before, r) != MAINT_OK || empty_database(&r->before, r))
                return r->status;
        rc = query_ints(db, "SELECT count(*) FROM main.sqlite_schema WHERE type = 'table' AND name = 'sqlite_stat1'",
                        NULL, &have_stat1, 1);
        if (rc != SQLITE_ROW)
                return fail_sqlite(r, db, rc, "cannot read the schema");
        names = query_names(db, ORDINARY_TABLES_SQL, &rc);
        if (!names)
                return fail_sqlite(r, db, rc, "cannot list tables");
        rc = SQLITE_OK;
        for (size_t i = 0; names[i] && rc == SQLITE_OK; i++)
                rc = look_at_table(db, names[i], have_stat1 != 0, o, r);
        free_names(names);
        if (rc != SQLITE_OK)
                return fail_sqlite(r, db, rc, "cannot count the rows of the tables");
        return MAINT_OK;
}

static bool to_analyze(const struct maint_table *t)
{
        return t->verdict == TABLE_ANALYZED || t->verdict == TABLE_ANALYZED_LIMITED;
}

enum maint_status maint_analyze(const char *path, const struct maint_opts *o,
                                struct maint_cancel *cancel, struct maint_result *r)
{
        size_t n = 0, done = 0;
        int rc = SQLITE_OK, rc2;
        sqlite3 *db;
        uint64_t t0;

        begin(r, &t0);
        read_look_noting_files(path, o, cancel, LOOK_WRITES, look_before_analyze, r);
        if (r->status != MAINT_OK)
                return finish(path, r, t0);
        for (size_t i = 0; i < r->n_tables; i++)
                n += to_analyze(&r->tables[i]);
        r->after = r->before;
        r->have_after = r->have_before;
        if (n == 0)
                return finish(path, r, t0);
        if (db_open_write(path, o, cancel, &db, r) != MAINT_OK)
                return finish(path, r, t0);
        /* One statement per table: the write lock is held per table. */
        for (size_t i = 0; i < r->n_tables && rc == SQLITE_OK; i++) {
                struct maint_table *t = &r->tables[i];
                uint64_t rows;
                char *sql;

                if (!to_analyze(t))
                        continue;
                sql = sqlite3_mprintf("PRAGMA analysis_limit=%d; ANALYZE main.\"%w\";",
                                      t->verdict == TABLE_ANALYZED_LIMITED ? o->analysis_limit : 0, t->name);
                rc = sql ? sqlite3_exec(db, sql, NULL, NULL, NULL) : SQLITE_NOMEM;
                sqlite3_free(sql);
                if (rc != SQLITE_OK) {
                        fail_sqlite(r, db, rc, "ANALYZE failed");
                        /* the tables not reached keep their old statistics */
                        for (size_t k = i; k < r->n_tables; k++)
                                if (to_analyze(&r->tables[k]))
                                        r->tables[k].verdict = TABLE_UNCHANGED;
                        break;
                }
                done++;
                free(t->stat);
                stat1_of(db, true, t->name, &t->stat, &rows, &rc2);
        }
        r->wrote = done > 0;
        if (r->status == MAINT_OK)
                read_stats(db, path, &r->after, &r->have_after, r);
        db_close(path, db, cancel, r->wrote);
        return finish(path, r, t0);
}

/* ---- incremental vacuum, checkpoint ---------------------------------------------- */

/* One PRAGMA incremental_vacuum(N), stepped to SQLITE_DONE: the write lock
 * is held from the first step to the last, so N stays small. */
static int incremental_batch(sqlite3 *db, uint32_t pages)
{
        sqlite3_stmt *s;
        char sql[64];
        int rc;

        snprintf(sql, sizeof(sql), "PRAGMA incremental_vacuum(%u)", pages);
        rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
        if (rc != SQLITE_OK)
                return rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
                ;
        sqlite3_finalize(s);
        return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static enum maint_status look_before_incremental(sqlite3 *db, const char *path, const struct maint_opts *o,
                                                 struct maint_result *r)
{
        if (read_stats(db, path, &r->before, &r->have_before, r) != MAINT_OK)
                return r->status;
        if (r->before.auto_vacuum != AUTO_VACUUM_INCREMENTAL)
                return set_status(r, MAINT_CANNOT, 0,
                                  "auto_vacuum is %s, not incremental: incremental vacuum frees nothing here",
                                  dbstat_auto_vacuum_name(r->before.auto_vacuum));
        return run_check(db, &r->before, o->integrity, "before incremental vacuum", r);
}

enum maint_status maint_incremental_vacuum(const char *path, const struct maint_opts *o,
                                           struct maint_cancel *cancel, struct maint_result *r)
{
        uint32_t batch = o->incremental_batch_pages ? o->incremental_batch_pages : INCREMENTAL_BATCH_PAGES;
        uint64_t t0, disk_before = disk_bytes(path);
        struct dbstat now;
        bool have;
        sqlite3 *db;
        int rc;

        begin(r, &t0);
        if (read_look(path, o, cancel, LOOK_WRITES, look_before_incremental, r) != MAINT_OK)
                return finish(path, r, t0);
        if (db_open_write(path, o, cancel, &db, r) != MAINT_OK) {
                db_close(path, db, cancel, false);
                return finish(path, r, t0);
        }
        now = r->before;
        /* Bounded: each batch frees up to `batch` pages or the loop ends. */
        for (uint64_t round = 0; now.freelist_count > 0 && round <= r->before.freelist_count / batch + 1; round++) {
                if (round > 0)
                        util_sleep_ms(o->incremental_pause_ms);
                if (cancelled(cancel)) {
                        set_status(r, MAINT_INTERRUPTED, SQLITE_INTERRUPT, "stopped between batches");
                        break;
                }
                rc = incremental_batch(db, batch);
                if (rc != SQLITE_OK) {
                        fail_sqlite(r, db, rc, "incremental vacuum failed");
                        break;
                }
                r->wrote = true;
                if (read_stats(db, path, &now, &have, r) != MAINT_OK)
                        break;
        }
        /* Batches that committed before a stop or a lock stay freed. */
        if (r->status == MAINT_OK || r->status == MAINT_INTERRUPTED || r->status == MAINT_BUSY)
                conclude_shrink(db, path, r);
        db_close(path, db, cancel, r->wrote);
        if (r->wrote)
                account_disk(path, disk_before, r);
        return finish(path, r, t0);
}

enum maint_status maint_checkpoint(const char *path, const struct maint_opts *o,
                                   struct maint_cancel *cancel, struct maint_result *r)
{
        int64_t res[3];
        bool exists;
        sqlite3 *db;
        uint64_t t0;
        off_t wal;
        int rc;

        begin(r, &t0);
        if (db_open_write(path, o, cancel, &db, r) != MAINT_OK ||
            read_stats(db, path, &r->before, &r->have_before, r) != MAINT_OK) {
                db_close(path, db, cancel, false);
                return finish(path, r, t0);
        }
        if (!is_wal(&r->before)) {
                set_status(r, MAINT_SKIPPED, 0, "not in WAL mode (journal_mode %s)", r->before.journal_mode);
                db_close(path, db, cancel, false);
                return finish(path, r, t0);
        }
        r->wal_bytes_before = r->before.wal_size_bytes;
        /* PASSIVE copies what it can without waiting on anyone; TRUNCATE
         * then waits (the short busy timeout) for readers to let go. */
        rc = wal_checkpoint(db, "PASSIVE", res);
        if (rc == SQLITE_OK)
                rc = wal_checkpoint(db, "TRUNCATE", res);
        r->wrote = true;
        if (rc != SQLITE_OK) {
                fail_sqlite(r, db, rc, "checkpoint failed");
        } else if (res[0] != 0) {
                r->checkpoint_busy = true;
                r->wal_frames_left = res[1] > res[2] ? (uint64_t)(res[1] - res[2]) : 0;
                set_status(r, MAINT_BUSY, SQLITE_BUSY,
                           "readers keep the -wal in use: %llu of its %lld frames not yet in the database",
                           (unsigned long long)r->wal_frames_left, (long long)res[1]);
        }
        wal = side_size(path, DBSTAT_SUFFIX_WAL, &exists);
        r->wal_bytes_after = wal > 0 ? (uint64_t)wal : 0;
        r->have_after = dbstat_read_db(db, path, &r->after) == SQLITE_OK;
        db_close(path, db, cancel, true);
        return finish(path, r, t0);
}

void maint_result_clear(struct maint_result *r)
{
        for (size_t i = 0; i < r->n_problems; i++)
                free(r->problems[i]);
        free(r->problems);
        for (size_t i = 0; i < r->n_tables; i++) {
                free(r->tables[i].name);
                free(r->tables[i].stat);
        }
        free(r->tables);
        free_vtabs(r);
        deep_stats_clear(&r->deep);
        *r = (struct maint_result){ .status = MAINT_OK };
}
