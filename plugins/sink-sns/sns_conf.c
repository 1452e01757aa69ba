/*
 * sink-sns — configuration: options in, context out.  Runs in init: it reads
 * and checks the options and compiles every template (so `connectd
 * validate` reports a bad one); no I/O.
 */
#include "sns.h"

#include "aws_conf.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int sns_conf_dup(const char *s, char **out, const char *opt, char *errbuf, size_t errlen) {
    *out = NULL;
    if (s == NULL) return 0;
    *out = strdup(s);
    if (*out == NULL) {
        snprintf(errbuf, errlen, "%s: out of memory", opt);
        return CD_ERR_NOMEM;
    }
    return 0;
}

/* Compiles JSON text `json` as the template of option `name`. */
static int sns_conf_compile(sns_ctx *ctx, const char *name, const char *json, cd_template **out,
                            char *errbuf, size_t errlen) {
    char err[256];
    if (ctx->host->template_compile(json, out, err, sizeof(err)) < 0) {
        *out = NULL;
        snprintf(errbuf, errlen, "%s: %s", name, err);
        return CD_ERR_INVALID;
    }
    return 0;
}

/* Compiles a string option as a text template; unset or empty: none. */
static int sns_conf_text(sns_ctx *ctx, const cd_config *cfg, const char *name, cd_template **out,
                         char *errbuf, size_t errlen) {
    *out = NULL;
    const char *s = ctx->host->cfg_string(cfg, name);
    if (s == NULL || s[0] == '\0') return 0;
    json_t *j = json_string(s);
    char *text = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL) {
        snprintf(errbuf, errlen, "%s: not valid UTF-8 text", name);
        return CD_ERR_INVALID;
    }
    int rc = sns_conf_compile(ctx, name, text, out, errbuf, errlen);
    free(text);
    return rc;
}

/* arn:<partition>:sns:<region>:<account>:<name>; copies the region. */
static int sns_conf_arn(const char *arn, char *region, size_t rlen, const char **name, char *errbuf,
                        size_t errlen) {
    const char *f[6];
    size_t n = 0;
    f[n++] = arn;
    for (const char *p = arn; *p && n < 6; p++)
        if (*p == ':') f[n++] = p + 1;
    if (strncmp(arn, "arn:", 4) != 0 || n < 6 || strncmp(f[2], "sns:", 4) != 0 || f[5][0] == '\0' ||
        strchr(f[5], ':') != NULL) {
        snprintf(errbuf, errlen,
                 "topic_arn: \"%s\" is not an SNS topic ARN "
                 "(arn:aws:sns:<region>:<account>:<topic>)",
                 arn);
        return CD_ERR_INVALID;
    }
    snprintf(region, rlen, "%.*s", (int)(f[4] - f[3] - 1), f[3]);
    *name = f[5];
    return 0;
}

