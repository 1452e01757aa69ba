/*
 * Configuration room.  Engine file first (it names the plugin path and the
 * pipelines directory), then every pipeline file.  All validation is table
 * driven (configmap), including the engine's own keys, so every error reads
 * "file: json.path: reason".
 */
#include "config.h"
#include "condition.h"
#include "expand.h"
#include "log.h"

#include <dirent.h>
#include <librdkafka/rdkafka.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cd_option engine_options[] = {
    {"kafka", CD_OPT_JSON, "{}", 0, 0, 0, 0, NULL,
     "librdkafka properties passed through to every client (bootstrap.servers, security...)"},
    {"pipelines_dir", CD_OPT_STRING, ".", 0, 0, 0, 0, NULL,
     "directory of pipeline files, relative to this file"},
    {"plugin_path", CD_OPT_STRING, NULL, 0, 0, 0, 0, NULL,
     "colon-separated plugin directories, searched after $CONNECTD_PLUGIN_PATH"},
    {"admin_listen", CD_OPT_STRING, "127.0.0.1:8083", 0, 0, 0, 0, NULL, "admin HTTP address"},
    {"redis_url", CD_OPT_STRING, NULL, 0, 0, 0, 0, NULL, "redis://host:port for shared state"},
    {"log_level", CD_OPT_ENUM, "info", 0, 0, 0, 0, "error|warn|info|debug", "log verbosity"},
    {"shutdown_grace_ms", CD_OPT_INT, "25000", 0, 1, 0, 600000, NULL,
     "on SIGTERM, how long in-flight work may take before the engine exits"},
    {"commit_interval_ms", CD_OPT_INT, "1000", 0, 1, 10, 600000, NULL,
     "how often each pipeline commits its offset watermarks"},
    {0},
};

static const cd_option pipeline_options[] = {
    {"name", CD_OPT_STRING, NULL, 1, 1, 1, 200, NULL, "unique pipeline name"},
    {"description", CD_OPT_STRING, NULL, 0, 0, 0, 0, NULL, "free text"},
    {"topics", CD_OPT_STRING_LIST, NULL, 0, 0, 0, 0, NULL, "topics a sink pipeline reads"},
    {"group_id", CD_OPT_STRING, NULL, 0, 0, 0, 0, NULL, "consumer group (connectd.<name>)"},
    {"value_format", CD_OPT_ENUM, "json", 0, 0, 0, 0, "json|raw", "record value format"},
    {"sinks", CD_OPT_JSON, NULL, 0, 0, 0, 0, NULL, "the sinks every record goes to"},
    {"source", CD_OPT_JSON, NULL, 0, 0, 0, 0, NULL, "the source plugin of a source pipeline"},
    {"errors", CD_OPT_JSON, "{}", 0, 0, 0, 0, NULL, "error tolerance and dead-letter topic"},
    {"batch", CD_OPT_JSON, "{}", 0, 0, 0, 0, NULL, "batching per sink and partition"},
    {"retry", CD_OPT_JSON, "{}", 0, 0, 0, 0, NULL, "retry policy for every sink"},
    {"max_inflight_records", CD_OPT_INT, "10000", 0, 1, 1, 10000000, NULL,
     "records held per partition before it is paused"},
    {"max_inflight_bytes", CD_OPT_INT, "67108864", 0, 1, 1024, 4294967296.0, NULL,
     "bytes held per partition before it is paused"},
    {"max_pipeline_inflight_records", CD_OPT_INT, "100000", 0, 1, 1, 100000000, NULL,
     "records held over all partitions before every partition is paused"},
    {"max_pipeline_inflight_bytes", CD_OPT_INT, "268435456", 0, 1, 1024, 68719476736.0, NULL,
     "bytes held over all partitions before every partition is paused"},
    {"pause_after_ms", CD_OPT_INT, "500", 0, 1, 0, 600000, NULL,
     "over a mark this long, partitions are paused in librdkafka (until then intake just waits)"},
    {"kafka", CD_OPT_JSON, "{}", 0, 0, 0, 0, NULL, "librdkafka overrides for this pipeline"},
    {0},
};

