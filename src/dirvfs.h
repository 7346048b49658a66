/* SPDX-License-Identifier: MIT */
/* dirvfs: SQLite VFSes ("maintd", and "maintd-excl" over unix-excl) for a
 * job process, whose working directory is the database's directory: names
 * stay relative, so every open, stat and unlink of the database and its
 * -journal, -wal and -shm happens in that directory, whatever becomes of
 * its path meanwhile; and an open that another process could block (a
 * FIFO, a file lease) or aim elsewhere (a symbolic link, a file of another
 * kind) fails at once instead. */
#pragma once

#define DIRVFS_NAME "maintd"
#define DIRVFS_EXCL_NAME "maintd-excl"

/* Register both over SQLite's unix and unix-excl VFSes, and have maint.c
 * open databases through them. 0 or -ENOENT. */
int dirvfs_register(void);
