/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

int64_t util_wall_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t util_monotonic_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void util_sleep_ms(uint64_t ms)
{
        struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

int util_absolute_path(const char *path, char **ret)
{
        char *cwd, *s;
        size_t n;

        if (!path || !*path)
                return -EINVAL;
        if (path[0] == '/') {
                s = strdup(path);
                if (!s)
                        return -ENOMEM;
                *ret = s;
                return 0;
        }
        cwd = getcwd(NULL, 0);
        if (!cwd)
                return -errno;
        n = strlen(cwd) + 1 + strlen(path) + 1;
        s = malloc(n);
        if (!s) {
                free(cwd);
                return -ENOMEM;
        }
        snprintf(s, n, "%s%s%s", cwd, strcmp(cwd, "/") == 0 ? "" : "/", path);
        free(cwd);
        *ret = s;
        return 0;
}

const char *util_format_approx(uint64_t ms, char *buf, size_t len)
{
        uint64_t s = (ms + 500) / 1000, min = (s + 30) / 60;

        if (ms < 1000)
                snprintf(buf, len, "%llu ms", (unsigned long long)ms);
        else if (s < 90)
                snprintf(buf, len, "%llu s", (unsigned long long)s);
        else if (min < 90)
                snprintf(buf, len, "%llu min", (unsigned long long)min);
        else
                snprintf(buf, len, "%llu h %llu min", (unsigned long long)(min / 60), (unsigned long long)(min % 60));
        return buf;
}

const char *util_format_bytes(uint64_t bytes, char *buf, size_t len)
{
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
        double v = (double)bytes;
        size_t u = 0;

        while (v >= 1024.0 && u + 1 < ELEMENTSOF(units)) {
                v /= 1024.0;
                u++;
        }
        if (u == 0)
                snprintf(buf, len, "%llu B", (unsigned long long)bytes);
        else
                snprintf(buf, len, "%.1f %s", v, units[u]);
        return buf;
}

void util_strlcpy(char *dst, const char *src, size_t len)
{
        if (len == 0)
                return;
        snprintf(dst, len, "%s", src ? src : "");
}

int file_id_get(const char *path, struct file_id *ret)
{
        struct stat st;

        if (lstat(path, &st) < 0)
                return -errno;
        *ret = (struct file_id){ st.st_dev, st.st_ino, st.st_size, st.st_mtim };
        return 0;
}

int file_id_at(int dirfd, const char *name, struct file_id *ret)
{
        struct stat st;

        if (dirfd < 0)
                return -ENOENT;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        *ret = (struct file_id){ st.st_dev, st.st_ino, st.st_size, st.st_mtim };
        return 0;
}

bool file_id_equal(const struct file_id *a, const struct file_id *b)
{
        return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
               a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* The length of the well-formed UTF-8 sequence at p (1..4), 0 if none. */
static size_t utf8_len(const unsigned char *p, uint32_t *cp)
{
        size_t n;
        uint32_t c;

        if (p[0] < 0x80) {
                *cp = p[0];
                return 1;
        }
        if (p[0] >= 0xc2 && p[0] <= 0xdf) {
                n = 2;
                c = p[0] & 0x1f;
        } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
                n = 3;
                c = p[0] & 0x0f;
        } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
                n = 4;
                c = p[0] & 0x07;
        } else {
                return 0;
        }
        for (size_t i = 1; i < n; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                c = c << 6 | (p[i] & 0x3f);
        }
        /* overlong forms, surrogates, past U+10FFFF */
        if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10ffff)) || (c >= 0xd800 && c <= 0xdfff))
                return 0;
        *cp = c;
        return n;
}

