/*
 * The host table: the engine's side of the plugin ABI.  Every function a
 * plugin may call is reached through engine_host; instances carry the
 * pipeline and sink names used for log prefixes and metric labels.
 */
#include "engine.h"
#include "awscreds.h"
#include "httpc.h"
#include "httpd.h"
#include "redis.h"
#include "template.h"
#include "log.h"
#include "pipeline.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void instance_init(cd_instance *inst, engine *e, pipeline *pl, const char *pipeline_name,
                   const char *name) {
    memset(inst, 0, sizeof(*inst));
    inst->eng = e;
    inst->pl = pl;
    inst->pipeline_name = strdup(pipeline_name);
    inst->name = strdup(name);
    if (*name) {
        if (asprintf(&inst->prefix, "%s/%s", pipeline_name, name) < 0) inst->prefix = NULL;
    } else {
        inst->prefix = strdup(pipeline_name);
    }
}

void instance_release(cd_instance *inst) {
    for (size_t i = 0; i < inst->metric_count; i++)
        metrics_unregister(&inst->eng->metrics, inst->metrics[i]);
    free(inst->metrics);
    free(inst->pipeline_name);
    free(inst->name);
    free(inst->prefix);
    memset(inst, 0, sizeof(*inst));
}

static uv_loop_t *host_loop(const cd_instance *inst) {
    return inst->eng->loop;
}

static void host_log(const cd_instance *inst, cd_log_level level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, inst ? inst->prefix : NULL, fmt, ap);
    va_end(ap);
}

static int host_log_enabled(const cd_instance *inst, cd_log_level level) {
    return level <= log_get_level();
}

static const char *host_pipeline_name(const cd_instance *inst) {
    return inst->pipeline_name;
}
static const char *host_instance_name(const cd_instance *inst) {
    return inst->name;
}

static cd_metric *host_metric_register(cd_instance *inst, cd_metric_type type, const char *name,
                                       const char *help) {
    char labels[512], l1[240], l2[240];
    metrics_label(l1, sizeof(l1), "pipeline", inst->pipeline_name);
    if (*inst->name) {
        metrics_label(l2, sizeof(l2), inst->pl && pipeline_is_source(inst->pl) ? "source" : "sink",
                      inst->name);
        snprintf(labels, sizeof(labels), "%s,%s", l1, l2);
    } else {
        snprintf(labels, sizeof(labels), "%s", l1);
    }
    cd_metric *m = metrics_register(&inst->eng->metrics, type, name, help, labels);
    if (!m) return NULL;
    cd_metric **arr = realloc(inst->metrics, (inst->metric_count + 1) * sizeof(*arr));
    if (!arr) {
        metrics_unregister(&inst->eng->metrics, m);
        return NULL;
    }
    inst->metrics = arr;
    inst->metrics[inst->metric_count++] = m;
    return m;
}

static int host_produce(cd_instance *inst, const char *topic, const void *key, size_t key_len,
                        const void *value, size_t value_len, const cd_header *headers,
                        size_t header_count, cd_produce_cb cb, void *opaque, char *errbuf,
                        size_t errlen) {
    kafka_producer *p = engine_producer(inst->eng, errbuf, errlen);
    if (!p) return CD_ERR_IO;
    rd_kafka_headers_t *h = NULL;
    if (header_count) {
        h = rd_kafka_headers_new(header_count);
        for (size_t i = 0; i < header_count; i++)
            rd_kafka_header_add(h, headers[i].name, -1, headers[i].value,
                                headers[i].value ? (ssize_t)headers[i].value_len : 0);
    }
    int rc = kafka_producer_send(p, topic, RD_KAFKA_PARTITION_UA, key, key_len, value, value_len, h,
                                 cb, opaque, errbuf, errlen);
    if (rc == 0 && inst->pl) pipeline_count_produced(inst->pl);
    return rc;
}

/* The plugin-facing HTTP types are the server's own under opaque names. */
static httpd_req *host_req(const cd_http_request *r) {
    return (httpd_req *)(uintptr_t)r;
}

typedef struct host_http_server {
    httpd *srv;
    cd_http_handler handler;
    void *opaque;
    cd_done_cb closed_cb;
    void *closed_opaque;
} host_http_server;

