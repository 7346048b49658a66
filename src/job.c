/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "job.h"
#include "jobproc.h"

int job_new(struct job **ret, int dirfd, const char *name, const char *path, enum maint_op op,
            const struct maint_opts *o, uint64_t timeout_ms, struct state *state)
{
        struct job *j = calloc(1, sizeof(*j));

        if (!j)
                return -ENOMEM;
        j->dirfd = dirfd >= 0 ? fcntl(dirfd, F_DUPFD_CLOEXEC, 3) : -1;
        j->path = strdup(path);
        j->name = strdup(name);
        if (j->dirfd < 0 || !j->path || !j->name || maint_cancel_init(&j->cancel) < 0) {
                if (j->dirfd >= 0)
                        close(j->dirfd);
                free(j->path);
                free(j->name);
                free(j);
                return -ENOMEM;
        }
        j->op = op;
        j->opts = *o;
        j->timeout_ms = timeout_ms;
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
        if (j->dirfd >= 0)
                close(j->dirfd);
        free(j->path);
        free(j->name);
        free(j);
        return NULL;
}

/* On a pool thread. */
static void work_cb(uv_work_t *req)
{
        struct job *j = req->data;
        struct jobproc_baseline *b = NULL;
        size_t nb = 0;
        struct jobproc_request jr = {
                .phase = &j->phase,
                .dirfd = j->dirfd,
                .name = j->name,
                .display_path = j->path,
                .op = j->op,
                .opts = &j->opts,
                .timeout_ms = j->timeout_ms,
        };

        /* The job process cannot read the state file (it is the owner of
         * the database, not root): it gets the counts it may need. */
        if (j->op == MAINT_OP_ANALYZE && j->state && state_analyze_baselines(j->state, j->path, &b, &nb) == 0) {
                jr.baselines = b;
                jr.n_baselines = nb;
        }
        j->started_ms = util_wall_ms();
        jobproc_run(&jr, &j->cancel, &j->res);
        free(b);
        j->finished_ms = util_wall_ms();
        /* Recorded here, not on the loop thread: it is an fsync'ing write. A
         * vacuum counts as done once it ran, even if the WAL stayed large. */
        if (j->state && j->res.status == MAINT_OK)
                (void)state_record(j->state, j->path, j->op, j->finished_ms);
        /* the window fit's rate: what a whole VACUUM job takes here */
        if (j->state && j->op == MAINT_OP_VACUUM && j->res.status == MAINT_OK && j->res.have_before)
                (void)state_record_vacuum_rate(j->state, j->res.before.file_size_bytes, j->res.duration_ms);
        if (j->state) /* sqlite-maintctl history: every maintenance job, however it ended */
                (void)state_record_job(j->state, j->path, j->op, &j->res, j->finished_ms);
        if (j->state && j->op == MAINT_OP_DEEP_SCAN && j->res.status == MAINT_OK && j->res.have_deep)
                (void)state_record_deep_scan(j->state, j->path, j->finished_ms, &j->res.deep);
        if (j->state && j->op == MAINT_OP_ANALYZE && j->res.wrote)
                (void)state_record_analyzed(j->state, j->path, j->res.tables, j->res.n_tables);
}

/* On the loop thread. status is never UV_ECANCELED: nothing calls
 * uv_cancel(); job_cancel() asks the job itself to stop. */
static void after_work_cb(uv_work_t *req, int status)
{
        struct job *j = req->data;

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
