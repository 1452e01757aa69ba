/*
 * The Redis client on a real loop against a real redis-server: commands and
 * reply views, binary safety, error replies, pipelining order, pub/sub from
 * another connection, reconnect after the server kills our connections or
 * restarts (subscriptions restored), cancellation on close and a clean loop
 * teardown.  The server is $REDIS_URL (make test's) when set; otherwise,
 * and always for the tests that kill connections or the server, a private
 * redis-server on a free port, started by the test.
 */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>

#include "redis.h"

#include <connectd/plugin.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------ the server */
static pid_t server_pid = -1;
static int server_port;
static char server_url[128];
static char key_prefix[64];

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* A blocking hiredis connection: the "other client" of these tests. */
static redisContext *sync_connect(void) {
    redisContext *c = redisConnect("127.0.0.1", server_port);
    cr_assert_not_null(c);
    if (c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static void server_spawn(void) {
    char port[16];
    snprintf(port, sizeof port, "%d", server_port);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execlp("redis-server", "redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "",
               "--appendonly", "no", "--daemonize", "no", "--dir", "/tmp", (char *)NULL);
        _exit(127);
    }
    server_pid = pid;
    for (int i = 0; i < 200; i++) {
        redisContext *c = sync_connect();
        if (c) {
            redisReply *rep = redisCommand(c, "PING");
            int ok = rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
            if (rep) freeReplyObject(rep);
            redisFree(c);
            if (ok) return;
        }
        int status;
        cr_assert_eq(waitpid(pid, &status, WNOHANG), 0, "redis-server exited during start-up");
        usleep(25 * 1000);
    }
    cr_assert_fail("redis-server on port %d did not answer PING", server_port);
}

static void server_kill(void) {
    if (server_pid <= 0) return;
    kill(server_pid, SIGKILL);
    waitpid(server_pid, NULL, 0);
    server_pid = -1;
}

static void private_server(void) {
    server_port = free_port();
    snprintf(server_url, sizeof server_url, "redis://127.0.0.1:%d", server_port);
    server_spawn();
}

static void setup(void) {
    snprintf(key_prefix, sizeof key_prefix, "connectd-test:%ld", (long)getpid());
    const char *env = getenv("REDIS_URL");
    int port = 0;
    if (env && sscanf(env, "redis://127.0.0.1:%d", &port) == 1 && port > 0) {
        server_port = port;
        snprintf(server_url, sizeof server_url, "%s", env);
        return;
    }
    private_server();
}

static void setup_private(void) {
    snprintf(key_prefix, sizeof key_prefix, "connectd-test:%ld", (long)getpid());
    private_server();
}

static void teardown(void) {
    server_kill();
}

static long long sync_integer(const char *fmt, ...) {
    redisContext *c = sync_connect();
    cr_assert_not_null(c, "cannot connect to 127.0.0.1:%d", server_port);
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    cr_assert_not_null(rep);
    cr_assert_eq(rep->type, REDIS_REPLY_INTEGER, "reply type %d (%s)", rep->type,
                 rep->str ? rep->str : "");
    long long v = rep->integer;
    freeReplyObject(rep);
    redisFree(c);
    return v;
}

/* -------------------------------------------------------------- the loop */
static void tick_cb(uv_timer_t *t) {
    (void)t;
}

/* Runs the loop until done(arg) or ms passed; returns done(arg). */
static int run_until(uv_loop_t *loop, int (*done)(void *), void *arg, uint64_t ms) {
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, tick_cb, 5, 5);
    uint64_t end = uv_hrtime() + ms * 1000000ULL;
    while (!done(arg) && uv_hrtime() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return done(arg);
}

static int int_at_least(void *arg) {
    int *p = arg;
    return p[0] >= p[1];
}

/* Waits until *counter >= want. */
static int wait_count(uv_loop_t *loop, int *counter, int want, uint64_t ms) {
    int pair[2];
    uint64_t end = uv_hrtime() + ms * 1000000ULL;
    for (;;) {
        pair[0] = *counter;
        pair[1] = want;
        if (pair[0] >= want || uv_hrtime() >= end) return *counter >= want;
        run_until(loop, int_at_least, pair, 5);
    }
}

static int is_connected(void *arg) {
    return redis_connected(arg);
}

static int is_disconnected(void *arg) {
    return !redis_connected(arg);
}

static int is_subscribed(void *arg) {
    return redis_subscribed(arg);
}

static int closed_flag;
static void on_closed(void *opaque) {
    int *flag = opaque;
    (*flag)++;
}

static int flag_set(void *arg) {
    return *(int *)arg != 0;
}

static void close_and_check(uv_loop_t *loop, redis *r) {
    closed_flag = 0;
    redis_close(r, on_closed, &closed_flag);
    cr_assert_eq(closed_flag, 0, "on_closed must not run inside redis_close");
    cr_assert(run_until(loop, flag_set, &closed_flag, 5000), "on_closed never ran");
    cr_assert_eq(closed_flag, 1);
    uv_run(loop, UV_RUN_NOWAIT);
    cr_assert_eq(uv_loop_close(loop), 0, "handles left open on the loop");
}

static redis *client_new(uv_loop_t *loop) {
    cr_assert_eq(uv_loop_init(loop), 0);
    redis *r = NULL;
    char err[256] = "";
    cr_assert_eq(redis_new(&r, loop, server_url, err, sizeof err), 0, "redis_new: %s", err);
    cr_assert_not_null(r);
    return r;
}

/* ------------------------------------------------------- reply capture */
#define MAX_REPLIES 1100

typedef struct captured {
    int calls;
    int error;
    redis_type type;
    long long integer;
    char str[256];
    size_t len;
    size_t elements;
} captured;

static captured replies[MAX_REPLIES];
static int reply_count;
static int order[MAX_REPLIES];
static int in_submit;

static void capture_cb(void *opaque, const redis_reply *rep) {
    int i = (int)(intptr_t)opaque;
    cr_assert(!in_submit, "callback ran inside redis_command");
    cr_assert(i >= 0 && i < MAX_REPLIES);
    captured *c = &replies[i];
    c->calls++;
    c->error = rep->error;
    c->type = rep->type;
    c->integer = rep->integer;
    c->len = rep->len;
    c->elements = rep->elements;
    if (rep->str) memcpy(c->str, rep->str, rep->len < sizeof c->str ? rep->len : sizeof c->str);
    order[reply_count++] = i;
}

static void reset_replies(void) {
    memset(replies, 0, sizeof replies);
    reply_count = 0;
}

/* redis_command with the index as opaque, asserting it was accepted. */
#define CMD(i, ...)                                                                                \
    do {                                                                                           \
        in_submit = 1;                                                                             \
        int rc_ = redis_command(r, capture_cb, (void *)(intptr_t)(i), __VA_ARGS__);                \
        in_submit = 0;                                                                             \
        cr_assert_eq(rc_, 0, "redis_command returned %d", rc_);                                    \
    } while (0)

/* ------------------------------------------------------------------ tests */
TestSuite(redis, .init = setup, .fini = teardown, .timeout = 60);

Test(redis, set_nx_px_then_get) {
    uv_loop_t loop;
    redis *r = client_new(&loop);
    reset_replies();
    char key[128];
    snprintf(key, sizeof key, "%s:nx", key_prefix);
    CMD(0, "DEL %s", key);
    CMD(1, "SET %s %s NX PX %d", key, "first", 60000);
    CMD(2, "SET %s %s NX PX %d", key, "second", 60000);
    CMD(3, "GET %s", key);
    CMD(4, "PTTL %s", key);
    const char *argv[] = {"GET", key};
    in_submit = 1;
    cr_assert_eq(redis_command_argv(r, capture_cb, (void *)5, 2, argv, NULL), 0);
    in_submit = 0;
    cr_assert(wait_count(&loop, &reply_count, 6, 5000), "only %d replies", reply_count);
    cr_assert_eq(replies[1].type, REDIS_T_STATUS);
    cr_assert_eq(replies[1].len, 2);
    cr_assert_arr_eq(replies[1].str, "OK", 2);
    cr_assert_eq(replies[2].error, 0);
    cr_assert_eq(replies[2].type, REDIS_T_NIL, "NX on an existing key must answer nil");
    cr_assert_eq(replies[3].type, REDIS_T_STRING);
    cr_assert_eq(replies[3].len, 5);
    cr_assert_arr_eq(replies[3].str, "first", 5);
    cr_assert_eq(replies[4].type, REDIS_T_INTEGER);
    cr_assert(replies[4].integer > 0 && replies[4].integer <= 60000, "PTTL %lld",
              replies[4].integer);
    cr_assert_eq(replies[5].type, REDIS_T_STRING);
    cr_assert_arr_eq(replies[5].str, "first", 5);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(replies[i].calls, 1);
    CMD(6, "DEL %s", key);
    cr_assert(wait_count(&loop, &reply_count, 7, 5000));
    close_and_check(&loop, r);
}

Test(redis, incr_counts_and_arrays_are_viewed) {
    uv_loop_t loop;
    redis *r = client_new(&loop);
    reset_replies();
    char key[128], list[128];
    snprintf(key, sizeof key, "%s:incr", key_prefix);
    snprintf(list, sizeof list, "%s:list", key_prefix);
    CMD(0, "DEL %s %s", key, list);
    CMD(1, "INCR %s", key);
    CMD(2, "INCRBY %s %d", key, 41);
    CMD(3, "RPUSH %s a bb ccc", list);
    CMD(4, "LRANGE %s 0 -1", list);
    CMD(5, "DEL %s %s", key, list);
    cr_assert(wait_count(&loop, &reply_count, 6, 5000));
    cr_assert_eq(replies[1].type, REDIS_T_INTEGER);
    cr_assert_eq(replies[1].integer, 1);
    cr_assert_eq(replies[2].integer, 42);
    cr_assert_eq(replies[3].integer, 3);
    cr_assert_eq(replies[4].type, REDIS_T_ARRAY);
    cr_assert_eq(replies[4].elements, 3);
    cr_assert_eq(replies[5].integer, 2);
    close_and_check(&loop, r);
}

/* Checks the element views of an LRANGE reply in the callback itself. */
static int array_checked;
static void array_cb(void *opaque, const redis_reply *rep) {
    cr_assert_eq(rep->type, REDIS_T_ARRAY);
    cr_assert_eq(rep->elements, 3);
    cr_assert_eq(rep->element[0].type, REDIS_T_STRING);
    cr_assert_eq(rep->element[0].len, 1);
    cr_assert_arr_eq(rep->element[1].str, "b\0b", 3);
    cr_assert_eq(rep->element[1].len, 3);
    cr_assert_eq(rep->element[2].type, REDIS_T_STRING);
    cr_assert_eq(rep->element[2].len, 0);
    array_checked++;
}

Test(redis, binary_safe_values) {
    uv_loop_t loop;
    redis *r = client_new(&loop);
    reset_replies();
    char key[128], list[128];
    snprintf(key, sizeof key, "%s:bin", key_prefix);
    snprintf(list, sizeof list, "%s:binlist", key_prefix);
    const char value[] = {'a', '\0', '\r', '\n', '$', '\xff', '\0', 'z'};
    CMD(0, "SET %s %b", key, value, sizeof value);
    CMD(1, "GET %s", key);
    CMD(2, "STRLEN %s", key);
    CMD(3, "DEL %s", list);
    CMD(4, "RPUSH %s %b %b %b", list, "a", (size_t)1, "b\0b", (size_t)3, "", (size_t)0);
    cr_assert(wait_count(&loop, &reply_count, 5, 5000));
    cr_assert_eq(replies[1].type, REDIS_T_STRING);
    cr_assert_eq(replies[1].len, sizeof value);
    cr_assert_arr_eq(replies[1].str, value, sizeof value);
    cr_assert_eq(replies[2].integer, (long long)sizeof value);
    cr_assert_eq(replies[4].integer, 3);
    array_checked = 0;
    cr_assert_eq(redis_command(r, array_cb, NULL, "LRANGE %s 0 -1", list), 0);
    cr_assert(wait_count(&loop, &array_checked, 1, 5000));
    CMD(5, "DEL %s %s", key, list);
    cr_assert(wait_count(&loop, &reply_count, 6, 5000));
    close_and_check(&loop, r);
}

Test(redis, error_replies_and_refused_commands) {
    uv_loop_t loop;
    redis *r = client_new(&loop);
    reset_replies();
    char key[128];
    snprintf(key, sizeof key, "%s:err", key_prefix);
    CMD(0, "SET %s notanumber", key);
    CMD(1, "INCR %s", key);
    CMD(2, "NOSUCHCOMMAND %s", key);
    CMD(3, "DEL %s", key);
    cr_assert(wait_count(&loop, &reply_count, 4, 5000));
    cr_assert_eq(replies[1].error, 0, "an error reply is an answer, not a transport error");
    cr_assert_eq(replies[1].type, REDIS_T_ERROR);
    cr_assert(strncmp(replies[1].str, "ERR", 3) == 0, "got %s", replies[1].str);
    cr_assert_eq(replies[2].type, REDIS_T_ERROR);
    cr_assert(strstr(replies[2].str, "unknown command") != NULL, "got %s", replies[2].str);
    cr_assert_eq(replies[3].integer, 1);
    /* Commands that would make the connection a subscriber are refused. */
    cr_assert_eq(redis_command(r, capture_cb, (void *)10, "SUBSCRIBE %s", key), CD_ERR_INVALID);
    cr_assert_eq(redis_command(r, capture_cb, (void *)10, "%s %s", "psubscribe", key),
                 CD_ERR_INVALID);
    const char *argv[] = {"MONITOR"};
    cr_assert_eq(redis_command_argv(r, capture_cb, (void *)10, 1, argv, NULL), CD_ERR_INVALID);
    cr_assert_eq(redis_command_argv(r, capture_cb, (void *)10, 0, argv, NULL), CD_ERR_INVALID);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(replies[10].calls, 0);
    close_and_check(&loop, r);
}

Test(redis, bad_urls_are_refused) {
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    const char *bad[] = {
        "http://127.0.0.1:6379", "redis://",        "redis://h:0",     "redis://h:70000",
        "redis://h:1/x",         "redis://u:p@h:1", "redis://h:1/2/3", NULL};
    for (int i = 0; bad[i]; i++) {
        redis *r = (redis *)&loop;
        char err[128] = "";
        cr_assert_eq(redis_new(&r, &loop, bad[i], err, sizeof err), CD_ERR_INVALID, "%s", bad[i]);
        cr_assert_null(r);
        cr_assert_neq(err[0], '\0');
    }
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(redis, pipelined_thousand_answered_in_order) {
    uv_loop_t loop;
    redis *r = client_new(&loop);
    reset_replies();
    char key[128];
    snprintf(key, sizeof key, "%s:pipe", key_prefix);
    CMD(0, "DEL %s", key);
    cr_assert(wait_count(&loop, &reply_count, 1, 5000));
    reset_replies();
    for (int i = 0; i < 1000; i++)
        CMD(i, "INCR %s", key);
    cr_assert(wait_count(&loop, &reply_count, 1000, 10000), "only %d of 1000", reply_count);
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(order[i], i, "reply %d was for command %d", i, order[i]);
        cr_assert_eq(replies[i].calls, 1);
        cr_assert_eq(replies[i].integer, i + 1);
    }
    CMD(1000, "DEL %s", key);
    cr_assert(wait_count(&loop, &reply_count, 1001, 5000));
    close_and_check(&loop, r);
}

/* ------------------------------------------------------------- pub/sub */
typedef struct inbox {
    int count;
    char last_channel[128];
    char last_payload[128];
    size_t last_payload_len;
    int last_was_pattern;
} inbox;

static void inbox_cb(void *opaque, const redis_message *m) {
    inbox *in = opaque;
    in->count++;
    snprintf(in->last_channel, sizeof in->last_channel, "%.*s", (int)m->channel_len, m->channel);
    in->last_payload_len = m->payload_len;
    memcpy(in->last_payload, m->payload,
           m->payload_len < sizeof in->last_payload ? m->payload_len : sizeof in->last_payload);
    in->last_was_pattern = m->pattern != NULL;
}

Test(redis, publish_from_another_connection_reaches_subscribers) {
    uv_loop_t loop;
    redis *r = client_new(&loop);
    char chan[128], pat[128], other[128];
    snprintf(chan, sizeof chan, "%s:chan", key_prefix);
    snprintf(pat, sizeof pat, "%s:p.*", key_prefix);
    snprintf(other, sizeof other, "%s:p.x", key_prefix);
    inbox a = {0}, b = {0}, p = {0};
    cr_assert_eq(redis_subscribe(r, chan, 0, inbox_cb, &a), 0);
    cr_assert_eq(redis_subscribe(r, chan, 0, inbox_cb, &b), 0);
    cr_assert_eq(redis_subscribe(r, pat, 1, inbox_cb, &p), 0);
    cr_assert_eq(redis_subscribe(r, "", 0, inbox_cb, &p), CD_ERR_INVALID);
    cr_assert(run_until(&loop, is_subscribed, r, 5000), "subscriptions not confirmed");
    cr_assert_eq(sync_integer("PUBLISH %s %b", chan, "hi\0there", (size_t)8), 1);
    cr_assert_eq(sync_integer("PUBLISH %s %s", other, "patterned"), 1);
    cr_assert(wait_count(&loop, &b.count, 1, 5000));
    cr_assert(wait_count(&loop, &p.count, 1, 5000));
    cr_assert_eq(a.count, 1, "both subscriptions of one channel get the message");
    cr_assert_str_eq(a.last_channel, chan);
    cr_assert_eq(a.last_payload_len, 8);
    cr_assert_arr_eq(a.last_payload, "hi\0there", 8);
    cr_assert_eq(a.last_was_pattern, 0);
    cr_assert_str_eq(p.last_channel, other);
    cr_assert_str_eq(p.last_payload, "patterned");
    cr_assert_eq(p.last_was_pattern, 1);
    close_and_check(&loop, r);
}

/* Subscribers on the server for chan (PUBSUB NUMSUB), polled until it is
 * want or 5 s pass, running the loop meanwhile. */
static long long numsub_becomes(uv_loop_t *loop, const char *chan, long long want) {
    redisContext *c = sync_connect();
    cr_assert_not_null(c);
    long long n = -1;
    uint64_t end = uv_hrtime() + 5000ULL * 1000000ULL;
    do {
        redisReply *rep = redisCommand(c, "PUBSUB NUMSUB %s", chan);
        cr_assert(rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2);
        n = rep->element[1]->integer;
        freeReplyObject(rep);
        int never = 0;
        if (n != want) run_until(loop, flag_set, &never, 20);
    } while (n != want && uv_hrtime() < end);
    redisFree(c);
    return n;
}

static redis *self_unsub_client;
static void self_unsub_cb(void *opaque, const redis_message *m) {
    inbox *in = opaque;
    inbox_cb(opaque, m);
    cr_assert_eq(redis_unsubscribe(self_unsub_client, in->last_channel, 0, self_unsub_cb, in), 0);
}

Test(redis, unsubscribe_stops_delivery_and_resubscribe_races_safely) {
    uv_loop_t loop;
    redis *r = client_new(&loop);
    char chan[128];
    snprintf(chan, sizeof chan, "%s:unsub", key_prefix);
    inbox a = {0}, b = {0}, c = {0}, d = {0};
    cr_assert_eq(redis_subscribe(r, chan, 0, inbox_cb, &a), 0);
    cr_assert_eq(redis_subscribe(r, chan, 0, inbox_cb, &b), 0);
    cr_assert(run_until(&loop, is_subscribed, r, 5000));
    cr_assert_eq(redis_unsubscribe(r, chan, 0, inbox_cb, &c), CD_ERR_INVALID, "never subscribed");
    cr_assert_eq(redis_unsubscribe(r, chan, 1, inbox_cb, &a), CD_ERR_INVALID, "not a pattern");

    /* One of two gone: the other still hears, the server still counts us. */
    cr_assert_eq(redis_unsubscribe(r, chan, 0, inbox_cb, &a), 0);
    cr_assert_eq(sync_integer("PUBLISH %s %s", chan, "one"), 1);
    cr_assert(wait_count(&loop, &b.count, 1, 5000));
    cr_assert_eq(a.count, 0);

    /* The last one gone: the server forgets the channel. */
    cr_assert_eq(redis_unsubscribe(r, chan, 0, inbox_cb, &b), 0);
    cr_assert_eq(numsub_becomes(&loop, chan, 0), 0);
    cr_assert_eq(sync_integer("PUBLISH %s %s", chan, "nobody"), 0);

    /* Subscribe, unsubscribe and subscribe again before any reply: the last
     * subscription must end up live on the server (hiredis alone would drop
     * its callback when the UNSUBSCRIBE is confirmed). */
    cr_assert_eq(redis_subscribe(r, chan, 0, inbox_cb, &c), 0);
    cr_assert(run_until(&loop, is_subscribed, r, 5000));
    cr_assert_eq(redis_unsubscribe(r, chan, 0, inbox_cb, &c), 0);
    cr_assert_eq(redis_subscribe(r, chan, 0, inbox_cb, &d), 0);
    cr_assert(run_until(&loop, is_subscribed, r, 5000));
    cr_assert_eq(numsub_becomes(&loop, chan, 1), 1);
    cr_assert_eq(sync_integer("PUBLISH %s %s", chan, "two"), 1);
    cr_assert(wait_count(&loop, &d.count, 1, 5000));
    cr_assert_str_eq(d.last_payload, "two");
    cr_assert_eq(c.count, 0);
    cr_assert_eq(redis_unsubscribe(r, chan, 0, inbox_cb, &d), 0);

    /* A callback that unsubscribes itself hears exactly one message. */
    inbox e = {0};
    self_unsub_client = r;
    cr_assert_eq(redis_subscribe(r, chan, 0, self_unsub_cb, &e), 0);
    cr_assert(run_until(&loop, is_subscribed, r, 5000));
    cr_assert_eq(numsub_becomes(&loop, chan, 1), 1);
    cr_assert_eq(sync_integer("PUBLISH %s %s", chan, "x"), 1);
    cr_assert(wait_count(&loop, &e.count, 1, 5000));
    cr_assert_eq(numsub_becomes(&loop, chan, 0), 0);
    cr_assert_eq(e.count, 1);
    close_and_check(&loop, r);
}

/* ----------------------------------------------------------- reconnect */
static int command_works(uv_loop_t *loop, redis *r, const char *key) {
    uint64_t end = uv_hrtime() + 10000ULL * 1000000ULL;
    while (uv_hrtime() < end) {
        int before = reply_count;
        int idx = 900 + (reply_count % 100);
        replies[idx].calls = 0;
        int rc = redis_command(r, capture_cb, (void *)(intptr_t)idx, "INCR %s", key);
        if (rc == 0) {
            cr_assert(wait_count(loop, &reply_count, before + 1, 5000));
            if (replies[idx].error == 0 && replies[idx].type == REDIS_T_INTEGER) return 1;
        } else {
            cr_assert_eq(rc, REDIS_E_DISCONNECTED, "redis_command: %d", rc);
        }
        int never = 0;
        run_until(loop, flag_set, &never, 50);
    }
    return 0;
}

TestSuite(redis_reconnect, .init = setup_private, .fini = teardown, .timeout = 60);

Test(redis_reconnect, killed_connections_come_back_with_subscriptions) {
    uv_loop_t loop;
    redis *r = client_new(&loop);
    reset_replies();
    char key[128], chan[128];
    snprintf(key, sizeof key, "%s:rc", key_prefix);
    snprintf(chan, sizeof chan, "%s:rchan", key_prefix);
    inbox in = {0};
    cr_assert_eq(redis_subscribe(r, chan, 0, inbox_cb, &in), 0);
    cr_assert(run_until(&loop, is_subscribed, r, 5000));
    cr_assert(command_works(&loop, r, key));
    cr_assert(redis_connected(r));

    cr_assert_geq(sync_integer("CLIENT KILL TYPE normal"), 1);
    cr_assert_geq(sync_integer("CLIENT KILL TYPE pubsub"), 1);
    cr_assert(run_until(&loop, is_disconnected, r, 5000), "the loss was not noticed");
    cr_assert(command_works(&loop, r, key), "commands never worked again");
    cr_assert(run_until(&loop, is_subscribed, r, 10000), "subscription not restored");
    cr_assert_eq(sync_integer("PUBLISH %s %s", chan, "after"), 1);
    cr_assert(wait_count(&loop, &in.count, 1, 5000));
    cr_assert_str_eq(in.last_payload, "after");
    close_and_check(&loop, r);
}

Test(redis_reconnect, server_restart_fails_fast_then_recovers) {
    uv_loop_t loop;
    redis *r = client_new(&loop);
    reset_replies();
    char key[128], chan[128];
    snprintf(key, sizeof key, "%s:restart", key_prefix);
    snprintf(chan, sizeof chan, "%s:restartchan", key_prefix);
    inbox in = {0};
    cr_assert_eq(redis_subscribe(r, chan, 0, inbox_cb, &in), 0);
    cr_assert(run_until(&loop, is_subscribed, r, 5000));
    cr_assert(command_works(&loop, r, key));

    server_kill();
    cr_assert(run_until(&loop, is_disconnected, r, 5000));
    /* Down: a command fails fast, either at once or through its callback
     * (when a reconnect attempt is under way); never hangs. */
    uint64_t t0 = uv_hrtime();
    int before = reply_count;
    int rc = redis_command(r, capture_cb, (void *)800, "INCR %s", key);
    if (rc == 0) {
        cr_assert(wait_count(&loop, &reply_count, before + 1, 5000));
        cr_assert_eq(replies[800].error, REDIS_E_DISCONNECTED);
        cr_assert_eq(replies[800].type, REDIS_T_ERROR);
        cr_assert_gt(replies[800].len, 0);
    } else {
        cr_assert_eq(rc, REDIS_E_DISCONNECTED);
    }
    cr_assert_lt(uv_hrtime() - t0, (uint64_t)(REDIS_CONNECT_TIMEOUT_MS + 1000) * 1000000ULL);
    /* Let a few reconnect attempts fail. */
    int never = 0;
    run_until(&loop, flag_set, &never, 300);

    server_spawn();
    cr_assert(command_works(&loop, r, key), "commands never worked again");
    cr_assert(run_until(&loop, is_subscribed, r, 10000), "subscription not restored");
    cr_assert_eq(sync_integer("PUBLISH %s %s", chan, "back"), 1);
    cr_assert(wait_count(&loop, &in.count, 1, 5000));
    close_and_check(&loop, r);
}

/* --------------------------------------------------------------- close */
static redis *closing_client;
static int busy_seen;

static void cancel_cb(void *opaque, const redis_reply *rep) {
    capture_cb(opaque, rep);
    /* Submitting from a cancelled callback is refused, not queued. */
    if (redis_command(closing_client, capture_cb, (void *)1099, "PING") == CD_ERR_BUSY) busy_seen++;
}

Test(redis, close_with_commands_in_flight_cancels_each_once) {
    uv_loop_t loop;
    redis *r = client_new(&loop);
    closing_client = r;
    busy_seen = 0;
    reset_replies();
    cr_assert(run_until(&loop, is_connected, r, 5000));
    for (int i = 0; i < 100; i++) {
        in_submit = 1;
        cr_assert_eq(redis_command(r, cancel_cb, (void *)(intptr_t)i, "PING"), 0);
        in_submit = 0;
    }
    closed_flag = 0;
    redis_close(r, on_closed, &closed_flag);
    cr_assert_eq(reply_count, 100, "every in-flight callback runs before redis_close returns");
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(replies[i].calls, 1);
        cr_assert_eq(replies[i].error, REDIS_E_CANCELED);
        cr_assert_eq(replies[i].type, REDIS_T_ERROR);
    }
    cr_assert_eq(busy_seen, 100);
    cr_assert_eq(replies[1099].calls, 0);
    redis_close(r, on_closed, &closed_flag); /* a second call is ignored */
    cr_assert_eq(closed_flag, 0);
    cr_assert(run_until(&loop, flag_set, &closed_flag, 5000));
    cr_assert_eq(closed_flag, 1);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

static void close_from_cb(void *opaque, const redis_reply *rep) {
    capture_cb(opaque, rep);
    if ((intptr_t)opaque == 0) redis_close(closing_client, on_closed, &closed_flag);
}

Test(redis, close_from_inside_a_reply_callback) {
    uv_loop_t loop;
    redis *r = client_new(&loop);
    closing_client = r;
    reset_replies();
    closed_flag = 0;
    for (int i = 0; i < 50; i++)
        cr_assert_eq(redis_command(r, close_from_cb, (void *)(intptr_t)i, "PING"), 0);
    cr_assert(run_until(&loop, flag_set, &closed_flag, 5000));
    cr_assert_eq(replies[0].calls, 1);
    cr_assert_eq(replies[0].error, 0);
    cr_assert_eq(replies[0].type, REDIS_T_STATUS);
    for (int i = 1; i < 50; i++) {
        cr_assert_eq(replies[i].calls, 1, "command %d: %d calls", i, replies[i].calls);
        cr_assert(replies[i].error == 0 || replies[i].error == REDIS_E_CANCELED);
    }
    cr_assert_eq(closed_flag, 1);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(redis, unreachable_server_fails_fast_and_closes_clean) {
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    char url[64], err[128] = "";
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", free_port());
    redis *r = NULL;
    cr_assert_eq(redis_new(&r, &loop, url, err, sizeof err), 0, "%s", err);
    inbox in = {0};
    cr_assert_eq(redis_subscribe(r, "nobody", 0, inbox_cb, &in), 0);
    reset_replies();
    /* Accepted while the first attempt is under way, then failed by it. */
    int rc = redis_command(r, capture_cb, (void *)0, "PING");
    if (rc == 0) {
        cr_assert(wait_count(&loop, &reply_count, 1, 5000));
        cr_assert_eq(replies[0].error, REDIS_E_DISCONNECTED);
    } else {
        cr_assert_eq(rc, REDIS_E_DISCONNECTED);
    }
    int never = 0;
    run_until(&loop, flag_set, &never, 200);
    cr_assert_eq(redis_connected(r), 0);
    cr_assert_eq(redis_subscribed(r), 0);
    close_and_check(&loop, r);
}

Test(redis, url_database_is_selected_before_any_command) {
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    char url[160], err[128] = "", key[128];
    snprintf(url, sizeof url, "%s/3", server_url);
    snprintf(key, sizeof key, "%s:db3", key_prefix);
    redis *r = NULL;
    cr_assert_eq(redis_new(&r, &loop, url, err, sizeof err), 0, "%s", err);
    reset_replies();
    CMD(0, "SET %s %s PX %d", key, "in-three", 60000);
    cr_assert(wait_count(&loop, &reply_count, 1, 5000));
    cr_assert_eq(replies[0].type, REDIS_T_STATUS);
    cr_assert_eq(sync_integer("EXISTS %s", key), 0, "written to db 0");
    redisContext *c = sync_connect();
    cr_assert_not_null(c);
    redisReply *rep = redisCommand(c, "SELECT 3");
    cr_assert_not_null(rep);
    freeReplyObject(rep);
    rep = redisCommand(c, "GET %s", key);
    cr_assert_not_null(rep);
    cr_assert_eq(rep->type, REDIS_REPLY_STRING);
    cr_assert_str_eq(rep->str, "in-three");
    freeReplyObject(rep);
    rep = redisCommand(c, "DEL %s", key);
    freeReplyObject(rep);
    redisFree(c);
    close_and_check(&loop, r);
}

static int sub_is_confirmed(void *arg) {
    return redis_sub_confirmed(arg);
}

Test(redis, each_subscription_says_when_the_server_confirmed_it) {
    uv_loop_t loop;
    redis *r = client_new(&loop);
    char a[128], b[128];
    snprintf(a, sizeof a, "%s:conf-a", key_prefix);
    snprintf(b, sizeof b, "%s:conf-b", key_prefix);
    inbox ia = {0}, ib = {0};
    redis_sub *sa = NULL, *sb = NULL;
    cr_assert_eq(redis_subscribe_handle(r, a, 0, inbox_cb, &ia, &sa), 0);
    cr_assert_not_null(sa);
    cr_assert_eq(redis_sub_confirmed(sa), 0, "not before the server answered");
    cr_assert(run_until(&loop, sub_is_confirmed, sa, 5000), "a never confirmed");
    cr_assert_eq(redis_subscribe_handle(r, b, 0, inbox_cb, &ib, &sb), 0);
    cr_assert_eq(redis_sub_confirmed(sb), 0);
    cr_assert_eq(redis_sub_confirmed(sa), 1, "a new subscription does not unconfirm a");
    cr_assert(run_until(&loop, sub_is_confirmed, sb, 5000), "b never confirmed");
    cr_assert_eq(sync_integer("PUBLISH %s %s", b, "x"), 1);
    cr_assert(wait_count(&loop, &ib.count, 1, 5000));
    cr_assert_eq(redis_sub_confirmed(NULL), 0);
    close_and_check(&loop, r);
}

/* Thousands of channels (sink-websocket holds one per connected customer):
 * each message reaches exactly its own subscriber, subscriptions made from
 * inside a callback (the table grows only after the dispatch) and
 * unsubscriptions of half of them keep everything consistent. */
#define MANY 3000
static inbox many_in[MANY];
static redis *many_r;
static char many_names[MANY][96];
static int many_added;

static void many_cb(void *opaque, const redis_message *m) {
    inbox_cb(opaque, m);
    /* The first message subscribes 1000 more channels from the callback. */
    if (!many_added) {
        many_added = 1;
        for (int i = 2000; i < MANY; i++)
            cr_assert_eq(redis_subscribe(many_r, many_names[i], 0, inbox_cb, &many_in[i]), 0);
    }
}

static int all_subscribed(void *arg) {
    return redis_subscribed(arg);
}

Test(redis, thousands_of_channels_each_reach_only_their_subscriber) {
    uv_loop_t loop;
    redis *r = client_new(&loop);
    many_r = r;
    many_added = 0;
    memset(many_in, 0, sizeof many_in);
    for (int i = 0; i < MANY; i++)
        snprintf(many_names[i], sizeof many_names[i], "%s:many:%d", key_prefix, i);
    for (int i = 0; i < 2000; i++)
        cr_assert_eq(redis_subscribe(r, many_names[i], 0, i == 0 ? many_cb : inbox_cb, &many_in[i]),
                     0);
    cr_assert(run_until(&loop, all_subscribed, r, 15000), "2000 subscriptions not confirmed");
    cr_assert_eq(sync_integer("PUBLISH %s %s", many_names[0], "grow"), 1);
    cr_assert(wait_count(&loop, &many_in[0].count, 1, 5000));
    cr_assert(run_until(&loop, all_subscribed, r, 15000), "the 1000 added not confirmed");
    for (int i = 1; i < MANY; i += 7)
        cr_assert_eq(sync_integer("PUBLISH %s %s", many_names[i], many_names[i]), 1, "%d", i);
    for (int i = 1; i < MANY; i++) {
        int want = i % 7 == 1 ? 1 : 0;
        if (want) cr_assert(wait_count(&loop, &many_in[i].count, 1, 5000), "%d got nothing", i);
        cr_assert_eq(many_in[i].count, want, "channel %d got %d", i, many_in[i].count);
        if (want) cr_assert_str_eq(many_in[i].last_payload, many_names[i]);
    }
    /* Half of them go; the server forgets those, the rest still hear. */
    for (int i = 0; i < MANY; i += 2)
        cr_assert_eq(
            redis_unsubscribe(r, many_names[i], 0, i == 0 ? many_cb : inbox_cb, &many_in[i]), 0);
    cr_assert_eq(numsub_becomes(&loop, many_names[MANY - 2], 0), 0);
    cr_assert_eq(numsub_becomes(&loop, many_names[MANY - 1], 1), 1);
    cr_assert_eq(sync_integer("PUBLISH %s %s", many_names[4], "gone"), 0);
    cr_assert_eq(sync_integer("PUBLISH %s %s", many_names[5], "here"), 1);
    cr_assert(wait_count(&loop, &many_in[5].count, 1, 5000));
    cr_assert_eq(many_in[4].count, 0);
    close_and_check(&loop, r);
}

/* ------------------------------------------------------- command watchdog */
Test(redis_reconnect, a_server_that_stops_answering_is_dropped_then_recovers) {
    uv_loop_t loop;
    redis *r = client_new(&loop);
    reset_replies();
    char key[128];
    snprintf(key, sizeof key, "%s:paused", key_prefix);
    cr_assert(command_works(&loop, r, key));
    /* The server keeps the connection but answers nothing for 7 s. */
    redisContext *c = sync_connect();
    cr_assert_not_null(c);
    redisReply *rep = redisCommand(c, "CLIENT PAUSE 7000 ALL");
    cr_assert(rep && rep->type == REDIS_REPLY_STATUS, "CLIENT PAUSE: %s",
              rep && rep->str ? rep->str : "no reply");
    freeReplyObject(rep);
    redisFree(c);
    uv_update_time(&loop); /* the loop's clock, which the watchdog reads, is now too */
    uint64_t t0 = uv_hrtime();
    int before = reply_count;
    CMD(1000, "INCR %s", key);
    CMD(1001, "GET %s", key);
    cr_assert(wait_count(&loop, &reply_count, before + 2, REDIS_COMMAND_TIMEOUT_MS + 2000),
              "no callback %d ms after the server stopped answering",
              REDIS_COMMAND_TIMEOUT_MS + 2000);
    uint64_t took_ms = (uv_hrtime() - t0) / 1000000u;
    cr_assert_geq(took_ms, REDIS_COMMAND_TIMEOUT_MS - 100, "dropped after %llu ms",
                  (unsigned long long)took_ms);
    for (int i = 1000; i <= 1001; i++) {
        cr_assert_eq(replies[i].calls, 1);
        cr_assert_eq(replies[i].error, REDIS_E_DISCONNECTED);
        cr_assert_eq(replies[i].type, REDIS_T_ERROR);
        cr_assert(strstr(replies[i].str, "no answer within") != NULL, "%.*s", (int)replies[i].len,
                  replies[i].str);
    }
    /* Once the server answers again, so does the client. */
    cr_assert(command_works(&loop, r, key), "commands never worked again");
    close_and_check(&loop, r);
}
