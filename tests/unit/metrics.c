/* Metrics registry and its Prometheus text. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "metrics.h"

Test(metrics, renders_prometheus_text_grouped_by_name) {
    metrics_registry r = {0};
    cd_metric *a = metrics_register(&r, CD_METRIC_COUNTER, "connectd_records_in_total", "in",
                                    "pipeline=\"a\"");
    cd_metric *g = metrics_register(&r, CD_METRIC_GAUGE, "connectd_lag", "lag", "");
    cd_metric *b = metrics_register(&r, CD_METRIC_COUNTER, "connectd_records_in_total", "in",
                                    "pipeline=\"b\"");
    metrics_add(a, 3);
    metrics_add(a, 2);
    metrics_add(b, 1);
    metrics_set(g, 42);
    char *text = metrics_render(&r);
    cr_assert_str_eq(text, "# HELP connectd_records_in_total in\n"
                           "# TYPE connectd_records_in_total counter\n"
                           "connectd_records_in_total{pipeline=\"a\"} 5\n"
                           "connectd_records_in_total{pipeline=\"b\"} 1\n"
                           "# HELP connectd_lag lag\n"
                           "# TYPE connectd_lag gauge\n"
                           "connectd_lag 42\n");
    free(text);
    metrics_unregister(&r, a);
    text = metrics_render(&r);
    cr_assert(strstr(text, "pipeline=\"a\"") == NULL);
    free(text);
    metrics_free(&r);
}

Test(metrics, label_values_are_escaped) {
    char out[128];
    metrics_label(out, sizeof(out), "sink", "a\"b\\c\nd");
    cr_assert_str_eq(out, "sink=\"a\\\"b\\\\c\\nd\"");
}
