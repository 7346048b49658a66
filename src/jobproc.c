/* SPDX-License-Identifier: MIT */
/* jobproc: the job process and its supervision (jobproc.h). The parent
 * side runs on a worker thread of the daemon, or in sqlite-maintctl; the
 * child side is this same executable, started again with JOBPROC_ARG. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/capability.h>

#include "dirvfs.h"
#include "hook.h"
#include "jobproc.h"
#include "conf.h"
#include "util.h"

#define SPEC_MAGIC 0x4d4a5331u   /* "MJS1" */
#define RESULT_MAGIC 0x4d4a5231u /* "MJR1" */
#define MAX_BASELINES 100000
#define MAX_RESULT_BYTES (16u << 20)
#define MAX_TABLES 1000000
/* The child's own fds (jobproc_child_main). */
#define CHILD_DIR_FD 3
#define CHILD_CONTROL_FD 4
#define CHILD_PROGRESS_FD 5 /* a byte per phase (enum maint_phase) as it begins */
#define CHILD_EXE_FD 6 /* close-on-exec: only for execveat() itself */
/* Exit status of a job process that ended itself without an answer. */
#define CHILD_EXIT_TIMEOUT 2
/* The group of an owner with no passwd entry: nogroup (base-passwd). */
#define NO_GROUP ((gid_t)65534)
#define CHILD_EXIT_STOPPED 3
/* After the child's own limit, how long the parent still waits. */
#define PARENT_SLACK_MS 5000
#define POLL_SLICE_MS 100

/* What the parent tells the child, after exec (same executable: the same
 * layout). */
struct spec {
        uint32_t magic, size;
        pid_t parent;
        enum maint_op op;
        struct maint_opts opts;   /* its pointers are not used */
        bool switch_user;
        uid_t uid;
        gid_t gid;
        dev_t dev;
        ino_t ino;
        uint64_t timeout_ms;
        uint32_t n_baselines;
        char name[256];
        char display[4096];
};

static int exe_fd = -1;

/* Jobs given up on before they ended; reaped when they do. */
static pthread_mutex_t stray_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t strays[64];
static size_t n_strays;

/* fd moved to 10 or above, close-on-exec, so that the child's dup2() onto
 * 0..4 cannot clobber one it still needs. */
static int high_fd(int fd)
{
        int h = fcntl(fd, F_DUPFD_CLOEXEC, 10);

        close(fd);
        return h;
}

/* The job's environment: the daemon's, without what systemd gave the
 * daemon alone (a job runs as a tenant: it must not reach the notification
 * socket, nor take the watchdog or passed sockets as its own). Built once,
 * before any thread forks. */
static char **child_env;

static int make_child_env(void)
{
        static const char *const drop[] = { "NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID=", "LISTEN_FDS=",
                                             "LISTEN_PID=", "LISTEN_FDNAMES=" };
        size_t n = 0, k = 0;

        while (environ[n])
                n++;
        child_env = calloc(n + 1, sizeof(*child_env));
        if (!child_env)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                bool keep = true;

                for (size_t d = 0; d < ELEMENTSOF(drop); d++)
                        keep = keep && strncmp(environ[i], drop[d], strlen(drop[d])) != 0;
                if (keep)
                        child_env[k++] = environ[i];
        }
        return 0;
}

int jobproc_init(void)
{
        char path[4096];
        ssize_t n;

        if (!child_env && make_child_env() < 0)
                return -ENOMEM;

        /* readlink, not an open of /proc/self/exe itself: under valgrind the
         * latter is valgrind, the former the program it runs. */
        n = readlink("/proc/self/exe", path, sizeof(path) - 1);
        if (n < 0)
                return -errno;
        path[n] = '\0';
        exe_fd = open(path, O_PATH | O_CLOEXEC);
        if (exe_fd < 0)
                return -errno;
        exe_fd = high_fd(exe_fd);
        return exe_fd < 0 ? -EMFILE : 0;
}

static uint64_t now_ms(void)
{
        return util_monotonic_ms();
}

static int write_full(int fd, const void *buf, size_t n)
{
        const char *p = buf;

        while (n > 0) {
                ssize_t k = write(fd, p, n);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                n -= (size_t)k;
        }
        return 0;
}

static int read_full(int fd, void *buf, size_t n)
{
        char *p = buf;

        while (n > 0) {
                ssize_t k = read(fd, p, n);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EPIPE;
                p += k;
                n -= (size_t)k;
        }
        return 0;
}

/* ---- the result, across the pipe ---------------------------------------- */

struct buf {
        char *p;
        size_t n, cap;
        bool oom;
};

static void put(struct buf *b, const void *data, size_t n)
{
        if (b->oom)
                return;
        if (b->n + n > b->cap) {
                size_t cap = b->cap ? b->cap : 4096;
                char *p;

                while (cap < b->n + n)
                        cap *= 2;
                p = realloc(b->p, cap);
                if (!p) {
                        b->oom = true;
                        return;
                }
                b->p = p;
                b->cap = cap;
        }
        memcpy(b->p + b->n, data, n);
        b->n += n;
}

static void put_u32(struct buf *b, uint32_t v)
{
        put(b, &v, sizeof(v));
}

static void put_str(struct buf *b, const char *s)
{
        uint32_t n = s ? (uint32_t)strlen(s) : UINT32_MAX;

        put_u32(b, n);
        if (s)
                put(b, s, n);
}

