/* SPDX-License-Identifier: MIT */
/* A minimal test harness (plain lines, not TAP): CHECK() records a failure
 * and goes on; test_summary() prints "N passed, N failed" and returns the
 * exit status. */
#pragma once

#include <stdio.h>
#include <string.h>

static unsigned test_passed, test_failed;

#define CHECK(cond)                                                            \
        do {                                                                   \
                if (cond) {                                                    \
                        test_passed++;                                         \
                } else {                                                       \
                        test_failed++;                                         \
                        fprintf(stderr, "%s:%d: FAIL: %s\n", __FILE__,         \
                                __LINE__, #cond);                              \
                }                                                              \
        } while (0)

#define CHECK_MSG(cond, ...)                                                   \
        do {                                                                   \
                if (cond) {                                                    \
                        test_passed++;                                         \
                } else {                                                       \
                        test_failed++;                                         \
                        fprintf(stderr, "%s:%d: FAIL: %s: ", __FILE__,         \
                                __LINE__, #cond);                              \
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
