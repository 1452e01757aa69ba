/*
 * source-http — HTTP ingest into Kafka: the front door of the pipelines.
 *
 * One promise: a 202 means the event is stored in Kafka (the engine's
 * idempotent producer, acks=all, answered from the delivery report);
 * anything else means it may not be.  Clients that get a 503 retry with the
 * same eventId, and sinks write idempotently keyed by it, so a retry after
 * an event that was stored late has no visible effect.
 *
 * The files of this plugin (the layout of plugins/sink-file/):
 *   http.c         the callbacks, the request handler and the descriptor
 *   http_conf.c    options -> context (init) and back (destroy)
 *   http_schema.c  JSON pointers and the JSON Schema subset events are
 *                  checked against
 *   http_auth.c    API keys (stored as SHA-256 hashes) and JWTs
 *   http_ws.c      ws_routes: API Gateway WebSocket $connect/$disconnect
 *                  into the Redis connection registry
 *   http.h         the context struct and friends
 *
 * The path of one request through this file:
 *   http_on_request()     route, method, auth, topic, content type
 *   http_ingest()         one event or an NDJSON batch -> an http_pending
 *   http_submit_event()   parse, assign eventId, validate, key, produce
 *   http_on_delivery()    the producer's report: 202 or 503 for the event
 *   http_on_ack_timer()   no report within ack_timeout_ms: 503
 *   http_pending_answer() every event has an outcome: one HTTP answer
 *
 * Everything runs on the engine's loop; nothing here blocks it (the schema
 * files are read once, in init).
 */
#include "http.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

/* ------------------------------------------------------------ config map
 * Keep README.md's options table identical to what `connectd plugins`
 * prints from this. */
static const cd_option http_options[] = {
    {
        .name = "listen",
        .type = CD_OPT_STRING,
        .default_value = "127.0.0.1:8080",
        .description = "Address to serve on (numeric host:port; port 0 picks a free one, logged "
                       "as \"listening on HOST:PORT\")",
    },
    {
        .name = "topics",
        .type = CD_OPT_STRING_LIST,
        .required = 1,
        .description = "Topics clients may post to (POST /v1/events/{topic}); any other is 404",
    },
    {
        .name = "key",
        .type = CD_OPT_STRING,
        .default_value = "/customerId",
        .description = "JSON pointer to each event's Kafka key (a string, or a number's text)",
    },
    {
        .name = "schemas_dir",
        .type = CD_OPT_STRING,
        .default_value = "schemas",
        .description = "Directory of {topic}.json schemas, read at load; relative to connectd's "
                       "working directory",
    },
    {
        .name = "max_body",
        .type = CD_OPT_INT,
        .default_value = "1048576",
        .description = "Largest request body in bytes, 1 B to 1 GiB (413 above)",
    },
    {
        .name = "max_batch",
        .type = CD_OPT_INT,
        .default_value = "1000",
        .has_bounds = 1,
        .min = 1,
        .max = 100000,
        .description = "Most events in one NDJSON request (413 above)",
    },
    {
        .name = "max_connections",
        .type = CD_OPT_INT,
        .default_value = "10000",
        .has_bounds = 1,
        .min = 1,
        .max = 100000,
        .description = "Open client connections served at once (503 above)",
    },
    {
        .name = "header_timeout_ms",
        .type = CD_OPT_INT,
        .default_value = "10000",
        .has_bounds = 1,
        .min = 0,
        .max = 600000,
        .description = "Time a client has to send a request's head (408 after; 0 = none)",
    },
    {
        .name = "body_timeout_ms",
        .type = CD_OPT_INT,
        .default_value = "30000",
        .has_bounds = 1,
        .min = 0,
        .max = 600000,
        .description = "Time a client has to send a request's body (408 after; 0 = none)",
    },
    {
        .name = "idle_timeout_ms",
        .type = CD_OPT_INT,
        .default_value = "60000",
        .has_bounds = 1,
        .min = 0,
        .max = 600000,
        .description = "Keep-alive connections idle this long are closed (0 = never)",
    },
    {
        .name = "ack_timeout_ms",
        .type = CD_OPT_INT,
        .default_value = "10000",
        .has_bounds = 1,
        .min = 1,
        .max = 600000,
        .description = "Longest wait for Kafka's delivery report; then 503 (the event may still "
                       "be stored)",
    },
    {
        .name = "retry_after_s",
        .type = CD_OPT_INT,
        .default_value = "1",
        .has_bounds = 1,
        .min = 0,
        .max = 3600,
        .description = "Retry-After seconds sent with every 503",
    },
    {
        .name = "api_keys",
        .type = CD_OPT_STRING_LIST,
        .description = "Accepted API keys as \"sha256:<hex>\" hashes; sent as X-Api-Key or "
                       "Authorization: Bearer",
    },
    {
        .name = "jwt_secret",
        .type = CD_OPT_STRING,
        .description = "HS256 secret: accept Authorization: Bearer JWTs signed with it",
    },
    {
        .name = "jwt_public_key",
        .type = CD_OPT_STRING,
        .description = "RS256 public key (PEM): accept Authorization: Bearer JWTs it verifies",
    },
    {
        .name = "ws_routes",
        .type = CD_OPT_BOOL,
        .default_value = "false",
        .description = "Serve POST /v1/ws/connect and /v1/ws/disconnect (API Gateway WebSocket "
                       "integration) into the Redis connection registry; needs redis_url",
    },
    {
        .name = "ws_key_prefix",
        .type = CD_OPT_STRING,
        .default_value = "ws:",
        .description = "Prefix of the registry's Redis keys ({prefix}customer:{id}, "
                       "{prefix}connection:{id}); sink-websocket must use the same",
    },
    {0},
};

