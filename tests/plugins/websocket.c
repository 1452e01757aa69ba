/*
 * sink-websocket: its JWT rules and its seq insertion (plugins/sink-websocket/
 * websocket_auth.c, on plugins/common/jwt_verify.c, and websocket_json.c,
 * compiled in: pure functions of their input), and its option validation
 * (the real build/plugins/sink-websocket.so, its options through the
 * engine's config map, init on the engine's host).  Tokens are made with
 * libjwt's encoder, so the verifier is checked against an encoder it does
 * not share code with.  A plain-socket client sends random frame streams
 * cut into random reads to a server on the engine's host, checking when a
 * connection holds a wslay context.  The integration tests (tests/
 * integration/test_sink_websocket.py) cover the server against real clients.
 */
#include <criterion/criterion.h>

#include "../../plugins/sink-websocket/websocket_auth.c"
#include "../../plugins/sink-websocket/websocket_json.c"

#include "configmap.h"
#include "diag.h"
#include "engine.h"
#include "log.h"
#include "metrics.h"
#include "plugin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jwt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WS_SO CONNECTD_BUILD_PLUGIN_DIR "/sink-websocket.so"

/* ------------------------------------------------------------- tokens */

/* A token signed with alg and key; sub NULL leaves the claim out; exp 0
 * leaves it out. */
static char *token(jwt_alg_t alg, const char *key, const char *sub, long exp) {
    jwt_t *j = NULL;
    cr_assert_eq(jwt_new(&j), 0);
    if (sub) cr_assert_eq(jwt_add_grant(j, "sub", sub), 0);
    if (exp) cr_assert_eq(jwt_add_grant_int(j, "exp", exp), 0);
    cr_assert_eq(jwt_set_alg(j, alg, (const unsigned char *)key, key ? (int)strlen(key) : 0), 0);
    char *t = jwt_encode_str(j);
    cr_assert_not_null(t);
    jwt_free(j);
    return t;
}

static ws_auth_result verify(const jwt_verifier *a, const char *tok, char **sub, char *why) {
    return ws_auth_verify(a, tok, tok ? strlen(tok) : 0, time(NULL), sub, why, WS_REASON_MAX);
}

#define EXPECT_REFUSED(a, tok, reason)                                                             \
    do {                                                                                           \
        char *sub_ = NULL;                                                                         \
        char why_[WS_REASON_MAX] = "";                                                             \
        cr_assert_eq(verify(a, tok, &sub_, why_), WS_AUTH_INVALID, "accepted: %s", tok);           \
        cr_assert_null(sub_);                                                                      \
        cr_assert(strstr(why_, reason) != NULL, "reason \"%s\", wanted \"%s\"", why_, reason);     \
    } while (0)

/* The checks themselves (RS256, alg confusion, nbf, malformed tokens, the
 * size bound) are plugins/common/jwt_verify.c's, tested in
 * tests/plugins/jwt_verify.c; here: this sink's rules on top of them. */
Test(websocket_jwt, a_good_token_gives_its_sub_the_customer_id) {
    jwt_verifier a;
    char err[256];
    cr_assert_eq(jwt_verifier_init(&a, "s3cret", NULL, JWT_KEYS_EXACTLY_ONE, err, sizeof(err)), 0,
                 "%s", err);
    char *t = token(JWT_ALG_HS256, "s3cret", "c-1001", time(NULL) + 60);
    char *sub = NULL, why[WS_REASON_MAX];
    cr_assert_eq(verify(&a, t, &sub, why), WS_AUTH_OK, "%s", why);
    cr_assert_str_eq(sub, "c-1001");
    free(sub);
    free(t);
    jwt_verifier_free(&a);
}

