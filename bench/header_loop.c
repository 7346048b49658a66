/* SPDX-License-Identifier: MIT */
/* header_loop: the reference a poll is measured against (bench/poll-scale.py):
 * every regular file of DIR whose name ends in SUFFIX, its first 100 bytes
 * read with open(), pread() and close(), nothing else. The names come from
 * one readdir() pass, as the daemon's walk does; each file's read is the
 * bare minimum any header reader makes. Prints one line of JSON: files
 * read, and the process's user and system CPU in microseconds (getrusage),
 * for the whole run and for the read loop alone. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static uint64_t cpu_us(void)
{
        struct rusage ru;

        getrusage(RUSAGE_SELF, &ru);
        return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
               (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

int main(int argc, char **argv)
{
        unsigned char h[100];
        char **names = NULL;
        size_t n = 0, cap = 0, ok = 0, k;
        struct dirent *de;
        uint64_t loop0;
        DIR *d;
        int dfd;

        if (argc != 3) {
                fprintf(stderr, "usage: %s DIR SUFFIX\n", argv[0]);
                return 2;
        }
        d = opendir(argv[1]);
        if (!d) {
                perror(argv[1]);
                return 1;
        }
        dfd = dirfd(d);
        k = strlen(argv[2]);
        while ((de = readdir(d))) {
                size_t len = strlen(de->d_name);

                if (de->d_type != DT_REG || len < k || strcmp(de->d_name + len - k, argv[2]) != 0)
                        continue;
                if (n == cap) {
                        cap = cap ? 2 * cap : 1024;
                        names = realloc(names, cap * sizeof(*names));
                        if (!names)
                                return 1;
                }
                names[n++] = strdup(de->d_name);
        }
        loop0 = cpu_us();
        for (size_t i = 0; i < n; i++) {
                int fd = openat(dfd, names[i], O_RDONLY | O_CLOEXEC);

                if (fd < 0)
                        continue;
                if (pread(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h))
                        ok++;
                close(fd);
        }
        printf("{\"files\": %zu, \"read\": %zu, \"cpu_us\": %" PRIu64 ", \"loop_cpu_us\": %" PRIu64 "}\n", n, ok,
               cpu_us(), cpu_us() - loop0);
        closedir(d);
        return 0;
}
