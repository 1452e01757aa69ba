/* Configuration string expansion; see expand.h for the grammar. */
#include "expand.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static expand_secret_fn secret_fn;
static void *secret_opaque;

void expand_set_secret_resolver(expand_secret_fn fn, void *opaque) {
    secret_fn = fn;
    secret_opaque = opaque;
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static int sbuf_put(sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int is_env_name(const char *s, size_t n) {
    if (n == 0 || !(isupper((unsigned char)s[0]) || s[0] == '_')) return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isupper((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '_'))
            return 0;
    return 1;
}

static char *read_file_trimmed(const char *path, char *errbuf, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(errbuf, errlen, "cannot read ${file:%s}: %s", path, strerror(errno));
        return NULL;
    }
    sbuf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (sbuf_put(&b, chunk, n) < 0 || b.len > (1u << 20)) {
            snprintf(errbuf, errlen, "${file:%s} is larger than 1 MiB", path);
            fclose(f);
            free(b.p);
            return NULL;
        }
    }
    fclose(f);
    if (!b.p && sbuf_put(&b, "", 0) < 0) return NULL;
    if (b.len && b.p[b.len - 1] == '\n') b.p[--b.len] = '\0';
    if (b.len && b.p[b.len - 1] == '\r') b.p[--b.len] = '\0';
    return b.p;
}

/* Resolves the inside of one ${...}.  Returns 1 with *out malloc'd, 0 when
 * the reference is not ours (leave it as is), -1 on error. */
static int expand_ref(const char *ref, size_t n, char **out, char *errbuf, size_t errlen) {
    char name[256];
    if (n >= 5 && strncmp(ref, "file:", 5) == 0) {
        if (n - 5 >= sizeof(name) || n == 5) {
            snprintf(errbuf, errlen, "${file:...} needs a path shorter than %zu", sizeof(name));
            return -1;
        }
        memcpy(name, ref + 5, n - 5);
        name[n - 5] = '\0';
        *out = read_file_trimmed(name, errbuf, errlen);
        return *out ? 1 : -1;
    }
    if (n >= 7 && strncmp(ref, "secret:", 7) == 0) {
        char *secret_ref = strndup(ref + 7, n - 7);
        if (!secret_ref) return -1;
        if (!secret_fn) {
            snprintf(errbuf, errlen,
                     "${secret:%s}: no secrets resolver is configured in this engine", secret_ref);
            free(secret_ref);
            return -1;
        }
        *out = secret_fn(secret_opaque, secret_ref, errbuf, errlen);
        free(secret_ref);
        return *out ? 1 : -1;
    }
    const char *dflt = NULL;
    size_t name_len = n;
    for (size_t i = 0; i + 1 < n; i++) {
        if (ref[i] == ':' && ref[i + 1] == '-') {
            name_len = i;
            dflt = ref + i + 2;
            break;
        }
    }
    if (!is_env_name(ref, name_len) || name_len >= sizeof(name)) return 0;
    memcpy(name, ref, name_len);
    name[name_len] = '\0';
    const char *v = getenv(name);
    if (dflt) {
        if (!v || !*v) {
            *out = strndup(dflt, n - (size_t)(dflt - ref));
            return *out ? 1 : -1;
        }
    } else if (!v) {
        snprintf(errbuf, errlen, "environment variable %s is not set", name);
        return -1;
    }
    *out = strdup(v);
    return *out ? 1 : -1;
}

char *expand_string(const char *in, char *errbuf, size_t errlen) {
    sbuf b = {0};
    const char *p = in;
    if (sbuf_put(&b, "", 0) < 0) goto oom;
    while (*p) {
        if (p[0] == '$' && p[1] == '$' && p[2] == '{') {
            if (sbuf_put(&b, "${", 2) < 0) goto oom;
            p += 3;
            continue;
        }
        if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p + 2, '}');
            if (!end) {
                snprintf(errbuf, errlen, "unterminated ${ in \"%s\"", in);
                free(b.p);
                return NULL;
            }
            /* The first '}' ends the reference, so "${A:-${B}}" would be
             * A's default "${B" and a stray "}": refused, not guessed. */
            if (memmem(p + 2, (size_t)(end - p - 2), "${", 2)) {
                snprintf(errbuf, errlen,
                         "nested ${...} in \"%s\": a default cannot hold another reference", in);
                free(b.p);
                return NULL;
            }
            char *val = NULL;
            int r = expand_ref(p + 2, (size_t)(end - p - 2), &val, errbuf, errlen);
            if (r < 0) {
                free(b.p);
                return NULL;
            }
            int put =
                r == 0 ? sbuf_put(&b, p, (size_t)(end - p + 1)) : sbuf_put(&b, val, strlen(val));
            free(val);
            if (put < 0) goto oom;
            p = end + 1;
            continue;
        }
        const char *next = strchr(p + 1, '$');
        size_t n = next ? (size_t)(next - p) : strlen(p);
        if (sbuf_put(&b, p, n) < 0) goto oom;
        p += n;
    }
    return b.p;
oom:
    free(b.p);
    snprintf(errbuf, errlen, "out of memory");
    return NULL;
}

int expand_json(json_t *root, const char *file, const char *path, diag *d) {
    int errors = 0;
    char child[512];
    if (json_is_object(root)) {
        const char *key;
        json_t *v;
        json_object_foreach(root, key, v) {
            diag_path_key(child, sizeof(child), path, key);
            errors += expand_json(v, file, child, d);
        }
    } else if (json_is_array(root)) {
        size_t i;
        json_t *v;
        json_array_foreach(root, i, v) {
            diag_path_index(child, sizeof(child), path, i);
            errors += expand_json(v, file, child, d);
        }
    } else if (json_is_string(root)) {
        const char *s = json_string_value(root);
        if (!strstr(s, "${")) return 0;
        char err[512];
        char *out = expand_string(s, err, sizeof(err));
        if (!out) {
            diag_add(d, file, path, "%s", err);
            return 1;
        }
        json_string_set(root, out);
        free(out);
    }
    return errors;
}
