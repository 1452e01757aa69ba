/*
 * sink-sns — publishes records to an SNS topic: Publish, or PublishBatch of
 * up to 10 entries; subject, message and message attribute templates; FIFO
 * group and deduplication ids; duplicate suppression for standard topics
 * through the engine's Redis.
 *
 * The files of this plugin (sink-file's layout):
 *   sns.c        the callbacks and the descriptor (this file)
 *   sns_conf.c   options -> context (init) and back (destroy)
 *   sns_proto.c  form encoding, XML answers (expat), a PublishBatch
 *                entry's outcome, batch planning (pure, unit tested)
 *   sns.h        the context struct and friends
 * and from plugins/common: aws_error_xml.c (an error answer -> OK / RETRY /
 * FATAL), aws_conf.c (region and endpoint), inflight.c (batches in flight,
 * stop).
 *
 * The path of one batch:
 *   sns_write()         renders each record into its encoded parameters,
 *                       its order identity and its dedupe key; a record too
 *                       large for SNS is FATAL here; numbers the records
 *                       of each key into rounds (see sns.h)
 *   sns_on_exists()     (standard topic with dedupe_window) EXISTS per
 *                       record: a key already there was published before,
 *                       the record is OK without publishing again
 *   sns_batch_run()     sends one round at a time: PublishBatch requests of
 *                       up to 10 entries / 256 KiB, or Publish for a lone
 *                       record; the HTTP pool bounds how many are in flight
 *   sns_on_response()   reads the XML answer: each entry's outcome on its
 *                       own; a published record's dedupe key is SET (NX PX
 *                       window) before the record is reported OK
 *
 * Requests are signed by the engine's HTTP client (SigV4, service "sns").
 */
#include "sns.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ config map
 * Keep README.md's options table in step with this one. */
static const cd_option sns_options[] = {
    {.name = "topic_arn",
     .type = CD_OPT_STRING,
     .required = 1,
     .description = "Topic ARN (e.g. \"${KYC_ALERT_TOPIC_ARN}\"); a name ending in .fifo is a "
                    "FIFO topic"},
    {.name = "region",
     .type = CD_OPT_STRING,
     .description = "AWS region for signing and the default endpoint; default: the ARN's"},
    {.name = "endpoint",
     .type = CD_OPT_STRING,
     .description = "Endpoint URL; default https://sns.<region>.amazonaws.com/"},
    {.name = "subject",
     .type = CD_OPT_STRING,
     .description = "Subject template, rendered as text (email subscriptions); none when unset"},
    {.name = "message",
     .type = CD_OPT_JSON,
     .default_value = "\"${/}\"",
     .description = "Message template: a string renders as text, any other JSON value as "
                    "compact JSON"},
    {.name = "message_attributes",
     .type = CD_OPT_JSON,
     .description = "Object of name -> {\"type\": String|Number|Binary|String.Array, \"value\": "
                    "template}"},
    {.name = "message_group_id",
     .type = CD_OPT_STRING,
     .default_value = "${/customerId}",
     .description = "FIFO topics: MessageGroupId template (also the order key)"},
    {.name = "message_deduplication_id",
     .type = CD_OPT_STRING,
     .default_value = "${/eventId}",
     .description = "FIFO topics: MessageDeduplicationId template"},
    {.name = "dedupe_window",
     .type = CD_OPT_JSON,
     .default_value = "\"24h\"",
     .description = "Standard topics: a record whose dedupe_key was published within this window "
                    "is not published again (\"24h\", \"90m\", \"30s\", \"500ms\", "
                    "milliseconds; 0 or \"off\": no Redis)"},
    {.name = "dedupe_key",
     .type = CD_OPT_STRING,
     .default_value = "${/eventId}",
     .description = "Template of the identity duplicate suppression compares"},
    {.name = "dedupe_prefix",
     .type = CD_OPT_STRING,
     .default_value = "sns:dedupe:",
     .description = "Redis key prefix; keys are <prefix><pipeline>/<sink>:<dedupe_key>"},
    {.name = "on_redis_error",
     .type = CD_OPT_ENUM,
     .default_value = "retry",
     .enum_values = "retry|publish",
     .description = "Redis unavailable: retry the record, or publish it without dedupe"},
    {.name = "batch",
     .type = CD_OPT_BOOL,
     .default_value = "true",
     .description = "Use PublishBatch when a batch holds several records"},
    {.name = "max_in_flight",
     .type = CD_OPT_INT,
     .default_value = "16",
     .has_bounds = 1,
     .min = 1,
     .max = 1024,
     .description = "HTTP requests in flight at once"},
    {.name = "timeout_ms",
     .type = CD_OPT_INT,
     .default_value = "10000",
     .has_bounds = 1,
     .min = 100,
     .max = 600000,
     .description = "Timeout of one request (a timeout is retried)"},
    {0},
};

