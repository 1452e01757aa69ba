/*
 * sink-websocket — the structs of the WebSocket push sink.
 *
 * Private to the plugin.  The structs:
 *
 *   ws_ctx       one configured sink (one per pipeline that pushes): its
 *                message and customer templates, its records in flight
 *   ws_server    one WebSocket server, shared by every sink instance whose
 *                `listen` is the same (a process-wide table keyed by the
 *                address, refcounted): the HTTP server, the connections,
 *                the customers, the ping timer
 *   ws_customer  the sockets of one customer on this server; in-process
 *                (no redis_url) also its sequence counter and replay ring;
 *                with Redis its pub/sub subscription
 *   ws_conn      one upgraded connection: its resume state, and a wslay
 *                context only while it has protocol work in progress
 *
 * How a push travels (server mode): write() renders the customer and the
 * message of each record.  With Redis, one EVAL per record increments the
 * customer's sequence number, appends the message (with "seq" inserted) to
 * the customer's replay list and PUBLISHes it on {prefix}push:{customerId};
 * every server holding a socket of that customer is subscribed to that
 * channel and writes the message to its sockets from the subscription
 * callback, so every server sees one order.  Without Redis the same happens
 * in memory.  API Gateway mode POSTs the message to each connection id in
 * the Redis registry source-http's $connect route writes.
 */
#ifndef CONNECTD_SINK_WEBSOCKET_H
#define CONNECTD_SINK_WEBSOCKET_H

#include <connectd/plugin.h>
#include "buf.h"

#include "jwt_verify.h"

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define ws_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Registry entries live this long unless refreshed (source-http uses the
 * same: plugins/source-http/http.h HTTP_WS_TTL_S). */
#define WS_REGISTRY_TTL_S 86400
/* The replay list expires with the registry; the sequence counter lives a
 * week past the last push, so a client resuming within that time never sees
 * the counter start again. */
#define WS_REPLAY_TTL_S 86400
#define WS_SEQ_TTL_S    604800
/* Longest customerId (bytes), as source-http's registry routes accept. */
#define WS_ID_MAX 512
/* Largest message a client may send us (pongs, closes; we read nothing
 * else): wslay closes with 1009 above it. */
#define WS_MAX_RECV 4096
/* How long a new socket waits for its Redis subscription to be confirmed
 * before its replay is read anyway. */
#define WS_SUB_WAIT_MS 3000

#define WS_REASON_MAX 256

/* Buffers: pbuf (plugins/common/buf.h). */

/* ------------------------------------------------- websocket_json.c */

/* Writes `json` (a compact JSON object, as templates render) into out with
 * "seq":seq inserted as its first member: {"seq":7,"type":...}.  Returns 0,
 * or CD_ERR_INVALID when json is not an object, CD_ERR_NOMEM. */
int ws_json_insert_seq(pbuf *out, const char *json, size_t len, uint64_t seq);

/* Reads the seq a message starts with ({"seq":N...).  Returns 0 and *seq,
 * or CD_ERR_INVALID. */
int ws_json_seq(const char *msg, size_t len, uint64_t *seq);

/* Checks an RFC 6901 pointer for use inside a template reference: "" or
 * starting with '/', and without "}" or ":-" (which end a reference). */
int ws_json_pointer_ok(const char *p);

/* ------------------------------------------------- websocket_auth.c */

typedef enum ws_auth_result {
    WS_AUTH_OK = 0,
    WS_AUTH_MISSING = 1, /* no token presented */
    WS_AUTH_INVALID = 2, /* a token that is not accepted; why says why */
} ws_auth_result;

/* Verifies a JWT with plugins/common/jwt_verify.h (the header's alg must be
 * the configured one, the signature good, nbf not after now) under this
 * sink's rules: exp must be present (and after now), sub a non-empty
 * string of at most WS_ID_MAX bytes.  Returns WS_AUTH_OK and *sub
 * (malloc'ed, the customerId), or WS_AUTH_MISSING (no token) /
 * WS_AUTH_INVALID with why. */
ws_auth_result ws_auth_verify(const jwt_verifier *a, const char *token, size_t len, time_t now,
                              char **sub, char *why, size_t whylen);

/* The token of a request: "Authorization: Bearer <t>" (blanks around t
 * left out), else ?token=<t>; a pointer into the arguments and its length
 * in *len, or NULL when neither. */
const char *ws_auth_token(const char *authorization, const char *query_token, size_t *len);

/* --------------------------------------------------------- the sink */

typedef enum ws_mode {
    WS_MODE_SERVER = 0,
    WS_MODE_APIGATEWAY = 1,
} ws_mode;

