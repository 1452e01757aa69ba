/*
 * source-http — configuration: options in, context out.
 *
 * Runs inside init(), which must not do I/O on the network or the loop.  It
 * does read files: the schema of each allow-listed topic,
 * <schemas_dir>/<topic>.json, once.  They are configuration, like the
 * pipeline file itself, and reading them here means `connectd validate`
 * catches a missing or malformed schema before deployment rather than the
 * first POST after it.
 *
 * The engine has already checked types, bounds and required options
 * against the option table (http.c) and filled defaults; what is checked
 * here is what only this plugin knows: topic names, the key pointer, the
 * hash format of api_keys, the public key's PEM, and the schemas.
 */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Kafka's rule for topic names: 1..249 of [a-zA-Z0-9._-], not "." or "..". */
static int http_conf_topic_name_ok(const char *t) {
    size_t n = strlen(t);
    if (n == 0 || n > 249 || strcmp(t, ".") == 0 || strcmp(t, "..") == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int http_conf_load_schema(http_topic *t, const char *dir, char *errbuf, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s.json", dir, t->name);
    json_error_t jerr;
    t->schema = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (t->schema == NULL) {
        if (json_error_code(&jerr) == json_error_cannot_open_file)
            snprintf(errbuf, errlen,
                     "schemas_dir: no schema for topic %s: %s (a relative schemas_dir resolves "
                     "against connectd's working directory)",
                     t->name, jerr.text);
        else
            snprintf(errbuf, errlen, "schemas_dir: %s: line %d column %d: %s", path, jerr.line,
                     jerr.column, jerr.text);
        return CD_ERR_INVALID;
    }
    char why[512];
    if (http_schema_check(t->schema, why, sizeof(why)) < 0) {
        snprintf(errbuf, errlen, "schemas_dir: %s: %s", path, why);
        return CD_ERR_INVALID;
    }
    /* Compiled once for the fast path of the per-event check. */
    t->fast = http_cschema_compile(t->schema);
    if (t->fast == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    return 0;
}

/* The root of every schema must describe an object: events are objects. */
static int http_conf_root_is_object(const json_t *schema) {
    const json_t *type = json_object_get(schema, "type");
    return json_is_string(type) && strcmp(json_string_value(type), "object") == 0;
}

static int http_conf_topics(http_ctx *ctx, const cd_host *host, const cd_config *cfg, char *errbuf,
                            size_t errlen) {
    size_t n = host->cfg_list_count(cfg, "topics");
    if (n == 0) {
        snprintf(errbuf, errlen, "topics: at least one topic is required");
        return CD_ERR_INVALID;
    }
    const char *dir = host->cfg_string(cfg, "schemas_dir");
    if (dir == NULL || *dir == '\0') dir = "schemas";
    ctx->topics = calloc(n, sizeof(*ctx->topics));
    if (ctx->topics == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = host->cfg_list_item(cfg, "topics", i);
        if (name == NULL || !http_conf_topic_name_ok(name)) {
            snprintf(errbuf, errlen,
                     "topics[%zu]: \"%s\" is not a Kafka topic name (1..249 of a-z A-Z 0-9 . _ -)",
                     i, name ? name : "");
            return CD_ERR_INVALID;
        }
        if (http_conf_topic(ctx, name) != NULL) {
            snprintf(errbuf, errlen, "topics[%zu]: %s is listed twice", i, name);
            return CD_ERR_INVALID;
        }
        http_topic *t = &ctx->topics[ctx->ntopics++];
        t->name = strdup(name);
        if (t->name == NULL) {
            snprintf(errbuf, errlen, "out of memory");
            return CD_ERR_NOMEM;
        }
        /* The start of every 202 answer for this topic, written once. */
        pbuf head = {0};
        if (pbuf_append(&head, "{\"topic\":", 9) < 0 ||
            pbuf_json_string(&head, name, strlen(name)) < 0 ||
            pbuf_append(&head, ",\"partition\":", 13) < 0) {
            pbuf_free(&head);
            snprintf(errbuf, errlen, "out of memory");
            return CD_ERR_NOMEM;
        }
        t->answer_head = head.data;
        t->answer_head_len = head.len;
        int r = http_conf_load_schema(t, dir, errbuf, errlen);
        if (r < 0) return r;
        if (!http_conf_root_is_object(t->schema)) {
            snprintf(errbuf, errlen,
                     "schemas_dir: %s/%s.json: the root must have \"type\": "
                     "\"object\" (an event is a JSON object)",
                     dir, name);
            return CD_ERR_INVALID;
        }
    }
    return 0;
}

static int http_conf_auth(http_ctx *ctx, const cd_host *host, const cd_config *cfg, char *errbuf,
                          size_t errlen) {
    http_auth *a = &ctx->auth;
    size_t n = host->cfg_list_count(cfg, "api_keys");
    if (n) {
        a->key_hashes = calloc(n, sizeof(*a->key_hashes));
        if (a->key_hashes == NULL) {
            snprintf(errbuf, errlen, "out of memory");
            return CD_ERR_NOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            const char *h = host->cfg_list_item(cfg, "api_keys", i);
            if (h == NULL || http_auth_parse_hash(h, a->key_hashes[i]) < 0) {
                /* Never echo the value: it may be a key pasted by mistake. */
                snprintf(errbuf, errlen,
                         "api_keys[%zu]: must be \"sha256:\" and 64 hex digits (the SHA-256 of "
                         "the key, e.g. printf %%s KEY | sha256sum), not the key itself",
                         i);
                return CD_ERR_INVALID;
            }
        }
        a->nkeys = n;
    }
    return jwt_verifier_init(&a->jwt, host->cfg_string(cfg, "jwt_secret"),
                             host->cfg_string(cfg, "jwt_public_key"), JWT_KEYS_ANY, errbuf, errlen);
}

/* An int option; `fallback` when a host applies no defaults (0). */
static int64_t http_conf_int(const cd_host *host, const cd_config *cfg, const char *name,
                             int64_t fallback) {
    if (!host->cfg_is_set(cfg, name) && host->cfg_int(cfg, name) == 0) return fallback;
    return host->cfg_int(cfg, name);
}

int http_conf_create(const cd_host *host, cd_instance *inst, const cd_config *cfg, http_ctx **out,
                     char *errbuf, size_t errlen) {
    if (!CD_HOST_HAS(host, http_listen) || !CD_HOST_HAS(host, http_respond) ||
        host->produce == NULL) {
        snprintf(errbuf, errlen,
                 "this engine has no HTTP server in its host table (ABI 1.1 "
                 "needed)");
        return CD_ERR_UNSUPPORTED;
    }
    http_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    ctx->host = host;
    ctx->inst = inst;
    ctx->random_used = HTTP_RANDOM_POOL;

    const char *listen = host->cfg_string(cfg, "listen");
    ctx->listen = strdup(listen && *listen ? listen : "127.0.0.1:8080");
    const char *key = host->cfg_string(cfg, "key");
    int r = ctx->listen ? 0 : CD_ERR_NOMEM;
    if (r < 0) snprintf(errbuf, errlen, "out of memory");
    if (r == 0) {
        char why[256];
        r = http_pointer_parse(key ? key : "/customerId", &ctx->key, why, sizeof(why));
        if (r < 0) snprintf(errbuf, errlen, "key: %s", why);
        if (r == 0 && ctx->key.ntokens == 0) {
            snprintf(errbuf, errlen,
                     "key: \"\" points at the whole event; name a member, "
                     "e.g. /customerId");
            r = CD_ERR_INVALID;
        }
    }
    if (r == 0) r = http_conf_topics(ctx, host, cfg, errbuf, errlen);
    if (r == 0) r = http_conf_auth(ctx, host, cfg, errbuf, errlen);
    if (r < 0) {
        http_conf_destroy(ctx);
        return r;
    }

    int64_t max_body = http_conf_int(host, cfg, "max_body", 1048576);
    if (max_body < 1 || max_body > ((int64_t)1 << 30)) {
        snprintf(errbuf, errlen, "max_body: %lld is out of range 1..1073741824",
                 (long long)max_body);
        http_conf_destroy(ctx);
        return CD_ERR_INVALID;
    }
    ctx->max_body = (size_t)max_body;
    ctx->max_batch = (size_t)http_conf_int(host, cfg, "max_batch", 1000);
    ctx->max_connections = (size_t)http_conf_int(host, cfg, "max_connections", 10000);
    ctx->header_timeout_ms = (uint64_t)http_conf_int(host, cfg, "header_timeout_ms", 10000);
    ctx->body_timeout_ms = (uint64_t)http_conf_int(host, cfg, "body_timeout_ms", 30000);
    ctx->idle_timeout_ms = (uint64_t)http_conf_int(host, cfg, "idle_timeout_ms", 60000);
    ctx->ack_timeout_ms = (uint64_t)http_conf_int(host, cfg, "ack_timeout_ms", 10000);
    ctx->ws_routes = host->cfg_bool(cfg, "ws_routes");
    const char *prefix = host->cfg_string(cfg, "ws_key_prefix");
    ctx->ws_prefix = strdup(prefix ? prefix : "ws:");
    if (ctx->ws_prefix == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        http_conf_destroy(ctx);
        return CD_ERR_NOMEM;
    }
    if (ctx->ws_routes && !CD_HOST_HAS(host, redis_command)) {
        snprintf(errbuf, errlen,
                 "ws_routes: this engine has no Redis client in its host table (ABI 1.4 needed)");
        http_conf_destroy(ctx);
        return CD_ERR_UNSUPPORTED;
    }
    snprintf(ctx->retry_after, sizeof(ctx->retry_after), "Retry-After: %lld",
             (long long)http_conf_int(host, cfg, "retry_after_s", 1));
    *out = ctx;
    return 0;
}

const http_topic *http_conf_topic(const http_ctx *ctx, const char *name) {
    for (size_t i = 0; i < ctx->ntopics; i++)
        if (ctx->topics[i].name && strcmp(ctx->topics[i].name, name) == 0) return &ctx->topics[i];
    return NULL;
}

void http_conf_destroy(http_ctx *ctx) {
    if (ctx == NULL) return;
    for (size_t i = 0; i < ctx->ntopics; i++) {
        free(ctx->topics[i].name);
        json_decref(ctx->topics[i].schema);
        http_cschema_free(ctx->topics[i].fast);
        free(ctx->topics[i].answer_head);
    }
    free(ctx->topics);
    http_pointer_free(&ctx->key);
    http_auth_free(&ctx->auth);
    free(ctx->listen);
    free(ctx->ws_prefix);
    free(ctx->scratch);
    while (ctx->spare) {
        http_pending *p = ctx->spare;
        ctx->spare = p->next;
        free(p);
    }
    pbuf_free(&ctx->answer);
    free(ctx);
}