Test(websocket_jwt, exp_and_a_bounded_sub_are_required_and_refusals_say_why) {
    jwt_verifier hs;
    char err[256];
    cr_assert_eq(jwt_verifier_init(&hs, "s3cret", NULL, JWT_KEYS_EXACTLY_ONE, err, sizeof(err)), 0,
                 "%s", err);
    long later = time(NULL) + 60;
    char *t;

    t = token(JWT_ALG_HS256, "s3cret", "c1", 0);
    EXPECT_REFUSED(&hs, t, "JWT has no exp");
    free(t);
    t = token(JWT_ALG_HS256, "s3cret", "c1", time(NULL) - 1);
    EXPECT_REFUSED(&hs, t, "JWT expired");
    free(t);
    t = token(JWT_ALG_HS256, "s3cret", NULL, later);
    EXPECT_REFUSED(&hs, t, "JWT has no sub (the customerId)");
    free(t);
    t = token(JWT_ALG_HS256, "s3cret", "", later);
    EXPECT_REFUSED(&hs, t, "JWT has no sub (the customerId)");
    free(t);
    char id[WS_ID_MAX + 2];
    memset(id, 'c', WS_ID_MAX + 1);
    id[WS_ID_MAX + 1] = '\0';
    t = token(JWT_ALG_HS256, "s3cret", id, later);
    EXPECT_REFUSED(&hs, t, "JWT sub is longer than 512 bytes");
    free(t);
    id[WS_ID_MAX] = '\0';
    t = token(JWT_ALG_HS256, "s3cret", id, later);
    char *sub = NULL, why[WS_REASON_MAX];
    cr_assert_eq(verify(&hs, t, &sub, why), WS_AUTH_OK, "%s", why);
    cr_assert_eq(strlen(sub), WS_ID_MAX);
    free(sub);
    free(t);
    /* The shared check's reasons come through as they are. */
    t = token(JWT_ALG_HS256, "another secret", "c1", later);
    EXPECT_REFUSED(&hs, t, "JWT signature does not verify");
    free(t);
    t = token(JWT_ALG_NONE, NULL, "c1", later);
    EXPECT_REFUSED(&hs, t, "JWT alg none is not accepted (only HS256)");
    free(t);
    t = token(JWT_ALG_HS512, "s3cret", "c1", later);
    EXPECT_REFUSED(&hs, t, "JWT alg HS512 is not accepted (only HS256)");
    free(t);
    EXPECT_REFUSED(&hs, "not-a-token", "not a JWT");
    /* No token at all is MISSING (401 with WWW-Authenticate), not INVALID. */
    sub = NULL;
    cr_assert_eq(verify(&hs, NULL, &sub, why), WS_AUTH_MISSING);
    cr_assert_null(sub);
    cr_assert_str_eq(why, "no token (Authorization: Bearer or ?token=)");
    cr_assert_eq(verify(&hs, "", &sub, why), WS_AUTH_MISSING);
    jwt_verifier_free(&hs);
}

Test(websocket_jwt, the_token_comes_from_bearer_then_the_query) {
    size_t n = 0;
    const char *t = ws_auth_token("Bearer abc  ", "q", &n);
    cr_assert_eq(n, 3);
    cr_assert_eq(strncmp(t, "abc", n), 0);
    t = ws_auth_token(" bearer\tabc", NULL, &n);
    cr_assert_eq(n, 3);
    cr_assert_eq(strncmp(t, "abc", n), 0);
    cr_assert_str_eq(ws_auth_token("Basic abc", "q", &n), "q");
    cr_assert_eq(n, 1);
    cr_assert_str_eq(ws_auth_token(NULL, "q", &n), "q");
    cr_assert_null(ws_auth_token(NULL, "", &n));
    cr_assert_eq(n, 0);
    cr_assert_null(ws_auth_token("Bearer ", NULL, &n));
    cr_assert_null(ws_auth_token("Bearer", NULL, &n));
    cr_assert_null(ws_auth_token("Bearerabc", NULL, &n));
}

/* ---------------------------------------------------------------- seq */

static char *with_seq(const char *json, uint64_t seq) {
    pbuf b = {0};
    int r = ws_json_insert_seq(&b, json, strlen(json), seq);
    if (r < 0) {
        pbuf_free(&b);
        return NULL;
    }
    return b.data;
}

#define EXPECT_SEQ(json, seq, want)                                                                \
    do {                                                                                           \
        char *got_ = with_seq(json, seq);                                                          \
        cr_assert_not_null(got_, "refused %s", json);                                              \
        cr_assert_str_eq(got_, want);                                                              \
        free(got_);                                                                                \
    } while (0)