bool util_terminal_unsafe(uint32_t c)
{
        return c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f) || c == 0x061c || c == 0x200e || c == 0x200f ||
               c == 0x2028 || c == 0x2029 || (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

static bool needs_escape(uint32_t c)
{
        return c == '\\' || util_terminal_unsafe(c);
}

char *util_escape(const char *in, char *out, size_t len)
{
        const unsigned char *p = (const unsigned char *)(in ? in : "");
        size_t k = 0;

        if (len == 0)
                return out;
        while (*p) {
                char buf[32];
                size_t n, m = 0;
                uint32_t c = 0;

                n = utf8_len(p, &c);
                if (n == 0) {
                        m = (size_t)snprintf(buf, sizeof(buf), "\\x%02x", p[0]);
                        n = 1;
                } else if (!needs_escape(c)) {
                        memcpy(buf, p, n);
                        m = n;
                } else if (c == '\n' || c == '\t' || c == '\r' || c == '\\') {
                        m = (size_t)snprintf(buf, sizeof(buf), "\\%c", c == '\n' ? 'n' : c == '\t' ? 't' :
                                                                         c == '\r' ? 'r' : '\\');
                } else {
                        for (size_t i = 0; i < n; i++)
                                m += (size_t)snprintf(buf + m, sizeof(buf) - m, "\\x%02x", p[i]);
                }
                if (k + m + 4 > len) {
                        /* room for "..." and the NUL */
                        if (len >= 4) {
                                k = k + 3 < len ? k : len - 4;
                                memcpy(out + k, "...", 3);
                                k += 3;
                        }
                        break;
                }
                memcpy(out + k, buf, m);
                k += m;
                p += n;
        }
        out[k < len ? k : len - 1] = '\0';
        return out;
}

/* The kernel's form of a POSIX ACL in the system.posix_acl_access
 * attribute (linux/posix_acl_xattr.h): a version, then entries of a tag,
 * permissions and an id, little-endian. */
#define ACL_XATTR "system.posix_acl_access"
#define ACL_XATTR_VERSION 2
#define ACL_TAG_USER 0x02
#define ACL_TAG_GROUP_OBJ 0x04
#define ACL_TAG_GROUP 0x08
#define ACL_TAG_MASK 0x10
#define ACL_PERM_WRITE 0x02

static uint32_t le(const unsigned char *p, int n)
{
        uint32_t v = 0;

        for (int i = n - 1; i >= 0; i--)
                v = v << 8 | p[i];
        return v;
}

int util_acl_writer(const char *path, uid_t uid_ok, gid_t gid_ok, gid_t file_gid, char *who, size_t len)
{
        unsigned char buf[4 + 8 * 64];
        ssize_t n = lgetxattr(path, ACL_XATTR, buf, sizeof(buf));
        bool mask_w = true;

        if (n < 0)
                return errno == ENODATA || errno == ENOTSUP ? 0 : errno == ERANGE ? 1 : -errno;
        if (n < 4 || le(buf, 4) != ACL_XATTR_VERSION || (n - 4) % 8)
                return 1; /* not a form this code reads: as if it let someone write */
        for (ssize_t i = 4; i < n; i += 8)
                if (le(buf + i, 2) == ACL_TAG_MASK)
                        mask_w = le(buf + i + 2, 2) & ACL_PERM_WRITE;
        for (ssize_t i = 4; mask_w && i < n; i += 8) {
                uint32_t tag = le(buf + i, 2), perm = le(buf + i + 2, 2), id = le(buf + i + 4, 4);

                if (!(perm & ACL_PERM_WRITE))
                        continue;
                if (tag == ACL_TAG_USER && id != 0 && id != uid_ok) {
                        snprintf(who, len, "user %u (an ACL entry)", (unsigned)id);
                        return 1;
                }
                if ((tag == ACL_TAG_GROUP && id != 0 && id != gid_ok) ||
                    (tag == ACL_TAG_GROUP_OBJ && file_gid != 0 && file_gid != gid_ok)) {
                        snprintf(who, len, "group %u (an ACL entry)", (unsigned)(tag == ACL_TAG_GROUP ? id : file_gid));
                        return 1;
                }
        }
        return 0;
}

/* One element of util_trusted_path's walk. */
static int trusted_one(const char *p, const struct stat *st, bool child_owned_ok, char *why, size_t len)
{
        uid_t me = geteuid();
        bool sticky = S_ISDIR(st->st_mode) && (st->st_mode & S_ISVTX);
        char who[64] = "";

        if (st->st_uid != 0 && st->st_uid != me) {
                snprintf(why, len, "%s belongs to user %u, not root (mode %04o)", p, (unsigned)st->st_uid,
                         (unsigned)(st->st_mode & 07777));
                return -EPERM;
        }
        if ((st->st_mode & S_IWOTH) && !(sticky && child_owned_ok)) {
                snprintf(why, len, "%s is writable by every user (owner %u, mode %04o)", p, (unsigned)st->st_uid,
                         (unsigned)(st->st_mode & 07777));
                return -EPERM;
        }
        if ((st->st_mode & S_IWGRP) && st->st_gid != 0 && !(sticky && child_owned_ok)) {
                snprintf(why, len, "%s is writable by group %u (owner %u, mode %04o)", p, (unsigned)st->st_gid,
                         (unsigned)st->st_uid, (unsigned)(st->st_mode & 07777));
                return -EPERM;
        }
        if (!(sticky && child_owned_ok) && util_acl_writer(p, me, 0, st->st_gid, who, sizeof(who)) != 0) {
                snprintf(why, len, "%s is writable by %s (owner %u, mode %04o)", p, who[0] ? who : "someone "
                         "its ACL names", (unsigned)st->st_uid, (unsigned)(st->st_mode & 07777));
                return -EPERM;
        }
        return 0;
}

/* Each directory of path as written (a symbolic link in it is the
 * directory's to replace), stat()ed as the kernel walks it; and each
 * symbolic link on the way, whose owner can point it elsewhere whatever
 * its directory (a sticky one included): root's or ours. */
static int trusted_as_written(const char *path, char *why, size_t len)
{
        char p[PATH_MAX];
        struct stat st;
        size_t n;
        int r;

        if (path[0] == '/') {
                n = (size_t)snprintf(p, sizeof(p), "%s", path);
        } else {
                if (!getcwd(p, sizeof(p)))
                        return -errno;
                n = strlen(p);
                n += (size_t)snprintf(p + n, sizeof(p) - n, "/%s", path);
        }
        if (n >= sizeof(p))
                return -ENAMETOOLONG;
        for (char *slash = strchr(p + 1, '/');; slash = slash ? strchr(slash + 1, '/') : NULL) {
                char c = slash ? *slash : '\0';

                if (slash)
                        *slash = '\0';
                r = lstat(p, &st) < 0 ? -errno : 0;
                if (r == 0 && S_ISLNK(st.st_mode) && st.st_uid != 0 && st.st_uid != geteuid()) {
                        snprintf(why, len, "%s is a symbolic link that user %u can point elsewhere", p,
                                 (unsigned)st.st_uid);
                        r = -EPERM;
                }
                if (r == 0 && slash)
                        r = stat(p, &st) < 0 ? -errno : trusted_one(p, &st, true, why, len);
                if (slash)
                        *slash = c;
                if (r == 0 && !slash)
                        return 0;
                if (r == -ENOENT)
                        return 0; /* realpath() says it */
                if (r < 0) {
                        if (r != -EPERM)
                                snprintf(why, len, "%s: %s", p, strerror(-r));
                        return r;
                }
        }
}

static int trusted_walk(const char *path, bool parent_only, char *why, size_t len)
{
        char real[PATH_MAX], *slash;
        struct stat st;
        int r;

        r = trusted_as_written(path, why, len);
        if (r < 0)
                return r;
        if (!realpath(path, real)) {
                r = -errno;
                snprintf(why, len, "%s: %s", path, strerror(errno));
                return r;
        }
        /* the entry itself, then each directory up to / */
        for (bool first = !parent_only;; first = false) {
                if (lstat(real, &st) < 0) {
                        r = -errno;
                        snprintf(why, len, "%s: %s", real, strerror(errno));
                        return r;
                }
                /* an entry below is owned by root or us (checked just
                 * before), so a sticky directory cannot lose it */
                r = trusted_one(real, &st, !first, why, len);
                if (r < 0)
                        return r;
                if (strcmp(real, "/") == 0)
                        return 0;
                slash = strrchr(real, '/');
                if (slash == real)
                        slash[1] = '\0';
                else
                        *slash = '\0';
        }
}

int util_trusted_path(const char *path, char *why, size_t len)
{
        return trusted_walk(path, false, why, len);
}

int util_trusted_parent(const char *dir, char *why, size_t len)
{
        return trusted_walk(dir, true, why, len);
}

/* Most symbolic links one path may go through (as the kernel's MAXSYMLINKS). */
#define OPEN_DIR_MAX_LINKS 40

/* util_open_dir_trusted_links()'s walk: what is still to walk below its
 * fd, components separated by '/': rest points into buf[cur]; a link's
 * target and what was left go to the other buffer. */
struct dir_walk {
        char buf[2][PATH_MAX * 2];
        char *rest;
        int cur, links;
};

/* The symbolic link comp in fd, owned by owner, followed: its target and
 * the rest become the walk's rest. Returns the fd to go on from (fd, or /
 * for an absolute target) or -errno with fd closed; a link another user
 * can point elsewhere is refused. */
static int follow_link(struct dir_walk *w, int fd, const char *dir, const char *comp, uid_t owner, char *why,
                       size_t len)
{
        char target[PATH_MAX];
        ssize_t k;
        int m;

        /* its owner can point it elsewhere at any time */
        if (owner != 0 && owner != geteuid()) {
                snprintf(why, len, "%s: %s is a symbolic link that user %u can point elsewhere: not "
                         "followed", dir, comp, (unsigned)owner);
                close(fd);
                return -ELOOP;
        }
        k = readlinkat(fd, comp, target, sizeof(target) - 1);
        if (k >= 0)
                target[k] = '\0';
        m = k < 0 ? -1 : snprintf(w->buf[!w->cur], sizeof(w->buf[!w->cur]), "%s%s%s", target,
                                 w->rest[0] ? "/" : "", w->rest);
        if (m < 0 || (size_t)m >= sizeof(w->buf[!w->cur]) || ++w->links > OPEN_DIR_MAX_LINKS) {
                snprintf(why, len, "%s: cannot follow %s", dir, comp);
                close(fd);
                return -ELOOP;
        }
        w->cur = !w->cur;
        w->rest = w->buf[w->cur];
        if (target[0] == '/') {
                close(fd);
                fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0)
                        return -errno;
        }
        return fd;
}

