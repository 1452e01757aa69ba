/* The host table as plugins see it: templates through the ABI. */
#include <criterion/criterion.h>
#include <string.h>

#include "engine.h"

Test(host, templates_compile_and_render_through_the_abi) {
    const cd_host *h = &engine_host;
    cr_assert(CD_HOST_HAS(h, template_compile) && CD_HOST_HAS(h, buf_free));
    cd_template *t = NULL;
    char err[256];
    cr_assert_eq(h->template_compile("{\"id\":\"${/customerId}\",\"data\":\"${/data}\","
                                     "\"where\":\"${topic}/${partition}@${offset}\"}",
                                     &t, err, sizeof(err)),
                 0, "%s", err);
    cr_assert(h->template_uses_value(t));
    const char *value = "{\"customerId\":\"c-1\",\"data\":{\"status\":\"VERIFIED\",\"n\":[1,2]}}";
    cd_record rec = {.topic = "kyc-verified",
                     .partition = 2,
                     .offset = 41,
                     .timestamp_ms = 1700000000000,
                     .value = value,
                     .value_len = strlen(value),
                     .value_format = CD_VALUE_JSON};
    cd_buf out = {0};
    cr_assert_eq(h->template_render(t, &rec, 0, &out, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(out.data, "{\"id\":\"c-1\",\"data\":{\"status\":\"VERIFIED\",\"n\":[1,2]},"
                               "\"where\":\"kyc-verified/2@41\"}");
    h->template_free(t);

    cr_assert_eq(
        h->template_compile("\"out/${topic}/${/customerId}.ndjson\"", &t, err, sizeof(err)), 0);
    out.len = 0;
    cr_assert_eq(h->template_render(t, &rec, 1, &out, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(out.data, "out/kyc-verified/c-1.ndjson");
    h->template_free(t);

    cr_assert_eq(h->template_compile("\"${/missing/field}\"", &t, err, sizeof(err)), 0);
    cr_assert_eq(h->template_render(t, &rec, 0, &out, err, sizeof(err)), CD_ERR_INVALID);
    cr_assert_str_eq(err, "template: /missing/field: no such field");
    h->template_free(t);

    cr_assert_eq(h->template_compile("\"${nope}\"", &t, err, sizeof(err)), CD_ERR_INVALID);
    cr_assert_str_eq(err, "unknown template variable ${nope}");
    h->buf_free(&out);
    cr_assert_null(out.data);
}