static void encode_result(const struct maint_result *r, struct buf *b)
{
        struct maint_result flat = *r;

        flat.problems = NULL;
        flat.tables = NULL;
        flat.vtabs = NULL;
        flat.deep.btrees = NULL;
        put_u32(b, RESULT_MAGIC);
        put_u32(b, sizeof(flat));
        put(b, &flat, sizeof(flat));
        put_u32(b, (uint32_t)r->n_problems);
        for (size_t i = 0; i < r->n_problems; i++)
                put_str(b, r->problems[i]);
        put_u32(b, (uint32_t)r->n_tables);
        for (size_t i = 0; i < r->n_tables; i++) {
                struct maint_table t = r->tables[i];

                t.name = t.stat = NULL;
                put(b, &t, sizeof(t));
                put_str(b, r->tables[i].name);
                put_str(b, r->tables[i].stat);
        }
        put_u32(b, (uint32_t)r->n_vtabs);
        for (size_t i = 0; i < r->n_vtabs; i++) {
                put_u32(b, (uint32_t)r->vtabs[i].kind);
                put_u32(b, (uint32_t)r->vtabs[i].verdict);
                put_str(b, r->vtabs[i].name);
                put_str(b, r->vtabs[i].why);
        }
        put_u32(b, (uint32_t)r->deep.n_btrees);
        for (size_t i = 0; i < r->deep.n_btrees; i++) {
                struct btree_space t = r->deep.btrees[i];

                t.name = t.table = NULL;
                put(b, &t, sizeof(t));
                put_str(b, r->deep.btrees[i].name);
                put_str(b, r->deep.btrees[i].table);
        }
}

struct reader {
        const char *p;
        size_t left;
};

static bool get(struct reader *rd, void *out, size_t n)
{
        if (rd->left < n)
                return false;
        memcpy(out, rd->p, n);
        rd->p += n;
        rd->left -= n;
        return true;
}

/* A string of the answer: NULL (absent) is allowed only when nullable. */
static bool get_str(struct reader *rd, bool nullable, char **out)
{
        uint32_t n;

        *out = NULL;
        if (!get(rd, &n, sizeof(n)))
                return false;
        if (n == UINT32_MAX)
                return nullable;
        if (n > rd->left)
                return false;
        *out = strndup(rd->p, n);
        if (!*out)
                return false;
        rd->p += n;
        rd->left -= n;
        return true;
}

static void sanitize_stat(struct dbstat *st)
{
        st->journal_mode[sizeof(st->journal_mode) - 1] = '\0';
        if ((unsigned)st->auto_vacuum > AUTO_VACUUM_INCREMENTAL)
                st->auto_vacuum = AUTO_VACUUM_NONE;
}

/* A count of at most max, then an array of that many zeroed elements of
 * size bytes (NULL for none) in *arr. */
static bool get_array(struct reader *rd, uint32_t max, size_t size, uint32_t *n, void **arr)
{
        *arr = NULL;
        if (!get(rd, n, sizeof(*n)) || *n > max)
                return false;
        *arr = *n ? calloc(*n, size) : NULL;
        return *n == 0 || *arr;
}

/* The result's fixed part, its own pointers and counts emptied */
static bool decode_flat(struct reader *rd, struct maint_result *r)
{
        uint32_t magic, size;
        struct maint_result flat;

        if (!get(rd, &magic, sizeof(magic)) || magic != RESULT_MAGIC || !get(rd, &size, sizeof(size)) ||
            size != sizeof(flat) || !get(rd, &flat, sizeof(flat)))
                return false;
        if ((unsigned)flat.status > MAINT_HOOK_REFUSED)
                return false;
        flat.message[sizeof(flat.message) - 1] = '\0';
        flat.tmp_dir[sizeof(flat.tmp_dir) - 1] = '\0';
        sanitize_stat(&flat.before);
        sanitize_stat(&flat.after);
        flat.problems = NULL;
        flat.tables = NULL;
        flat.vtabs = NULL;
        flat.n_problems = flat.n_tables = flat.n_vtabs = 0;
        flat.deep.btrees = NULL;
        flat.deep.n_btrees = 0;
        *r = flat;
        return true;
}

/* The problems found, one string each */
static bool decode_problems(struct reader *rd, struct maint_result *r)
{
        uint32_t np;
        void *a;

        if (!get_array(rd, 1000, sizeof(*r->problems), &np, &a))
                return false;
        r->problems = a;
        for (; r->n_problems < np; r->n_problems++)
                if (!get_str(rd, false, &r->problems[r->n_problems]))
                        return false;
        return true;
}

/* The tables, each with its verdict, name and statistics */
static bool decode_tables(struct reader *rd, struct maint_result *r)
{
        uint32_t nt;
        void *a;

        if (!get_array(rd, MAX_TABLES, sizeof(*r->tables), &nt, &a))
                return false;
        r->tables = a;
        for (; r->n_tables < nt; r->n_tables++) {
                struct maint_table *t = &r->tables[r->n_tables];

                if (!get(rd, t, sizeof(*t)))
                        return false;
                t->name = t->stat = NULL;
                if ((unsigned)t->verdict > TABLE_UNCHANGED || !get_str(rd, false, &t->name) ||
                    !get_str(rd, true, &t->stat)) {
                        free(t->name);
                        free(t->stat);
                        return false;
                }
        }
        return true;
}

/* The virtual tables a check looked at, kind and verdict in range */
static bool decode_vtabs(struct reader *rd, struct maint_result *r)
{
        uint32_t nv;
        void *a;

        if (!get_array(rd, MAX_TABLES, sizeof(*r->vtabs), &nv, &a))
                return false;
        r->vtabs = a;
        for (; r->n_vtabs < nv; r->n_vtabs++) {
                struct maint_vtab *v = &r->vtabs[r->n_vtabs];
                uint32_t kind, verdict;

                if (!get(rd, &kind, sizeof(kind)) || kind > VTAB_RTREE || !get(rd, &verdict, sizeof(verdict)) ||
                    verdict > VTAB_VERDICT_CANNOT)
                        return false;
                v->kind = (enum vtab_kind)kind;
                v->verdict = (enum vtab_verdict)verdict;
                if (!get_str(rd, false, &v->name) || !get_str(rd, true, &v->why)) {
                        free(v->name);
                        free(v->why);
                        return false;
                }
        }
        return true;
}

