/* SPDX-License-Identifier: MIT */
/* hook: a vacuum.before_vacuum / after_vacuum command, run by the job
 * process (as the database's owner, without capabilities: jobproc.h)
 * without a shell, with a time limit. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* The most arguments a hook command splits into. */
#define HOOK_ARGS_MAX 32

/* Run command: split at spaces and tabs (no quoting, no shell, no
 * expansion), the first word an absolute path; stdin /dev/null; stdout
 * and stderr read, the last line kept for why; the environment the
 * caller's plus env (NULL-terminated "NAME=value" strings). A command
 * still running after timeout_ms is killed with its process group
 * (SIGKILL). Returns its exit status (0-255), 128 + a signal that ended
 * it, -ETIMEDOUT when it was killed at its limit, or another negative
 * errno when it could not run; why says what happened in words (always
 * NUL-terminated). */
int hook_run(const char *command, char *const env[], uint64_t timeout_ms, char *why, size_t why_len);
