/*
 * connectd plugin ABI — the only header a plugin includes.
 *
 * A plugin is a shared object that exports one symbol, CD_PLUGIN_ENTRY_SYMBOL
 * ("connectd_plugin_entry"), a function returning a pointer to a static,
 * versioned descriptor (cd_plugin_desc).  The engine checks the descriptor's
 * ABI major version and struct size before it reads anything else, and
 * refuses a module built for another major version by name.
 *
 * Everything a plugin needs from the engine (the event loop, logging,
 * configuration values, metrics, record acknowledgement, the Kafka producer)
 * reaches it through a table of function pointers, cd_host, handed to init().
 * The engine exports no symbols to plugins, so a test can hand a plugin a
 * host of its own.  Newer host functions are appended at the end of cd_host;
 * a plugin feature-tests one by checking host->struct_size (CD_HOST_HAS) and
 * that the pointer is not NULL.
 *
 * Conventions (from libuv and librdkafka):
 *   - Synchronous failures return a negative int and write a message into a
 *     caller-supplied errbuf.
 *   - A function that takes a callback either returns an error and never
 *     calls it, or returns 0 and calls it exactly once.
 *   - A plugin never blocks the loop and never calls exit().
 */
#ifndef CONNECTD_PLUGIN_H
#define CONNECTD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version: major in the high 16 bits, minor in the low 16 bits.  A
 * minor bump only appends fields/functions; a major bump breaks layout. */
#define CD_ABI_VERSION_MAJOR 1
#define CD_ABI_VERSION_MINOR 6
#define CD_ABI_VERSION       ((uint32_t)((CD_ABI_VERSION_MAJOR << 16) | CD_ABI_VERSION_MINOR))
#define CD_ABI_MAJOR(v)      ((uint32_t)(v) >> 16)

#define CD_PLUGIN_ENTRY_SYMBOL "connectd_plugin_entry"

#if defined(__GNUC__)
#define CD_EXPORT       __attribute__((visibility("default")))
#define CD_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CD_EXPORT
#define CD_PRINTF(f, a)
#endif

/* Declares the plugin's entry point; use once per plugin:
 *   CD_PLUGIN_DEFINE(&file_plugin_desc)  */
#define CD_PLUGIN_DEFINE(desc_ptr)                                                                 \
    CD_EXPORT const cd_plugin_desc *connectd_plugin_entry(void);                                   \
    CD_EXPORT const cd_plugin_desc *connectd_plugin_entry(void) {                                  \
        return (desc_ptr);                                                                         \
    }

/* Errors are negative ints. */
enum {
    CD_OK = 0,
    CD_ERR_INVALID = -22, /* bad argument or configuration (EINVAL) */
    CD_ERR_NOMEM = -12,
    CD_ERR_IO = -5,
    CD_ERR_BUSY = -16,
    CD_ERR_UNSUPPORTED = -95,
};

typedef enum cd_log_level {
    CD_LOG_ERROR = 0,
    CD_LOG_WARN = 1,
    CD_LOG_INFO = 2,
    CD_LOG_DEBUG = 3,
} cd_log_level;

/* ---------------------------------------------------------------- config map
 * Each plugin declares its options in a table terminated by {0}.  The engine
 * validates a pipeline file's sink/source object against it (unknown keys,
 * types, bounds, enums, required options), fills defaults, and prints the
 * table in `connectd plugins`.  The keys every sink takes (plugin, name, when,
 * retry) are handled by the engine and must not appear in the table. */
typedef enum cd_opt_type {
    CD_OPT_STRING = 1,  /* JSON string (after ${ENV} expansion) */
    CD_OPT_INT,         /* JSON integer; bounds min/max when has_bounds */
    CD_OPT_DOUBLE,      /* JSON number; bounds min/max when has_bounds */
    CD_OPT_BOOL,        /* JSON true/false */
    CD_OPT_ENUM,        /* JSON string, one of enum_values ("a|b|c") */
    CD_OPT_STRING_LIST, /* JSON array of strings */
    CD_OPT_JSON,        /* any JSON value (objects used as templates, maps) */
} cd_opt_type;

