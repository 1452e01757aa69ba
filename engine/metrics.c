/* Metrics room; see metrics.h.  Everything runs on the loop thread. */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cd_metric *metrics_register(metrics_registry *r, cd_metric_type type, const char *name,
                            const char *help, const char *labels) {
    cd_metric *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->name = strdup(name);
    m->help = strdup(help ? help : "");
    m->labels = strdup(labels ? labels : "");
    m->type = type;
    /* Keep metrics of one name together: insert after the last of its name. */
    cd_metric **pos = &r->head, **after = NULL;
    for (; *pos; pos = &(*pos)->next)
        if (strcmp((*pos)->name, name) == 0) after = &(*pos)->next;
    pos = after ? after : pos;
    m->next = *pos;
    *pos = m;
    return m;
}

static void metrics_destroy(cd_metric *m) {
    free(m->name);
    free(m->help);
    free(m->labels);
    free(m);
}

void metrics_unregister(metrics_registry *r, cd_metric *m) {
    for (cd_metric **pos = &r->head; *pos; pos = &(*pos)->next) {
        if (*pos == m) {
            *pos = m->next;
            metrics_destroy(m);
            return;
        }
    }
}

void metrics_add(cd_metric *m, double delta) {
    if (m) m->value += delta;
}

void metrics_set(cd_metric *m, double value) {
    if (m) m->value = value;
}

char *metrics_render(const metrics_registry *r) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    const char *last = NULL;
    for (const cd_metric *m = r->head; m; m = m->next) {
        if (!last || strcmp(last, m->name) != 0) {
            fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
                    m->type == CD_METRIC_COUNTER ? "counter" : "gauge");
            last = m->name;
        }
        if (*m->labels)
            fprintf(f, "%s{%s} %.17g\n", m->name, m->labels, m->value);
        else
            fprintf(f, "%s %.17g\n", m->name, m->value);
    }
    fclose(f);
    return buf;
}

void metrics_free(metrics_registry *r) {
    cd_metric *m = r->head;
    while (m) {
        cd_metric *next = m->next;
        metrics_destroy(m);
        m = next;
    }
    r->head = NULL;
}

void metrics_label(char *out, size_t outlen, const char *key, const char *value) {
    size_t n = (size_t)snprintf(out, outlen, "%s=\"", key);
    for (const char *p = value; *p && n + 3 < outlen; p++) {
        if (*p == '\\' || *p == '"') {
            out[n++] = '\\';
            out[n++] = *p;
        } else if (*p == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *p;
        }
    }
    if (n + 1 < outlen) out[n++] = '"';
    out[n < outlen ? n : outlen - 1] = '\0';
}
