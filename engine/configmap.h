/*
 * Config maps: validates a JSON object against a plugin's (or the engine's)
 * option table and produces a cd_config with defaults applied.  Errors are
 * "file: path.option: reason" lines: unknown key, wrong type, out of bounds,
 * not one of the allowed values, required option missing.
 */
#ifndef CONNECTD_CONFIGMAP_H
#define CONNECTD_CONFIGMAP_H

#include "diag.h"
#include <connectd/plugin.h>
#include <jansson.h>

struct cd_config {
    json_t *values; /* option name -> validated value (defaults applied) */
    json_t *texts;  /* option name -> compact JSON text, for cfg_json */
};

/* Validates `in` (borrowed) against `opts`.  Keys listed in `skip` (NULL
 * terminated; may be NULL) belong to the caller and are not checked.  On
 * success returns 0 and *out (caller frees with configmap_free); otherwise
 * returns the number of errors added to d and *out is NULL. */
int configmap_apply(const cd_option *opts, const json_t *in, const char *const *skip,
                    const char *file, const char *path, diag *d, cd_config **out);
/* Like configmap_apply, but on errors still returns the options that were
 * valid (and defaults), so a caller can go on validating nested parts and
 * report every error of a file in one pass.  The caller frees *out. */
int configmap_apply_partial(const cd_option *opts, const json_t *in, const char *const *skip,
                            const char *file, const char *path, diag *d, cd_config **out);
void configmap_free(cd_config *cfg);

/* The accessors the host table hands to plugins. */
const char *configmap_string(const cd_config *cfg, const char *name);
int64_t configmap_int(const cd_config *cfg, const char *name);
double configmap_double(const cd_config *cfg, const char *name);
int configmap_bool(const cd_config *cfg, const char *name);
int configmap_is_set(const cd_config *cfg, const char *name);
size_t configmap_list_count(const cd_config *cfg, const char *name);
const char *configmap_list_item(const cd_config *cfg, const char *name, size_t i);
const char *configmap_json(const cd_config *cfg, const char *name);

/* "string", "int", ... */
const char *configmap_type_name(cd_opt_type t);
/* Checks an option table itself (names, types, defaults parse as their
 * type).  Returns 0 or -1 with errbuf filled: a plugin's bad table is a bad
 * descriptor. */
int configmap_check_table(const cd_option *opts, char *errbuf, size_t errlen);

#endif
