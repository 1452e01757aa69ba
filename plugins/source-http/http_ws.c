/*
 * source-http — API Gateway WebSocket integration routes: the connection
 * registry in Redis that sink-websocket reads.
 *
 * API Gateway's $connect and $disconnect routes integrate over HTTP with
 *   POST /v1/ws/connect      {"connectionId": "...", "customerId": "..."}
 *   POST /v1/ws/disconnect   {"connectionId": "...", "customerId": "..."}
 * (the request template maps $context.connectionId and
 * $context.authorizer.principalId).  The registry, with P = ws_key_prefix:
 *   P customer:{customerId}     a set of connection ids, EXPIRE 86400
 *   P connection:{connectionId} the customerId (string), EX 86400
 *
 * connect:    SADD P customer:C id; EXPIRE P customer:C 86400;
 *             SET P connection:id C EX 86400   -> 200 once all three answered
 * disconnect: GET P connection:id -> nil: 404; else SREM P customer:C id;
 *             DEL P connection:id              -> 200 once both answered
 *
 * The commands go through the engine's Redis client (host->redis_command),
 * which fails a command at once while it is not connected; that, or a
 * command without an answer (the client drops a server that answers
 * nothing for REDIS_COMMAND_TIMEOUT_MS, 5 s) or with an error reply, is a
 * 503 with Retry-After.  A request is answered only after its last
 * callback, and stop waits for every op (ws_pending), also those whose
 * client has gone.
 */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct http_ws_op {
    http_ctx *ctx;
    cd_http_request *req;
    int connect;
    int pending;  /* Redis answers still due */
    int status;   /* 200 until something fails */
    int answered; /* disconnect: the GET's callback already answered */
    char error[HTTP_ERROR_MAX];
    char *conn;    /* connectionId (owned) */
    char *claimed; /* customerId from the body (owned, NULL when absent) */
    char *sub;     /* the JWT's sub (owned, NULL with an API key or no auth) */
    char *cust;    /* the customer the answer names (owned) */
    char *ckey;    /* P customer:{cust} (owned) */
    char *nkey;    /* P connection:{conn} (owned) */
} http_ws_op;

static void http_ws_op_free(http_ws_op *op) {
    free(op->conn);
    free(op->claimed);
    free(op->sub);
    free(op->cust);
    free(op->ckey);
    free(op->nkey);
    free(op);
}

static char *http_ws_key(const char *prefix, const char *kind, const char *id) {
    size_t n = strlen(prefix) + strlen(kind) + strlen(id) + 1;
    char *k = malloc(n);
    if (k) snprintf(k, n, "%s%s%s", prefix, kind, id);
    return k;
}

static void http_ws_fail(http_ws_op *op, int status, const char *fmt, const char *detail) {
    if (op->status != 200) return; /* the first problem is the one told */
    op->status = status;
    snprintf(op->error, sizeof(op->error), fmt, detail ? detail : "");
}

/* Answers op's request and frees it. */
static void http_ws_answer(http_ws_op *op) {
    http_ctx *ctx = op->ctx;
    if (op->status != 503 && ctx->ws_failing) {
        ctx->ws_failing = 0;
        ctx->host->log(ctx->inst, CD_LOG_INFO, "ws routes: Redis answers again");
    }
    if (op->status == 200) {
        json_t *o = json_object();
        json_object_set_new(o, "connectionId", http_json_text(op->conn));
        json_object_set_new(o, "customerId", http_json_text(op->cust));
        http_send_json(ctx, op->req, 200, o, NULL, NULL);
    } else {
        /* Once per outage, not once per request. */
        if (op->status == 503 && !ctx->ws_failing) {
            ctx->ws_failing = 1;
            ctx->host->log(ctx->inst, CD_LOG_WARN,
                           "%s %s: %s (answering 503 until Redis answers again)",
                           op->connect ? "ws connect" : "ws disconnect", op->conn, op->error);
        }
        http_send_error(ctx, op->req, op->status, op->error, NULL,
                        op->status == 503 ? ctx->retry_after : NULL, NULL);
    }
    ctx->ws_pending--;
    http_ws_op_free(op);
    http_check_stopped(ctx);
}

