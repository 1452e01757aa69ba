/* The config map: defaults, types, bounds, enums, unknown keys, required options. */
#include <criterion/criterion.h>

#include "configmap.h"

static const cd_option opts[] = {
    {"path", CD_OPT_STRING, NULL, 1, 0, 0, 0, NULL, "required string"},
    {"level", CD_OPT_INT, "3", 0, 1, 1, 9, NULL, "bounded int"},
    {"ratio", CD_OPT_DOUBLE, "0.5", 0, 1, 0, 1, NULL, "bounded number"},
    {"mode", CD_OPT_ENUM, "never", 0, 0, 0, 0, "never|batch", "enum"},
    {"on", CD_OPT_BOOL, "true", 0, 0, 0, 0, NULL, "bool"},
    {"tags", CD_OPT_STRING_LIST, "[\"a\"]", 0, 0, 0, 0, NULL, "list"},
    {"doc", CD_OPT_JSON, NULL, 0, 0, 0, 0, NULL, "json"},
    {0},
};
static const char *const skip[] = {"plugin", NULL};

static int apply(const char *json, diag *d, cd_config **cfg) {
    json_t *in = json_loads(json, 0, NULL);
    cr_assert_not_null(in, "test JSON must parse: %s", json);
    int r = configmap_apply(opts, in, skip, "p.json", "sinks[0]", d, cfg);
    json_decref(in);
    return r;
}

Test(configmap, defaults_are_applied) {
    diag d = {0};
    cd_config *cfg;
    cr_assert_eq(apply("{\"plugin\":\"x\",\"path\":\"/tmp/a\"}", &d, &cfg), 0);
    cr_assert_str_eq(configmap_string(cfg, "path"), "/tmp/a");
    cr_assert_eq(configmap_int(cfg, "level"), 3);
    cr_assert_float_eq(configmap_double(cfg, "ratio"), 0.5, 1e-9);
    cr_assert_str_eq(configmap_string(cfg, "mode"), "never");
    cr_assert_eq(configmap_bool(cfg, "on"), 1);
    cr_assert_eq(configmap_list_count(cfg, "tags"), 1);
    cr_assert_str_eq(configmap_list_item(cfg, "tags", 0), "a");
    cr_assert_eq(configmap_is_set(cfg, "doc"), 0);
    cr_assert_null(configmap_json(cfg, "doc"));
    configmap_free(cfg);
}

Test(configmap, strings_from_the_environment_convert_to_numbers_and_bools) {
    diag d = {0};
    cd_config *cfg;
    cr_assert_eq(
        apply("{\"path\":\"a\",\"level\":\"7\",\"on\":\"false\",\"ratio\":\"0.25\"}", &d, &cfg), 0);
    cr_assert_eq(configmap_int(cfg, "level"), 7);
    cr_assert_eq(configmap_bool(cfg, "on"), 0);
    cr_assert_float_eq(configmap_double(cfg, "ratio"), 0.25, 1e-9);
    configmap_free(cfg);
}

Test(configmap, json_option_keeps_compact_text) {
    diag d = {0};
    cd_config *cfg;
    cr_assert_eq(apply("{\"path\":\"a\",\"doc\":{\"type\": \"X\", \"n\": [1, 2]}}", &d, &cfg), 0);
    cr_assert_str_eq(configmap_json(cfg, "doc"), "{\"type\":\"X\",\"n\":[1,2]}");
    configmap_free(cfg);
}

Test(configmap, every_error_class_reads_file_path_reason) {
    diag d = {0};
    cd_config *cfg;
    int n = apply("{\"level\":12,\"ratio\":\"abc\",\"mode\":\"sometimes\",\"on\":1,"
                  "\"tags\":[1],\"typo\":true}",
                  &d, &cfg);
    cr_assert_null(cfg);
    cr_assert_eq(n, 7, "got %d errors", n);
    const char *want[] = {
        "p.json: sinks[0].level: 12 is out of bounds [1, 9]",
        "p.json: sinks[0].ratio: expected number",
        "p.json: sinks[0].mode: \"sometimes\" is not one of never|batch",
        "p.json: sinks[0].on: expected bool",
        "p.json: sinks[0].tags: item 0 must be a string",
        "p.json: sinks[0].typo: unknown option",
        "p.json: sinks[0].path: required option missing",
    };
    for (size_t i = 0; i < 7; i++) {
        int found = 0;
        for (size_t j = 0; j < d.count; j++)
            found |= strcmp(d.lines[j], want[i]) == 0;
        cr_assert(found, "missing error line: %s", want[i]);
    }
    diag_free(&d);
}

Test(configmap, wrong_type_for_string) {
    diag d = {0};
    cd_config *cfg;
    cr_assert_eq(apply("{\"path\":5}", &d, &cfg), 1);
    cr_assert_str_eq(d.lines[0], "p.json: sinks[0].path: expected string");
    diag_free(&d);
}

Test(configmap, not_an_object) {
    diag d = {0};
    cd_config *cfg;
    json_t *in = json_string("x");
    cr_assert_eq(configmap_apply(opts, in, NULL, "p.json", "sinks[0]", &d, &cfg), 1);
    cr_assert_str_eq(d.lines[0], "p.json: sinks[0]: expected an object");
    json_decref(in);
    diag_free(&d);
}

Test(configmap, check_table_rejects_bad_defaults) {
    static const cd_option bad[] = {
        {"n", CD_OPT_INT, "ten", 0, 0, 0, 0, NULL, "x"},
        {0},
    };
    static const cd_option bad_enum[] = {
        {"e", CD_OPT_ENUM, NULL, 0, 0, 0, 0, NULL, "x"},
        {0},
    };
    char err[256];
    cr_assert_eq(configmap_check_table(opts, err, sizeof(err)), 0);
    cr_assert_eq(configmap_check_table(bad, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "option n: default \"ten\" is not a valid int");
    cr_assert_eq(configmap_check_table(bad_enum, err, sizeof(err)), -1);
}