Test(websocket_json, seq_becomes_the_first_member) {
    EXPECT_SEQ("{\"type\":\"KYC_VERIFIED\",\"data\":{\"a\":1}}", 7,
               "{\"seq\":7,\"type\":\"KYC_VERIFIED\",\"data\":{\"a\":1}}");
    EXPECT_SEQ("{}", 1, "{\"seq\":1}");
    EXPECT_SEQ("  { \"a\" : [1] }\n", 18446744073709551615ULL,
               "{\"seq\":18446744073709551615,\"a\" : [1] }");
    EXPECT_SEQ("{ }", 2, "{\"seq\":2}");
    cr_assert_null(with_seq("[1,2]", 1));
    cr_assert_null(with_seq("\"text\"", 1));
    cr_assert_null(with_seq("{", 1));
    cr_assert_null(with_seq("", 1));
}

Test(websocket_json, seq_is_read_back_from_a_message) {
    uint64_t seq = 0;
    const char *m = "{\"seq\":42,\"type\":\"X\"}";
    cr_assert_eq(ws_json_seq(m, strlen(m), &seq), 0);
    cr_assert_eq(seq, 42);
    cr_assert_eq(ws_json_seq("{\"seq\":3}", 9, &seq), 0);
    cr_assert_eq(seq, 3);
    cr_assert_lt(ws_json_seq("{\"type\":1}", 10, &seq), 0);
    cr_assert_lt(ws_json_seq("{\"seq\":}", 8, &seq), 0);
    cr_assert_lt(ws_json_seq("{\"seq\":12", 9, &seq), 0);
    cr_assert_lt(ws_json_seq("{\"seq\":99999999999999999999}", 28, &seq), 0);
}

Test(websocket_json, strings_are_escaped_and_pointers_checked) {
    pbuf b = {0};
    cr_assert_eq(pbuf_json_string(&b, "a\"b\\c\n", 6), 0);
    cr_assert_str_eq(b.data, "\"a\\\"b\\\\c\\u000a\"");
    pbuf_free(&b);
    cr_assert(ws_json_pointer_ok("/customerId"));
    cr_assert(ws_json_pointer_ok("/a~1b/~0c"));
    cr_assert_not(ws_json_pointer_ok("customerId"));
    cr_assert_not(ws_json_pointer_ok("/a}"));
    cr_assert_not(ws_json_pointer_ok("/a:-b"));
    cr_assert_not(ws_json_pointer_ok("/a~2"));
}

/* ------------------------------------------------------------ options */

typedef struct opt_fixture {
    uv_loop_t loop;
    engine eng;
    cd_instance inst;
    plugin_registry reg;
    const cd_plugin_desc *desc;
} opt_fixture;

static opt_fixture fx;

static void fx_setup(void) {
    memset(&fx, 0, sizeof(fx));
    log_set_level(CD_LOG_ERROR);
    cr_assert_eq(uv_loop_init(&fx.loop), 0);
    fx.eng.loop = &fx.loop;
    char err[512];
    cr_assert_eq(plugin_registry_load(&fx.reg, WS_SO, err, sizeof(err)), 0, "%s: %s", WS_SO, err);
    const plugin *p = plugin_find(&fx.reg, "websocket");
    cr_assert_not_null(p);
    cr_assert_eq(p->desc->kind, CD_PLUGIN_SINK);
    fx.desc = p->desc;
    instance_init(&fx.inst, &fx.eng, NULL, "kyc-verified", "push");
}

static void fx_teardown(void) {
    instance_release(&fx.inst);
    metrics_free(&fx.eng.metrics);
    plugin_registry_free(&fx.reg);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&fx.loop), 0, "the loop still has live handles");
}

TestSuite(websocket_options, .init = fx_setup, .fini = fx_teardown, .timeout = 30);

/* Validates `json` with the engine's config map, then runs init.  Returns
 * the first error ("" when init succeeded). */