static const char *const sns_headers[] = {
    "Content-Type: application/x-www-form-urlencoded; charset=utf-8", NULL};

static void sns_batch_run(sns_batch *b);

/* -------------------------------------------------------------- reporting */

static int sns_key_failed(const sns_batch *b, const sns_rec *r) {
    if (!r->has_okey) return 0;
    for (size_t i = 0; i < b->nfailed; i++) {
        const sns_rec *o = &b->recs[b->failed[i]];
        if (o->okey_len == r->okey_len &&
            memcmp(b->strs.data + o->okey_off, b->strs.data + r->okey_off, r->okey_len) == 0)
            return 1;
    }
    return 0;
}

/* Reports record i once.  The call for the batch's last record may free the
 * engine's batch: after it, b->batch must not be touched (our sns_batch
 * lives on until sns_batch_run frees it). */
static void sns_report(sns_batch *b, size_t i, cd_outcome o, int64_t hint, const char *reason) {
    sns_rec *r = &b->recs[i];
    if (r->state == SNS_REC_DONE) return;
    r->state = SNS_REC_DONE;
    r->outcome = (uint8_t)o;
    sns_ctx *ctx = b->ctx;
    if (o == CD_RECORD_RETRY) {
        if (r->has_okey && !sns_key_failed(b, r)) b->failed[b->nfailed++] = i;
        if (ctx->m_retries) ctx->host->metric_add(ctx->m_retries, 1);
    }
    b->remaining--;
    ctx->host->record_done(b->batch, i, o, hint, reason);
}

/* Redis trouble is logged at most every 10 s. */
static void sns_redis_warn(sns_ctx *ctx, const char *what, const char *why, const char *then) {
    if (ctx->m_redis_errors) ctx->host->metric_add(ctx->m_redis_errors, 1);
    uint64_t now = uv_now(ctx->host->loop(ctx->inst));
    if (ctx->redis_log_at != 0 && now - ctx->redis_log_at < 10000) {
        ctx->redis_log_skipped++;
        return;
    }
    ctx->host->log(ctx->inst, CD_LOG_WARN, "redis %s failed: %s (%s; %" PRIu64 " more not logged)",
                   what, why, then, ctx->redis_log_skipped);
    ctx->redis_log_at = now;
    ctx->redis_log_skipped = 0;
}

/* One async step (a Redis reply, an HTTP answer) of the batch is over. */
static void sns_batch_settle(sns_batch *b, int checking) {
    if (--b->pending > 0) return;
    if (!checking) b->round++;
    sns_batch_run(b);
}

/* ------------------------------------------------------------- rendering */

static int sns_render(sns_ctx *ctx, const cd_template *t, const cd_record *rec, char *err,
                      size_t errlen) {
    ctx->render.len = 0;
    if (ctx->render.data) ctx->render.data[0] = '\0';
    return ctx->host->template_render(t, rec, 1, &ctx->render, err, errlen);
}

/* Appends "&name=value" (both encoded) to a record's parameters. */
static int sns_frag(pbuf *f, const char *name, const char *value, size_t vlen) {
    if (pbuf_append(f, "&", 1) < 0 || sns_form_encode(f, name, strlen(name)) < 0 ||
        pbuf_append(f, "=", 1) < 0 || sns_form_encode(f, value, vlen) < 0)
        return CD_ERR_NOMEM;
    return 0;
}

static int sns_is_number(const char *s, size_t n) {
    if (n == 0 || n > 300) return 0;
    char *end;
    strtod(s, &end);
    return end == s + n;
}

/* Renders record i into its parameters, order identity and dedupe key.
 * Returns 0, or negative with err (the record is then FATAL). */
