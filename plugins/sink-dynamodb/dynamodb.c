/*
 * sink-dynamodb — writes records to a DynamoDB table: put (batched with
 * BatchWriteItem, or single conditional PutItem), update (UpdateItem with a
 * SET expression from a template) and delete (DeleteItem).
 *
 * The files of this plugin (sink-file's layout):
 *   dynamodb.c       the callbacks and the descriptor (this file)
 *   dynamodb_conf.c  options -> context (init) and back (destroy)
 *   dynamodb_attr.c  rendered JSON -> AttributeValues (pure, unit tested)
 *   dynamodb.h       the context struct and friends
 * and from plugins/common: aws_error.c and aws_error_xml.c (HTTP result ->
 * OK / RETRY / FATAL; JSON answers, and XML ones from a front end),
 * aws_conf.c (region and endpoint), inflight.c (batches in flight, stop).
 *
 * The path of one batch:
 *   ddb_write()         renders each record into its request text and its
 *                       key identity, numbers the records of each key into
 *                       rounds (see dynamodb.h)
 *   ddb_batch_run()     sends one round at a time: BatchWriteItem requests of
 *                       up to 25 items / 16 MB, or one request per record; the
 *                       HTTP pool bounds how many are in flight
 *   ddb_on_response()   classifies the answer (aws_error.c); UnprocessedItems
 *                       are answered RETRY, only those records
 *
 * Requests are signed by the engine's HTTP client (SigV4, service
 * "dynamodb") with the engine's credentials chain.
 */
#include "dynamodb.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------ config map
 * Keep README.md's options table in step with this one. */
static const cd_option ddb_options[] = {
    {.name = "table", .type = CD_OPT_STRING, .required = 1, .description = "Table name"},
    {.name = "region",
     .type = CD_OPT_STRING,
     .default_value = "eu-west-1",
     .description = "AWS region for signing and the default endpoint (e.g. \"${AWS_REGION}\")"},
    {.name = "endpoint",
     .type = CD_OPT_STRING,
     .description = "Endpoint URL; default https://dynamodb.<region>.amazonaws.com/"},
    {.name = "operation",
     .type = CD_OPT_ENUM,
     .default_value = "put",
     .enum_values = "put|update|delete",
     .description = "put: PutItem/BatchWriteItem of `item`; update: UpdateItem; delete: "
                    "DeleteItem"},
    {.name = "item",
     .type = CD_OPT_JSON,
     .description = "put: template object rendered into the item (key attributes included)"},
    {.name = "key",
     .type = CD_OPT_JSON,
     .description = "update/delete: template object rendered into the item's key"},
    {.name = "key_attributes",
     .type = CD_OPT_STRING_LIST,
     .description = "put: the table's key attribute names, to keep one key out of a batch twice "
                    "(default: the Kafka key)"},
    {.name = "update",
     .type = CD_OPT_JSON,
     .description = "update: template object of attribute -> value, sent as SET #a = :a, ..."},
    {.name = "condition",
     .type = CD_OPT_STRING,
     .description = "ConditionExpression, e.g. attribute_not_exists(eventId); a put with one "
                    "goes as PutItem"},
    {.name = "condition_names",
     .type = CD_OPT_JSON,
     .description = "Object of \"#name\": \"attribute\" for the condition"},
    {.name = "condition_values",
     .type = CD_OPT_JSON,
     .description = "Template object of \":name\": value for the condition"},
    {.name = "conditional_failed",
     .type = CD_OPT_ENUM,
     .default_value = "ok",
     .enum_values = "ok|fatal",
     .description = "A failed condition: ok (already applied) or fatal (dead-lettered)"},
    {.name = "ttl_attribute",
     .type = CD_OPT_STRING,
     .description = "Attribute that gets now + ttl_seconds (epoch seconds, type N)"},
    {.name = "ttl_seconds",
     .type = CD_OPT_INT,
     .default_value = "0",
     .description = "Lifetime written to ttl_attribute, 0 to 10 years in seconds (0: no TTL)"},
    {.name = "types",
     .type = CD_OPT_JSON,
     .description = "Type overrides by attribute path: {\"amount\": \"N\", \"tags\": \"SS\"}"},
    {.name = "max_in_flight",
     .type = CD_OPT_INT,
     .default_value = "16",
     .has_bounds = 1,
     .min = 1,
     .max = 1024,
     .description = "Requests in flight at once"},
    {.name = "timeout_ms",
     .type = CD_OPT_INT,
     .default_value = "10000",
     .has_bounds = 1,
     .min = 100,
     .max = 600000,
     .description = "Timeout of one request (a timeout is retried)"},
    {0},
};