typedef struct cd_option {
    const char *name;
    cd_opt_type type;
    const char *default_value; /* textual default, NULL = none (for JSON: JSON text) */
    int required;              /* non-zero: must be present (a default makes no sense) */
    int has_bounds;            /* INT/DOUBLE: min..max inclusive; STRING: length bounds */
    double min, max;
    const char *enum_values; /* CD_OPT_ENUM: "never|batch|always" */
    const char *description; /* one line, shown by `connectd plugins` */
} cd_option;

/* A validated option set (opaque); read through cd_host's cfg_* functions. */
typedef struct cd_config cd_config;

/* ------------------------------------------------------------------ records */
typedef enum cd_value_format {
    CD_VALUE_JSON = 0, /* the engine checked: one JSON text (RFC 8259), well-formed UTF-8 */
    CD_VALUE_RAW = 1,  /* arbitrary bytes */
} cd_value_format;

typedef struct cd_header {
    const char *name;  /* NUL-terminated */
    const void *value; /* NULL for a null header value */
    size_t value_len;
} cd_header;

/* One consumed Kafka record.  Every pointer stays valid until the sink has
 * reported the record's outcome (cd_host.record_done); copy what is needed
 * longer. */
typedef struct cd_record {
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* -1 when the record has none */
    const void *key;      /* NULL when the record has no key */
    size_t key_len;
    const void *value; /* NULL for a tombstone */
    size_t value_len;
    const cd_header *headers;
    size_t header_count;
    cd_value_format value_format;
} cd_record;

/* A batch handed to a sink's write().  Records of one partition appear in
 * offset order.  The batch belongs to the engine; it stays valid until the
 * outcome of its last record is reported. */
typedef struct cd_batch {
    size_t count;
    const cd_record *records; /* count entries */
    void *engine_private;     /* do not touch */
} cd_batch;

typedef enum cd_outcome {
    CD_RECORD_OK = 0,    /* written; counts toward the committed offset */
    CD_RECORD_RETRY = 1, /* transient failure: the engine backs off and retries */
    CD_RECORD_FATAL = 2, /* permanent: dead-lettered or fails the pipeline */
} cd_outcome;

/* ------------------------------------------------------------- HTTP server
 * The engine's HTTP/1.1 server (keep-alive, ordered pipelining, limits and
 * read timeouts), for sources that take requests and for the WebSocket
 * server.  A handler gets each complete request once and answers it exactly
 * once with http_respond, from the handler or later from the loop; answers
 * on one connection go out in request order. */
typedef struct cd_http_server cd_http_server;   /* opaque */
typedef struct cd_http_request cd_http_request; /* opaque; valid until answered */

typedef struct cd_http_limits {
    size_t max_body;            /* bytes; 413 above */
    size_t max_header_bytes;    /* 431 above */
    size_t max_headers;         /* 431 above */
    size_t max_connections;     /* 503 above */
    uint64_t header_timeout_ms; /* 408 when the head takes longer */
    uint64_t body_timeout_ms;   /* 408 when the body takes longer */
    uint64_t idle_timeout_ms;   /* keep-alive connections idle this long close */
} cd_http_limits;

typedef void (*cd_http_handler)(cd_http_request *req, void *opaque);

/* ---------------------------------------------------------------- templates
 * Record templates from pipeline files, compiled once at init: any JSON
 * value whose strings may hold ${/json/pointer} (into the record's JSON
 * value; "${/}" is the whole value), ${topic}, ${partition}, ${offset},
 * ${key}, ${timestamp}, ${headers.NAME}, ${/path:-default}.  A string that
 * is exactly one reference renders as the referenced JSON value itself. */
typedef struct cd_template cd_template; /* opaque, immutable */

/* A growable output buffer, reused across records; free with buf_free. */
typedef struct cd_buf {
    char *data; /* NUL-terminated */
    size_t len;
    size_t cap;
} cd_buf;

/* ------------------------------------------------------------- HTTP client
 * The engine's HTTP client (libcurl's multi interface on the loop), shared
 * by every plugin.  A pool bounds one plugin's requests in flight (more wait
 * in FIFO order).  With aws_service set, the request is signed with SigV4
 * using the engine's credentials (environment, then the ECS container
 * endpoint, refreshed before they expire). */
typedef struct cd_http_pool cd_http_pool; /* opaque */

