/*
 * connectd: a Kafka Connect-style pipeline engine.
 *   connectd run -c pipelines/connectd.json
 *   connectd validate -c FILE
 *   connectd plugins [-c FILE]
 *   connectd broker [--brokers N] [--partitions N] [--topics a,b] [--bootstrap-file PATH]
 *   connectd --version
 */
#include "cli.h"
#include "engine.h"

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

static int usage(FILE *f) {
    fprintf(f, "usage: connectd run -c CONFIG\n"
               "       connectd validate -c CONFIG\n"
               "       connectd plugins [-c CONFIG]\n"
               "       connectd broker [--brokers N] [--partitions N] [--topics a,b,...] "
               "[--bootstrap-file PATH]\n"
               "       connectd --version\n");
    return f == stderr ? 2 : 0;
}

static const char *config_arg(int argc, char **argv) {
    for (int i = 2; i + 1 < argc; i++)
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) return argv[i + 1];
    return NULL;
}

/* Every WebSocket client, HTTP connection and broker connection is a file
 * descriptor: the soft limit (often 1024) goes up to the hard one (as Go's
 * runtime and nginx do), capped so select()-era code never sees a huge
 * value.  Returns the soft limit in force. */
static rlim_t raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 1048576 ? 1048576 : rl.rlim_max;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

int main(int argc, char **argv) {
    /* A peer that closes a socket we still write to must be an EPIPE on
     * that write (handled by its owner), not the end of the process. */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) return usage(stderr);
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("connectd %s (plugin ABI %d.%d, librdkafka %s, libuv %s)\n", CONNECTD_VERSION,
               CD_ABI_VERSION_MAJOR, CD_ABI_VERSION_MINOR, rd_kafka_version_str(),
               uv_version_string());
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0)
        return usage(stdout);
    if (strcmp(cmd, "broker") == 0) return cli_broker(argc - 2, argv + 2);
    if (strcmp(cmd, "plugins") == 0) return cli_plugins(config_arg(argc, argv));
    const char *config = config_arg(argc, argv);
    if (strcmp(cmd, "run") == 0 || strcmp(cmd, "validate") == 0) {
        if (!config) {
            fprintf(stderr, "connectd %s: -c CONFIG is required\n", cmd);
            return 2;
        }
        if (strcmp(cmd, "run") != 0) return cli_validate(config);
        raise_fd_limit();
        return engine_run_main(config);
    }
    fprintf(stderr, "connectd: unknown command \"%s\"\n", cmd);
    return usage(stderr);
}
