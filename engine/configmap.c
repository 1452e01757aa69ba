/*
 * Config map room: one table-driven validator for every option of every
 * plugin, so no plugin parses its own JSON and every error reads the same.
 * Numbers and booleans may also be given as strings ("${BATCH:-500}"), since
 * environment expansion only produces strings.
 */
#include "configmap.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *configmap_type_name(cd_opt_type t) {
    switch (t) {
    case CD_OPT_STRING:
        return "string";
    case CD_OPT_INT:
        return "int";
    case CD_OPT_DOUBLE:
        return "number";
    case CD_OPT_BOOL:
        return "bool";
    case CD_OPT_ENUM:
        return "enum";
    case CD_OPT_STRING_LIST:
        return "string list";
    case CD_OPT_JSON:
        return "json";
    }
    return "?";
}

static int enum_contains(const char *values, const char *s) {
    size_t n = strlen(s);
    const char *p = values;
    while (p && *p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0) return 1;
        p = bar ? bar + 1 : NULL;
    }
    return 0;
}

static int parse_int_text(const char *s, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

static int parse_double_text(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

/* Converts `v` to the option's type; returns a new reference or NULL with
 * err filled. */
static json_t *coerce(const cd_option *o, const json_t *v, char *err, size_t errlen) {
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    switch (o->type) {
    case CD_OPT_STRING:
        if (!s) break;
        if (o->has_bounds && (strlen(s) < o->min || strlen(s) > o->max)) {
            snprintf(err, errlen, "length %zu is out of bounds [%g, %g]", strlen(s), o->min,
                     o->max);
            return NULL;
        }
        return json_string(s);
    case CD_OPT_ENUM:
        if (!s) break;
        if (!enum_contains(o->enum_values, s)) {
            snprintf(err, errlen, "\"%s\" is not one of %s", s, o->enum_values);
            return NULL;
        }
        return json_string(s);
    case CD_OPT_INT: {
        long long iv;
        if (json_is_integer(v))
            iv = json_integer_value(v);
        else if (!(s && parse_int_text(s, &iv) == 0))
            break;
        if (o->has_bounds && ((double)iv < o->min || (double)iv > o->max)) {
            snprintf(err, errlen, "%lld is out of bounds [%.0f, %.0f]", iv, o->min, o->max);
            return NULL;
        }
        return json_integer(iv);
    }
    case CD_OPT_DOUBLE: {
        double dv;
        if (json_is_number(v))
            dv = json_number_value(v);
        else if (!(s && parse_double_text(s, &dv) == 0))
            break;
        if (o->has_bounds && (dv < o->min || dv > o->max)) {
            snprintf(err, errlen, "%g is out of bounds [%g, %g]", dv, o->min, o->max);
            return NULL;
        }
        return json_real(dv);
    }
    case CD_OPT_BOOL:
        if (json_is_boolean(v)) return json_boolean(json_is_true(v));
        if (s && (strcmp(s, "true") == 0 || strcmp(s, "false") == 0))
            return json_boolean(strcmp(s, "true") == 0);
        break;
    case CD_OPT_STRING_LIST: {
        if (!json_is_array(v)) break;
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item) {
            if (!json_is_string(item)) {
                snprintf(err, errlen, "item %zu must be a string", i);
                return NULL;
            }
        }
        return json_deep_copy(v);
    }
    case CD_OPT_JSON:
        return json_deep_copy(v);
    }
    snprintf(err, errlen, "expected %s", configmap_type_name(o->type));
    return NULL;
}

static json_t *default_value(const cd_option *o) {
    if (!o->default_value) return NULL;
    if (o->type == CD_OPT_JSON || o->type == CD_OPT_STRING_LIST)
        return json_loads(o->default_value, JSON_DECODE_ANY, NULL);
    json_t *text = json_string(o->default_value);
    char err[256];
    json_t *v = coerce(o, text, err, sizeof(err));
    json_decref(text);
    return v;
}

int configmap_check_table(const cd_option *opts, char *errbuf, size_t errlen) {
    for (const cd_option *o = opts; o && o->name; o++) {
        if (o->type < CD_OPT_STRING || o->type > CD_OPT_JSON) {
            snprintf(errbuf, errlen, "option %s has unknown type %d", o->name, (int)o->type);
            return -1;
        }
        if (o->type == CD_OPT_ENUM && (!o->enum_values || !*o->enum_values)) {
            snprintf(errbuf, errlen, "enum option %s lists no values", o->name);
            return -1;
        }
        if (o->default_value) {
            json_t *v = default_value(o);
            if (!v) {
                snprintf(errbuf, errlen, "option %s: default \"%s\" is not a valid %s", o->name,
                         o->default_value, configmap_type_name(o->type));
                return -1;
            }
            json_decref(v);
        }
    }
    return 0;
}

static int in_list(const char *const *list, const char *key) {
    for (; list && *list; list++)
        if (strcmp(*list, key) == 0) return 1;
    return 0;
}

static const cd_option *find_option(const cd_option *opts, const char *name) {
    for (const cd_option *o = opts; o && o->name; o++)
        if (strcmp(o->name, name) == 0) return o;
    return NULL;
}

static int configmap_apply_impl(const cd_option *opts, const json_t *in, const char *const *skip,
                                const char *file, const char *path, diag *d, cd_config **out,
                                int partial) {
    int errors = 0;
    char child[512], err[512];
    *out = NULL;
    if (!json_is_object(in)) {
        diag_add(d, file, path, "expected an object");
        return 1;
    }
    json_t *values = json_object();
    json_t *invalid = json_object(); /* present but wrong: not also "missing" */
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)in, key, v) {
        if (in_list(skip, key)) continue;
        diag_path_key(child, sizeof(child), path, key);
        const cd_option *o = find_option(opts, key);
        if (!o) {
            diag_add(d, file, child, "unknown option");
            errors++;
            continue;
        }
        json_t *cv = coerce(o, v, err, sizeof(err));
        if (!cv) {
            diag_add(d, file, child, "%s", err);
            errors++;
            json_object_set_new(invalid, key, json_true());
            continue;
        }
        json_object_set_new(values, key, cv);
    }
    for (const cd_option *o = opts; o && o->name; o++) {
        if (json_object_get(values, o->name) || json_object_get(invalid, o->name)) continue;
        if (o->required) {
            diag_path_key(child, sizeof(child), path, o->name);
            diag_add(d, file, child, "required option missing");
            errors++;
            continue;
        }
        json_t *dv = default_value(o);
        if (dv) json_object_set_new(values, o->name, dv);
    }
    json_decref(invalid);
    if (errors && !partial) {
        json_decref(values);
        return errors;
    }
    cd_config *cfg = calloc(1, sizeof(*cfg));
    cfg->values = values;
    cfg->texts = json_object();
    json_object_foreach(values, key, v) {
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (text) {
            json_object_set_new(cfg->texts, key, json_string(text));
            free(text);
        }
    }
    *out = cfg;
    return errors;
}

