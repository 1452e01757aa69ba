/*
 * Admin room: a small JSON/Prometheus API over the engine's HTTP server.
 * Everything it reads is already on the loop thread, so a request is
 * answered synchronously from the handler.
 */
#include "admin.h"
#include "httpd.h"
#include "log.h"
#include "pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const admin_json_headers[] = {"Cache-Control: no-store", NULL};

static void admin_json(httpd_req *req, int status, json_t *body) {
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    httpd_respond(req, status, "application/json", text, text ? strlen(text) : 0,
                  admin_json_headers);
    free(text);
}

/* The dashboard page (engine/admin_dashboard.html), compiled in by
 * cmake/embed_file.cmake so the binary serves it without reading files. */
extern const unsigned char admin_dashboard_html[];
extern const size_t admin_dashboard_html_len;

/* The page runs only its own inline script and style and talks only to this
 * origin; it may not be framed (its buttons pause pipelines). */
static const char *const admin_html_headers[] = {
    "Cache-Control: no-store",
    "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src "
    "'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options: nosniff", NULL};

static pipeline *admin_find(engine *e, const char *name, size_t len) {
    for (size_t i = 0; i < e->pipeline_count; i++) {
        const char *n = pipeline_name(e->pipelines[i]);
        if (strlen(n) == len && strncmp(n, name, len) == 0) return e->pipelines[i];
    }
    return NULL;
}

/* Sets key (plus the labels left after the pipeline's and the sink's, if
 * any) in obj to the metric's value. */
static void admin_put_metric(json_t *obj, const cd_metric *m, const char *rest) {
    if (!*rest) {
        json_object_set_new(obj, m->name, json_real(m->value));
        return;
    }
    char key[768];
    snprintf(key, sizeof(key), "%s{%s}", m->name, rest);
    json_object_set_new(obj, key, json_real(m->value));
}

/* Past a leading `key="..."` label (and its comma) of a rendered label set,
 * or NULL when rest does not start with that key. */
static const char *admin_skip_label(const char *rest, const char *key) {
    size_t klen = strlen(key);
    if (strncmp(rest, key, klen) != 0 || strncmp(rest + klen, "=\"", 2) != 0) return NULL;
    for (const char *p = rest + klen + 2; *p; p++) {
        if (*p == '\\' && p[1]) {
            p++;
        } else if (*p == '"') {
            p++;
            return *p == ',' ? p + 1 : p;
        }
    }
    return NULL;
}

/* pipeline_describe plus what only the admin room sees: the partitions' lag
 * summed ("lag", null while no partition has a high watermark yet) and the
 * plugins' own metrics from the registry: a sink's under its sink
 * ("metrics": {"sink_file_bytes_written_total": 123}), a source's (labelled
 * source="name") and any other under the pipeline.
 * The engine's connectd_* series are left out: the description already
 * carries them.  Caller owns the result. */
static json_t *admin_describe(engine *e, const pipeline *pl) {
    json_t *d = pipeline_describe(pl);
    json_int_t lag = 0;
    int have_lag = 0;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(d, "partitions"), i, v) {
        json_t *l = json_object_get(v, "lag");
        if (json_is_integer(l)) {
            lag += json_integer_value(l);
            have_lag = 1;
        }
    }
    json_object_set_new(d, "lag", have_lag ? json_integer(lag) : json_null());

    char plabel[300];
    metrics_label(plabel, sizeof(plabel), "pipeline", pipeline_name(pl));
    size_t plen = strlen(plabel);
    json_t *own = json_object();
    int source = json_object_get(d, "source") != NULL;
    json_t *sinks = json_object_get(d, "sinks");
    json_t *s;
    json_array_foreach(sinks, i, s) json_object_set_new(s, "metrics", json_object());
    for (const cd_metric *m = e->metrics.head; m; m = m->next) {
        if (strncmp(m->name, "connectd_", 9) == 0) continue;
        if (strncmp(m->labels, plabel, plen) != 0) continue;
        const char *rest = m->labels + plen;
        if (*rest == ',')
            rest++;
        else if (*rest)
            continue; /* another pipeline whose name starts with this one's */
        json_t *into = own;
        const char *past = source ? admin_skip_label(rest, "source") : NULL;
        if (past) rest = past;
        json_array_foreach(sinks, i, s) {
            char slabel[300];
            metrics_label(slabel, sizeof(slabel), "sink",
                          json_string_value(json_object_get(s, "name")));
            size_t slen = strlen(slabel);
            if (strncmp(rest, slabel, slen) == 0 && (rest[slen] == '\0' || rest[slen] == ',')) {
                into = json_object_get(s, "metrics");
                rest += slen + (rest[slen] == ',');
                break;
            }
        }
        admin_put_metric(into, m, rest);
    }
    json_object_set_new(d, "metrics", own);
    return d;
}

