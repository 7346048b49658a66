/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

uint64_t util_now_ms(void)
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

bool file_id_equal(const struct file_id *a, const struct file_id *b)
{
        return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
               a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}
