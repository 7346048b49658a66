/* SPDX-License-Identifier: MIT */
/* notify: what systemd is told through sd_notify (no-ops without NOTIFY_SOCKET). */
#pragma once

#include <stdint.h>

#include "log.h"

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);
void notify_watchdog(void);
void notify_status(const char *fmt, ...) LOG_PRINTF(1, 2);
/* The watchdog period systemd asks for, in microseconds; 0 when none. */
uint64_t notify_watchdog_usec(void);
