/*
 * The engine: one libuv loop, the plugin registry, the configuration, the
 * pipelines, the shared producer and the signals (SIGTERM/SIGINT drain and
 * exit; SIGHUP reload).  Also the host table handed to plugins.
 */
#ifndef CONNECTD_ENGINE_H
#define CONNECTD_ENGINE_H

#include "config.h"
#include "kafka.h"
#include "metrics.h"
#include "plugin.h"

typedef struct engine engine;
typedef struct pipeline pipeline;

/* One configured sink or source: what a plugin's host calls identify. */
struct cd_instance {
    engine *eng;
    pipeline *pl;
    char *pipeline_name;
    char *name;
    char *prefix; /* "pipeline/sink" for log lines */
    cd_metric **metrics;
    size_t metric_count;
};

struct engine {
    uv_loop_t *loop;
    engine_conf *conf;
    plugin_registry plugins;
    metrics_registry metrics;
    kafka_producer producer;
    int producer_state; /* 0 none, 1 running, 2 closing/closed */
    pipeline **pipelines;
    size_t pipeline_count;
    size_t pipelines_stopped;
    struct httpd *admin;     /* NULL when off */
    struct httpc *http;      /* the HTTP client, started on first use */
    struct aws_creds *creds; /* AWS credentials, started on first signed call */
    int creds_state;         /* 0 not started, 1 fetching, 2 ready, -1 failed */
    char creds_error[512];
    struct host_pool *pools;  /* plugins' HTTP pools, invalidated at close */
    struct redis *redis;      /* started on first use from conf->redis_url */
    struct retiree *retiring; /* pipelines a reload is draining */
    cd_metric *m_reload_ok, *m_reload_invalid;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t grace_timer;
    int stopping;
    int exit_code;
};

/* The host table every plugin receives. */
extern const cd_host engine_host;

void instance_init(cd_instance *inst, engine *e, pipeline *pl, const char *pipeline_name,
                   const char *name);
/* Unregisters the instance's metrics and frees its strings. */
void instance_release(cd_instance *inst);

/* Closes the HTTP client and AWS credentials (after the pipelines stopped). */
void host_http_shutdown(engine *e);
/* Closes the Redis client (after the pipelines stopped). */
void host_redis_shutdown(engine *e);

/* The shared producer, started on first use.  Returns NULL with errbuf. */
kafka_producer *engine_producer(engine *e, char *errbuf, size_t errlen);

/* Creates the engine from a loaded, validated configuration (takes
 * ownership of conf and of the registry's contents). */
int engine_init(engine *e, uv_loop_t *loop, engine_conf *conf, plugin_registry *plugins);
/* Starts every pipeline and the signal handlers.  Returns 0 or negative. */
int engine_start(engine *e);
/*
 * Hot reload (SIGHUP, POST /reload): reads and validates the engine file,
 * every pipeline file and any new plugin first; on any error nothing
 * changes (the errors are logged and returned).  Otherwise pipelines are
 * diffed by name: unchanged ones are not touched; removed and changed ones
 * (and failed ones) drain and stop (finish in flight, commit), then changed
 * ones start again from the committed offsets; new ones start.  Engine-wide
 * settings other than log_level need a restart (logged).  Returns 0, or -1
 * (invalid: nothing applied), or -2 (a reload or shutdown is under way).
 * *report (may be NULL) gets a JSON object for the admin API.
 */
int engine_reload(engine *e, const char *trigger, json_t **report);
/* Runs the init (then destroy) of pc's source and every sink, as a check:
 * plugins do no I/O in init.  Each failure goes to d as "file: sinks[i]:
 * reason".  Used by `connectd validate` and by reload. */
void engine_try_init(engine *e, const pipeline_conf *pc, diag *d);

/* Begins a graceful stop (as SIGTERM does). exit_code is what run returns. */
void engine_stop(engine *e, int exit_code);
/* Called by a pipeline when it has fully stopped. */
void engine_pipeline_stopped(engine *e, pipeline *pl);
/* A condition the engine cannot run through (e.g. Kafka authentication
 * failed): logs it and stops with a non-zero exit code. */
void engine_fatal(engine *e, const char *fmt, ...) CD_PRINTF(2, 3);
void engine_free(engine *e);

/* `connectd run -c FILE`: load, validate, run until stopped. */
int engine_run_main(const char *config_path);

#endif