static void http_maybe_finish_stop(http_ctx *ctx);

/* ---------------------------------------------------------------- lists */

static void http_list_push(http_list *l, http_pending *p) {
    p->prev = l->tail;
    p->next = NULL;
    if (l->tail)
        l->tail->next = p;
    else
        l->head = p;
    l->tail = p;
    l->count++;
}

static void http_list_remove(http_list *l, http_pending *p) {
    if (p->prev)
        p->prev->next = p->next;
    else
        l->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        l->tail = p->prev;
    p->prev = p->next = NULL;
    l->count--;
}

static void http_metric_add(http_ctx *ctx, cd_metric *m, double delta) {
    if (m && delta != 0 && ctx->host->metric_add) ctx->host->metric_add(m, delta);
}

/* ------------------------------------------------------------- answers */

/* Answers req with `body` as compact JSON (takes the reference) and the
 * Cache-Control header plus up to two more. */
void http_send_json(http_ctx *ctx, cd_http_request *req, int status, json_t *body, const char *h1,
                    const char *h2) {
    const char *headers[] = {"Cache-Control: no-store", h1, h2, NULL};
    if (h1 == NULL) headers[1] = h2, headers[2] = NULL;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL ||
        ctx->host->http_respond(req, status, "application/json", text, strlen(text), headers) < 0) {
        /* Out of memory: an empty 500 still gives the request back. */
        if (ctx->host->http_respond(req, 500, NULL, NULL, 0, NULL) < 0)
            ctx->host->log(ctx->inst, CD_LOG_ERROR, "cannot answer a request (out of memory)");
    }
    free(text);
}

/* {"error": error} (and "field" when field is not NULL). */
json_t *http_json_text(const char *text) {
    json_t *s = json_string(text);
    if (s) return s;
    size_t n = strlen(text);
    char *fixed = malloc(3 * n + 1); /* each bad byte becomes 3 */
    if (!fixed) return json_string("");
    const unsigned char *p = (const unsigned char *)text;
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        size_t len = http_utf8_len(p + i, n - i);
        if (len) {
            memcpy(fixed + w, p + i, len);
            w += len;
            i += len;
        } else {
            memcpy(fixed + w, "\xEF\xBF\xBD", 3);
            w += 3;
            i++;
        }
    }
    s = json_stringn(fixed, w);
    free(fixed);
    return s ? s : json_string("");
}

void http_send_error(http_ctx *ctx, cd_http_request *req, int status, const char *error,
                     const char *field, const char *h1, const char *h2) {
    json_t *o = json_object();
    json_object_set_new(o, "error", http_json_text(error));
    if (field) json_object_set_new(o, "field", http_json_text(field));
    http_send_json(ctx, req, status, o, h1, h2);
}

/* --------------------------------------------------------------- events */

static void http_event_settle(http_event *ev, int status, const char *error, const char *field) {
    ev->status = status;
    if (error) ev->error = strdup(error);
    if (field) ev->field = strdup(field);
    ev->owner->unsettled--;
}

static json_t *http_event_result(const http_pending *p, const http_event *ev) {
    json_t *o = json_object();
    if (p->batch) {
        json_object_set_new(o, "line", json_integer((json_int_t)ev->line));
        json_object_set_new(o, "status", json_integer(ev->status));
    }
    if (ev->status == 202) {
        json_object_set_new(o, "topic", json_string(p->topic->name));
        json_object_set_new(o, "partition", json_integer(ev->partition));
        json_object_set_new(o, "offset", json_integer(ev->offset));
        json_object_set_new(o, "eventId", json_string(ev->event_id));
        return o;
    }
    json_object_set_new(o, "error", http_json_text(ev->error ? ev->error : "failed"));
    if (ev->status == 400)
        json_object_set_new(o, "field",
                            ev->field_null || !ev->field ? json_null() : http_json_text(ev->field));
    /* A 503 carries the eventId so that the retry can reuse it (the event
     * may be stored after all). */
    if (ev->status == 503 && ev->event_id)
        json_object_set_new(o, "eventId", json_string(ev->event_id));
    return o;
}

/* The decimal text of v at out (room for 20 bytes); its length.  What
 * "%lld" writes, without snprintf. */
static size_t http_fmt_int(char *out, int64_t v) {
    char tmp[20];
    size_t n = 0, k = 0;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) out[k++] = '-';
    while (n)
        out[k++] = tmp[--n];
    return k;
}

/* 1 when s[0..n) goes into a JSON string as it is (no '"', '\\' or
 * control character: what pbuf_json_string would escape). */
static int http_json_plain(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"' || c == '\\') return 0;
    }
    return 1;
}

