/* SPDX-License-Identifier: MIT */
/* manager: owns the libuv loop and everything on it: the poll, the job
 * queue, the timers, the signals, reloads and shutdown. */
#pragma once

#include <stdbool.h>

struct manager;

struct conf;

struct manager_options {
        const char *conf_file; /* read again on SIGHUP */
        bool once;          /* one poll, run what is due, wait, exit */
        bool dry_run;       /* log the decisions, run nothing */
        bool ignore_window; /* with once: treat every database as inside its window */
};

/* Take over conf (loaded from o->conf_file; freed on failure too) and open
 * the state file. 0 or a negative errno, logged; nothing half-made. */
int manager_new(struct manager **ret, const struct manager_options *o, struct conf *conf);
/* Run until stopped (or, with once, until done). Returns the exit status. */
int manager_run(struct manager *m);
struct manager *manager_free(struct manager *m);