static int sns_prepare(sns_batch *b, size_t i, const cd_record *rec, char *err, size_t errlen) {
    sns_ctx *ctx = b->ctx;
    sns_rec *r = &b->recs[i];
    pbuf *f = &b->frags;
    char terr[300];
    r->b = b;
    r->frag_off = f->len;
    if (sns_render(ctx, ctx->t_message, rec, terr, sizeof(terr)) < 0) {
        snprintf(err, errlen, "message: %s", terr);
        return CD_ERR_INVALID;
    }
    if (ctx->render.len == 0) {
        snprintf(err, errlen, "message: renders empty (SNS refuses an empty message)");
        return CD_ERR_INVALID;
    }
    r->size = ctx->render.len;
    if (r->size > SNS_MAX_MESSAGE_BYTES) goto too_large;
    if (sns_frag(f, "Message", ctx->render.data, ctx->render.len) < 0) goto nomem;
    if (ctx->t_subject != NULL) {
        if (sns_render(ctx, ctx->t_subject, rec, terr, sizeof(terr)) < 0) {
            snprintf(err, errlen, "subject: %s", terr);
            return CD_ERR_INVALID;
        }
        if (ctx->render.len > 100) {
            snprintf(err, errlen, "subject: %zu bytes, SNS allows 100", ctx->render.len);
            return CD_ERR_INVALID;
        }
        if (ctx->render.len > 0 && sns_frag(f, "Subject", ctx->render.data, ctx->render.len) < 0)
            goto nomem;
    }
    static const char *const type_names[] = {"String", "Number", "Binary", "String.Array"};
    for (size_t a = 0; a < ctx->nattrs; a++) {
        const sns_attr *at = &ctx->attrs[a];
        if (sns_render(ctx, at->value, rec, terr, sizeof(terr)) < 0) {
            snprintf(err, errlen, "message_attributes.%s: %s", at->name, terr);
            return CD_ERR_INVALID;
        }
        const char *v = ctx->render.data;
        size_t vl = ctx->render.len;
        if (vl == 0 || (at->type == SNS_ATTR_NUMBER && !sns_is_number(v, vl)) ||
            (at->type == SNS_ATTR_STRING_ARRAY && v[0] != '[')) {
            snprintf(err, errlen, "message_attributes.%s: \"%.*s\" is not a valid %s value",
                     at->name, (int)(vl > 100 ? 100 : vl), v, type_names[at->type]);
            return CD_ERR_INVALID;
        }
        r->size += strlen(at->name) + strlen(type_names[at->type]) + vl;
        if (r->size > SNS_MAX_MESSAGE_BYTES) goto too_large;
        char pn[64];
        snprintf(pn, sizeof(pn), "MessageAttributes.entry.%zu.", a + 1);
        size_t pl = strlen(pn);
        ctx->tmp.len = 0;
        if (at->type == SNS_ATTR_BINARY && sns_base64(&ctx->tmp, v, vl) < 0) goto nomem;
        snprintf(pn + pl, sizeof(pn) - pl, "Name");
        if (sns_frag(f, pn, at->name, strlen(at->name)) < 0) goto nomem;
        snprintf(pn + pl, sizeof(pn) - pl, "Value.DataType");
        if (sns_frag(f, pn, type_names[at->type], strlen(type_names[at->type])) < 0) goto nomem;
        if (at->type == SNS_ATTR_BINARY) {
            snprintf(pn + pl, sizeof(pn) - pl, "Value.BinaryValue");
            if (sns_frag(f, pn, ctx->tmp.data, ctx->tmp.len) < 0) goto nomem;
        } else {
            snprintf(pn + pl, sizeof(pn) - pl, "Value.StringValue");
            if (sns_frag(f, pn, v, vl) < 0) goto nomem;
        }
    }
    if (ctx->fifo) {
        if (sns_render(ctx, ctx->t_group, rec, terr, sizeof(terr)) < 0) {
            snprintf(err, errlen, "message_group_id: %s", terr);
            return CD_ERR_INVALID;
        }
        if (ctx->render.len == 0 || ctx->render.len > 128) {
            snprintf(err, errlen, "message_group_id: renders %zu bytes, SNS wants 1 to 128",
                     ctx->render.len);
            return CD_ERR_INVALID;
        }
        if (sns_frag(f, "MessageGroupId", ctx->render.data, ctx->render.len) < 0) goto nomem;
        r->okey_off = b->strs.len;
        r->okey_len = ctx->render.len;
        r->has_okey = 1;
        if (pbuf_append(&b->strs, ctx->render.data, ctx->render.len) < 0) goto nomem;
        if (ctx->t_dedup_id != NULL) {
            if (sns_render(ctx, ctx->t_dedup_id, rec, terr, sizeof(terr)) < 0) {
                snprintf(err, errlen, "message_deduplication_id: %s", terr);
                return CD_ERR_INVALID;
            }
            if (ctx->render.len == 0 || ctx->render.len > 128) {
                snprintf(err, errlen,
                         "message_deduplication_id: renders %zu bytes, SNS wants 1 to 128",
                         ctx->render.len);
                return CD_ERR_INVALID;
            }
            if (sns_frag(f, "MessageDeduplicationId", ctx->render.data, ctx->render.len) < 0)
                goto nomem;
        }
    } else if (rec->key != NULL) {
        r->okey_off = b->strs.len;
        r->okey_len = rec->key_len;
        r->has_okey = 1;
        if (pbuf_append(&b->strs, rec->key, rec->key_len) < 0) goto nomem;
    }
    if (ctx->dedupe_window_ms > 0) {
        if (sns_render(ctx, ctx->t_dedupe_key, rec, terr, sizeof(terr)) < 0) {
            snprintf(err, errlen, "dedupe_key: %s", terr);
            return CD_ERR_INVALID;
        }
        /* An empty key names no event: such records would all share one
         * Redis key and suppress each other, so they are published without
         * duplicate suppression instead. */
        if (ctx->render.len == 0) goto no_dedupe;
        r->dkey_off = b->strs.len;
        if (pbuf_puts(&b->strs, ctx->dedupe_prefix) < 0 ||
            pbuf_append(&b->strs, ctx->render.data, ctx->render.len) < 0)
            goto nomem;
        r->dkey_len = b->strs.len - r->dkey_off;
        r->dedupe = 1;
    }
no_dedupe:
    r->frag_len = f->len - r->frag_off;
    return 0;
too_large:
    snprintf(err, errlen,
             "message too large: %zu+ bytes of message and attributes; SNS allows %zu "
             "(256 KiB)",
             r->size, SNS_MAX_MESSAGE_BYTES);
    return CD_ERR_INVALID;
nomem:
    snprintf(err, errlen, "out of memory");
    return CD_ERR_NOMEM;
}