static int sns_conf_attrs(sns_ctx *ctx, const cd_config *cfg, char *errbuf, size_t errlen) {
    const char *json = ctx->host->cfg_json(cfg, "message_attributes");
    if (json == NULL) return 0;
    json_t *j = json_loads(json, JSON_DECODE_ANY, NULL);
    int rc = 0;
    if (!json_is_object(j)) {
        snprintf(errbuf, errlen,
                 "message_attributes: must be an object of name -> {\"type\", \"value\"}");
        rc = CD_ERR_INVALID;
        goto out;
    }
    size_t n = json_object_size(j);
    if (n > 10) {
        snprintf(errbuf, errlen, "message_attributes: %zu attributes, SNS allows 10", n);
        rc = CD_ERR_INVALID;
        goto out;
    }
    ctx->attrs = calloc(n ? n : 1, sizeof(*ctx->attrs));
    if (ctx->attrs == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        rc = CD_ERR_NOMEM;
        goto out;
    }
    const char *name;
    json_t *v;
    json_object_foreach(j, name, v) {
        char where[300];
        snprintf(where, sizeof(where), "message_attributes.%s", name);
        size_t nl = strlen(name);
        if (nl == 0 || nl > 256 || strncmp(name, "AWS.", 4) == 0 ||
            strncmp(name, "Amazon.", 7) == 0 || name[0] == '.' || name[nl - 1] == '.' ||
            strstr(name, "..") != NULL ||
            strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvw"
                         "xyz0123456789_-.") != nl) {
            snprintf(errbuf, errlen,
                     "%s: not a valid attribute name (1-256 of A-Za-z0-9_-., no leading, "
                     "trailing or double '.', no AWS./Amazon. prefix)",
                     where);
            rc = CD_ERR_INVALID;
            goto out;
        }
        const char *type = json_string_value(json_object_get(v, "type"));
        json_t *value = json_object_get(v, "value");
        if (!json_is_object(v) || type == NULL || value == NULL || json_object_size(v) != 2) {
            snprintf(errbuf, errlen, "%s: must be {\"type\": ..., \"value\": template}", where);
            rc = CD_ERR_INVALID;
            goto out;
        }
        sns_attr *a = &ctx->attrs[ctx->nattrs];
        if (strcmp(type, "String") == 0)
            a->type = SNS_ATTR_STRING;
        else if (strcmp(type, "Number") == 0)
            a->type = SNS_ATTR_NUMBER;
        else if (strcmp(type, "Binary") == 0)
            a->type = SNS_ATTR_BINARY;
        else if (strcmp(type, "String.Array") == 0)
            a->type = SNS_ATTR_STRING_ARRAY;
        else {
            snprintf(errbuf, errlen,
                     "%s.type: must be String, Number, Binary or String.Array, got \"%s\"", where,
                     type);
            rc = CD_ERR_INVALID;
            goto out;
        }
        if ((a->name = strdup(name)) == NULL) {
            snprintf(errbuf, errlen, "out of memory");
            rc = CD_ERR_NOMEM;
            goto out;
        }
        ctx->nattrs++;
        char *text = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
        if (text == NULL) {
            snprintf(errbuf, errlen, "out of memory");
            rc = CD_ERR_NOMEM;
            goto out;
        }
        strncat(where, ".value", sizeof(where) - strlen(where) - 1);
        rc = sns_conf_compile(ctx, where, text, &a->value, errbuf, errlen);
        free(text);
        if (rc < 0) goto out;
    }
out:
    json_decref(j);
    return rc;
}

