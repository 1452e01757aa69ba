/*
 * Plugin loader room.  Modeled on nginx's refusal of modules "not binary
 * compatible" and on the Redis module API's single entry point: the loader
 * reads abi_version and struct_size first and nothing else until both are
 * acceptable.
 */
#include "plugin.h"
#include "configmap.h"
#include "log.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The smallest descriptor of ABI major 1 the engine can read. */
#define PLUGIN_DESC_MIN_SIZE (offsetof(cd_plugin_desc, source) + sizeof(void *))

static int ltdl_refs;

static void plugin_ltdl_ref(void) {
    if (ltdl_refs++ == 0) lt_dlinit();
}

static void plugin_ltdl_unref(void) {
    if (ltdl_refs > 0 && --ltdl_refs == 0) lt_dlexit();
}

char *plugin_search_path(const char *configured) {
    const char *env = getenv("CONNECTD_PLUGIN_PATH");
    char *out = NULL;
    if (asprintf(&out, "%s%s%s%s%s:%s", env ? env : "", env && *env ? ":" : "",
                 configured ? configured : "", configured && *configured ? ":" : "",
                 CONNECTD_BUILD_PLUGIN_DIR, CONNECTD_INSTALL_PLUGIN_DIR) < 0)
        return NULL;
    return out;
}

int plugin_desc_check(const cd_plugin_desc *d, char *errbuf, size_t errlen) {
    if (!d) {
        snprintf(errbuf, errlen, "entry point returned no descriptor");
        return -1;
    }
    if (CD_ABI_MAJOR(d->abi_version) != CD_ABI_VERSION_MAJOR) {
        snprintf(errbuf, errlen,
                 "not binary compatible: built for plugin ABI %u.%u, this engine speaks %u.%u",
                 CD_ABI_MAJOR(d->abi_version), d->abi_version & 0xffff, CD_ABI_VERSION_MAJOR,
                 CD_ABI_VERSION_MINOR);
        return -1;
    }
    if (d->struct_size < PLUGIN_DESC_MIN_SIZE) {
        snprintf(errbuf, errlen, "bad descriptor: struct_size %u is smaller than %zu",
                 d->struct_size, (size_t)PLUGIN_DESC_MIN_SIZE);
        return -1;
    }
    if (!d->name || !*d->name) {
        snprintf(errbuf, errlen, "bad descriptor: no name");
        return -1;
    }
    for (const char *p = d->name; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_')) {
            snprintf(errbuf, errlen, "bad descriptor: name \"%s\" must be [a-z0-9_-]", d->name);
            return -1;
        }
    }
    if (d->kind == CD_PLUGIN_SINK) {
        const cd_sink_ops *s = d->sink;
        if (!s || !s->init || !s->start || !s->write || !s->stop || !s->destroy) {
            snprintf(errbuf, errlen,
                     "bad descriptor: sink \"%s\" lacks init, start, write, stop or destroy",
                     d->name);
            return -1;
        }
    } else if (d->kind == CD_PLUGIN_SOURCE) {
        const cd_source_ops *s = d->source;
        if (!s || !s->init || !s->start || !s->stop || !s->destroy) {
            snprintf(errbuf, errlen,
                     "bad descriptor: source \"%s\" lacks init, start, stop or destroy", d->name);
            return -1;
        }
    } else {
        snprintf(errbuf, errlen, "bad descriptor: unknown kind %d", (int)d->kind);
        return -1;
    }
    char err[256];
    if (configmap_check_table(d->options, err, sizeof(err)) < 0) {
        snprintf(errbuf, errlen, "bad descriptor: %s", err);
        return -1;
    }
    return 0;
}

const plugin *plugin_find(const plugin_registry *r, const char *name) {
    for (const plugin *p = r->head; p; p = p->next)
        if (strcmp(p->desc->name, name) == 0) return p;
    return NULL;
}

int plugin_registry_load(plugin_registry *r, const char *path, char *errbuf, size_t errlen) {
    plugin_ltdl_ref();
    lt_dlhandle h = lt_dlopen(path);
    if (!h) {
        snprintf(errbuf, errlen, "cannot load: %s", lt_dlerror());
        plugin_ltdl_unref();
        return -1;
    }
    union {
        void *obj;
        const cd_plugin_desc *(*fn)(void);
    } entry;
    entry.obj = lt_dlsym(h, CD_PLUGIN_ENTRY_SYMBOL);
    if (!entry.obj) {
        snprintf(errbuf, errlen, "no entry symbol %s", CD_PLUGIN_ENTRY_SYMBOL);
        goto refuse;
    }
    const cd_plugin_desc *d = entry.fn();
    if (plugin_desc_check(d, errbuf, errlen) < 0) goto refuse;
    const plugin *dup = plugin_find(r, d->name);
    if (dup) {
        snprintf(errbuf, errlen, "plugin \"%s\" is already loaded from %s", d->name, dup->path);
        goto refuse;
    }
    plugin *p = calloc(1, sizeof(*p));
    p->path = strdup(path);
    p->handle = h;
    p->desc = d;
    /* Keep discovery order: the first directory on the path wins. */
    plugin **tail = &r->head;
    while (*tail)
        tail = &(*tail)->next;
    *tail = p;
    r->count++;
    return 0;
refuse:
    lt_dlclose(h);
    plugin_ltdl_unref();
    return -1;
}

static int plugin_name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int plugin_discover_dir(plugin_registry *r, const char *dir) {
    DIR *dp = opendir(dir);
    if (!dp) return 0;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len < 4 || strcmp(de->d_name + len - 3, ".so") != 0) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            names = realloc(names, cap * sizeof(*names));
        }
        names[n++] = strdup(de->d_name);
    }
    closedir(dp);
    if (n) qsort(names, n, sizeof(*names), plugin_name_cmp);
    int refused = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096], err[512];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (plugin_registry_load(r, path, err, sizeof(err)) < 0) {
            /* A duplicate of an earlier directory's plugin is expected (build
             * and install dirs); only a real refusal is worth a warning. */
            if (strstr(err, "is already loaded from"))
                LOG_DEBUG("plugin %s: %s", path, err);
            else {
                LOG_WARN("plugin %s refused: %s", path, err);
                refused++;
            }
        } else {
            LOG_DEBUG("plugin %s loaded", path);
        }
        free(names[i]);
    }
    free(names);
    return refused;
}

int plugin_registry_discover(plugin_registry *r, const char *search_path) {
    char *copy = strdup(search_path ? search_path : "");
    char *save = NULL;
    int refused = 0;
    for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save))
        refused += plugin_discover_dir(r, dir);
    free(copy);
    r->refused += (size_t)refused;
    return refused;
}

void plugin_registry_free(plugin_registry *r) {
    plugin *p = r->head;
    while (p) {
        plugin *next = p->next;
        lt_dlclose(p->handle);
        plugin_ltdl_unref();
        free(p->path);
        free(p);
        p = next;
    }
    memset(r, 0, sizeof(*r));
}
