/* bench-producelat: the reference for bench.py's fixed-rate HTTP ingest
 * rows.  A bare librdkafka producer, configured as connectd's own
 * (linger.ms=1, enable.idempotence=true so acks=all), produces one event at a
 * fixed rate, and each event's latency runs from when it was due to its
 * delivery report, as bench-fixedrate times the engine from due time to its
 * 202.  The difference between the two rows is what HTTP and the engine add
 * to what the broker and librdkafka cost by themselves.
 *
 *   bench-producelat BOOTSTRAP TOPIC RATE SECONDS EVENTS_FILE
 *
 * EVENTS_FILE holds one JSON event per line; each is keyed by its
 * "customerId" string, as source-http keys them.  Sends happen on the main
 * thread at their due times (clock_nanosleep, no spinning); a second thread
 * serves delivery reports, so a report is timed when it arrives rather than
 * when the sender next looks.  Prints, like bench-fixedrate: COUNT ev202 N
 * (delivered) / ev503 (failed) / late_sends (sent > 1 ms after due) and
 * LAT p50|p90|p99|p99.9|max|mean MICROSECONDS.  Exit status 0 unless it
 * could not run at all or a delivery failed. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t t0, interval_ns;
static uint64_t *lat;
static atomic_ulong delivered, failed;
static atomic_int done;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    uint64_t i = (uint64_t)(uintptr_t)m->_private;
    uint64_t due = t0 + i * interval_ns;
    uint64_t t = now_ns();
    if (m->err) {
        fprintf(stderr, "delivery failed: %s\n", rd_kafka_err2str(m->err));
        atomic_fetch_add(&failed, 1);
        return;
    }
    lat[i] = t > due ? t - due : 0;
    atomic_fetch_add(&delivered, 1);
}

static void *serve_reports(void *arg) {
    rd_kafka_t *rk = arg;
    while (!atomic_load(&done))
        rd_kafka_poll(rk, 50);
    return NULL;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    char *val;
    size_t len;
    const char *key;
    size_t key_len;
} event;

static int load_events(const char *path, event **out, size_t *count) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = 0, cap = 0;
    event *ev = NULL;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) > 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (!len) continue;
        const char *k = strstr(line, "\"customerId\":\"");
        if (!k) {
            fprintf(stderr, "%s: an event without a customerId string: %s\n", path, line);
            free(line);
            fclose(f);
            return -1;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            ev = realloc(ev, cap * sizeof *ev);
        }
        ev[n].val = strdup(line);
        ev[n].len = (size_t)len;
        ev[n].key = ev[n].val + (k - line) + 14;
        const char *q = strchr(ev[n].key, '"');
        ev[n].key_len = q ? (size_t)(q - ev[n].key) : 0;
        n++;
    }
    free(line);
    fclose(f);
    *out = ev;
    *count = n;
    return n ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s BOOTSTRAP TOPIC RATE SECONDS EVENTS_FILE\n", argv[0]);
        return 2;
    }
    double rate = atof(argv[3]), secs = atof(argv[4]);
    if (rate <= 0 || secs <= 0) {
        fprintf(stderr, "RATE and SECONDS must be positive\n");
        return 2;
    }
    event *ev;
    size_t nev;
    if (load_events(argv[5], &ev, &nev) < 0) {
        fprintf(stderr, "cannot read events from %s\n", argv[5]);
        return 2;
    }
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *props[][2] = {{"bootstrap.servers", argv[1]},
                              {"linger.ms", "1"},
                              {"enable.idempotence", "true"},
                              {"client.id", "bench-producelat"}};
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++) {
        if (rd_kafka_conf_set(conf, props[i][0], props[i][1], err, sizeof err) !=
            RD_KAFKA_CONF_OK) {
            fprintf(stderr, "%s: %s\n", props[i][0], err);
            return 2;
        }
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "rd_kafka_new: %s\n", err);
        return 2;
    }
    uint64_t total = (uint64_t)(rate * secs);
    lat = calloc(total, sizeof *lat);
    interval_ns = (uint64_t)(1e9 / rate);

    /* Warm-up, unmeasured: metadata, the idempotent producer's id, a
     * connection to the partition leaders (as the engine's 20 warm-up POSTs). */
    for (size_t i = 0; i < 20; i++) {
        const event *e = &ev[i % nev];
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(argv[2]), RD_KAFKA_V_KEY(e->key, e->key_len),
                          RD_KAFKA_V_VALUE(e->val, e->len),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_OPAQUE((void *)(uintptr_t)0), RD_KAFKA_V_END);
    }
    t0 = now_ns() + 1000000000ull; /* warm-up reports land in lat[0], overwritten below */
    rd_kafka_flush(rk, 30000);
    if (atomic_load(&failed)) return 1;
    atomic_store(&delivered, 0);

    pthread_t th;
    pthread_create(&th, NULL, serve_reports, rk);
    t0 = now_ns() + 1000000; /* first event due in 1 ms */
    uint64_t late = 0;
    for (uint64_t i = 0; i < total; i++) {
        uint64_t due = t0 + i * interval_ns;
        struct timespec ts = {(time_t)(due / 1000000000u), (long)(due % 1000000000u)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
        }
        if (now_ns() - due > 1000000) late++;
        const event *e = &ev[i % nev];
        rd_kafka_resp_err_t r = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(argv[2]), RD_KAFKA_V_KEY(e->key, e->key_len),
            RD_KAFKA_V_VALUE(e->val, e->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_OPAQUE((void *)(uintptr_t)i), RD_KAFKA_V_END);
        if (r) {
            fprintf(stderr, "produce: %s\n", rd_kafka_err2str(r));
            atomic_fetch_add(&failed, 1);
        }
    }
    /* The report thread keeps serving while flush waits. */
    rd_kafka_flush(rk, 30000);
    atomic_store(&done, 1);
    pthread_join(th, NULL);
    uint64_t ok = atomic_load(&delivered), bad = atomic_load(&failed);
    printf("COUNT ev202 %llu\nCOUNT ev503 %llu\nCOUNT late_sends %llu\nCOUNT requests %llu\n",
           (unsigned long long)ok, (unsigned long long)bad, (unsigned long long)late,
           (unsigned long long)total);
    if (ok + bad != total) {
        fprintf(stderr, "%llu of %llu events reported\n", (unsigned long long)(ok + bad),
                (unsigned long long)total);
        return 1;
    }
    qsort(lat, total, sizeof *lat, cmp_u64);
    double sum = 0;
    for (uint64_t i = 0; i < total; i++)
        sum += (double)lat[i];
    const char *names[] = {"p50", "p90", "p99", "p99.9"};
    const double ps[] = {50, 90, 99, 99.9};
    for (int i = 0; i < 4; i++) {
        size_t idx = (size_t)(ps[i] / 100.0 * (double)total);
        if (idx >= total) idx = total - 1;
        printf("LAT %s %llu\n", names[i], (unsigned long long)(lat[idx] / 1000));
    }
    printf("LAT max %llu\n", (unsigned long long)(lat[total - 1] / 1000));
    printf("LAT mean %.1f\n", sum / (double)total / 1000.0);
    rd_kafka_destroy(rk);
    return bad ? 1 : 0;
}
