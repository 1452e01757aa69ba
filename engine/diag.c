/* Diagnostics list; see diag.h. */
#include "diag.h"
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void diag_add(diag *d, const char *file, const char *path, const char *fmt, ...) {
    char reason[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    char *line = NULL;
    int n = (path && *path) ? asprintf(&line, "%s: %s: %s", file, path, reason)
                            : asprintf(&line, "%s: %s", file, reason);
    if (n < 0) return;
    if (d->count == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        char **lines = realloc(d->lines, cap * sizeof(*lines));
        if (!lines) {
            free(line);
            return;
        }
        d->lines = lines;
        d->cap = cap;
    }
    d->lines[d->count++] = line;
}

void diag_free(diag *d) {
    for (size_t i = 0; i < d->count; i++)
        free(d->lines[i]);
    free(d->lines);
    memset(d, 0, sizeof(*d));
}

void diag_log(const diag *d) {
    for (size_t i = 0; i < d->count; i++)
        LOG_ERROR("%s", d->lines[i]);
}

void diag_path_key(char *out, size_t outlen, const char *base, const char *key) {
    if (base && *base)
        snprintf(out, outlen, "%s.%s", base, key);
    else
        snprintf(out, outlen, "%s", key);
}

void diag_path_index(char *out, size_t outlen, const char *base, size_t index) {
    snprintf(out, outlen, "%s[%zu]", base ? base : "", index);
}
