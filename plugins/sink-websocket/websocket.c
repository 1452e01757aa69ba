/*
 * sink-websocket — pushes each record to the browsers of its customer.
 *
 * Two modes:
 *   server      a ws:// server on the engine's HTTP server (GET /ws, a JWT
 *               whose sub is the customerId), shared by every sink instance
 *               with the same `listen` (websocket_server.c); pushes carry a
 *               per-customer sequence number so a client can resume
 *               (?since=N) and detect gaps; with the engine's redis_url the
 *               push fans out through Redis pub/sub to whichever container
 *               holds the customer's sockets
 *   apigateway  POST {endpoint}/{stage}/@connections/{id}, SigV4-signed by
 *               the engine, to every connection the Redis registry holds
 *               for the customer (websocket_apigw.c)
 *
 * The files: websocket.c (this: options, lifecycle, write), websocket_conf.c
 * (options -> context), websocket_server.c (the server), websocket_apigw.c,
 * websocket_auth.c (JWTs), websocket_json.c (seq insertion), websocket.h.
 *
 * Outcomes: a push that reached Redis (or the in-process table) is OK even
 * with no live connection; Redis or API Gateway trouble is RETRY; a record
 * without the customer field, or whose message does not render to a JSON
 * object, is FATAL with the reason.
 */
#include "websocket.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cd_option ws_options[] = {
    {.name = "mode",
     .type = CD_OPT_ENUM,
     .default_value = "server",
     .enum_values = "server|apigateway",
     .description = "server: native ws:// server (GET /ws); apigateway: POST to API Gateway "
                    "@connections"},
    {.name = "listen",
     .type = CD_OPT_STRING,
     .default_value = "127.0.0.1:8081",
     .description = "server: address to serve on; sinks with the same listen share one server"},
    {.name = "jwt_secret",
     .type = CD_OPT_STRING,
     .description = "server: HS256 secret the clients' JWTs are signed with"},
    {.name = "jwt_public_key",
     .type = CD_OPT_STRING,
     .description = "server: RS256 public key (PEM text; ${file:PATH} reads a file)"},
    {.name = "customer",
     .type = CD_OPT_STRING,
     .default_value = "/customerId",
     .description = "JSON pointer to the record's customerId (the JWT sub that receives it)"},
    {.name = "message",
     .type = CD_OPT_JSON,
     .default_value = "\"${/}\"",
     .description = "Template of the pushed JSON object; \"seq\" is inserted as its first member"},
    {.name = "ping_interval_ms",
     .type = CD_OPT_INT,
     .default_value = "30000",
     .has_bounds = 1,
     .min = 10,
     .max = 3600000,
     .description = "server: ping each connection this often"},
    {.name = "idle_timeout_ms",
     .type = CD_OPT_INT,
     .default_value = "75000",
     .has_bounds = 1,
     .min = 20,
     .max = 7200000,
     .description = "server: close a connection that sent nothing (not even a pong) this long"},
    {.name = "max_send_queue_bytes",
     .type = CD_OPT_INT,
     .default_value = "1048576",
     .has_bounds = 1,
     .min = 1024,
     .max = 1073741824,
     .description = "server: a client with more unsent bytes than this is closed with 1008"},
    {.name = "max_connections",
     .type = CD_OPT_INT,
     .default_value = "20000",
     .has_bounds = 1,
     .min = 1,
     .max = 1000000,
     .description = "server: WebSocket connections at once (503 before the upgrade above)"},
    {.name = "replay_size",
     .type = CD_OPT_INT,
     .default_value = "100",
     .has_bounds = 1,
     .min = 0,
     .max = 100000,
     .description = "server: messages kept per customer for ?since= resume"},
    {.name = "key_prefix",
     .type = CD_OPT_STRING,
     .default_value = "ws:",
     .description = "Prefix of the Redis keys and channels; the same as source-http's "
                    "ws_key_prefix"},
    {.name = "endpoint",
     .type = CD_OPT_STRING,
     .description = "apigateway: the WebSocket API's base URL (https://ID.execute-api.REGION."
                    "amazonaws.com)"},
    {.name = "stage",
     .type = CD_OPT_STRING,
     .default_value = "",
     .description = "apigateway: stage path prefix (\"\" = none, as serverless-offline)"},
    {.name = "region",
     .type = CD_OPT_STRING,
     .default_value = "us-east-1",
     .description = "apigateway: region for SigV4 (service execute-api)"},
    {.name = "max_in_flight",
     .type = CD_OPT_INT,
     .default_value = "64",
     .has_bounds = 1,
     .min = 1,
     .max = 4096,
     .description = "apigateway: @connections requests in flight at once"},
    {0},
};