/* A reply that says the command did its work. */
static int http_ws_reply_ok(http_ws_op *op, const cd_redis_reply *reply) {
    if (reply->error < 0) {
        http_ws_fail(op, 503, "Redis did not answer: %s", reply->str);
        return 0;
    }
    if (reply->type == CD_REDIS_ERROR) {
        http_ws_fail(op, 503, "Redis refused the command: %s", reply->str);
        return 0;
    }
    return 1;
}

static void http_ws_on_reply(void *opaque, const cd_redis_reply *reply) {
    http_ws_op *op = opaque;
    http_ws_reply_ok(op, reply);
    if (--op->pending == 0) http_ws_answer(op);
}

/* Sends one command for op; a refused send is a 503 and sends nothing more. */
static void http_ws_send(http_ws_op *op, int argc, const char **argv) {
    if (op->status != 200) return;
    char err[256] = "";
    op->pending++;
    int r = op->ctx->host->redis_command(op->ctx->inst, http_ws_on_reply, op, argc, argv, NULL, err,
                                         sizeof(err));
    if (r < 0) {
        op->pending--;
        http_ws_fail(op, 503, "Redis is unavailable: %s", err);
    }
}

/* Sends the commands of the second step (connect: all of them) and answers
 * when none is due. */
static void http_ws_commands(http_ws_op *op) {
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%d", HTTP_WS_TTL_S);
    op->pending++; /* held while sending: a callback cannot answer early */
    if (op->connect) {
        const char *sadd[] = {"SADD", op->ckey, op->conn};
        const char *expire[] = {"EXPIRE", op->ckey, ttl};
        const char *set[] = {"SET", op->nkey, op->cust, "EX", ttl};
        http_ws_send(op, 3, sadd);
        http_ws_send(op, 3, expire);
        http_ws_send(op, 5, set);
    } else {
        const char *srem[] = {"SREM", op->ckey, op->conn};
        const char *del[] = {"DEL", op->nkey};
        http_ws_send(op, 3, srem);
        http_ws_send(op, 2, del);
    }
    if (--op->pending == 0) http_ws_answer(op);
}

/* disconnect: the GET of P connection:{id}. */
static void http_ws_on_get(void *opaque, const cd_redis_reply *reply) {
    http_ws_op *op = opaque;
    op->pending--;
    if (!http_ws_reply_ok(op, reply)) {
        http_ws_answer(op);
        return;
    }
    if (reply->type == CD_REDIS_NIL) {
        http_ws_fail(op, 404, "unknown connection %s (never connected, or expired)", op->conn);
        http_ws_answer(op);
        return;
    }
    if (reply->type != CD_REDIS_STRING) {
        http_ws_fail(op, 503, "%s holds no customerId (not a string)", op->nkey);
        http_ws_answer(op);
        return;
    }
    op->cust = strndup(reply->str, reply->len);
    if (op->cust == NULL) {
        http_ws_fail(op, 503, "out of memory%s", NULL);
        http_ws_answer(op);
        return;
    }
    /* Only the customer a connection belongs to may remove it. */
    if ((op->claimed && strcmp(op->claimed, op->cust) != 0) ||
        (op->sub && strcmp(op->sub, op->cust) != 0)) {
        http_ws_fail(op, 403, "connection %s belongs to another customer", op->conn);
        http_ws_answer(op);
        return;
    }
    op->ckey = http_ws_key(op->ctx->ws_prefix, "customer:", op->cust);
    if (op->ckey == NULL) {
        http_ws_fail(op, 503, "out of memory%s", NULL);
        http_ws_answer(op);
        return;
    }
    http_ws_commands(op);
}

/* A string member of the body: 0 and *out (owned), or -1 with a 400 sent.
 * Absent and optional: 0 and *out NULL. */
