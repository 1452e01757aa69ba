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
    /* e->pipelines[i] runs e->conf->pipelines[i]; both arrays keep that
     * pairing through reloads. */
    e->pipelines = calloc(conf->pipeline_count ? conf->pipeline_count : 1, sizeof(pipeline *));
    for (size_t i = 0; i < conf->pipeline_count; i++)
        e->pipelines[e->pipeline_count++] = pipeline_new(e, conf->pipelines[i]);
    e->m_reload_ok = metrics_register(&e->metrics, CD_METRIC_COUNTER, "connectd_reloads_total",
                                      "Configuration reloads, by result", "result=\"ok\"");
    e->m_reload_invalid =
        metrics_register(&e->metrics, CD_METRIC_COUNTER, "connectd_reloads_total",
                         "Configuration reloads, by result", "result=\"invalid\"");
    return 0;
}

/* ------------------------------------------------------------- hot reload */
/* A pipeline a reload stops, with its configuration and, for a changed
 * pipeline, the configuration that starts once it has stopped. */
typedef struct retiree {
    struct retiree *next;
    pipeline *pl;
    pipeline_conf *pc;
    pipeline_conf *successor; /* NULL: removed */
} retiree;

/* Appends (pl, pc) to the running set. */
static int engine_add_pipeline(engine *e, pipeline_conf *pc, pipeline *pl) {
    pipeline **np = realloc(e->pipelines, (e->pipeline_count + 1) * sizeof(*np));
    if (!np) return -1;
    e->pipelines = np;
    pipeline_conf **nc = realloc(e->conf->pipelines, (e->conf->pipeline_count + 1) * sizeof(*nc));
    if (!nc) return -1;
    e->conf->pipelines = nc;
    e->pipelines[e->pipeline_count++] = pl;
    e->conf->pipelines[e->conf->pipeline_count++] = pc;
    return 0;
}

static void engine_start_new(engine *e, pipeline_conf *pc) {
    pipeline *pl = pipeline_new(e, pc);
    if (!pl || engine_add_pipeline(e, pc, pl) < 0) {
        LOG_ERROR("reload: out of memory starting %s", pc->name);
        pipeline_free(pl);
        pipeline_conf_free(pc);
        return;
    }
    char err[1024];
    if (pipeline_start(pl, err, sizeof(err)) < 0)
        log_msg(CD_LOG_ERROR, pipeline_name(pl), "failed to start: %s", err);
    else
        log_msg(CD_LOG_INFO, pipeline_name(pl), "started (%s)", pc->file);
}

static void json_push_name(json_t *o, const char *key, const char *name) {
    json_array_append_new(json_object_get(o, key), json_string(name));
}

/* Engine-wide settings a running engine cannot change. */
static void engine_conf_compare(const engine_conf *a, const engine_conf *b, json_t *ignored) {
#define CD_STR_DIFF(x, y) (((x) == NULL) != ((y) == NULL) || ((x) && strcmp((x), (y)) != 0))
    if (!json_equal(a->kafka, b->kafka)) json_array_append_new(ignored, json_string("kafka"));
    if (CD_STR_DIFF(a->pipelines_dir, b->pipelines_dir))
        json_array_append_new(ignored, json_string("pipelines_dir"));
    if (CD_STR_DIFF(a->plugin_path, b->plugin_path))
        json_array_append_new(ignored, json_string("plugin_path"));
    if (CD_STR_DIFF(a->admin_listen, b->admin_listen))
        json_array_append_new(ignored, json_string("admin_listen"));
    if (CD_STR_DIFF(a->redis_url, b->redis_url))
        json_array_append_new(ignored, json_string("redis_url"));
    if (a->shutdown_grace_ms != b->shutdown_grace_ms)
        json_array_append_new(ignored, json_string("shutdown_grace_ms"));
    if (a->commit_interval_ms != b->commit_interval_ms)
        json_array_append_new(ignored, json_string("commit_interval_ms"));
#undef CD_STR_DIFF
}

