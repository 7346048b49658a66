/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "notify.h"
#include "util.h"

void notify_ready(void)
{
        sd_notify(0, "READY=1");
}

/* MONOTONIC_USEC lets Type=notify-reload (systemd 253+) match the reload
 * to its request; older systemd ignores it. */
void notify_reloading(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
                   (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000ull);
}

void notify_stopping(void)
{
        sd_notify(0, "STOPPING=1");
}

void notify_watchdog(void)
{
        sd_notify(0, "WATCHDOG=1");
}

/* STATUS= carries file names: escaped, so that none can end the line and
 * start another assignment (MAINPID=, WATCHDOG=trigger, STOPPING=1). */
void notify_status(const char *fmt, ...)
{
        static char last[512]; /* loop thread only */
        char raw[512], buf[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(raw, sizeof(raw), fmt, ap);
        va_end(ap);
        util_escape(raw, buf, sizeof(buf));
        if (strcmp(buf, last) == 0) /* called on every poll tick: say only what changed */
                return;
        memcpy(last, buf, sizeof(last));
        sd_notifyf(0, "STATUS=%s", buf);
}

uint64_t notify_watchdog_usec(void)
{
        uint64_t usec = 0;

        return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}