/* The answer to one stored event, {"topic":..,"partition":..,"offset":..,
 * "eventId":..} as http_event_result + http_send_json would write it,
 * without a jansson tree and its dozen allocations per request.  Returns
 * -1 (nothing sent) when memory runs out. */
static int http_send_stored(http_ctx *ctx, http_pending *p, const http_event *ev) {
    pbuf *b = &ctx->answer;
    const http_topic *t = p->topic;
    const char *id = ev->event_id ? ev->event_id : "";
    size_t idlen = strlen(id);
    static const char off[] = ",\"offset\":", eid[] = ",\"eventId\":";
    /* The head {"topic":"...","partition": was written once, in init. */
    b->len = 0;
    if (pbuf_reserve(b, t->answer_head_len + 20 + sizeof(off) + 20 + sizeof(eid) + 2) < 0)
        return -1;
    char *o = b->data;
    memcpy(o, t->answer_head, t->answer_head_len);
    o += t->answer_head_len;
    o += http_fmt_int(o, ev->partition);
    memcpy(o, off, sizeof(off) - 1);
    o += sizeof(off) - 1;
    o += http_fmt_int(o, ev->offset);
    memcpy(o, eid, sizeof(eid) - 1);
    o += sizeof(eid) - 1;
    b->len = (size_t)(o - b->data);
    if (http_json_plain(id, idlen)) {
        /* Nothing to escape (an assigned id never has anything). */
        if (pbuf_reserve(b, idlen + 3) < 0) return -1;
        o = b->data + b->len;
        *o++ = '"';
        memcpy(o, id, idlen);
        o += idlen;
        memcpy(o, "\"}", 3);
        b->len += idlen + 3;
    } else if (pbuf_json_string(b, id, idlen) < 0 || pbuf_append(b, "}", 1) < 0) {
        return -1;
    }
    static const char *const headers[] = {"Cache-Control: no-store", NULL};
    return ctx->host->http_respond(p->req, 202, "application/json", b->data, b->len, headers) < 0
               ? -1
               : 0;
}

/* A zeroed pending for n events: a single event's from the spares when
 * there is one (the steady state of one-event POSTs allocates nothing). */
static http_pending *http_pending_new(http_ctx *ctx, size_t n) {
    http_pending *p = NULL;
    if (n == 1 && ctx->spare) {
        p = ctx->spare;
        ctx->spare = p->next;
        ctx->nspare--;
        memset(p, 0, sizeof(*p) + sizeof(http_event));
        return p;
    }
    return calloc(1, sizeof(*p) + n * sizeof(http_event));
}

static void http_pending_free(http_pending *p) {
    for (size_t i = 0; i < p->nevents; i++) {
        if (p->events[i].event_id != p->events[i].id_inline) free(p->events[i].event_id);
        free(p->events[i].error);
        free(p->events[i].field);
    }
    http_ctx *ctx = p->ctx;
    if (ctx && p->nevents == 1 && ctx->nspare < HTTP_SPARE_MAX) {
        p->next = ctx->spare;
        ctx->spare = p;
        ctx->nspare++;
        return;
    }
    free(p);
}

/* Every event has its outcome: one answer for the request.  A single event
 * answers with its own status; a batch with 202 when every line was stored,
 * 503 when any line may be retried (so a client that only looks at the
 * status retries rather than loses), 400 when every line was rejected, and
 * 207 for stored and rejected lines mixed.  p moves to the draining list
 * while delivery reports are still due. */
static void http_pending_answer(http_pending *p) {
    http_ctx *ctx = p->ctx;
    size_t n202 = 0, n400 = 0, n503 = 0;
    for (size_t i = 0; i < p->nevents; i++) {
        int s = p->events[i].status;
        n202 += s == 202;
        n400 += s == 400;
        n503 += s == 503;
    }
    if (!p->batch && p->events[0].status == 202 && http_send_stored(ctx, p, &p->events[0]) == 0) {
        /* answered without building a tree: the common case */
    } else {
        int status;
        json_t *body;
        if (!p->batch) {
            status = p->events[0].status;
            body = http_event_result(p, &p->events[0]);
        } else {
            status = n503 ? 503 : n202 == p->nevents ? 202 : n400 == p->nevents ? 400 : 207;
            body = json_array();
            for (size_t i = 0; i < p->nevents; i++)
                json_array_append_new(body, http_event_result(p, &p->events[i]));
        }
        http_send_json(ctx, p->req, status, body, n503 ? ctx->retry_after : NULL, NULL);
    }
    p->req = NULL;
    http_metric_add(ctx, ctx->m_accepted, (double)n202);
    http_metric_add(ctx, ctx->m_rejected, (double)n400);
    http_metric_add(ctx, ctx->m_unavailable, (double)n503);

    if (p->where == HTTP_ON_WAITING) http_list_remove(&ctx->waiting, p);
    p->where = HTTP_ON_NONE;
    if (p->outstanding) {
        http_list_push(&ctx->draining, p);
        p->where = HTTP_ON_DRAINING;
    }
    if (ctx->m_inflight && ctx->host->metric_set)
        ctx->host->metric_set(ctx->m_inflight, (double)ctx->waiting.count);
    http_maybe_finish_stop(ctx);
}

/* Answers p if it is complete and nobody is still filling it in. */
static void http_pending_check(http_pending *p) {
    if (p->req && !p->submitting && p->unsettled == 0) http_pending_answer(p);
}