/* One EVAL per push: the seq, the replay list and the publish move
 * together, so every server delivers the customer's messages in one order. */
static const char ws_push_script[] = "local n = redis.call('INCR', KEYS[1])\n"
                                     "redis.call('EXPIRE', KEYS[1], ARGV[4])\n"
                                     "local m = ARGV[1]\n"
                                     "local body\n"
                                     "if m == '{}' then body = '{\"seq\":' .. n .. '}'\n"
                                     "else body = '{\"seq\":' .. n .. ',' .. string.sub(m, 2) end\n"
                                     "local keep = tonumber(ARGV[2])\n"
                                     "if keep > 0 then\n"
                                     "  redis.call('LPUSH', KEYS[2], body)\n"
                                     "  redis.call('LTRIM', KEYS[2], 0, keep - 1)\n"
                                     "  redis.call('EXPIRE', KEYS[2], ARGV[3])\n"
                                     "end\n"
                                     "local r = redis.call('PUBLISH', KEYS[3], body)\n"
                                     "return {n, r}\n";

static void ws_defer_kick(ws_ctx *ctx);

/* ------------------------------------------------------------ outcomes */

void ws_op_fail(ws_op *op, cd_outcome outcome, int64_t retry_after_ms, const char *fmt, ...) {
    /* The worst outcome wins (FATAL over RETRY over OK); the first reason
     * of that outcome is kept. */
    if ((int)outcome < op->result) return;
    if ((int)outcome > op->result) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(op->reason, sizeof(op->reason), fmt, ap);
        va_end(ap);
    }
    op->result = (int)outcome;
    if (retry_after_ms > op->retry_after_ms) op->retry_after_ms = retry_after_ms;
}

void ws_op_finish(ws_op *op) {
    ws_batch *b = op->b;
    ws_ctx *ctx = b->ctx;
    int last = --b->pending == 0;
    ctx->pending--;
    if (op->result == CD_RECORD_OK && ctx->m_pushes) ctx->host->metric_add(ctx->m_pushes, 1);
    if (op->result != CD_RECORD_OK && ctx->host->log_enabled(ctx->inst, CD_LOG_DEBUG))
        ctx->host->log(ctx->inst, CD_LOG_DEBUG, "record %zu: %s: %s", op->index,
                       op->result == CD_RECORD_RETRY ? "RETRY" : "FATAL", op->reason);
    cd_batch *batch = b->batch;
    size_t index = op->index;
    cd_outcome outcome = (cd_outcome)op->result;
    int64_t retry = op->retry_after_ms;
    char reason[WS_REASON_MAX];
    memcpy(reason, op->reason, sizeof(reason));
    if (last) free(b);
    if ((ctx->stopping || ctx->flushes) && ctx->pending == 0) ws_defer_kick(ctx);
    ctx->host->record_done(batch, index, outcome, retry, outcome == CD_RECORD_OK ? NULL : reason);
}

/* --------------------------------------------------------------- push */

/* The record's customerId into ctx->cust: a string's content or a
 * number's text.  0, or -1 with op failed FATAL. */
static int ws_render_customer(ws_ctx *ctx, ws_op *op, const cd_record *rec) {
    const cd_host *h = ctx->host;
    char err[WS_REASON_MAX] = "";
    ctx->render.len = 0;
    if (h->template_render(ctx->customer, rec, 0, &ctx->render, err, sizeof(err)) < 0) {
        ws_op_fail(op, CD_RECORD_FATAL, 0, "customer %s: %s", ctx->customer_ptr, err);
        return -1;
    }
    char c = ctx->render.len ? ctx->render.data[0] : '\0';
    if (!(c == '"' || c == '-' || (c >= '0' && c <= '9'))) {
        ws_op_fail(op, CD_RECORD_FATAL, 0, "customer %s: must be a string or a number, not %.40s",
                   ctx->customer_ptr, ctx->render.data ? ctx->render.data : "");
        return -1;
    }
    ctx->render.len = 0;
    if (h->template_render(ctx->customer, rec, 1, &ctx->render, err, sizeof(err)) < 0) {
        ws_op_fail(op, CD_RECORD_FATAL, 0, "customer %s: %s", ctx->customer_ptr, err);
        return -1;
    }
    if (ctx->render.len == 0 || ctx->render.len > WS_ID_MAX ||
        memchr(ctx->render.data, '\0', ctx->render.len) != NULL) {
        ws_op_fail(op, CD_RECORD_FATAL, 0,
                   "customer %s: must be 1 to %d bytes without NUL characters", ctx->customer_ptr,
                   WS_ID_MAX);
        return -1;
    }
    ctx->cust.len = 0;
    if (pbuf_append(&ctx->cust, ctx->render.data, ctx->render.len) < 0) {
        ws_op_fail(op, CD_RECORD_RETRY, 0, "out of memory");
        return -1;
    }
    return 0;
}