/* Finds (or enters) the record of the batch with the same identity as
 * record i in an open-addressing table of index + 1; returns the index + 1
 * of that earlier record (it is replaced by i), or 0. */
static size_t sns_slot_swap(size_t *slots, size_t cap, const sns_batch *b, size_t i, size_t off,
                            size_t len, int by_dkey) {
    const char *k = b->strs.data + off;
    uint64_t h = 1469598103934665603ULL;
    for (size_t j = 0; j < len; j++)
        h = (h ^ (unsigned char)k[j]) * 1099511628211ULL;
    for (size_t s = (size_t)h & (cap - 1);; s = (s + 1) & (cap - 1)) {
        if (slots[s] == 0) {
            slots[s] = i + 1;
            return 0;
        }
        const sns_rec *o = &b->recs[slots[s] - 1];
        size_t ooff = by_dkey ? o->dkey_off : o->okey_off;
        size_t olen = by_dkey ? o->dkey_len : o->okey_len;
        if (olen == len && memcmp(b->strs.data + ooff, k, len) == 0) {
            size_t prev = slots[s];
            slots[s] = i + 1;
            return prev;
        }
    }
}

/* Numbers each record's round: the n-th record of a key is in round n.  A
 * record whose dedupe key an earlier record of the batch carries (the same
 * event twice) goes in a later round than that record and is published only
 * if that one was not (dup_of). */
static int sns_number_rounds(sns_batch *b) {
    size_t cap = 16;
    while (cap < b->count * 2)
        cap *= 2;
    size_t *slots = calloc(2 * cap, sizeof(*slots)); /* by order key, then by dedupe key */
    if (slots == NULL) return CD_ERR_NOMEM;
    b->nrounds = 0;
    for (size_t i = 0; i < b->count; i++) {
        sns_rec *r = &b->recs[i];
        if (r->state == SNS_REC_DONE) continue;
        r->round = 0;
        if (r->has_okey) {
            size_t prev = sns_slot_swap(slots, cap, b, i, r->okey_off, r->okey_len, 0);
            if (prev) r->round = b->recs[prev - 1].round + 1;
        }
        if (r->dedupe) {
            size_t prev = sns_slot_swap(slots + cap, cap, b, i, r->dkey_off, r->dkey_len, 1);
            if (prev) {
                r->dup_of = prev;
                if (r->round < b->recs[prev - 1].round + 1) r->round = b->recs[prev - 1].round + 1;
            }
        }
        if (r->round + 1 > b->nrounds) b->nrounds = r->round + 1;
    }
    free(slots);
    return 0;
}

/* ------------------------------------------------------------------ Redis */

static void sns_on_set(void *opaque, const cd_redis_reply *reply) {
    sns_rec *r = opaque;
    sns_batch *b = r->b;
    if (reply->error != 0 || reply->type == CD_REDIS_ERROR)
        /* Published all the same: only a later duplicate would get through. */
        sns_redis_warn(b->ctx, "SET", reply->str ? reply->str : "no answer",
                       "the record is published; a re-delivery of it would be published again");
    sns_report(b, (size_t)(r - b->recs), CD_RECORD_OK, 0, NULL);
    sns_batch_settle(b, 0);
}