typedef struct cd_http_call {
    const char *method;         /* NULL: GET */
    const char *url;            /* http:// or https:// */
    const char *const *headers; /* "Name: value", NULL-terminated; may be NULL */
    const void *body;
    size_t body_len;
    uint64_t timeout_ms;     /* 0: 30 s */
    const char *aws_service; /* "dynamodb", "sns", "execute-api"...; NULL: unsigned */
    const char *aws_region;  /* with aws_service */
} cd_http_call;

/* Valid only during the callback.  Exactly one of status and error is set. */
typedef struct cd_http_result {
    int status;                /* HTTP status, 0 when no complete response */
    int error;                 /* 0, or negative */
    const char *error_message; /* with error */
    const char *body;          /* never NULL, NUL-terminated */
    size_t body_len;
    const char *content_type; /* or NULL */
    const char *retry_after;  /* Retry-After header or NULL */
    int retriable;            /* connection errors, timeouts, 408, 429, 5xx */
} cd_http_result;

typedef void (*cd_http_result_cb)(void *opaque, const cd_http_result *res);

/* -------------------------------------------------------------------- Redis
 * The engine's Redis client (engine config redis_url), shared by every
 * plugin: commands on the loop, reconnecting in the background.  While no
 * connection is up a command fails at once (never queued across an
 * outage), so a plugin can decide between RETRY and going on. */
typedef enum cd_redis_type {
    CD_REDIS_NIL = 0,
    CD_REDIS_STATUS,  /* +OK: str/len */
    CD_REDIS_STRING,  /* bulk string: str/len, binary-safe, NUL-terminated */
    CD_REDIS_INTEGER, /* integer */
    CD_REDIS_ARRAY,   /* elements/element */
    CD_REDIS_ERROR,   /* error reply (error 0) or no answer (error < 0): str says why */
} cd_redis_type;

/* Valid only during the callback. */
typedef struct cd_redis_reply {
    int error; /* 0 when the server answered; negative when no answer came */
    cd_redis_type type;
    long long integer;
    const char *str;
    size_t len;
    size_t elements;
    const struct cd_redis_reply *element;
} cd_redis_reply;

typedef void (*cd_redis_cb)(void *opaque, const cd_redis_reply *reply);

/* ------------------------------------------ protocol switch and pub/sub
 * ABI 1.5.  A request carrying "Connection: upgrade" and an "Upgrade"
 * header (http_is_upgrade) is the last one its connection reads as HTTP:
 * the handler answers it normally (the connection closes after that) or
 * switches protocols with http_upgrade, after which the connection is a
 * raw byte stream (WebSocket frames, say).  A stream has no timeouts and
 * never pauses reading: its owner keeps time (pings) and bounds what it
 * queues with stream_pending. */
typedef struct cd_http_stream cd_http_stream; /* opaque; valid until on_closed */

typedef struct cd_http_stream_cbs {
    /* Bytes from the peer, valid only during the call. */
    void (*on_data)(cd_http_stream *s, const char *data, size_t len, void *opaque);
    /* Exactly once, from the loop, when the stream is gone (the peer closed,
     * an I/O error, stream_close, or the server closed); s must not be used
     * afterwards. */
    void (*on_closed)(cd_http_stream *s, void *opaque);
} cd_http_stream_cbs;

/* A message on a subscribed Redis channel; pointers valid only during the
 * call.  pattern is the subscribed pattern, or NULL for a plain channel. */
typedef struct cd_redis_message {
    const char *pattern;
    const char *channel;
    size_t channel_len;
    const char *payload; /* binary-safe, NUL-terminated too */
    size_t payload_len;
} cd_redis_message;

typedef void (*cd_redis_message_cb)(void *opaque, const cd_redis_message *msg);
typedef struct cd_redis_sub cd_redis_sub; /* opaque; one subscription */

/* -------------------------------------------------------------- host table */
typedef struct cd_instance cd_instance; /* one configured sink/source (opaque) */
typedef struct cd_metric cd_metric;     /* a registered counter/gauge (opaque) */

typedef enum cd_metric_type {
    CD_METRIC_COUNTER = 0,
    CD_METRIC_GAUGE = 1,
} cd_metric_type;

/* Completion of flush()/stop(): called exactly once, status 0 or negative. */
typedef void (*cd_done_cb)(void *opaque, int status);

/* Delivery report for cd_host.produce(): status 0 and the stored partition
 * and offset once the broker acknowledged (acks=all), or a negative status
 * and a message. */