/* The message into ctx->msg (compact JSON object).  0, or -1 with op
 * failed. */
static int ws_render_message(ws_ctx *ctx, ws_op *op, const cd_record *rec) {
    char err[WS_REASON_MAX] = "";
    ctx->render.len = 0;
    if (ctx->host->template_render(ctx->message, rec, 0, &ctx->render, err, sizeof(err)) < 0) {
        ws_op_fail(op, CD_RECORD_FATAL, 0, "message: %s", err);
        return -1;
    }
    if (ctx->render.len < 2 || ctx->render.data[0] != '{' ||
        ctx->render.data[ctx->render.len - 1] != '}') {
        ws_op_fail(op, CD_RECORD_FATAL, 0, "message: renders to %.40s..., not a JSON object",
                   ctx->render.data ? ctx->render.data : "");
        return -1;
    }
    ctx->msg.len = 0;
    if (pbuf_append(&ctx->msg, ctx->render.data, ctx->render.len) < 0) {
        ws_op_fail(op, CD_RECORD_RETRY, 0, "out of memory");
        return -1;
    }
    return 0;
}

static int ws_key(pbuf *b, const char *prefix, const char *kind, const char *id, size_t n) {
    b->len = 0;
    return pbuf_append(b, prefix, strlen(prefix)) || pbuf_append(b, kind, strlen(kind)) ||
                   pbuf_append(b, id, n)
               ? CD_ERR_NOMEM
               : 0;
}

static void ws_on_push(void *opaque, const cd_redis_reply *reply) {
    ws_op *op = opaque;
    if (reply->error < 0)
        ws_op_fail(op, CD_RECORD_RETRY, 0, "Redis did not answer: %s", reply->str);
    else if (reply->type == CD_REDIS_ERROR)
        ws_op_fail(op, CD_RECORD_RETRY, 0, "Redis refused the push: %s", reply->str);
    ws_op_finish(op);
}

/* Sends the push EVAL; 0, or -1 with op failed RETRY (not sent). */
static int ws_push_redis(ws_ctx *ctx, ws_op *op) {
    const char *prefix = ctx->opts.prefix; /* the server's: a different one fails start */
    if (ws_key(&ctx->key1, prefix, "seq:", ctx->cust.data, ctx->cust.len) < 0 ||
        ws_key(&ctx->key2, prefix, "replay:", ctx->cust.data, ctx->cust.len) < 0 ||
        ws_key(&ctx->key3, prefix, "push:", ctx->cust.data, ctx->cust.len) < 0) {
        ws_op_fail(op, CD_RECORD_RETRY, 0, "out of memory");
        return -1;
    }
    char keep[24], rttl[24], sttl[24];
    snprintf(keep, sizeof(keep), "%zu", ctx->opts.replay_size);
    snprintf(rttl, sizeof(rttl), "%d", WS_REPLAY_TTL_S);
    snprintf(sttl, sizeof(sttl), "%d", WS_SEQ_TTL_S);
    const char *argv[] = {"EVAL",         ws_push_script, "3",  ctx->key1.data, ctx->key2.data,
                          ctx->key3.data, ctx->msg.data,  keep, rttl,           sttl};
    size_t lens[] = {4,
                     sizeof(ws_push_script) - 1,
                     1,
                     ctx->key1.len,
                     ctx->key2.len,
                     ctx->key3.len,
                     ctx->msg.len,
                     strlen(keep),
                     strlen(rttl),
                     strlen(sttl)};
    char err[WS_REASON_MAX] = "";
    int r = ctx->host->redis_command(ctx->inst, ws_on_push, op, 10, argv, lens, err, sizeof(err));
    if (r < 0) {
        ws_op_fail(op, CD_RECORD_RETRY, 0, "Redis is unavailable: %s", err);
        return -1;
    }
    return 0;
}