static const cd_option errors_options[] = {
    {"tolerance", CD_OPT_ENUM, "none", 0, 0, 0, 0, "none|all",
     "none: a failed record stops the pipeline; all: dead-letter it and go on"},
    {"dead_letter_topic", CD_OPT_STRING, NULL, 0, 1, 1, 249, NULL,
     "topic for records that failed (tolerance all)"},
    {"log", CD_OPT_BOOL, "true", 0, 0, 0, 0, NULL, "log each failed record"},
    {0},
};

static const cd_option batch_options[] = {
    {"max_records", CD_OPT_INT, "500", 0, 1, 1, 100000, NULL, "records per batch"},
    {"max_bytes", CD_OPT_INT, "1048576", 0, 1, 1, 1073741824, NULL, "value+key bytes per batch"},
    {"linger_ms", CD_OPT_INT, "5", 0, 1, 0, 60000, NULL, "wait this long to fill a batch"},
    {0},
};

static const cd_option retry_options[] = {
    {"initial_ms", CD_OPT_INT, "100", 0, 1, 1, 3600000, NULL, "first backoff"},
    {"max_ms", CD_OPT_INT, "30000", 0, 1, 1, 3600000, NULL, "largest backoff"},
    {"max_attempts", CD_OPT_INT, "10", 0, 1, 1, 1000000, NULL, "tries in all"},
    {"max_elapsed_ms", CD_OPT_INT, "300000", 0, 1, 1, 86400000, NULL,
     "give up this long after the first failure"},
    {0},
};

static const char *const sink_engine_keys[] = {"plugin", "name", "when", "retry", NULL};
static const char *const source_engine_keys[] = {"plugin", "name", NULL};

json_t *config_load_json(const char *file, diag *d) {
    json_error_t err;
    json_t *root = json_load_file(file, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        if (err.line > 0)
            diag_add(d, file, NULL, "line %d, column %d: malformed JSON: %s", err.line, err.column,
                     err.text);
        else
            diag_add(d, file, NULL, "%s", err.text);
    }
    return root;
}

/* librdkafka properties: every value a string, number or bool; every name
 * known to librdkafka (checked on a scratch conf, so typos fail validation). */
static json_t *kafka_props(const json_t *in, const char *file, const char *path, diag *d,
                           int *errors) {
    json_t *out = json_object();
    rd_kafka_conf_t *scratch = rd_kafka_conf_new();
    const char *key;
    json_t *v;
    char child[512], buf[64], err[512];
    json_object_foreach((json_t *)in, key, v) {
        diag_path_key(child, sizeof(child), path, key);
        const char *s;
        if (json_is_string(v))
            s = json_string_value(v);
        else if (json_is_integer(v))
            snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v)), s = buf;
        else if (json_is_real(v))
            snprintf(buf, sizeof(buf), "%g", json_real_value(v)), s = buf;
        else if (json_is_boolean(v))
            s = json_is_true(v) ? "true" : "false";
        else {
            diag_add(d, file, child, "expected a string, number or bool");
            (*errors)++;
            continue;
        }
        if (rd_kafka_conf_set(scratch, key, s, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
            /* The message may echo the value: never echo what could be a
             * secret, only the property name. */
            diag_add(d, file, child, "not accepted by librdkafka: %s",
                     strstr(err, "No such configuration property") ? "unknown property"
                                                                   : "invalid value");
            (*errors)++;
            continue;
        }
        json_object_set_new(out, key, json_string(s));
    }
    rd_kafka_conf_destroy(scratch);
    return out;
}

static char *path_join(const char *dir, const char *rel) {
    char *out = NULL;
    if (rel[0] == '/' || !dir || !*dir) return strdup(rel);
    if (strcmp(rel, ".") == 0) return strdup(dir);
    if (asprintf(&out, "%s/%s", dir, rel) < 0) return NULL;
    return out;
}

