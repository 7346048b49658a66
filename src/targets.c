/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "targets.h"

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

void targets_clear(struct targets *ts)
{
        for (size_t i = 0; i < ts->n; i++)
                target_free(ts->v[i]);
        free(ts->v);
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

bool target_is_side_file(const char *path)
{
        static const char *const suffixes[] = { "-wal", "-shm", "-journal" };
        size_t n = strlen(path);

        for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
                size_t k = strlen(suffixes[i]);

                if (n > k && strcmp(path + n - k, suffixes[i]) == 0)
                        return true;
        }
        return false;
}

static int mark(struct targets *ts, const struct db_conf *dc, const char *path, bool explicit_path,
                void (*added)(void *, struct target *), void *userdata)
{
        bool created;
        struct target *t = targets_get(ts, path, &created);

        if (!t)
                return -ENOMEM;
        if (t->seen) /* an earlier entry claimed it */
                return 0;
        t->seen = true;
        t->dc = dc;
        t->explicit_path = explicit_path;
        if (created && added)
                added(userdata, t);
        return 0;
}

int targets_expand(struct targets *ts, const struct conf *c,
                   void (*added)(void *userdata, struct target *t), void *userdata)
{
        for (size_t i = 0; i < ts->n; i++)
                ts->v[i]->seen = false;

        for (size_t i = 0; i < c->n_dbs; i++) {
                const struct db_conf *dc = &c->dbs[i];
                glob_t g;
                int r;

                if (!dc->is_glob) {
                        /* Watched even while absent: it may appear. */
                        if (mark(ts, dc, dc->path, true, added, userdata) < 0)
                                return -ENOMEM;
                        continue;
                }
                /* GLOB_MARK puts a slash after directories, so they are skipped. */
                r = glob(dc->path, GLOB_MARK | GLOB_NOSORT, NULL, &g);
                if (r == GLOB_NOSPACE) {
                        globfree(&g);
                        return -ENOMEM;
                }
                for (size_t k = 0; r == 0 && k < g.gl_pathc; k++) {
                        const char *p = g.gl_pathv[k];
                        size_t n = strlen(p);

                        if (n == 0 || p[n - 1] == '/' || target_is_side_file(p))
                                continue;
                        if (mark(ts, dc, p, false, added, userdata) < 0) {
                                globfree(&g);
                                return -ENOMEM;
                        }
                }
                globfree(&g);
        }
        return 0;
}
