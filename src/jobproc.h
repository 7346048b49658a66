/* SPDX-License-Identifier: MIT */
/* jobproc: an operation on one database run in a short-lived process of its
 * own, with the identity of the database file's owner and a time limit
 * (docs/DESIGN.md, "Threat model"). The calling thread blocks until the
 * process has answered or been given up on; the process cannot do more to
 * the files than their owner could, cannot outlive its time limit, and its
 * answer is parsed as untrusted input. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "maint.h"

/* argv[1] of the job process: main() hands over to jobproc_child_main(). */
#define JOBPROC_ARG "--job-process"

/* A table's row count behind statistics the daemon wrote (maint_opts
 * analyze_baseline), handed to the job process with the operation. */
struct jobproc_baseline {
        char table[256];
        char stat[1024];
        uint64_t rows;
};

struct jobproc_request {
        int dirfd;                 /* the database's directory, opened without following symbolic links */
        const char *name;          /* the database's name in it, no slash */
        const char *display_path;  /* for messages */
        enum maint_op op;
        const struct maint_opts *opts;
        const struct jobproc_baseline *baselines;
        size_t n_baselines;
        uint64_t timeout_ms;       /* stopped for certain this long after it starts (plus JOBPROC_GRACE_MS) */
        _Atomic int *phase;        /* a VACUUM's enum maint_phase as the job process says it, or NULL */
        /* Called about every 100 ms while the job runs, from the calling
         * thread: its phase (enum maint_phase) and the ms since it began.
         * May be NULL. */
        void (*tick)(void *userdata, int phase, uint64_t elapsed_ms);
        void *tick_userdata;
};

/* After a stop request or the time limit, how long the process has to end
 * on its own (sqlite3_interrupt, a clean close) before it ends itself. */
#define JOBPROC_GRACE_MS 10000

/* Remember the running executable (/proc/self/exe, opened now: an upgrade
 * that replaces the file on disk does not change what jobs run). Call once
 * at startup. 0 or negative errno. */
int jobproc_init(void);

/* Run the operation in a job process and wait for its answer. Who it runs
 * as: the owner (uid, gid, the owner's groups) of the database file as
 * fstatat() sees it now, with no capabilities, when this process is root;
 * else this process's own identity. The job refuses (MAINT_PERMISSION, with
 * the reason) a database that is not a regular file with one link, a side
 * file (-journal, -wal, -shm) that is not a regular file with one link and
 * the database's owner, a database that changed between that look and the
 * job's own, and a root-owned database in a directory another user can
 * write. cancel (may be NULL) is polled: a stop request is passed on. The
 * result is r (cleared first); MAINT_TIMEOUT when the time limit ended the
 * job, MAINT_INTERRUPTED when a stop request did, MAINT_ERROR when the
 * process ended without an answer. Returns r->status. */
enum maint_status jobproc_run(const struct jobproc_request *req, struct maint_cancel *cancel,
                              struct maint_result *r);

/* The job process: read the request from fd 0, become the owner, chdir to
 * the directory at fd 3, run the operation, write the result to fd 1;
 * fd 4 is closed or written to by the parent to stop it. Never returns. */
int jobproc_child_main(void) __attribute__((noreturn));