int configmap_apply(const cd_option *opts, const json_t *in, const char *const *skip,
                    const char *file, const char *path, diag *d, cd_config **out) {
    return configmap_apply_impl(opts, in, skip, file, path, d, out, 0);
}

int configmap_apply_partial(const cd_option *opts, const json_t *in, const char *const *skip,
                            const char *file, const char *path, diag *d, cd_config **out) {
    return configmap_apply_impl(opts, in, skip, file, path, d, out, 1);
}

void configmap_free(cd_config *cfg) {
    if (!cfg) return;
    json_decref(cfg->values);
    json_decref(cfg->texts);
    free(cfg);
}

static json_t *get(const cd_config *cfg, const char *name) {
    return cfg ? json_object_get(cfg->values, name) : NULL;
}

const char *configmap_string(const cd_config *cfg, const char *name) {
    return json_string_value(get(cfg, name));
}
int64_t configmap_int(const cd_config *cfg, const char *name) {
    return json_integer_value(get(cfg, name));
}
double configmap_double(const cd_config *cfg, const char *name) {
    return json_number_value(get(cfg, name));
}
int configmap_bool(const cd_config *cfg, const char *name) {
    return json_is_true(get(cfg, name));
}
int configmap_is_set(const cd_config *cfg, const char *name) {
    return get(cfg, name) != NULL;
}
size_t configmap_list_count(const cd_config *cfg, const char *name) {
    return json_array_size(get(cfg, name));
}
const char *configmap_list_item(const cd_config *cfg, const char *name, size_t i) {
    return json_string_value(json_array_get(get(cfg, name), i));
}
const char *configmap_json(const cd_config *cfg, const char *name) {
    return cfg ? json_string_value(json_object_get(cfg->texts, name)) : NULL;
}
