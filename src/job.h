/* SPDX-License-Identifier: MIT */
/* job: one operation on one database, run on the libuv threadpool. The
 * worker touches nothing but SQLite, the file system and the state file;
 * the done callback runs on the loop thread. */
#pragma once

#include <stdint.h>

#include <uv.h>

#include "maint.h"
#include "state.h"

struct job;
typedef void (*job_done_fn)(struct job *j, void *userdata);

struct job {
        uv_work_t req;
        char *path;
        enum maint_op op;
        struct maint_opts opts;
        struct maint_cancel cancel;
        struct maint_result res;
        struct state *state;  /* where a finished vacuum/analyze is recorded; may be NULL */
        int64_t finished_ms;  /* wall clock */
        job_done_fn done;
        void *userdata;
        void *owner;          /* the caller's: which target this job is for */
};

int job_new(struct job **ret, const char *path, enum maint_op op, const struct maint_opts *o,
            struct state *state);
/* Hand the job to the pool; done() is called on the loop thread, once. */
int job_queue(struct job *j, uv_loop_t *loop, job_done_fn done, void *userdata);
/* Ask a running job to stop at the next safe point (any thread). */
void job_cancel(struct job *j);
struct job *job_free(struct job *j);