typedef void (*cd_produce_cb)(void *opaque, int status, const char *errmsg, int32_t partition,
                              int64_t offset);

typedef struct cd_host {
    uint32_t abi_version; /* CD_ABI_VERSION of the engine */
    uint32_t struct_size; /* sizeof(cd_host) of the engine */

    /* The engine's event loop.  Everything a plugin does runs on it. */
    uv_loop_t *(*loop)(const cd_instance *inst);

    /* Logging, prefixed with pipeline and sink name. */
    void (*log)(const cd_instance *inst, cd_log_level level, const char *fmt, ...) CD_PRINTF(3, 4);
    int (*log_enabled)(const cd_instance *inst, cd_log_level level);
    const char *(*pipeline_name)(const cd_instance *inst);
    const char *(*instance_name)(const cd_instance *inst);

    /* Validated configuration values (defaults applied).  NULL / 0 when the
     * option is absent and has no default.  cfg_json returns compact JSON
     * text owned by the config. */
    const char *(*cfg_string)(const cd_config *cfg, const char *name);
    int64_t (*cfg_int)(const cd_config *cfg, const char *name);
    double (*cfg_double)(const cd_config *cfg, const char *name);
    int (*cfg_bool)(const cd_config *cfg, const char *name);
    int (*cfg_is_set)(const cd_config *cfg, const char *name);
    size_t (*cfg_list_count)(const cd_config *cfg, const char *name);
    const char *(*cfg_list_item)(const cd_config *cfg, const char *name, size_t i);
    const char *(*cfg_json)(const cd_config *cfg, const char *name);

    /* Metrics: registered once (in init or start), labelled with the
     * pipeline and sink; the engine owns them and frees them with the
     * instance. */
    cd_metric *(*metric_register)(cd_instance *inst, cd_metric_type type, const char *name,
                                  const char *help);
    void (*metric_add)(cd_metric *m, double delta);
    void (*metric_set)(cd_metric *m, double value);

    /* Sinks: report the outcome of batch->records[index], exactly once per
     * record.  Per-key order: once a record is answered RETRY, do not apply
     * later records of the same key in that batch (answer RETRY for them
     * too); the engine re-sends any it finds applied after a failed one.  The call reporting the
     * batch's last outstanding record may free the batch: copy batch->count before a loop of
     * record_done calls.  retry_after_ms (>0) is a hint for RETRY (e.g. a 429's Retry-After);
     * reason is copied (may be NULL for OK). */
    void (*record_done)(cd_batch *batch, size_t index, cd_outcome outcome, int64_t retry_after_ms,
                        const char *reason);

    /* Sources: produce one record through the engine's idempotent producer
     * (acks=all).  Key, value and headers are copied.  Returns 0 and calls cb
     * exactly once from the loop with the delivery report, or returns
     * negative (queue full: CD_ERR_BUSY) with errbuf filled and never calls
     * cb. */
    int (*produce)(cd_instance *inst, const char *topic, const void *key, size_t key_len,
                   const void *value, size_t value_len, const cd_header *headers,
                   size_t header_count, cd_produce_cb cb, void *opaque, char *errbuf,
                   size_t errlen);

    /* ABI 1.1: the HTTP server.  http_listen binds addr ("127.0.0.1:8080";
     * port 0 picks a free one, see http_port) with limits (NULL: the
     * defaults: 1 MiB body, 16 KiB / 100 headers, 10,000 connections, 10 s
     * head, 30 s body, 60 s idle).  Returns 0 and *out, or negative with
     * errbuf ("listen 127.0.0.1:8080: address already in use"). */
    int (*http_listen)(cd_instance *inst, const char *addr, const cd_http_limits *limits,
                       cd_http_handler handler, void *opaque, cd_http_server **out, char *errbuf,
                       size_t errlen);
    int (*http_port)(const cd_http_server *srv);
    /* Stops accepting, lets requests in flight be answered, then closes and
     * calls cb once (cb may be NULL). */
    void (*http_close)(cd_http_server *srv, cd_done_cb cb, void *opaque);
    const char *(*http_method)(const cd_http_request *req);
    const char *(*http_path)(const cd_http_request *req); /* decoded, no query */
    /* A decoded query parameter, or NULL. */
    const char *(*http_query_param)(cd_http_request *req, const char *name);
    /* A header by case-insensitive name, or NULL. */
    const char *(*http_header)(const cd_http_request *req, const char *name);
    const char *(*http_body)(const cd_http_request *req, size_t *len); /* NUL-terminated */
    const char *(*http_peer)(const cd_http_request *req);              /* "ip:port" */
    /* Answers req (everything is copied); extra_headers is a NULL-terminated
     * list of "Name: value" lines or NULL.  Returns 0 (req is gone), or
     * CD_ERR_INVALID for a bad status or header (req stays the caller's). */
    int (*http_respond)(cd_http_request *req, int status, const char *content_type,
                        const void *body, size_t len, const char *const *extra_headers);

    /* ABI 1.2: templates.  template_compile takes the template as JSON
     * text (e.g. cfg_json(cfg, "item")); errors name the bad variable.
     * template_render appends to out: compact JSON, or with as_text a plain
     * string (file paths, subjects).  A missing field is an error ("template:
     * /data/status: no such field") the sink reports as FATAL.  Rendering
     * allocates nothing once out has grown. */
    int (*template_compile)(const char *json_spec, cd_template **out, char *errbuf, size_t errlen);
    int (*template_render)(const cd_template *t, const cd_record *rec, int as_text, cd_buf *out,
                           char *errbuf, size_t errlen);
    int (*template_uses_value)(const cd_template *t);
    void (*template_free)(cd_template *t);
    void (*buf_free)(cd_buf *b);

    /* ABI 1.3: the HTTP client.  http_pool_new returns NULL with errbuf when
     * the client cannot start.  http_pool_free cancels what is queued or in
     * flight (each callback runs once, with an error).  http_call copies the
     * call; it returns 0 and calls cb exactly once from the loop, or returns
     * negative with errbuf and never calls cb (CD_ERR_BUSY: AWS credentials
     * are not available yet, try again later). */
    cd_http_pool *(*http_pool_new)(cd_instance *inst, size_t max_in_flight, char *errbuf,
                                   size_t errlen);
    void (*http_pool_free)(cd_http_pool *pool);
    int (*http_call)(cd_http_pool *pool, const cd_http_call *call, cd_http_result_cb cb,
                     void *opaque, char *errbuf, size_t errlen);
    /* Starts the AWS credentials chain if it is not running.  Returns 0 when
     * credentials are available or being fetched, negative with errbuf
     * naming what was tried when there are none.  AWS sinks call it in
     * start, so a missing role fails at start-up, not at the first write. */
    int (*aws_credentials_check)(cd_instance *inst, char *errbuf, size_t errlen);

    /* ABI 1.4: Redis.  One command of argc arguments (argvlen NULL: C
     * strings).  Returns 0 and calls cb exactly once from the loop, or
     * negative with errbuf and never calls cb: CD_ERR_UNSUPPORTED (no
     * redis_url configured), a disconnected server, CD_ERR_BUSY.  A server
     * that answers none of the pending commands for 5 s is dropped and
     * reconnected: cb then gets a reply with error < 0 ("no answer within
     * 5000 ms"), so blocking commands (BLPOP...) must time out sooner. */
    int (*redis_command)(cd_instance *inst, cd_redis_cb cb, void *opaque, int argc,
                         const char **argv, const size_t *argvlen, char *errbuf, size_t errlen);

    /* ABI 1.5: protocol switch on the HTTP server (see cd_http_stream).
     * http_upgrade answers req with "101 Switching Protocols" plus
     * extra_headers and turns its connection into a stream; cbs is copied,
     * opaque borrowed until on_closed.  Returns 0 and *out (req is gone);
     * CD_ERR_INVALID when req is not an unanswered upgrade request or a
     * header is bad (req stays the caller's); CD_ERR_IO when the client is
     * already gone (req is freed, no callback comes). */
    int (*http_is_upgrade)(const cd_http_request *req);
    int (*http_upgrade)(cd_http_request *req, const char *const *extra_headers,
                        const cd_http_stream_cbs *cbs, void *opaque, cd_http_stream **out);
    /* Queues len bytes (copied) after everything queued before.  Returns 0,
     * or CD_ERR_IO once the stream is closing. */
    int (*stream_write)(cd_http_stream *s, const void *data, size_t len);
    /* Bytes queued and not yet taken by the kernel. */
    size_t (*stream_pending)(const cd_http_stream *s);
    /* Writes what is queued, then closes; on_closed follows. */
    void (*stream_close)(cd_http_stream *s);
    const char *(*stream_peer)(const cd_http_stream *s); /* "ip:port" */

    /* ABI 1.5: Redis pub/sub on the engine's subscriber connection.
     * redis_subscribe delivers every message on channel (pattern 0) or
     * matching a glob (pattern 1, PSUBSCRIBE) to cb, from the loop, until
     * redis_unsubscribe; the subscription is sent again after every
     * reconnect (messages published meanwhile are lost: that is Redis
     * pub/sub).  Returns 0 and *out, or negative with errbuf
     * (CD_ERR_UNSUPPORTED: no redis_url).  redis_unsubscribe may be called
     * from inside cb; cb is never called for that subscription afterwards.
     * redis_subscribed is 1 when every subscription is confirmed by the
     * server (a message published now reaches them all). */
    int (*redis_subscribe)(cd_instance *inst, const char *channel, int pattern,
                           cd_redis_message_cb cb, void *opaque, cd_redis_sub **out, char *errbuf,
                           size_t errlen);
    void (*redis_unsubscribe)(cd_redis_sub *sub);
    int (*redis_subscribed)(cd_instance *inst);

    /* ABI 1.6: 1 when the server confirmed this one subscription on the
     * connection that is up now (redis_subscribed waits for all of them). */
    int (*redis_sub_confirmed)(const cd_redis_sub *sub);
} cd_host;