/* Record r was published: remember its dedupe key, then report OK. */
static void sns_published(sns_batch *b, size_t i) {
    sns_ctx *ctx = b->ctx;
    sns_rec *r = &b->recs[i];
    if (ctx->m_published) ctx->host->metric_add(ctx->m_published, 1);
    if (!r->dedupe) {
        sns_report(b, i, CD_RECORD_OK, 0, NULL);
        return;
    }
    const char *argv[] = {"SET", b->strs.data + r->dkey_off, "1", "NX", "PX", ctx->window_text};
    size_t argvlen[] = {3, r->dkey_len, 1, 2, 2, strlen(ctx->window_text)};
    char err[256];
    r->state = SNS_REC_SETTING;
    if (ctx->host->redis_command(ctx->inst, sns_on_set, r, 6, argv, argvlen, err, sizeof(err)) ==
        0) {
        b->pending++;
        return;
    }
    sns_redis_warn(ctx, "SET", err,
                   "the record is published; a re-delivery of it would be published again");
    sns_report(b, i, CD_RECORD_OK, 0, NULL);
}

/* EXISTS could not be answered: retry the record or publish it anyway. */
static void sns_exists_failed(sns_batch *b, size_t i, const char *why) {
    sns_ctx *ctx = b->ctx;
    sns_rec *r = &b->recs[i];
    sns_redis_warn(ctx, "EXISTS", why,
                   ctx->redis_error_publish ? "on_redis_error: publish, without dedupe"
                                            : "on_redis_error: retry");
    if (ctx->redis_error_publish) {
        r->state = SNS_REC_PENDING;
        r->dedupe = 0;
        return;
    }
    char reason[400];
    snprintf(reason, sizeof(reason), "redis unavailable for duplicate suppression: %s", why);
    sns_report(b, i, CD_RECORD_RETRY, 1000, reason);
}

static void sns_on_exists(void *opaque, const cd_redis_reply *reply) {
    sns_rec *r = opaque;
    sns_batch *b = r->b;
    size_t i = (size_t)(r - b->recs);
    if (reply->error != 0 || reply->type != CD_REDIS_INTEGER) {
        sns_exists_failed(b, i, reply->str ? reply->str : "unexpected reply");
    } else if (reply->integer > 0) {
        if (b->ctx->m_suppressed) b->ctx->host->metric_add(b->ctx->m_suppressed, 1);
        sns_report(b, i, CD_RECORD_OK, 0, NULL);
    } else {
        r->state = SNS_REC_PENDING;
    }
    sns_batch_settle(b, 1);
}

/* ---------------------------------------------------------------- requests */

static void sns_on_response(void *opaque, const cd_http_result *res) {
    sns_req *q = opaque;
    sns_batch *b = q->b;
    sns_ctx *ctx = b->ctx;
    if (ctx->m_requests) ctx->host->metric_add(ctx->m_requests, 1);
    aws_error v;
    cd_outcome o = aws_error_classify_xml(res, &v);
    sns_response *resp = ctx->resp; /* answers are read one at a time, on the loop */
    char xerr[200] = "";
    int parsed = -1;
    if (o == CD_RECORD_OK && res->body_len > 0)
        parsed = sns_xml_parse(res->body, res->body_len, resp, xerr, sizeof(xerr));
    else
        memset(resp, 0, sizeof(*resp));
    if (o == CD_RECORD_OK) {
        if (!q->batched &&
            (parsed < 0 || resp->kind != SNS_XML_PUBLISH || resp->message_id[0] == '\0')) {
            o = CD_RECORD_RETRY;
            snprintf(v.reason, sizeof(v.reason), "unreadable Publish answer: %s",
                     xerr[0] ? xerr : "no MessageId");
        } else if (q->batched && (parsed < 0 || resp->kind != SNS_XML_BATCH)) {
            o = CD_RECORD_RETRY;
            snprintf(v.reason, sizeof(v.reason), "unreadable PublishBatch answer: %s",
                     xerr[0] ? xerr : "not a PublishBatchResponse");
        }
    }
    if (o != CD_RECORD_OK && ctx->host->log_enabled(ctx->inst, CD_LOG_DEBUG))
        ctx->host->log(ctx->inst, CD_LOG_DEBUG, "%zu record(s): %s (%s)", q->n, v.reason,
                       o == CD_RECORD_RETRY ? "retry" : "fatal");
    if (o != CD_RECORD_OK || !q->batched) {
        for (size_t k = 0; k < q->n; k++) {
            if (o == CD_RECORD_OK)
                sns_published(b, q->idx[k]);
            else
                sns_report(b, q->idx[k], o, v.retry_after_ms, v.reason);
        }
    } else {
        /* Each entry on its own: Id "r<index in the batch>". */
        int seen[SNS_BATCH_MAX_ENTRIES] = {0};
        for (size_t e = 0; e < resp->nentries; e++) {
            const sns_entry_result *er = &resp->entries[e];
            char *end;
            if (er->id[0] != 'r') continue;
            unsigned long long idx = strtoull(er->id + 1, &end, 10);
            size_t k = 0;
            while (k < q->n && (q->idx[k] != idx || *end != '\0'))
                k++;
            if (k == q->n || seen[k]) continue;
            seen[k] = 1;
            aws_error ev;
            cd_outcome eo = sns_classify_entry(er, &ev);
            if (eo == CD_RECORD_OK)
                sns_published(b, q->idx[k]);
            else
                sns_report(b, q->idx[k], eo, 0, ev.reason);
        }
        for (size_t k = 0; k < q->n; k++)
            if (!seen[k])
                sns_report(b, q->idx[k], CD_RECORD_RETRY, 0,
                           "entry missing from the PublishBatch answer");
    }
    free(q);
    sns_batch_settle(b, 0);
}