static int engine_try_init_one(engine *e, const pipeline_conf *pc, const plugin_conf *plc,
                               int is_source, size_t index, diag *d) {
    cd_instance inst;
    instance_init(&inst, e, NULL, pc->name, plc->name);
    char err[1024] = "";
    void *ctx = NULL;
    int r;
    if (is_source) {
        const cd_source_ops *ops = plc->plugin->desc->source;
        r = ops->init(&engine_host, &inst, plc->cfg, &ctx, err, sizeof(err));
        if (r == 0 && ctx) ops->destroy(ctx);
    } else {
        const cd_sink_ops *ops = plc->plugin->desc->sink;
        r = ops->init(&engine_host, &inst, plc->cfg, &ctx, err, sizeof(err));
        if (r == 0 && ctx) ops->destroy(ctx);
    }
    instance_release(&inst);
    if (r < 0) {
        char path[64];
        if (is_source)
            snprintf(path, sizeof(path), "source");
        else
            snprintf(path, sizeof(path), "sinks[%zu]", index);
        diag_add(d, pc->file, path, "%s", *err ? err : "plugin init failed");
        return 1;
    }
    return 0;
}

void engine_try_init(engine *e, const pipeline_conf *pc, diag *d) {
    if (pc->source) engine_try_init_one(e, pc, pc->source, 1, 0, d);
    for (size_t j = 0; j < pc->sink_count; j++)
        engine_try_init_one(e, pc, &pc->sinks[j], 0, j, d);
}

