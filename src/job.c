/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"

int job_new(struct job **ret, const char *path, enum maint_op op, const struct maint_opts *o,
            struct state *state)
{
        struct job *j = calloc(1, sizeof(*j));

        if (!j)
                return -ENOMEM;
        j->path = strdup(path);
        if (!j->path || maint_cancel_init(&j->cancel) < 0) {
                free(j->path);
                free(j);
                return -ENOMEM;
        }
        j->op = op;
        j->opts = *o;
        j->state = state;
        j->req.data = j;
        *ret = j;
        return 0;
}

struct job *job_free(struct job *j)
{
        if (!j)
                return NULL;
        maint_result_clear(&j->res);
        maint_cancel_destroy(&j->cancel);
        free(j->path);
        free(j);
        return NULL;
}

/* The exact row count behind statistics this daemon wrote (a sampled
 * ANALYZE writes an estimate), while they are still the ones it wrote. */
static bool analyze_baseline(void *userdata, const char *table, const char *stat, uint64_t *rows)
{
        struct job *j = userdata;

        return j->state && state_analyze_baseline(j->state, j->path, table, stat, rows) == 0;
}

/* On a pool thread. */
static void work_cb(uv_work_t *req)
{
        struct job *j = req->data;

        switch (j->op) {
        case MAINT_OP_STATS: maint_stats(j->path, &j->opts, &j->res); break;
        case MAINT_OP_VACUUM: maint_vacuum(j->path, &j->opts, &j->cancel, &j->res); break;
        case MAINT_OP_ANALYZE:
                j->opts.analyze_baseline = analyze_baseline;
                j->opts.analyze_baseline_userdata = j;
                maint_analyze(j->path, &j->opts, &j->cancel, &j->res);
                break;
        case MAINT_OP_CHECK: maint_check(j->path, &j->opts, &j->cancel, &j->res); break;
        case MAINT_OP_INCREMENTAL_VACUUM: maint_incremental_vacuum(j->path, &j->opts, &j->cancel, &j->res); break;
        case MAINT_OP_CHECKPOINT: maint_checkpoint(j->path, &j->opts, &j->cancel, &j->res); break;
        }
        j->finished_ms = state_now_ms();
        /* Recorded here, not on the loop thread: it is an fsync'ing write. A
         * vacuum counts as done once it ran, even if the WAL stayed large. */
        if (j->state && j->res.status == MAINT_OK)
                (void)state_record(j->state, j->path, j->op, j->finished_ms);
        if (j->state && j->op == MAINT_OP_ANALYZE && j->res.wrote)
                (void)state_record_analyzed(j->state, j->path, j->res.tables, j->res.n_tables);
}

/* On the loop thread. status is UV_ECANCELED only if the request never ran. */
static void after_work_cb(uv_work_t *req, int status)
{
        struct job *j = req->data;

        if (status == UV_ECANCELED) {
                j->res.status = MAINT_INTERRUPTED;
                snprintf(j->res.message, sizeof(j->res.message), "cancelled before it started");
        }
        j->done(j, j->userdata);
}

int job_queue(struct job *j, uv_loop_t *loop, job_done_fn done, void *userdata)
{
        j->done = done;
        j->userdata = userdata;
        return uv_queue_work(loop, &j->req, work_cb, after_work_cb);
}

void job_cancel(struct job *j)
{
        maint_cancel_request(&j->cancel);
}
