/*
 * Configuration string expansion, applied to every string value of the
 * engine config and of each pipeline file when it is loaded:
 *
 *   ${NAME}            environment variable NAME (NAME is [A-Z_][A-Z0-9_]*);
 *                      unset is an error
 *   ${NAME:-default}   NAME, or default when NAME is unset or empty
 *   ${file:PATH}       the file's contents, one trailing newline removed
 *   ${secret:ARN}      resolved by the secrets resolver (AWS Secrets Manager)
 *   $${                a literal "${"
 *
 * Anything else inside ${...} — lower-case names such as ${topic} and JSON
 * pointers such as ${/customerId} — is left untouched: those are record
 * templates, rendered per record by the plugin that owns them.
 */
#ifndef CONNECTD_EXPAND_H
#define CONNECTD_EXPAND_H

#include "diag.h"
#include <jansson.h>

/* Resolves a ${secret:REF} reference; returns a malloc'd value or NULL with
 * errbuf filled.  Registered by the AWS room; without one, secrets fail. */
typedef char *(*expand_secret_fn)(void *opaque, const char *ref, char *errbuf, size_t errlen);
void expand_set_secret_resolver(expand_secret_fn fn, void *opaque);

/* Expands one string.  Returns a malloc'd string (caller frees) or NULL with
 * errbuf filled. */
char *expand_string(const char *in, char *errbuf, size_t errlen);

/* Expands every string value in the tree in place.  Errors go to d as
 * "file: path: reason"; returns the number of errors added. */
int expand_json(json_t *root, const char *file, const char *path, diag *d);

#endif