/* Frees p once it is answered and no delivery report can reach it. */
static void http_pending_release(http_pending *p) {
    if (p->req || p->submitting || p->outstanding) return;
    if (p->ctx && p->where == HTTP_ON_DRAINING) http_list_remove(&p->ctx->draining, p);
    http_pending_free(p);
}

/* The producer's delivery report for one event.  May come after the answer
 * (the ack timeout went first) and even after destroy(); then it only
 * counts down what p waits for. */
static void http_on_delivery(void *opaque, int status, const char *errmsg, int32_t partition,
                             int64_t offset) {
    http_event *ev = opaque;
    http_pending *p = ev->owner;
    http_ctx *ctx = p->ctx;
    p->outstanding--;
    if (ev->status == 0) {
        if (status == 0) {
            ev->partition = partition;
            ev->offset = offset;
            http_event_settle(ev, 202, NULL, NULL);
            if (ctx && ctx->delivery_failing) {
                ctx->delivery_failing = 0;
                ctx->host->log(ctx->inst, CD_LOG_INFO, "deliveries to Kafka succeed again");
            }
        } else if (status == CD_ERR_INVALID) {
            /* The host says the failure is permanent (e.g. the record is too
             * large for the broker): retrying cannot help. */
            char msg[HTTP_ERROR_MAX];
            snprintf(msg, sizeof(msg), "Kafka cannot take this event: %s",
                     errmsg ? errmsg : "refused");
            ev->field_null = 1;
            http_event_settle(ev, 400, msg, NULL);
        } else {
            char msg[HTTP_ERROR_MAX];
            snprintf(msg, sizeof(msg),
                     "Kafka did not store the event: %s; retry with the same "
                     "eventId",
                     errmsg ? errmsg : "delivery failed");
            http_event_settle(ev, 503, msg, NULL);
            if (ctx && !ctx->delivery_failing) {
                ctx->delivery_failing = 1;
                ctx->host->log(ctx->inst, CD_LOG_WARN,
                               "delivery to %s failed: %s (answering 503 until deliveries succeed "
                               "again)",
                               p->topic->name, errmsg ? errmsg : "?");
            }
        }
        http_pending_check(p);
    } else if (ctx && ctx->host->log_enabled(ctx->inst, CD_LOG_DEBUG)) {
        ctx->host->log(ctx->inst, CD_LOG_DEBUG,
                       "late delivery report for eventId %s (already answered %d): %s",
                       ev->event_id ? ev->event_id : "?", ev->status,
                       status == 0 ? "stored" : (errmsg ? errmsg : "failed"));
    }
    http_pending_release(p);
}

/* Requests whose ack timeout passed get 503 for the events still waiting;
 * their delivery reports may still come (and are then only counted). */
static void http_on_ack_timer(uv_timer_t *t) {
    http_ctx *ctx = http_container_of(t, http_ctx, ack_timer);
    uint64_t now = uv_now(ctx->loop);
    char msg[HTTP_ERROR_MAX];
    snprintf(msg, sizeof(msg),
             "no delivery report from Kafka within %" PRIu64
             " ms; the event may still be stored: retry with the same eventId",
             ctx->ack_timeout_ms);
    http_pending *p;
    while ((p = ctx->waiting.head) != NULL && p->deadline <= now) {
        for (size_t i = 0; i < p->nevents; i++)
            if (p->events[i].status == 0) http_event_settle(&p->events[i], 503, msg, NULL);
        http_pending_check(p); /* answers: p leaves the waiting list */
        http_pending_release(p);
    }
    if (ctx->waiting.head)
        uv_timer_start(t, http_on_ack_timer, ctx->waiting.head->deadline - now, 0);
}

/* A fresh random (version 4) UUID in out. */
static int http_uuid4(http_ctx *ctx, char *out) {
    if (ctx->random_used + 16 > HTTP_RANDOM_POOL) {
        size_t got = 0;
        while (got < HTTP_RANDOM_POOL) {
            ssize_t n = getrandom(ctx->random + got, HTTP_RANDOM_POOL - got, 0);
            if (n <= 0) return -1;
            got += (size_t)n;
        }
        ctx->random_used = 0;
    }
    unsigned char *b = ctx->random + ctx->random_used;
    ctx->random_used += 16;
    b[6] = (unsigned char)((b[6] & 0x0F) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3F) | 0x80);
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[k++] = '-';
        out[k++] = hex[b[i] >> 4];
        out[k++] = hex[b[i] & 0xF];
    }
    out[k] = '\0';
    return 0;
}

static int http_is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The record value: the posted text without surrounding whitespace and,
 * when the eventId was assigned here, with it inserted as the first member,
 * so that every other byte is the client's.  An assigned id is a UUID:
 * nothing in it needs escaping. */
