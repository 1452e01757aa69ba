/* ${secret:...} resolver: the paths that need no Secrets Manager (the
 * integration test drives moto's). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expand.h"
#include "secrets.h"

static char err[1024];

static void setup(void) {
    setenv("AWS_ACCESS_KEY_ID", "testing", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "testing", 1);
    unsetenv("AWS_SESSION_TOKEN");
    unsetenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    unsetenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    unsetenv("AWS_ENDPOINT_URL");
    /* Nothing listens on port 1: refused at once. */
    setenv("AWS_ENDPOINT_URL_SECRETSMANAGER", "http://127.0.0.1:1/", 1);
    setenv("AWS_REGION", "eu-west-1", 1);
    cr_assert_eq(secrets_install(err, sizeof(err)), 0);
}

static void teardown(void) {
    secrets_uninstall();
}

TestSuite(secrets, .init = setup, .fini = teardown);

Test(secrets, malformed_references) {
    cr_assert_null(expand_string("${secret:#k}", err, sizeof(err)));
    cr_assert_str_eq(err, "${secret:#k}: needs a secret ARN (or name)");
    cr_assert_null(
        expand_string("${secret:arn:aws:secretsmanager:eu-west-1:1:secret:x#}", err, sizeof(err)));
    cr_assert_str_eq(err, "${secret:arn:aws:secretsmanager:eu-west-1:1:secret:x#}: empty JSON key "
                          "after '#'");
    cr_assert_null(
        expand_string("${secret:arn:aws:secretsmanager:EU/1:1:secret:x}", err, sizeof(err)));
    cr_assert(strstr(err, "region field is not a region name"), "%s", err);
}

Test(secrets, unreachable_endpoint_names_the_arn_and_url) {
    const char *ref = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf#password";
    char in[256];
    snprintf(in, sizeof(in), "x${secret:%s}", ref);
    cr_assert_null(expand_string(in, err, sizeof(err)));
    char want[256];
    snprintf(want, sizeof(want),
             "${secret:%s}: cannot reach Secrets Manager at http://127.0.0.1:1/", ref);
    cr_assert(strncmp(err, want, strlen(want)) == 0, "%s", err);
    /* Remembered for the rest of the load: same answer, no second request. */
    char again[1024];
    cr_assert_null(expand_string(in, again, sizeof(again)));
    cr_assert_str_eq(again, err);
}

Test(secrets, region_from_environment_for_a_plain_name) {
    unsetenv("AWS_REGION");
    unsetenv("AWS_DEFAULT_REGION");
    cr_assert_null(expand_string("${secret:my-secret}", err, sizeof(err)));
    cr_assert_str_eq(err, "${secret:my-secret}: no region: not in the ARN, and AWS_REGION / "
                          "AWS_DEFAULT_REGION are not set");
}

Test(secrets, no_credentials_is_a_clear_error) {
    unsetenv("AWS_ACCESS_KEY_ID");
    cr_assert_null(expand_string("${secret:s}", err, sizeof(err)));
    cr_assert(strstr(err, "${secret:s}: no AWS credentials") == err, "%s", err);
}

Test(secrets, uninstalled_resolver_refuses) {
    secrets_uninstall();
    cr_assert_null(expand_string("${secret:s}", err, sizeof(err)));
    cr_assert(strstr(err, "no secrets resolver"), "%s", err);
}