/* A browser names the page's origin on a cross-site POST: one from another
 * origin than this server's is refused, so a web page the operator happens
 * to visit cannot pause pipelines on 127.0.0.1.  Clients that send no Origin
 * (curl, scripts, probes) are not affected. */
static int admin_cross_origin(const httpd_req *req) {
    const char *origin = httpd_req_header(req, "origin");
    if (!origin) return 0;
    const char *host = httpd_req_header(req, "host");
    const char *sep = strstr(origin, "://");
    return !host || !sep || strcasecmp(sep + 3, host) != 0;
}

static void admin_dashboard(httpd_req *req) {
    httpd_respond(req, 200, "text/html; charset=utf-8", admin_dashboard_html,
                  admin_dashboard_html_len, admin_html_headers);
}

/* Metrics the registry does not hold because they are read live. */
static void admin_live_metrics(engine *e, FILE *f) {
    fprintf(f,
            "# HELP connectd_info connectd build\n# TYPE connectd_info gauge\n"
            "connectd_info{version=\"%s\"} 1\n",
            CONNECTD_VERSION);
    fprintf(f, "# HELP connectd_consumer_lag records between the committed watermark and the "
               "partition end\n# TYPE connectd_consumer_lag gauge\n");
    for (size_t i = 0; i < e->pipeline_count; i++) {
        json_t *d = pipeline_describe(e->pipelines[i]);
        size_t k;
        json_t *p;
        json_array_foreach(json_object_get(d, "partitions"), k, p) {
            json_t *lag = json_object_get(p, "lag");
            if (!lag) continue;
            char l1[256], l2[256];
            metrics_label(l1, sizeof(l1), "pipeline", pipeline_name(e->pipelines[i]));
            metrics_label(l2, sizeof(l2), "topic", json_string_value(json_object_get(p, "topic")));
            fprintf(f, "connectd_consumer_lag{%s,%s,partition=\"%lld\"} %lld\n", l1, l2,
                    (long long)json_integer_value(json_object_get(p, "partition")),
                    (long long)json_integer_value(lag));
        }
        json_decref(d);
    }
}

static void admin_metrics(engine *e, httpd_req *req) {
    char *reg = metrics_render(&e->metrics);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        free(reg);
        httpd_respond_json_error(req, 500, "out of memory");
        return;
    }
    fputs(reg ? reg : "", f);
    admin_live_metrics(e, f);
    fclose(f);
    httpd_respond(req, 200, "text/plain; version=0.0.4", buf, len, NULL);
    free(reg);
    free(buf);
}

static void admin_readyz(engine *e, httpd_req *req) {
    json_t *not_ready = json_array();
    for (size_t i = 0; i < e->pipeline_count; i++) {
        pipeline_state s = pipeline_get_state(e->pipelines[i]);
        if (s != PIPELINE_RUNNING && s != PIPELINE_PAUSED) {
            json_t *o = json_object();
            json_object_set_new(o, "name", json_string(pipeline_name(e->pipelines[i])));
            json_object_set_new(o, "state", json_string(pipeline_state_name(s)));
            json_array_append_new(not_ready, o);
        }
    }
    int ready = json_array_size(not_ready) == 0 && !e->stopping;
    json_t *body = json_object();
    json_object_set_new(body, "status", json_string(ready ? "ready" : "not ready"));
    json_object_set_new(body, "not_ready", not_ready);
    admin_json(req, ready ? 200 : 503, body);
}