static const char *const ddb_hdr_batch[] = {"Content-Type: application/x-amz-json-1.0",
                                            "X-Amz-Target: DynamoDB_20120810.BatchWriteItem", NULL};
static const char *const ddb_hdr_put[] = {"Content-Type: application/x-amz-json-1.0",
                                          "X-Amz-Target: DynamoDB_20120810.PutItem", NULL};
static const char *const ddb_hdr_update[] = {"Content-Type: application/x-amz-json-1.0",
                                             "X-Amz-Target: DynamoDB_20120810.UpdateItem", NULL};
static const char *const ddb_hdr_delete[] = {"Content-Type: application/x-amz-json-1.0",
                                             "X-Amz-Target: DynamoDB_20120810.DeleteItem", NULL};

static void ddb_batch_run(ddb_batch *b);

/* -------------------------------------------------------------- reporting */

static const char *ddb_rec_body(const ddb_batch *b, const ddb_rec *r) {
    return b->arena.data + r->body_off;
}

static int ddb_same_key(const ddb_batch *b, const ddb_rec *r, const ddb_rec *o) {
    return o->dkey_len == r->dkey_len &&
           memcmp(b->arena.data + o->dkey_off, b->arena.data + r->dkey_off, r->dkey_len) == 0;
}

static int ddb_key_failed(const ddb_batch *b, const ddb_rec *r) {
    for (size_t i = 0; i < b->nfailed; i++)
        if (ddb_same_key(b, r, &b->recs[b->failed[i]])) return 1;
    return 0;
}

/* Reports record i once.  The call for the batch's last record may free the
 * engine's batch: after it, b->batch must not be touched (our own ddb_batch
 * lives on). */
static void ddb_report(ddb_batch *b, size_t i, cd_outcome o, int64_t hint, const char *reason) {
    ddb_rec *r = &b->recs[i];
    if (r->done) return;
    r->done = 1;
    if (o == CD_RECORD_RETRY && r->has_dkey && !ddb_key_failed(b, r)) {
        /* Later records of this key in the batch must not overtake it. */
        b->failed[b->nfailed++] = i;
    }
    if (o == CD_RECORD_RETRY && b->ctx->m_retries) b->ctx->host->metric_add(b->ctx->m_retries, 1);
    b->remaining--;
    b->ctx->host->record_done(b->batch, i, o, hint, reason);
}

/* ------------------------------------------------------------- rendering */

static int ddb_render(ddb_ctx *ctx, const cd_template *t, const cd_record *rec, char *err,
                      size_t errlen) {
    ctx->render.len = 0;
    if (ctx->render.data) ctx->render.data[0] = '\0';
    return ctx->host->template_render(t, rec, 0, &ctx->render, err, errlen);
}

typedef struct ddb_expr {
    ddb_ctx *ctx;
    pbuf *names;  /* members of ExpressionAttributeNames, no braces */
    pbuf *values; /* members of ExpressionAttributeValues, no braces */
    pbuf *set;    /* the SET clause */
    pbuf *dkey;   /* key identity (put with key_attributes) */
    size_t n;
    char *err;
    size_t errlen;
    int rc;
} ddb_expr;

static int ddb_comma(pbuf *b) {
    return b->len ? pbuf_puts(b, ",") : 0;
}