static int http_value(http_ctx *ctx, const char *text, size_t len, const char *assigned_id,
                      size_t idlen, const char **out, size_t *outlen) {
    while (len && http_is_ws(text[0]))
        text++, len--;
    while (len && http_is_ws(text[len - 1]))
        len--;
    if (assigned_id == NULL) {
        *out = text;
        *outlen = len;
        return 0;
    }
    /* A JSON object: text[0] is '{' and text[len - 1] is '}'. */
    size_t i = 1;
    while (i < len && http_is_ws(text[i]))
        i++;
    int empty = text[i] == '}';
    static const char head[] = "{\"eventId\":\"";
    size_t need = sizeof(head) + idlen + 2 + len;
    if (need > ctx->scratch_cap) {
        char *s = realloc(ctx->scratch, need);
        if (s == NULL) return CD_ERR_NOMEM;
        ctx->scratch = s;
        ctx->scratch_cap = need;
    }
    char *s = ctx->scratch;
    size_t n = sizeof(head) - 1;
    memcpy(s, head, n);
    memcpy(s + n, assigned_id, idlen);
    n += idlen;
    s[n++] = '"';
    if (!empty) s[n++] = ',';
    memcpy(s + n, text + 1, len - 1);
    *out = s;
    *outlen = n + len - 1;
    return 0;
}

/* The eventId generator the check calls when an event has none. */
static int http_gen_id(void *opaque, char *out) {
    return http_uuid4(opaque, out);
}

/* Keeps the event's id for the answer (and the log): inline when it fits,
 * as UUIDs do. */
static int http_event_set_id(http_event *ev, const char *id, size_t len) {
    char *dst = ev->id_inline;
    if (len >= sizeof(ev->id_inline)) {
        dst = malloc(len + 1);
        if (dst == NULL) return -1;
    }
    memcpy(dst, id, len);
    dst[len] = '\0';
    ev->event_id = dst;
    return 0;
}

/* One event: check (JSON, eventId, schema, key), then produce.  Settles ev
 * unless it was handed to the producer (then its delivery report will). */
static void http_submit_event(http_ctx *ctx, http_pending *p, http_event *ev, const char *text,
                              size_t len) {
    char msg[HTTP_ERROR_MAX];
    http_verdict v;
    http_event_check(p->topic->schema, p->topic->fast, &ctx->key, p->batch, text, len, http_gen_id,
                     ctx, &v);
    if (v.status) {
        ev->field_null = v.field_null;
        http_event_settle(ev, v.status, v.error, v.field);
        goto out;
    }
    if (http_event_set_id(ev, v.event_id, v.event_id_len) < 0) {
        http_event_settle(ev, 503, "out of memory", NULL);
        goto out;
    }
    if (p->stop_producing) {
        /* An earlier line was refused: producing this one could reorder a
         * customer's events when the client resends the refused one. */
        http_event_settle(ev, 503,
                          "not produced: the producer refused an earlier event of this "
                          "request; retry with the same eventId",
                          NULL);
        goto out;
    }
    const char *value;
    size_t vlen;
    if (http_value(ctx, text, len, v.assigned ? v.event_id : NULL, v.event_id_len, &value, &vlen) <
        0) {
        http_event_settle(ev, 503, "out of memory", NULL);
        goto out;
    }
    char err[256] = "";
    p->outstanding++;
    int r = ctx->host->produce(ctx->inst, p->topic->name, v.key, v.keylen, value, vlen, NULL, 0,
                               http_on_delivery, ev, err, sizeof(err));
    if (r < 0) {
        p->outstanding--;
        if (r == CD_ERR_INVALID) {
            snprintf(msg, sizeof(msg), "Kafka cannot take this event: %s", err);
            ev->field_null = 1;
            http_event_settle(ev, 400, msg, NULL);
        } else {
            p->stop_producing = 1;
            snprintf(msg, sizeof(msg), "%s: %s; retry with the same eventId",
                     r == CD_ERR_BUSY ? "the producer queue is full"
                                      : "the producer refused the event",
                     err);
            http_event_settle(ev, 503, msg, NULL);
        }
    }
out:
    http_verdict_release(&v);
}

static int http_blank(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (!http_is_ws(s[i])) return 0;
    return 1;
}

/* A POST that passed the checks on its head: its event(s) go to Kafka. */
static void http_ingest(http_ctx *ctx, cd_http_request *req, const http_topic *topic, int batch,
                        const char *body, size_t len) {
    size_t n = 1;
    if (batch) {
        n = 0;
        for (size_t i = 0; i < len;) {
            const char *nl = memchr(body + i, '\n', len - i);
            size_t end = nl ? (size_t)(nl - body) : len;
            if (!http_blank(body + i, end - i)) n++;
            i = end + 1;
        }
        if (n == 0) {
            http_send_error(ctx, req, 400, "the batch holds no events", NULL, NULL, NULL);
            return;
        }
        if (n > ctx->max_batch) {
            char msg[128];
            snprintf(msg, sizeof(msg), "more than %zu events in one request (max_batch)",
                     ctx->max_batch);
            http_send_error(ctx, req, 413, msg, NULL, NULL, NULL);
            return;
        }
    }
    http_pending *p = http_pending_new(ctx, n);
    if (p == NULL) {
        http_send_error(ctx, req, 503, "out of memory", NULL, ctx->retry_after, NULL);
        return;
    }
    p->ctx = ctx;
    p->req = req;
    p->topic = topic;
    p->batch = batch;
    p->nevents = n;
    p->unsettled = n;
    p->submitting = 1;
    if (!batch) {
        p->events[0].owner = p;
        http_submit_event(ctx, p, &p->events[0], body, len);
    } else {
        size_t k = 0, line = 0;
        for (size_t i = 0; i < len && k < n;) {
            const char *nl = memchr(body + i, '\n', len - i);
            size_t end = nl ? (size_t)(nl - body) : len;
            line++;
            if (!http_blank(body + i, end - i)) {
                http_event *ev = &p->events[k++];
                ev->owner = p;
                ev->line = line;
                http_submit_event(ctx, p, ev, body + i, end - i);
            }
            i = end + 1;
        }
    }
    p->submitting = 0;
    if (p->unsettled) {
        p->deadline = uv_now(ctx->loop) + ctx->ack_timeout_ms;
        http_list_push(&ctx->waiting, p);
        p->where = HTTP_ON_WAITING;
        if (ctx->waiting.head == p)
            uv_timer_start(&ctx->ack_timer, http_on_ack_timer, ctx->ack_timeout_ms, 0);
        if (ctx->m_inflight && ctx->host->metric_set)
            ctx->host->metric_set(ctx->m_inflight, (double)ctx->waiting.count);
    }
    http_pending_check(p);
    http_pending_release(p);
}

