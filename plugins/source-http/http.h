/*
 * source-http — the context of one configured HTTP ingest source.
 *
 * Private to the plugin (http.c, http_conf.c, http_auth.c and http_ws.c
 * include it; nothing else does; what an event must be is in
 * http_schema.h).  The structs:
 *
 *   http_ctx      one configured source: options, topics with their schemas,
 *                 auth, the server, requests waiting for delivery reports
 *   http_pending  one POST in flight: its events and the HTTP request it
 *                 answers, from the handler until its last delivery report
 *   http_event    one event (the body of an application/json POST, or one
 *                 line of an NDJSON batch) and its outcome
 *
 * How they fit together: the handler checks the request (path, method,
 * auth, content type), then turns each event into a Kafka record and
 * produces it through the host.  The request is answered when every event
 * has an outcome: a delivery report (202 or 503), a validation error (400),
 * or the ack timeout (503).  An http_pending outlives its answer while
 * delivery reports are still due, because the producer holds a pointer to
 * each of its events; it is freed by the last one.
 */
#ifndef CONNECTD_SOURCE_HTTP_H
#define CONNECTD_SOURCE_HTTP_H

#include <connectd/plugin.h>

#include "buf.h"
#include "http_schema.h"
#include "jwt_verify.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define http_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Freed one-event pendings kept for the next request: enough for the
 * requests one loop pass typically answers. */
#define HTTP_SPARE_MAX 256

/* Unpredictable bytes for eventIds are read from getrandom(2) this many at
 * a time (a UUID takes 16). */
#define HTTP_RANDOM_POOL 512

/* -------------------------------------------------------- http_auth.c */

/* Accepted credentials.  No keys and no JWT key: every request is let in. */
typedef struct http_auth {
    unsigned char (*key_hashes)[32]; /* SHA-256 of each accepted API key (owned) */
    size_t nkeys;
    jwt_verifier jwt; /* jwt_secret (HS256) and / or jwt_public_key (RS256) */
} http_auth;

/* Parses "sha256:<64 hex digits>".  Returns 0, or CD_ERR_INVALID. */
int http_auth_parse_hash(const char *text, unsigned char out[32]);
int http_auth_enabled(const http_auth *a);

typedef enum http_auth_result {
    HTTP_AUTH_OK = 0,
    HTTP_AUTH_MISSING = 1, /* no credential presented */
    HTTP_AUTH_INVALID = 2, /* a credential that is not accepted */
} http_auth_result;

/* Checks the credentials a request presents: `api_key` (the X-Api-Key
 * header) and `authorization` ("Bearer <API key or JWT>"); either may be
 * NULL.  API keys are hashed and compared in constant time against every
 * configured hash; a JWT is checked by plugins/common/jwt_verify.h (signed
 * HS256 with jwt_secret or RS256 with jwt_public_key, any other alg, "none"
 * included, refused; within its exp / nbf; exp and sub optional).  On HTTP_AUTH_INVALID, why says
 * what was wrong (for the log, not for the client). */
http_auth_result http_auth_check(const http_auth *a, const char *api_key, const char *authorization,
                                 char *why, size_t whylen);
/* The same check; when it passes on a JWT, *sub is a copy of its `sub`
 * claim ("" when it has no string sub; the caller frees), else NULL (an API
 * key). */
http_auth_result http_auth_check_sub(const http_auth *a, const char *api_key,
                                     const char *authorization, char **sub, char *why,
                                     size_t whylen);
void http_auth_free(http_auth *a);

/* ------------------------------------------------------------ context */

typedef struct http_ctx http_ctx;
typedef struct http_pending http_pending;

/* One allow-listed topic and the schema its events must match. */
typedef struct http_topic {
    char *name;         /* owned */
    json_t *schema;     /* owned reference */
    http_cschema *fast; /* schema compiled for the fast path (owned); NULL: none */
    char *answer_head;  /* {"topic":"<name>","partition": of a 202 answer (owned) */
    size_t answer_head_len;
} http_topic;

/* An event's outcome.  0 while it waits for its delivery report. */
typedef struct http_event {
    http_pending *owner;
    int status;     /* 0 (waiting), 202, 400 or 503 */
    int field_null; /* 400 about the whole body (bad JSON): "field": null */
    int32_t partition;
    int64_t offset;
    size_t line;    /* NDJSON: 1-based line number */
    char *event_id; /* id_inline or owned; NULL when the event never got that far */
    char *error;    /* owned; the problem, for 400 and 503 */
    char *field;    /* owned; 400: the JSON pointer of the field at fault */
    char id_inline[HTTP_UUID_LEN + 1]; /* event_id when it fits (a UUID does) */
} http_event;

enum { HTTP_ON_NONE = 0, HTTP_ON_WAITING = 1, HTTP_ON_DRAINING = 2 };

/* One POST whose answer or delivery reports are outstanding.  Allocated by
 * the handler with its events inline, on ctx->waiting until answered, then
 * on ctx->draining until its last delivery report (or freed at once when
 * none is due).  After destroy(), `ctx` is NULL and the last delivery
 * report frees it alone. */
struct http_pending {
    http_ctx *ctx;
    cd_http_request *req;      /* the server's until answered; NULL after */
    const http_topic *topic;   /* valid while req is */
    int batch;                 /* NDJSON: answered with an array of results */
    int submitting;            /* still in the handler: do not answer yet */
    int stop_producing;        /* the producer refused one: produce no later line */
    uint64_t deadline;         /* loop time of the ack timeout */
    size_t unsettled;          /* events without an outcome */
    size_t outstanding;        /* delivery reports still due */
    http_pending *prev, *next; /* ctx->waiting (answer due) or ctx->draining */
    int where;                 /* HTTP_ON_NONE, HTTP_ON_WAITING or HTTP_ON_DRAINING */
    size_t nevents;
    http_event events[];
};