/* One member of the update template: "#uN": name, ":uN": value. */
static int ddb_on_update_member(void *opaque, const char *name, size_t nlen, const char *value,
                                size_t vlen) {
    ddb_expr *x = opaque;
    char path[256], ph[32];
    snprintf(path, sizeof(path), "%.*s", (int)(nlen - 2), name + 1);
    snprintf(ph, sizeof(ph), "%zu", x->n++);
    if (ddb_comma(x->names) < 0 || pbuf_puts(x->names, "\"#u") < 0 || pbuf_puts(x->names, ph) < 0 ||
        pbuf_puts(x->names, "\":") < 0 || pbuf_append(x->names, name, nlen) < 0 ||
        ddb_comma(x->values) < 0 || pbuf_puts(x->values, "\":u") < 0 ||
        pbuf_puts(x->values, ph) < 0 || pbuf_puts(x->values, "\":") < 0)
        return CD_ERR_NOMEM;
    char aerr[200];
    if (ddb_attr_value(value, vlen, path, &x->ctx->types, x->values, aerr, sizeof(aerr)) < 0) {
        snprintf(x->err, x->errlen, "update: %s", aerr);
        return CD_ERR_INVALID;
    }
    if (pbuf_puts(x->set, x->n == 1 ? "SET #u" : ", #u") < 0 || pbuf_puts(x->set, ph) < 0 ||
        pbuf_puts(x->set, " = :u") < 0 || pbuf_puts(x->set, ph) < 0)
        return CD_ERR_NOMEM;
    return 0;
}

/* One member of condition_values: ":name": value. */
static int ddb_on_cond_value(void *opaque, const char *name, size_t nlen, const char *value,
                             size_t vlen) {
    ddb_expr *x = opaque;
    char path[256], aerr[200];
    snprintf(path, sizeof(path), "%.*s", (int)(nlen - 2), name + 1);
    if (ddb_comma(x->values) < 0 || pbuf_append(x->values, name, nlen) < 0 ||
        pbuf_puts(x->values, ":") < 0)
        return CD_ERR_NOMEM;
    if (ddb_attr_value(value, vlen, path, &x->ctx->types, x->values, aerr, sizeof(aerr)) < 0) {
        snprintf(x->err, x->errlen, "condition_values: %s", aerr);
        return CD_ERR_INVALID;
    }
    return 0;
}

/* Collects the key attributes of an item into the key identity, called by
 * ddb_attr_map for each top-level member.  Returns 1 (stop) with x->rc set
 * when out of memory. */
static int ddb_on_key_member(void *opaque, const char *name, size_t nlen, const char *value,
                             size_t vlen) {
    ddb_expr *x = opaque;
    for (size_t i = 0; i < x->ctx->nkey_attrs; i++) {
        const char *a = x->ctx->key_attrs[i];
        if (x->ctx->key_attr_len[i] == nlen - 2 && memcmp(a, name + 1, nlen - 2) == 0) {
            if (pbuf_append(x->dkey, name, nlen) < 0 || pbuf_puts(x->dkey, "=") < 0 ||
                pbuf_append(x->dkey, value, vlen) < 0 || pbuf_puts(x->dkey, "\x1f") < 0) {
                x->rc = CD_ERR_NOMEM;
                return 1;
            }
        }
    }
    return 0;
}

/* Renders record `rec` into the batch's arena: r's body and key identity.
 * Returns 0, or negative with err (the record is then FATAL, and the arena
 * is as it was). */