/* The deep scan's b-trees, each with its name and table */
static bool decode_btrees(struct reader *rd, struct maint_result *r)
{
        uint32_t nb;
        void *a;

        if (!get_array(rd, MAX_TABLES, sizeof(*r->deep.btrees), &nb, &a))
                return false;
        r->deep.btrees = a;
        for (; r->deep.n_btrees < nb; r->deep.n_btrees++) {
                struct btree_space *t = &r->deep.btrees[r->deep.n_btrees];

                if (!get(rd, t, sizeof(*t)))
                        return false;
                t->name = t->table = NULL;
                if (!get_str(rd, false, &t->name) || !get_str(rd, false, &t->table)) {
                        free(t->name);
                        free(t->table);
                        return false;
                }
        }
        return true;
}

/* The child's answer, which a hostile database could have shaped: every
 * field checked, every string bounded and terminated; in encode_result's
 * order, nothing left over. */
static bool decode_result(const char *data, size_t n, struct maint_result *r)
{
        struct reader rd = { data, n };

        return decode_flat(&rd, r) && decode_problems(&rd, r) && decode_tables(&rd, r) && decode_vtabs(&rd, r) &&
               decode_btrees(&rd, r) && rd.left == 0;
}

/* ---- the child ------------------------------------------------------------ */

static struct maint_cancel child_cancel;
static struct jobproc_baseline *child_baselines;
static uint32_t child_n_baselines;
static uint64_t child_timeout_ms;
static atomic_bool child_timed_out; /* the time limit, not a stop request, interrupted the operation */

static bool child_baseline(void *userdata, const char *table, const char *stat, uint64_t *rows)
{
        for (uint32_t i = 0; i < child_n_baselines; i++)
                if (strcmp(child_baselines[i].table, table) == 0 && strcmp(child_baselines[i].stat, stat) == 0) {
                        *rows = child_baselines[i].rows;
                        return true;
                }
        return false;
}

static void answer(struct maint_result *r) __attribute__((noreturn));
static void answer(struct maint_result *r)
{
        struct buf b = { 0 };

        encode_result(r, &b);
        if (!b.oom)
                (void)write_full(STDOUT_FILENO, b.p, b.n);
        _exit(b.oom ? 1 : 0);
}

static void refuse(struct maint_result *r, enum maint_status s, const char *fmt, ...)
        __attribute__((format(printf, 3, 4), noreturn));
static void refuse(struct maint_result *r, enum maint_status s, const char *fmt, ...)
{
        va_list ap;

        r->status = s;
        va_start(ap, fmt);
        vsnprintf(r->message, sizeof(r->message), fmt, ap);
        va_end(ap);
        answer(r);
}

/* Stop requests and the time limit: a stop (a byte, or the parent gone)
 * or the limit interrupts the operation (sqlite3_interrupt); if it has not
 * answered JOBPROC_GRACE_MS later, the process ends itself. SQLite's own
 * crash safety keeps the database intact either way. */
static void *watch(void *arg)
{
        uint64_t deadline = now_ms() + child_timeout_ms, hard = 0;
        struct pollfd p = { .fd = CHILD_CONTROL_FD, .events = POLLIN };
        int code = CHILD_EXIT_TIMEOUT;

        for (;;) {
                uint64_t now = now_ms(), until = hard ? hard : deadline;
                char c;

                if (now >= until) {
                        if (hard)
                                _exit(code);
                        atomic_store(&child_timed_out, true);
                        maint_cancel_request(&child_cancel);
                        hard = now + JOBPROC_GRACE_MS;
                        continue;
                }
                if (poll(hard ? NULL : &p, hard ? 0 : 1, (int)(until - now > 60000 ? 60000 : until - now)) > 0 &&
                    !hard) {
                        /* a stop byte, or end of file: the parent is gone or gave up */
                        (void)!read(CHILD_CONTROL_FD, &c, 1);
                        maint_cancel_request(&child_cancel);
                        code = CHILD_EXIT_STOPPED;
                        hard = now_ms() + JOBPROC_GRACE_MS;
                }
        }
        return arg;
}

/* Become the owner: the owner's groups, gid and uid, no capabilities, no
 * way back (no_new_privs), killed with the parent. */
static int become(const struct spec *sp, char *why, size_t len)
{
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
        struct __user_cap_data_struct d[2];
        gid_t groups[256], gid;
        int n = (int)ELEMENTSOF(groups);
        struct passwd *pw;

        if (sp->switch_user) {
                /* The owner's own group and groups, not the file's group: a
                 * setgid directory, or a chgrp, would lend the job a group
                 * its owner is not in. An owner without a passwd entry
                 * gets none but nogroup. */
                pw = getpwuid(sp->uid);
                gid = pw ? pw->pw_gid : NO_GROUP;
                if (!pw || getgrouplist(pw->pw_name, gid, groups, &n) < 0) {
                        groups[0] = gid;
                        n = 1;
                }
                if (setgroups((size_t)n, groups) < 0 || setresgid(gid, gid, gid) < 0 ||
                    setresuid(sp->uid, sp->uid, sp->uid) < 0) {
                        snprintf(why, len, "cannot become user %u (group %u): %s", (unsigned)sp->uid,
                                 (unsigned)gid, strerror(errno));
                        return -errno;
                }
        }
        /* As root (a root-owned database) the capabilities still go: the
         * job has the file owner's rights, not root's. */
        memset(d, 0, sizeof(d));
        if (geteuid() == 0 && syscall(SYS_capset, &h, d) < 0) {
                snprintf(why, len, "cannot drop capabilities: %s", strerror(errno));
                return -errno;
        }
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 ||
            prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) {
                snprintf(why, len, "prctl: %s", strerror(errno));
                return -errno;
        }
        /* the parent may have died before PDEATHSIG was armed */
        if (getppid() != sp->parent)
                _exit(1);
        if (sp->switch_user && sp->uid != 0 && setuid(0) == 0) {
                snprintf(why, len, "could become root again after switching to user %u", (unsigned)sp->uid);
                return -EPERM;
        }
        return 0;
}

