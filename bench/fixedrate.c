/* bench-fixedrate: an open-loop HTTP load generator for bench.py's HTTP
 * ingest scenarios.  Request i is due at start + i / rate, whatever happened
 * to the requests before it; its latency runs from when it was DUE (not from
 * when it was sent) to the last byte of its answer, so queueing in the client
 * (every connection busy) counts against the server, as it would for real
 * clients.  wrk's closed loop cannot show this: it only sends when an answer
 * came back.
 *
 *   bench-fixedrate HOST PORT PATH RATE SECONDS CONNECTIONS EVENTS_FILE
 *
 * Each connection is keep-alive and carries one request at a time (no
 * pipelining); free connections are used in turn (first in, first out).  EVENTS_FILE holds one JSON
 * event per line, posted in turn as application/json.  Prints, like bench/ingest.lua: COUNT s202 N
 * / s503 / s4xx / sother / ev202 / ev503 / ev400 / requests / duration_us / late_sends (requests
 * sent > 1 ms after due) / errors_* LAT p50|p90|p99|p99.9|max|mean MICROSECONDS Exit status 0
 * unless it could not run at all.
 *
 * FIXEDRATE_TRACE=FILE writes "t0 MS" (CLOCK_MONOTONIC) and then one line
 * "DUE_MS LATENCY_MS" per request answered more than 5 ms after it was due,
 * DUE_MS counted from t0, to line stalls up with a GC log or a trace. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    int busy;
    int in_idle;
    uint64_t due_ns;
    char buf[65536];
    size_t len;
} conn_t;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Idle connections, first in first out, so that every connection is used in
 * turn (none sits idle long enough for the server's header timeout). */
static int *idle_q;
static int idle_head, nidle, idle_cap;

static void push_idle(conn_t *conns, int i) {
    if (conns[i].in_idle || conns[i].fd < 0) return;
    conns[i].in_idle = 1;
    idle_q[(idle_head + nidle) % idle_cap] = i;
    nidle++;
}