static int ddb_prepare(ddb_ctx *ctx, ddb_batch *b, ddb_rec *r, size_t idx, const cd_record *rec,
                       char *err, size_t errlen) {
    pbuf *a = &b->arena;
    const size_t mark = a->len;
    ctx->names.len = ctx->values.len = ctx->set.len = ctx->dkey.len = ctx->tmp.len = 0;
    ddb_expr x = {.ctx = ctx,
                  .names = &ctx->names,
                  .values = &ctx->values,
                  .set = &ctx->set,
                  .dkey = &ctx->dkey,
                  .err = err,
                  .errlen = errlen};
    const char *ttl = NULL; /* the TTL member: "name":{"N":"..."} (":ttl" for updates) */
    char aerr[256];
    int rc = CD_ERR_INVALID;
    if (ctx->ttl_attr != NULL) {
        char at[24];
        snprintf(at, sizeof(at), "%lld", (long long)time(NULL) + (long long)ctx->ttl_seconds);
        pbuf *t = &ctx->ttl_member;
        t->len = 0;
        if (pbuf_puts(t, ctx->op == DDB_OP_PUT ? ctx->ttl_json : "\":ttl\"") < 0 ||
            pbuf_puts(t, ":{\"N\":\"") < 0 || pbuf_puts(t, at) < 0 || pbuf_puts(t, "\"}") < 0)
            goto nomem;
        ttl = t->data;
    }
    if (ctx->op == DDB_OP_PUT) {
        if (ddb_render(ctx, ctx->t_item, rec, err, errlen) < 0) goto fail;
        /* Batched, the item goes straight into the arena; else it is
         * composed into the request below. */
        pbuf *out = ctx->batched ? a : &ctx->tmp;
        if (ctx->batched && pbuf_puts(a, "{\"PutRequest\":{\"Item\":") < 0) goto nomem;
        rc = ddb_attr_map(ctx->render.data, ctx->render.len, &ctx->types, ttl, out,
                          ctx->nkey_attrs > 0 ? ddb_on_key_member : NULL, &x, aerr, sizeof(aerr));
        if (rc > 0) {
            rc = x.rc;
            goto nomem;
        }
        if (rc < 0) {
            snprintf(err, errlen, "item: %s", aerr);
            rc = CD_ERR_INVALID;
            goto fail;
        }
        rc = CD_ERR_INVALID; /* what a later failure (condition_values) returns */
        if (ctx->batched && pbuf_puts(a, "}}") < 0) goto nomem;
    } else {
        if (ddb_render(ctx, ctx->t_key, rec, err, errlen) < 0) goto fail;
        if (ddb_attr_map(ctx->render.data, ctx->render.len, &ctx->types, NULL, &ctx->tmp, NULL,
                         NULL, aerr, sizeof(aerr)) != 0) {
            snprintf(err, errlen, "key: %s", aerr);
            goto fail;
        }
        if (pbuf_append(&ctx->dkey, ctx->tmp.data, ctx->tmp.len) < 0) goto nomem;
        if (ctx->op == DDB_OP_UPDATE) {
            if (ddb_render(ctx, ctx->t_update, rec, err, errlen) < 0) goto fail;
            if ((rc = ddb_json_members(ctx->render.data, ctx->render.len, ddb_on_update_member, &x,
                                       err, errlen)) != 0)
                goto fail;
            rc = CD_ERR_INVALID;
            if (ttl) {
                if (ddb_comma(x.names) < 0 || pbuf_puts(x.names, "\"#ttl\":") < 0 ||
                    pbuf_puts(x.names, ctx->ttl_json) < 0 || ddb_comma(x.values) < 0 ||
                    pbuf_puts(x.values, ttl) < 0 ||
                    pbuf_puts(x.set, x.set->len ? ", #ttl = :ttl" : "SET #ttl = :ttl") < 0)
                    goto nomem;
            }
        }
    }
    if (ctx->t_cond_values != NULL) {
        if (ddb_render(ctx, ctx->t_cond_values, rec, err, errlen) < 0) goto fail;
        if ((rc = ddb_json_members(ctx->render.data, ctx->render.len, ddb_on_cond_value, &x, err,
                                   errlen)) != 0)
            goto fail;
        rc = CD_ERR_INVALID;
    }
    if (ctx->cond_names != NULL) {
        /* The static names object without its braces. */
        size_t n = strlen(ctx->cond_names);
        if (ddb_comma(x.names) < 0 || pbuf_append(x.names, ctx->cond_names + 1, n - 2) < 0)
            goto nomem;
    }

    if (!ctx->batched) {
        if (pbuf_puts(a, "{\"TableName\":") < 0 ||
            pbuf_json_string(a, ctx->table, strlen(ctx->table)) < 0 ||
            pbuf_puts(a, ctx->op == DDB_OP_PUT ? ",\"Item\":" : ",\"Key\":") < 0 ||
            pbuf_append(a, ctx->tmp.data, ctx->tmp.len) < 0)
            goto nomem;
        if (x.set->len && (pbuf_puts(a, ",\"UpdateExpression\":") < 0 ||
                           pbuf_json_string(a, x.set->data, x.set->len) < 0))
            goto nomem;
        if (ctx->condition && (pbuf_puts(a, ",\"ConditionExpression\":") < 0 ||
                               pbuf_json_string(a, ctx->condition, strlen(ctx->condition)) < 0))
            goto nomem;
        if (x.names->len &&
            (pbuf_puts(a, ",\"ExpressionAttributeNames\":{") < 0 ||
             pbuf_append(a, x.names->data, x.names->len) < 0 || pbuf_puts(a, "}") < 0))
            goto nomem;
        if (x.values->len &&
            (pbuf_puts(a, ",\"ExpressionAttributeValues\":{") < 0 ||
             pbuf_append(a, x.values->data, x.values->len) < 0 || pbuf_puts(a, "}") < 0))
            goto nomem;
        if (pbuf_puts(a, "}") < 0) goto nomem;
    }
    r->body_off = mark;
    r->body_len = a->len - mark;
    if (ctx->op == DDB_OP_PUT && ctx->nkey_attrs == 0) {
        /* Without key_attributes the Kafka key stands for the item's key;
         * a record without one is its own key. */
        char own[40];
        if (rec->key != NULL) {
            if (pbuf_puts(x.dkey, "k:") < 0 || pbuf_append(x.dkey, rec->key, rec->key_len) < 0)
                goto nomem;
        } else {
            snprintf(own, sizeof(own), "r:%zu", idx);
            if (pbuf_puts(x.dkey, own) < 0) goto nomem;
        }
    }
    r->dkey_off = a->len;
    r->dkey_len = x.dkey->len;
    if (pbuf_append(a, x.dkey->data, x.dkey->len) < 0) goto nomem;
    r->has_dkey = 1;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
    rc = CD_ERR_NOMEM;
fail:
    a->len = mark;
    if (a->data) a->data[mark] = '\0';
    return rc;
}