static void admin_handle(httpd_req *req, void *opaque) {
    engine *e = opaque;
    const char *method = httpd_req_method(req);
    const char *path = httpd_req_path(req);
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int post = strcmp(method, "POST") == 0;
    if (post && admin_cross_origin(req)) {
        httpd_respond_json_error(req, 403, "cross-origin request refused");
        return;
    }
    if (strcmp(path, "/") == 0) {
        if (!get)
            httpd_respond_json_error(req, 405, "use GET");
        else
            admin_dashboard(req);
        return;
    }
    if (strcmp(path, "/healthz") == 0) {
        if (!get) {
            httpd_respond_json_error(req, 405, "use GET");
            return;
        }
        admin_json(req, 200, json_pack("{s:s}", "status", "ok"));
        return;
    }
    if (strcmp(path, "/readyz") == 0) {
        if (!get)
            httpd_respond_json_error(req, 405, "use GET");
        else
            admin_readyz(e, req);
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        if (!get)
            httpd_respond_json_error(req, 405, "use GET");
        else
            admin_metrics(e, req);
        return;
    }
    if (strcmp(path, "/reload") == 0) {
        if (!post) {
            httpd_respond_json_error(req, 405, "use POST");
            return;
        }
        /* The same reload as SIGHUP; the answer says what it did (200), why
         * nothing changed (400: the configuration's errors), or that one is
         * already draining (409). */
        json_t *report = NULL;
        int rc = engine_reload(e, "POST /reload", &report);
        admin_json(req, rc == 0 ? 200 : rc == -1 ? 400 : 409, report);
        return;
    }
    if (strcmp(path, "/pipelines") == 0) {
        if (!get) {
            httpd_respond_json_error(req, 405, "use GET");
            return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; i < e->pipeline_count; i++)
            json_array_append_new(arr, admin_describe(e, e->pipelines[i]));
        admin_json(req, 200, arr);
        return;
    }
    if (strncmp(path, "/pipelines/", 11) == 0) {
        const char *name = path + 11;
        const char *slash = strchr(name, '/');
        size_t len = slash ? (size_t)(slash - name) : strlen(name);
        pipeline *pl = admin_find(e, name, len);
        if (!pl) {
            httpd_respond_json_error(req, 404, "no pipeline named \"%.*s\"", (int)len, name);
            return;
        }
        if (!slash) {
            if (!get)
                httpd_respond_json_error(req, 405, "use GET");
            else
                admin_json(req, 200, admin_describe(e, pl));
            return;
        }
        int pause = strcmp(slash, "/pause") == 0, resume = strcmp(slash, "/resume") == 0;
        if (!pause && !resume) {
            httpd_respond_json_error(req, 404, "no such endpoint");
            return;
        }
        if (!post) {
            httpd_respond_json_error(req, 405, "use POST");
            return;
        }
        pipeline_state s = pipeline_get_state(pl);
        if (s != PIPELINE_RUNNING && s != PIPELINE_PAUSED) {
            httpd_respond_json_error(req, 409, "pipeline is %s", pipeline_state_name(s));
            return;
        }
        if (pause)
            pipeline_pause(pl);
        else
            pipeline_resume(pl);
        admin_json(req, 200, admin_describe(e, pl));
        return;
    }
    httpd_respond_json_error(req, 404, "no such endpoint");
}

int admin_start(engine *e, char *errbuf, size_t errlen) {
    const char *listen = e->conf->admin_listen;
    if (!listen || !*listen || strcmp(listen, "off") == 0) return 0;
    httpd_limits limits;
    httpd_limits_default(&limits);
    limits.max_connections = 64;
    limits.max_body = 64 * 1024;
    int r = httpd_start(&e->admin, e->loop, listen, &limits, admin_handle, e, errbuf, errlen);
    if (r < 0) return r;
    /* Port 0 picks a free port: say which. */
    const char *colon = strrchr(listen, ':');
    LOG_INFO("admin API on %.*s:%d", colon ? (int)(colon - listen) : (int)strlen(listen), listen,
             httpd_port(e->admin));
    return 0;
}

static void admin_closed(void *opaque) {
    engine *e = opaque;
    e->admin = NULL;
}

void admin_close(engine *e) {
    if (e->admin) httpd_close(e->admin, admin_closed, e);
}
