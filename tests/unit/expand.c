/* ${...} expansion in configuration strings. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "expand.h"

static char err[512];

Test(expand, environment_variables_and_defaults) {
    setenv("CD_TEST_HOST", "broker-1", 1);
    unsetenv("CD_TEST_UNSET");
    setenv("CD_TEST_EMPTY", "", 1);
    char *s = expand_string("${CD_TEST_HOST}:9092", err, sizeof(err));
    cr_assert_str_eq(s, "broker-1:9092");
    free(s);
    s = expand_string("${CD_TEST_UNSET:-localhost}:${CD_TEST_EMPTY:-1}", err, sizeof(err));
    cr_assert_str_eq(s, "localhost:1");
    free(s);
    s = expand_string("${CD_TEST_HOST:-x}", err, sizeof(err));
    cr_assert_str_eq(s, "broker-1");
    free(s);
}

Test(expand, unset_variable_is_an_error_naming_it) {
    unsetenv("CD_TEST_MISSING");
    char *s = expand_string("a${CD_TEST_MISSING}b", err, sizeof(err));
    cr_assert_null(s);
    cr_assert_str_eq(err, "environment variable CD_TEST_MISSING is not set");
}

Test(expand, record_templates_are_left_alone) {
    char *s = expand_string("out/${topic}/${/customerId}-${partition}.ndjson", err, sizeof(err));
    cr_assert_str_eq(s, "out/${topic}/${/customerId}-${partition}.ndjson");
    free(s);
}

Test(expand, nested_references_are_refused_not_guessed) {
    setenv("CD_TEST_NEST", "v", 1);
    unsetenv("CD_TEST_NEST_MISSING");
    const char *cases[] = {"${CD_TEST_NEST_MISSING:-${CD_TEST_NEST}}", "${CD_TEST_NEST:-${X}}",
                           "x${/a:-${/b}}y"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = 0;
        char *s = expand_string(cases[i], err, sizeof(err));
        cr_assert_null(s, "%s expanded to %s", cases[i], s ? s : "");
        cr_assert(strstr(err, "nested ${...}") != NULL, "%s", err);
    }
    /* Side by side is fine. */
    char *s = expand_string("${CD_TEST_NEST}${CD_TEST_NEST_MISSING:-d}", err, sizeof(err));
    cr_assert_str_eq(s, "vd");
    free(s);
}

Test(expand, escaped_dollar) {
    char *s = expand_string("$${NOT_EXPANDED}", err, sizeof(err));
    cr_assert_str_eq(s, "${NOT_EXPANDED}");
    free(s);
}

Test(expand, file_reference_drops_one_trailing_newline) {
    char path[] = "/tmp/connectd-expand-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("s3cr3t\n", f);
    fclose(f);
    char in[128];
    snprintf(in, sizeof(in), "pw=${file:%s}", path);
    char *s = expand_string(in, err, sizeof(err));
    cr_assert_str_eq(s, "pw=s3cr3t");
    free(s);
    unlink(path);
    s = expand_string(in, err, sizeof(err));
    cr_assert_null(s);
    cr_assert(strstr(err, "cannot read ${file:") != NULL, "%s", err);
}

Test(expand, unterminated_reference) {
    cr_assert_null(expand_string("x${OOPS", err, sizeof(err)));
    cr_assert(strstr(err, "unterminated") != NULL);
}

Test(expand, secret_without_resolver_fails_clearly) {
    cr_assert_null(expand_string("${secret:arn:aws:secretsmanager:x}", err, sizeof(err)));
    cr_assert(strstr(err, "no secrets resolver") != NULL, "%s", err);
}

static char *fake_secret(void *opaque, const char *ref, char *e, size_t n) {
    return strcmp(ref, "arn:one") == 0 ? strdup("v1") : (snprintf(e, n, "nope"), NULL);
}

Test(expand, secret_goes_through_the_resolver) {
    expand_set_secret_resolver(fake_secret, NULL);
    char *s = expand_string("${secret:arn:one}", err, sizeof(err));
    cr_assert_str_eq(s, "v1");
    free(s);
    cr_assert_null(expand_string("${secret:arn:two}", err, sizeof(err)));
    cr_assert_str_eq(err, "nope");
    expand_set_secret_resolver(NULL, NULL);
}

Test(expand, json_tree_errors_carry_the_path) {
    unsetenv("CD_TEST_MISSING");
    json_t *root = json_pack("{s:{s:[s,s]}}", "kafka", "list", "ok", "${CD_TEST_MISSING}");
    diag d = {0};
    cr_assert_eq(expand_json(root, "f.json", "", &d), 1);
    cr_assert_str_eq(d.lines[0],
                     "f.json: kafka.list[1]: environment variable CD_TEST_MISSING is not set");
    diag_free(&d);
    json_decref(root);
}