/* --------------------------------------------------------------- routing */

/* 1: application/json, 2: NDJSON, 0: anything else.  Parameters are
 * ignored except a charset, which must be UTF-8 (RFC 8259 JSON is). */
static int http_media_type(const char *ct) {
    if (ct == NULL) return 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, "; \t");
    int kind = 0;
    if (n == 16 && strncasecmp(ct, "application/json", n) == 0)
        kind = 1;
    else if ((n == 20 && strncasecmp(ct, "application/x-ndjson", n) == 0) ||
             (n == 18 && strncasecmp(ct, "application/ndjson", n) == 0))
        kind = 2;
    if (!kind) return 0;
    for (const char *s = strchr(ct + n, ';'); s; s = strchr(s + 1, ';')) {
        const char *a = s + 1;
        while (*a == ' ' || *a == '\t')
            a++;
        if (strncasecmp(a, "charset=", 8) != 0) continue;
        a += 8;
        if (*a == '"') a++;
        if (strncasecmp(a, "utf-8", 5) != 0 && strncasecmp(a, "utf8", 4) != 0) return 0;
    }
    return kind;
}

static void http_healthz(http_ctx *ctx, cd_http_request *req, const char *method) {
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        http_send_error(ctx, req, 405, "method not allowed", NULL, "Allow: GET, HEAD", NULL);
        return;
    }
    /* Paused or stopping: a load balancer should send traffic elsewhere. */
    const char *state = ctx->stopping ? "stopping" : ctx->paused ? "paused" : "ok";
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string(state));
    http_send_json(ctx, req, strcmp(state, "ok") == 0 ? 200 : 503, o,
                   strcmp(state, "ok") == 0 ? NULL : ctx->retry_after, NULL);
}

/* Checks the request's credentials when auth is configured: 0 (and the
 * JWT's sub in *sub when sub is not NULL), or -1 after answering 401. */
static int http_authorize(http_ctx *ctx, cd_http_request *req, char **sub) {
    const cd_host *host = ctx->host;
    if (sub) *sub = NULL;
    if (!http_auth_enabled(&ctx->auth)) return 0;
    char why[128] = "";
    http_auth_result a =
        http_auth_check_sub(&ctx->auth, host->http_header(req, "x-api-key"),
                            host->http_header(req, "authorization"), sub, why, sizeof(why));
    if (a == HTTP_AUTH_OK) return 0;
    http_metric_add(ctx, ctx->m_unauthorized, 1);
    if (host->log_enabled(ctx->inst, CD_LOG_DEBUG))
        host->log(ctx->inst, CD_LOG_DEBUG, "401 for %s: %s", host->http_peer(req), why);
    http_send_error(ctx, req, 401,
                    a == HTTP_AUTH_MISSING ? "authentication required" : "invalid credentials",
                    NULL,
                    a == HTTP_AUTH_MISSING ? "WWW-Authenticate: Bearer realm=\"connectd\""
                                           : "WWW-Authenticate: Bearer realm=\"connectd\", "
                                             "error=\"invalid_token\"",
                    NULL);
    return -1;
}

/* POST /v1/ws/connect or /v1/ws/disconnect (ws_routes). */
static void http_ws_route(http_ctx *ctx, cd_http_request *req, const char *method, int connect) {
    if (ctx->stopping) {
        http_send_error(ctx, req, 503, "shutting down: retry on another instance", NULL,
                        ctx->retry_after, NULL);
        return;
    }
    if (strcmp(method, "POST") != 0) {
        http_send_error(ctx, req, 405, "method not allowed: use POST", NULL, "Allow: POST", NULL);
        return;
    }
    char *sub = NULL;
    if (http_authorize(ctx, req, &sub) < 0) return;
    const char *ct = ctx->host->http_header(req, "content-type");
    if (ct && http_media_type(ct) != 1) {
        http_send_error(ctx, req, 415, "Content-Type must be application/json", NULL, NULL, NULL);
    } else {
        http_ws_handle(ctx, req, connect, sub);
    }
    free(sub);
}

