/* SPDX-License-Identifier: MIT */
/* hook: a vacuum.before_vacuum / after_vacuum command, run by the job
 * process (as the database's owner, without capabilities: jobproc.h)
 * without a shell, with a time limit. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <stdatomic.h>
#include <stdbool.h>

#include "conf.h"

/* The most arguments a hook command splits into. */
#define HOOK_ARGS_MAX CONF_COMMAND_WORDS

/* Run command: split at spaces and tabs (no quoting, no shell, no
 * expansion), the first word an absolute path to a program that only
 * root or this process's user can change (util_trusted_path(): the file
 * and every directory above it); stdin /dev/null; stdout and stderr read,
 * the last line kept for why; the environment the caller's plus env
 * (NULL-terminated "NAME=value" strings). A command still running after
 * timeout_ms, or when *stop becomes true (stop may be NULL), is killed
 * with its process group (SIGKILL); one whose caller dies is killed too
 * (PR_SET_PDEATHSIG). Returns its exit status (0-255), 128 + a signal
 * that ended it, -ETIMEDOUT when it was killed at its limit, -ECANCELED
 * at *stop, -EPERM for a program others may change, or another negative
 * errno when it could not run; why says what happened in words (always
 * NUL-terminated). */
int hook_run(const char *command, char *const env[], uint64_t timeout_ms, const atomic_bool *stop, char *why,
             size_t why_len);