int sns_conf_create(const cd_host *host, cd_instance *inst, const cd_config *cfg, sns_ctx **out,
                    char *errbuf, size_t errlen) {
    sns_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    ctx->host = host;
    ctx->inst = inst;
    inflight_init(&ctx->fl, host, inst);
    int rc = CD_ERR_INVALID;
    if ((ctx->resp = malloc(sizeof(*ctx->resp))) == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        rc = CD_ERR_NOMEM;
        goto fail;
    }

    const char *arn = host->cfg_string(cfg, "topic_arn");
    if (arn == NULL || arn[0] == '\0') {
        snprintf(errbuf, errlen, "topic_arn: required option missing");
        goto fail;
    }
    char arn_region[64];
    const char *topic_name;
    if ((rc = sns_conf_arn(arn, arn_region, sizeof(arn_region), &topic_name, errbuf, errlen)) < 0)
        goto fail;
    size_t tl = strlen(topic_name);
    ctx->fifo = tl > 5 && strcmp(topic_name + tl - 5, ".fifo") == 0;
    if ((rc = aws_conf_endpoint(host, cfg, "sns", arn_region, "the topic ARN", &ctx->region,
                                &ctx->url, errbuf, errlen)) < 0 ||
        (rc = sns_conf_dup(arn, &ctx->topic_arn, "topic_arn", errbuf, errlen)) < 0)
        goto fail;

    /* The message: a JSON string renders as text, any other JSON value as
     * compact JSON (template_render's as_text does both). */
    const char *msg = host->cfg_json(cfg, "message");
    if ((rc = sns_conf_compile(ctx, "message", msg ? msg : "\"${/}\"", &ctx->t_message, errbuf,
                               errlen)) < 0 ||
        (rc = sns_conf_text(ctx, cfg, "subject", &ctx->t_subject, errbuf, errlen)) < 0 ||
        (rc = sns_conf_attrs(ctx, cfg, errbuf, errlen)) < 0)
        goto fail;
    if (ctx->fifo) {
        if ((rc = sns_conf_text(ctx, cfg, "message_group_id", &ctx->t_group, errbuf, errlen)) < 0 ||
            (rc = sns_conf_text(ctx, cfg, "message_deduplication_id", &ctx->t_dedup_id, errbuf,
                                errlen)) < 0)
            goto fail;
        if (ctx->t_group == NULL) {
            snprintf(errbuf, errlen, "message_group_id: required for a FIFO topic");
            rc = CD_ERR_INVALID;
            goto fail;
        }
    }

    char err[200];
    if (sns_parse_duration(host->cfg_json(cfg, "dedupe_window"), &ctx->dedupe_window_ms, err,
                           sizeof(err)) < 0) {
        snprintf(errbuf, errlen, "dedupe_window: %s", err);
        rc = CD_ERR_INVALID;
        goto fail;
    }
    /* A FIFO topic deduplicates by MessageDeduplicationId itself. */
    if (ctx->fifo) ctx->dedupe_window_ms = 0;
    if (ctx->dedupe_window_ms > 0) {
        snprintf(ctx->window_text, sizeof(ctx->window_text), "%lld",
                 (long long)ctx->dedupe_window_ms);
        if ((rc = sns_conf_text(ctx, cfg, "dedupe_key", &ctx->t_dedupe_key, errbuf, errlen)) < 0)
            goto fail;
        if (ctx->t_dedupe_key == NULL) {
            snprintf(errbuf, errlen, "dedupe_key: required while dedupe_window is on");
            rc = CD_ERR_INVALID;
            goto fail;
        }
        const char *prefix = host->cfg_string(cfg, "dedupe_prefix");
        const char *pl = host->pipeline_name(inst), *name = host->instance_name(inst);
        size_t n =
            strlen(prefix ? prefix : "") + strlen(pl ? pl : "") + strlen(name ? name : "") + 3;
        if ((ctx->dedupe_prefix = malloc(n)) == NULL) {
            snprintf(errbuf, errlen, "out of memory");
            rc = CD_ERR_NOMEM;
            goto fail;
        }
        snprintf(ctx->dedupe_prefix, n, "%s%s/%s:", prefix ? prefix : "", pl ? pl : "",
                 name ? name : "");
    }
    const char *ore = host->cfg_string(cfg, "on_redis_error");
    ctx->redis_error_publish = ore != NULL && strcmp(ore, "publish") == 0;

    int64_t mif = host->cfg_int(cfg, "max_in_flight");
    ctx->max_in_flight = mif > 0 ? (size_t)mif : 16;
    int64_t tmo = host->cfg_int(cfg, "timeout_ms");
    ctx->timeout_ms = tmo > 0 ? (uint64_t)tmo : 10000;
    ctx->batched = host->cfg_is_set(cfg, "batch") ? host->cfg_bool(cfg, "batch") : 1;
    *out = ctx;
    return 0;
fail:
    sns_conf_destroy(ctx);
    return rc < 0 ? rc : CD_ERR_INVALID;
}

void sns_conf_destroy(sns_ctx *ctx) {
    if (ctx == NULL) return;
    const cd_host *h = ctx->host;
    cd_template *ts[] = {ctx->t_subject, ctx->t_message, ctx->t_group, ctx->t_dedup_id,
                         ctx->t_dedupe_key};
    for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
        if (ts[i] != NULL) h->template_free(ts[i]);
    for (size_t i = 0; i < ctx->nattrs; i++) {
        free(ctx->attrs[i].name);
        if (ctx->attrs[i].value) h->template_free(ctx->attrs[i].value);
    }
    free(ctx->attrs);
    free(ctx->resp);
    h->buf_free(&ctx->render);
    pbuf_free(&ctx->tmp);
    pbuf_free(&ctx->body);
    free(ctx->topic_arn);
    free(ctx->region);
    free(ctx->url);
    free(ctx->dedupe_prefix);
    free(ctx);
}
