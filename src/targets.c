/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "targets.h"

/* A directory below the admin's part: opened for listing and for openat(),
 * never through a symbolic link. */
#define DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)

void targets_init(struct targets *ts)
{
        *ts = (struct targets){ 0 };
}

struct target *target_free(struct target *t)
{
        if (t) {
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
        if (ts->n == ts->cap) {
                size_t cap = ts->cap ? ts->cap * 2 : 64;
                struct target **v = realloc(ts->v, cap * sizeof(*v));

                if (!v)
                        return NULL;
                ts->v = v;
                ts->cap = cap;
        }
        t = calloc(1, sizeof(*t));
        if (!t || !(t->path = strdup(path)))
                return target_free(t);
        t->name = strrchr(t->path, '/') ? strrchr(t->path, '/') + 1 : t->path;
        t->hash = sched_hash(path);
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

/* A -journal, -wal or -shm: SQLite's, never a database of its own. */
static bool target_is_side_file(const char *path)
{
        size_t n = strlen(path);

        for (size_t i = 0; i < ELEMENTSOF(dbstat_side_suffixes); i++) {
                size_t k = strlen(dbstat_side_suffixes[i]);

                if (n > k && strcmp(path + n - k, dbstat_side_suffixes[i]) == 0)
                        return true;
        }
        return false;
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
        roots_clear(ts);
        ts->roots = calloc(c->n_dbs ? c->n_dbs : 1, sizeof(*ts->roots));
        if (!ts->roots)
                return -ENOMEM;
        ts->n_roots = c->n_dbs;
        for (size_t i = 0; i < c->n_dbs; i++) {
                struct entry_root *e = &ts->roots[i];
                char *prefix;

                e->dc = &c->dbs[i];
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
         * stay, newcomers get the rest of its limits.max_matches. The
         * first entry that matches a path has it. */
        for (size_t k = 0; k < ts->n; k++)
                for (size_t i = 0; i < ts->n_roots; i++)
                        if (fnmatch(ts->roots[i].dc->path, ts->v[k]->path, FNM_PATHNAME | FNM_PERIOD) == 0) {
                                if (ts->roots[i].dc->is_glob)
                                        ts->roots[i].watched++;
                                break;
                        }
        return 0;
}

/* ---- walking -------------------------------------------------------------- */

struct walk {
        struct targets *ts;
        struct entry_root *root;
        const struct targets_events *ev;
        uint64_t budget;   /* new databases this entry may still take (limits.max_matches) */
        uint64_t marked;   /* databases this entry watches after this expansion */
        bool over;         /* it matched more than it may watch */
        int err;
};

static void refused(struct walk *w, const char *path, const char *why)
{
        if (w->ev->refused)
                w->ev->refused(w->ev->userdata, w->root->dc, path, why);
}

/* The entry's admin part, opened from / one component at a time without
 * following a symbolic link: they were resolved when the configuration
 * loaded, so one now is a change made since (refused, named). -1 when it
 * cannot be opened (missing: nothing matches). */
static int open_root(struct walk *w)
{
        struct entry_root *e = w->root;
        char *copy, *save = NULL, *comp, at[PATH_MAX];
        int fd, next;

        if (!e->real) {
                char *prefix = strndup(e->dc->path, e->prefix_len);

                e->real = prefix ? realpath(prefix, NULL) : NULL;
                free(prefix);
                if (!e->real)
                        return -1;
        }
        fd = open("/", DIR_FLAGS);
        copy = strdup(e->real);
        if (fd < 0 || !copy) {
                free(copy);
                if (fd >= 0)
                        close(fd);
                w->err = -ENOMEM;
                return -1;
        }
        at[0] = '\0';
        for (comp = strtok_r(copy, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
                snprintf(at + strlen(at), sizeof(at) - strlen(at), "/%s", comp);
                next = openat(fd, comp, DIR_FLAGS);
                close(fd);
                fd = next;
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

static int dir_cmp(const struct targets *ts, size_t i, const char *path)
{
        return strcmp(ts->dirs[i]->path, path);
}

/* The directory at path for this expansion: the one kept from the last,
 * if fd is still that directory, else a new one holding a duplicate of fd. */
static struct tdir *get_dir(struct walk *w, const char *path, int fd)
{
        struct targets *ts = w->ts;
        size_t lo = 0, hi = ts->n_dirs;
        struct tdir *d;
        struct stat st;

        if (fstat(fd, &st) < 0)
                return NULL;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = dir_cmp(ts, mid, path);

                if (c == 0) {
                        d = ts->dirs[mid];
                        if (d->dev != st.st_dev || d->ino != st.st_ino) {
                                /* replaced since: this one from now on */
                                int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);

                                if (nfd < 0)
                                        return NULL;
                                close(d->fd);
                                d->fd = nfd;
                                d->dev = st.st_dev;
                                d->ino = st.st_ino;
                        }
                        d->seen = true;
                        return d;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        if (ts->n_dirs == ts->cap_dirs) {
                size_t cap = ts->cap_dirs ? 2 * ts->cap_dirs : 16;
                struct tdir **v = realloc(ts->dirs, cap * sizeof(*v));

                if (!v)
                        return NULL;
                ts->dirs = v;
                ts->cap_dirs = cap;
        }
        d = calloc(1, sizeof(*d));
        if (!d || !(d->path = strdup(path)) || (d->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0) {
                if (d)
                        d->fd = -1;
                return tdir_free(d);
        }
        d->dev = st.st_dev;
        d->ino = st.st_ino;
        d->seen = true;
        memmove(ts->dirs + lo + 1, ts->dirs + lo, (ts->n_dirs - lo) * sizeof(*ts->dirs));
        ts->dirs[lo] = d;
        ts->n_dirs++;
        return d;
}

/* path (dir/name), in directory d (NULL: missing), for this entry. */
static void mark(struct walk *w, struct tdir *d, const char *path, bool explicit_path)
{
        const struct db_conf *dc = w->root->dc;
        bool created;
        struct target *t;

        if (w->err)
                return;
        t = targets_find(w->ts, path);
        if (t && t->seen) /* an earlier entry claimed it */
                return;
        /* Past limits.max_matches, what is watched stays watched and a
         * newcomer waits for room: no file decides which others are
         * watched by the order of a directory listing. */
        if (!explicit_path) {
                if (!t) {
                        if (w->budget == 0) {
                                if (!w->root->capped && w->ev->refused)
                                        w->ev->refused(w->ev->userdata, dc, NULL,
                                                       "matched more databases than limits.max_matches");
                                w->root->capped = true;
                                w->over = true;
                                return;
                        }
                        w->budget--;
                }
                w->marked++;
        }
        t = targets_get(w->ts, path, &created);
        if (!t) {
                w->err = -ENOMEM;
                return;
        }
        t->seen = true;
        t->dc = dc;
        t->dir = d;
        t->explicit_path = explicit_path;
        if (created && w->ev->added)
                w->ev->added(w->ev->userdata, t);
}

static void walk_from(struct walk *w, int fd, const char *at, const char *rest);

/* One entry of a listed directory that matched a glob component. */
static void matched(struct walk *w, int fd, const char *at, const char *name, unsigned char type,
                    const char *rest)
{
        char path[PATH_MAX];
        struct stat st;
        int sub;

        if ((size_t)snprintf(path, sizeof(path), "%s/%s", strcmp(at, "/") == 0 ? "" : at, name) >= sizeof(path))
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
        if (type == DT_LNK)
                refused(w, path, "is a symbolic link; configure the real path instead");
        if (type == DT_REG)
                mark(w, get_dir(w, at, fd), path, false);
}

/* rest: the components still to match below at (open as fd). */
static void walk_from(struct walk *w, int fd, const char *at, const char *rest)
{
        const char *slash = strchr(rest, '/');
        size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
        char comp[NAME_MAX + 1], path[PATH_MAX];
        const char *next = slash ? slash + 1 : "";
        struct dirent *de;
        DIR *d;
        int sub;

        if (w->err || n == 0 || n > NAME_MAX)
                return;
        memcpy(comp, rest, n);
        comp[n] = '\0';
        if (!has_glob(comp, n)) {
                if ((size_t)snprintf(path, sizeof(path), "%s/%s", strcmp(at, "/") == 0 ? "" : at, comp) >= sizeof(path))
                        return;
                if (!*next) {
                        mark(w, get_dir(w, at, fd), path, !w->root->dc->is_glob);
                        return;
                }
                sub = openat(fd, comp, DIR_FLAGS);
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
        sub = openat(fd, ".", DIR_FLAGS);
        d = sub >= 0 ? fdopendir(sub) : NULL;
        if (!d) {
                if (sub >= 0)
                        close(sub);
                return;
        }
        while ((de = readdir(d)) && !w->err) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
                    fnmatch(comp, de->d_name, FNM_PERIOD) != 0)
                        continue;
                matched(w, fd, at, de->d_name, de->d_type, next);
        }
        closedir(d);
}

/* A plain path whose directory is missing is still watched: it may appear. */
static void mark_missing(struct walk *w)
{
        if (!w->root->dc->is_glob)
                mark(w, NULL, w->root->dc->path, true);
}

int targets_expand(struct targets *ts, const struct targets_events *ev)
{
        for (size_t i = 0; i < ts->n; i++)
                ts->v[i]->seen = false;
        for (size_t i = 0; i < ts->n_dirs; i++)
                ts->dirs[i]->seen = false;

        for (size_t i = 0; i < ts->n_roots; i++) {
                struct walk w = { .ts = ts, .root = &ts->roots[i], .ev = ev };
                uint64_t max = w.root->dc->limits.max_matches;
                const char *rest = w.root->dc->path + w.root->prefix_len;
                char at[PATH_MAX];
                int fd;

                w.budget = max > w.root->watched ? max - w.root->watched : 0;
                fd = open_root(&w);
                if (w.err)
                        return w.err;
                if (fd < 0) {
                        w.root->watched = 0;
                        mark_missing(&w);
                        if (w.err)
                                return w.err;
                        continue;
                }
                /* messages and paths keep the admin's spelling */
                snprintf(at, sizeof(at), "%.*s", (int)w.root->prefix_len, w.root->dc->path);
                walk_from(&w, fd, at, *rest == '/' ? rest + 1 : rest);
                close(fd);
                w.root->watched = w.marked;
                if (!w.over)
                        w.root->capped = false;
                if (w.err)
                        return w.err;
        }
        /* A target not seen loses its directory; a directory not seen goes. */
        for (size_t i = 0; i < ts->n; i++)
                if (!ts->v[i]->seen)
                        ts->v[i]->dir = NULL;
        for (size_t i = 0, k = 0; i < ts->n_dirs; i++) {
                if (ts->dirs[i]->seen)
                        ts->dirs[k++] = ts->dirs[i];
                else
                        tdir_free(ts->dirs[i]);
                if (i + 1 == ts->n_dirs)
                        ts->n_dirs = k;
        }
        return 0;
}