static int ws_write(void *opaque, cd_batch *batch) {
    ws_ctx *ctx = opaque;
    size_t count = batch->count;
    if (ctx->stopping || !ctx->started) return CD_ERR_BUSY;
    ws_batch *b = calloc(1, sizeof(*b) + count * sizeof(ws_op));
    if (b == NULL) return CD_ERR_NOMEM;
    b->ctx = ctx;
    b->batch = batch;
    b->count = count;
    b->pending = count;
    ctx->pending += count;
    int redis_down = 0;
    for (size_t i = 0; i < count; i++) {
        ws_op *op = &b->ops[i];
        op->b = b;
        op->index = i;
    }
    /* Nothing of b is touched after the report of its last record: it may
     * be freed by it. */
    for (size_t i = 0; i < count; i++) {
        ws_op *op = &b->ops[i];
        const cd_record *rec = &batch->records[i];
        if (redis_down) {
            ws_op_fail(op, CD_RECORD_RETRY, 0, "Redis is unavailable");
            ws_op_finish(op);
            continue;
        }
        if (ws_render_customer(ctx, op, rec) < 0 || ws_render_message(ctx, op, rec) < 0) {
            ws_op_finish(op);
            continue;
        }
        if (ctx->mode == WS_MODE_APIGATEWAY) {
            ws_apigw_push(ctx, op, ctx->cust.data, ctx->cust.len, ctx->msg.data, ctx->msg.len);
        } else if (ws_server_uses_redis(ctx->server)) {
            if (ws_push_redis(ctx, op) < 0) {
                redis_down = 1;
                ws_op_finish(op);
            }
        } else {
            uint64_t seq = 0;
            if (ws_server_push_local(ctx->server, ctx->cust.data, ctx->cust.len, ctx->msg.data,
                                     ctx->msg.len, &seq) < 0)
                ws_op_fail(op, CD_RECORD_RETRY, 0, "out of memory");
            ws_op_finish(op);
        }
    }
    return 0;
}

/* ----------------------------------------------------- flush and stop */

static void ws_on_defer_closed(uv_handle_t *h) {
    ws_ctx *ctx = ws_container_of((uv_timer_t *)h, ws_ctx, defer);
    ctx->defer_open = 0;
    cd_done_cb cb = ctx->stop_cb;
    ctx->stop_cb = NULL;
    if (cb) cb(ctx->stop_opaque, 0);
}

static void ws_on_detached(void *opaque, int status) {
    ws_ctx *ctx = opaque;
    ctx->server = NULL;
    ctx->stop_done = 1;
    if (ctx->defer_open)
        uv_close((uv_handle_t *)&ctx->defer, ws_on_defer_closed);
    else if (ctx->stop_cb) {
        cd_done_cb cb = ctx->stop_cb;
        ctx->stop_cb = NULL;
        cb(ctx->stop_opaque, 0);
    }
}

static void ws_on_defer(uv_timer_t *t) {
    ws_ctx *ctx = ws_container_of(t, ws_ctx, defer);
    if (ctx->pending) return;
    while (ctx->flushes) {
        ws_waiter *w = ctx->flushes;
        ctx->flushes = w->next;
        w->cb(w->opaque, 0);
        free(w);
    }
    if (!ctx->stopping || ctx->stop_done || ctx->stop_cb == NULL) return;
    if (ctx->pool) {
        ctx->host->http_pool_free(ctx->pool);
        ctx->pool = NULL;
    }
    if (ctx->server) {
        ctx->stop_done = 1;
        ws_server_detach(ctx, ws_on_detached, ctx);
    } else {
        ws_on_detached(ctx, 0);
    }
}

static void ws_defer_kick(ws_ctx *ctx) {
    if (ctx->defer_open) uv_timer_start(&ctx->defer, ws_on_defer, 0, 0);
}

static int ws_flush(void *opaque, cd_done_cb cb, void *cb_opaque) {
    ws_ctx *ctx = opaque;
    ws_waiter *w = calloc(1, sizeof(*w));
    if (w == NULL) return CD_ERR_NOMEM;
    w->cb = cb;
    w->opaque = cb_opaque;
    w->next = ctx->flushes;
    ctx->flushes = w;
    if (ctx->pending == 0) ws_defer_kick(ctx);
    return 0;
}

static int ws_stop(void *opaque, cd_done_cb cb, void *cb_opaque) {
    ws_ctx *ctx = opaque;
    ctx->stopping = 1;
    ctx->stop_cb = cb;
    ctx->stop_opaque = cb_opaque;
    if (!ctx->defer_open) {
        ws_on_detached(ctx, 0);
        return 0;
    }
    if (ctx->pending == 0) ws_defer_kick(ctx);
    return 0;
}

/* ------------------------------------------------------------ lifecycle */