static void http_on_request(cd_http_request *req, void *opaque) {
    http_ctx *ctx = opaque;
    const cd_host *host = ctx->host;
    http_metric_add(ctx, ctx->m_requests, 1);
    const char *method = host->http_method(req);
    const char *path = host->http_path(req);

    if (strcmp(path, "/healthz") == 0) {
        http_healthz(ctx, req, method);
        return;
    }
    if (ctx->ws_routes &&
        (strcmp(path, "/v1/ws/connect") == 0 || strcmp(path, "/v1/ws/disconnect") == 0)) {
        http_ws_route(ctx, req, method, strcmp(path, "/v1/ws/connect") == 0);
        return;
    }
    static const char prefix[] = "/v1/events/";
    if (strncmp(path, prefix, sizeof(prefix) - 1) != 0 || path[sizeof(prefix) - 1] == '\0') {
        http_send_error(ctx, req, 404, "not found: events go to POST /v1/events/{topic}", NULL,
                        NULL, NULL);
        return;
    }
    const char *topic_name = path + sizeof(prefix) - 1;
    if (ctx->stopping || ctx->paused) {
        http_send_error(ctx, req, 503,
                        ctx->stopping ? "shutting down: retry on another instance"
                                      : "ingest is paused",
                        NULL, ctx->retry_after, NULL);
        http_metric_add(ctx, ctx->m_unavailable, 1);
        return;
    }
    if (strcmp(method, "POST") != 0) {
        http_send_error(ctx, req, 405, "method not allowed: use POST", NULL, "Allow: POST", NULL);
        return;
    }
    if (http_authorize(ctx, req, NULL) < 0) return;
    const http_topic *topic = http_conf_topic(ctx, topic_name);
    if (topic == NULL) {
        char msg[160];
        snprintf(msg, sizeof(msg), "unknown topic \"%.100s\"", topic_name);
        http_send_error(ctx, req, 404, msg, NULL, NULL, NULL);
        return;
    }
    int kind = http_media_type(host->http_header(req, "content-type"));
    if (kind == 0) {
        http_send_error(ctx, req, 415,
                        "Content-Type must be application/json (one event) or "
                        "application/x-ndjson (a batch)",
                        NULL, NULL, NULL);
        return;
    }
    size_t len = 0;
    const char *body = host->http_body(req, &len);
    http_ingest(ctx, req, topic, kind == 2, body, len);
}

/* ------------------------------------------------------------ lifecycle */

static int http_init(const cd_host *host, cd_instance *inst, const cd_config *cfg, void **ctx,
                     char *errbuf, size_t errlen) {
    http_ctx *c = NULL;
    int r = http_conf_create(host, inst, cfg, &c, errbuf, errlen);
    if (r < 0) return r;
    *ctx = c;
    return 0;
}

static void http_register_metrics(http_ctx *ctx) {
    const cd_host *h = ctx->host;
    if (h->metric_register == NULL) return;
    ctx->m_requests = h->metric_register(ctx->inst, CD_METRIC_COUNTER, "source_http_requests_total",
                                         "HTTP requests handled");
    ctx->m_accepted =
        h->metric_register(ctx->inst, CD_METRIC_COUNTER, "source_http_events_accepted_total",
                           "events answered 202: stored in Kafka");
    ctx->m_rejected =
        h->metric_register(ctx->inst, CD_METRIC_COUNTER, "source_http_events_rejected_total",
                           "events answered 400: not valid for their topic");
    ctx->m_unavailable = h->metric_register(
        ctx->inst, CD_METRIC_COUNTER, "source_http_events_unavailable_total",
        "events and requests answered 503: producer full, delivery failed or timed out, paused");
    ctx->m_unauthorized = h->metric_register(
        ctx->inst, CD_METRIC_COUNTER, "source_http_unauthorized_total", "requests answered 401");
    ctx->m_inflight = h->metric_register(ctx->inst, CD_METRIC_GAUGE, "source_http_requests_waiting",
                                         "requests waiting for delivery reports");
}

static int http_start(void *vctx, char *errbuf, size_t errlen) {
    http_ctx *ctx = vctx;
    const cd_host *host = ctx->host;
    ctx->loop = host->loop(ctx->inst);
    if (ctx->ws_routes) {
        int w = http_ws_start(ctx, errbuf, errlen);
        if (w < 0) return w;
    }
    cd_http_limits lim = {
        .max_body = ctx->max_body,
        .max_header_bytes = 16384,
        .max_headers = 100,
        .max_connections = ctx->max_connections,
        .header_timeout_ms = ctx->header_timeout_ms,
        .body_timeout_ms = ctx->body_timeout_ms,
        .idle_timeout_ms = ctx->idle_timeout_ms,
    };
    int r = host->http_listen(ctx->inst, ctx->listen, &lim, http_on_request, ctx, &ctx->server,
                              errbuf, errlen);
    if (r < 0) return r;
    uv_timer_init(ctx->loop, &ctx->ack_timer);
    ctx->timer_open = 1;
    ctx->started = 1;
    http_register_metrics(ctx);

    /* The bound address, with the real port when listen asked for 0. */
    const char *colon = strrchr(ctx->listen, ':');
    int hostlen = colon ? (int)(colon - ctx->listen) : (int)strlen(ctx->listen);
    host->log(ctx->inst, CD_LOG_INFO,
              "listening on %.*s:%d: POST /v1/events/{topic} for %zu topic(s), key %s, auth %s",
              hostlen, ctx->listen, host->http_port(ctx->server), ctx->ntopics, ctx->key.text,
              !http_auth_enabled(&ctx->auth)                            ? "none"
              : ctx->auth.nkeys && jwt_verifier_enabled(&ctx->auth.jwt) ? "API keys or JWT"
              : ctx->auth.nkeys                                         ? "API keys"
                                                                        : "JWT");
    if (ctx->ws_routes)
        host->log(ctx->inst, CD_LOG_INFO,
                  "ws_routes: POST /v1/ws/connect and /v1/ws/disconnect, Redis keys %scustomer:* "
                  "and %sconnection:*",
                  ctx->ws_prefix, ctx->ws_prefix);
    return 0;
}