/* The options that belong to a server: the first instance's win. */
typedef struct ws_server_opts {
    char *listen; /* owned */
    jwt_verifier auth;
    uint64_t ping_interval_ms;
    uint64_t idle_timeout_ms;
    size_t max_send_queue;
    size_t max_connections;
    size_t replay_size;
    char *prefix; /* Redis key prefix (owned) */
} ws_server_opts;

typedef struct ws_ctx ws_ctx;
typedef struct ws_server ws_server;
typedef struct ws_conn ws_conn;
typedef struct ws_customer ws_customer;

/* A write() in flight: one entry per record (the opaque of its callback). */
typedef struct ws_batch ws_batch;
typedef struct ws_op {
    ws_batch *b;
    size_t index;
    int result; /* worst outcome so far */
    char reason[WS_REASON_MAX];
    int64_t retry_after_ms;
} ws_op;

struct ws_batch {
    ws_ctx *ctx;
    cd_batch *batch;
    size_t pending; /* records not reported yet */
    size_t count;
    ws_op ops[];
};

typedef struct ws_waiter {
    cd_done_cb cb;
    void *opaque;
    struct ws_waiter *next;
} ws_waiter;

struct ws_ctx {
    const cd_host *host; /* borrowed */
    cd_instance *inst;   /* borrowed */
    uv_loop_t *loop;

    ws_mode mode;
    ws_server_opts opts;   /* server mode: what this instance asks for */
    cd_template *message;  /* owned */
    cd_template *customer; /* owned: "${<customer pointer>}" */
    char *customer_ptr;    /* owned, for reasons */

    /* API Gateway mode. */
    char *endpoint; /* owned, without a trailing '/' */
    char *stage;    /* owned, "" = none */
    char *region;   /* owned */
    size_t max_in_flight;
    cd_http_pool *pool;

    ws_server *server;     /* while attached (server mode, started) */
    ws_ctx *next_attached; /* server->attached */

    /* Scratch, reused per record. */
    cd_buf render;
    pbuf cust;
    pbuf msg;
    pbuf key1, key2, key3;
    pbuf url; /* API Gateway: the @connections URL being called */

    /* Metrics (owned by the engine; NULL with a host without them). */
    cd_metric *m_pushes;
    cd_metric *m_conns;
    cd_metric *m_delivered;
    cd_metric *m_slow;
    cd_metric *m_auth;
    cd_metric *m_contexts;
    cd_metric *m_stale;

    /* Lifecycle. */
    int started, stopping, stop_done;
    size_t pending; /* records taken and not reported */
    ws_waiter *flushes;
    cd_done_cb stop_cb;
    void *stop_opaque;
    uv_timer_t defer; /* completes flush/stop from a fresh stack */
    int defer_open;
};

/* ------------------------------------------------ websocket_conf.c */

int ws_conf_create(const cd_host *host, cd_instance *inst, const cd_config *cfg, ws_ctx **out,
                   char *errbuf, size_t errlen);
void ws_conf_destroy(ws_ctx *ctx);
void ws_server_opts_free(ws_server_opts *o);

/* ----------------------------------------------- websocket_server.c */

/* Attaches ctx to the server for its listen address, creating and starting
 * it on first use.  Returns 0, or negative with errbuf (a conflicting jwt
 * or key prefix, the address in use...). */
int ws_server_attach(ws_ctx *ctx, char *errbuf, size_t errlen);
/* Detaches ctx; the last instance closes the server (every socket gets
 * 1001).  cb runs once, from the loop, when ctx's part is over. */
void ws_server_detach(ws_ctx *ctx, cd_done_cb cb, void *opaque);
/* In-process push: assigns the customer's next seq, keeps the message for
 * replay, writes it to the customer's sockets.  Returns 0 or CD_ERR_NOMEM. */
int ws_server_push_local(ws_server *srv, const char *cust, size_t cust_len, const char *msg,
                         size_t len, uint64_t *seq);
/* Whether the server fans out through Redis. */
int ws_server_uses_redis(const ws_server *srv);

/* The embedded browser client (client/connectd-ws.js, made a C array at
 * build time by cmake/embed_file.cmake). */
extern const unsigned char ws_client_js[];
extern const size_t ws_client_js_len;
/* client/demo.html: the onboarding journey page, GET /demo. */
extern const unsigned char ws_demo_html[];
extern const size_t ws_demo_html_len;

/* ----------------------------------------------- websocket_apigw.c */

/* Pushes op's record to every registered connection of cust. */
void ws_apigw_push(ws_ctx *ctx, ws_op *op, const char *cust, size_t cust_len, const char *msg,
                   size_t len);
/* Reports op's record once its calls are done (websocket.c). */
void ws_op_finish(ws_op *op);
void ws_op_fail(ws_op *op, cd_outcome outcome, int64_t retry_after_ms, const char *fmt, ...)
    CD_PRINTF(4, 5);

#endif /* CONNECTD_SINK_WEBSOCKET_H */