/* Builds q's request body in ctx->body and sends it. */
static void sns_req_send(sns_batch *b, sns_req *q) {
    sns_ctx *ctx = b->ctx;
    pbuf *body = &ctx->body;
    body->len = 0;
    int rc = 0;
    q->batched = q->n > 1;
    rc |= pbuf_puts(body, q->batched ? "Action=PublishBatch" : "Action=Publish");
    rc |= sns_form_param(body, NULL, "TopicArn", ctx->topic_arn, strlen(ctx->topic_arn));
    for (size_t k = 0; k < q->n && rc == 0; k++) {
        const sns_rec *r = &b->recs[q->idx[k]];
        const char *f = b->frags.data + r->frag_off;
        if (!q->batched) {
            rc |= pbuf_append(body, f, r->frag_len);
            continue;
        }
        char prefix[64], id[32];
        snprintf(prefix, sizeof(prefix), "PublishBatchRequestEntries.member.%zu.", k + 1);
        snprintf(id, sizeof(id), "r%zu", q->idx[k]);
        rc |= sns_form_param(body, prefix, "Id", id, strlen(id));
        /* The record's "&name=value" pairs, each under the member prefix. */
        for (size_t p = 0; p < r->frag_len && rc == 0;) {
            const char *pair = f + p + 1;
            const char *next = memchr(pair, '&', r->frag_len - p - 1);
            size_t n = next ? (size_t)(next - pair) : r->frag_len - p - 1;
            rc |= pbuf_append(body, "&", 1);
            rc |= pbuf_puts(body, prefix);
            rc |= pbuf_append(body, pair, n);
            p += n + 1;
        }
    }
    rc |= pbuf_puts(body, "&Version=2010-03-31");
    if (rc != 0) {
        for (size_t k = 0; k < q->n; k++)
            sns_report(b, q->idx[k], CD_RECORD_RETRY, 0, "out of memory");
        free(q);
        return;
    }
    for (size_t k = 0; k < q->n; k++)
        b->recs[q->idx[k]].state = SNS_REC_SENT;
    cd_http_call call = {
        .method = "POST",
        .url = ctx->url,
        .headers = sns_headers,
        .body = body->data,
        .body_len = body->len,
        .timeout_ms = ctx->timeout_ms,
        .aws_service = "sns",
        .aws_region = ctx->region,
    };
    char err[256];
    rc = ctx->host->http_call(ctx->fl.pool, &call, sns_on_response, q, err, sizeof(err));
    if (rc == 0) {
        b->pending++;
        return;
    }
    /* Credentials not there yet, or the engine shutting down: try later. */
    cd_outcome o = rc == CD_ERR_BUSY ? CD_RECORD_RETRY : CD_RECORD_FATAL;
    for (size_t k = 0; k < q->n; k++)
        sns_report(b, q->idx[k], o, o == CD_RECORD_RETRY ? 1000 : 0, err);
    free(q);
}

/* Sends the records of the current round, in requests of up to 10 entries
 * and 256 KiB (sns_plan_next), or one Publish each with batch off. */
