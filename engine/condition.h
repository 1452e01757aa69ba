/*
 * Record conditions (`when` on a sink): a small predicate language over the
 * record's JSON value, checked when the pipeline loads and evaluated per
 * record.  Forms:
 *   {"path": "/json/pointer", "eq": V}      equal (also "ne")
 *   {"path": P, "in": [V, ...]}             one of
 *   {"path": P, "exists": true|false}
 *   {"path": P, "gt"|"gte"|"lt"|"lte": N}   numeric comparisons
 *   {"all": [C, ...]}  {"any": [C, ...]}  {"not": C}
 */
#ifndef CONNECTD_CONDITION_H
#define CONNECTD_CONDITION_H

#include "diag.h"
#include <jansson.h>

/* Validates a condition; returns the number of errors added. */
int condition_check(const json_t *cond, const char *file, const char *path, diag *d);
/* 1 when doc satisfies cond, 0 otherwise (doc NULL: nothing matches but
 * "exists": false and negations thereof). */
int condition_eval(const json_t *cond, const json_t *doc);

/* RFC 6901 JSON pointer lookup; "" is the document itself.  Returns a
 * borrowed reference or NULL. */
json_t *json_pointer_get(const json_t *doc, const char *pointer);

#endif