static char *dir_of(const char *file) {
    char *copy = strdup(file);
    char *d = strdup(dirname(copy));
    free(copy);
    return d;
}

int engine_conf_load(const char *path, diag *d, engine_conf **out) {
    *out = NULL;
    size_t before = d->count;
    json_t *root = config_load_json(path, d);
    if (!root) return 1;
    expand_json(root, path, "", d);
    cd_config *cfg = NULL;
    configmap_apply(engine_options, root, NULL, path, "", d, &cfg);
    int errors = 0;
    json_t *kafka = NULL;
    if (cfg) {
        json_t *k = json_object_get(cfg->values, "kafka");
        if (!json_is_object(k)) {
            diag_add(d, path, "kafka", "expected an object of librdkafka properties");
        } else {
            kafka = kafka_props(k, path, "kafka", d, &errors);
        }
    }
    if (d->count != before) {
        json_decref(kafka);
        configmap_free(cfg);
        json_decref(root);
        return (int)(d->count - before);
    }
    engine_conf *c = calloc(1, sizeof(*c));
    c->file = strdup(path);
    c->dir = dir_of(path);
    c->kafka = kafka;
    c->pipelines_dir = path_join(c->dir, configmap_string(cfg, "pipelines_dir"));
    const char *pp = configmap_string(cfg, "plugin_path");
    if (pp) {
        /* Relative plugin directories are relative to the config file too. */
        char *copy = strdup(pp), *save = NULL, *acc = NULL;
        for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
            char *abs = path_join(c->dir, dir), *next = NULL;
            if (asprintf(&next, "%s%s%s", acc ? acc : "", acc ? ":" : "", abs) < 0) next = NULL;
            free(abs);
            free(acc);
            acc = next;
        }
        free(copy);
        c->plugin_path = acc;
    }
    c->admin_listen = strdup(configmap_string(cfg, "admin_listen"));
    const char *redis = configmap_string(cfg, "redis_url");
    c->redis_url = redis && *redis ? strdup(redis) : NULL;
    log_level_parse(configmap_string(cfg, "log_level"), &c->log_level);
    c->shutdown_grace_ms = configmap_int(cfg, "shutdown_grace_ms");
    c->commit_interval_ms = configmap_int(cfg, "commit_interval_ms");
    configmap_free(cfg);
    json_decref(root);
    *out = c;
    return 0;
}

static void retry_from(const cd_config *cfg, retry_policy *r) {
    r->initial_ms = configmap_int(cfg, "initial_ms");
    r->max_ms = configmap_int(cfg, "max_ms");
    r->max_attempts = configmap_int(cfg, "max_attempts");
    r->max_elapsed_ms = configmap_int(cfg, "max_elapsed_ms");
}

/* Validates a nested object (errors, batch, retry) against its table,
 * starting from `base` values (pipeline-level retry for a sink's override). */
static cd_config *nested(const cd_option *opts, const json_t *v, const json_t *base,
                         const char *file, const char *path, diag *d) {
    cd_config *cfg = NULL;
    if (!v)
        v = json_object();
    else
        json_incref((json_t *)v);
    int merge = json_is_object(v) && json_is_object(base);
    json_t *merged = merge ? json_deep_copy(base) : json_incref((json_t *)v);
    if (merge) json_object_update(merged, (json_t *)v);
    configmap_apply(opts, merged, NULL, file, path, d, &cfg);
    json_decref(merged);
    json_decref((json_t *)v);
    return cfg;
}

static int valid_name(const char *s) {
    if (!*s) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return 0;
    return 1;
}

static void plugin_conf_clear(plugin_conf *pc) {
    free(pc->name);
    configmap_free(pc->cfg);
    json_decref(pc->when);
    memset(pc, 0, sizeof(*pc));
}