/* Numbers each record's round: the n-th record of a key is in round n. */
static int ddb_number_rounds(ddb_batch *b) {
    size_t cap = 16;
    while (cap < b->count * 2)
        cap *= 2;
    size_t *slots = malloc(cap * sizeof(*slots)); /* index + 1 of the key's latest record */
    if (slots == NULL) return CD_ERR_NOMEM;
    memset(slots, 0, cap * sizeof(*slots));
    for (size_t i = 0; i < b->count; i++) {
        ddb_rec *r = &b->recs[i];
        if (r->done) continue;
        const char *dk = b->arena.data + r->dkey_off;
        uint64_t h = 1469598103934665603ULL;
        for (size_t k = 0; k < r->dkey_len; k++)
            h = (h ^ (unsigned char)dk[k]) * 1099511628211ULL;
        size_t s = (size_t)h & (cap - 1);
        for (;; s = (s + 1) & (cap - 1)) {
            if (slots[s] == 0) {
                r->round = 0;
                slots[s] = i + 1;
                break;
            }
            ddb_rec *o = &b->recs[slots[s] - 1];
            if (ddb_same_key(b, r, o)) {
                r->round = o->round + 1;
                slots[s] = i + 1;
                break;
            }
        }
        if (r->round + 1 > b->nrounds) b->nrounds = r->round + 1;
    }
    free(slots);
    return 0;
}

/* ---------------------------------------------------------------- requests */

static void ddb_req_free(ddb_req *q) {
    free(q->idx);
    pbuf_free(&q->body);
    free(q);
}

/* Finds the records of q that are in the response's UnprocessedItems.
 * Returns -1 when the answer cannot be read, or lists an item none of q's
 * records matches (DynamoDB may write it back differently): the caller
 * then retries every record of q, since re-putting an item is harmless and
 * reporting an unwritten one OK is not. */
static int ddb_unprocessed(ddb_req *q, const cd_http_result *res, char *flags) {
    ddb_ctx *ctx = q->b->ctx;
    json_t *j = json_loadb(res->body, res->body_len, JSON_ALLOW_NUL, NULL);
    if (j == NULL) return -1;
    json_t *list = json_object_get(json_object_get(j, "UnprocessedItems"), ctx->table);
    size_t n = json_array_size(list);
    int rc = 0;
    for (size_t u = 0; u < n; u++) {
        json_t *want = json_array_get(list, u);
        int found = 0;
        for (size_t k = 0; k < q->n && !found; k++) {
            if (flags[k]) continue;
            ddb_rec *r = &q->b->recs[q->idx[k]];
            json_t *mine = json_loadb(ddb_rec_body(q->b, r), r->body_len, JSON_ALLOW_NUL, NULL);
            if (json_equal(mine, want)) found = 1, flags[k] = 1;
            json_decref(mine);
        }
        if (!found) rc = -1;
    }
    json_decref(j);
    return rc;
}

static void ddb_req_send(ddb_batch *b, ddb_req *q);
static ddb_req *ddb_req_new(ddb_batch *b, size_t max);

