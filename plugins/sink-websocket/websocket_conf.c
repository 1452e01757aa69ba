/*
 * sink-websocket — configuration: options in, context out.
 *
 * Runs inside init(): no I/O.  The engine has checked types, bounds and
 * required options against the table in websocket.c; what is checked here
 * is what only this plugin knows: the mode's own required options, the JWT
 * keys, the customer pointer, and that both templates compile.
 */
#include "websocket.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ws_server_opts_free(ws_server_opts *o) {
    free(o->listen);
    free(o->prefix);
    jwt_verifier_free(&o->auth);
    *o = (ws_server_opts){0};
}

static char *ws_conf_dup(const char *s, char *errbuf, size_t errlen) {
    char *d = strdup(s ? s : "");
    if (d == NULL) snprintf(errbuf, errlen, "out of memory");
    return d;
}

/* The customer template: the pointer as one reference, so it renders as the
 * JSON value it names. */
static int ws_conf_customer(ws_ctx *ctx, const char *ptr, char *errbuf, size_t errlen) {
    if (!ws_json_pointer_ok(ptr) || *ptr == '\0') {
        snprintf(errbuf, errlen,
                 "customer: must be a JSON pointer such as /customerId (starting with '/', "
                 "without '}' or ':-')");
        return CD_ERR_INVALID;
    }
    ctx->customer_ptr = ws_conf_dup(ptr, errbuf, errlen);
    if (ctx->customer_ptr == NULL) return CD_ERR_NOMEM;
    size_t n = strlen(ptr) + 4;
    char *ref = malloc(n);
    if (ref == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    snprintf(ref, n, "${%s}", ptr);
    json_t *s = json_string(ref);
    free(ref);
    char *spec = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
    json_decref(s);
    if (spec == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    char err[256] = "";
    int r = ctx->host->template_compile(spec, &ctx->customer, err, sizeof(err));
    free(spec);
    if (r < 0) {
        snprintf(errbuf, errlen, "customer: %s", err);
        return CD_ERR_INVALID;
    }
    return 0;
}

static int ws_conf_message(ws_ctx *ctx, const cd_config *cfg, char *errbuf, size_t errlen) {
    const char *spec = ctx->host->cfg_json(cfg, "message");
    if (spec == NULL) spec = "\"${/}\"";
    json_t *j = json_loads(spec, JSON_DECODE_ANY, NULL);
    /* A message is pushed as a JSON object (the seq goes in it): a literal
     * that is not an object, or a string mixing text and references (which
     * renders as a string), can never be one. */
    int ok =
        j &&
        (json_is_object(j) ||
         (json_is_string(j) && strncmp(json_string_value(j), "${", 2) == 0 &&
          strchr(json_string_value(j), '}') == json_string_value(j) + json_string_length(j) - 1));
    json_decref(j);
    if (!ok) {
        snprintf(errbuf, errlen,
                 "message: must be a JSON object template (e.g. {\"type\": \"KYC_VERIFIED\", "
                 "\"data\": \"${/data}\"}) or one reference to an object (\"${/}\")");
        return CD_ERR_INVALID;
    }
    char err[256] = "";
    if (ctx->host->template_compile(spec, &ctx->message, err, sizeof(err)) < 0) {
        snprintf(errbuf, errlen, "message: %s", err);
        return CD_ERR_INVALID;
    }
    return 0;
}

static int ws_conf_server(ws_ctx *ctx, const cd_config *cfg, char *errbuf, size_t errlen) {
    const cd_host *h = ctx->host;
    ws_server_opts *o = &ctx->opts;
    const char *listen = h->cfg_string(cfg, "listen");
    if (listen == NULL || strchr(listen, ':') == NULL) {
        snprintf(errbuf, errlen, "listen: must be HOST:PORT (e.g. 127.0.0.1:8081)");
        return CD_ERR_INVALID;
    }
    o->listen = ws_conf_dup(listen, errbuf, errlen);
    if (o->listen == NULL) return CD_ERR_NOMEM;
    int r = jwt_verifier_init(&o->auth, h->cfg_string(cfg, "jwt_secret"),
                              h->cfg_string(cfg, "jwt_public_key"), JWT_KEYS_EXACTLY_ONE, errbuf,
                              errlen);
    if (r < 0) return r;
    o->ping_interval_ms = (uint64_t)h->cfg_int(cfg, "ping_interval_ms");
    o->idle_timeout_ms = (uint64_t)h->cfg_int(cfg, "idle_timeout_ms");
    if (o->idle_timeout_ms <= o->ping_interval_ms) {
        snprintf(errbuf, errlen,
                 "idle_timeout_ms: must be longer than ping_interval_ms (%llu), or every "
                 "connection times out before its pong can come",
                 (unsigned long long)o->ping_interval_ms);
        return CD_ERR_INVALID;
    }
    o->max_send_queue = (size_t)h->cfg_int(cfg, "max_send_queue_bytes");
    o->max_connections = (size_t)h->cfg_int(cfg, "max_connections");
    return 0;
}

int ws_conf_create(const cd_host *host, cd_instance *inst, const cd_config *cfg, ws_ctx **out,
                   char *errbuf, size_t errlen) {
    ws_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    ctx->host = host;
    ctx->inst = inst;
    const char *mode = host->cfg_string(cfg, "mode");
    ctx->mode = mode && strcmp(mode, "apigateway") == 0 ? WS_MODE_APIGATEWAY : WS_MODE_SERVER;
    int r = ws_conf_customer(ctx, host->cfg_string(cfg, "customer"), errbuf, errlen);
    if (r == 0) r = ws_conf_message(ctx, cfg, errbuf, errlen);
    if (r == 0) {
        ctx->opts.replay_size = (size_t)host->cfg_int(cfg, "replay_size");
        ctx->opts.prefix = ws_conf_dup(host->cfg_string(cfg, "key_prefix"), errbuf, errlen);
        if (ctx->opts.prefix == NULL) r = CD_ERR_NOMEM;
    }
    if (r == 0 && ctx->mode == WS_MODE_SERVER) r = ws_conf_server(ctx, cfg, errbuf, errlen);
    if (r == 0 && ctx->mode == WS_MODE_APIGATEWAY) {
        const char *ep = host->cfg_string(cfg, "endpoint");
        if (ep == NULL || (strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0)) {
            snprintf(errbuf, errlen,
                     "endpoint: mode apigateway needs the API's https:// (or http://) base URL, "
                     "e.g. https://abc123.execute-api.eu-west-1.amazonaws.com");
            r = CD_ERR_INVALID;
        } else {
            ctx->endpoint = ws_conf_dup(ep, errbuf, errlen);
            ctx->stage = ws_conf_dup(host->cfg_string(cfg, "stage"), errbuf, errlen);
            ctx->region = ws_conf_dup(host->cfg_string(cfg, "region"), errbuf, errlen);
            ctx->max_in_flight = (size_t)host->cfg_int(cfg, "max_in_flight");
            if (!ctx->endpoint || !ctx->stage || !ctx->region) r = CD_ERR_NOMEM;
            if (r == 0) {
                size_t n = strlen(ctx->endpoint);
                while (n && ctx->endpoint[n - 1] == '/')
                    ctx->endpoint[--n] = '\0';
                char *st = ctx->stage;
                while (*st == '/')
                    st++;
                memmove(ctx->stage, st, strlen(st) + 1);
                n = strlen(ctx->stage);
                while (n && ctx->stage[n - 1] == '/')
                    ctx->stage[--n] = '\0';
            }
        }
    }
    if (r < 0) {
        ws_conf_destroy(ctx);
        return r;
    }
    *out = ctx;
    return 0;
}

void ws_conf_destroy(ws_ctx *ctx) {
    if (ctx == NULL) return;
    if (ctx->message) ctx->host->template_free(ctx->message);
    if (ctx->customer) ctx->host->template_free(ctx->customer);
    if (ctx->render.data) ctx->host->buf_free(&ctx->render);
    free(ctx->customer_ptr);
    free(ctx->endpoint);
    free(ctx->stage);
    free(ctx->region);
    ws_server_opts_free(&ctx->opts);
    pbuf_free(&ctx->cust);
    pbuf_free(&ctx->msg);
    pbuf_free(&ctx->key1);
    pbuf_free(&ctx->key2);
    pbuf_free(&ctx->key3);
    pbuf_free(&ctx->url);
    free(ctx);
}