static const char *kind_of(mode_t m)
{
        return S_ISLNK(m) ? "a symbolic link" : S_ISFIFO(m) ? "a FIFO" : S_ISDIR(m) ? "a directory" :
               S_ISSOCK(m) ? "a socket" : S_ISCHR(m) || S_ISBLK(m) ? "a device" : "not a regular file";
}

/* An open that a lease would block fails at once with O_NONBLOCK
 * (fcntl(2), "Leases"): then another process holds one. */
static bool leased(const char *name, bool write)
{
        int fd = open(name, (write ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);

        if (fd >= 0) {
                close(fd);
                return false;
        }
        return errno == EWOULDBLOCK;
}

/* fs.protected_hardlinks (proc_sys_fs(5)): 1 lets no one make a hard link
 * to a file they could not write themselves. Not readable: as if 0. */
static bool hardlinks_protected(void)
{
        char c = '0';
        int fd = open("/proc/sys/fs/protected_hardlinks", O_RDONLY | O_CLOEXEC);

        if (fd >= 0) {
                if (read(fd, &c, 1) != 1)
                        c = '0';
                close(fd);
        }
        return c != '0';
}

/* Who other than uid (and root) may write the directory dir is, by its
 * mode and its ACL: false when no one. A group may when it is not uid's
 * own group with no other member (a user private group). */
static bool dir_writer(const struct stat *dir, uid_t uid, char *who, size_t len)
{
        struct passwd *pw = getpwuid(uid);
        gid_t own = pw ? pw->pw_gid : NO_GROUP;
        struct group *gr;
        bool private_group = false;

        if (dir->st_uid != uid && dir->st_uid != 0) {
                snprintf(who, len, "user %u (its owner)", (unsigned)dir->st_uid);
                return true;
        }
        if (dir->st_mode & S_IWOTH) {
                snprintf(who, len, "every user");
                return true;
        }
        if (dir->st_gid == own && uid != 0 && (gr = getgrgid(own)) != NULL)
                private_group = !gr->gr_mem[0] || (!gr->gr_mem[1] && pw && strcmp(gr->gr_mem[0], pw->pw_name) == 0);
        if ((dir->st_mode & S_IWGRP) && dir->st_gid != 0 && !private_group) {
                snprintf(who, len, "group %u", (unsigned)dir->st_gid);
                return true;
        }
        return util_acl_writer(".", uid, private_group ? own : 0, dir->st_gid, who, len) != 0;
}

/* The files as the job finds them, as their owner, in the directory: what
 * jobproc_run promises to refuse. */
static void check_files(const struct spec *sp, struct maint_result *r)
{
        bool write = sp->op != MAINT_OP_STATS && sp->op != MAINT_OP_CHECK && sp->op != MAINT_OP_DEEP_SCAN;
        struct stat db, side, dir;
        char p[sizeof(sp->name) + 16], who[96] = "";

        if (fstatat(AT_FDCWD, sp->name, &db, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                        refuse(r, MAINT_MISSING, "no such file");
                refuse(r, errno == EACCES ? MAINT_PERMISSION : MAINT_IOERR, "cannot look up the file: %s",
                       strerror(errno));
        }
        if (S_ISLNK(db.st_mode))
                refuse(r, MAINT_PERMISSION, "is a symbolic link; configure the real path instead");
        if (!S_ISREG(db.st_mode))
                refuse(r, MAINT_NOTADB, "not a regular file (%s)", kind_of(db.st_mode));
        if (db.st_dev != sp->dev || db.st_ino != sp->ino)
                refuse(r, MAINT_BUSY, "the file was replaced as the job started; looking again later");
        if (db.st_nlink != 1)
                refuse(r, MAINT_PERMISSION, "has %ju hard links: it may be another user's file linked here, "
                       "which sqlite-maintd will not maintain under this name", (uintmax_t)db.st_nlink);
        for (size_t i = 0; i < ELEMENTSOF(dbstat_side_suffixes); i++) {
                snprintf(p, sizeof(p), "%s%s", sp->name, dbstat_side_suffixes[i]);
                if (fstatat(AT_FDCWD, p, &side, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (!S_ISREG(side.st_mode))
                        refuse(r, MAINT_PERMISSION, "%s is %s, not a regular file: refusing to let SQLite open it",
                               p, kind_of(side.st_mode));
                if (side.st_nlink != 1)
                        refuse(r, MAINT_PERMISSION, "%s has %ju hard links: it may be another file linked here; "
                               "refusing to let SQLite open it", p, (uintmax_t)side.st_nlink);
                if (side.st_uid != db.st_uid)
                        refuse(r, MAINT_PERMISSION, "%s belongs to user %u, the database to user %u: refusing to "
                               "let SQLite open it", p, (unsigned)side.st_uid, (unsigned)db.st_uid);
                if (leased(p, write))
                        refuse(r, MAINT_BUSY, "%s is leased by another process (F_SETLEASE)", p);
        }
        if (leased(sp->name, write))
                refuse(r, MAINT_BUSY, "the database file is leased by another process (F_SETLEASE)");
        /* Whoever else can write the directory can plant a hard link to
         * any file of theirs... or, with fs.protected_hardlinks=0, to any
         * file at all, as a side file after these checks (SQLite opens the
         * -shm itself): the job would write it with the owner's rights.
         * As root, never in such a directory; as another owner, not where
         * hard links to others' files can be made. */
        if (stat(".", &dir) < 0)
                refuse(r, MAINT_PERMISSION, "cannot look at its directory: %s", strerror(errno));
        if (db.st_uid == 0 && dir_writer(&dir, 0, who, sizeof(who)))
                refuse(r, MAINT_PERMISSION, "a root-owned database in a directory that %s may write (owner %u, "
                       "group %u, mode %04o): a hard link planted there after these checks would be written as "
                       "root; sqlite-maintd does not act as root there", who, (unsigned)dir.st_uid,
                       (unsigned)dir.st_gid, (unsigned)(dir.st_mode & 07777));
        if (db.st_uid != 0 && !hardlinks_protected() && dir_writer(&dir, db.st_uid, who, sizeof(who)))
                refuse(r, MAINT_PERMISSION, "fs.protected_hardlinks is 0 and %s may write the database's directory "
                       "(owner %u, group %u, mode %04o): a hard link planted there after these checks would be "
                       "written with user %u's rights; sqlite-maintd does not work there (set "
                       "fs.protected_hardlinks=1, or give each owner a directory of their own)", who,
                       (unsigned)dir.st_uid, (unsigned)dir.st_gid, (unsigned)(dir.st_mode & 07777),
                       (unsigned)db.st_uid);
}

/* A phase as it begins, to the parent (jobproc_run(), supervise()). */
static void child_phase(enum maint_phase p)
{
        unsigned char c = (unsigned char)p;

        (void)!write(CHILD_PROGRESS_FD, &c, 1);
}

/* "NAME=value" for a hook's environment, into the next of env's n slots. */
static void hook_env(char env[][96], size_t *n, const char *name, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void hook_env(char env[][96], size_t *n, const char *name, const char *fmt, ...)
{
        int k = snprintf(env[*n], sizeof(env[*n]), "%s=", name);
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(env[*n] + k, sizeof(env[*n]) - (size_t)k, fmt, ap);
        va_end(ap);
        ++*n;
}

/* A VACUUM (full or incremental) between vacuum.before_vacuum and
 * after_vacuum, run here, as the database's owner (hook.h): the first's
 * non-zero exit skips it (MAINT_HOOK_REFUSED); the second runs whenever
 * the first ran, whatever the VACUUM's result, which it is told. */
/* One hook, its phase said, env's n variables and the database's path in
 * its environment: hook_run()'s result. */
static int run_hook(const struct spec *sp, const struct maint_opts *o, const char *command, enum maint_phase phase,
                    char env[][96], size_t n, char *why, size_t why_len)
{
        char *envp[16], path[sizeof(sp->display) + 32];

        for (size_t i = 0; i < n && i < 14; i++)
                envp[i] = env[i];
        snprintf(path, sizeof(path), "SQLITE_MAINTD_DB=%s", sp->display);
        envp[n < 14 ? n : 14] = path;
        envp[(n < 14 ? n : 14) + 1] = NULL;
        child_phase(phase);
        return hook_run(command, envp, o->hook_timeout_ms, &child_cancel.requested, why, why_len);
}

static void with_hooks(const struct spec *sp, const struct maint_opts *o, struct maint_result *r)
{
        char env[12][96], why[512];
        struct maint_result st = { .status = MAINT_OK };
        uint64_t t0 = util_monotonic_ms();
        size_t n = 0;
        int rc;

        if (o->before_vacuum[0]) {
                maint_stats(sp->name, o, &st);
                hook_env(env, &n, "SQLITE_MAINTD_OPERATION", "%s", maint_op_name(sp->op));
                if (st.status == MAINT_OK) {
                        hook_env(env, &n, "SQLITE_MAINTD_PAGE_SIZE", "%u", st.after.page_size);
                        hook_env(env, &n, "SQLITE_MAINTD_PAGE_COUNT", "%llu", (unsigned long long)st.after.page_count);
                        hook_env(env, &n, "SQLITE_MAINTD_FREELIST_COUNT", "%llu",
                                 (unsigned long long)st.after.freelist_count);
                        hook_env(env, &n, "SQLITE_MAINTD_FRAGMENTATION_PERCENT", "%.2f",
                                 st.after.fragmentation_percent);
                        hook_env(env, &n, "SQLITE_MAINTD_FILE_SIZE_BYTES", "%llu",
                                 (unsigned long long)st.after.file_size_bytes);
                        hook_env(env, &n, "SQLITE_MAINTD_WAL_SIZE_BYTES", "%llu",
                                 (unsigned long long)st.after.wal_size_bytes);
                }
                maint_result_clear(&st);
                rc = run_hook(sp, o, o->before_vacuum, MAINT_PHASE_BEFORE_HOOK, env, n, why, sizeof(why));
                if (rc == -ECANCELED)
                        refuse(r, MAINT_INTERRUPTED, "stopped during before_vacuum %s; the database is untouched",
                               o->before_vacuum);
                if (rc != 0) {
                        refuse(r, MAINT_HOOK_REFUSED, "before_vacuum %s: %s; VACUUM skipped", o->before_vacuum, why);
                        return;
                }
        }
        if (sp->op == MAINT_OP_VACUUM)
                maint_vacuum(sp->name, o, &child_cancel, r);
        else
                maint_incremental_vacuum(sp->name, o, &child_cancel, r);
        if (o->before_vacuum[0])
                r->duration_ms = util_monotonic_ms() - t0;
        if (!o->after_vacuum[0])
                return;
        n = 0;
        hook_env(env, &n, "SQLITE_MAINTD_OPERATION", "%s", maint_op_name(sp->op));
        hook_env(env, &n, "SQLITE_MAINTD_RESULT", "%s", maint_status_name(r->status));
        hook_env(env, &n, "SQLITE_MAINTD_BYTES_RECLAIMED", "%llu", (unsigned long long)r->bytes_reclaimed);
        if (r->have_after)
                hook_env(env, &n, "SQLITE_MAINTD_FRAGMENTATION_PERCENT", "%.2f", r->after.fragmentation_percent);
        rc = run_hook(sp, o, o->after_vacuum, MAINT_PHASE_AFTER_HOOK, env, n, why, sizeof(why));
        if (rc != 0) { /* the VACUUM's result stands; the hook's failure is told with it */
                size_t k = strlen(r->message);

                snprintf(r->message + k, sizeof(r->message) - k, "%safter_vacuum %s: %s", k ? "; " : "",
                         o->after_vacuum, why);
        }
        r->duration_ms = util_monotonic_ms() - t0; /* the job's, its hooks included */
}

int jobproc_child_main(void)
{
        struct maint_result r = { .status = MAINT_OK };
        struct maint_opts o;
        struct spec sp;
        pthread_t t;
        sigset_t all;
        char why[256];

        sigemptyset(&all);
        pthread_sigmask(SIG_SETMASK, &all, NULL);
        if (read_full(STDIN_FILENO, &sp, sizeof(sp)) < 0 || sp.magic != SPEC_MAGIC || sp.size != sizeof(sp) ||
            sp.n_baselines > MAX_BASELINES)
                _exit(1);
        sp.name[sizeof(sp.name) - 1] = sp.display[sizeof(sp.display) - 1] = '\0';
        if (sp.n_baselines) {
                child_baselines = calloc(sp.n_baselines, sizeof(*child_baselines));
                if (!child_baselines ||
                    read_full(STDIN_FILENO, child_baselines, sp.n_baselines * sizeof(*child_baselines)) < 0)
                        _exit(1);
                child_n_baselines = sp.n_baselines;
        }
        close(STDIN_FILENO);
        if (become(&sp, why, sizeof(why)) < 0)
                refuse(&r, MAINT_ERROR, "%s", why);
        if (fchdir(CHILD_DIR_FD) < 0)
                refuse(&r, MAINT_PERMISSION, "cannot enter the database's directory: %s", strerror(errno));
        close(CHILD_DIR_FD);
        check_files(&sp, &r);

        child_timeout_ms = sp.timeout_ms;
        if (maint_cancel_init(&child_cancel) < 0 || pthread_create(&t, NULL, watch, NULL) != 0)
                refuse(&r, MAINT_ERROR, "cannot start the job's watch");
        if (maint_init() < 0 || dirvfs_register() < 0)
                refuse(&r, MAINT_ERROR, "cannot initialize SQLite");
        o = sp.opts;
        o.display_path = sp.display;
        o.analyze_baseline = child_baseline;
        o.analyze_baseline_userdata = NULL;
        o.phase = child_phase;
        switch (sp.op) {
        case MAINT_OP_STATS: maint_stats(sp.name, &o, &r); break;
        case MAINT_OP_VACUUM: with_hooks(&sp, &o, &r); break;
        case MAINT_OP_ANALYZE: maint_analyze(sp.name, &o, &child_cancel, &r); break;
        case MAINT_OP_CHECK: maint_check(sp.name, &o, &child_cancel, &r); break;
        case MAINT_OP_INCREMENTAL_VACUUM: with_hooks(&sp, &o, &r); break;
        case MAINT_OP_CHECKPOINT: maint_checkpoint(sp.name, &o, &child_cancel, &r); break;
        case MAINT_OP_DEEP_SCAN: maint_deep_scan(sp.name, &o, &child_cancel, &r); break;
        default: refuse(&r, MAINT_ERROR, "unknown operation %d", (int)sp.op);
        }
        /* interrupted by the time limit: said as such (the operation
         * itself only saw SQLITE_INTERRUPT) */
        if (r.status == MAINT_INTERRUPTED && atomic_load(&child_timed_out)) {
                r.status = MAINT_TIMEOUT;
                snprintf(r.message, sizeof(r.message), "stopped at its time limit of %s; the database is intact "
                         "(SQLite's crash safety)", conf_format_duration(sp.timeout_ms, (char[32]){ 0 }, 32));
        }
        answer(&r);
}

/* ---- the parent ------------------------------------------------------------ */

static void reap_strays(void)
{
        pthread_mutex_lock(&stray_lock);
        for (size_t i = 0; i < n_strays;) {
                if (waitpid(strays[i], NULL, WNOHANG) != 0)
                        strays[i] = strays[--n_strays];
                else
                        i++;
        }
        pthread_mutex_unlock(&stray_lock);
}

static void add_stray(pid_t pid)
{
        pthread_mutex_lock(&stray_lock);
        if (n_strays < ELEMENTSOF(strays))
                strays[n_strays++] = pid;
        pthread_mutex_unlock(&stray_lock);
}

static int make_pipe(int p[2])
{
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        p[0] = high_fd(p[0]);
        p[1] = high_fd(p[1]);
        return p[0] < 0 || p[1] < 0 ? -EMFILE : 0;
}

static enum maint_status set(struct maint_result *r, enum maint_status s, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static enum maint_status set(struct maint_result *r, enum maint_status s, const char *fmt, ...)
{
        va_list ap;

        r->status = s;
        va_start(ap, fmt);
        vsnprintf(r->message, sizeof(r->message), fmt, ap);
        va_end(ap);
        return s;
}

/* The file as this process sees it now: who the job runs as. */
static enum maint_status look(const struct jobproc_request *req, struct spec *sp, struct maint_result *r)
{
        struct stat st;

        if (fstatat(req->dirfd, req->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return set(r, MAINT_MISSING, "no such file");
                return set(r, errno == EACCES ? MAINT_PERMISSION : MAINT_IOERR, "cannot look up the file: %s",
                           strerror(errno));
        }
        if (S_ISLNK(st.st_mode))
                return set(r, MAINT_PERMISSION, "is a symbolic link; configure the real path instead");
        if (!S_ISREG(st.st_mode))
                return set(r, MAINT_NOTADB, "not a regular file (%s)", kind_of(st.st_mode));
        sp->switch_user = geteuid() == 0;
        sp->uid = st.st_uid;
        sp->gid = st.st_gid;
        sp->dev = st.st_dev;
        sp->ino = st.st_ino;
        return MAINT_OK;
}

/* Wait for the answer: read it as it comes, pass a stop request on, give
 * the child its time limit and grace, then up. */
/* Whether process pid is stopped by a signal (SIGSTOP, SIGTSTP: state T
 * in /proc/PID/stat, after the parenthesized name). A tracer's stop (t) is
 * not counted: the owner cannot trace the job (it is not dumpable), and a
 * debugger root attached means it. */
static bool stopped_process(pid_t pid)
{
        char path[64], buf[512], *close_paren;
        ssize_t n;
        int fd;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return false;
        buf[n] = '\0';
        close_paren = strrchr(buf, ')');
        return close_paren && close_paren[1] == ' ' && close_paren[2] == 'T';
}

/* How long a job process that closed its answer, or was killed, gets to end. */
#define REAP_WAIT_MS 1000

/* Reaps pid if it ends within ms: true with its status. A pidfd (Linux
 * 5.3, pidfd_open(2)) wakes poll() the moment it ends; without one, naps of
 * 1 ms doubling to 50 ms. */
static bool reaped_within(pid_t pid, int *status, int ms)
{
        int fd = (int)syscall(SYS_pidfd_open, pid, 0);
        uint64_t end = now_ms() + (uint64_t)ms;
        bool done = false;

        for (int nap = 1;; nap = nap < 50 ? nap * 2 : 50) {
                uint64_t now;

                if (waitpid(pid, status, WNOHANG) == pid) {
                        done = true;
                        break;
                }
                now = now_ms();
                if (now >= end)
                        break;
                /* ended but not ours to reap yet (a debugger traces it):
                 * the pidfd stays readable, so naps from here on */
                if (fd >= 0 && poll(&(struct pollfd){ .fd = fd, .events = POLLIN }, 1, (int)(end - now)) > 0) {
                        if (waitpid(pid, status, WNOHANG) == pid) {
                                done = true;
                                break;
                        }
                        close(fd);
                        fd = -1;
                }
                if (fd < 0)
                        util_sleep_ms((uint64_t)nap < end - now ? (uint64_t)nap : end - now);
        }
        if (fd >= 0)
                close(fd);
        return done;
}

/* The phases the child said, the last one into *phase (when not NULL). */
static void take_progress(int fd, _Atomic int *phase)
{
        unsigned char p[64];
        ssize_t k = read(fd, p, sizeof(p));

        if (k > 0 && phase && p[k - 1] <= MAINT_PHASE_AFTER_HOOK)
                atomic_store(phase, p[k - 1]);
}

static void supervise(pid_t pid, int res_fd, int ctl_fd, int prog_fd, const struct jobproc_request *req,
                      struct maint_cancel *cancel, struct buf *b, bool *eof, bool *stopped)
{
        uint64_t start = now_ms(), give_up = start + req->timeout_ms + JOBPROC_GRACE_MS + PARENT_SLACK_MS;
        _Atomic int local = MAINT_PHASE_NONE, *phase = req->phase ? req->phase : &local;
        bool stop_sent = false;

        *eof = *stopped = false;
        while (!*eof) {
                struct pollfd p[2] = { { .fd = res_fd, .events = POLLIN }, { .fd = prog_fd, .events = POLLIN } };
                uint64_t now = now_ms();
                char chunk[65536];
                ssize_t k;

                /* A job its owner stopped (SIGSTOP) would hold its slot until
                 * the time limit: it is done for, now. */
                if (stopped_process(pid)) {
                        *stopped = true;
                        return;
                }
                if (cancel && !stop_sent && atomic_load(&cancel->requested)) {
                        (void)!write(ctl_fd, "s", 1);
                        stop_sent = true;
                        give_up = now + JOBPROC_GRACE_MS + PARENT_SLACK_MS;
                }
                if (now >= give_up)
                        return;
                if (req->tick)
                        req->tick(req->tick_userdata, atomic_load(phase), now - start);
                if (poll(p, prog_fd >= 0 ? 2 : 1, POLL_SLICE_MS) <= 0)
                        continue;
                if (p[1].revents & POLLIN)
                        take_progress(prog_fd, phase);
                else if (p[1].revents) /* its end closed (the child gone): not asked again */
                        prog_fd = -1;
                if (!p[0].revents)
                        continue;
                k = read(res_fd, chunk, sizeof(chunk));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0) {
                        *eof = true;
                        break;
                }
                if (b->n + (size_t)k > MAX_RESULT_BYTES)
                        return; /* not an answer this code would write */
                put(b, chunk, (size_t)k);
        }
}

/* What the child is told: the request, without its pointers (another
 * process), after look() has said who it runs as. */
static void fill_spec(const struct jobproc_request *req, struct spec *sp)
{
        sp->magic = SPEC_MAGIC;
        sp->size = sizeof(*sp);
        sp->parent = getpid();
        sp->op = req->op;
        sp->opts = *req->opts;
        sp->opts.analyze_baseline = NULL;
        sp->opts.analyze_baseline_userdata = NULL;
        sp->opts.display_path = NULL;
        sp->opts.phase = NULL;
        sp->timeout_ms = req->timeout_ms;
        sp->n_baselines = req->n_baselines > MAX_BASELINES ? MAX_BASELINES : (uint32_t)req->n_baselines;
        util_strlcpy(sp->name, req->name, sizeof(sp->name));
        util_strlcpy(sp->display, req->display_path, sizeof(sp->display));
}

/* Fork and exec the job process, the pipes' ends and the directory on
 * its fds 0..4: its pid, or -1 with errno. */
static pid_t start_child(int dir, const int spec_p[2], const int res_p[2], const int ctl_p[2], const int prog_p[2])
{
        static char *const argv[] = { (char *)"sqlite-maintd-job", (char *)JOBPROC_ARG, NULL };
        pid_t pid = fork();

        if (pid == 0) {
                /* Only async-signal-safe calls until exec: this process may
                 * have had other threads. */
                if (dup2(spec_p[0], STDIN_FILENO) < 0 || dup2(res_p[1], STDOUT_FILENO) < 0 ||
                    dup2(dir, CHILD_DIR_FD) < 0 || dup2(ctl_p[0], CHILD_CONTROL_FD) < 0 ||
                    dup2(prog_p[1], CHILD_PROGRESS_FD) < 0 || dup3(exe_fd, CHILD_EXE_FD, O_CLOEXEC) < 0)
                        _exit(127);
                syscall(SYS_close_range, CHILD_EXE_FD + 1, ~0U, 0);
                syscall(SYS_execveat, CHILD_EXE_FD, "", argv, child_env, AT_EMPTY_PATH);
                _exit(127);
        }
        return pid;
}

/* Reap the child, killed if it lingers past REAP_WAIT_MS, left to
 * reap_strays() if even that does not end it: whether it was reaped
 * (status set), and *killed if a SIGKILL went. */
static bool end_child(pid_t pid, int *status, bool *killed)
{
        bool exited = reaped_within(pid, status, REAP_WAIT_MS);

        if (!exited) {
                /* past its limit and the grace, still there (stopped by its
                 * owner, stuck in the kernel): killed (the daemon's
                 * CAP_KILL), reaped later if it lingers in the kernel */
                *killed = kill(pid, SIGKILL) == 0;
                exited = reaped_within(pid, status, REAP_WAIT_MS);
        }
        if (!exited)
                add_stray(pid);
        return exited;
}

/* No answer came: why, from how the child ended. */
static void explain_no_answer(struct maint_result *r, uint64_t timeout_ms, int status, bool halted, bool stopped,
                              bool exited, bool killed)
{
        if (halted)
                /* as if it ran out of time: held back the same way */
                set(r, MAINT_TIMEOUT, "the job process was stopped by a signal (its owner may send it one): "
                    "killed at once, so that it holds no job slot; the database is intact (SQLite's crash "
                    "safety)");
        else if (!exited || killed)
                set(r, stopped ? MAINT_INTERRUPTED : MAINT_TIMEOUT, "the job did not end %llu ms after %s (its "
                    "owner may have stopped it): killed%s; the database is intact (SQLite's crash safety)",
                    (unsigned long long)(JOBPROC_GRACE_MS + PARENT_SLACK_MS),
                    stopped ? "a stop request" : "its time limit", exited ? "" : ", not gone yet");
        else if (WIFEXITED(status) && WEXITSTATUS(status) == CHILD_EXIT_TIMEOUT)
                set(r, MAINT_TIMEOUT, "stopped after its time limit of %s; the database is intact (SQLite's "
                    "crash safety)", conf_format_duration(timeout_ms, (char[32]){ 0 }, 32));
        else if (WIFEXITED(status) && WEXITSTATUS(status) == CHILD_EXIT_STOPPED)
                set(r, MAINT_INTERRUPTED, "stopped on request before it could end cleanly; the database is intact");
        else if (WIFSIGNALED(status))
                set(r, MAINT_ERROR, "the job process was killed by signal %d (%s)", WTERMSIG(status),
                    strsignal(WTERMSIG(status)));
        else
                set(r, MAINT_ERROR, "the job process ended without an answer (exit status %d)",
                    WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

enum maint_status jobproc_run(const struct jobproc_request *req, struct maint_cancel *cancel,
                              struct maint_result *r)
{
        int spec_p[2] = { -1, -1 }, res_p[2] = { -1, -1 }, ctl_p[2] = { -1, -1 }, prog_p[2] = { -1, -1 }, dir = -1;
        int status = 0;
        struct buf b = { 0 };
        struct spec sp;
        bool eof = false, exited = false, killed = false, stopped, halted;
        pid_t pid;

        maint_result_clear(r);
        reap_strays();
        if (exe_fd < 0)
                return set(r, MAINT_ERROR, "job processes are not set up (jobproc_init)");
        memset(&sp, 0, sizeof(sp));
        if (look(req, &sp, r) != MAINT_OK)
                return r->status;
        fill_spec(req, &sp);

        dir = fcntl(req->dirfd, F_DUPFD_CLOEXEC, 10);
        if (dir < 0 || make_pipe(spec_p) < 0 || make_pipe(res_p) < 0 || make_pipe(ctl_p) < 0 ||
            make_pipe(prog_p) < 0) {
                set(r, MAINT_ERROR, "cannot set up a job process: %s", strerror(errno));
                goto out;
        }
        pid = start_child(dir, spec_p, res_p, ctl_p, prog_p);
        if (pid < 0) {
                set(r, MAINT_ERROR, "cannot start a job process: %s", strerror(errno));
                goto out;
        }
        close(spec_p[0]);
        close(res_p[1]);
        close(ctl_p[0]);
        close(prog_p[1]);
        spec_p[0] = res_p[1] = ctl_p[0] = prog_p[1] = -1;
        /* a child that died before reading: EPIPE (SIGPIPE is ignored) */
        if (write_full(spec_p[1], &sp, sizeof(sp)) == 0 && sp.n_baselines)
                (void)write_full(spec_p[1], req->baselines, sp.n_baselines * sizeof(*req->baselines));
        close(spec_p[1]);
        spec_p[1] = -1;

        supervise(pid, res_p[0], ctl_p[1], prog_p[0], req, cancel, &b, &eof, &halted);
        if (halted)
                killed = kill(pid, SIGKILL) == 0;
        stopped = cancel && atomic_load(&cancel->requested);
        /* End of file on the control pipe: the child ends itself at once. */
        close(ctl_p[1]);
        ctl_p[1] = -1;
        exited = end_child(pid, &status, &killed);
        if (eof && !b.oom && decode_result(b.p, b.n, r))
                goto out;
        maint_result_clear(r);
        explain_no_answer(r, req->timeout_ms, status, halted, stopped, exited, killed);
out:
        free(b.p);
        for (int *fd = (int[]){ spec_p[0], spec_p[1], res_p[0], res_p[1], ctl_p[0], ctl_p[1], prog_p[0], prog_p[1],
                                dir, -2 };
             *fd != -2; fd++)
                if (*fd >= 0)
                        close(*fd);
        return r->status;
}