int util_open_dir_trusted_links(const char *dir, char *why, size_t len)
{
        struct dir_walk w = { .cur = 0, .links = 0 };
        int fd;

        if (dir[0] != '/' || strlen(dir) >= PATH_MAX) {
                snprintf(why, len, "%s: not an absolute path", dir);
                return -EINVAL;
        }
        snprintf(w.buf[w.cur], sizeof(w.buf[w.cur]), "%s", dir + 1);
        w.rest = w.buf[w.cur];
        fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        while (w.rest[0]) {
                char *slash = strchr(w.rest, '/'), comp[NAME_MAX + 1];
                size_t n = slash ? (size_t)(slash - w.rest) : strlen(w.rest);
                struct stat st;
                int next;

                if (n > NAME_MAX) {
                        close(fd);
                        snprintf(why, len, "%s: a name too long", dir);
                        return -ENAMETOOLONG;
                }
                memcpy(comp, w.rest, n);
                comp[n] = '\0';
                w.rest += n + (slash ? 1 : 0);
                if (n == 0 || strcmp(comp, ".") == 0)
                        continue;
                if (fstatat(fd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
                        fd = follow_link(&w, fd, dir, comp, st.st_uid, why, len);
                        if (fd < 0)
                                return fd;
                        continue;
                }
                next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                close(fd);
                if (next < 0) {
                        int e = errno;

                        snprintf(why, len, "cannot open its directory: %s", strerror(e));
                        return -e;
                }
                fd = next;
        }
        return fd;
}

int util_grow(void *p, size_t *cap, size_t need, size_t size, size_t first)
{
        size_t c = *cap ? *cap : first;
        void *v;

        if (need <= *cap)
                return 0;
        while (c < need) {
                if (c > SIZE_MAX / 2 / size)
                        return -ENOMEM;
                c *= 2;
        }
        /* through memcpy: p may point to any type of object pointer */
        memcpy(&v, p, sizeof(v));
        v = realloc(v, c * size);
        if (!v)
                return -ENOMEM;
        memcpy(p, &v, sizeof(v));
        *cap = c;
        return 0;
}
