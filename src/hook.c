/* SPDX-License-Identifier: MIT */
/* hook: a before/after command of a VACUUM (hook.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hook.h"
#include "util.h"

extern char **environ;

/* command split into argv (copied into buf): the number of words, or -1. */
static int split(const char *command, char *buf, size_t size, char *argv[HOOK_ARGS_MAX + 1])
{
        int n = 0;
        char *save = NULL;

        util_strlcpy(buf, command, size);
        for (char *w = strtok_r(buf, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
                if (n == HOOK_ARGS_MAX)
                        return -1;
                argv[n++] = w;
        }
        argv[n] = NULL;
        return n > 0 && argv[0][0] == '/' ? n : -1;
}

/* The caller's environment plus env, for execve(). */
static char **environment(char *const env[])
{
        size_t n = 0, k = 0;
        char **v;

        while (environ[n])
                n++;
        while (env[k])
                k++;
        v = calloc(n + k + 1, sizeof(*v));
        if (!v)
                return NULL;
        memcpy(v, environ, n * sizeof(*v));
        memcpy(v + n, env, k * sizeof(*v));
        return v;
}

static void child(int out, char *argv[], char **envp)
{
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

        setpgid(0, 0);
        /* the job process gone (killed at its limit), its hook goes too */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(out, STDERR_FILENO) < 0)
                _exit(127);
        /* nothing of the job process's own: its answer, control and progress pipes */
        syscall(SYS_close_range, 3, ~0U, 0);
        signal(SIGPIPE, SIG_DFL);
        execve(argv[0], argv, envp);
        dprintf(STDERR_FILENO, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
}

/* The last non-empty line of text (len bytes) into why. */
static void last_line(const char *text, size_t len, char *why, size_t why_len)
{
        size_t end = len, start;

        while (end > 0 && (text[end - 1] == '\n' || text[end - 1] == '\r'))
                end--;
        start = end;
        while (start > 0 && text[start - 1] != '\n')
                start--;
        snprintf(why, why_len, "%.*s", (int)(end - start), text + start);
}

/* Reads the hook's output until the hook exits (*status set; what it
 * started may still hold the pipe) or closes it, or the limit (monotonic
 * ms), or *stop: the tail kept. True when it ended by itself. */
static bool drain(int fd, pid_t pid, int *status, bool *reaped, uint64_t end, const atomic_bool *stop, char *tail,
                  size_t cap, size_t *len)
{
        char buf[4096];

        for (;;) {
                uint64_t now = util_monotonic_ms();
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t r;

                if (now >= end || (stop && atomic_load(stop)))
                        return false;
                if (!*reaped && waitpid(pid, status, WNOHANG) == pid)
                        *reaped = true;
                if (poll(&p, 1, *reaped ? 0 : (int)(end - now > 100 ? 100 : end - now)) <= 0) {
                        if (*reaped) /* exited, and nothing more to read now */
                                return true;
                        continue;
                }
                r = read(fd, buf, sizeof(buf));
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        return true;
                /* keep the last cap bytes */
                if ((size_t)r >= cap) {
                        memcpy(tail, buf + r - (ssize_t)cap, cap);
                        *len = cap;
                } else {
                        if (*len + (size_t)r > cap) {
                                memmove(tail, tail + (*len + (size_t)r - cap), cap - (size_t)r);
                                *len = cap - (size_t)r;
                        }
                        memcpy(tail + *len, buf, (size_t)r);
                        *len += (size_t)r;
                }
        }
}

int hook_run(const char *command, char *const env[], uint64_t timeout_ms, const atomic_bool *stop, char *why,
             size_t why_len)
{
        char words[1024], *argv[HOOK_ARGS_MAX + 1], **envp, tail[1024], line[512];
        size_t len = 0;
        int pipefd[2], status = 0;
        uint64_t end;
        bool ended, reaped = false;
        pid_t pid;

        snprintf(why, why_len, "not run");
        if (split(command, words, sizeof(words), argv) < 0) {
                snprintf(why, why_len, "not an absolute path and at most %d words", HOOK_ARGS_MAX);
                return -EINVAL;
        }
        /* it runs as this user (root for root's databases): a program
         * another user may change would run their code as this one */
        if (util_trusted_path(argv[0], line, sizeof(line)) < 0) {
                snprintf(why, why_len, "not run: %s", line);
                return -EPERM;
        }
        envp = environment(env);
        if (!envp || pipe2(pipefd, O_CLOEXEC) < 0) {
                free(envp);
                snprintf(why, why_len, "cannot start it: %s", strerror(errno));
                return -errno;
        }
        pid = fork();
        if (pid == 0)
                child(pipefd[1], argv, envp);
        free(envp);
        close(pipefd[1]);
        if (pid < 0) {
                close(pipefd[0]);
                snprintf(why, why_len, "cannot start it: %s", strerror(errno));
                return -EAGAIN;
        }
        setpgid(pid, pid); /* as the child does: whichever runs first */
        end = util_monotonic_ms() + timeout_ms;
        ended = drain(pipefd[0], pid, &status, &reaped, end, stop, tail, sizeof(tail), &len);
        close(pipefd[0]);
        /* its output closed, it may still run (it closed them itself) */
        while (ended && !reaped && waitpid(pid, &status, WNOHANG) == 0) {
                if (util_monotonic_ms() >= end || (stop && atomic_load(stop))) {
                        ended = false;
                        break;
                }
                nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
        }
        if (!ended && !reaped) {
                kill(-pid, SIGKILL);
                kill(pid, SIGKILL);
                while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                        ;
        }
        if (!ended && reaped) /* it exited; what it left did not let go in time */
                ended = true;
        /* what it left running in its group goes with it */
        kill(-pid, SIGKILL);
        last_line(tail, len, line, sizeof(line));
        if (!ended && stop && atomic_load(stop)) {
                snprintf(why, why_len, "killed: the job was asked to stop");
                return -ECANCELED;
        }
        if (!ended) {
                snprintf(why, why_len, "killed at its time limit%s%s", *line ? ": " : "", line);
                return -ETIMEDOUT;
        }
        if (WIFSIGNALED(status)) {
                snprintf(why, why_len, "killed by signal %d%s%s", WTERMSIG(status), *line ? ": " : "", line);
                return 128 + WTERMSIG(status);
        }
        snprintf(why, why_len, "exit status %d%s%s", WEXITSTATUS(status), *line ? ": " : "", line);
        return WEXITSTATUS(status);
}