/* One sink or source object. */
static int plugin_conf_load(const json_t *obj, cd_plugin_kind kind, const json_t *retry_base,
                            const plugin_registry *r, const char *file, const char *path, diag *d,
                            plugin_conf *out) {
    size_t before = d->count;
    char child[512];
    memset(out, 0, sizeof(*out));
    if (!json_is_object(obj)) {
        diag_add(d, file, path, "expected an object");
        return 1;
    }
    json_t *name = json_object_get(obj, "plugin");
    diag_path_key(child, sizeof(child), path, "plugin");
    if (!name) {
        diag_add(d, file, child, "required option missing");
        return 1;
    }
    if (!json_is_string(name)) {
        diag_add(d, file, child, "expected string");
        return 1;
    }
    const plugin *p = plugin_find(r, json_string_value(name));
    if (!p) {
        diag_add(d, file, child, "unknown plugin \"%s\"", json_string_value(name));
        return 1;
    }
    if (p->desc->kind != kind) {
        diag_add(d, file, child, "plugin \"%s\" is a %s, not a %s", p->desc->name,
                 p->desc->kind == CD_PLUGIN_SINK ? "sink" : "source",
                 kind == CD_PLUGIN_SINK ? "sink" : "source");
        return 1;
    }
    out->plugin = p;
    json_t *inst = json_object_get(obj, "name");
    diag_path_key(child, sizeof(child), path, "name");
    if (inst && (!json_is_string(inst) || !valid_name(json_string_value(inst))))
        diag_add(d, file, child, "expected a name of letters, digits, '.', '-' or '_'");
    out->name = strdup(inst && json_is_string(inst) ? json_string_value(inst) : p->desc->name);
    if (kind == CD_PLUGIN_SINK) {
        json_t *when = json_object_get(obj, "when");
        if (when) {
            diag_path_key(child, sizeof(child), path, "when");
            if (condition_check(when, file, child, d) == 0) out->when = json_incref(when);
        }
        diag_path_key(child, sizeof(child), path, "retry");
        cd_config *rc =
            nested(retry_options, json_object_get(obj, "retry"), retry_base, file, child, d);
        if (rc) retry_from(rc, &out->retry);
        configmap_free(rc);
    }
    configmap_apply(p->desc->options, obj,
                    kind == CD_PLUGIN_SINK ? sink_engine_keys : source_engine_keys, file, path, d,
                    &out->cfg);
    if (d->count != before) {
        plugin_conf_clear(out);
        return (int)(d->count - before);
    }
    return 0;
}

void pipeline_conf_free(pipeline_conf *pc) {
    if (!pc) return;
    free(pc->file);
    free(pc->name);
    free(pc->fingerprint);
    for (size_t i = 0; i < pc->topic_count; i++)
        free(pc->topics[i]);
    free(pc->topics);
    free(pc->group_id);
    for (size_t i = 0; i < pc->sink_count; i++)
        plugin_conf_clear(&pc->sinks[i]);
    free(pc->sinks);
    if (pc->source) {
        plugin_conf_clear(pc->source);
        free(pc->source);
    }
    free(pc->dead_letter_topic);
    json_decref(pc->kafka);
    free(pc);
}

