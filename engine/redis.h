/*
 * Redis client room: an asynchronous Redis client on the libuv loop, built
 * on hiredis's async API with a small adapter of our own (uv_poll per
 * connection).  The engine holds one per loop and hands it to plugins
 * through the host API: sink-sns keeps its duplicate-suppression keys in
 * it, sink-websocket its connection registry and its pub/sub fan-out.
 *
 * Two connections: one for commands (opened at redis_new) and one for
 * pub/sub (opened by the first redis_subscribe), because a subscribed
 * Redis connection accepts nothing but (P)(UN)SUBSCRIBE.
 *
 * Connection loss.  When a connection drops (or cannot be made) the client
 * logs it once, fails what was in flight on it (each callback once, with
 * REDIS_E_DISCONNECTED) and reconnects in the background with exponential
 * backoff and jitter (100 ms doubling to 5 s); recovery is logged once.
 * Commands are never queued across an outage: redis_command fails fast
 * (returns REDIS_E_DISCONNECTED, never calls the callback) while no
 * connection is up or being attempted.  While an attempt is under way
 * (right after redis_new, or after a backoff) commands are accepted and
 * wait for it, at most REDIS_CONNECT_TIMEOUT_MS.  The subscriber
 * re-subscribes every channel and pattern after it reconnects; messages
 * published while it was down are lost (that is Redis pub/sub).  A server
 * that takes commands and answers none of them for
 * REDIS_COMMAND_TIMEOUT_MS (a stuck server, CLIENT PAUSE, a dead peer the
 * kernel has not noticed) is dropped like a lost connection: every pending
 * command gets its callback with REDIS_E_DISCONNECTED ("no answer within
 * ..."), and the client reconnects in the background.
 *
 * Everything runs on the loop's thread.  Callbacks follow libuv's rule: a
 * function that takes one either returns an error and never calls it, or
 * returns 0 and calls it exactly once, later, from the loop (or from
 * redis_close, which cancels) — never from inside the call that took it.
 *
 * Host names are resolved by hiredis with a blocking getaddrinfo at each
 * connect; give an IP address (or a name the resolver answers at once).
 */
#ifndef CONNECTD_REDIS_H
#define CONNECTD_REDIS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Errors besides the CD_ERR_* ones (all negative, errno-like). */
enum {
    REDIS_E_DISCONNECTED = -107, /* ENOTCONN: no connection up (or it dropped) */
    REDIS_E_CANCELED = -125,     /* ECANCELED: redis_close */
};

#define REDIS_CONNECT_TIMEOUT_MS 2000
#define REDIS_COMMAND_TIMEOUT_MS 5000 /* no reply at all for this long: dropped */
#define REDIS_BACKOFF_MIN_MS     100
#define REDIS_BACKOFF_MAX_MS     5000
#define REDIS_MAX_PENDING        100000 /* commands in flight on one client */

typedef struct redis redis;
typedef struct redis_sub redis_sub; /* one subscription */

typedef enum redis_type {
    REDIS_T_NIL = 0,
    REDIS_T_STATUS,  /* +OK: str/len */
    REDIS_T_STRING,  /* bulk string: str/len (binary-safe, NUL-terminated too) */
    REDIS_T_INTEGER, /* integer */
    REDIS_T_ARRAY,   /* elements/element (a nil array is REDIS_T_NIL) */
    REDIS_T_ERROR,   /* an error: str/len is the message */
} redis_type;

/*
 * One outcome, valid only during the callback.  `error` is 0 when the
 * server answered (its answer may itself be an error reply: type
 * REDIS_T_ERROR, error 0, e.g. "WRONGTYPE ..."); negative when no answer
 * came (REDIS_E_DISCONNECTED, REDIS_E_CANCELED, CD_ERR_NOMEM): then type is
 * REDIS_T_ERROR and str says why.
 */
typedef struct redis_reply {
    int error;
    redis_type type;
    long long integer;
    const char *str; /* never NULL for STATUS, STRING, ERROR; NULL otherwise */
    size_t len;
    size_t elements;
    const struct redis_reply *element; /* elements views, or NULL */
} redis_reply;

typedef void (*redis_reply_cb)(void *opaque, const redis_reply *reply);

/* A published message: `pattern` is the subscribed pattern (NULL for a
 * plain channel subscription).  Pointers valid only during the callback. */