/* A list of pendings, oldest first. */
typedef struct http_list {
    http_pending *head, *tail;
    size_t count;
} http_list;

struct http_ctx {
    const cd_host *host; /* borrowed: outlives the instance */
    cd_instance *inst;   /* borrowed */
    uv_loop_t *loop;     /* borrowed, set by start */

    /* Options, as read in init. */
    char *listen;
    http_topic *topics; /* owned, ntopics entries */
    size_t ntopics;
    http_pointer key;
    size_t max_body;
    size_t max_batch;
    size_t max_connections;
    uint64_t header_timeout_ms, body_timeout_ms, idle_timeout_ms;
    uint64_t ack_timeout_ms;
    char retry_after[32]; /* "Retry-After: N" */
    http_auth auth;
    int ws_routes;     /* POST /v1/ws/connect and /v1/ws/disconnect served */
    char *ws_prefix;   /* Redis key prefix of the connection registry (owned) */
    size_t ws_pending; /* ws requests waiting for Redis */
    int ws_failing;    /* the last ws request got 503 from Redis (log once per outage) */

    /* Metrics; owned by the engine, NULL with a host that has none. */
    cd_metric *m_requests;
    cd_metric *m_accepted;
    cd_metric *m_rejected;
    cd_metric *m_unavailable;
    cd_metric *m_unauthorized;
    cd_metric *m_inflight;

    /* Lifecycle. */
    cd_http_server *server; /* while listening (and closing) */
    int started;
    int paused;
    int stopping;
    int timer_open;   /* ack_timer is initialised and not yet closed */
    int stop_closing; /* ack_timer's close (the last step of stop) is under way */
    cd_done_cb stop_cb;
    void *stop_opaque;
    int delivery_failing; /* the last delivery report failed (log once per outage) */

    /* One timer for every ack timeout: all share ack_timeout_ms, so arrival
     * order is deadline order and the timer only watches the head. */
    uv_timer_t ack_timer;
    http_list waiting;  /* unanswered, oldest first */
    http_list draining; /* answered, delivery reports still due */

    /* Scratch: the record value when an eventId is inserted. */
    pbuf answer; /* the answer to a stored event, reused */
    char *scratch;
    size_t scratch_cap;
    http_pending *spare; /* freed one-event pendings, kept for reuse (linked by next) */
    size_t nspare;

    unsigned char random[HTTP_RANDOM_POOL];
    size_t random_used; /* bytes of `random` already handed out */
};

/* -------------------------------------------------------- http_conf.c */

/* Reads and checks the options in cfg, loads and checks the schema of
 * every topic (the only files init reads), and allocates a context into
 * *out.  Returns 0, or a negative CD_ERR_* with errbuf naming the option
 * and the reason (*out untouched).  The caller frees *out with
 * http_conf_destroy(). */
int http_conf_create(const cd_host *host, cd_instance *inst, const cd_config *cfg, http_ctx **out,
                     char *errbuf, size_t errlen);

/* Frees the context and what http_conf_create() put in it.  Takes
 * ownership of ctx.  Only when libuv holds nothing of it (before start, or
 * after stop completed). */
void http_conf_destroy(http_ctx *ctx);

/* Index of the allow-listed topic named name, or NULL. */
const http_topic *http_conf_topic(const http_ctx *ctx, const char *name);

/* ---------------------------------------------------------- http_ws.c */

/* Seconds a registry entry lives unless refreshed (sink-websocket refreshes
 * it on pong with the same value). */
#define HTTP_WS_TTL_S 86400
/* Longest connectionId / customerId accepted (bytes). */
#define HTTP_WS_ID_MAX 512

/* Sends a PING through the engine's Redis client: fails start with errbuf
 * when the engine has no redis_url (CD_ERR_UNSUPPORTED); any other failure
 * only means Redis is not up yet (the routes answer 503 until it is). */
int http_ws_start(http_ctx *ctx, char *errbuf, size_t errlen);

/* Serves POST /v1/ws/connect (connect 1) or /v1/ws/disconnect (connect 0)
 * once the request passed auth; sub is the JWT's sub claim (NULL with an API
 * key or without auth).  Answers req, now or from a Redis callback. */
void http_ws_handle(http_ctx *ctx, cd_http_request *req, int connect, const char *sub);

/* Answers req with {"error": error} (and "field" when not NULL), http.c. */
/* A JSON string of text, which may hold bytes that are not UTF-8 (a path
 * segment, a client's id cut by a length limit): those become U+FFFD, so the
 * member is never lost (json_string refuses invalid UTF-8 and returns NULL). */
json_t *http_json_text(const char *text);
/* Finishes a stop that was waiting for the last held request or Redis
 * command (no-op while not stopping). */
void http_check_stopped(http_ctx *ctx);
void http_send_error(http_ctx *ctx, cd_http_request *req, int status, const char *error,
                     const char *field, const char *h1, const char *h2);
/* Answers req with body (takes the reference), http.c. */
void http_send_json(http_ctx *ctx, cd_http_request *req, int status, json_t *body, const char *h1,
                    const char *h2);

#endif /* CONNECTD_SOURCE_HTTP_H */
