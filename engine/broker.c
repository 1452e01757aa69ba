/*
 * `connectd broker`: librdkafka's mock cluster in its own process, a
 * zero-dependency Kafka-protocol cluster for trying connectd without a JVM.
 * It is not Kafka: no SASL or TLS, a few MiB kept per partition, slow
 * rebalances.  Tests that matter run against Apache Kafka.
 */
#include "cli.h"
#include "log.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_broker(int argc, char **argv) {
    int brokers = 1, partitions = 3;
    const char *bootstrap_file = NULL, *topics = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--brokers") == 0 && v) {
            brokers = atoi(v);
            i++;
        } else if (strcmp(a, "--partitions") == 0 && v) {
            partitions = atoi(v);
            i++;
        } else if (strcmp(a, "--topics") == 0 && v) {
            topics = v;
            i++;
        } else if (strcmp(a, "--bootstrap-file") == 0 && v) {
            bootstrap_file = v;
            i++;
        } else {
            fprintf(stderr,
                    "usage: connectd broker [--brokers N] [--partitions N] [--topics a,b,...] "
                    "[--bootstrap-file PATH]\n");
            return 2;
        }
    }
    if (brokers < 1 || brokers > 16 || partitions < 1 || partitions > 1000) {
        fprintf(stderr, "connectd broker: --brokers must be 1..16 and --partitions 1..1000\n");
        return 2;
    }
    /* Block the stop signals before librdkafka starts its threads, so only
     * sigwait below receives them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "connectd broker: %s\n", err);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "connectd broker: could not start the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    if (topics) {
        char *copy = strdup(topics), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            rd_kafka_resp_err_t e =
                rd_kafka_mock_topic_create(mc, t, partitions, brokers < 3 ? brokers : 3);
            if (e) fprintf(stderr, "connectd broker: topic %s: %s\n", t, rd_kafka_err2str(e));
        }
        free(copy);
    }
    const char *bs = rd_kafka_mock_cluster_bootstraps(mc);
    if (bootstrap_file) {
        FILE *f = fopen(bootstrap_file, "w");
        if (!f || fprintf(f, "%s\n", bs) < 0 || fclose(f) != 0) {
            fprintf(stderr, "connectd broker: cannot write %s: %s\n", bootstrap_file,
                    strerror(errno));
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return 1;
        }
    }
    printf("%s\n", bs);
    fflush(stdout);
    fprintf(stderr,
            "connectd broker: %d broker(s) at %s (librdkafka mock cluster: no SASL/TLS, about "
            "5 MiB kept per partition; SIGTERM stops it)\n",
            brokers, bs);
    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "connectd broker: %s, stopping\n", strsignal(sig));
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