static void sns_send_round(sns_batch *b) {
    sns_ctx *ctx = b->ctx;
    size_t n = 0;
    for (size_t i = 0; i < b->count; i++) {
        sns_rec *r = &b->recs[i];
        if (r->state != SNS_REC_PENDING || r->round != b->round) continue;
        if (sns_key_failed(b, r)) {
            sns_report(b, i, CD_RECORD_RETRY, 0, "an earlier record of this key is retried");
            continue;
        }
        if (r->dup_of) {
            /* The same event earlier in this batch: published (now or
             * before), or not, and then this one is not checked either. */
            if (b->recs[r->dup_of - 1].outcome == CD_RECORD_OK) {
                if (ctx->m_suppressed) ctx->host->metric_add(ctx->m_suppressed, 1);
                sns_report(b, i, CD_RECORD_OK, 0, NULL);
            } else {
                sns_report(b, i, CD_RECORD_RETRY, 0,
                           "the same dedupe_key earlier in the batch was not published");
            }
            continue;
        }
        b->order[n] = i;
        b->sizes[n++] = r->size;
    }
    size_t max = ctx->batched ? SNS_BATCH_MAX_ENTRIES : 1;
    for (size_t off = 0; off < n;) {
        size_t take = sns_plan_next(b->sizes + off, n - off, max, SNS_BATCH_MAX_BYTES);
        sns_req *q = calloc(1, sizeof(*q));
        if (q == NULL) {
            for (size_t k = 0; k < take; k++)
                sns_report(b, b->order[off + k], CD_RECORD_RETRY, 0, "out of memory");
        } else {
            q->b = b;
            q->n = take;
            memcpy(q->idx, b->order + off, take * sizeof(size_t));
            sns_req_send(b, q);
        }
        off += take;
    }
}

/* ----------------------------------------------------------------- batches */

static void sns_batch_free(sns_batch *b) {
    free(b->recs);
    free(b->failed);
    free(b->order);
    free(b->sizes);
    pbuf_free(&b->frags);
    pbuf_free(&b->strs);
    free(b);
}

static void sns_batch_run(sns_batch *b) {
    sns_ctx *ctx = b->ctx;
    while (b->round < b->nrounds) {
        sns_send_round(b);
        if (b->pending > 0) return;
        b->round++;
    }
    /* Every record has been reported by now. */
    inflight_remove(&ctx->fl, &b->link);
    sns_batch_free(b);
}

static int sns_write(void *opaque, cd_batch *batch) {
    sns_ctx *ctx = opaque;
    if (!inflight_accepts(&ctx->fl)) return CD_ERR_BUSY;
    size_t count = batch->count; /* the last record_done may free batch */
    sns_batch *b = calloc(1, sizeof(*b));
    if (b == NULL) return CD_ERR_NOMEM;
    b->recs = calloc(count ? count : 1, sizeof(*b->recs));
    b->failed = calloc(count ? count : 1, sizeof(size_t));
    b->order = calloc(count ? count : 1, sizeof(size_t));
    b->sizes = calloc(count ? count : 1, sizeof(size_t));
    if (b->recs == NULL || b->failed == NULL || b->order == NULL || b->sizes == NULL) {
        sns_batch_free(b);
        return CD_ERR_NOMEM;
    }
    b->ctx = ctx;
    b->batch = batch;
    b->count = count;
    b->remaining = count;
    inflight_add(&ctx->fl, &b->link);

    char err[600];
    for (size_t i = 0; i < count; i++) {
        b->recs[i].b = b;
        if (sns_prepare(b, i, &batch->records[i], err, sizeof(err)) < 0) {
            b->recs[i].dedupe = 0;
            sns_report(b, i, CD_RECORD_FATAL, 0, err);
        }
    }
    if (sns_number_rounds(b) < 0) {
        for (size_t i = 0; i < count; i++)
            sns_report(b, i, CD_RECORD_RETRY, 0, "out of memory");
    }
    /* Duplicate suppression: ask Redis about every record first.  pending
     * counts one extra step so the batch is not run from a callback while
     * the commands are still being sent. */
    b->pending = 1;
    for (size_t i = 0; i < count && ctx->dedupe_window_ms > 0; i++) {
        sns_rec *r = &b->recs[i];
        if (r->state != SNS_REC_PENDING || !r->dedupe || r->dup_of) continue;
        const char *argv[] = {"EXISTS", b->strs.data + r->dkey_off};
        size_t argvlen[] = {6, r->dkey_len};
        r->state = SNS_REC_CHECKING;
        if (ctx->host->redis_command(ctx->inst, sns_on_exists, r, 2, argv, argvlen, err,
                                     sizeof(err)) == 0)
            b->pending++;
        else
            sns_exists_failed(b, i, err);
    }
    sns_batch_settle(b, 1);
    return 0;
}

/* -------------------------------------------------------------- lifecycle */