static void host_http_dispatch(httpd_req *req, void *opaque) {
    host_http_server *s = opaque;
    s->handler((cd_http_request *)(void *)req, s->opaque);
}

static int host_http_listen(cd_instance *inst, const char *addr, const cd_http_limits *limits,
                            cd_http_handler handler, void *opaque, cd_http_server **out,
                            char *errbuf, size_t errlen) {
    httpd_limits l;
    httpd_limits_default(&l);
    if (limits) {
        l.max_body = limits->max_body;
        l.max_header_bytes = limits->max_header_bytes;
        l.max_headers = limits->max_headers;
        l.max_connections = limits->max_connections;
        l.header_timeout_ms = limits->header_timeout_ms;
        l.body_timeout_ms = limits->body_timeout_ms;
        l.idle_timeout_ms = limits->idle_timeout_ms;
    }
    host_http_server *s = calloc(1, sizeof(*s));
    if (!s) return CD_ERR_NOMEM;
    s->handler = handler;
    s->opaque = opaque;
    int r = httpd_start(&s->srv, inst->eng->loop, addr, &l, host_http_dispatch, s, errbuf, errlen);
    if (r < 0) {
        free(s);
        return r;
    }
    *out = (cd_http_server *)(void *)s;
    return 0;
}

static int host_http_port(const cd_http_server *srv) {
    return httpd_port(((const host_http_server *)(const void *)srv)->srv);
}

static void host_http_closed(void *opaque) {
    host_http_server *s = opaque;
    if (s->closed_cb) s->closed_cb(s->closed_opaque, 0);
    free(s);
}

static void host_http_close(cd_http_server *srv, cd_done_cb cb, void *opaque) {
    host_http_server *s = (host_http_server *)(void *)srv;
    s->closed_cb = cb;
    s->closed_opaque = opaque;
    httpd_close(s->srv, host_http_closed, s);
}

static const char *host_http_method(const cd_http_request *r) {
    return httpd_req_method(host_req(r));
}
static const char *host_http_path(const cd_http_request *r) {
    return httpd_req_path(host_req(r));
}
static const char *host_http_query_param(cd_http_request *r, const char *name) {
    return httpd_req_query_param(host_req(r), name);
}
static const char *host_http_header(const cd_http_request *r, const char *name) {
    return httpd_req_header(host_req(r), name);
}
static const char *host_http_body(const cd_http_request *r, size_t *len) {
    return httpd_req_body(host_req(r), len);
}
static const char *host_http_peer(const cd_http_request *r) {
    return httpd_req_peer(host_req(r));
}
static int host_http_respond(cd_http_request *r, int status, const char *content_type,
                             const void *body, size_t len, const char *const *extra_headers) {
    return httpd_respond(host_req(r), status, content_type, body, len, extra_headers);
}

/* ------------------------------------------------------------ streams (1.5) */
typedef struct host_stream {
    cd_http_stream_cbs cbs;
    void *opaque;
} host_stream;

static cd_http_stream *host_stream_of(httpd_stream *s) {
    return (cd_http_stream *)(void *)s;
}
static httpd_stream *host_httpd_stream(const cd_http_stream *s) {
    return (httpd_stream *)(uintptr_t)s;
}

static void host_stream_data(httpd_stream *s, const char *data, size_t len, void *opaque) {
    host_stream *hs = opaque;
    hs->cbs.on_data(host_stream_of(s), data, len, hs->opaque);
}

static void host_stream_closed(httpd_stream *s, void *opaque) {
    host_stream *hs = opaque;
    if (hs->cbs.on_closed) hs->cbs.on_closed(host_stream_of(s), hs->opaque);
    free(hs);
}

static int host_http_is_upgrade(const cd_http_request *r) {
    return httpd_req_is_upgrade(host_req(r));
}