int engine_reload(engine *e, const char *trigger, json_t **report) {
    json_t *rep = json_object();
    if (report) *report = rep;
    if (e->stopping || e->retiring) {
        const char *why = e->stopping ? "the engine is stopping" : "a reload is still draining";
        json_object_set_new(rep, "result", json_string("busy"));
        json_object_set_new(rep, "reason", json_string(why));
        LOG_WARN("%s: reload refused: %s", trigger, why);
        if (!report) json_decref(rep);
        return -2;
    }
    /* New plugin files first, so new pipelines may use them. */
    char *search = plugin_search_path(e->conf->plugin_path);
    size_t before = e->plugins.count;
    plugin_registry_discover(&e->plugins, search);
    free(search);
    if (e->plugins.count > before)
        LOG_INFO("%s: %zu new plugin(s) discovered", trigger, e->plugins.count - before);

    diag d = {0};
    engine_conf *next = NULL;
    char serr[256];
    if (secrets_install(serr, sizeof(serr)) < 0) LOG_WARN("secrets: %s", serr);
    if (engine_conf_load(e->conf->file, &d, &next) == 0 &&
        engine_conf_load_pipelines(next, &e->plugins, &d) == 0) {
        /* What `connectd validate` checks too: each plugin's own init
         * (option combinations, templates), so a pipeline that could not
         * start is refused here instead of replacing a running one. */
        for (size_t i = 0; i < next->pipeline_count; i++)
            engine_try_init(e, next->pipelines[i], &d);
    }
    secrets_uninstall();
    if (d.count) {
        LOG_ERROR("%s: configuration is invalid, keeping the running one:", trigger);
        diag_log(&d);
        json_object_set_new(rep, "result", json_string("invalid"));
        json_t *errs = json_array();
        for (size_t i = 0; i < d.count; i++)
            json_array_append_new(errs, json_string(d.lines[i]));
        json_object_set_new(rep, "errors", errs);
        diag_free(&d);
        engine_conf_free(next);
        metrics_add(e->m_reload_invalid, 1);
        if (!report) json_decref(rep);
        return -1;
    }
    diag_free(&d);

    json_object_set_new(rep, "result", json_string("ok"));
    const char *keys[] = {"unchanged", "started", "restarted", "stopped", "restart_required"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        json_object_set_new(rep, keys[i], json_array());
    engine_conf_compare(e->conf, next, json_object_get(rep, "restart_required"));
    if (next->log_level != e->conf->log_level) {
        e->conf->log_level = next->log_level;
        log_set_level(next->log_level);
    }

    /* Which new configuration each running pipeline gets (by name). */
    size_t n_new = next->pipeline_count;
    pipeline_conf **fresh = next->pipelines;
    next->pipelines = NULL;
    next->pipeline_count = 0;
    engine_conf_free(next);

    size_t keep = 0;
    for (size_t i = 0; i < e->pipeline_count; i++) {
        pipeline *pl = e->pipelines[i];
        pipeline_conf *pc = e->conf->pipelines[i];
        pipeline_conf *succ = NULL;
        for (size_t j = 0; j < n_new; j++) {
            if (fresh[j] && strcmp(fresh[j]->name, pc->name) == 0) {
                succ = fresh[j];
                fresh[j] = NULL;
                break;
            }
        }
        if (succ && strcmp(succ->fingerprint, pc->fingerprint) == 0 &&
            pipeline_get_state(pl) != PIPELINE_FAILED) {
            pipeline_conf_free(succ);
            json_push_name(rep, "unchanged", pc->name);
            e->pipelines[keep] = pl;
            e->conf->pipelines[keep] = pc;
            keep++;
            continue;
        }
        retiree *r = calloc(1, sizeof(*r));
        if (!r) { /* keep it as it runs: a later reload can try again */
            log_msg(CD_LOG_ERROR, pc->name, "%s: out of memory; left as it was", trigger);
            pipeline_conf_free(succ);
            e->pipelines[keep] = pl;
            e->conf->pipelines[keep] = pc;
            keep++;
            continue;
        }
        r->pl = pl;
        r->pc = pc;
        r->successor = succ;
        r->next = e->retiring;
        e->retiring = r;
        json_push_name(rep, succ ? "restarted" : "stopped", pc->name);
    }
    e->pipeline_count = keep;
    e->conf->pipeline_count = keep;

    /* Drain what goes; what is new starts now, what changed starts once
     * its predecessor committed and stopped. */
    for (retiree *r = e->retiring; r; r = r->next)
        log_msg(CD_LOG_INFO, pipeline_name(r->pl), "%s: %s", trigger,
                r->successor ? "changed, draining before restarting" : "removed, draining");
    /* A stopped pipeline leaves the list only from its last handle's close
     * callback (engine_retired), never inside pipeline_stop. */
    for (retiree *r = e->retiring; r; r = r->next)
        pipeline_stop(r->pl);
    for (size_t j = 0; j < n_new; j++) {
        if (!fresh[j]) continue;
        json_push_name(rep, "started", fresh[j]->name);
        engine_start_new(e, fresh[j]);
    }
    free(fresh);
    json_t *ign = json_object_get(rep, "restart_required");
    if (json_array_size(ign)) {
        char *names = json_dumps(ign, JSON_COMPACT);
        LOG_WARN("%s: engine settings %s changed: restart to apply them", trigger, names);
        free(names);
    }
    LOG_INFO("%s: reloaded: %zu unchanged, %zu started, %zu restarting, %zu stopping", trigger,
             json_array_size(json_object_get(rep, "unchanged")),
             json_array_size(json_object_get(rep, "started")),
             json_array_size(json_object_get(rep, "restarted")),
             json_array_size(json_object_get(rep, "stopped")));
    metrics_add(e->m_reload_ok, 1);
    if (!report) json_decref(rep);
    return 0;
}

/* A pipeline a reload stopped has finished: free it, start its successor. */
static int engine_retired(engine *e, pipeline *pl) {
    for (retiree **rp = &e->retiring; *rp; rp = &(*rp)->next) {
        retiree *r = *rp;
        if (r->pl != pl) continue;
        *rp = r->next;
        log_msg(CD_LOG_INFO, pipeline_name(pl), "stopped");
        pipeline_free(pl);
        pipeline_conf_free(r->pc);
        if (r->successor) {
            if (e->stopping)
                pipeline_conf_free(r->successor);
            else
                engine_start_new(e, r->successor);
        }
        free(r);
        return 1;
    }
    return 0;
}

static void engine_on_signal(uv_signal_t *h, int signum) {
    engine *e = h->data;
    if (signum == SIGHUP) {
        engine_reload(e, "SIGHUP", NULL);
        return;
    }
    if (e->stopping) {
        LOG_WARN("second %s: stopping now without waiting", strsignal(signum));
        for (size_t i = 0; i < e->pipeline_count; i++)
            pipeline_force_stop(e->pipelines[i]);
        for (retiree *r = e->retiring; r; r = r->next)
            pipeline_force_stop(r->pl);
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
    for (retiree *r = e->retiring; r; r = r->next)
        pipeline_force_stop(r->pl);
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
    if (!engine_retired(e, pl)) e->pipelines_stopped++;
    if (e->stopping && e->pipelines_stopped == e->pipeline_count && !e->retiring)
        engine_close_all(e);
}

void engine_stop(engine *e, int exit_code) {
    if (e->stopping) return;
    e->stopping = 1;
    e->exit_code = exit_code;
    uv_timer_start(&e->grace_timer, engine_on_grace, (uint64_t)e->conf->shutdown_grace_ms, 0);
    if (e->pipeline_count == 0 && !e->retiring) {
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
    while (e->retiring) { /* only after a forced end */
        retiree *r = e->retiring;
        e->retiring = r->next;
        pipeline_free(r->pl);
        pipeline_conf_free(r->pc);
        pipeline_conf_free(r->successor);
        free(r);
    }
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
