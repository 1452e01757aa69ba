/*
 * Metrics registry: counters and gauges with Prometheus labels, registered
 * by the engine and by plugins (through the host table), rendered as
 * Prometheus text for GET /metrics.
 */
#ifndef CONNECTD_METRICS_H
#define CONNECTD_METRICS_H

#include <connectd/plugin.h>
#include <stddef.h>

struct cd_metric {
    char *name;
    char *help;
    char *labels; /* rendered: pipeline="x",sink="y" (may be empty) */
    cd_metric_type type;
    double value;
    struct cd_metric *next;
};

typedef struct metrics_registry {
    cd_metric *head;
} metrics_registry;

/* Registers a metric; labels is the rendered label set (copied).  The
 * registry owns the metric until metrics_unregister or metrics_free. */
cd_metric *metrics_register(metrics_registry *r, cd_metric_type type, const char *name,
                            const char *help, const char *labels);
void metrics_unregister(metrics_registry *r, cd_metric *m);
void metrics_add(cd_metric *m, double delta);
void metrics_set(cd_metric *m, double value);
/* Renders the Prometheus text exposition format; returns a malloc'd string. */
char *metrics_render(const metrics_registry *r);
void metrics_free(metrics_registry *r);

/* Writes `key="value"` with the value escaped as Prometheus wants. */
void metrics_label(char *out, size_t outlen, const char *key, const char *value);

#endif
