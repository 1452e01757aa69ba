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

static const char *const admin_json_headers[] = {"Cache-Control: no-store", NULL};

static void admin_json(httpd_req *req, int status, json_t *body) {
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    httpd_respond(req, status, "application/json", text, text ? strlen(text) : 0,
                  admin_json_headers);
    free(text);
}

static pipeline *admin_find(engine *e, const char *name, size_t len) {
    for (size_t i = 0; i < e->pipeline_count; i++) {
        const char *n = pipeline_name(e->pipelines[i]);
        if (strlen(n) == len && strncmp(n, name, len) == 0) return e->pipelines[i];
    }
    return NULL;
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
    if (strcmp(path, "/pipelines") == 0) {
        if (!get) {
            httpd_respond_json_error(req, 405, "use GET");
            return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; i < e->pipeline_count; i++)
            json_array_append_new(arr, pipeline_describe(e->pipelines[i]));
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
                admin_json(req, 200, pipeline_describe(pl));
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
        admin_json(req, 200, pipeline_describe(pl));
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
