/* SPDX-License-Identifier: MIT */
/* job: one operation on one database, run on the libuv threadpool: the
 * worker starts a job process (jobproc.h) and waits for its answer; it
 * touches nothing but that and the state file. The done callback runs on
 * the loop thread. */
#pragma once

#include <stdatomic.h>
#include <stdint.h>

#include <uv.h>

#include "maint.h"
#include "state.h"

struct job;
typedef void (*job_done_fn)(struct job *j, void *userdata);

struct job {
        uv_work_t req;
        char *path;           /* for messages and the state file */
        char *name;           /* the file's name in its directory */
        int dirfd;            /* the job's own copy of its directory's descriptor */
        enum maint_op op;
        struct maint_opts opts;
        uint64_t timeout_ms;  /* the job process's time limit */
        bool ends_with_window; /* the caller's: that limit is the maintenance window's end */
        struct maint_cancel cancel;
        struct maint_result res;
        struct state *state;  /* where a finished vacuum/analyze is recorded; may be NULL */
        int64_t started_ms;   /* wall clock, when a worker took it */
        int64_t finished_ms;  /* wall clock */
        _Atomic int phase;    /* a VACUUM's enum maint_phase, as its job process says (any thread) */
        int logged_phase;     /* the caller's: the phase it last said (loop thread) */
        job_done_fn done;
        void *userdata;
        void *owner;          /* the caller's: which target this job is for */
        uint64_t changes_at_start; /* the caller's: its target's change count when queued */
};

/* A job for name in the directory open as dirfd (duplicated: the caller
 * keeps its own). 0 or negative errno. */
int job_new(struct job **ret, int dirfd, const char *name, const char *path, enum maint_op op,
            const struct maint_opts *o, uint64_t timeout_ms, struct state *state);
/* Hand the job to the pool; done() is called on the loop thread, once. */
int job_queue(struct job *j, uv_loop_t *loop, job_done_fn done, void *userdata);
/* Ask a running job to stop at the next safe point (any thread). */
void job_cancel(struct job *j);
struct job *job_free(struct job *j);
