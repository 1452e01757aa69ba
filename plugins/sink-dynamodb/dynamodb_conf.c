/*
 * sink-dynamodb — configuration: options in, context out.  Runs in init: it
 * reads and checks options and compiles the record templates; no I/O.
 */
#include "dynamodb.h"

#include "aws_conf.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ddb_conf_dup(const char *s, char **out, const char *opt, char *errbuf, size_t errlen) {
    *out = NULL;
    if (s == NULL) return 0;
    *out = strdup(s);
    if (*out == NULL) {
        snprintf(errbuf, errlen, "%s: out of memory", opt);
        return CD_ERR_NOMEM;
    }
    return 0;
}

/* Compiles option `name` when set; `object`: it must be a JSON object. */
static int ddb_conf_template(ddb_ctx *ctx, const cd_config *cfg, const char *name, int object,
                             cd_template **out, char *errbuf, size_t errlen) {
    const char *json = ctx->host->cfg_json(cfg, name);
    *out = NULL;
    if (json == NULL) return 0;
    if (object) {
        json_t *j = json_loads(json, JSON_DECODE_ANY, NULL);
        int ok = json_is_object(j) && json_object_size(j) > 0;
        json_decref(j);
        if (!ok) {
            snprintf(errbuf, errlen, "%s: must be a non-empty JSON object", name);
            return CD_ERR_INVALID;
        }
    }
    char err[256];
    if (ctx->host->template_compile(json, out, err, sizeof(err)) < 0) {
        snprintf(errbuf, errlen, "%s: %s", name, err);
        return CD_ERR_INVALID;
    }
    return 0;
}

static int ddb_conf_cond_names(ddb_ctx *ctx, const cd_config *cfg, char *errbuf, size_t errlen) {
    const char *json = ctx->host->cfg_json(cfg, "condition_names");
    if (json == NULL) return 0;
    json_t *j = json_loads(json, JSON_DECODE_ANY, NULL);
    int ok = json_is_object(j) && json_object_size(j) > 0;
    const char *k;
    json_t *v;
    if (ok) {
        json_object_foreach(j, k, v) {
            if (k[0] != '#' || !json_is_string(v)) ok = 0;
        }
    }
    if (ok) ctx->cond_names = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!ok) {
        snprintf(errbuf, errlen,
                 "condition_names: must be an object of \"#name\": \"attribute\" strings");
        return CD_ERR_INVALID;
    }
    return ctx->cond_names ? 0 : CD_ERR_NOMEM;
}

static int ddb_conf_check(ddb_ctx *ctx, const cd_config *cfg, char *errbuf, size_t errlen) {
    const cd_host *h = ctx->host;
    const char *op = h->cfg_string(cfg, "operation");
    if (op == NULL || strcmp(op, "put") == 0) {
        ctx->op = DDB_OP_PUT;
    } else if (strcmp(op, "update") == 0) {
        ctx->op = DDB_OP_UPDATE;
    } else if (strcmp(op, "delete") == 0) {
        ctx->op = DDB_OP_DELETE;
    } else {
        snprintf(errbuf, errlen, "operation: must be one of put|update|delete, got \"%s\"", op);
        return CD_ERR_INVALID;
    }
    int has_item = h->cfg_is_set(cfg, "item"), has_key = h->cfg_is_set(cfg, "key");
    int has_update = h->cfg_is_set(cfg, "update");
    if (ctx->op == DDB_OP_PUT && (!has_item || has_key || has_update)) {
        snprintf(errbuf, errlen, "%s",
                 !has_item ? "item: required with operation put"
                           : "key/update: not used with operation put (the item holds the key)");
        return CD_ERR_INVALID;
    }
    if (ctx->op != DDB_OP_PUT && (!has_key || has_item)) {
        snprintf(errbuf, errlen, "%s",
                 !has_key ? "key: required with operation update and delete"
                          : "item: only used with operation put");
        return CD_ERR_INVALID;
    }
    if ((ctx->op == DDB_OP_UPDATE) != has_update) {
        snprintf(errbuf, errlen, "update: %s",
                 has_update ? "only used with operation update" : "required with operation update");
        return CD_ERR_INVALID;
    }
    const char *table = h->cfg_string(cfg, "table");
    if (table == NULL || table[0] == '\0') {
        snprintf(errbuf, errlen, "table: required option missing");
        return CD_ERR_INVALID;
    }
    const char *cond = h->cfg_string(cfg, "condition");
    if ((h->cfg_is_set(cfg, "condition_names") || h->cfg_is_set(cfg, "condition_values")) &&
        (cond == NULL || cond[0] == '\0')) {
        snprintf(errbuf, errlen, "condition_names/condition_values: need a condition");
        return CD_ERR_INVALID;
    }
    int64_t ttl_s = h->cfg_int(cfg, "ttl_seconds");
    if (ttl_s < 0 || ttl_s > 315360000) {
        snprintf(errbuf, errlen, "ttl_seconds: %lld is out of range 0..315360000",
                 (long long)ttl_s);
        return CD_ERR_INVALID;
    }
    const char *ttl = h->cfg_string(cfg, "ttl_attribute");
    if ((ttl != NULL && ttl[0] != '\0') != (h->cfg_int(cfg, "ttl_seconds") > 0)) {
        snprintf(errbuf, errlen, "ttl_attribute and ttl_seconds: set both or neither");
        return CD_ERR_INVALID;
    }
    if (ttl != NULL && ctx->op == DDB_OP_DELETE) {
        snprintf(errbuf, errlen, "ttl_attribute: not used with operation delete");
        return CD_ERR_INVALID;
    }
    return 0;
}

