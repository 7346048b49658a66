/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "targets.h"

/* Why an entry's other matches are not watched. */
#define OVER_MAX_MATCHES "matched more databases than limits.max_matches"

/* A directory below the admin's part: opened for listing and for openat(),
 * never through a symbolic link. */
#define DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)

/* What a watch reports: what a database's files and the directory's
 * names do (a -shm is written through mmap(2), which inotify never sees,
 * and says nothing a -wal does not). */
#define WATCH_MASK (IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | \
                    IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)

void targets_init(struct targets *ts)
{
        *ts = (struct targets){ .notify_fd = -1 };
}

static void watches_free(struct watch_entry *v, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(v[i].dir);
                free(v[i].name);
        }
        free(v);
}

struct target_memo *target_memo(struct target *t)
{
        if (!t->memo)
                t->memo = calloc(1, sizeof(*t->memo));
        return t->memo;
}

const struct target_memo *target_memo_get(const struct target *t)
{
        static const struct target_memo none;

        return t->memo ? t->memo : &none;
}

struct target *target_free(struct target *t)
{
        if (t) {
                free(t->memo);
                free(t->path);
                free(t);
        }
        return NULL;
}

static struct tdir *tdir_free(struct tdir *d)
{
        if (d) {
                if (d->fd >= 0)
                        close(d->fd);
                free(d->path);
                free(d);
        }
        return NULL;
}

static void roots_clear(struct targets *ts)
{
        for (size_t i = 0; i < ts->n_roots; i++)
                free(ts->roots[i].real);
        free(ts->roots);
        ts->roots = NULL;
        ts->n_roots = 0;
}

void targets_clear(struct targets *ts)
{
        for (size_t i = 0; i < ts->n; i++)
                target_free(ts->v[i]);
        free(ts->v);
        for (size_t i = 0; i < ts->n_dirs; i++)
                tdir_free(ts->dirs[i]);
        free(ts->dirs);
        roots_clear(ts);
        watches_free(ts->watches, ts->n_watches);
        if (ts->notify_fd >= 0)
                close(ts->notify_fd);
        targets_init(ts);
}