static char *init_with(const char *json) {
    static char out[1024];
    static const char *const engine_keys[] = {"plugin", "name", NULL};
    json_t *sink = json_loads(json, 0, NULL);
    cr_assert_not_null(sink, "%s", json);
    diag d = {0};
    cd_config *cfg = NULL;
    int nerr =
        configmap_apply(fx.desc->options, sink, engine_keys, "test.json", "sinks[0]", &d, &cfg);
    json_decref(sink);
    out[0] = '\0';
    if (nerr) {
        snprintf(out, sizeof(out), "%s", d.count ? d.lines[0] : "?");
        diag_free(&d);
        return out;
    }
    diag_free(&d);
    void *ctx = NULL;
    int r = fx.desc->sink->init(&engine_host, &fx.inst, cfg, &ctx, out, sizeof(out));
    if (r == 0) {
        cr_assert_not_null(ctx);
        fx.desc->sink->destroy(ctx);
        out[0] = '\0';
    } else {
        cr_assert(out[0] != '\0', "init failed without a reason");
    }
    configmap_free(cfg);
    return out;
}

#define EXPECT_INIT(json, want)                                                                    \
    do {                                                                                           \
        const char *got_ = init_with(json);                                                        \
        if (*(want) == '\0')                                                                       \
            cr_assert_str_eq(got_, "", "%s: %s", json, got_);                                      \
        else                                                                                       \
            cr_assert(strstr(got_, want) != NULL, "%s: \"%s\", wanted \"%s\"", json, got_, want);  \
    } while (0)

Test(websocket_options, valid_configurations_initialise) {
    EXPECT_INIT("{\"plugin\":\"websocket\",\"jwt_secret\":\"s\"}", "");
    EXPECT_INIT("{\"plugin\":\"websocket\",\"jwt_secret\":\"s\",\"message\":{\"type\":\"KYC\","
                "\"data\":\"${/data}\"},\"customer\":\"/customer/id\"}",
                "");
    EXPECT_INIT("{\"plugin\":\"websocket\",\"mode\":\"apigateway\",\"endpoint\":"
                "\"http://127.0.0.1:3001/\",\"stage\":\"/dev/\"}",
                "");
}

Test(websocket_options, bad_options_name_the_option_and_the_reason) {
    EXPECT_INIT("{\"plugin\":\"websocket\"}", "jwt_secret / jwt_public_key: set exactly one");
    EXPECT_INIT("{\"plugin\":\"websocket\",\"jwt_secret\":\"s\",\"jwt_public_key\":\"k\"}",
                "set exactly one");
    EXPECT_INIT("{\"plugin\":\"websocket\",\"jwt_public_key\":\"not pem\"}",
                "jwt_public_key: not a PEM RSA public key");
    EXPECT_INIT("{\"plugin\":\"websocket\",\"jwt_secret\":\"s\",\"customer\":\"customerId\"}",
                "customer: must be a JSON pointer");
    EXPECT_INIT("{\"plugin\":\"websocket\",\"jwt_secret\":\"s\",\"message\":\"text ${/a}\"}",
                "message: must be a JSON object template");
    EXPECT_INIT("{\"plugin\":\"websocket\",\"jwt_secret\":\"s\",\"message\":[1]}",
                "message: must be a JSON object template");
    EXPECT_INIT("{\"plugin\":\"websocket\",\"jwt_secret\":\"s\",\"message\":{\"a\":\"${nope}\"}}",
                "message:");
    EXPECT_INIT("{\"plugin\":\"websocket\",\"jwt_secret\":\"s\",\"ping_interval_ms\":5000,"
                "\"idle_timeout_ms\":5000}",
                "idle_timeout_ms: must be longer than ping_interval_ms");
    EXPECT_INIT("{\"plugin\":\"websocket\",\"jwt_secret\":\"s\",\"listen\":\"8081\"}",
                "listen: must be HOST:PORT");
    EXPECT_INIT("{\"plugin\":\"websocket\",\"mode\":\"apigateway\"}",
                "endpoint: mode apigateway needs");
    EXPECT_INIT("{\"plugin\":\"websocket\",\"mode\":\"apigateway\",\"endpoint\":\"ftp://x\"}",
                "endpoint:");
    /* The engine's config map: unknown keys, enums, bounds. */
    EXPECT_INIT("{\"plugin\":\"websocket\",\"jwt_secret\":\"s\",\"jwt_secrte\":\"s\"}",
                "jwt_secrte");
    EXPECT_INIT("{\"plugin\":\"websocket\",\"mode\":\"lambda\"}", "mode");
    EXPECT_INIT("{\"plugin\":\"websocket\",\"jwt_secret\":\"s\",\"max_send_queue_bytes\":10}",
                "max_send_queue_bytes");
}

