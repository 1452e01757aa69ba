/*
 * Engine and pipeline configuration: loads pipelines/connectd.json and one
 * JSON file per pipeline, expands ${...} references, validates everything
 * against the engine's and the plugins' config maps, and reports every
 * problem as "file: json.path: reason".  The result is immutable; a reload
 * builds a new one and diffs by pipeline name (fingerprint).
 */
#ifndef CONNECTD_CONFIG_H
#define CONNECTD_CONFIG_H

#include "configmap.h"
#include "diag.h"
#include "plugin.h"
#include <jansson.h>

typedef struct retry_policy {
    int64_t initial_ms;
    int64_t max_ms;
    int64_t max_attempts;   /* tries in all, including the first */
    int64_t max_elapsed_ms; /* since the first failure */
} retry_policy;

typedef struct batch_policy {
    int64_t max_records;
    int64_t max_bytes;
    int64_t linger_ms;
} batch_policy;

typedef struct plugin_conf {
    char *name;           /* unique within the pipeline */
    const plugin *plugin; /* borrowed from the registry */
    cd_config *cfg;       /* the plugin's validated options */
    json_t *when;         /* condition or NULL */
    retry_policy retry;
} plugin_conf;

typedef enum errors_tolerance { ERRORS_NONE = 0, ERRORS_ALL = 1 } errors_tolerance;

typedef struct pipeline_conf {
    char *file;
    char *name;
    char *fingerprint; /* canonical JSON of the expanded file */
    /* sink pipelines */
    char **topics;
    size_t topic_count;
    char *group_id;
    cd_value_format value_format;
    plugin_conf *sinks;
    size_t sink_count;
    errors_tolerance tolerance;
    char *dead_letter_topic; /* NULL: none */
    int errors_log;
    batch_policy batch;
    retry_policy retry;
    int64_t max_inflight_records; /* per partition: pause above, resume below half */
    int64_t max_inflight_bytes;
    int64_t max_pipeline_inflight_records; /* all partitions: pause all above, resume below half */
    int64_t max_pipeline_inflight_bytes;
    int64_t pause_after_ms; /* blocked this long: pause partitions in librdkafka */
    json_t *kafka;          /* librdkafka overrides, string values */
    /* source pipelines */
    plugin_conf *source;
} pipeline_conf;

typedef struct engine_conf {
    char *file;
    char *dir;     /* directory of the config file */
    json_t *kafka; /* librdkafka properties as strings */
    char *pipelines_dir;
    char *plugin_path; /* may be NULL */
    char *admin_listen;
    char *redis_url; /* may be NULL */
    cd_log_level log_level;
    int64_t shutdown_grace_ms;
    int64_t commit_interval_ms;
    pipeline_conf **pipelines;
    size_t pipeline_count;
} engine_conf;

/* Loads and validates the engine file alone (no pipelines).  Returns 0 and
 * *out, or the number of errors added to d. */
int engine_conf_load(const char *path, diag *d, engine_conf **out);

/* Loads every pipeline file of conf->pipelines_dir into conf, validating
 * against the plugins in r.  Returns the number of errors added to d. */
int engine_conf_load_pipelines(engine_conf *conf, const plugin_registry *r, diag *d);

/* Loads one pipeline file.  Returns 0 and *out, or the number of errors. */
int pipeline_conf_load(const char *file, const plugin_registry *r, diag *d, pipeline_conf **out);

void pipeline_conf_free(pipeline_conf *pc);
void engine_conf_free(engine_conf *conf);

/* Loads a JSON file, reporting malformed JSON with line and column. */
json_t *config_load_json(const char *file, diag *d);

#endif
