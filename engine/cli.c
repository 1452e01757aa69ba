/*
 * validate and plugins subcommands.  validate goes one step further than
 * loading: it runs every plugin's init (which by contract does no I/O) so a
 * bad template or option combination is caught before deployment.
 */
#include "cli.h"
#include "config.h"
#include "engine.h"
#include "log.h"
#include "secrets.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static engine_conf *cli_load(const char *path, plugin_registry *r, diag *d) {
    engine_conf *conf = NULL;
    if (engine_conf_load(path, d, &conf) != 0) return NULL;
    log_set_level(conf->log_level < CD_LOG_WARN ? conf->log_level : CD_LOG_WARN);
    char *search = plugin_search_path(conf->plugin_path);
    plugin_registry_discover(r, search);
    free(search);
    return conf;
}

int cli_validate(const char *config_path) {
    diag d = {0};
    plugin_registry r = {0};
    char serr[256];
    if (secrets_install(serr, sizeof(serr)) < 0) fprintf(stderr, "secrets: %s\n", serr);
    engine_conf *conf = cli_load(config_path, &r, &d);
    int perr = conf ? engine_conf_load_pipelines(conf, &r, &d) : 1;
    secrets_uninstall(); /* ${secret:...} only resolves while loading */
    if (conf && perr == 0) {
        uv_loop_t loop;
        uv_loop_init(&loop);
        engine e;
        memset(&e, 0, sizeof(e));
        e.loop = &loop;
        e.conf = conf;
        for (size_t i = 0; i < conf->pipeline_count; i++) {
            engine_try_init(&e, conf->pipelines[i], &d);
        }
        metrics_free(&e.metrics);
        uv_loop_close(&loop);
    }
    int code = 0;
    if (d.count) {
        for (size_t i = 0; i < d.count; i++)
            printf("%s\n", d.lines[i]);
        code = 1;
    } else {
        printf("%s: valid (%zu pipeline(s))\n", config_path, conf->pipeline_count);
        for (size_t i = 0; i < conf->pipeline_count; i++)
            printf("  %s: %s (%s)\n", conf->pipelines[i]->file, conf->pipelines[i]->name,
                   conf->pipelines[i]->source ? "source" : "sink pipeline");
    }
    diag_free(&d);
    engine_conf_free(conf);
    plugin_registry_free(&r);
    return code;
}

static void cli_md_cell(const char *s) {
    for (; s && *s; s++) {
        if (*s == '|')
            fputs("\\|", stdout);
        else
            putchar(*s);
    }
}

int cli_plugins(const char *config_path) {
    diag d = {0};
    plugin_registry r = {0};
    engine_conf *conf = NULL;
    if (config_path) {
        char serr[256];
        if (secrets_install(serr, sizeof(serr)) < 0) fprintf(stderr, "secrets: %s\n", serr);
        conf = cli_load(config_path, &r, &d);
        secrets_uninstall();
        if (!conf) {
            for (size_t i = 0; i < d.count; i++)
                printf("%s\n", d.lines[i]);
            diag_free(&d);
            return 1;
        }
    } else {
        log_set_level(CD_LOG_WARN);
        char *search = plugin_search_path(NULL);
        plugin_registry_discover(&r, search);
        free(search);
    }
    for (const plugin *p = r.head; p; p = p->next) {
        const cd_plugin_desc *pd = p->desc;
        printf("## %s (%s, %s)\n\n%s\n\nModule: %s\n\n", pd->name,
               pd->kind == CD_PLUGIN_SINK ? "sink" : "source", pd->version ? pd->version : "-",
               pd->description ? pd->description : "", p->path);
        printf("| option | type | default | required | description |\n");
        printf("|---|---|---|---|---|\n");
        for (const cd_option *o = pd->options; o && o->name; o++) {
            printf("| %s | %s", o->name, configmap_type_name(o->type));
            if (o->type == CD_OPT_ENUM) {
                printf(" (");
                cli_md_cell(o->enum_values);
                printf(")");
            }
            if (o->has_bounds && o->type == CD_OPT_INT)
                printf(" [%.0f..%.0f]", o->min, o->max);
            else if (o->has_bounds && o->type == CD_OPT_DOUBLE)
                printf(" [%g..%g]", o->min, o->max);
            printf(" | ");
            cli_md_cell(o->default_value ? o->default_value : "");
            printf(" | %s | ", o->required ? "yes" : "no");
            cli_md_cell(o->description);
            printf(" |\n");
        }
        printf("\n");
    }
    if (!r.head) printf("no plugins found\n");
    diag_free(&d);
    engine_conf_free(conf);
    plugin_registry_free(&r);
    return 0;
}