static int host_http_upgrade(cd_http_request *r, const char *const *extra_headers,
                             const cd_http_stream_cbs *cbs, void *opaque, cd_http_stream **out) {
    if (!cbs || !cbs->on_data || !out) return CD_ERR_INVALID;
    host_stream *hs = malloc(sizeof(*hs));
    if (!hs) return CD_ERR_NOMEM;
    hs->cbs = *cbs;
    hs->opaque = opaque;
    static const httpd_stream_cbs wrap = {host_stream_data, host_stream_closed};
    httpd_stream *s = NULL;
    int rc = httpd_upgrade(host_req(r), extra_headers, &wrap, hs, &s);
    if (rc < 0) {
        free(hs);
        return rc;
    }
    *out = host_stream_of(s);
    return 0;
}

static int host_stream_write(cd_http_stream *s, const void *data, size_t len) {
    return httpd_stream_write(host_httpd_stream(s), data, len);
}
static size_t host_stream_pending(const cd_http_stream *s) {
    return httpd_stream_pending(host_httpd_stream(s));
}
static void host_stream_close(cd_http_stream *s) {
    httpd_stream_close(host_httpd_stream(s));
}
static const char *host_stream_peer(const cd_http_stream *s) {
    return httpd_stream_peer(host_httpd_stream(s));
}

/* cd_buf and tbuf share their layout: one struct under two names. */
_Static_assert(sizeof(cd_buf) == sizeof(tbuf) && offsetof(cd_buf, len) == offsetof(tbuf, len) &&
                   offsetof(cd_buf, cap) == offsetof(tbuf, cap),
               "cd_buf and tbuf must match");

static int host_template_compile(const char *json_spec, cd_template **out, char *errbuf,
                                 size_t errlen) {
    json_error_t jerr;
    json_t *spec = json_loads(json_spec, JSON_DECODE_ANY, &jerr);
    if (!spec) {
        snprintf(errbuf, errlen, "template is not JSON: %s", jerr.text);
        return CD_ERR_INVALID;
    }
    template *t = NULL;
    int r = template_compile(spec, &t, errbuf, errlen);
    json_decref(spec);
    if (r < 0) return CD_ERR_INVALID;
    *out = (cd_template *)(void *)t;
    return 0;
}

static int host_template_render(const cd_template *ct, const cd_record *rec, int as_text,
                                cd_buf *out, char *errbuf, size_t errlen) {
    const template *t = (const template *)(const void *)ct;
    template_index ix; /* shared by this render's references */
    ix.state = 0;
    ix.value = NULL;
    template_record r = {
        .topic = rec->topic,
        .partition = rec->partition,
        .offset = rec->offset,
        .timestamp_ms = rec->timestamp_ms,
        .key = rec->key,
        .key_len = rec->key_len,
        .headers = rec->headers,
        .header_count = rec->header_count,
        .value = rec->value,
        .value_len = rec->value_len,
        .doc = NULL,
        .value_valid = rec->value_format == CD_VALUE_JSON && rec->value != NULL,
        .index = &ix,
    };
    tbuf *b = (tbuf *)(void *)out;
    int rc = as_text ? template_render_text(t, &r, b, errbuf, errlen)
                     : template_render_json(t, &r, b, errbuf, errlen);
    return rc < 0 ? CD_ERR_INVALID : 0;
}

static int host_template_uses_value(const cd_template *t) {
    return template_references_value((const template *)(const void *)t);
}

static void host_template_free(cd_template *t) {
    template_free((template *)(void *)t);
}

static void host_buf_free(cd_buf *b) {
    tbuf_free((tbuf *)(void *)b);
}

/* ------------------------------------------------------- HTTP client (1.3) */
typedef struct host_pool {
    engine *eng;
    httpc_pool *pool; /* NULL once the engine closed its client */
    struct host_pool *next;
} host_pool;

typedef struct host_call {
    cd_http_result_cb cb;
    void *opaque;
} host_call;

static int host_http_client(engine *e, char *errbuf, size_t errlen) {
    if (e->http) return 0;
    return httpc_new(&e->http, e->loop, errbuf, errlen);
}

