/* SPDX-License-Identifier: MIT */
/* util: small helpers every module needs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x) /* a macro's value as a string literal */

/* Milliseconds since the epoch on the wall clock (CLOCK_REALTIME): for
 * dates, such as those the state file keeps across restarts. */
int64_t util_wall_ms(void);
/* Milliseconds on the monotonic clock: for durations and timeouts. */
uint64_t util_monotonic_ms(void);
void util_sleep_ms(uint64_t ms);

/* An absolute form of path, made against the working directory without
 * resolving symbolic links (SQLITE_OPEN_NOFOLLOW must still see them).
 * Returns 0 and a malloc'd string, or a negative errno. */
int util_absolute_path(const char *path, char **ret);

/* A duration for people, rounded: "800 ms", "45 s", "6 min", "2 h 5 min".
 * For messages, not for parsing (conf_format_duration() gives exact
 * ones). Returns buf. */
const char *util_format_approx(uint64_t ms, char *buf, size_t len);

/* "1.5 MiB", "512 B": for messages, not for parsing. */
const char *util_format_bytes(uint64_t bytes, char *buf, size_t len);

/* text made safe for a terminal, a console log line or an sd_notify value:
 * control characters (C0, DEL and C1), backslash, bidirectional-override
 * characters and bytes that are not UTF-8 become C-style escapes (\n, \t,
 * \\, \xNN per byte), so a file name can neither end a line nor move the
 * cursor nor pose as another name. Cut (ending "...") when out is too
 * small; always NUL-terminated. Returns out. Journal fields keep the exact
 * bytes instead. */
char *util_escape(const char *in, char *out, size_t len);
/* A code point a terminal or a line-oriented reader acts on: the C0 and C1
 * controls, DEL, the line and paragraph separators, and the bidirectional
 * marks, overrides and isolates (U+061C, U+200E/F, U+202A-E, U+2066-9). */
bool util_terminal_unsafe(uint32_t cp);

/* snprintf that never reports truncation as an error: the text is cut. */
void util_strlcpy(char *dst, const char *src, size_t len);

/* What a file looked like (lstat: a symbolic link is itself): a file whose
 * identity, size or modification time moved has changed. */
struct file_id {
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtime;
};

/* 0, or a negative errno (-ENOENT for a file that is not there). */
int file_id_get(const char *path, struct file_id *ret);
/* The same for name in the directory open as dirfd (fstatat, no symbolic
 * link followed); dirfd < 0: -ENOENT. */
int file_id_at(int dirfd, const char *name, struct file_id *ret);
bool file_id_equal(const struct file_id *a, const struct file_id *b);

/* Whether path (a file or a directory, its symbolic links resolved) and
 * every directory above it can be written only by root or this process's
 * user, as sshd's StrictModes asks of authorized_keys: each must be owned
 * by one of them, and be writable by its group only when that is root's
 * group and by others not at all, except a directory with the sticky bit
 * (/tmp), in which only an entry's owner may replace it; so must every
 * directory of path as written (a symbolic link is its directory's to
 * replace). 0, or -EPERM with
 * why ("/etc/x.yaml is writable by user 1000 (owner 1000, mode 0644)"),
 * or another negative errno when it cannot be looked at. */
int util_trusted_path(const char *path, char *why, size_t len);

/* Whether the POSIX access ACL of path (not followed if a symbolic link)
 * lets anyone write it beyond the owner, root, user uid_ok and group
 * gid_ok: a named user or group, or the owning group file_gid, with the
 * write permission the mask leaves them (acl(5)). 1 with who ("user
 * 1001 (an ACL entry)"), 0 when none (or no ACL), negative errno. An ACL
 * in a form this code does not read counts as 1. */
int util_acl_writer(const char *path, uid_t uid_ok, gid_t gid_ok, gid_t file_gid, char *who, size_t len);

/* Open the directory dir (absolute), following only the symbolic links
 * that root or this process's user own: any other user can point theirs
 * elsewhere between two looks. O_RDONLY | O_DIRECTORY descriptor, or
 * negative errno (-ELOOP for a link refused) with why. */
int util_open_dir_trusted_links(const char *dir, char *why, size_t len);
/* The same for a directory an entry is about to be made in (by root or
 * this process's user, who will own it): dir itself may be sticky and
 * writable by all (/tmp). */
int util_trusted_parent(const char *dir, char *why, size_t len);

/* Room in the array *p (malloc'd, of *cap elements of size bytes; NULL
 * and 0 at first) for at least need elements: its capacity doubled from
 * first until it is enough, as systemd's GREEDY_REALLOC. 0, or -ENOMEM
 * with *p and *cap unchanged. p is the address of the array's pointer. */
int util_grow(void *p, size_t *cap, size_t need, size_t size, size_t first);
