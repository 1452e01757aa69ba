/*
 * sink-websocket — API Gateway mode: POST to @connections.
 *
 * API Gateway holds the sockets; source-http's $connect route records each
 * connection in Redis ({prefix}customer:{id} a set of connection ids,
 * {prefix}connection:{connId} the customer).  A push reads the set
 * (SMEMBERS) and POSTs the message to
 *   {endpoint}[/{stage}]/@connections/{percent-encoded connectionId}
 * for each member, signed by the engine (SigV4, service execute-api).  A
 * 410 Gone means API Gateway forgot the connection: it is removed from the
 * registry (SREM + DEL) and does not fail the push.  A 5xx, 429, 403 or no
 * answer is RETRY (the push goes again, to every connection: at-least-once);
 * any other 4xx is FATAL with API Gateway's answer.
 */
#include "websocket.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One record's push: the copies its calls need. */
typedef struct ws_apigw_rec {
    ws_ctx *ctx;
    ws_op *op;
    int calls;
    char *ckey; /* {prefix}customer:{id} */
    size_t msg_len;
    char msg[];
} ws_apigw_rec;

typedef struct ws_apigw_post {
    ws_apigw_rec *rec;
    char id[];
} ws_apigw_post;

static void ws_apigw_rec_done(ws_apigw_rec *rec) {
    if (--rec->calls > 0) return;
    ws_op *op = rec->op;
    free(rec->ckey);
    free(rec);
    ws_op_finish(op);
}

static void ws_apigw_ignore(void *opaque, const cd_redis_reply *reply) {
    (void)opaque;
    (void)reply;
}

static void ws_apigw_forget(ws_apigw_rec *rec, const char *id) {
    ws_ctx *ctx = rec->ctx;
    size_t n = strlen(ctx->opts.prefix) + strlen("connection:") + strlen(id) + 1;
    char *nkey = malloc(n);
    if (nkey == NULL) return;
    snprintf(nkey, n, "%sconnection:%s", ctx->opts.prefix, id);
    const char *srem[] = {"SREM", rec->ckey, id};
    const char *del[] = {"DEL", nkey};
    char err[256];
    ctx->host->redis_command(ctx->inst, ws_apigw_ignore, NULL, 3, srem, NULL, err, sizeof(err));
    ctx->host->redis_command(ctx->inst, ws_apigw_ignore, NULL, 2, del, NULL, err, sizeof(err));
    free(nkey);
    if (ctx->m_stale) ctx->host->metric_add(ctx->m_stale, 1);
}

static void ws_apigw_on_post(void *opaque, const cd_http_result *res) {
    ws_apigw_post *p = opaque;
    ws_apigw_rec *rec = p->rec;
    ws_op *op = rec->op;
    if (res->error || res->status == 0) {
        ws_op_fail(op, CD_RECORD_RETRY, 0, "@connections/%s: %s", p->id,
                   res->error_message ? res->error_message : "no answer");
    } else if (res->status == 410) {
        ws_apigw_forget(rec, p->id);
    } else if (res->status >= 200 && res->status < 300) {
        /* delivered */
    } else {
        int64_t retry = res->retry_after ? atoll(res->retry_after) * 1000 : 0;
        int transient = res->retriable || res->status == 403 || res->status == 429;
        ws_op_fail(op, transient ? CD_RECORD_RETRY : CD_RECORD_FATAL, retry,
                   "@connections/%s: HTTP %d: %.120s", p->id, res->status, res->body);
    }
    free(p);
    ws_apigw_rec_done(rec);
}