int ddb_conf_create(const cd_host *host, cd_instance *inst, const cd_config *cfg, ddb_ctx **out,
                    char *errbuf, size_t errlen) {
    ddb_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    ctx->host = host;
    ctx->inst = inst;
    inflight_init(&ctx->fl, host, inst);
    int rc = ddb_conf_check(ctx, cfg, errbuf, errlen);
    if (rc < 0) goto fail;

    if ((rc = aws_conf_endpoint(host, cfg, "dynamodb", "eu-west-1", "the default", &ctx->region,
                                &ctx->url, errbuf, errlen)) < 0)
        goto fail;
    const char *cond = host->cfg_string(cfg, "condition");
    const char *ttl = host->cfg_string(cfg, "ttl_attribute");
    if ((rc = ddb_conf_dup(host->cfg_string(cfg, "table"), &ctx->table, "table", errbuf, errlen)) <
            0 ||
        (rc = ddb_conf_dup(cond && cond[0] ? cond : NULL, &ctx->condition, "condition", errbuf,
                           errlen)) < 0 ||
        (rc = ddb_conf_dup(ttl && ttl[0] ? ttl : NULL, &ctx->ttl_attr, "ttl_attribute", errbuf,
                           errlen)) < 0)
        goto fail;
    ctx->ttl_seconds = host->cfg_int(cfg, "ttl_seconds");
    if (ctx->ttl_attr != NULL) {
        /* Escaped once here, not for every record. */
        pbuf j = {0};
        if (pbuf_json_string(&j, ctx->ttl_attr, strlen(ctx->ttl_attr)) < 0) {
            rc = CD_ERR_NOMEM;
            snprintf(errbuf, errlen, "out of memory");
            goto fail;
        }
        ctx->ttl_json = j.data;
    }

    const char *cf = host->cfg_string(cfg, "conditional_failed");
    ctx->cond_failed_ok = cf == NULL || strcmp(cf, "fatal") != 0;
    int64_t mif = host->cfg_int(cfg, "max_in_flight");
    ctx->max_in_flight = mif > 0 ? (size_t)mif : 16;
    int64_t tmo = host->cfg_int(cfg, "timeout_ms");
    ctx->timeout_ms = tmo > 0 ? (uint64_t)tmo : 10000;

    if (ddb_types_parse(host->cfg_json(cfg, "types"), &ctx->types, errbuf, errlen) < 0) {
        rc = CD_ERR_INVALID;
        goto fail;
    }
    size_t nk = host->cfg_list_count(cfg, "key_attributes");
    if (nk > 0) {
        ctx->key_attrs = calloc(nk, sizeof(char *));
        ctx->key_attr_len = calloc(nk, sizeof(size_t));
        if (ctx->key_attrs == NULL || ctx->key_attr_len == NULL) {
            rc = CD_ERR_NOMEM;
            snprintf(errbuf, errlen, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < nk; i++) {
            rc = ddb_conf_dup(host->cfg_list_item(cfg, "key_attributes", i), &ctx->key_attrs[i],
                              "key_attributes", errbuf, errlen);
            if (rc < 0) goto fail;
            ctx->key_attr_len[i] = strlen(ctx->key_attrs[i]);
            ctx->nkey_attrs++;
        }
    }

    if ((rc = ddb_conf_template(ctx, cfg, "item", 1, &ctx->t_item, errbuf, errlen)) < 0 ||
        (rc = ddb_conf_template(ctx, cfg, "key", 1, &ctx->t_key, errbuf, errlen)) < 0 ||
        (rc = ddb_conf_template(ctx, cfg, "update", 1, &ctx->t_update, errbuf, errlen)) < 0 ||
        (rc = ddb_conf_template(ctx, cfg, "condition_values", 1, &ctx->t_cond_values, errbuf,
                                errlen)) < 0 ||
        (rc = ddb_conf_cond_names(ctx, cfg, errbuf, errlen)) < 0)
        goto fail;

    ctx->batched = ctx->op == DDB_OP_PUT && ctx->condition == NULL;
    *out = ctx;
    return 0;
fail:
    ddb_conf_destroy(ctx);
    return rc < 0 ? rc : CD_ERR_INVALID;
}

void ddb_conf_destroy(ddb_ctx *ctx) {
    if (ctx == NULL) return;
    const cd_host *h = ctx->host;
    cd_template *ts[] = {ctx->t_item, ctx->t_key, ctx->t_update, ctx->t_cond_values};
    for (size_t i = 0; i < 4; i++)
        if (ts[i] != NULL) h->template_free(ts[i]);
    h->buf_free(&ctx->render);
    pbuf_free(&ctx->tmp);
    pbuf_free(&ctx->names);
    pbuf_free(&ctx->values);
    pbuf_free(&ctx->set);
    pbuf_free(&ctx->dkey);
    pbuf_free(&ctx->ttl_member);
    ddb_types_free(&ctx->types);
    for (size_t i = 0; i < ctx->nkey_attrs; i++)
        free(ctx->key_attrs[i]);
    free(ctx->key_attrs);
    free(ctx->key_attr_len);
    free(ctx->table);
    free(ctx->region);
    free(ctx->url);
    free(ctx->condition);
    free(ctx->cond_names);
    free(ctx->ttl_attr);
    free(ctx->ttl_json);
    free(ctx);
}
