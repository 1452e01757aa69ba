/*
 * Engine room: loads configuration and plugins, runs the pipelines on one
 * loop, handles signals.  SIGTERM/SIGINT: every pipeline drains (stop
 * fetching, finish in-flight batches, commit) within shutdown_grace_ms, then
 * the process exits 0.
 */
#include "engine.h"
#include "admin.h"
#include "expand.h"
#include "log.h"
#include "pipeline.h"
#include "secrets.h"

#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

kafka_producer *engine_producer(engine *e, char *errbuf, size_t errlen) {
    if (e->producer_state == 1) return &e->producer;
    if (e->producer_state == 2) {
        snprintf(errbuf, errlen, "producer is closed");
        return NULL;
    }
    if (kafka_producer_start(&e->producer, e->loop, e->conf->kafka, errbuf, errlen) < 0)
        return NULL;
    e->producer_state = 1;
    return &e->producer;
}

int engine_init(engine *e, uv_loop_t *loop, engine_conf *conf, plugin_registry *plugins) {
    memset(e, 0, sizeof(*e));
    e->loop = loop;
    e->conf = conf;
    e->plugins = *plugins;
    memset(plugins, 0, sizeof(*plugins));
    e->pipelines = calloc(conf->pipeline_count ? conf->pipeline_count : 1, sizeof(pipeline *));
    for (size_t i = 0; i < conf->pipeline_count; i++)
        e->pipelines[e->pipeline_count++] = pipeline_new(e, conf->pipelines[i]);
    return 0;
}

static void engine_on_signal(uv_signal_t *h, int signum) {
    engine *e = h->data;
    if (signum == SIGHUP) {
        /* Validate what is on disk now so an operator learns at once whether
         * the files would load; applying them live is the reload room's job. */
        diag d = {0};
        engine_conf *next = NULL;
        char serr[256];
        if (secrets_install(serr, sizeof(serr)) < 0) LOG_WARN("secrets: %s", serr);
        if (engine_conf_load(e->conf->file, &d, &next) == 0)
            engine_conf_load_pipelines(next, &e->plugins, &d);
        secrets_uninstall();
        if (d.count) {
            LOG_ERROR("SIGHUP: configuration is invalid, keeping the running one:");
            diag_log(&d);
        } else {
            LOG_WARN("SIGHUP: configuration is valid; live reload is not available in this "
                     "build, restart to apply it");
        }
        diag_free(&d);
        engine_conf_free(next);
        return;
    }
    if (e->stopping) {
        LOG_WARN("second %s: stopping now without waiting", strsignal(signum));
        for (size_t i = 0; i < e->pipeline_count; i++)
            pipeline_force_stop(e->pipelines[i]);
        return;
    }
    LOG_INFO("%s: draining (grace %" PRId64 " ms)", strsignal(signum), e->conf->shutdown_grace_ms);
    engine_stop(e, 0);
}

static void engine_on_grace(uv_timer_t *t) {
    engine *e = container_of(t, engine, grace_timer);
    LOG_WARN("grace period of %" PRId64 " ms is over: committing what is done and exiting",
             e->conf->shutdown_grace_ms);
    for (size_t i = 0; i < e->pipeline_count; i++)
        pipeline_force_stop(e->pipelines[i]);
}

static void engine_close_all(engine *e);

int engine_start(engine *e) {
    uv_signal_init(e->loop, &e->sig_term);
    uv_signal_init(e->loop, &e->sig_int);
    uv_signal_init(e->loop, &e->sig_hup);
    e->sig_term.data = e->sig_int.data = e->sig_hup.data = e;
    uv_signal_start(&e->sig_term, engine_on_signal, SIGTERM);
    uv_signal_start(&e->sig_int, engine_on_signal, SIGINT);
    uv_signal_start(&e->sig_hup, engine_on_signal, SIGHUP);
    uv_timer_init(e->loop, &e->grace_timer);
    char aerr[512];
    if (admin_start(e, aerr, sizeof(aerr)) < 0) {
        /* Nothing started yet: close what exists and let the loop end. */
        LOG_ERROR("admin API: %s", aerr);
        e->stopping = 1;
        e->exit_code = 1;
        engine_close_all(e);
        return -1;
    }
    size_t started = 0;
    for (size_t i = 0; i < e->pipeline_count; i++) {
        char err[1024];
        if (pipeline_start(e->pipelines[i], err, sizeof(err)) < 0) {
            /* One broken pipeline does not stop the others. */
            log_msg(CD_LOG_ERROR, pipeline_name(e->pipelines[i]), "failed to start: %s", err);
        } else {
            started++;
        }
    }
    LOG_INFO("connectd %s running %zu of %zu pipeline(s)", CONNECTD_VERSION, started,
             e->pipeline_count);
    if (e->pipeline_count && !started) {
        LOG_ERROR("no pipeline could start");
        engine_stop(e, 1);
        return -1;
    }
    return 0;
}