/* True when the engine's host table carries member `field`. */
#define CD_HOST_HAS(host, field)                                                                   \
    ((host)->struct_size >= offsetof(cd_host, field) + sizeof((host)->field) && (host)->field)

/* ------------------------------------------------------------------- sinks
 * Lifecycle: init (parse config, no I/O) -> start (attach to the loop) ->
 * write* / flush* -> stop (asynchronous) -> destroy (after stop completed,
 * or after a failed init/start). */
typedef struct cd_sink_ops {
    /* Validates cfg and allocates the plugin's context into *ctx.  No I/O.
     * Returns 0, or negative with errbuf naming the option and the reason. */
    int (*init)(const cd_host *host, cd_instance *inst, const cd_config *cfg, void **ctx,
                char *errbuf, size_t errlen);
    int (*start)(void *ctx, char *errbuf, size_t errlen);
    /* Takes a batch; reports every record through host->record_done, from
     * this call or later from the loop.  Returns 0; a negative return means
     * the batch was not taken (the engine retries it whole). */
    int (*write)(void *ctx, cd_batch *batch);
    /* Completes everything accepted so far, then calls cb.  May be NULL. */
    int (*flush)(void *ctx, cd_done_cb cb, void *opaque);
    /* Finishes in-flight writes, closes handles, then calls cb. */
    int (*stop)(void *ctx, cd_done_cb cb, void *opaque);
    void (*destroy)(void *ctx);
} cd_sink_ops;