static int sns_init(const cd_host *host, cd_instance *inst, const cd_config *cfg, void **out,
                    char *errbuf, size_t errlen) {
    if (!CD_HOST_HAS(host, aws_credentials_check) || !CD_HOST_HAS(host, template_compile)) {
        snprintf(errbuf, errlen, "the engine lacks the HTTP client or templates (ABI >= 1.3)");
        return CD_ERR_UNSUPPORTED;
    }
    sns_ctx *ctx = NULL;
    int rc = sns_conf_create(host, inst, cfg, &ctx, errbuf, errlen);
    if (rc < 0) return rc;
    ctx->m_requests = host->metric_register(inst, CD_METRIC_COUNTER, "sns_requests_total",
                                            "SNS requests answered");
    ctx->m_published = host->metric_register(inst, CD_METRIC_COUNTER, "sns_published_total",
                                             "Records SNS accepted");
    ctx->m_suppressed =
        host->metric_register(inst, CD_METRIC_COUNTER, "sns_duplicates_suppressed_total",
                              "Records not published again: their dedupe key was in Redis");
    ctx->m_redis_errors = host->metric_register(inst, CD_METRIC_COUNTER, "sns_redis_errors_total",
                                                "Redis commands for dedupe that failed");
    ctx->m_retries = host->metric_register(inst, CD_METRIC_COUNTER, "sns_retries_total",
                                           "Records answered RETRY");
    *out = ctx;
    return 0;
}

static void sns_on_ping(void *opaque, const cd_redis_reply *reply) {
    (void)opaque;
    (void)reply;
}

static int sns_start(void *opaque, char *errbuf, size_t errlen) {
    sns_ctx *ctx = opaque;
    const cd_host *h = ctx->host;
    if (h->aws_credentials_check(ctx->inst, errbuf, errlen) < 0) return CD_ERR_INVALID;
    if (ctx->dedupe_window_ms > 0) {
        /* The PING also opens the engine's Redis connection early; its
         * answer does not matter (opaque NULL: it outlives nothing). */
        const char *argv[] = {"PING"};
        char err[256] = "";
        int rc = CD_HOST_HAS(h, redis_command) ? h->redis_command(ctx->inst, sns_on_ping, NULL, 1,
                                                                  argv, NULL, err, sizeof(err))
                                               : CD_ERR_UNSUPPORTED;
        if (rc == CD_ERR_UNSUPPORTED) {
            snprintf(errbuf, errlen,
                     "dedupe_window is on (%s ms) but the engine has no Redis: set redis_url in "
                     "the engine config, or dedupe_window to \"off\"",
                     ctx->window_text);
            return CD_ERR_INVALID;
        }
        if (rc < 0) h->log(ctx->inst, CD_LOG_INFO, "redis not reachable yet: %s", err);
    }
    int rc = inflight_start(&ctx->fl, ctx->max_in_flight, errbuf, errlen);
    if (rc < 0) return rc;
    h->log(ctx->inst, CD_LOG_INFO, "topic %s via %s (%s, %s%s, dedupe %s)", ctx->topic_arn,
           ctx->url, ctx->region, ctx->batched ? "PublishBatch" : "Publish",
           ctx->fifo ? ", FIFO" : "",
           ctx->fifo                   ? "by SNS (MessageDeduplicationId)"
           : ctx->dedupe_window_ms > 0 ? "by Redis"
                                       : "off");
    return 0;
}

/* stop: take no new batches, let the ones in flight be answered, free the
 * pool, then call cb once (from the loop): plugins/common/inflight.h. */
static int sns_stop(void *opaque, cd_done_cb cb, void *cb_opaque) {
    sns_ctx *ctx = opaque;
    return inflight_stop(&ctx->fl, cb, cb_opaque);
}

static void sns_destroy(void *opaque) {
    sns_ctx *ctx = opaque;
    if (ctx == NULL) return;
    if (!inflight_can_free(&ctx->fl)) return; /* then nothing is in flight either */
    sns_conf_destroy(ctx);
}

/* ------------------------------------------------------------- descriptor */
static const cd_sink_ops sns_sink_ops = {
    .init = sns_init,
    .start = sns_start,
    .write = sns_write,
    .flush = NULL, /* every record is reported; nothing to complete */
    .stop = sns_stop,
    .destroy = sns_destroy,
};

static const cd_plugin_desc sns_plugin_desc = {
    .abi_version = CD_ABI_VERSION,
    .struct_size = sizeof(cd_plugin_desc),
    .name = "sns",
    .version = "1.0.0",
    .description = "Publishes records to an SNS topic: PublishBatch, subject and attribute "
                   "templates, FIFO ids, duplicate suppression through Redis",
    .kind = CD_PLUGIN_SINK,
    .options = sns_options,
    .sink = &sns_sink_ops,
};

CD_PLUGIN_DEFINE(&sns_plugin_desc)
