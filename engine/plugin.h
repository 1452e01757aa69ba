/*
 * Plugin loader: discovers *.so modules on the plugin path, loads them with
 * libltdl, and checks each one's descriptor before the engine trusts it.  A
 * module without the entry symbol, built for another ABI major version, or
 * with a bad descriptor is refused with a log line naming the file and the
 * reason; the engine goes on with the modules that loaded.
 */
#ifndef CONNECTD_PLUGIN_LOADER_H
#define CONNECTD_PLUGIN_LOADER_H

#include <connectd/plugin.h>
#include <ltdl.h>

typedef struct plugin {
    char *path;
    lt_dlhandle handle;
    const cd_plugin_desc *desc;
    struct plugin *next;
} plugin;

typedef struct plugin_registry {
    plugin *head;
    size_t count;
    size_t refused; /* modules found but refused */
} plugin_registry;

/* The search path used by default: $CONNECTD_PLUGIN_PATH (colon separated),
 * then `configured` (the engine config's plugin_path, may be NULL), then the
 * build directory and the install directory.  Returns a malloc'd string. */
char *plugin_search_path(const char *configured);

/* Loads every *.so in every directory of `search_path` (colon separated).
 * Returns the number of modules refused. */
int plugin_registry_discover(plugin_registry *r, const char *search_path);

/* Loads one module file.  Returns 0, or -1 with errbuf naming the reason. */
int plugin_registry_load(plugin_registry *r, const char *path, char *errbuf, size_t errlen);

/* Checks a descriptor the way the loader does; 0 or -1 with errbuf. */
int plugin_desc_check(const cd_plugin_desc *d, char *errbuf, size_t errlen);

const plugin *plugin_find(const plugin_registry *r, const char *name);
void plugin_registry_free(plugin_registry *r);

#endif