/* ----------------------------------------------------------------- sources */
typedef struct cd_source_ops {
    int (*init)(const cd_host *host, cd_instance *inst, const cd_config *cfg, void **ctx,
                char *errbuf, size_t errlen);
    int (*start)(void *ctx, char *errbuf, size_t errlen);
    void (*pause)(void *ctx); /* stop taking input until resume */
    void (*resume)(void *ctx);
    int (*stop)(void *ctx, cd_done_cb cb, void *opaque);
    void (*destroy)(void *ctx);
} cd_source_ops;

typedef enum cd_plugin_kind {
    CD_PLUGIN_SINK = 1,
    CD_PLUGIN_SOURCE = 2,
} cd_plugin_kind;

typedef struct cd_plugin_desc {
    uint32_t abi_version; /* CD_ABI_VERSION the plugin was built with */
    uint32_t struct_size; /* sizeof(cd_plugin_desc) the plugin was built with */
    const char *name;     /* the name pipeline files use: "file", "dynamodb" */
    const char *version;
    const char *description;
    cd_plugin_kind kind;
    const cd_option *options;    /* terminated by an entry with name == NULL */
    const cd_sink_ops *sink;     /* kind == CD_PLUGIN_SINK */
    const cd_source_ops *source; /* kind == CD_PLUGIN_SOURCE */
} cd_plugin_desc;

#ifdef __cplusplus
}
#endif

#endif /* CONNECTD_PLUGIN_H */