/* --------------------------------------------------- the shared server */

typedef struct sink_run {
    cd_instance inst;
    cd_config *cfg;
    void *ctx;
    int stopped;
} sink_run;

static int done_ok, done_other;
static int stop_calls;

static void t_record_done(cd_batch *batch, size_t index, cd_outcome outcome, int64_t retry_after_ms,
                          const char *reason) {
    if (outcome == CD_RECORD_OK)
        done_ok++;
    else
        done_other++;
}

static void t_on_stop(void *opaque, int status) {
    sink_run *r = opaque;
    cr_assert_eq(status, 0);
    cr_assert_not(r->stopped, "stop callback twice");
    r->stopped = 1;
    stop_calls++;
}

static cd_host shared_host;

static void run_init(sink_run *r, const char *name, const char *json) {
    static const char *const engine_keys[] = {"plugin", "name", NULL};
    memset(r, 0, sizeof(*r));
    instance_init(&r->inst, &fx.eng, NULL, name, "push");
    json_t *sink = json_loads(json, 0, NULL);
    diag d = {0};
    cr_assert_eq(
        configmap_apply(fx.desc->options, sink, engine_keys, "t.json", "sinks[0]", &d, &r->cfg), 0);
    diag_free(&d);
    json_decref(sink);
    char err[512];
    cr_assert_eq(fx.desc->sink->init(&shared_host, &r->inst, r->cfg, &r->ctx, err, sizeof(err)), 0,
                 "%s", err);
}

static void run_free(sink_run *r) {
    fx.desc->sink->destroy(r->ctx);
    configmap_free(r->cfg);
    instance_release(&r->inst);
}

static void push_one(sink_run *r) {
    static const char value[] = "{\"customerId\":\"c-1\",\"data\":{\"n\":1}}";
    cd_record rec = {
        .topic = "kyc", .value = value, .value_len = sizeof(value) - 1, .timestamp_ms = -1};
    cd_batch b = {.count = 1, .records = &rec};
    cr_assert_eq(fx.desc->sink->write(r->ctx, &b), 0);
}