static cd_http_pool *host_http_pool_new(cd_instance *inst, size_t max_in_flight, char *errbuf,
                                        size_t errlen) {
    engine *e = inst->eng;
    if (host_http_client(e, errbuf, errlen) < 0) return NULL;
    host_pool *hp = calloc(1, sizeof(*hp));
    if (!hp || !(hp->pool = httpc_pool_new(e->http, max_in_flight ? max_in_flight : 1))) {
        free(hp);
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    hp->eng = e;
    hp->next = e->pools;
    e->pools = hp;
    return (cd_http_pool *)(void *)hp;
}

static void host_http_pool_free(cd_http_pool *cp) {
    host_pool *hp = (host_pool *)(void *)cp;
    if (!hp) return;
    for (host_pool **pp = &hp->eng->pools; *pp; pp = &(*pp)->next) {
        if (*pp == hp) {
            *pp = hp->next;
            break;
        }
    }
    httpc_pool_free(hp->pool); /* NULL (client closed) is ignored */
    free(hp);
}

static void host_http_done(void *opaque, const httpc_response *r) {
    host_call *c = opaque;
    cd_http_result res = {
        .status = r->status,
        .error = r->error,
        .error_message = r->error_message,
        .body = r->body,
        .body_len = r->body_len,
        .content_type = r->content_type,
        .retry_after = r->retry_after,
        .retriable = httpc_retriable(r),
    };
    c->cb(c->opaque, &res);
    free(c);
}

static void host_creds_ready(void *opaque, int status, const char *errmsg) {
    engine *e = opaque;
    if (status == 0) {
        e->creds_state = 2;
        LOG_INFO("AWS credentials from %s", aws_creds_source_name(e->creds));
    } else {
        e->creds_state = -1;
        snprintf(e->creds_error, sizeof(e->creds_error), "%s", errmsg ? errmsg : "failed");
        LOG_ERROR("AWS credentials: %s", e->creds_error);
    }
}

static int host_aws_start(engine *e, char *errbuf, size_t errlen) {
    if (!e->creds && e->creds_state != -1) {
        if (host_http_client(e, errbuf, errlen) < 0) return CD_ERR_IO;
        if (aws_creds_new(&e->creds, e->loop, e->http, e->creds_error, sizeof(e->creds_error)) <
            0) {
            e->creds_state = -1;
            e->creds = NULL;
        } else {
            e->creds_state = 1;
            if (aws_creds_start(e->creds, host_creds_ready, e) < 0 && e->creds_state == 1)
                e->creds_state = -1;
        }
    }
    if (e->creds_state == -1) {
        /* The first fetch failed, but the chain goes on fetching: keys that
         * arrived since make it ready after all. */
        if (e->creds && aws_creds_get(e->creds, NULL, NULL, NULL) == 0) {
            e->creds_state = 2;
            LOG_INFO("AWS credentials from %s, after all (%s)", aws_creds_source_name(e->creds),
                     e->creds_error);
            return 0;
        }
        snprintf(errbuf, errlen, "%s", e->creds_error);
        return CD_ERR_INVALID;
    }
    return 0;
}

static int host_aws_credentials_check(cd_instance *inst, char *errbuf, size_t errlen) {
    return host_aws_start(inst->eng, errbuf, errlen);
}

static int host_http_call(cd_http_pool *cp, const cd_http_call *call, cd_http_result_cb cb,
                          void *opaque, char *errbuf, size_t errlen) {
    host_pool *hp = (host_pool *)(void *)cp;
    engine *e = hp->eng;
    if (!hp->pool) {
        snprintf(errbuf, errlen, "the engine is shutting down");
        return CD_ERR_BUSY;
    }
    httpc_request req = {
        .method = call->method,
        .url = call->url,
        .headers = call->headers,
        .body = call->body,
        .body_len = call->body_len,
        .timeout_ms = call->timeout_ms,
    };
    char sigv4[128];
    if (call->aws_service) {
        if (!call->aws_region || !*call->aws_region) {
            snprintf(errbuf, errlen, "aws_region is required with aws_service");
            return CD_ERR_INVALID;
        }
        int ar = host_aws_start(e, errbuf, errlen);
        /* Credentials that failed but are still being fetched are a
         * transient problem for a call (RETRY), not a bad record. */
        if (ar == CD_ERR_INVALID && e->creds) return CD_ERR_BUSY;
        if (ar < 0) return ar;
        const char *ak, *sk, *tok;
        if (!e->creds || aws_creds_get(e->creds, &ak, &sk, &tok) < 0) {
            snprintf(errbuf, errlen, "AWS credentials are not available yet");
            return CD_ERR_BUSY;
        }
        snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:%s", call->aws_region, call->aws_service);
        req.aws_sigv4 = sigv4;
        req.aws_access_key = ak;
        req.aws_secret_key = sk;
        req.aws_session_token = tok;
    }
    host_call *c = malloc(sizeof(*c));
    if (!c) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    c->cb = cb;
    c->opaque = opaque;
    int r = httpc_submit(hp->pool, &req, host_http_done, c, errbuf, errlen);
    if (r < 0) free(c);
    return r;
}

static void host_client_closed(void *opaque) {
    (void)opaque;
}

static void host_creds_closed(void *opaque) {
    engine *e = opaque;
    e->creds = NULL;
    if (e->http) {
        httpc_close(e->http, host_client_closed, NULL);
        e->http = NULL;
    }
}

void host_http_shutdown(engine *e) {
    for (host_pool *hp = e->pools; hp; hp = hp->next) {
        httpc_pool_free(hp->pool);
        hp->pool = NULL;
    }
    if (e->creds)
        aws_creds_close(e->creds, host_creds_closed, e);
    else
        host_creds_closed(e);
}

/* ------------------------------------------------------------- Redis (1.4) */
_Static_assert(sizeof(cd_redis_reply) == sizeof(redis_reply) &&
                   offsetof(cd_redis_reply, type) == offsetof(redis_reply, type) &&
                   offsetof(cd_redis_reply, str) == offsetof(redis_reply, str) &&
                   offsetof(cd_redis_reply, element) == offsetof(redis_reply, element) &&
                   (int)CD_REDIS_ERROR == (int)REDIS_T_ERROR &&
                   (int)CD_REDIS_ARRAY == (int)REDIS_T_ARRAY,
               "cd_redis_reply and redis_reply must match");

typedef struct host_redis_call {
    cd_redis_cb cb;
    void *opaque;
} host_redis_call;

static void host_redis_done(void *opaque, const redis_reply *reply) {
    host_redis_call *c = opaque;
    c->cb(c->opaque, (const cd_redis_reply *)(const void *)reply);
    free(c);
}

/* The engine's client, started on first use. */
static int host_redis_client(engine *e, char *errbuf, size_t errlen) {
    if (e->redis) return 0;
    if (!e->conf->redis_url) {
        snprintf(errbuf, errlen, "no redis_url in the engine config");
        return CD_ERR_UNSUPPORTED;
    }
    if (redis_new(&e->redis, e->loop, e->conf->redis_url, errbuf, errlen) < 0) {
        e->redis = NULL;
        return CD_ERR_INVALID;
    }
    return 0;
}

static int host_redis_command(cd_instance *inst, cd_redis_cb cb, void *opaque, int argc,
                              const char **argv, const size_t *argvlen, char *errbuf,
                              size_t errlen) {
    engine *e = inst->eng;
    int rc = host_redis_client(e, errbuf, errlen);
    if (rc < 0) return rc;
    host_redis_call *c = malloc(sizeof(*c));
    if (!c) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    c->cb = cb;
    c->opaque = opaque;
    int r = redis_command_argv(e->redis, host_redis_done, c, argc, argv, argvlen);
    if (r < 0) {
        free(c);
        snprintf(errbuf, errlen, "redis %s: %s", e->conf->redis_url,
                 r == REDIS_E_DISCONNECTED ? "not connected" : "command refused");
    }
    return r;
}

/* ------------------------------------------------------ Redis pub/sub (1.5) */
_Static_assert(sizeof(cd_redis_message) == sizeof(redis_message) &&
                   offsetof(cd_redis_message, channel) == offsetof(redis_message, channel) &&
                   offsetof(cd_redis_message, payload_len) == offsetof(redis_message, payload_len),
               "cd_redis_message and redis_message must match");

struct cd_redis_sub {
    engine *e;
    redis_sub *rs;
    cd_redis_message_cb cb;
    void *opaque;
    int pattern;
    char name[];
};

static void host_redis_message(void *opaque, const redis_message *msg) {
    cd_redis_sub *sub = opaque;
    sub->cb(sub->opaque, (const cd_redis_message *)(const void *)msg);
}

static int host_redis_subscribe(cd_instance *inst, const char *channel, int pattern,
                                cd_redis_message_cb cb, void *opaque, cd_redis_sub **out,
                                char *errbuf, size_t errlen) {
    engine *e = inst->eng;
    if (!channel || !*channel || !cb || !out) {
        snprintf(errbuf, errlen, "redis_subscribe: empty channel or no callback");
        return CD_ERR_INVALID;
    }
    int rc = host_redis_client(e, errbuf, errlen);
    if (rc < 0) return rc;
    size_t len = strlen(channel);
    cd_redis_sub *sub = malloc(sizeof(*sub) + len + 1);
    if (!sub) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    sub->e = e;
    sub->cb = cb;
    sub->opaque = opaque;
    sub->pattern = pattern != 0;
    memcpy(sub->name, channel, len + 1);
    rc = redis_subscribe_handle(e->redis, sub->name, sub->pattern, host_redis_message, sub,
                                &sub->rs);
    if (rc < 0) {
        free(sub);
        snprintf(errbuf, errlen, "redis %s: cannot subscribe to %s", e->conf->redis_url, channel);
        return rc;
    }
    *out = sub;
    return 0;
}

static void host_redis_unsubscribe(cd_redis_sub *sub) {
    if (!sub) return;
    /* After host_redis_shutdown the client is closing and forgets its
     * subscriptions by itself. */
    if (sub->e->redis)
        redis_unsubscribe(sub->e->redis, sub->name, sub->pattern, host_redis_message, sub);
    free(sub);
}

static int host_redis_sub_confirmed(const cd_redis_sub *sub) {
    return sub && sub->e->redis && redis_sub_confirmed(sub->rs);
}

static int host_redis_subscribed(cd_instance *inst) {
    engine *e = inst->eng;
    return e->redis ? redis_subscribed(e->redis) : 0;
}

static void host_redis_closed(void *opaque) {
    (void)opaque;
}

void host_redis_shutdown(engine *e) {
    if (e->redis) {
        redis_close(e->redis, host_redis_closed, NULL);
        e->redis = NULL;
    }
}

const cd_host engine_host = {
    .abi_version = CD_ABI_VERSION,
    .struct_size = sizeof(cd_host),
    .loop = host_loop,
    .log = host_log,
    .log_enabled = host_log_enabled,
    .pipeline_name = host_pipeline_name,
    .instance_name = host_instance_name,
    .cfg_string = configmap_string,
    .cfg_int = configmap_int,
    .cfg_double = configmap_double,
    .cfg_bool = configmap_bool,
    .cfg_is_set = configmap_is_set,
    .cfg_list_count = configmap_list_count,
    .cfg_list_item = configmap_list_item,
    .cfg_json = configmap_json,
    .metric_register = host_metric_register,
    .metric_add = metrics_add,
    .metric_set = metrics_set,
    .record_done = pipeline_record_done,
    .produce = host_produce,
    .http_listen = host_http_listen,
    .http_port = host_http_port,
    .http_close = host_http_close,
    .http_method = host_http_method,
    .http_path = host_http_path,
    .http_query_param = host_http_query_param,
    .http_header = host_http_header,
    .http_body = host_http_body,
    .http_peer = host_http_peer,
    .http_respond = host_http_respond,
    .template_compile = host_template_compile,
    .template_render = host_template_render,
    .template_uses_value = host_template_uses_value,
    .template_free = host_template_free,
    .buf_free = host_buf_free,
    .http_pool_new = host_http_pool_new,
    .http_pool_free = host_http_pool_free,
    .http_call = host_http_call,
    .aws_credentials_check = host_aws_credentials_check,
    .redis_command = host_redis_command,
    .http_is_upgrade = host_http_is_upgrade,
    .http_upgrade = host_http_upgrade,
    .stream_write = host_stream_write,
    .stream_pending = host_stream_pending,
    .stream_close = host_stream_close,
    .stream_peer = host_stream_peer,
    .redis_subscribe = host_redis_subscribe,
    .redis_unsubscribe = host_redis_unsubscribe,
    .redis_subscribed = host_redis_subscribed,
    .redis_sub_confirmed = host_redis_sub_confirmed,
};
