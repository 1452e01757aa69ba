/* Plugin loading: a good module loads; bad ones are refused with the reason. */
#include <criterion/criterion.h>

#include "plugin.h"

#define FIXTURE(name) CONNECTD_FIXTURE_DIR "/" name ".so"

Test(plugin, good_module_loads_and_is_found_by_name) {
    plugin_registry r = {0};
    char err[512];
    cr_assert_eq(plugin_registry_load(&r, FIXTURE("good_sink"), err, sizeof(err)), 0, "%s", err);
    const plugin *p = plugin_find(&r, "test-good");
    cr_assert_not_null(p);
    cr_assert_eq(p->desc->kind, CD_PLUGIN_SINK);
    cr_assert_str_eq(p->desc->options[0].name, "target");
    plugin_registry_free(&r);
}

Test(plugin, abi_major_mismatch_is_refused_by_name) {
    plugin_registry r = {0};
    char err[512];
    cr_assert_eq(plugin_registry_load(&r, FIXTURE("abi_mismatch"), err, sizeof(err)), -1);
    cr_assert_str_eq(err,
                     "not binary compatible: built for plugin ABI 2.0, this engine speaks 1.6");
    cr_assert_eq(r.count, 0);
    plugin_registry_free(&r);
}

Test(plugin, module_without_entry_symbol_is_refused) {
    plugin_registry r = {0};
    char err[512];
    cr_assert_eq(plugin_registry_load(&r, FIXTURE("no_entry"), err, sizeof(err)), -1);
    cr_assert_str_eq(err, "no entry symbol connectd_plugin_entry");
    plugin_registry_free(&r);
}

Test(plugin, descriptor_missing_callbacks_is_refused) {
    plugin_registry r = {0};
    char err[512];
    cr_assert_eq(plugin_registry_load(&r, FIXTURE("bad_desc"), err, sizeof(err)), -1);
    cr_assert_str_eq(err,
                     "bad descriptor: sink \"test-bad\" lacks init, start, write, stop or destroy");
    plugin_registry_free(&r);
}

Test(plugin, missing_file_is_refused) {
    plugin_registry r = {0};
    char err[512];
    cr_assert_eq(plugin_registry_load(&r, "/nonexistent/x.so", err, sizeof(err)), -1);
    cr_assert(strncmp(err, "cannot load: ", 13) == 0, "%s", err);
    plugin_registry_free(&r);
}

Test(plugin, discovery_keeps_going_past_refused_modules) {
    plugin_registry r = {0};
    int refused = plugin_registry_discover(&r, "/nonexistent:" CONNECTD_FIXTURE_DIR);
    cr_assert_eq(refused, 3, "abi_mismatch, bad_desc, no_entry refused; got %d", refused);
    cr_assert_eq(r.count, 2, "test-good and test-scripted load");
    cr_assert_not_null(plugin_find(&r, "test-good"));
    cr_assert_not_null(plugin_find(&r, "test-scripted"));
    plugin_registry_free(&r);
}

Test(plugin, struct_size_too_small_is_a_bad_descriptor) {
    cd_plugin_desc d = {CD_ABI_VERSION, 8, "tiny", "1", "", CD_PLUGIN_SINK, NULL, NULL, NULL};
    char err[256];
    cr_assert_eq(plugin_desc_check(&d, err, sizeof(err)), -1);
    cr_assert(strstr(err, "struct_size 8 is smaller than") != NULL, "%s", err);
}

static int minor_init(const cd_host *h, cd_instance *i, const cd_config *c, void **x, char *e,
                      size_t n) {
    return 0;
}
static int minor_start(void *c, char *e, size_t n) {
    return 0;
}
static int minor_write(void *c, cd_batch *b) {
    return 0;
}
static int minor_stop(void *c, cd_done_cb cb, void *o) {
    return 0;
}
static void minor_destroy(void *c) {}

Test(plugin, minor_version_differences_load) {
    static const cd_option none[] = {{0}};
    static const cd_sink_ops ops = {minor_init, minor_start, minor_write,
                                    NULL,       minor_stop,  minor_destroy};
    cd_plugin_desc d = {CD_ABI_VERSION + 7, sizeof(d), "newer-minor", "1", "",
                        CD_PLUGIN_SINK,     none,      &ops,          NULL};
    char err[256];
    cr_assert_eq(plugin_desc_check(&d, err, sizeof(err)), 0, "%s", err);
}
