/* SPDX-License-Identifier: MIT */
/* ctlclient: the sqlite-maintctl commands that ask the running daemon,
 * over its control socket (docs/CONTROL.md): status, explain, run and
 * metrics. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Exit status when the daemon cannot be reached (no socket, nobody
 * listening, permission denied, no reply): documented in --help and
 * sqlite-maintctl(1). */
#define CTLCLIENT_EXIT_NO_DAEMON 7

/* A line of fmt's text on f after prefix, made safe for a terminal
 * (util_escape()): sqlite-maintctl's messages, in ctl.c. */
void ctl_vout(FILE *f, const char *prefix, const char *fmt, va_list ap);

/* Whether name is one of the daemon's commands. */
bool ctlclient_is_command(const char *name);

/* The command argv[0] with its arguments argv[1..argc-1], sent to the
 * daemon listening on socket_path. json: print the daemon's JSON reply
 * as it is; wait: run waits for the job's result. Returns the exit
 * status: 0; 1 a failure the daemon reported; 2 usage; the one-shot
 * commands' 3-6 for a run --wait whose job ended so;
 * CTLCLIENT_EXIT_NO_DAEMON. */
int ctlclient_run(const char *socket_path, int argc, char **argv, bool json, bool wait, const char *since);

/* --since TIME as wall clock ms: a duration ago ("2h", "7d") or a local
 * date and time ("2026-11-30", "2026-11-30 14:00", "2026-11-30T14:00:05").
 * 0, or -EINVAL. */
int ctlclient_parse_since(const char *s, int64_t *ret_ms);