/* Sends record i alone in a BatchWriteItem. */
static void ddb_send_single_batch(ddb_batch *b, size_t i) {
    ddb_ctx *ctx = b->ctx;
    ddb_rec *r = &b->recs[i];
    ddb_req *q = ddb_req_new(b, 1);
    if (q == NULL || pbuf_puts(&q->body, "{\"RequestItems\":{") < 0 ||
        pbuf_json_string(&q->body, ctx->table, strlen(ctx->table)) < 0 ||
        pbuf_puts(&q->body, ":[") < 0 ||
        pbuf_append(&q->body, ddb_rec_body(b, r), r->body_len) < 0 ||
        pbuf_puts(&q->body, "]}}") < 0) {
        if (q) ddb_req_free(q);
        ddb_report(b, i, CD_RECORD_RETRY, 0, "out of memory");
        return;
    }
    q->idx[q->n++] = i;
    ddb_req_send(b, q);
}

static void ddb_on_response(void *opaque, const cd_http_result *res) {
    ddb_req *q = opaque;
    ddb_batch *b = q->b;
    ddb_ctx *ctx = b->ctx;
    aws_error e;
    cd_outcome o = aws_error_classify_body(res, &e);
    if (ctx->m_requests) ctx->host->metric_add(ctx->m_requests, 1);
    if (o == CD_RECORD_FATAL && aws_error_is(&e, "ConditionalCheckFailedException") &&
        ctx->cond_failed_ok)
        o = CD_RECORD_OK;
    if (o == CD_RECORD_OK && ctx->batched && strstr(res->body, "PutRequest") != NULL) {
        char *flags = calloc(q->n, 1);
        if (flags != NULL) {
            if (ddb_unprocessed(q, res, flags) < 0) {
                ctx->host->log(ctx->inst, CD_LOG_WARN,
                               "a BatchWriteItem answer lists UnprocessedItems this request "
                               "cannot be matched with (or cannot be read): retrying its %zu "
                               "item(s)",
                               q->n);
                memset(flags, 1, q->n);
            }
            for (size_t k = 0; k < q->n; k++) {
                if (!flags[k]) continue;
                if (ctx->m_unprocessed) ctx->host->metric_add(ctx->m_unprocessed, 1);
                ddb_report(b, q->idx[k], CD_RECORD_RETRY, 0,
                           "UnprocessedItems: DynamoDB did not process the item");
            }
            free(flags);
        }
    }
    if (o == CD_RECORD_FATAL && ctx->batched && q->n > 1) {
        /* DynamoDB refuses a whole BatchWriteItem for one bad item: send
         * each item alone, so only the bad one is dead-lettered. */
        for (size_t k = 0; k < q->n; k++)
            ddb_send_single_batch(b, q->idx[k]);
        ddb_req_free(q);
        if (--b->requests == 0) {
            b->round++;
            ddb_batch_run(b);
        }
        return;
    }
    if (o != CD_RECORD_OK && ctx->host->log_enabled(ctx->inst, CD_LOG_DEBUG))
        ctx->host->log(ctx->inst, CD_LOG_DEBUG, "%zu record(s): %s (%s)", q->n, e.reason,
                       o == CD_RECORD_RETRY ? "retry" : "fatal");
    for (size_t k = 0; k < q->n; k++)
        ddb_report(b, q->idx[k], o, e.retry_after_ms, o == CD_RECORD_OK ? NULL : e.reason);
    ddb_req_free(q);
    if (--b->requests == 0) {
        b->round++;
        ddb_batch_run(b);
    }
}

static void ddb_req_send(ddb_batch *b, ddb_req *q) {
    ddb_ctx *ctx = b->ctx;
    const char *const *hdrs = ctx->batched               ? ddb_hdr_batch
                              : ctx->op == DDB_OP_PUT    ? ddb_hdr_put
                              : ctx->op == DDB_OP_UPDATE ? ddb_hdr_update
                                                         : ddb_hdr_delete;
    cd_http_call call = {
        .method = "POST",
        .url = ctx->url,
        .headers = hdrs,
        .body = q->body.data,
        .body_len = q->body.len,
        .timeout_ms = ctx->timeout_ms,
        .aws_service = "dynamodb",
        .aws_region = ctx->region,
    };
    char err[256];
    int rc = ctx->host->http_call(ctx->fl.pool, &call, ddb_on_response, q, err, sizeof(err));
    if (rc == 0) {
        b->requests++;
        return;
    }
    /* Credentials not there yet, or the engine shutting down: try later. */
    cd_outcome o = rc == CD_ERR_BUSY ? CD_RECORD_RETRY : CD_RECORD_FATAL;
    for (size_t k = 0; k < q->n; k++)
        ddb_report(b, q->idx[k], o, o == CD_RECORD_RETRY ? 1000 : 0, err);
    ddb_req_free(q);
}

