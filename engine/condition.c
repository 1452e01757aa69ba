/* Record conditions room; see condition.h. */
#include "condition.h"

#include <string.h>

json_t *json_pointer_get(const json_t *doc, const char *pointer) {
    if (!doc || !pointer) return NULL;
    if (*pointer == '\0') return (json_t *)doc;
    if (*pointer != '/') return NULL;
    const json_t *cur = doc;
    const char *p = pointer + 1;
    char token[256];
    for (;;) {
        size_t n = 0;
        while (*p && *p != '/') {
            if (n + 1 >= sizeof(token)) return NULL;
            if (p[0] == '~' && p[1] == '0') {
                token[n++] = '~';
                p += 2;
            } else if (p[0] == '~' && p[1] == '1') {
                token[n++] = '/';
                p += 2;
            } else {
                token[n++] = *p++;
            }
        }
        token[n] = '\0';
        if (json_is_object(cur)) {
            cur = json_object_get(cur, token);
        } else if (json_is_array(cur)) {
            char *end;
            if (n == 0 || (n > 1 && token[0] == '0')) return NULL;
            unsigned long idx = strtoul(token, &end, 10);
            if (*end) return NULL;
            cur = json_array_get(cur, idx);
        } else {
            return NULL;
        }
        if (!cur) return NULL;
        if (!*p) return (json_t *)cur;
        p++;
    }
}

static const char *const cond_ops[] = {"eq", "ne", "in", "exists", "gt", "gte", "lt", "lte", NULL};

int condition_check(const json_t *cond, const char *file, const char *path, diag *d) {
    char child[512];
    if (!json_is_object(cond)) {
        diag_add(d, file, path, "a condition must be an object");
        return 1;
    }
    json_t *v;
    if ((v = json_object_get(cond, "all")) || (v = json_object_get(cond, "any"))) {
        const char *which = json_object_get(cond, "all") ? "all" : "any";
        diag_path_key(child, sizeof(child), path, which);
        if (json_object_size(cond) != 1 || !json_is_array(v) || json_array_size(v) == 0) {
            diag_add(d, file, child, "expected a non-empty array of conditions, alone");
            return 1;
        }
        int errors = 0;
        size_t i;
        json_t *c;
        char item[512];
        json_array_foreach(v, i, c) {
            diag_path_index(item, sizeof(item), child, i);
            errors += condition_check(c, file, item, d);
        }
        return errors;
    }
    if ((v = json_object_get(cond, "not"))) {
        diag_path_key(child, sizeof(child), path, "not");
        if (json_object_size(cond) != 1) {
            diag_add(d, file, child, "\"not\" takes one condition, alone");
            return 1;
        }
        return condition_check(v, file, child, d);
    }
    json_t *ptr = json_object_get(cond, "path");
    if (!json_is_string(ptr) || (json_string_value(ptr)[0] != '/' && json_string_value(ptr)[0])) {
        diag_path_key(child, sizeof(child), path, "path");
        diag_add(d, file, child, "expected a JSON pointer string such as \"/data/status\"");
        return 1;
    }
    const char *key;
    int ops = 0;
    json_object_foreach((json_t *)cond, key, v) {
        if (strcmp(key, "path") == 0) continue;
        diag_path_key(child, sizeof(child), path, key);
        int known = 0;
        for (int i = 0; cond_ops[i]; i++)
            known |= strcmp(key, cond_ops[i]) == 0;
        if (!known) {
            diag_add(d, file, child, "unknown operator (use eq, ne, in, exists, gt, gte, lt, lte)");
            return 1;
        }
        if (strcmp(key, "in") == 0 && !json_is_array(v)) {
            diag_add(d, file, child, "expected an array");
            return 1;
        }
        if (strcmp(key, "exists") == 0 && !json_is_boolean(v)) {
            diag_add(d, file, child, "expected true or false");
            return 1;
        }
        if (key[0] == 'g' || key[0] == 'l') {
            if (!json_is_number(v)) {
                diag_add(d, file, child, "expected a number");
                return 1;
            }
        }
        ops++;
    }
    if (ops != 1) {
        diag_add(d, file, path, "expected exactly one operator beside \"path\"");
        return 1;
    }
    return 0;
}

int condition_eval(const json_t *cond, const json_t *doc) {
    json_t *v;
    if ((v = json_object_get(cond, "all"))) {
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c) if (!condition_eval(c, doc)) return 0;
        return 1;
    }
    if ((v = json_object_get(cond, "any"))) {
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c) if (condition_eval(c, doc)) return 1;
        return 0;
    }
    if ((v = json_object_get(cond, "not"))) return !condition_eval(v, doc);
    json_t *at = json_pointer_get(doc, json_string_value(json_object_get(cond, "path")));
    if ((v = json_object_get(cond, "exists"))) return (at != NULL) == json_is_true(v);
    if ((v = json_object_get(cond, "eq"))) return at && json_equal(at, v);
    if ((v = json_object_get(cond, "ne"))) return !(at && json_equal(at, v));
    if ((v = json_object_get(cond, "in"))) {
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c) if (at && json_equal(at, c)) return 1;
        return 0;
    }
    if (!json_is_number(at)) return 0;
    double a = json_number_value(at);
    if ((v = json_object_get(cond, "gt"))) return a > json_number_value(v);
    if ((v = json_object_get(cond, "gte"))) return a >= json_number_value(v);
    if ((v = json_object_get(cond, "lt"))) return a < json_number_value(v);
    if ((v = json_object_get(cond, "lte"))) return a <= json_number_value(v);
    return 0;
}