static int pop_idle(conn_t *conns) {
    while (nidle > 0) {
        int i = idle_q[idle_head];
        idle_head = (idle_head + 1) % idle_cap;
        nidle--;
        conns[i].in_idle = 0;
        if (conns[i].fd >= 0) return i;
    }
    return -1;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int open_conn(const char *host, int port) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* A complete answer in c->buf?  Returns its length and status, or 0. */
static size_t answer_len(conn_t *c, int *status) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = (size_t)(end - c->buf) + 4;
    long clen = 0;
    for (char *p = c->buf; p < end; p++) {
        if ((p == c->buf || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0) {
            clen = strtol(p + 15, NULL, 10);
            break;
        }
    }
    if (c->len < head + (size_t)clen) return 0;
    *status = (c->len > 12) ? atoi(c->buf + 9) : 0;
    return head + (size_t)clen;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT PATH RATE SECONDS CONNECTIONS EVENTS_FILE\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *path = argv[3];
    int port = atoi(argv[2]);
    double rate = atof(argv[4]), secs = atof(argv[5]);
    int nconn = atoi(argv[6]);
    signal(SIGPIPE, SIG_IGN);

    /* Requests, built once. */
    FILE *f = fopen(argv[7], "r");
    if (!f) {
        perror(argv[7]);
        return 2;
    }
    size_t nreq = 0, cap = 0;
    char **reqs = NULL;
    size_t *reqlen = NULL;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t ll;
    while ((ll = getline(&line, &lcap, f)) > 0) {
        while (ll > 0 && (line[ll - 1] == '\n' || line[ll - 1] == '\r'))
            line[--ll] = 0;
        if (!ll) continue;
        if (nreq == cap) {
            cap = cap ? cap * 2 : 1024;
            reqs = realloc(reqs, cap * sizeof *reqs);
            reqlen = realloc(reqlen, cap * sizeof *reqlen);
        }
        size_t sz = (size_t)ll + strlen(path) + strlen(host) + 200;
        reqs[nreq] = malloc(sz);
        reqlen[nreq] =
            (size_t)snprintf(reqs[nreq], sz,
                             "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                             "Content-Length: %zd\r\n\r\n%s",
                             path, host, port, ll, line);
        nreq++;
    }
    fclose(f);
    if (!nreq) {
        fprintf(stderr, "no events in %s\n", argv[7]);
        return 2;
    }

    uint64_t total = (uint64_t)(rate * secs);
    uint64_t *lat = calloc(total ? total : 1, sizeof *lat);
    conn_t *conns = calloc((size_t)nconn, sizeof *conns);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < nconn; i++) {
        conns[i].fd = open_conn(host, port);
        if (conns[i].fd < 0) {
            perror("connect");
            return 2;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
    }
    idle_q = malloc((size_t)nconn * sizeof *idle_q);
    idle_cap = nconn;
    for (int i = 0; i < nconn; i++)
        push_idle(conns, i);

    uint64_t s202 = 0, s503 = 0, s4xx = 0, sother = 0, nlat = 0, late = 0;
    uint64_t err_read = 0, err_write = 0, err_timeout = 0, closed = 0, unsolicited = 0;
    uint64_t sent = 0, answered = 0;
    double interval = 1e9 / rate;
    FILE *trace = getenv("FIXEDRATE_TRACE") ? fopen(getenv("FIXEDRATE_TRACE"), "w") : NULL;
    uint64_t t0 = now_ns() + 1000000; /* first request due in 1 ms */
    uint64_t deadline = t0 + (uint64_t)(secs * 1e9) + 15000000000ull; /* answers: +15 s */
    struct epoll_event evs[256];
    if (trace) fprintf(trace, "t0 %.3f\n", (double)t0 / 1e6);

    while (answered + err_read + err_write < total) {
        uint64_t now = now_ns();
        if (now > deadline) {
            err_timeout = total - answered - err_read - err_write;
            break;
        }
        /* Send every request that is due, while a connection is free. */
        while (sent < total && nidle > 0) {
            uint64_t due = t0 + (uint64_t)((double)sent * interval);
            if (due > now) break;
            int ci = pop_idle(conns);
            if (ci < 0) break;
            conn_t *c = &conns[ci];
            const char *r = reqs[sent % nreq];
            size_t rl = reqlen[sent % nreq];
            ssize_t w = write(c->fd, r, rl);
            if (w != (ssize_t)rl) {
                err_write++;
                sent++;
                continue; /* the connection's close shows up as a read of 0 */
            }
            if (now - due > 1000000) late++;
            c->busy = 1;
            c->due_ns = due;
            c->len = 0;
            sent++;
        }
        /* Sleep until the next request is due (or an answer arrives). */
        struct timespec to = {0, 0};
        if (sent < total && nidle > 0) {
            uint64_t due = t0 + (uint64_t)((double)sent * interval);
            now = now_ns();
            uint64_t d = due > now ? due - now : 0;
            to.tv_sec = (time_t)(d / 1000000000u);
            to.tv_nsec = (long)(d % 1000000000u);
        } else {
            to.tv_sec = 0;
            to.tv_nsec = 100000000; /* all busy (or all sent): wait for answers */
        }
        int n = epoll_pwait2(ep, evs, 256, &to, NULL);
        if (n < 0 && errno != EINTR) {
            perror("epoll_pwait2");
            return 2;
        }
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            conn_t *c = &conns[i];
            ssize_t rd = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
            if (rd <= 0) {
                if (rd < 0 && errno == EAGAIN) continue;
                closed++;
                if (c->busy) err_read++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = open_conn(host, port);
                c->busy = 0;
                c->len = 0;
                if (c->fd >= 0) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
                    c->in_idle = 0;
                    push_idle(conns, i);
                }
                continue;
            }
            c->len += (size_t)rd;
            int status = 0;
            size_t alen = answer_len(c, &status);
            if (!alen) continue;
            uint64_t t = now_ns();
            if (!c->busy) { /* e.g. a 408 before the connection closes */
                unsolicited++;
                c->len = 0;
                continue;
            }
            {
                lat[nlat++] = t - c->due_ns;
                if (trace && t - c->due_ns > 5000000)
                    fprintf(trace, "%.3f %.2f\n", (double)(c->due_ns - t0) / 1e6,
                            (double)(t - c->due_ns) / 1e6);
                answered++;
                if (status == 202)
                    s202++;
                else if (status == 503)
                    s503++;
                else if (status >= 400 && status < 500)
                    s4xx++;
                else
                    sother++;
            }
            c->busy = 0;
            c->len = 0;
            push_idle(conns, i);
        }
    }
    uint64_t dur = now_ns() - t0;
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    double sum = 0;
    for (uint64_t i = 0; i < nlat; i++)
        sum += (double)lat[i];
    printf("COUNT s202 %llu\nCOUNT s503 %llu\nCOUNT s4xx %llu\nCOUNT sother %llu\n",
           (unsigned long long)s202, (unsigned long long)s503, (unsigned long long)s4xx,
           (unsigned long long)sother);
    printf("COUNT ev202 %llu\nCOUNT ev503 %llu\nCOUNT ev400 %llu\n", (unsigned long long)s202,
           (unsigned long long)s503, 0ull);
    printf("COUNT requests %llu\nCOUNT sent %llu\nCOUNT duration_us %llu\nCOUNT late_sends %llu\n",
           (unsigned long long)answered, (unsigned long long)sent, (unsigned long long)(dur / 1000),
           (unsigned long long)late);
    printf("COUNT errors_read %llu\nCOUNT errors_write %llu\nCOUNT errors_timeout %llu\n",
           (unsigned long long)err_read, (unsigned long long)err_write,
           (unsigned long long)err_timeout);
    printf("COUNT closed_by_server %llu\nCOUNT unsolicited_answers %llu\n",
           (unsigned long long)closed, (unsigned long long)unsolicited);
    const double ps[] = {50, 90, 99, 99.9};
    const char *pn[] = {"p50", "p90", "p99", "p99.9"};
    for (int i = 0; i < 4; i++) {
        uint64_t v = 0;
        if (nlat) {
            size_t idx = (size_t)((ps[i] / 100.0) * (double)nlat);
            if (idx >= nlat) idx = nlat - 1;
            v = lat[idx];
        }
        printf("LAT %s %llu\n", pn[i], (unsigned long long)(v / 1000));
    }
    printf("LAT max %llu\n", (unsigned long long)(nlat ? lat[nlat - 1] / 1000 : 0));
    printf("LAT mean %.1f\n", nlat ? sum / (double)nlat / 1000.0 : 0.0);
    return 0;
}
