/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "dirvfs.h"
#include "maint.h"

static sqlite3_vfs vfs_plain, vfs_excl;

/* The probes' descriptors of regular files, kept open until the job
 * process ends: closing one would drop every POSIX lock this process holds
 * on the file, those of a connection already open on it included (a
 * VACUUM's, when the guard opens a second connection: maint.c
 * schema_unchanged). A job process opens a handful of files. */
static int *parked;
static size_t n_parked, cap_parked;

static void park(int fd)
{
        if (n_parked == cap_parked) {
                size_t cap = cap_parked ? 2 * cap_parked : 16;
                int *p = realloc(parked, cap * sizeof(*p));

                if (!p) {
                        /* no room to keep it: leaked open, never closed early */
                        return;
                }
                parked = p;
                cap_parked = cap;
        }
        parked[n_parked++] = fd;
}

/* The name as given: relative to the working directory, which the job
 * entered by a directory descriptor (jobproc.c). SQLite's unix VFS would
 * make it absolute with getcwd() and resolve symbolic links, and from then
 * on open and unlink the side files by that path. */
static int full_pathname(sqlite3_vfs *vfs, const char *name, int n_out, char *out)
{
        size_t n = strlen(name);

        if (strchr(name, '/') || n + 1 > (size_t)n_out)
                return SQLITE_CANTOPEN;
        memcpy(out, name, n + 1);
        return SQLITE_OK;
}

/* Before SQLite opens a database, journal or WAL: it must be a regular
 * file if it exists, and an open of it must not block (a FIFO waits for a
 * writer; a file lease makes a conflicting open wait lease-break-time). */
static int open_file(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags, int *out_flags)
{
        sqlite3_vfs *base = vfs->pAppData;
        struct stat st;
        int fd;

        if (name && (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_WAL))) {
                if (fstatat(AT_FDCWD, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                        if (!S_ISREG(st.st_mode))
                                return SQLITE_CANTOPEN;
                        fd = open(name, ((flags & SQLITE_OPEN_READWRITE) ? O_RDWR : O_RDONLY) | O_NONBLOCK |
                                  O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
                        if (fd < 0 && errno == EWOULDBLOCK)
                                return SQLITE_BUSY;
                        if (fd >= 0) {
                                if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                                        close(fd); /* not a file SQLite holds a lock on */
                                        return SQLITE_CANTOPEN;
                                }
                                park(fd);
                        }
                } else if (errno != ENOENT) {
                        return SQLITE_CANTOPEN;
                }
        }
        return base->xOpen(base, name, file, flags, out_flags);
}

static int make(sqlite3_vfs *vfs, const char *base_name, const char *name)
{
        sqlite3_vfs *base = sqlite3_vfs_find(base_name);

        if (!base)
                return -ENOENT;
        *vfs = *base;
        vfs->pNext = NULL;
        vfs->zName = name;
        vfs->pAppData = base;
        vfs->xFullPathname = full_pathname;
        vfs->xOpen = open_file;
        return sqlite3_vfs_register(vfs, 0) == SQLITE_OK ? 0 : -ENOENT;
}

int dirvfs_register(void)
{
        int r = make(&vfs_plain, "unix", DIRVFS_NAME);

        if (r == 0)
                r = make(&vfs_excl, "unix-excl", DIRVFS_EXCL_NAME);
        if (r == 0)
                maint_set_vfs(DIRVFS_NAME, DIRVFS_EXCL_NAME);
        return r;
}