static void http_pause(void *vctx) {
    http_ctx *ctx = vctx;
    if (ctx->paused) return;
    ctx->paused = 1;
    ctx->host->log(ctx->inst, CD_LOG_INFO, "paused: new events are answered 503");
}

static void http_resume(void *vctx) {
    http_ctx *ctx = vctx;
    if (!ctx->paused) return;
    ctx->paused = 0;
    ctx->host->log(ctx->inst, CD_LOG_INFO, "resumed");
}

static void http_on_timer_closed(uv_handle_t *h) {
    http_ctx *ctx = http_container_of((uv_timer_t *)h, http_ctx, ack_timer);
    ctx->timer_open = 0;
    ctx->started = 0;
    cd_done_cb cb = ctx->stop_cb;
    ctx->stop_cb = NULL;
    ctx->host->log(ctx->inst, CD_LOG_INFO,
                   "stopped (%zu request(s) still awaiting late delivery "
                   "reports)",
                   ctx->draining.count);
    if (cb) cb(ctx->stop_opaque, 0);
}

/* The last step of stop: once the server is closed and every request has
 * its answer, close the timer; its close callback reports the stop. */
/* ws routes' Redis commands may outlive their requests (a client that
 * reset its connection): stop waits for them too, which the engine's Redis
 * client bounds (REDIS_COMMAND_TIMEOUT_MS). */
static void http_maybe_finish_stop(http_ctx *ctx) {
    if (!ctx->stopping || ctx->server || ctx->waiting.count || ctx->ws_pending || ctx->stop_closing)
        return;
    ctx->stop_closing = 1;
    uv_timer_stop(&ctx->ack_timer);
    uv_close((uv_handle_t *)&ctx->ack_timer, http_on_timer_closed);
}

void http_check_stopped(http_ctx *ctx) {
    http_maybe_finish_stop(ctx);
}

static void http_on_server_closed(void *opaque, int status) {
    (void)status;
    http_ctx *ctx = opaque;
    ctx->server = NULL;
    http_maybe_finish_stop(ctx);
}

static int http_stop(void *vctx, cd_done_cb cb, void *opaque) {
    http_ctx *ctx = vctx;
    if (!ctx->started || ctx->stopping) return CD_ERR_INVALID;
    ctx->stopping = 1;
    ctx->stop_cb = cb;
    ctx->stop_opaque = opaque;
    ctx->host->log(ctx->inst, CD_LOG_INFO,
                   "stopping: no new connections; answering %zu request(s) in flight",
                   ctx->waiting.count);
    /* Stops accepting, lets the requests the handler holds be answered,
     * then calls back from the loop. */
    ctx->host->http_close(ctx->server, http_on_server_closed, ctx);
    return 0;
}

static void http_destroy(void *vctx) {
    http_ctx *ctx = vctx;
    if (ctx == NULL) return;
    if (ctx->server || ctx->timer_open || ctx->waiting.count || ctx->ws_pending) {
        /* The engine gave up on stop (a forced shutdown): libuv or the
         * server may still reach this memory, so leaving it is the safe
         * choice in a process that is about to exit. */
        ctx->host->log(ctx->inst, CD_LOG_ERROR,
                       "destroyed before stop completed: leaving its memory in place");
        return;
    }
    /* Requests answered but still owed delivery reports outlive us; the
     * last report frees each. */
    while (ctx->draining.head) {
        http_pending *p = ctx->draining.head;
        http_list_remove(&ctx->draining, p);
        p->where = HTTP_ON_NONE;
        p->ctx = NULL;
    }
    http_conf_destroy(ctx);
}

static const cd_source_ops http_source_ops = {
    .init = http_init,
    .start = http_start,
    .pause = http_pause,
    .resume = http_resume,
    .stop = http_stop,
    .destroy = http_destroy,
};

static const cd_plugin_desc http_plugin_desc = {
    .abi_version = CD_ABI_VERSION,
    .struct_size = sizeof(cd_plugin_desc),
    .name = "http",
    .version = "1.0.0",
    .description = "HTTP ingest: POST /v1/events/{topic} (JSON or NDJSON), validated against the "
                   "topic's schema, keyed by a JSON pointer, answered 202 only once Kafka stored "
                   "the event",
    .kind = CD_PLUGIN_SOURCE,
    .options = http_options,
    .source = &http_source_ops,
};

CD_PLUGIN_DEFINE(&http_plugin_desc)