static int ws_init(const cd_host *host, cd_instance *inst, const cd_config *cfg, void **out,
                   char *errbuf, size_t errlen) {
    ws_ctx *ctx = NULL;
    int r = ws_conf_create(host, inst, cfg, &ctx, errbuf, errlen);
    if (r < 0) return r;
    *out = ctx;
    return 0;
}

static void ws_on_probe(void *opaque, const cd_redis_reply *reply) {
    (void)opaque;
    (void)reply;
}

static int ws_start(void *opaque, char *errbuf, size_t errlen) {
    ws_ctx *ctx = opaque;
    const cd_host *h = ctx->host;
    ctx->loop = h->loop(ctx->inst);
    if (h->metric_register) {
        ctx->m_pushes =
            h->metric_register(ctx->inst, CD_METRIC_COUNTER, "sink_websocket_pushes_total",
                               "records pushed (reached Redis or the in-process table)");
        if (ctx->mode == WS_MODE_SERVER) {
            ctx->m_conns =
                h->metric_register(ctx->inst, CD_METRIC_GAUGE, "sink_websocket_connections",
                                   "WebSocket connections open on this sink's server");
            ctx->m_delivered = h->metric_register(
                ctx->inst, CD_METRIC_COUNTER, "sink_websocket_messages_delivered_total",
                "messages written to client sockets by this sink's server");
            ctx->m_slow = h->metric_register(ctx->inst, CD_METRIC_COUNTER,
                                             "sink_websocket_slow_client_closes_total",
                                             "clients closed with 1008 for a full send queue");
            ctx->m_auth = h->metric_register(ctx->inst, CD_METRIC_COUNTER,
                                             "sink_websocket_auth_failures_total",
                                             "upgrade requests refused with 401");
            ctx->m_contexts = h->metric_register(
                ctx->inst, CD_METRIC_GAUGE, "sink_websocket_protocol_contexts",
                "connections holding a wslay context (protocol work in progress)");
        } else {
            ctx->m_stale = h->metric_register(ctx->inst, CD_METRIC_COUNTER,
                                              "sink_websocket_stale_connections_total",
                                              "connections removed from the registry on 410 Gone");
        }
    }
    if (ctx->mode == WS_MODE_APIGATEWAY) {
        if (!CD_HOST_HAS(h, redis_command) || !CD_HOST_HAS(h, http_call)) {
            snprintf(errbuf, errlen, "mode apigateway: the engine has no Redis or HTTP client");
            return CD_ERR_UNSUPPORTED;
        }
        const char *ping[] = {"PING"};
        char err[256] = "";
        int r = h->redis_command(ctx->inst, ws_on_probe, NULL, 1, ping, NULL, err, sizeof(err));
        if (r == CD_ERR_UNSUPPORTED) {
            snprintf(errbuf, errlen,
                     "mode apigateway: reads the connection registry in Redis, but %s (set "
                     "redis_url in the engine config)",
                     err);
            return CD_ERR_INVALID;
        }
        r = h->aws_credentials_check(ctx->inst, errbuf, errlen);
        if (r < 0) return r;
        ctx->pool = h->http_pool_new(ctx->inst, ctx->max_in_flight, errbuf, errlen);
        if (ctx->pool == NULL) return CD_ERR_IO;
    } else {
        int r = ws_server_attach(ctx, errbuf, errlen);
        if (r < 0) return r;
    }
    uv_timer_init(ctx->loop, &ctx->defer);
    ctx->defer_open = 1;
    ctx->started = 1;
    return 0;
}

static void ws_destroy(void *opaque) {
    ws_ctx *ctx = opaque;
    if (ctx == NULL) return;
    /* A failed start may leave a pool; stop frees it otherwise. */
    if (ctx->pool) ctx->host->http_pool_free(ctx->pool);
    while (ctx->flushes) {
        ws_waiter *w = ctx->flushes;
        ctx->flushes = w->next;
        free(w);
    }
    ws_conf_destroy(ctx);
}

static const cd_sink_ops ws_sink_ops = {
    .init = ws_init,
    .start = ws_start,
    .write = ws_write,
    .flush = ws_flush,
    .stop = ws_stop,
    .destroy = ws_destroy,
};

static const cd_plugin_desc ws_plugin_desc = {
    .abi_version = CD_ABI_VERSION,
    .struct_size = sizeof(cd_plugin_desc),
    .name = "websocket",
    .version = "0.1.0",
    .description = "Push records to browsers: a ws:// server (JWT, resume, Redis fan-out) or API "
                   "Gateway @connections",
    .kind = CD_PLUGIN_SINK,
    .options = ws_options,
    .sink = &ws_sink_ops,
};

CD_PLUGIN_DEFINE(&ws_plugin_desc)