static int http_ws_member(http_ctx *ctx, cd_http_request *req, const json_t *doc, const char *name,
                          int required, char **out) {
    char field[64];
    snprintf(field, sizeof(field), "/%s", name);
    *out = NULL;
    const json_t *v = json_object_get(doc, name);
    const char *problem = NULL;
    if (v == NULL || json_is_null(v)) {
        if (!required) return 0;
        problem = "is required";
    } else if (!json_is_string(v)) {
        problem = "must be a string";
    } else if (json_string_length(v) == 0) {
        problem = "must not be empty";
    } else if (json_string_length(v) > HTTP_WS_ID_MAX) {
        problem = "is too long (at most 512 bytes)";
    } else if (strlen(json_string_value(v)) != json_string_length(v)) {
        problem = "must not hold NUL characters";
    }
    if (problem) {
        char msg[128];
        snprintf(msg, sizeof(msg), "%s %s", name, problem);
        http_send_error(ctx, req, 400, msg, field, NULL, NULL);
        return -1;
    }
    *out = strdup(json_string_value(v));
    if (*out == NULL) {
        http_send_error(ctx, req, 503, "out of memory", NULL, ctx->retry_after, NULL);
        return -1;
    }
    return 0;
}

void http_ws_handle(http_ctx *ctx, cd_http_request *req, int connect, const char *sub) {
    size_t len = 0;
    const char *body = ctx->host->http_body(req, &len);
    json_error_t jerr;
    json_t *doc = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL || !json_is_object(doc)) {
        char msg[HTTP_ERROR_MAX];
        if (doc == NULL)
            snprintf(msg, sizeof(msg), "the body is not JSON: %s", jerr.text);
        else
            snprintf(msg, sizeof(msg), "the body must be a JSON object");
        json_t *o = json_object();
        json_object_set_new(o, "error", http_json_text(msg));
        json_object_set_new(o, "field", doc == NULL ? json_null() : json_string(""));
        http_send_json(ctx, req, 400, o, NULL, NULL);
        json_decref(doc);
        return;
    }
    http_ws_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        json_decref(doc);
        http_send_error(ctx, req, 503, "out of memory", NULL, ctx->retry_after, NULL);
        return;
    }
    op->ctx = ctx;
    op->req = req;
    op->connect = connect;
    op->status = 200;
    int bad = http_ws_member(ctx, req, doc, "connectionId", 1, &op->conn) < 0 ||
              http_ws_member(ctx, req, doc, "customerId", connect, &op->claimed) < 0;
    json_decref(doc);
    if (bad) {
        http_ws_op_free(op);
        return;
    }
    if (sub) {
        /* A JWT speaks for its sub only. */
        if (op->claimed && strcmp(op->claimed, sub) != 0) {
            http_send_error(ctx, req, 403, "customerId is not the JWT's sub", "/customerId", NULL,
                            NULL);
            http_ws_op_free(op);
            return;
        }
        op->sub = strdup(sub);
    }
    op->nkey = http_ws_key(ctx->ws_prefix, "connection:", op->conn);
    if (connect) {
        op->cust = strdup(op->claimed);
        op->ckey = http_ws_key(ctx->ws_prefix, "customer:", op->claimed);
    }
    if ((sub && !op->sub) || !op->nkey || (connect && (!op->cust || !op->ckey))) {
        http_send_error(ctx, req, 503, "out of memory", NULL, ctx->retry_after, NULL);
        http_ws_op_free(op);
        return;
    }
    ctx->ws_pending++;
    if (connect) {
        http_ws_commands(op);
        return;
    }
    const char *get[] = {"GET", op->nkey};
    char err[256] = "";
    op->pending = 1;
    int r = ctx->host->redis_command(ctx->inst, http_ws_on_get, op, 2, get, NULL, err, sizeof(err));
    if (r < 0) {
        op->pending = 0;
        http_ws_fail(op, 503, "Redis is unavailable: %s", err);
        http_ws_answer(op);
    }
}

static void http_ws_on_ping(void *opaque, const cd_redis_reply *reply) {
    (void)opaque;
    (void)reply;
}

int http_ws_start(http_ctx *ctx, char *errbuf, size_t errlen) {
    const char *ping[] = {"PING"};
    char err[256] = "";
    int r =
        ctx->host->redis_command(ctx->inst, http_ws_on_ping, NULL, 1, ping, NULL, err, sizeof(err));
    if (r == CD_ERR_UNSUPPORTED) {
        snprintf(errbuf, errlen,
                 "ws_routes: needs the engine's Redis client, but %s (set redis_url in the "
                 "engine config)",
                 err);
        return CD_ERR_INVALID;
    }
    if (r < 0)
        ctx->host->log(ctx->inst, CD_LOG_WARN,
                       "ws_routes: Redis not reachable yet (%s): /v1/ws/* answer 503 until it is",
                       err);
    return 0;
}