static ddb_req *ddb_req_new(ddb_batch *b, size_t max) {
    ddb_req *q = calloc(1, sizeof(*q));
    if (q == NULL || (q->idx = malloc(max * sizeof(size_t))) == NULL) {
        free(q);
        return NULL;
    }
    q->b = b;
    return q;
}

/* Sends the records of the current round. */
static void ddb_send_round(ddb_batch *b) {
    ddb_ctx *ctx = b->ctx;
    ddb_req *q = NULL;
    for (size_t i = 0; i < b->count; i++) {
        ddb_rec *r = &b->recs[i];
        if (r->done || r->round != b->round) continue;
        if (ddb_key_failed(b, r)) {
            ddb_report(b, i, CD_RECORD_RETRY, 0, "an earlier record of this key is retried");
            continue;
        }
        if (!ctx->batched) {
            q = ddb_req_new(b, 1);
            if (q == NULL || pbuf_append(&q->body, ddb_rec_body(b, r), r->body_len) < 0) {
                if (q) ddb_req_free(q);
                ddb_report(b, i, CD_RECORD_RETRY, 0, "out of memory");
                continue;
            }
            q->idx[q->n++] = i;
            ddb_req_send(b, q);
            q = NULL;
            continue;
        }
        if (q != NULL &&
            (q->n == DDB_BATCH_MAX_ITEMS || q->body.len + r->body_len + 4 > DDB_BATCH_MAX_BYTES)) {
            pbuf_puts(&q->body, "]}}");
            ddb_req_send(b, q);
            q = NULL;
        }
        if (q == NULL) {
            q = ddb_req_new(b, DDB_BATCH_MAX_ITEMS);
            if (q == NULL || pbuf_puts(&q->body, "{\"RequestItems\":{") < 0 ||
                pbuf_json_string(&q->body, ctx->table, strlen(ctx->table)) < 0 ||
                pbuf_puts(&q->body, ":[") < 0) {
                if (q) ddb_req_free(q);
                q = NULL;
                ddb_report(b, i, CD_RECORD_RETRY, 0, "out of memory");
                continue;
            }
        }
        if ((q->n > 0 && pbuf_puts(&q->body, ",") < 0) ||
            pbuf_append(&q->body, ddb_rec_body(b, r), r->body_len) < 0) {
            ddb_report(b, i, CD_RECORD_RETRY, 0, "out of memory");
            continue;
        }
        q->idx[q->n++] = i;
    }
    if (q != NULL) {
        if (q->n == 0 || pbuf_puts(&q->body, "]}}") < 0) {
            for (size_t k = 0; k < q->n; k++)
                ddb_report(b, q->idx[k], CD_RECORD_RETRY, 0, "out of memory");
            ddb_req_free(q);
        } else {
            ddb_req_send(b, q);
        }
    }
}

/* ----------------------------------------------------------------- batches */

static void ddb_batch_free(ddb_batch *b) {
    pbuf_free(&b->arena);
    free(b->recs);
    free(b->failed);
    free(b);
}

static void ddb_batch_run(ddb_batch *b) {
    ddb_ctx *ctx = b->ctx;
    while (b->round < b->nrounds) {
        ddb_send_round(b);
        if (b->requests > 0) return;
        b->round++;
    }
    /* Every record has been reported by now. */
    inflight_remove(&ctx->fl, &b->link);
    ddb_batch_free(b);
}

