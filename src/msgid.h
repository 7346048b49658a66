/* SPDX-License-Identifier: MIT */
/* The MESSAGE_ID of each kind of journal entry. Fixed forever: admins
 * filter on them and systemd/sqlite-maintd.catalog explains each. */
#pragma once

/* the daemon started and loaded its configuration */
#define MSGID_STARTED "0be915dc793441edbacc85c5f9884222"
/* the daemon is stopping */
#define MSGID_STOPPING "ca14d59d88134ad5a3686c46e6823638"
/* a new configuration is in force */
#define MSGID_RELOADED "efd399acaa9847a0acab8b291edfeb78"
/* a reload was refused; the old configuration stays in force */
#define MSGID_RELOAD_FAILED "a183c199a9914c61a29b732396e84e31"
/* a database is now watched */
#define MSGID_DB_ADDED "e6fb8790c88448f28e1c0a6620c30f62"
/* a database vanished or left the configuration */
#define MSGID_DB_REMOVED "768c6bc0871b492ea95c0a3e4c979935"
/* maintenance was decided, with its reason */
#define MSGID_SCHEDULED "6388c62407314319b0d26c8a028afff7"
/* a VACUUM (or incremental vacuum) finished */
#define MSGID_VACUUM_DONE "ebbade7433164933ae7695227f02b6cd"
/* an ANALYZE finished */
#define MSGID_ANALYZE_DONE "80277b9d79884734be4b9751bef451d3"
/* a job met a lock and will retry after a backoff */
#define MSGID_RETRY "190b2cbf57aa4772a08850c8bb180c12"
/* a job met a lock on every attempt and gave up until the next poll */
#define MSGID_GAVE_UP "be686bea71e447a99feeb1e0b03392f7"
/* an integrity check failed; the database is not vacuumed */
#define MSGID_CORRUPT "1831ee3c8c5b4375bfcbe7225af3c3e3"
/* VACUUM refused for lack of free space */
#define MSGID_NO_SPACE "b9655cc4dead4b56b0a0a067e205c24e"
/* the database cannot be maintained (schema, function, mode) */
#define MSGID_CANNOT_MAINTAIN "2c6c84cefe10497498564823272a34db"
/* a job failed for another reason (I/O, permission, not a database) */
#define MSGID_JOB_FAILED "28144b3ae3c14b23af7556c9c4dbd46d"
/* the WAL could not be truncated after a VACUUM */
#define MSGID_CHECKPOINT_BUSY "7dc95f6fee714007807b41564f75ca13"
/* a VACUUM was refused: it would give some tables' rows new rowids */
#define MSGID_ROWID_GUARD "ed34d18b2d18427ba8510dcf8175c95d"
/* a -wal was checkpointed and truncated: its space is given back */
#define MSGID_CHECKPOINT_DONE "05760f3cca154835bd1c1dfab9e97b26"
/* a hot journal: left for the application (a read), or rolled back first (a job that writes) */
#define MSGID_HOT_JOURNAL "248fe34660be4d33807be1c4c5c505bc"
/* a path was not followed: a symbolic link below the admin's part of a configured path,
 * or an entry matched more databases than limits.max_matches */
#define MSGID_PATH_REFUSED "808904605c0b40caa73f78bc1008109a"
/* a deep scan's figures: unused bytes inside b-tree pages, non-sequential pages */
#define MSGID_DEEP_SCAN "4b58c314705647808ee71be92bce730f"
/* A running VACUUM entered a phase (PHASE, ELAPSED_MS, PROGRESS_PERCENT). */
#define MSGID_VACUUM_PROGRESS "1e710b361cc2484ca8dc9811b90ff93d"
/* A check asked for with sqlite-maintctl run check passed. */
#define MSGID_CHECK_DONE "3c433db09c9841abaaa7a57e931d8037"