static int ws_apigw_url(pbuf *u, const ws_ctx *ctx, const char *id, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    u->len = 0;
    if (pbuf_append(u, ctx->endpoint, strlen(ctx->endpoint)) < 0) return CD_ERR_NOMEM;
    if (*ctx->stage &&
        (pbuf_append(u, "/", 1) < 0 || pbuf_append(u, ctx->stage, strlen(ctx->stage)) < 0))
        return CD_ERR_NOMEM;
    if (pbuf_append(u, "/@connections/", 14) < 0 || pbuf_reserve(u, n * 3 + 1) < 0)
        return CD_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            u->data[u->len++] = (char)c;
        } else {
            u->data[u->len++] = '%';
            u->data[u->len++] = hex[c >> 4];
            u->data[u->len++] = hex[c & 15];
        }
    }
    u->data[u->len] = '\0';
    return 0;
}

static void ws_apigw_on_members(void *opaque, const cd_redis_reply *reply) {
    ws_apigw_rec *rec = opaque;
    ws_ctx *ctx = rec->ctx;
    ws_op *op = rec->op;
    if (reply->error < 0 || reply->type == CD_REDIS_ERROR) {
        ws_op_fail(op, CD_RECORD_RETRY, 0, "Redis SMEMBERS %s: %s", rec->ckey,
                   reply->str ? reply->str : "failed");
        ws_apigw_rec_done(rec);
        return;
    }
    pbuf *url = &ctx->url; /* http_call copies the call */
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    for (size_t i = 0; reply->type == CD_REDIS_ARRAY && i < reply->elements; i++) {
        const cd_redis_reply *e = &reply->element[i];
        if (e->type != CD_REDIS_STRING || e->len == 0 || memchr(e->str, '\0', e->len)) continue;
        ws_apigw_post *p = malloc(sizeof(*p) + e->len + 1);
        if (p == NULL || ws_apigw_url(url, ctx, e->str, e->len) < 0) {
            free(p);
            ws_op_fail(op, CD_RECORD_RETRY, 0, "out of memory");
            break;
        }
        p->rec = rec;
        memcpy(p->id, e->str, e->len);
        p->id[e->len] = '\0';
        cd_http_call call = {
            .method = "POST",
            .url = url->data,
            .headers = headers,
            .body = rec->msg,
            .body_len = rec->msg_len,
            .timeout_ms = 10000,
            .aws_service = "execute-api",
            .aws_region = ctx->region,
        };
        char err[256] = "";
        rec->calls++;
        if (ctx->host->http_call(ctx->pool, &call, ws_apigw_on_post, p, err, sizeof(err)) < 0) {
            rec->calls--;
            ws_op_fail(op, CD_RECORD_RETRY, 1000, "@connections/%s: %s", p->id, err);
            free(p);
        }
    }
    ws_apigw_rec_done(rec); /* the SMEMBERS's own count */
}

void ws_apigw_push(ws_ctx *ctx, ws_op *op, const char *cust, size_t cust_len, const char *msg,
                   size_t len) {
    ws_apigw_rec *rec = malloc(sizeof(*rec) + len + 1);
    size_t kn = strlen(ctx->opts.prefix) + strlen("customer:") + cust_len + 1;
    char *ckey = malloc(kn);
    if (rec == NULL || ckey == NULL) {
        free(rec);
        free(ckey);
        ws_op_fail(op, CD_RECORD_RETRY, 0, "out of memory");
        ws_op_finish(op);
        return;
    }
    snprintf(ckey, kn, "%scustomer:", ctx->opts.prefix);
    memcpy(ckey + strlen(ckey), cust, cust_len);
    ckey[kn - 1] = '\0';
    rec->ctx = ctx;
    rec->op = op;
    rec->calls = 1;
    rec->ckey = ckey;
    rec->msg_len = len;
    memcpy(rec->msg, msg, len);
    rec->msg[len] = '\0';
    const char *argv[] = {"SMEMBERS", ckey};
    size_t lens[] = {8, kn - 1};
    char err[256] = "";
    if (ctx->host->redis_command(ctx->inst, ws_apigw_on_members, rec, 2, argv, lens, err,
                                 sizeof(err)) < 0) {
        ws_op_fail(op, CD_RECORD_RETRY, 0, "Redis is unavailable: %s", err);
        free(ckey);
        free(rec);
        ws_op_finish(op);
    }
}