Test(websocket_options, sinks_with_one_listen_share_a_server_until_the_last_stops) {
    engine_conf conf;
    memset(&conf, 0, sizeof(conf)); /* no redis_url: in-process */
    fx.eng.conf = &conf;
    shared_host = engine_host;
    shared_host.record_done = t_record_done;
    done_ok = done_other = stop_calls = 0;
    const char *cfg = "{\"plugin\":\"websocket\",\"listen\":\"127.0.0.1:0\",\"jwt_secret\":\"s\"}";
    sink_run a, b, c;
    run_init(&a, "kyc-verified", cfg);
    run_init(&b, "documents-processed", cfg);
    run_init(&c, "policy-recommended",
             "{\"plugin\":\"websocket\",\"listen\":\"127.0.0.1:0\",\"jwt_secret\":\"other\"}");
    char err[512] = "";
    cr_assert_eq(fx.desc->sink->start(a.ctx, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(fx.desc->sink->start(b.ctx, err, sizeof(err)), 0, "%s", err);
    /* A different key on the same address: refused, naming the first sink. */
    cr_assert_lt(fx.desc->sink->start(c.ctx, err, sizeof(err)), 0);
    cr_assert(strstr(err, "differs from the sink that opened 127.0.0.1:0 (kyc-verified/push)"),
              "%s", err);
    run_free(&c);
    push_one(&a);
    push_one(&b);
    cr_assert_eq(done_ok, 2);
    /* The owner stops first: the server stays for b. */
    cr_assert_eq(fx.desc->sink->stop(a.ctx, t_on_stop, &a), 0);
    uv_run(&fx.loop, UV_RUN_NOWAIT);
    uv_run(&fx.loop, UV_RUN_NOWAIT);
    cr_assert(a.stopped, "a's stop did not complete while b holds the server");
    run_free(&a);
    push_one(&b);
    cr_assert_eq(done_ok, 3);
    cr_assert_eq(done_other, 0);
    /* The last one closes the server; the loop ends with no handle left. */
    cr_assert_eq(fx.desc->sink->stop(b.ctx, t_on_stop, &b), 0);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    cr_assert(b.stopped);
    cr_assert_eq(stop_calls, 2);
    run_free(&b);
    fx.eng.conf = NULL;
}

/* ----------------------------------------------- the lazy wslay context */

/* A connection holds a wslay context only between a frame's first byte and
 * the end of its message (plugins/sink-websocket/websocket_server.c): it
 * counts the bytes it hands wslay against the frames wslay reports.  Here a
 * plain-socket client sends random valid frame streams (text of one- to
 * three-byte characters, binary, fragmented messages with pings and pongs
 * between the fragments, the 7- and 16-bit length forms) cut at random
 * points into separate reads, and after every read checks
 * sink_websocket_protocol_contexts against where the bytes sent so far end:
 * 1 inside a frame or a fragmented message, 0 between messages.  Every ping
 * must come back as its pong, in order, with no close. */

static int ws_port_logged;

static void t_log(const cd_instance *inst, cd_log_level level, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    static const char tag[] = "websocket server listening on 127.0.0.1:";
    const char *p = strstr(line, tag);
    if (p) ws_port_logged = atoi(p + sizeof(tag) - 1);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(uint32_t n) { /* 0 .. n-1 (xorshift64*) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ULL) >> 33) % n;
}

/* The bytes to send, and after each byte whether a context must be held
 * once the server has read up to there. */
typedef struct stream_plan {
    unsigned char *b;
    unsigned char *held; /* per byte */
    unsigned char *fend; /* per byte: a frame's last */
    size_t len, cap;
    unsigned char pings[64][125];
    size_t ping_len[64];
    size_t npings;
} stream_plan;

static void plan_put(stream_plan *p, const unsigned char *d, size_t n, int held_after) {
    if (p->len + n > p->cap) {
        p->cap = (p->len + n) * 2;
        p->b = realloc(p->b, p->cap);
        p->held = realloc(p->held, p->cap);
        p->fend = realloc(p->fend, p->cap);
        cr_assert(p->b && p->held && p->fend);
    }
    memcpy(p->b + p->len, d, n);
    memset(p->held + p->len, 1, n);
    memset(p->fend + p->len, 0, n);
    p->len += n;
    p->held[p->len - 1] = (unsigned char)held_after;
    p->fend[p->len - 1] = 1;
}

/* One masked client frame; held_after: whether a message is still open
 * after it. */
static void plan_frame(stream_plan *p, int fin, int opcode, const unsigned char *pl, size_t n,
                       int held_after) {
    unsigned char f[14 + 4096];
    size_t h = 0;
    f[h++] = (unsigned char)((fin ? 0x80 : 0) | opcode);
    if (n < 126) {
        f[h++] = (unsigned char)(0x80 | n);
    } else {
        f[h++] = 0x80 | 126;
        f[h++] = (unsigned char)(n >> 8);
        f[h++] = (unsigned char)n;
    }
    unsigned char key[4] = {(unsigned char)rnd(256), (unsigned char)rnd(256),
                            (unsigned char)rnd(256), (unsigned char)rnd(256)};
    memcpy(f + h, key, 4);
    h += 4;
    for (size_t i = 0; i < n; i++)
        f[h + i] = pl[i] ^ key[i % 4];
    plan_put(p, f, h + n, held_after);
}

static void plan_control(stream_plan *p, int held_after) {
    unsigned char pl[125];
    size_t n = rnd(8) == 0 ? 125 : rnd(20);
    for (size_t i = 0; i < n; i++)
        pl[i] = (unsigned char)rnd(256);
    if (rnd(3) == 0) { /* an unsolicited pong: nothing comes back */
        plan_frame(p, 1, 0xA, pl, n, held_after);
        return;
    }
    cr_assert_lt(p->npings, 64);
    memcpy(p->pings[p->npings], pl, n);
    p->ping_len[p->npings++] = n;
    plan_frame(p, 1, 0x9, pl, n, held_after);
}

/* A data message of about `size` bytes (text: valid UTF-8 of one- to
 * three-byte characters, cut anywhere between fragments), in nfrag frames
 * with control frames between some of them. */
static void plan_message(stream_plan *p, size_t size, size_t nfrag) {
    unsigned char m[4096];
    int text = rnd(2);
    size_t n = 0;
    while (n < size) {
        if (!text) {
            m[n++] = (unsigned char)rnd(256);
        } else if (rnd(3) == 0 && n + 2 <= size) {
            m[n++] = 0xC3, m[n++] = 0xA9; /* é */
        } else if (rnd(4) == 0 && n + 3 <= size) {
            m[n++] = 0xE2, m[n++] = 0x82, m[n++] = 0xAC; /* € */
        } else {
            m[n++] = (unsigned char)('a' + rnd(26));
        }
    }
    size_t off = 0;
    for (size_t i = 0; i < nfrag; i++) {
        size_t part = i + 1 == nfrag ? n - off : rnd((uint32_t)(n - off + 1));
        plan_frame(p, i + 1 == nfrag, i == 0 ? (text ? 0x1 : 0x2) : 0x0, m + off, part,
                   i + 1 < nfrag);
        off += part;
        if (i + 1 < nfrag && rnd(2)) plan_control(p, 1);
    }
}

static double contexts_gauge(void) {
    for (const cd_metric *m = fx.eng.metrics.head; m; m = m->next)
        if (strcmp(m->name, "sink_websocket_protocol_contexts") == 0 && m->value != 0)
            return m->value;
    return 0;
}

static double connections_gauge(void) {
    for (const cd_metric *m = fx.eng.metrics.head; m; m = m->next)
        if (strcmp(m->name, "sink_websocket_connections") == 0 && m->value != 0) return m->value;
    return 0;
}

static void pump(int rounds) {
    for (int i = 0; i < rounds; i++)
        uv_run(&fx.loop, UV_RUN_NOWAIT);
}

/* Reads what the server sent into in (non-blocking), running the loop. */
static void client_read(int fd, pbuf *in) {
    char tmp[65536];
    pump(2);
    for (;;) {
        ssize_t r = recv(fd, tmp, sizeof(tmp), 0);
        if (r > 0) {
            cr_assert_eq(pbuf_append(in, tmp, (size_t)r), 0);
            continue;
        }
        cr_assert(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK),
                  "the server closed the connection");
        return;
    }
}

/* Takes one whole server frame from in: opcode and payload; 0 when in
 * holds no whole frame. */
static int server_frame(pbuf *in, int *opcode, unsigned char *payload, size_t *n) {
    const unsigned char *d = (const unsigned char *)in->data;
    if (in->len < 2) return 0;
    cr_assert_eq(d[1] & 0x80, 0, "a server frame is masked");
    cr_assert(d[0] & 0x80, "the server fragments");
    size_t len = d[1] & 0x7F, h = 2;
    if (len == 126) {
        if (in->len < 4) return 0;
        len = (size_t)d[2] << 8 | d[3];
        h = 4;
    }
    cr_assert_lt(len, 126, "a server frame of %zu bytes", len);
    if (in->len < h + len) return 0;
    *opcode = d[0] & 0x0F;
    memcpy(payload, d + h, len);
    *n = len;
    memmove(in->data, in->data + h + len, in->len - h - len);
    in->len -= h + len;
    return 1;
}

Test(websocket_options, random_splits_keep_the_lazy_wslay_context_in_step) {
    engine_conf conf;
    memset(&conf, 0, sizeof(conf)); /* in-process */
    fx.eng.conf = &conf;
    shared_host = engine_host;
    shared_host.log = t_log;
    ws_port_logged = 0;
    sink_run a;
    run_init(&a, "kyc-verified",
             "{\"plugin\":\"websocket\",\"listen\":\"127.0.0.1:0\",\"jwt_secret\":\"s\"}");
    char err[512] = "";
    cr_assert_eq(fx.desc->sink->start(a.ctx, err, sizeof(err)), 0, "%s", err);
    cr_assert_gt(ws_port_logged, 0, "no port logged");

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ws_port_logged)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    char *tok = token(JWT_ALG_HS256, "s", "c-1", time(NULL) + 600);
    char req[1024];
    int rl = snprintf(req, sizeof(req),
                      "GET /ws?token=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n",
                      tok);
    free(tok);
    cr_assert_eq(send(fd, req, (size_t)rl, 0), rl);
    pbuf in = {0};
    char *end = NULL;
    for (int i = 0; i < 1000 && end == NULL; i++) {
        client_read(fd, &in);
        end = in.len ? memmem(in.data, in.len, "\r\n\r\n", 4) : NULL;
    }
    cr_assert_not_null(end, "no upgrade answer");
    cr_assert_eq(strncmp(in.data, "HTTP/1.1 101 ", 13), 0, "%.*s", (int)in.len, in.data);
    size_t hl = (size_t)(end + 4 - in.data);
    memmove(in.data, in.data + hl, in.len - hl);
    in.len -= hl;
    /* The hello, in its own context, gone with it. */
    int op = -1;
    unsigned char pl[4096];
    size_t n = 0;
    for (int i = 0; i < 1000 && !server_frame(&in, &op, pl, &n); i++)
        client_read(fd, &in);
    cr_assert_eq(op, 0x1);
    cr_assert(n > 0 && memmem(pl, n, "connectd.hello", 14) != NULL);
    cr_assert_eq(contexts_gauge(), 0);
    cr_assert_eq(connections_gauge(), 1);

    size_t checked = 0, held_seen = 0;
    for (int iter = 0; iter < 500; iter++) {
        stream_plan p = {0};
        for (int k = 1 + (int)rnd(4); k > 0; k--) {
            uint32_t kind = rnd(10);
            if (kind < 2)
                plan_control(&p, 0);
            else
                plan_message(&p, rnd(10) == 0 ? 126 + rnd(3900) : rnd(140),
                             kind < 6 ? 1 : 2 + rnd(3));
        }
        /* Cut anywhere (single bytes, a few, many), and often right
         * after a frame. */
        size_t off = 0;
        while (off < p.len) {
            static const uint32_t sizes[] = {1, 2, 3, 5, 9, 17, 64, 700};
            size_t want = 1 + rnd(sizes[rnd(8)]);
            if (rnd(3) == 0)
                for (want = 1; off + want < p.len && !p.fend[off + want - 1]; want++)
                    ;
            size_t piece = want < p.len - off ? want : p.len - off;
            cr_assert_eq(send(fd, p.b + off, piece, 0), (ssize_t)piece);
            off += piece;
            pump(2);
            double want_held = p.held[off - 1];
            cr_assert_eq(contexts_gauge(), want_held,
                         "iteration %d, after byte %zu of %zu: %g contexts, expected %g", iter, off,
                         p.len, contexts_gauge(), want_held);
            checked++;
            held_seen += p.held[off - 1];
        }
        /* Every ping answered, in order; nothing else. */
        for (size_t i = 0; i < p.npings; i++) {
            int got = 0;
            for (int t = 0; t < 1000 && !(got = server_frame(&in, &op, pl, &n)); t++)
                client_read(fd, &in);
            cr_assert(got, "iteration %d: pong %zu of %zu missing", iter, i + 1, p.npings);
            cr_assert_eq(op, 0xA, "iteration %d: opcode %d, a pong expected", iter, op);
            cr_assert_eq(n, p.ping_len[i]);
            cr_assert_eq(memcmp(pl, p.pings[i], n), 0, "iteration %d: pong %zu differs", iter, i);
        }
        client_read(fd, &in);
        cr_assert_eq(in.len, 0, "iteration %d: %zu unexpected bytes", iter, in.len);
        cr_assert_eq(contexts_gauge(), 0);
        free(p.b);
        free(p.held);
        free(p.fend);
    }
    /* Both kinds of cut points were checked, many times. */
    cr_assert_gt(held_seen, 500);
    cr_assert_gt(checked - held_seen, 500);
    cr_assert_eq(connections_gauge(), 1);

    close(fd);
    for (int i = 0; i < 1000 && connections_gauge() != 0; i++)
        pump(1);
    cr_assert_eq(connections_gauge(), 0);
    cr_assert_eq(contexts_gauge(), 0);
    pbuf_free(&in);
    cr_assert_eq(fx.desc->sink->stop(a.ctx, t_on_stop, &a), 0);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    run_free(&a);
    fx.eng.conf = NULL;
}