static void engine_handle_closed(uv_handle_t *h) {
    (void)h;
}

static void engine_producer_closed(kafka_producer *p) {
    (void)p;
}

static void engine_close_all(engine *e) {
    admin_close(e);
    host_http_shutdown(e);
    host_redis_shutdown(e);
    uv_timer_stop(&e->grace_timer);
    uv_close((uv_handle_t *)&e->grace_timer, engine_handle_closed);
    uv_close((uv_handle_t *)&e->sig_term, engine_handle_closed);
    uv_close((uv_handle_t *)&e->sig_int, engine_handle_closed);
    uv_close((uv_handle_t *)&e->sig_hup, engine_handle_closed);
    if (e->producer_state == 1) {
        e->producer_state = 2;
        kafka_producer_close(&e->producer, (uint64_t)e->conf->shutdown_grace_ms,
                             engine_producer_closed);
    }
}

void engine_pipeline_stopped(engine *e, pipeline *pl) {
    e->pipelines_stopped++;
    if (e->stopping && e->pipelines_stopped == e->pipeline_count) engine_close_all(e);
}

void engine_stop(engine *e, int exit_code) {
    if (e->stopping) return;
    e->stopping = 1;
    e->exit_code = exit_code;
    uv_timer_start(&e->grace_timer, engine_on_grace, (uint64_t)e->conf->shutdown_grace_ms, 0);
    if (e->pipeline_count == 0) {
        engine_close_all(e);
        return;
    }
    for (size_t i = 0; i < e->pipeline_count; i++)
        pipeline_stop(e->pipelines[i]);
}

void engine_fatal(engine *e, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    LOG_ERROR("fatal: %s", msg);
    if (!e->stopping)
        engine_stop(e, 2);
    else if (!e->exit_code)
        e->exit_code = 2;
}

void engine_free(engine *e) {
    for (size_t i = 0; i < e->pipeline_count; i++)
        pipeline_free(e->pipelines[i]);
    free(e->pipelines);
    engine_conf_free(e->conf);
    metrics_free(&e->metrics);
    plugin_registry_free(&e->plugins);
}

/* Loads engine config, plugins and pipelines; errors go to d. */
static engine_conf *engine_load(const char *path, plugin_registry *r, diag *d) {
    engine_conf *conf = NULL;
    if (engine_conf_load(path, d, &conf) != 0) return NULL;
    log_set_level(conf->log_level);
    char *search = plugin_search_path(conf->plugin_path);
    plugin_registry_discover(r, search);
    free(search);
    engine_conf_load_pipelines(conf, r, d);
    return conf;
}

int engine_run_main(const char *config_path) {
    diag d = {0};
    plugin_registry r = {0};
    char serr[256];
    if (secrets_install(serr, sizeof(serr)) < 0) LOG_WARN("secrets: %s", serr);
    engine_conf *conf = engine_load(config_path, &r, &d);
    secrets_uninstall(); /* ${secret:...} only resolves while loading */
    if (d.count) {
        diag_log(&d);
        LOG_ERROR("%zu configuration error(s); not starting", d.count);
        diag_free(&d);
        engine_conf_free(conf);
        plugin_registry_free(&r);
        return 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    engine e;
    engine_init(&e, &loop, conf, &r);
    engine_start(&e);
    uv_run(&loop, UV_RUN_DEFAULT);
    int code = e.exit_code;
    engine_free(&e);
    if (uv_loop_close(&loop) != 0) {
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
    LOG_INFO("stopped (exit %d)", code);
    return code;
}
