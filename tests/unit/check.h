/* SPDX-License-Identifier: MIT */
/* A minimal test harness (plain lines, not TAP): CHECK() records a failure
 * and goes on; test_summary() prints "N passed, N failed" and returns the
 * exit status. */
#pragma once

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static unsigned test_passed, test_failed;

/* Counts one check; on a failure, starts its line on stderr (the caller
 * ends it). Returns ok. */
static inline bool check_record(bool ok, const char *file, int line, const char *expr)
{
        if (ok) {
                test_passed++;
                return true;
        }
        test_failed++;
        fprintf(stderr, "%s:%d: FAIL: %s", file, line, expr);
        return false;
}

#define CHECK(cond)                                                            \
        do {                                                                   \
                if (!check_record((cond), __FILE__, __LINE__, #cond))          \
                        fputc('\n', stderr);                                   \
        } while (0)

#define CHECK_MSG(cond, ...)                                                   \
        do {                                                                   \
                if (!check_record((cond), __FILE__, __LINE__, #cond)) {        \
                        fputs(": ", stderr);                                   \
                        fprintf(stderr, __VA_ARGS__);                          \
                        fputc('\n', stderr);                                   \
                }                                                              \
        } while (0)

#define CHECK_STREQ(a, b)                                                      \
        CHECK_MSG(strcmp((a), (b)) == 0, "\"%s\" != \"%s\"", (a), (b))

static inline int test_summary(void)
{
        printf("%u passed, %u failed\n", test_passed, test_failed);
        return test_failed ? 1 : 0;
}