typedef struct redis_message {
    const char *pattern;
    const char *channel;
    size_t channel_len;
    const char *payload; /* binary-safe; NUL-terminated too */
    size_t payload_len;
} redis_message;

typedef void (*redis_message_cb)(void *opaque, const redis_message *msg);

/*
 * Creates the client for `loop` and starts connecting to
 * url = "redis://host[:port][/db]" (port 6379, db 0 by default).  Returns 0
 * and sets *out, or negative with errbuf: CD_ERR_INVALID (a URL of another
 * form), CD_ERR_NOMEM, CD_ERR_IO.  A server that is down is not an error
 * here: the client keeps trying in the background (see above).  The caller
 * owns *out until redis_close.
 */
int redis_new(redis **out, uv_loop_t *loop, const char *url, char *errbuf, size_t errlen);

/*
 * Starts closing: every command in flight gets its callback once, with
 * REDIS_E_CANCELED (REDIS_E_DISCONNECTED if its connection was failing at
 * that moment), before this returns; when called from inside a reply
 * callback, the commands behind that reply get theirs right after it
 * returns (hiredis finishes the callback first),
 * subscriptions end (their callbacks are not called again), every uv
 * handle is closed, and once the last close callback ran the client is
 * freed and on_closed (may be NULL) is called once, from the loop.  A
 * second call is ignored.  Safe from inside any of this client's callbacks.
 */
void redis_close(redis *r, void (*on_closed)(void *opaque), void *opaque);

/*
 * Sends a command, formatted as hiredis does (%s: a C string, %b: a
 * pointer and a size_t length, binary-safe; each is one argument).  Returns
 * 0 and later calls cb exactly once; or returns negative and never calls
 * cb: REDIS_E_DISCONNECTED (no connection up or being attempted),
 * CD_ERR_BUSY (closing, or REDIS_MAX_PENDING commands in flight),
 * CD_ERR_INVALID (a bad format, or a command that would turn the
 * connection into a subscriber or monitor: use redis_subscribe),
 * CD_ERR_NOMEM.  Replies come in the order the commands were sent.
 */
int redis_command(redis *r, redis_reply_cb cb, void *opaque, const char *fmt, ...);

/* The same with arguments as given: argc >= 1 strings of argvlen bytes
 * each (argvlen NULL: each is a C string).  Nothing is kept after return. */
int redis_command_argv(redis *r, redis_reply_cb cb, void *opaque, int argc, const char **argv,
                       const size_t *argvlen);

/*
 * Subscribes to a channel (pattern 0) or a glob pattern (pattern 1, as
 * PSUBSCRIBE) on the subscriber connection; cb gets every message until
 * redis_close, from the loop.  The subscription outlives reconnects: it is
 * sent again whenever the subscriber (re)connects.  Returns 0, or
 * CD_ERR_INVALID (empty name), CD_ERR_BUSY (closing), CD_ERR_NOMEM.
 * Subscribing twice to the same name delivers each message to both.
 */
int redis_subscribe(redis *r, const char *channel_or_pattern, int pattern, redis_message_cb cb,
                    void *opaque);

/*
 * Ends the subscription redis_subscribe made with the same name, pattern
 * flag, cb and opaque: cb is not called for it again, even from the
 * dispatch under way (safe from inside any callback).  The server is sent
 * (P)UNSUBSCRIBE once no other subscription holds the name; a subscription
 * to that name made before the server confirms it is sent right after the
 * confirmation (hiredis would otherwise lose it).  Returns 0, or
 * CD_ERR_INVALID when no such subscription exists.
 */
int redis_unsubscribe(redis *r, const char *channel_or_pattern, int pattern, redis_message_cb cb,
                      void *opaque);

/* redis_subscribe that also hands back the subscription (valid until
 * redis_unsubscribe or redis_close), for redis_sub_confirmed. */
int redis_subscribe_handle(redis *r, const char *channel_or_pattern, int pattern,
                           redis_message_cb cb, void *opaque, redis_sub **out);
/* 1 when the server confirmed this subscription on the connection that is
 * up now: a message published from here on reaches it. */
int redis_sub_confirmed(const redis_sub *s);

/* Whether the subscriber connection is up and has every subscription
 * confirmed by the server (1), or not (0): a message published now reaches
 * every subscription. */
int redis_subscribed(const redis *r);

/* Whether the command connection is up right now (1) or not (0). */
int redis_connected(const redis *r);

#endif
