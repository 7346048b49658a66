/* SPDX-License-Identifier: MIT */
/* control: the daemon's control socket (docs/CONTROL.md). A Unix stream
 * socket: a client sends one request, a JSON object on one line, and
 * reads the reply until the daemon closes the connection: a JSON object
 * on one line, or, for "metrics", Prometheus's text format.
 *
 * Bounded against any client: a request is at most CONTROL_REQUEST_MAX
 * bytes and must arrive within CONTROL_READ_TIMEOUT_MS; a reply is made
 * in slices on the loop (CONTROL_PENDING_MAX bytes waiting to be written
 * at most: a client that does not read stops its production) and must be
 * taken within CONTROL_WRITE_TIMEOUT_MS of its last progress; at most
 * CONTROL_CONNECTIONS_MAX connections at once (one more is told so and
 * closed). Only root, the daemon's own user and members of the
 * configured group (the peer's credentials, SO_PEERCRED and
 * SO_PEERGROUPS, not only the file's mode) get an answer. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <uv.h>

#define CONTROL_REQUEST_MAX 4096          /* bytes, the newline included */
#define CONTROL_CONNECTIONS_MAX 16
#define CONTROL_READ_TIMEOUT_MS 5000u
#define CONTROL_WRITE_TIMEOUT_MS 30000u
#define CONTROL_PENDING_MAX (256u * 1024u) /* bytes of reply not yet taken */
#define CONTROL_DRAIN_MAX (64u * 1024u)    /* bytes of a refused request read and dropped before closing */

struct control;
struct control_conn;

/* A request as parsed from its JSON object ({"command": "status",
 * "db": "/path", "operation": "vacuum", "wait": true, "since": ms}); a
 * path that is not UTF-8 comes as "db_hex", its bytes in hexadecimal. */
struct control_request {
        char command[32];
        char operation[32];
        char *db;          /* NULL when not given */
        bool wait;
        int64_t since_ms;  /* wall clock ms; 0 when not given */
};

/* Produces a reply's next slice into out; returns true when the reply is
 * complete. Called on the loop, again at later turns while it returns
 * false and the client takes what was written. */
typedef bool control_produce_fn(void *state, FILE *out);
/* Frees a producer's state (the reply done, or the client gone). */
typedef void control_free_fn(void *state);

struct control_handlers {
        /* A request from an allowed peer: answer with control_reply(),
         * control_stream(), now or later (the connection stays open). */
        void (*request)(void *userdata, struct control_conn *c, const struct control_request *req);
        /* The connection of a request not answered yet is gone: forget c. */
        void (*gone)(void *userdata, struct control_conn *c);
        void *userdata;
};

/* Listen on path (a stale socket there is replaced; a live one, or a file
 * that is not a socket, is an error), mode 0660, group gid when gid >= 0.
 * 0 or a negative errno (with *why: what failed, a static string). */
int control_open(uv_loop_t *loop, const char *path, int64_t gid, const struct control_handlers *h,
                 struct control **ret, const char **why);
/* Stop listening and close every connection (their handlers' gone() is
 * called for those still waiting); c is freed once libuv closed its
 * handles. The socket file is removed. NULL is a no-op. */
void control_close(struct control *c);

/* The whole reply (one line, a newline added when missing), then the
 * connection closes. */
void control_reply(struct control_conn *c, const char *text, size_t len);
/* A reply of produce() slices; state freed with free_state. */
void control_stream(struct control_conn *c, control_produce_fn *produce, control_free_fn *free_state, void *state);
/* The peer's user id (SO_PEERCRED). */
uid_t control_peer_uid(const struct control_conn *c);
