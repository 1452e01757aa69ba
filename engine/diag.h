/*
 * Validation diagnostics: a list of "file: json.path: reason" lines, the form
 * every configuration error takes (connectd validate prints them, a reload
 * that fails logs them).
 */
#ifndef CONNECTD_DIAG_H
#define CONNECTD_DIAG_H

#include <connectd/plugin.h>
#include <stddef.h>

typedef struct diag {
    char **lines;
    size_t count;
    size_t cap;
} diag;

/* Appends "file: path: reason".  path may be NULL or "" (then "file: reason"). */
void diag_add(diag *d, const char *file, const char *path, const char *fmt, ...) CD_PRINTF(4, 5);
void diag_free(diag *d);
/* Logs every line at ERROR level. */
void diag_log(const diag *d);

/* Builds a child path: "sinks" + 1 -> "sinks[1]", "sinks[1]" + "path" -> "sinks[1].path". */
void diag_path_key(char *out, size_t outlen, const char *base, const char *key);
void diag_path_index(char *out, size_t outlen, const char *base, size_t index);

#endif