/* Index of path, or of where it would go. */
static size_t lower_bound(const struct targets *ts, const char *path, bool *found)
{
        size_t lo = 0, hi = ts->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(ts->v[mid]->path, path);

                if (c == 0) {
                        *found = true;
                        return mid;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        *found = false;
        return lo;
}

struct target *target_new(const char *path)
{
        struct target *t = calloc(1, sizeof(*t));

        if (!t || !(t->path = strdup(path)))
                return target_free(t);
        t->name = strrchr(t->path, '/') ? strrchr(t->path, '/') + 1 : t->path;
        t->hash = sched_hash(path);
        return t;
}

struct target *targets_find(const struct targets *ts, const char *path)
{
        bool found;
        size_t i = lower_bound(ts, path, &found);

        return found ? ts->v[i] : NULL;
}

struct target *targets_get(struct targets *ts, const char *path, bool *created)
{
        struct target *t;
        bool found;
        size_t i = lower_bound(ts, path, &found);

        *created = false;
        if (found)
                return ts->v[i];
        if (util_grow(&ts->v, &ts->cap, ts->n + 1, sizeof(*ts->v), 64) < 0)
                return NULL;
        t = target_new(path);
        if (!t)
                return NULL;
        memmove(ts->v + i + 1, ts->v + i, (ts->n - i) * sizeof(*ts->v));
        ts->v[i] = t;
        ts->n++;
        *created = true;
        return t;
}

void targets_remove(struct targets *ts, struct target *t)
{
        bool found;
        size_t i = lower_bound(ts, t->path, &found);

        if (!found || ts->v[i] != t)
                return;
        memmove(ts->v + i, ts->v + i + 1, (ts->n - i - 1) * sizeof(*ts->v));
        ts->n--;
}

/* The length of name without its side file suffix, and which it is. */
static size_t side_base(const char *name, const char **suffix)
{
        size_t n = strlen(name);

        *suffix = NULL;
        for (size_t i = 0; i < ELEMENTSOF(dbstat_side_suffixes); i++) {
                size_t k = strlen(dbstat_side_suffixes[i]);

                if (n > k && strcmp(name + n - k, dbstat_side_suffixes[i]) == 0) {
                        *suffix = dbstat_side_suffixes[i];
                        return n - k;
                }
        }
        return n;
}

/* A -journal, -wal or -shm: SQLite's, never a database of its own. */
static bool target_is_side_file(const char *path)
{
        const char *suffix;

        side_base(path, &suffix);
        return suffix != NULL;
}


/* ---- the admin's part ---------------------------------------------------- */

static bool has_glob(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (s[i] == '*' || s[i] == '?' || s[i] == '[')
                        return true;
        return false;
}

/* The length of the admin's part of path: up to (not including) the slash
 * that ends the last directory before the first component with a glob
 * character; for a plain path, its directory. At least 1 ("/"). */
static size_t admin_prefix_len(const char *path)
{
        size_t end = 0;

        for (size_t i = 1; path[i]; i++) {
                if (path[i] != '/')
                        continue;
                if (has_glob(path + end + 1, i - end - 1))
                        break;
                end = i;
        }
        return end ? end : 1;
}

int targets_configure(struct targets *ts, const struct conf *c)
{
        ts->generation++;
        roots_clear(ts);
        ts->roots = calloc(c->n_dbs ? c->n_dbs : 1, sizeof(*ts->roots));
        if (!ts->roots)
                return -ENOMEM;
        ts->n_roots = c->n_dbs;
        for (size_t i = 0; i < c->n_dbs; i++)
                ts->roots[i].dc = &c->dbs[i];
        for (size_t i = 0; i < c->n_dbs; i++) {
                struct entry_root *e = &ts->roots[i];
                char *prefix;

                e->prefix_len = admin_prefix_len(e->dc->path);
                prefix = strndup(e->dc->path, e->prefix_len);
                if (!prefix)
                        return -ENOMEM;
                /* The admin wrote it: their symbolic links are followed,
                 * once. Missing now: resolved when it first exists. */
                e->real = realpath(prefix, NULL);
                free(prefix);
        }
        /* What each glob entry watches already (a reload): the watched
         * stay, newcomers get the rest of its limits.max_matches. A target
         * belongs to the entry that claimed it (its dc, of the old
         * configuration still: the same entry has the same path). */
        for (size_t k = 0; k < ts->n; k++)
                for (size_t i = 0; ts->v[k]->dc && i < ts->n_roots; i++)
                        if (strcmp(ts->roots[i].dc->path, ts->v[k]->dc->path) == 0) {
                                if (ts->roots[i].dc->is_glob)
                                        ts->roots[i].watched++;
                                break;
                        }
        return 0;
}

/* ---- the listing: the walk, off the loop thread --------------------------- */

/* What the walk met, in the order it met it. */
enum record_kind {
        REC_MATCH,   /* a database file, in the listed directory dir */
        REC_MISSING, /* a plain path whose directory cannot be opened: still watched */
        REC_REFUSED, /* a path not followed (why); with no path, nothing here yet */
};

struct record {
        enum record_kind kind;
        bool explicit_path;
        size_t root;     /* index into roots */
        size_t dir;      /* REC_MATCH: index into dirs */
        unsigned sides;  /* REC_MATCH: SIDES_* as the directory's listing showed them */
        size_t path;     /* offset into text */
        const char *why; /* REC_REFUSED: a static string */
        /* targets_apply(): the target of that path (in the first record
         * of the path, group), as the set held it or as this expansion
         * added it; NULL while it has none */
        struct target *known;
        size_t group;
        bool created;    /* in the group's record: known is new, made by this expansion */
};

/* A directory as the walk and the targets tell one from another: the
 * same inode through another mount (a read-only bind) is another. */
struct dir_key {
        dev_t dev;
        ino_t ino;
        uint64_t mnt_id;
};

/* A record's side files, as its directory's listing showed them. */
#define SIDES_KNOWN 1u
#define SIDES_WAL 2u
#define SIDES_JOURNAL 4u

/* A directory a match was found in, opened by the walk. */
struct listed_dir {
        size_t path; /* offset into text: the admin's spelling */
        int fd;      /* -1 once targets_apply() has taken it, or when the targets held it already */
        int wd;      /* its inotify watch, -1 without */
        struct dir_key key;
};

/* An inotify watch the walk set up (struct watch_entry, in the listing). */
struct listed_watch {
        int wd;
        size_t dir, name; /* offsets into text */
        bool glob, last;
};

/* One databases: entry as the walk needs it: copies, so that a reload on
 * the loop thread cannot free them under it. */
struct listed_root {
        char *path;
        size_t prefix_len;
        char *real;  /* the admin's part resolved; NULL while missing */
        bool is_glob;
        bool opened; /* the admin's part could be opened */
        /* A glob's matches recorded, at most max_records (twice its
         * limits.max_matches): past them the walk of this entry stops
         * (truncated), and targets_apply() keeps what it watches. */
        uint64_t n_matches, max_records;
        bool truncated;
};


struct listing {
        uint64_t generation; /* of the targets' configuration it was made from */
        struct listed_root *roots;
        size_t n_roots;
        struct record *recs;
        size_t n_recs, cap_recs;
        struct listed_dir *dirs;
        size_t n_dirs, cap_dirs;
        char *text; /* every path, NUL-terminated, one after the other */
        size_t text_len, text_cap;
        size_t *by_path; /* the indexes of the REC_MATCH and REC_MISSING records, sorted by path */
        size_t n_by_path;
        struct dir_key *held; /* the targets' directories when the listing began, sorted */
        size_t n_held;
        /* The paths earlier entries matched (offsets into text; SIZE_MAX
         * free, open addressing): an earlier entry may claim them, so they
         * do not count toward a later entry's max_records. */
        size_t *earlier;
        size_t cap_earlier, n_earlier;
        int notify_fd;            /* the targets' inotify descriptor, -1 without */
        struct listed_watch *watches;
        size_t n_watches, cap_watches;
        bool adopted;             /* targets_apply() took its watches */
        bool unwatched;           /* a directory is not watched (or no inotify): walk at every poll */
        size_t n_remote, n_no_watch; /* directories not watched: remote file systems, inotify refused */
        int watch_errno;          /* why inotify refused the last one */
        uint64_t seq;             /* the targets' event count when the walk began */
        int err;
};

struct listing *targets_listing_free(struct listing *l)
{
        if (!l)
                return NULL;
        for (size_t i = 0; i < l->n_roots; i++) {
                free(l->roots[i].path);
                free(l->roots[i].real);
        }
        for (size_t i = 0; i < l->n_dirs; i++)
                if (l->dirs[i].fd >= 0)
                        close(l->dirs[i].fd);
        free(l->roots);
        free(l->recs);
        free(l->dirs);
        free(l->text);
        free(l->by_path);
        free(l->held);
        free(l->earlier);
        free(l->watches);
        free(l);
        return NULL;
}

static int held_cmp(const void *a, const void *b)
{
        const struct dir_key *x = a, *y = b;

        if (x->dev != y->dev)
                return x->dev < y->dev ? -1 : 1;
        if (x->ino != y->ino)
                return x->ino < y->ino ? -1 : 1;
        return x->mnt_id < y->mnt_id ? -1 : x->mnt_id > y->mnt_id;
}

static struct dir_key key_of(const struct tdir *d)
{
        return (struct dir_key){ d->dev, d->ino, d->mnt_id };
}

/* fd's key: its device, inode and mount (statx). 0 or -errno. */
static int dir_key_of(int fd, struct dir_key *ret)
{
        struct statx stx;

        if (statx(fd, "", AT_EMPTY_PATH, STATX_INO | STATX_MNT_ID, &stx) < 0)
                return -errno;
        *ret = (struct dir_key){ makedev(stx.stx_dev_major, stx.stx_dev_minor), stx.stx_ino,
                                 stx.stx_mask & STATX_MNT_ID ? stx.stx_mnt_id : 0 };
        return 0;
}

struct listing *targets_listing_new(const struct targets *ts)
{
        struct listing *l = calloc(1, sizeof(*l));

        if (!l)
                return NULL;
        l->generation = ts->generation;
        l->notify_fd = ts->notify_fd;
        l->unwatched = ts->notify_fd < 0;
        l->seq = ts->seq;
        l->roots = calloc(ts->n_roots ? ts->n_roots : 1, sizeof(*l->roots));
        if (!l->roots)
                return targets_listing_free(l);
        l->n_roots = ts->n_roots;
        for (size_t i = 0; i < ts->n_roots; i++) {
                const struct entry_root *e = &ts->roots[i];
                struct listed_root *r = &l->roots[i];

                r->path = strdup(e->dc->path);
                r->real = e->real ? strdup(e->real) : NULL;
                if (!r->path || (e->real && !r->real))
                        return targets_listing_free(l);
                r->prefix_len = e->prefix_len;
                r->is_glob = e->dc->is_glob;
                r->max_records = e->dc->limits.max_matches > UINT64_MAX / 2 ? UINT64_MAX
                                                                              : 2 * e->dc->limits.max_matches;
        }
        l->held = calloc(ts->n_dirs ? ts->n_dirs : 1, sizeof(*l->held));
        if (!l->held)
                return targets_listing_free(l);
        for (size_t i = 0; i < ts->n_dirs; i++)
                l->held[l->n_held++] = key_of(ts->dirs[i]);
        qsort(l->held, l->n_held, sizeof(*l->held), held_cmp);
        return l;
}

/* s into the listing's text: its offset, or SIZE_MAX (l->err set). */
static size_t add_text(struct listing *l, const char *s)
{
        size_t n = strlen(s) + 1, at = l->text_len;

        if (util_grow(&l->text, &l->text_cap, l->text_len + n, 1, 4096) < 0) {
                l->err = -ENOMEM;
                return SIZE_MAX;
        }
        memcpy(l->text + at, s, n);
        l->text_len += n;
        return at;
}

static void add_record(struct listing *l, struct record r, const char *path)
{
        if (l->err)
                return;
        if (util_grow(&l->recs, &l->cap_recs, l->n_recs + 1, sizeof(*l->recs), 256) < 0) {
                l->err = -ENOMEM;
                return;
        }
        r.path = path ? add_text(l, path) : SIZE_MAX;
        if (!l->err)
                l->recs[l->n_recs++] = r;
}

struct walk {
        struct listing *l;
        size_t root;
        int wd; /* the watch of the directory being read, for listed_dir() */
};

static void refused(struct walk *w, const char *path, const char *why)
{
        add_record(w->l, (struct record){ .kind = REC_REFUSED, .root = w->root, .why = why }, path);
}

/* The directory at (open as fd) as one of the listing's, opened once per
 * walk of it (*index: SIZE_MAX until then). */
static size_t listed_dir(struct walk *w, const char *at, int fd, size_t *index)
{
        struct listing *l = w->l;
        struct listed_dir *d;

        if (*index != SIZE_MAX || l->err)
                return *index;
        if (util_grow(&l->dirs, &l->cap_dirs, l->n_dirs + 1, sizeof(*l->dirs), 16) < 0) {
                l->err = -ENOMEM;
                return SIZE_MAX;
        }
        d = &l->dirs[l->n_dirs];
        if ((l->err = dir_key_of(fd, &d->key)) < 0)
                return SIZE_MAX;
        /* held already: targets_apply() takes the targets' own descriptor,
         * so the walk never holds a second one of each directory */
        d->fd = -1;
        d->wd = w->wd;
        if (!bsearch(&d->key, l->held, l->n_held, sizeof(*l->held), held_cmp) &&
            (d->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0) {
                l->err = -errno; /* EMFILE: this walk fails, nothing is dropped */
                return SIZE_MAX;
        }
        d->path = add_text(l, at);
        if (l->err) {
                if (d->fd >= 0)
                        close(d->fd);
                return SIZE_MAX;
        }
        *index = l->n_dirs++;
        return *index;
}

static uint64_t path_hash(const char *s)
{
        uint64_t h = 14695981039346656037ull;

        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 1099511628211ull;
        return h;
}

/* Where path is, or would go, in l->earlier (cap_earlier a power of 2). */
static size_t earlier_slot(const struct listing *l, const char *path)
{
        size_t i = (size_t)path_hash(path) & (l->cap_earlier - 1);

        while (l->earlier[i] != SIZE_MAX && strcmp(l->text + l->earlier[i], path) != 0)
                i = (i + 1) & (l->cap_earlier - 1);
        return i;
}

static bool matched_earlier(const struct listing *l, const char *path)
{
        return l->n_earlier > 0 && l->earlier[earlier_slot(l, path)] != SIZE_MAX;
}

/* The paths of the records from first on, into l->earlier (kept at most
 * half full). */
static void note_earlier(struct listing *l, size_t first)
{
        for (size_t i = first; i < l->n_recs && !l->err; i++) {
                const struct record *r = &l->recs[i];
                size_t slot;

                if (r->kind == REC_REFUSED)
                        continue;
                if (2 * (l->n_earlier + 1) > l->cap_earlier) {
                        size_t cap = l->cap_earlier ? 2 * l->cap_earlier : 1024, *old = l->earlier, n = l->cap_earlier;

                        l->earlier = malloc(cap * sizeof(*l->earlier));
                        if (!l->earlier) {
                                l->earlier = old;
                                l->err = -ENOMEM;
                                return;
                        }
                        memset(l->earlier, 0xff, cap * sizeof(*l->earlier));
                        l->cap_earlier = cap;
                        for (size_t k = 0; k < n; k++)
                                if (old[k] != SIZE_MAX)
                                        l->earlier[earlier_slot(l, l->text + old[k])] = old[k];
                        free(old);
                }
                slot = earlier_slot(l, l->text + r->path);
                if (l->earlier[slot] == SIZE_MAX) {
                        l->earlier[slot] = r->path;
                        l->n_earlier++;
                }
        }
}

/* A database file: watched in its directory (dir SIZE_MAX when that could
 * not be kept open: watched without one, as a missing one). */
/* Whether a glob's match at path may be recorded: at most max_records of
 * them (those an earlier entry matched do not count); past them the walk
 * of this entry stops (truncated). */
static bool room_for(struct walk *w, const char *path)
{
        struct listed_root *e = &w->l->roots[w->root];

        if (matched_earlier(w->l, path))
                return true;
        if (e->n_matches >= e->max_records) {
                e->truncated = true;
                return false;
        }
        e->n_matches++;
        return true;
}

static void found(struct walk *w, const char *at, int fd, size_t *dir, const char *path, bool explicit_path)
{
        if (!explicit_path && !room_for(w, path))
                return;
        add_record(w->l, (struct record){ .kind = REC_MATCH, .explicit_path = explicit_path, .root = w->root,
                                          .dir = listed_dir(w, at, fd, dir) }, path);
}

/* The entry's admin part, opened from / one component at a time without
 * following a symbolic link: they were resolved when the configuration
 * loaded, so one now is a change made since (refused, named). -1 when it
 * cannot be opened (missing: nothing matches). */
/* An open that failed for want of descriptors or memory fails the whole
 * walk (what it did not reach is not gone): true then. */
static bool walk_failed(struct walk *w, int e)
{
        if (e != EMFILE && e != ENFILE && e != ENOMEM)
                return false;
        w->l->err = -e;
        return true;
}

static int open_root(struct walk *w)
{
        struct listed_root *e = &w->l->roots[w->root];
        char *copy, *save = NULL, *comp, at[PATH_MAX];
        int fd, next;

        if (!e->real) {
                char *prefix = strndup(e->path, e->prefix_len);

                e->real = prefix ? realpath(prefix, NULL) : NULL;
                free(prefix);
                if (!e->real)
                        return -1;
        }
        fd = open("/", DIR_FLAGS);
        copy = fd >= 0 ? strdup(e->real) : NULL;
        if (fd < 0 || !copy) {
                w->l->err = fd < 0 ? -errno : -ENOMEM;
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        at[0] = '\0';
        for (comp = strtok_r(copy, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
                snprintf(at + strlen(at), sizeof(at) - strlen(at), "/%s", comp);
                next = openat(fd, comp, DIR_FLAGS);
                close(fd);
                fd = next;
                if (fd < 0 && walk_failed(w, errno))
                        break;
                if (fd < 0) {
                        if (errno == ELOOP || errno == ENOTDIR)
                                refused(w, at, "became a symbolic link or not a directory after the configuration "
                                        "was loaded (its symbolic links were resolved then); reload to resolve "
                                        "it again");
                        break;
                }
        }
        free(copy);
        return fd;
}

/* Whether changes to fd's file system may come from elsewhere, unseen by
 * inotify (statfs(2)'s f_type; linux/magic.h). */
static bool remote_fs(int fd)
{
        static const unsigned long remote[] = {
                0x6969,     /* NFS */
                0xfe534d42, /* SMB2 */
                0xff534d42, /* CIFS */
                0x517b,     /* SMB */
                0x65735546, /* FUSE */
                0x00c36400, /* Ceph */
                0x01021997, /* 9p */
                0x5346414f, /* AFS */
                0x01161970, /* GFS2 */
                0x7461636f, /* OCFS2 */
                0x0bd00bd0, /* Lustre */
        };
        struct statfs sf;

        if (fstatfs(fd, &sf) < 0)
                return true;
        for (size_t i = 0; i < ELEMENTSOF(remote); i++)
                if ((unsigned long)sf.f_type == remote[i])
                        return true;
        return false;
}

/* An inotify watch on the directory open as fd (at), for the component
 * name below it, set up before the walk looks into it: its wd, or -1 when
 * it is not watched (the listing is then incomplete). */
static int watch_dir(struct walk *w, int fd, const char *at, const char *name, bool last)
{
        struct listing *l = w->l;
        char proc[64];
        int wd;

        if (l->notify_fd < 0 || l->err)
                return -1;
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
        if (remote_fs(fd)) {
                l->n_remote++;
                l->unwatched = true;
                return -1;
        }
        if ((wd = inotify_add_watch(l->notify_fd, proc, WATCH_MASK)) < 0) {
                l->watch_errno = errno;
                l->n_no_watch++;
                l->unwatched = true;
                return -1;
        }
        if (util_grow(&l->watches, &l->cap_watches, l->n_watches + 1, sizeof(*l->watches), 64) < 0) {
                (void)inotify_rm_watch(l->notify_fd, wd);
                l->unwatched = true;
                return -1;
        }
        l->watches[l->n_watches] = (struct listed_watch){ wd, add_text(l, at), add_text(l, name),
                                                          has_glob(name, strlen(name)), last };
        if (!l->err)
                l->n_watches++;
        return wd;
}

/* The side file names a directory's listing met, sorted: which of its
 * databases have a -wal or a -journal beside them. */
struct siblings {
        char **v;
        size_t n, cap;
        bool failed;
};

static void sibling_add(struct siblings *sb, const char *name)
{
        char *copy;

        if (sb->failed)
                return;
        if (util_grow(&sb->v, &sb->cap, sb->n + 1, sizeof(*sb->v), 64) < 0 || !(copy = strdup(name))) {
                sb->failed = true;
                return;
        }
        sb->v[sb->n++] = copy;
}

/* dir "/" name into buf (size bytes; "/name" when dir is "/"): false
 * when it does not fit. The walk joins one per name it lists: no printf. */
static bool join_path(char *buf, size_t size, const char *dir, const char *name)
{
        size_t d = strcmp(dir, "/") == 0 ? 0 : strlen(dir), n = strlen(name);

        if (d + 1 + n + 1 > size)
                return false;
        memcpy(buf, dir, d);
        buf[d] = '/';
        memcpy(buf + d + 1, name, n + 1);
        return true;
}

static int str_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool sibling_has(const struct siblings *sb, const char *base, const char *suffix)
{
        char name[NAME_MAX + 16], *key = name;
        size_t b = strlen(base), k = strlen(suffix);

        if (sb->n == 0 || b + k >= sizeof(name)) /* sb->v NULL: bsearch() and qsort() want an array */
                return false;
        memcpy(name, base, b);
        memcpy(name + b, suffix, k + 1);
        return bsearch(&key, sb->v, sb->n, sizeof(*sb->v), str_cmp) != NULL;
}

/* The records from first on, found in one complete listing of their
 * directory: their side files, as it showed them. */
static void sibling_mark(struct listing *l, struct siblings *sb, size_t first)
{
        if (!sb->failed) {
                if (sb->n > 1)
                        qsort(sb->v, sb->n, sizeof(*sb->v), str_cmp);
                for (size_t i = first; i < l->n_recs; i++) {
                        struct record *r = &l->recs[i];
                        const char *slash = strrchr(l->text + r->path, '/');

                        if (r->kind != REC_MATCH || !slash)
                                continue;
                        r->sides = SIDES_KNOWN | (sibling_has(sb, slash + 1, DBSTAT_SUFFIX_WAL) ? SIDES_WAL : 0) |
                                   (sibling_has(sb, slash + 1, DBSTAT_SUFFIX_JOURNAL) ? SIDES_JOURNAL : 0);
                }
        }
        for (size_t i = 0; i < sb->n; i++)
                free(sb->v[i]);
        free(sb->v);
}

static void walk_from(struct walk *w, int fd, const char *at, const char *rest);

/* One entry of a listed directory that matched a glob component. */
static void matched(struct walk *w, int fd, const char *at, size_t *dir, const char *name, unsigned char type,
                    const char *rest)
{
        char path[PATH_MAX];
        struct stat st;
        int sub;

        if (!join_path(path, sizeof(path), at, name))
                return;
        if (type == DT_UNKNOWN) {
                if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        return;
                type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISLNK(st.st_mode) ? DT_LNK : S_ISREG(st.st_mode) ? DT_REG : 0;
        }
        if (*rest) {
                if (type == DT_LNK)
                        refused(w, path, "a symbolic link where the path needs a directory: not followed");
                if (type != DT_DIR)
                        return;
                sub = openat(fd, name, DIR_FLAGS);
                if (sub < 0 && walk_failed(w, errno))
                        return;
                if (sub < 0) {
                        if (errno == ELOOP || errno == ENOTDIR)
                                refused(w, path, "became a symbolic link as it was opened: not followed");
                        return;
                }
                walk_from(w, sub, path, rest);
                close(sub);
                return;
        }
        if (target_is_side_file(name))
                return;
        /* a refused link counts toward the limit as a match would */
        if (type == DT_LNK && room_for(w, path))
                refused(w, path, "is a symbolic link; configure the real path instead");
        if (type == DT_REG)
                found(w, at, fd, dir, path, false);
}

/* rest: the components still to match below at (open as fd). */
/* The entries of the directory at (open as fd) that match the glob
 * component comp, each walked on with next; at the last component, what
 * the listing shows of their side files. */
static void list_matching(struct walk *w, int fd, const char *at, const char *comp, const char *next)
{
        struct siblings sb = { 0 };
        struct dirent *de = NULL;
        size_t first, dir = SIZE_MAX;
        DIR *d;
        int sub, wd;

        wd = watch_dir(w, fd, at, comp, !*next);
        sub = openat(fd, ".", DIR_FLAGS);
        d = sub >= 0 ? fdopendir(sub) : NULL;
        if (!d) {
                walk_failed(w, errno);
                if (sub >= 0)
                        close(sub);
                return;
        }
        first = w->l->n_recs;
        while ((de = readdir(d)) && !w->l->err && !w->l->roots[w->root].truncated) {
                if (!*next && target_is_side_file(de->d_name))
                        sibling_add(&sb, de->d_name);
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
                    fnmatch(comp, de->d_name, FNM_PERIOD) != 0)
                        continue;
                w->wd = wd;
                matched(w, fd, at, &dir, de->d_name, de->d_type, next);
        }
        /* only a listing read to its end tells what is not there */
        /* at the last component, the matches are this directory's files;
         * above it, the records came from directories below: not marked */
        sb.failed |= de != NULL || w->l->err != 0 || *next;
        sibling_mark(w->l, &sb, first);
        closedir(d);
}

static void walk_from(struct walk *w, int fd, const char *at, const char *rest)
{
        const char *slash = strchr(rest, '/');
        size_t n = slash ? (size_t)(slash - rest) : strlen(rest), dir = SIZE_MAX;
        char comp[NAME_MAX + 1], path[PATH_MAX];
        const char *next = slash ? slash + 1 : "";
        int sub;

        if (w->l->err || n == 0 || n > NAME_MAX)
                return;
        memcpy(comp, rest, n);
        comp[n] = '\0';
        if (!has_glob(comp, n)) {
                if (!join_path(path, sizeof(path), at, comp))
                        return;
                if (!*next) {
                        struct stat st;

                        /* a plain path is watched, there or not; a glob's
                         * last name only when it is a database file there */
                        w->wd = watch_dir(w, fd, at, comp, true);
                        if (!w->l->roots[w->root].is_glob) {
                                found(w, at, fd, &dir, path, true);
                                return;
                        }
                        if (fstatat(fd, comp, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                                walk_failed(w, errno);
                                return;
                        }
                        matched(w, fd, at, &dir, comp, S_ISLNK(st.st_mode) ? DT_LNK : S_ISREG(st.st_mode) ? DT_REG : 0,
                                "");
                        return;
                }
                (void)watch_dir(w, fd, at, comp, false);
                sub = openat(fd, comp, DIR_FLAGS);
                if (sub < 0 && walk_failed(w, errno))
                        return;
                if (sub < 0) {
                        struct stat st;

                        /* O_NOFOLLOW | O_DIRECTORY on a symbolic link: ELOOP, or ENOTDIR */
                        if (errno == ELOOP || (errno == ENOTDIR && fstatat(fd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                                               S_ISLNK(st.st_mode)))
                                refused(w, path, "is a symbolic link where the path needs a directory: not followed");
                        return;
                }
                walk_from(w, sub, path, next);
                close(sub);
                return;
        }
        list_matching(w, fd, at, comp, next);
}

/* A record's path and index, sorted together: one indirection less per
 * comparison than sorting indexes (a walk of 100,000 files sorts 100,000). */
struct path_key {
        const char *path;
        size_t rec;
};

/* qsort's: by path, then by record (the first entry's record first). */
static int path_key_cmp(const void *a, const void *b)
{
        const struct path_key *x = a, *y = b;
        int c = strcmp(x->path, y->path);

        return c ? c : (x->rec > y->rec) - (x->rec < y->rec);
}

/* The matches sorted by path, for targets_apply() to meet the targets in
 * their own order: a merge, not a search per match. */
static void sort_by_path(struct listing *l)
{
        struct path_key *keys;
        size_t n = 0;

        if (l->err || l->n_recs == 0)
                return;
        l->by_path = malloc(l->n_recs * sizeof(*l->by_path));
        keys = malloc(l->n_recs * sizeof(*keys));
        if (!l->by_path || !keys) {
                free(keys);
                l->err = -ENOMEM;
                return;
        }
        for (size_t i = 0; i < l->n_recs; i++)
                if (l->recs[i].kind != REC_REFUSED)
                        keys[n++] = (struct path_key){ l->text + l->recs[i].path, i };
        qsort(keys, n, sizeof(*keys), path_key_cmp);
        for (size_t i = 0; i < n; i++)
                l->by_path[i] = keys[i].rec;
        l->n_by_path = n;
        free(keys);
}

void targets_list(struct listing *l)
{
        for (size_t i = 0; i < l->n_roots && !l->err; i++) {
                struct listed_root *e = &l->roots[i];
                struct walk w = { .l = l, .root = i };
                const char *rest = e->path + e->prefix_len;
                char at[PATH_MAX];
                size_t first = l->n_recs;
                int fd = open_root(&w);

                if (fd < 0) {
                        /* a plain path whose directory is missing is still watched: it may appear */
                        if (!e->is_glob)
                                add_record(l, (struct record){ .kind = REC_MISSING, .explicit_path = true,
                                                               .root = i }, e->path);
                        continue;
                }
                e->opened = true;
                /* messages and paths keep the admin's spelling */
                snprintf(at, sizeof(at), "%.*s", (int)e->prefix_len, e->path);
                walk_from(&w, fd, at, *rest == '/' ? rest + 1 : rest);
                close(fd);
                if (i + 1 < l->n_roots)
                        note_earlier(l, first);
        }
        sort_by_path(l);
}

/* Each path's target as the set holds it now (a merge of two sorted
 * lists), in the first of its records (several entries may match it). */
static void find_known(const struct targets *ts, struct listing *l)
{
        size_t k = 0;

        for (size_t i = 0; i < l->n_by_path; i++) {
                struct record *r = &l->recs[l->by_path[i]], *prev = i ? &l->recs[l->by_path[i - 1]] : NULL;
                const char *path = l->text + r->path;
                int c = 1;

                if (prev && strcmp(l->text + prev->path, path) == 0) {
                        r->group = prev->group;
                        continue;
                }
                r->group = l->by_path[i];
                while (k < ts->n && (c = strcmp(ts->v[k]->path, path)) < 0)
                        k++;
                r->known = k < ts->n && c == 0 ? ts->v[k] : NULL;
        }
}

static int target_cmp(const void *a, const void *b)
{
        return strcmp((*(struct target *const *)a)->path, (*(struct target *const *)b)->path);
}

/* The targets this expansion added, into the sorted set: one merge
 * (added sorted by path already when sorted, else sorted here). */
static int add_new(struct targets *ts, struct target **added, size_t n, bool sorted)
{
        struct target **v;
        size_t i = ts->n, j = n, k = ts->n + n;

        if (n == 0)
                return 0;
        if (k > ts->cap) {
                v = realloc(ts->v, k * sizeof(*v));
                if (!v)
                        return -ENOMEM;
                ts->v = v;
                ts->cap = k;
        }
        if (!sorted)
                qsort(added, n, sizeof(*added), target_cmp);
        while (j > 0) /* from the end, into the room after the old ones */
                ts->v[--k] = i > 0 && strcmp(ts->v[i - 1]->path, added[j - 1]->path) > 0 ? ts->v[--i] : added[--j];
        ts->n += n;
        return 0;
}

/* ---- the listing applied, on the loop thread ------------------------------ */

/* A descriptor an application replaced, closed when it ends. */
struct retired {
        struct dir_key key;
        int fd;
};

struct apply {
        struct targets *ts;
        struct retired *retired;
        size_t n_retired, cap_retired;
        struct target **added; /* new targets, joining the set at the end */
        size_t n_added, cap_added;
        struct entry_root *root;
        const struct targets_events *ev;
        uint64_t budget;   /* new databases this entry may still take (limits.max_matches) */
        uint64_t marked;   /* databases this entry watches after this expansion */
        bool over;         /* it matched more than it may watch */
        int err;
};

static int dir_cmp(const struct targets *ts, size_t i, const char *path)
{
        return strcmp(ts->dirs[i]->path, path);
}

/* The listed directory's descriptor, taken from the listing; or, when the
 * walk found it held already (under another path, or renamed), a
 * duplicate of the one the targets hold, or held until this application
 * replaced it. -1 with errno on failure. */
static int take_fd(struct apply *a, struct listed_dir *ld)
{
        int fd = ld->fd;

        ld->fd = -1;
        if (fd >= 0)
                return fd;
        for (size_t i = 0; i < a->ts->n_dirs; i++) {
                struct dir_key k = key_of(a->ts->dirs[i]);

                if (held_cmp(&ld->key, &k) == 0)
                        return fcntl(a->ts->dirs[i]->fd, F_DUPFD_CLOEXEC, 3);
        }
        for (size_t i = 0; i < a->n_retired; i++)
                if (held_cmp(&ld->key, &a->retired[i].key) == 0)
                        return fcntl(a->retired[i].fd, F_DUPFD_CLOEXEC, 3);
        errno = ENOENT;
        return -1;
}

/* d's descriptor, replaced: closed when the application ends, since a
 * later directory of the listing may be that one under another path. */
static int retire(struct apply *a, struct tdir *d)
{
        if (util_grow(&a->retired, &a->cap_retired, a->n_retired + 1, sizeof(*a->retired), 8) < 0)
                return -ENOMEM;
        a->retired[a->n_retired++] = (struct retired){ key_of(d), d->fd };
        return 0;
}

/* The listed directory as one of the targets' directories: the one kept
 * from the last expansion, if it is still that directory (its descriptor
 * kept), else one with the listing's descriptor. NULL with errno. */
static struct tdir *take_dir(struct apply *a, struct listing *l, struct listed_dir *ld)
{
        struct targets *ts = a->ts;
        const char *path = l->text + ld->path;
        size_t lo = 0, hi = ts->n_dirs;
        struct tdir *d;
        int fd;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = dir_cmp(ts, mid, path);

                if (c == 0) {
                        struct dir_key k;

                        d = ts->dirs[mid];
                        k = key_of(d);
                        if (held_cmp(&ld->key, &k) != 0) {
                                /* replaced since: this one from now on */
                                if ((fd = take_fd(a, ld)) < 0)
                                        return NULL;
                                if (retire(a, d) < 0) {
                                        close(fd);
                                        errno = ENOMEM;
                                        return NULL;
                                }
                                d->fd = fd;
                                d->dev = ld->key.dev;
                                d->ino = ld->key.ino;
                                d->mnt_id = ld->key.mnt_id;
                                d->rewatched = true;
                        }
                        if (d->wd != ld->wd)
                                d->rewatched = true;
                        d->wd = ld->wd;
                        d->seen = true;
                        return d;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        if (util_grow(&ts->dirs, &ts->cap_dirs, ts->n_dirs + 1, sizeof(*ts->dirs), 16) < 0) {
                errno = ENOMEM;
                return NULL;
        }
        d = calloc(1, sizeof(*d));
        if (!d || !(d->path = strdup(path)) || (d->fd = take_fd(a, ld)) < 0) {
                int e = d && d->path ? errno : ENOMEM;

                if (d)
                        free(d->path);
                free(d);
                errno = e;
                return NULL;
        }
        d->dev = ld->key.dev;
        d->ino = ld->key.ino;
        d->mnt_id = ld->key.mnt_id;
        d->wd = ld->wd;
        d->seen = true;
        memmove(ts->dirs + lo + 1, ts->dirs + lo, (ts->n_dirs - lo) * sizeof(*ts->dirs));
        ts->dirs[lo] = d;
        ts->n_dirs++;
        return d;
}

/* A new target for path, joining the set when the expansion ends. */
static struct target *new_target(struct apply *a, const char *path)
{
        struct target *t;

        if (util_grow(&a->added, &a->cap_added, a->n_added + 1, sizeof(*a->added), 64) < 0)
                return NULL;
        t = target_new(path);
        if (t)
                a->added[a->n_added++] = t;
        return t;
}

/* Whether t, which an earlier expansion claimed, belongs to the entry a
 * (at a reload it still points into the old configuration: by path). */
static bool owned_by(const struct target *t, const struct apply *a)
{
        return t->dc && (t->dc == a->root->dc || strcmp(t->dc->path, a->root->dc->path) == 0);
}

/* path, for this entry: its target, claimed (seen, this entry's), or NULL
 * when an earlier entry has it or this one is over its limit. *known is
 * its target, if it has one (set when this adds it; *created then). */
static struct target *claim(struct apply *a, const char *path, struct target **known, bool explicit_path,
                            bool *created)
{
        struct target *t = *known;

        *created = false;
        if (a->err || (t && t->seen)) /* an earlier entry claimed it */
                return NULL;
        /* Past limits.max_matches, what the entry watches stays watched
         * and a newcomer (a new file, or one another entry had) waits for
         * room: no file decides which others are watched by the order of
         * a directory listing. */
        if (!explicit_path) {
                if (!t || !owned_by(t, a)) {
                        if (a->budget == 0) {
                                if (!a->root->capped && a->ev->refused)
                                        a->ev->refused(a->ev->userdata, a->root->dc, NULL, OVER_MAX_MATCHES);
                                a->root->capped = true;
                                a->over = true;
                                return NULL;
                        }
                        a->budget--;
                }
                a->marked++;
        }
        if (!t) {
                t = *known = new_target(a, path);
                *created = true;
        }
        if (!t) {
                a->err = -ENOMEM;
                return NULL;
        }
        t->seen = true;
        t->dc = a->root->dc;
        t->explicit_path = explicit_path;
        return t;
}

/* An entry whose walk stopped at twice its limits.max_matches is over its
 * limit: what it watches and the walk did not reach stays watched, in the
 * directory it was in (a file gone is seen by its poll). */
static void keep_watched(struct apply *a)
{
        for (size_t i = 0; i < a->ts->n; i++) {
                struct target *t = a->ts->v[i];

                /* the same entry: at a reload, the target still points into the old configuration */
                if (t->seen || !t->dc || (t->dc != a->root->dc && strcmp(t->dc->path, a->root->dc->path) != 0))
                        continue;
                t->seen = true;
                t->dc = a->root->dc;
                if (t->dir)
                        t->dir->seen = true;
                if (!t->explicit_path)
                        a->marked++;
        }
        if (!a->root->capped && a->ev->refused)
                a->ev->refused(a->ev->userdata, a->root->dc, NULL, OVER_MAX_MATCHES);
        a->root->capped = true;
        a->over = true;
}

bool targets_listing_stale(const struct targets *ts, const struct listing *l)
{
        return l->generation != ts->generation || l->n_roots != ts->n_roots;
}

/* t found in dir (NULL: none) by record r: what the listing and the
 * watches tell of its files. A target in another directory, or one
 * watched anew, may have changed unseen: not clean. The listing's side
 * files stand unless an event came while the walk ran (the event is newer). */
static void take_files(struct apply *a, const struct listing *l, struct target *t, const struct record *r,
                       struct tdir *dir)
{
        bool moved = t->dir != dir || !dir || dir->rewatched || dir->wd < 0;

        t->dir = dir;
        if (moved)
                t->clean = false;
        if ((r->sides & SIDES_KNOWN) && l->seq == a->ts->seq) {
                t->sides.wal = r->sides & SIDES_WAL ? SIDE_PRESENT : SIDE_ABSENT;
                t->sides.journal = r->sides & SIDES_JOURNAL ? SIDE_PRESENT : SIDE_ABSENT;
        } else if (moved) {
                t->sides = (struct dbstat_sides){ SIDE_UNKNOWN, SIDE_UNKNOWN };
        }
}

/* The records of root i, from *k on, applied; *k left after them. */
static void apply_root(struct apply *a, struct listing *l, struct tdir **dirs, size_t i, size_t *k)
{
        for (; *k < l->n_recs && l->recs[*k].root == i && !a->err; ++*k) {
                const struct record *r = &l->recs[*k];
                const char *path = r->path == SIZE_MAX ? NULL : l->text + r->path;

                struct target *t;
                bool created;

                switch (r->kind) {
                case REC_MATCH:
                case REC_MISSING:
                        t = claim(a, path, &l->recs[r->group].known, r->explicit_path, &created);
                        if (!t)
                                break;
                        /* a directory is taken for a file it watches, not for one it refused */
                        if (r->kind == REC_MATCH && r->dir != SIZE_MAX && !dirs[r->dir] &&
                            !(dirs[r->dir] = take_dir(a, l, &l->dirs[r->dir]))) {
                                a->err = -errno; /* nothing is dropped for it */
                                break;
                        }
                        take_files(a, l, t, r, r->kind == REC_MATCH && r->dir != SIZE_MAX ? dirs[r->dir] : NULL);
                        l->recs[r->group].created = created;
                        if (created && a->ev->added)
                                a->ev->added(a->ev->userdata, t);
                        break;
                case REC_REFUSED:
                        if (a->ev->refused)
                                a->ev->refused(a->ev->userdata, a->root->dc, path, r->why);
                        break;
                }
        }
}

static int adopt_watches(struct targets *ts, struct listing *l);

/* The new targets in path order, the order sort_by_path() gave their
 * records: add_new() merges them without a sort of its own. False (left
 * as they are) when the records do not account for every one of them. */
static bool order_added(struct apply *a, const struct listing *l)
{
        size_t j = 0;

        for (int pass = 0; pass < 2; pass++) {
                j = 0;
                for (size_t i = 0; i < l->n_by_path && j < a->n_added; i++) {
                        const struct record *r = &l->recs[l->by_path[i]];

                        if (r->group != l->by_path[i] || !r->created)
                                continue;
                        if (pass == 1)
                                a->added[j] = r->known;
                        j++;
                }
                if (j != a->n_added)
                        return false;
        }
        return true;
}

int targets_apply(struct targets *ts, struct listing *l, const struct targets_events *ev)
{
        struct apply a = { .ts = ts, .ev = ev };
        struct tdir **dirs;
        size_t k = 0;

        if (targets_listing_stale(ts, l))
                return -ESTALE;
        if (l->err)
                return l->err;
        dirs = calloc(l->n_dirs ? l->n_dirs : 1, sizeof(*dirs));
        if (!dirs)
                return -ENOMEM;
        find_known(ts, l);
        for (size_t i = 0; i < ts->n; i++)
                ts->v[i]->seen = false;
        for (size_t i = 0; i < ts->n_dirs; i++)
                ts->dirs[i]->seen = ts->dirs[i]->rewatched = false;
        for (size_t i = 0; i < ts->n_roots && !a.err; i++) {
                struct entry_root *e = &ts->roots[i];
                uint64_t max = e->dc->limits.max_matches;

                a.root = e;
                a.budget = max > e->watched ? max - e->watched : 0;
                a.marked = 0;
                a.over = false;
                /* resolved by the walk while it was missing here */
                if (!e->real && l->roots[i].real)
                        e->real = strdup(l->roots[i].real);
                apply_root(&a, l, dirs, i, &k);
                if (l->roots[i].truncated)
                        keep_watched(&a);
                if (!l->roots[i].opened) {
                        e->watched = 0;
                        continue;
                }
                e->watched = a.marked;
                if (!a.over)
                        e->capped = false;
        }
        free(dirs);
        /* the new targets join the set, after an error too (added() has
         * told of them), unless there is no room for them */
        if (add_new(ts, a.added, a.n_added, order_added(&a, l)) < 0) {
                for (size_t i = 0; i < a.n_added; i++)
                        target_free(a.added[i]);
                a.err = -ENOMEM;
        }
        free(a.added);
        for (size_t i = 0; i < a.n_retired; i++)
                close(a.retired[i].fd);
        free(a.retired);
        if (a.err)
                return a.err;
        /* A target not seen loses its directory; a directory not seen goes. */
        for (size_t i = 0; i < ts->n; i++)
                if (!ts->v[i]->seen)
                        ts->v[i]->dir = NULL;
        for (size_t i = 0, k2 = 0; i < ts->n_dirs; i++) {
                if (ts->dirs[i]->seen)
                        ts->dirs[k2++] = ts->dirs[i];
                else
                        tdir_free(ts->dirs[i]);
                if (i + 1 == ts->n_dirs)
                        ts->n_dirs = k2;
        }
        return adopt_watches(ts, l);
}

/* ---- change notification ---------------------------------------------------- */

static int watch_cmp(const void *a, const void *b)
{
        const struct watch_entry *x = a, *y = b;

        return (x->wd > y->wd) - (x->wd < y->wd);
}

static bool table_has(const struct watch_entry *v, size_t n, int wd)
{
        struct watch_entry key = { .wd = wd };

        return n > 0 && bsearch(&key, v, n, sizeof(*v), watch_cmp) != NULL;
}

/* The listing's watches as the targets' table; the watches of the old
 * table it no longer has, removed. Out of memory: the old table stays
 * (what it misses is walked again: returns 0 with the listing marked not
 * adopted, so that targets_listing_discard() removes its watches). */
static int adopt_watches(struct targets *ts, struct listing *l)
{
        struct watch_entry *v = calloc(l->n_watches ? l->n_watches : 1, sizeof(*v));
        size_t n = 0;

        if (!v)
                return 0;
        for (size_t i = 0; i < l->n_watches; i++, n++) {
                const struct listed_watch *lw = &l->watches[i];

                v[n] = (struct watch_entry){ lw->wd, strdup(l->text + lw->dir), strdup(l->text + lw->name), lw->glob,
                                             lw->last };
                if (!v[n].dir || !v[n].name) {
                        watches_free(v, n + 1);
                        return 0;
                }
        }
        qsort(v, n, sizeof(*v), watch_cmp);
        for (size_t i = 0; i < ts->n_watches; i++)
                if (!table_has(v, n, ts->watches[i].wd))
                        (void)inotify_rm_watch(ts->notify_fd, ts->watches[i].wd);
        watches_free(ts->watches, ts->n_watches);
        ts->watches = v;
        ts->n_watches = n;
        l->adopted = true;
        return 0;
}

struct listing *targets_listing_discard(struct targets *ts, struct listing *l)
{
        if (!l)
                return NULL;
        if (!l->adopted)
                for (size_t i = 0; i < l->n_watches; i++)
                        if (!table_has(ts->watches, ts->n_watches, l->watches[i].wd))
                                (void)inotify_rm_watch(ts->notify_fd, l->watches[i].wd);
        return targets_listing_free(l);
}

int targets_notify_open(struct targets *ts)
{
        if (ts->notify_fd >= 0)
                return 0;
        ts->notify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        return ts->notify_fd < 0 ? -errno : 0;
}

void targets_listing_unwatched(const struct listing *l, size_t *remote, size_t *refused, int *why)
{
        *remote = l->n_remote;
        *refused = l->n_no_watch;
        *why = l->watch_errno;
}

bool targets_listing_complete(const struct listing *l)
{
        if (l->unwatched || l->err)
                return false;
        for (size_t i = 0; i < l->n_roots; i++)
                if (!l->roots[i].opened || l->roots[i].truncated)
                        return false;
        for (size_t i = 0; i < l->n_recs; i++)
                if (l->recs[i].kind == REC_MISSING)
                        return false;
        return true;
}


/* An event naming base (its side file suffix, if any) in e's directory. */
static unsigned notify_file(struct targets *ts, const struct watch_entry *e, uint32_t mask, const char *base,
                            const char *suffix)
{
        bool names = (mask & (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)) != 0;
        char path[PATH_MAX];
        struct target *t;

        if (e->glob ? fnmatch(e->name, base, FNM_PERIOD) != 0 : strcmp(e->name, base) != 0)
                return 0;
        if (!e->last) /* a directory the walk descends into */
                return names && !suffix ? NOTIFY_WALK : 0;
        if (suffix && strcmp(suffix, DBSTAT_SUFFIX_SHM) == 0)
                return 0;
        if (!join_path(path, sizeof(path), e->dir, base))
                return 0;
        t = targets_find(ts, path);
        if (t) {
                enum side_file now = mask & (IN_CREATE | IN_MOVED_TO) ? SIDE_PRESENT : SIDE_ABSENT;

                t->clean = false;
                t->changes++;
                if (names && suffix && strcmp(suffix, DBSTAT_SUFFIX_WAL) == 0)
                        t->sides.wal = now;
                else if (names && suffix)
                        t->sides.journal = now;
        }
        ts->seq++;
        return names && !suffix ? NOTIFY_WALK : 0;
}

unsigned targets_notify(struct targets *ts, const struct inotify_event *ev)
{
        struct watch_entry key = { .wd = ev->wd };
        unsigned r = 0;
        const char *suffix;
        char base[NAME_MAX + 1];
        size_t lo = 0, hi = ts->n_watches;

        if (ev->mask & IN_Q_OVERFLOW) {
                for (size_t i = 0; i < ts->n; i++)
                        ts->v[i]->clean = false;
                ts->seq++;
                return NOTIFY_WALK;
        }
        if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT))
                r |= NOTIFY_WALK;
        if (ev->len == 0 || !ev->name[0])
                return r;
        snprintf(base, sizeof(base), "%.*s", (int)side_base(ev->name, &suffix), ev->name);
        while (lo < hi) { /* the first entry of ev->wd */
                size_t mid = lo + (hi - lo) / 2;

                if (watch_cmp(&ts->watches[mid], &key) < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        for (; lo < ts->n_watches && ts->watches[lo].wd == ev->wd; lo++)
                r |= notify_file(ts, &ts->watches[lo], ev->mask, suffix ? base : ev->name, suffix);
        return r;
}

int targets_expand(struct targets *ts, const struct targets_events *ev)
{
        struct listing *l = targets_listing_new(ts);
        int r;

        if (!l)
                return -ENOMEM;
        targets_list(l);
        r = targets_apply(ts, l, ev);
        targets_listing_discard(ts, l);
        return r;
}