static int ddb_write(void *opaque, cd_batch *batch) {
    ddb_ctx *ctx = opaque;
    if (!inflight_accepts(&ctx->fl)) return CD_ERR_BUSY;
    size_t count = batch->count; /* the last record_done may free batch */
    ddb_batch *b = calloc(1, sizeof(*b));
    if (b == NULL) return CD_ERR_NOMEM;
    b->recs = calloc(count ? count : 1, sizeof(*b->recs));
    b->failed = calloc(count ? count : 1, sizeof(*b->failed));
    /* About 320 bytes per record for onboarding events; grown when not. */
    if (b->recs == NULL || b->failed == NULL || pbuf_reserve(&b->arena, count * 320) < 0) {
        ddb_batch_free(b);
        return CD_ERR_NOMEM;
    }
    b->ctx = ctx;
    b->batch = batch;
    b->count = count;
    b->remaining = count;
    inflight_add(&ctx->fl, &b->link);

    char err[512];
    for (size_t i = 0; i < count; i++) {
        if (ddb_prepare(ctx, b, &b->recs[i], i, &batch->records[i], err, sizeof(err)) < 0)
            ddb_report(b, i, CD_RECORD_FATAL, 0, err);
    }
    if (ddb_number_rounds(b) < 0) {
        for (size_t i = 0; i < count; i++)
            ddb_report(b, i, CD_RECORD_RETRY, 0, "out of memory");
    }
    ddb_batch_run(b);
    return 0;
}

/* -------------------------------------------------------------- lifecycle */

static int ddb_init(const cd_host *host, cd_instance *inst, const cd_config *cfg, void **out,
                    char *errbuf, size_t errlen) {
    if (!CD_HOST_HAS(host, aws_credentials_check) || !CD_HOST_HAS(host, template_compile)) {
        snprintf(errbuf, errlen, "the engine lacks the HTTP client or templates (ABI >= 1.3)");
        return CD_ERR_UNSUPPORTED;
    }
    ddb_ctx *ctx = NULL;
    int rc = ddb_conf_create(host, inst, cfg, &ctx, errbuf, errlen);
    if (rc < 0) return rc;
    ctx->m_requests = host->metric_register(inst, CD_METRIC_COUNTER, "dynamodb_requests_total",
                                            "DynamoDB requests answered");
    ctx->m_unprocessed =
        host->metric_register(inst, CD_METRIC_COUNTER, "dynamodb_unprocessed_items_total",
                              "Items returned in UnprocessedItems (retried)");
    ctx->m_retries = host->metric_register(inst, CD_METRIC_COUNTER, "dynamodb_retries_total",
                                           "Records answered RETRY");
    *out = ctx;
    return 0;
}

static int ddb_start(void *opaque, char *errbuf, size_t errlen) {
    ddb_ctx *ctx = opaque;
    if (ctx->host->aws_credentials_check(ctx->inst, errbuf, errlen) < 0) return CD_ERR_INVALID;
    int rc = inflight_start(&ctx->fl, ctx->max_in_flight, errbuf, errlen);
    if (rc < 0) return rc;
    ctx->host->log(ctx->inst, CD_LOG_INFO, "table %s via %s (%s, %s)", ctx->table, ctx->url,
                   ctx->region,
                   ctx->batched               ? "BatchWriteItem"
                   : ctx->op == DDB_OP_PUT    ? "PutItem"
                   : ctx->op == DDB_OP_UPDATE ? "UpdateItem"
                                              : "DeleteItem");
    return 0;
}

/* stop: take no new batches, let the ones in flight be answered, free the
 * pool, then call cb once (from the loop): plugins/common/inflight.h. */
static int ddb_stop(void *opaque, cd_done_cb cb, void *cb_opaque) {
    ddb_ctx *ctx = opaque;
    return inflight_stop(&ctx->fl, cb, cb_opaque);
}

static void ddb_destroy(void *opaque) {
    ddb_ctx *ctx = opaque;
    if (ctx == NULL) return;
    if (!inflight_can_free(&ctx->fl)) return; /* then nothing is in flight either */
    ddb_conf_destroy(ctx);
}

/* ------------------------------------------------------------- descriptor */
static const cd_sink_ops ddb_sink_ops = {
    .init = ddb_init,
    .start = ddb_start,
    .write = ddb_write,
    .flush = NULL, /* every record is reported; nothing to complete */
    .stop = ddb_stop,
    .destroy = ddb_destroy,
};

static const cd_plugin_desc ddb_plugin_desc = {
    .abi_version = CD_ABI_VERSION,
    .struct_size = sizeof(cd_plugin_desc),
    .name = "dynamodb",
    .version = "1.0.0",
    .description = "Writes records to a DynamoDB table: batched puts, updates, deletes, "
                   "conditional writes, TTL",
    .kind = CD_PLUGIN_SINK,
    .options = ddb_options,
    .sink = &ddb_sink_ops,
};

CD_PLUGIN_DEFINE(&ddb_plugin_desc)
