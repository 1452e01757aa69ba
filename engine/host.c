/*
 * The host table: the engine's side of the plugin ABI.  Every function a
 * plugin may call is reached through engine_host; instances carry the
 * pipeline and sink names used for log prefixes and metric labels.
 */
#include "engine.h"
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
        metrics_label(l2, sizeof(l2), "sink", inst->name);
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
    return kafka_producer_send(p, topic, RD_KAFKA_PARTITION_UA, key, key_len, value, value_len, h,
                               cb, opaque, errbuf, errlen);
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
};