int pipeline_conf_load(const char *file, const plugin_registry *r, diag *d, pipeline_conf **out) {
    *out = NULL;
    size_t before = d->count;
    json_t *root = config_load_json(file, d);
    if (!root) return 1;
    expand_json(root, file, "", d);
    cd_config *cfg = NULL;
    if (d->count == before)
        configmap_apply_partial(pipeline_options, root, NULL, file, "", d, &cfg);
    if (!cfg) {
        json_decref(root);
        return (int)(d->count - before);
    }
    pipeline_conf *pc = calloc(1, sizeof(*pc));
    pc->file = strdup(file);
    pc->name = strdup(configmap_string(cfg, "name") ? configmap_string(cfg, "name") : "");
    if (*pc->name && !valid_name(pc->name))
        diag_add(d, file, "name", "expected letters, digits, '.', '-' or '_'");
    pc->fingerprint = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    const char *vf = configmap_string(cfg, "value_format");
    pc->value_format = vf && strcmp(vf, "raw") == 0 ? CD_VALUE_RAW : CD_VALUE_JSON;
    pc->max_inflight_records = configmap_int(cfg, "max_inflight_records");
    pc->max_inflight_bytes = configmap_int(cfg, "max_inflight_bytes");
    pc->max_pipeline_inflight_records = configmap_int(cfg, "max_pipeline_inflight_records");
    pc->max_pipeline_inflight_bytes = configmap_int(cfg, "max_pipeline_inflight_bytes");
    pc->pause_after_ms = configmap_int(cfg, "pause_after_ms");

    int has_sinks = configmap_is_set(cfg, "sinks"), has_source = configmap_is_set(cfg, "source");
    if (has_sinks == has_source)
        diag_add(d, file, "", "a pipeline has either \"sinks\" (with \"topics\") or \"source\"");

    /* errors, batch, retry */
    cd_config *ec =
        nested(errors_options, json_object_get(cfg->values, "errors"), NULL, file, "errors", d);
    if (ec) {
        pc->tolerance =
            strcmp(configmap_string(ec, "tolerance"), "all") == 0 ? ERRORS_ALL : ERRORS_NONE;
        const char *dlq = configmap_string(ec, "dead_letter_topic");
        pc->dead_letter_topic = dlq ? strdup(dlq) : NULL;
        pc->errors_log = configmap_bool(ec, "log");
        if (pc->dead_letter_topic && pc->tolerance == ERRORS_NONE)
            diag_add(d, file, "errors.dead_letter_topic",
                     "a dead-letter topic needs \"tolerance\": \"all\"");
    }
    configmap_free(ec);
    cd_config *bc =
        nested(batch_options, json_object_get(cfg->values, "batch"), NULL, file, "batch", d);
    if (bc) {
        pc->batch.max_records = configmap_int(bc, "max_records");
        pc->batch.max_bytes = configmap_int(bc, "max_bytes");
        pc->batch.linger_ms = configmap_int(bc, "linger_ms");
    }
    configmap_free(bc);
    json_t *retry_obj = json_object_get(cfg->values, "retry");
    cd_config *rc = nested(retry_options, retry_obj, NULL, file, "retry", d);
    if (rc) retry_from(rc, &pc->retry);
    configmap_free(rc);
    int kerr = 0;
    json_t *k = json_object_get(cfg->values, "kafka");
    if (json_is_object(k))
        pc->kafka = kafka_props(k, file, "kafka", d, &kerr);
    else
        diag_add(d, file, "kafka", "expected an object of librdkafka properties");

    if (has_sinks && !has_source) {
        size_t nt = configmap_list_count(cfg, "topics");
        if (nt == 0) diag_add(d, file, "topics", "a sink pipeline needs at least one topic");
        pc->topics = calloc(nt ? nt : 1, sizeof(char *));
        for (size_t i = 0; i < nt; i++)
            pc->topics[pc->topic_count++] = strdup(configmap_list_item(cfg, "topics", i));
        const char *gid = configmap_string(cfg, "group_id");
        if (gid)
            pc->group_id = strdup(gid);
        else if (asprintf(&pc->group_id, "connectd.%s", pc->name) < 0)
            pc->group_id = NULL;
        json_t *sinks = json_object_get(cfg->values, "sinks");
        if (!json_is_array(sinks) || json_array_size(sinks) == 0) {
            diag_add(d, file, "sinks", "expected a non-empty array of sinks");
        } else if (json_array_size(sinks) > 64) {
            diag_add(d, file, "sinks", "at most 64 sinks per pipeline");
        } else {
            pc->sinks = calloc(json_array_size(sinks), sizeof(plugin_conf));
            size_t i;
            json_t *s;
            char path[64];
            json_array_foreach(sinks, i, s) {
                diag_path_index(path, sizeof(path), "sinks", i);
                if (plugin_conf_load(s, CD_PLUGIN_SINK, retry_obj, r, file, path, d,
                                     &pc->sinks[pc->sink_count]) != 0)
                    continue;
                for (size_t j = 0; j < pc->sink_count; j++) {
                    if (strcmp(pc->sinks[j].name, pc->sinks[pc->sink_count].name) == 0) {
                        char np[80];
                        diag_path_key(np, sizeof(np), path, "name");
                        diag_add(d, file, np, "duplicate sink name \"%s\" (also sinks[%zu])",
                                 pc->sinks[j].name, j);
                    }
                }
                pc->sink_count++;
            }
        }
    } else if (has_source && !has_sinks) {
        if (configmap_is_set(cfg, "topics"))
            diag_add(d, file, "topics", "a source pipeline names its topics in \"source\"");
        pc->source = calloc(1, sizeof(plugin_conf));
        if (plugin_conf_load(json_object_get(cfg->values, "source"), CD_PLUGIN_SOURCE, NULL, r,
                             file, "source", d, pc->source) != 0) {
            free(pc->source);
            pc->source = NULL;
        }
    }
    configmap_free(cfg);
    json_decref(root);
    if (d->count != before) {
        pipeline_conf_free(pc);
        return (int)(d->count - before);
    }
    *out = pc;
    return 0;
}

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int engine_conf_load_pipelines(engine_conf *conf, const plugin_registry *r, diag *d) {
    size_t before = d->count;
    DIR *dp = opendir(conf->pipelines_dir);
    if (!dp) {
        diag_add(d, conf->file, "pipelines_dir", "cannot open %s", conf->pipelines_dir);
        return 1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    char *self = realpath(conf->file, NULL);
    while ((de = readdir(dp))) {
        size_t len = strlen(de->d_name);
        /* Engine configs (connectd*.json) share the directory; skip them. */
        if (de->d_name[0] == '.' || len < 6 || strcmp(de->d_name + len - 5, ".json") != 0 ||
            strncmp(de->d_name, "connectd", 8) == 0)
            continue;
        char *full = path_join(conf->pipelines_dir, de->d_name);
        char *real = realpath(full, NULL);
        int is_self = self && real && strcmp(self, real) == 0;
        free(real);
        if (is_self) {
            free(full);
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = realloc(names, cap * sizeof(*names));
        }
        names[n++] = full;
    }
    free(self);
    closedir(dp);
    if (n) qsort(names, n, sizeof(*names), name_cmp);
    conf->pipelines = calloc(n ? n : 1, sizeof(*conf->pipelines));
    for (size_t i = 0; i < n; i++) {
        pipeline_conf *pc = NULL;
        if (pipeline_conf_load(names[i], r, d, &pc) == 0) {
            for (size_t j = 0; j < conf->pipeline_count; j++) {
                if (strcmp(conf->pipelines[j]->name, pc->name) == 0) {
                    diag_add(d, names[i], "name", "duplicate pipeline name \"%s\" (also in %s)",
                             pc->name, conf->pipelines[j]->file);
                    pipeline_conf_free(pc);
                    pc = NULL;
                    break;
                }
            }
            if (pc) conf->pipelines[conf->pipeline_count++] = pc;
        }
        free(names[i]);
    }
    free(names);
    return (int)(d->count - before);
}

void engine_conf_free(engine_conf *conf) {
    if (!conf) return;
    for (size_t i = 0; i < conf->pipeline_count; i++)
        pipeline_conf_free(conf->pipelines[i]);
    free(conf->pipelines);
    free(conf->file);
    free(conf->dir);
    json_decref(conf->kafka);
    free(conf->pipelines_dir);
    free(conf->plugin_path);
    free(conf->admin_listen);
    free(conf->redis_url);
    free(conf);
}
