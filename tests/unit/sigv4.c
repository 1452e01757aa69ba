/*
 * The SigV4 signer: SHA-256 and HMAC-SHA256 against FIPS 180 / RFC 4231
 * vectors; Authorization byte for byte against AWS's published SigV4 test
 * suite and S3 documentation examples (and, for the suite cases whose
 * signatures are not reproduced in this file's sources, against botocore
 * 1.43's SigV4Auth, AWS's own signer, which runs that suite); against
 * libcurl 7.88's CURLOPT_AWS_SIGV4 for a DynamoDB POST; API Gateway's
 * "@connections" path checked by tests/unit/httpc_server.py recomputing the
 * signature; the key cache; and a micro-benchmark (printed, not asserted).
 */
#include <criterion/criterion.h>

#include "sigv4.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "pyserver.h"

#define AKID       "AKIDEXAMPLE"
#define SECRET     "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SUITE_TIME ((time_t)1440938160) /* 20150830T123600Z */
#define HOST       "example.amazonaws.com"
#define PREFIX     "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "

static void hex(const uint8_t *d, size_t n, char *out) {
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

/* ------------------------------------------------------------ primitives */
static void fips_vectors(void) {
    char h[65];
    sigv4_sha256_hex("", 0, h);
    cr_assert_str_eq(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sigv4_sha256_hex("abc", 3, h);
    cr_assert_str_eq(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sigv4_sha256_hex(two, strlen(two), h);
    cr_assert_str_eq(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    char *million = malloc(1000000);
    cr_assert_not_null(million);
    memset(million, 'a', 1000000);
    sigv4_sha256_hex(million, 1000000, h);
    free(million);
    cr_assert_str_eq(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

Test(sigv4, sha256_fips_vectors) {
    fips_vectors(); /* SHA extensions when the CPU has them */
    cr_log_info("SHA extensions: %s", sigv4_sha256_accelerated(0) ? "yes" : "no");
    sigv4_sha256_accelerated(1);
    fips_vectors(); /* portable C */
    sigv4_sha256_accelerated(0);
}

/* Both compressions agree on every length across several blocks. */
Test(sigv4, sha256_paths_agree) {
    if (!sigv4_sha256_accelerated(0)) cr_skip_test("no SHA extensions on this CPU");
    uint8_t buf[1100];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(buf); i++) {
        x = x * 1103515245 + 12345;
        buf[i] = (uint8_t)(x >> 16);
    }
    for (size_t n = 0; n <= sizeof(buf); n++) {
        uint8_t a[32], b[32];
        sigv4_sha256_accelerated(0);
        sigv4_sha256(buf + (n % 7), n - (n % 7), a);
        sigv4_sha256_accelerated(1);
        sigv4_sha256(buf + (n % 7), n - (n % 7), b);
        cr_assert(memcmp(a, b, 32) == 0, "length %zu", n - (n % 7));
    }
    sigv4_sha256_accelerated(0);
}

Test(sigv4, hmac_rfc4231_vectors) {
    uint8_t key[131], d[32];
    char h[65];
    memset(key, 0x0b, 20);
    sigv4_hmac_sha256(key, 20, "Hi There", 8, d);
    hex(d, 32, h);
    cr_assert_str_eq(h, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    const char *what = "what do ya want for nothing?";
    sigv4_hmac_sha256("Jefe", 4, what, strlen(what), d);
    hex(d, 32, h);
    cr_assert_str_eq(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    memset(key, 0xaa, 131);
    const char *big = "Test Using Larger Than Block-Size Key - Hash Key First";
    sigv4_hmac_sha256(key, 131, big, strlen(big), d);
    hex(d, 32, h);
    cr_assert_str_eq(h, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

/* ------------------------------------------------------ the test suite */
typedef struct vec {
    const char *name, *method, *path, *query;
    sigv4_header headers[4];
    size_t n_headers;
    const char *body;
    const char *token;
    const char *want; /* Authorization after PREFIX */
} vec;

static const char *STS_TOKEN =
    "AQoDYXdzEPT//////////"
    "wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx"
    "7"
    "mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8T"
    "x6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvK"
    "Tr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

static void sign_vec(const vec *v, sigv4_key_cache *c) {
    sigv4_header hs[6];
    size_t n = 0;
    hs[n++] = (sigv4_header){"Host", HOST};
    for (size_t i = 0; i < v->n_headers; i++)
        hs[n++] = v->headers[i];
    sigv4_request r = {
        .method = v->method,
        .path = v->path,
        .query = v->query,
        .headers = hs,
        .n_headers = n,
        .payload = v->body,
        .payload_len = v->body ? strlen(v->body) : 0,
        .access_key = AKID,
        .secret_key = SECRET,
        .session_token = v->token,
        .region = "us-east-1",
        .service = "service",
        .time = SUITE_TIME,
    };
    char auth[512], date[17], err[128] = "";
    int ret = sigv4_sign(c, &r, auth, sizeof(auth), date, err, sizeof(err));
    cr_assert_eq(ret, 0, "%s: %s", v->name, err);
    cr_expect_str_eq(date, "20150830T123600Z");
    char want[512];
    snprintf(want, sizeof(want), PREFIX "%s", v->want);
    cr_expect_str_eq(auth, want, "%s", v->name);
}

/* Published in AWS's aws-sig-v4-test-suite (and widely reproduced). */
static const vec published[] = {
    {"get-vanilla",
     "GET",
     "/",
     NULL,
     {{0}},
     0,
     NULL,
     NULL,
     "SignedHeaders=host;x-amz-date, "
     "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
    {"post-vanilla",
     "POST",
     "/",
     NULL,
     {{0}},
     0,
     NULL,
     NULL,
     "SignedHeaders=host;x-amz-date, "
     "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
    {"get-vanilla-query-order-key-case",
     "GET",
     "/",
     "Param2=value2&Param1=value1",
     {{0}},
     0,
     NULL,
     NULL,
     "SignedHeaders=host;x-amz-date, "
     "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
    {"post-x-www-form-urlencoded",
     "POST",
     "/",
     NULL,
     {{"Content-Type", "application/x-www-form-urlencoded"}},
     1,
     "Param1=value1",
     NULL,
     "SignedHeaders=content-type;host;x-amz-date, "
     "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"},
};

/* The suite's cases as botocore 1.43's SigV4Auth signs them (it runs the
 * suite in its own tests); get-space's matches the suite's published one. */
static const vec suite_botocore[] = {
    {"get-space",
     "GET",
     "/example space/",
     NULL,
     {{0}},
     0,
     NULL,
     NULL,
     "SignedHeaders=host;x-amz-date, "
     "Signature=652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741"},
    {"get-slash",
     "GET",
     "//",
     NULL,
     {{0}},
     0,
     NULL,
     NULL,
     "SignedHeaders=host;x-amz-date, "
     "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
    {"get-slashes",
     "GET",
     "//example//",
     NULL,
     {{0}},
     0,
     NULL,
     NULL,
     "SignedHeaders=host;x-amz-date, "
     "Signature=9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84"},
    {"get-relative-relative",
     "GET",
     "/example1/example2/../..",
     NULL,
     {{0}},
     0,
     NULL,
     NULL,
     "SignedHeaders=host;x-amz-date, "
     "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
    {"get-slash-pointless-dot",
     "GET",
     "/./example",
     NULL,
     {{0}},
     0,
     NULL,
     NULL,
     "SignedHeaders=host;x-amz-date, "
     "Signature=ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5"},
    {"get-utf8",
     "GET",
     "/\xe1\x88\xb4",
     NULL,
     {{0}},
     0,
     NULL,
     NULL,
     "SignedHeaders=host;x-amz-date, "
     "Signature=8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"},
    {"get-unreserved",
     "GET",
     "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
     NULL,
     {{0}},
     0,
     NULL,
     NULL,
     "SignedHeaders=host;x-amz-date, "
     "Signature=07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"},
    {"get-vanilla-query-order-value",
     "GET",
     "/",
     "Param1=value2&Param1=Value1",
     {{0}},
     0,
     NULL,
     NULL,
     "SignedHeaders=host;x-amz-date, "
     "Signature=eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1"},
    {"get-header-value-trim",
     "GET",
     "/",
     NULL,
     {{"My-Header1", " value1"}, {"My-Header2", " \"a   b   c\""}},
     2,
     NULL,
     NULL,
     "SignedHeaders=host;my-header1;my-header2;x-amz-date, "
     "Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"},
    {"post-sts-header-after",
     "POST",
     "/",
     NULL,
     {{0}},
     0,
     NULL,
     "(set below)",
     "SignedHeaders=host;x-amz-date;x-amz-security-token, "
     "Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"},
};

Test(sigv4, aws_test_suite_published) {
    sigv4_key_cache *c = sigv4_key_cache_new();
    cr_assert_not_null(c);
    for (size_t i = 0; i < sizeof(published) / sizeof(published[0]); i++) {
        sign_vec(&published[i], c);
        sign_vec(&published[i], NULL); /* no cache: same bytes */
    }
    cr_expect_eq(sigv4_key_cache_derivations(c), 1);
    sigv4_key_cache_free(c);
}

Test(sigv4, aws_test_suite_botocore) {
    sigv4_key_cache *c = sigv4_key_cache_new();
    for (size_t i = 0; i < sizeof(suite_botocore) / sizeof(suite_botocore[0]); i++) {
        vec v = suite_botocore[i];
        if (v.token) v.token = STS_TOKEN;
        sign_vec(&v, c);
    }
    sigv4_key_cache_free(c);
}

static void canon(const sigv4_request *r, const char *want) {
    char out[2048], err[128] = "";
    long n = sigv4_canonical_request(r, out, sizeof(out), err, sizeof(err));
    cr_assert_geq(n, 0, "%s", err);
    cr_expect_str_eq(out, want);
    cr_expect_eq((size_t)n, strlen(want));
}

#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

Test(sigv4, canonical_headers_and_query) {
    /* get-header-key-duplicate: one name, values in the order given. */
    sigv4_header hs[] = {{"Host", HOST},           {"My-Header1", "value2"},
                         {"my-header1", "value2"}, {"MY-HEADER1", "value1"},
                         {"x-amz-meta-b", "2"},    {"x-amz-meta", "1"}};
    sigv4_request r = {.method = "GET",
                       .path = "/",
                       .query = "b=2&a=%7e&c&a=1+1&%41=x&z=%zz&e=%2f%2F",
                       .headers = hs,
                       .n_headers = 6,
                       .access_key = AKID,
                       .secret_key = SECRET,
                       .region = "us-east-1",
                       .service = "service",
                       .time = SUITE_TIME};
    canon(&r, "GET\n/\n"
              "A=x&a=1%2B1&a=~&b=2&c=&e=%2F%2F&z=%25zz\n"
              "host:example.amazonaws.com\n"
              "my-header1:value2,value2,value1\n"
              "x-amz-date:20150830T123600Z\n"
              "x-amz-meta:1\n"
              "x-amz-meta-b:2\n"
              "\n"
              "host;my-header1;x-amz-date;x-amz-meta;x-amz-meta-b\n" EMPTY_SHA);
}

/* ------------------------------------------- S3's documented examples */
/* https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html */
static void s3_doc(const char *method, const char *path, const char *query,
                   const sigv4_header *extra, size_t n_extra, const char *body, const char *want) {
    sigv4_header hs[4] = {{"Host", "examplebucket.s3.amazonaws.com"}};
    for (size_t i = 0; i < n_extra; i++)
        hs[1 + i] = extra[i];
    sigv4_request r = {.method = method,
                       .path = path,
                       .query = query,
                       .headers = hs,
                       .n_headers = 1 + n_extra,
                       .payload = body,
                       .payload_len = body ? strlen(body) : 0,
                       .content_sha256 = 1,
                       .access_key = "AKIAIOSFODNN7EXAMPLE",
                       .secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                       .region = "us-east-1",
                       .service = "s3",
                       .time = (time_t)1369353600};
    char auth[512], date[17], err[128] = "";
    cr_assert_eq(sigv4_sign(NULL, &r, auth, sizeof(auth), date, err, sizeof(err)), 0, "%s", err);
    cr_expect_str_eq(date, "20130524T000000Z");
    cr_expect_str_eq(auth, want);
}

Test(sigv4, s3_documented_examples) {
    const char *p = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
                    "aws4_request, ";
    char want[512];
    sigv4_header range[] = {{"Range", "bytes=0-9"}};
    snprintf(want, sizeof(want),
             "%sSignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
             "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
             p);
    s3_doc("GET", "/test.txt", NULL, range, 1, NULL, want);
    /* S3 encodes the path once: the wire's "%24" is signed as it is. */
    sigv4_header put[] = {{"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                          {"x-amz-storage-class", "REDUCED_REDUNDANCY"}};
    snprintf(want, sizeof(want),
             "%sSignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
             "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
             p);
    s3_doc("PUT", "/test%24file.text", NULL, put, 2, "Welcome to Amazon S3.", want);
    s3_doc("PUT", "/test$file.text", NULL, put, 2, "Welcome to Amazon S3.", want);
    snprintf(want, sizeof(want),
             "%sSignedHeaders=host;x-amz-content-sha256;x-amz-date, "
             "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
             p);
    s3_doc("GET", "/", "lifecycle", NULL, 0, NULL, want);
    snprintf(want, sizeof(want),
             "%sSignedHeaders=host;x-amz-content-sha256;x-amz-date, "
             "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
             p);
    s3_doc("GET", "/", "max-keys=2&prefix=J", NULL, 0, NULL, want);
}

/* ---------------------------------------------------------- API Gateway */
static sigv4_request apigw(const char *path, sigv4_header *hs) {
    hs[0] = (sigv4_header){"Host", "abc123.execute-api.eu-west-1.amazonaws.com"};
    hs[1] = (sigv4_header){"Content-Type", "application/json"};
    static const char body[] = "{\"hello\":\"world\"}";
    return (sigv4_request){.method = "POST",
                           .path = path,
                           .headers = hs,
                           .n_headers = 2,
                           .payload = body,
                           .payload_len = sizeof(body) - 1,
                           .access_key = AKID,
                           .secret_key = SECRET,
                           .region = "eu-west-1",
                           .service = "execute-api",
                           .time = SUITE_TIME};
}

/* Expected values from botocore 1.43 (what boto3's
 * apigatewaymanagementapi.post_to_connection signs). */
Test(sigv4, api_gateway_connections_path) {
    sigv4_header hs[2];
    char auth[512], date[17], err[128] = "";
    const char *p = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/execute-api/"
                    "aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=";
    char want[512];

    sigv4_request r = apigw("/stage/%40connections/abc%3D", hs);
    cr_assert_eq(sigv4_sign(NULL, &r, auth, sizeof(auth), date, err, sizeof(err)), 0, "%s", err);
    snprintf(want, sizeof(want), "%s%s", p,
             "12d0d55d38ded072832303d15bf64f21e7e306873b75d39a13e915c17c4df433");
    cr_expect_str_eq(auth, want);
    char creq[1024];
    cr_assert_gt(sigv4_canonical_request(&r, creq, sizeof(creq), err, sizeof(err)), 0);
    cr_expect(strncmp(creq, "POST\n/stage/%2540connections/abc%253D\n\n", 39) == 0, "%s", creq);

    r = apigw("/stage/@connections/abc%3D", hs);
    cr_assert_eq(sigv4_sign(NULL, &r, auth, sizeof(auth), date, err, sizeof(err)), 0, "%s", err);
    snprintf(want, sizeof(want), "%s%s", p,
             "57085fe55ead17e5ba2071defe5fe7ee4a505ae8bb4b6964c394eb7c6421488c");
    cr_expect_str_eq(auth, want);
}

/* ------------------------------------------------------------ the server */
static void peer_start(peer *s) {
    peer_start_script(s, "httpc_server.py", NULL);
}

static size_t collect(char *p, size_t size, size_t n, void *opaque) {
    char *buf = opaque;
    size_t have = strlen(buf), add = size * n;
    if (have + add < 4096) {
        memcpy(buf + have, p, add);
        buf[have + add] = '\0';
    }
    return size * n;
}

/* Our signature on the wire, checked by a server that recomputes it the
 * way AWS does (the path encoded once more). */
static long send_signed(int port, const char *path, const char *token, char *resp) {
    char host[64], url[256];
    snprintf(host, sizeof(host), "127.0.0.1:%d", port);
    snprintf(url, sizeof(url), "http://%s%s", host, path);
    sigv4_header hs[] = {{"Host", host}, {"Content-Type", "application/json"}};
    static const char body[] = "{\"hello\":\"world\"}";
    sigv4_request r = {.method = "POST",
                       .path = path,
                       .query = strchr(path, '?') ? strchr(path, '?') + 1 : NULL,
                       .headers = hs,
                       .n_headers = 2,
                       .payload = body,
                       .payload_len = sizeof(body) - 1,
                       .access_key = AKID,
                       .secret_key = SECRET,
                       .session_token = token,
                       .region = "eu-west-1",
                       .service = "execute-api",
                       .time = time(NULL)};
    char pathonly[256];
    snprintf(pathonly, sizeof(pathonly), "%.*s", (int)strcspn(path, "?"), path);
    r.path = pathonly;
    char auth[512], date[17], err[128] = "";
    cr_assert_eq(sigv4_sign(NULL, &r, auth, sizeof(auth), date, err, sizeof(err)), 0, "%s", err);
    char h1[600], h2[64], h3[512];
    snprintf(h1, sizeof(h1), "Authorization: %s", auth);
    snprintf(h2, sizeof(h2), "X-Amz-Date: %s", date);
    struct curl_slist *l = curl_slist_append(NULL, "Content-Type: application/json");
    l = curl_slist_append(l, h1);
    l = curl_slist_append(l, h2);
    if (token) {
        snprintf(h3, sizeof(h3), "X-Amz-Security-Token: %s", token);
        l = curl_slist_append(l, h3);
    }
    CURL *e = curl_easy_init();
    cr_assert_not_null(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, l);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)(sizeof(body) - 1));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
    resp[0] = '\0';
    CURLcode rc = curl_easy_perform(e);
    cr_assert_eq(rc, CURLE_OK, "%s", curl_easy_strerror(rc));
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    curl_slist_free_all(l);
    return status;
}

Test(sigv4, verified_by_a_recomputing_server) {
    peer s;
    peer_start(&s);
    char resp[4096];
    long st = send_signed(s.port, "/sigv4/stage/%40connections/abc%3D", NULL, resp);
    cr_expect_eq(st, 200, "%s", resp);
    st = send_signed(s.port, "/sigv4/stage/@connections/a%2Fb=c", NULL, resp);
    cr_expect_eq(st, 200, "%s", resp);
    st = send_signed(s.port, "/sigv4/x?service=execute-api&b=%20x&a=~1&a=0", STS_TOKEN, resp);
    cr_expect_eq(st, 200, "%s", resp);
    peer_stop(&s);
}

/* ---------------------------------------------------- libcurl's signer */
/* Captures what curl sends: a listening socket nobody accepts from (the
 * kernel completes the handshake), the request headers through
 * CURLOPT_DEBUGFUNCTION, and a short timeout to end the transfer. */
static int debug_cb(CURL *e, curl_infotype type, char *data, size_t size, void *opaque) {
    if (type == CURLINFO_HEADER_OUT) {
        char *buf = opaque;
        size_t have = strlen(buf);
        if (have + size < 4096) {
            memcpy(buf + have, data, size);
            buf[have + size] = '\0';
        }
    }
    return 0;
}

static void header_value(const char *headers, const char *name, char *out, size_t outlen) {
    size_t nl = strlen(name);
    for (const char *p = headers; p && *p; p = strstr(p, "\r\n") ? strstr(p, "\r\n") + 2 : NULL) {
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(out, outlen, "%.*s", (int)strcspn(v, "\r\n"), v);
            return;
        }
    }
    out[0] = '\0';
}

static void curl_agrees(const char *token) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(fd, 4), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    int port = ntohs(sa.sin_port);

    static const char body[] =
        "{\"RequestItems\":{\"events\":[{\"PutRequest\":{\"Item\":{\"pk\":{\"S\":\"customer-1\"},"
        "\"payload\":{\"S\":\"hello\"}}}}]}}";
    char url[64], host[64], tokh[600];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    snprintf(host, sizeof(host), "127.0.0.1:%d", port);
    struct curl_slist *l = curl_slist_append(NULL, "Content-Type: application/x-amz-json-1.0");
    l = curl_slist_append(l, "X-Amz-Target: DynamoDB_20120810.BatchWriteItem");
    if (token) {
        snprintf(tokh, sizeof(tokh), "X-Amz-Security-Token: %s", token);
        l = curl_slist_append(l, tokh);
    }
    char sent[4096] = "";
    CURL *e = curl_easy_init();
    cr_assert_not_null(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, l);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)(sizeof(body) - 1));
    curl_easy_setopt(e, CURLOPT_AWS_SIGV4, "aws:amz:eu-west-1:dynamodb");
    curl_easy_setopt(e, CURLOPT_USERNAME, AKID);
    curl_easy_setopt(e, CURLOPT_PASSWORD, SECRET);
    curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
    curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, debug_cb);
    curl_easy_setopt(e, CURLOPT_DEBUGDATA, sent);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 300L);
    curl_easy_perform(e); /* times out: nobody answers */
    curl_easy_cleanup(e);
    curl_slist_free_all(l);
    close(fd);

    char curl_auth[512], curl_date[64];
    header_value(sent, "Authorization", curl_auth, sizeof(curl_auth));
    header_value(sent, "X-Amz-Date", curl_date, sizeof(curl_date));
    cr_assert_neq(curl_auth[0], '\0', "curl sent no Authorization: %s", sent);
    cr_assert_eq(strlen(curl_date), 16, "%s", sent);
    struct tm tm = {0};
    cr_assert_not_null(strptime(curl_date, "%Y%m%dT%H%M%SZ", &tm));

    sigv4_header hs[] = {{"Host", host},
                         {"Content-Type", "application/x-amz-json-1.0"},
                         {"X-Amz-Target", "DynamoDB_20120810.BatchWriteItem"}};
    sigv4_request r = {.method = "POST",
                       .path = "/",
                       .headers = hs,
                       .n_headers = 3,
                       .payload = body,
                       .payload_len = sizeof(body) - 1,
                       .access_key = AKID,
                       .secret_key = SECRET,
                       .session_token = token,
                       .region = "eu-west-1",
                       .service = "dynamodb",
                       .time = timegm(&tm)};
    char auth[512], date[17], err[128] = "";
    cr_assert_eq(sigv4_sign(NULL, &r, auth, sizeof(auth), date, err, sizeof(err)), 0, "%s", err);
    cr_expect_str_eq(date, curl_date);
    cr_expect_str_eq(auth, curl_auth);
    cr_log_info("libcurl and sigv4 both sent: %s", curl_auth);
}

Test(sigv4, agrees_with_libcurl) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    curl_agrees(NULL);
    curl_agrees(STS_TOKEN);
    curl_global_cleanup();
}

/* ------------------------------------------------------------ the cache */
static void sign_at(sigv4_key_cache *c, time_t t, const char *secret, const char *region,
                    char *auth) {
    sigv4_header hs[] = {{"host", "dynamodb.eu-west-1.amazonaws.com"}};
    sigv4_request r = {.method = "POST",
                       .path = "/",
                       .headers = hs,
                       .n_headers = 1,
                       .payload = "{}",
                       .payload_len = 2,
                       .access_key = AKID,
                       .secret_key = secret,
                       .region = region,
                       .service = "dynamodb",
                       .time = t};
    char date[17], err[128] = "", fresh[512];
    cr_assert_eq(sigv4_sign(c, &r, auth, 512, date, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(sigv4_sign(NULL, &r, fresh, sizeof(fresh), date, err, sizeof(err)), 0);
    cr_assert_str_eq(auth, fresh); /* cached key == freshly derived key */
}

Test(sigv4, key_cache_reuse_and_refresh) {
    sigv4_key_cache *c = sigv4_key_cache_new();
    char auth[512];
    time_t day = (time_t)1440892800; /* 2015-08-30T00:00:00Z */
    for (int i = 0; i < 1000; i++)
        sign_at(c, day + i * 86, SECRET, "eu-west-1", auth);
    sign_at(c, day + 86399, SECRET, "eu-west-1", auth);
    cr_expect_eq(sigv4_key_cache_derivations(c), 1);
    cr_expect(strstr(auth, "/20150830/eu-west-1/dynamodb/aws4_request") != NULL, "%s", auth);

    sign_at(c, day + 86400, SECRET, "eu-west-1", auth); /* midnight UTC: new day */
    cr_expect_eq(sigv4_key_cache_derivations(c), 2);
    cr_expect(strstr(auth, "/20150831/") != NULL, "%s", auth);
    sign_at(c, day + 86400 + 5, SECRET, "eu-west-1", auth);
    cr_expect_eq(sigv4_key_cache_derivations(c), 2);

    sign_at(c, day + 86400 + 6, "rotated/SECRET+key", "eu-west-1", auth); /* refreshed creds */
    cr_expect_eq(sigv4_key_cache_derivations(c), 3);
    sign_at(c, day + 86400 + 7, "rotated/SECRET+key", "us-east-1", auth);
    cr_expect_eq(sigv4_key_cache_derivations(c), 4);
    sign_at(c, day + 86400 + 8, "rotated/SECRET+key", "us-east-1", auth);
    cr_expect_eq(sigv4_key_cache_derivations(c), 4);
    sigv4_key_cache_clear(c);
    sign_at(c, day + 86400 + 9, "rotated/SECRET+key", "us-east-1", auth);
    cr_expect_eq(sigv4_key_cache_derivations(c), 5);
    sigv4_key_cache_free(c);
    sigv4_key_cache_free(NULL);
}

Test(sigv4, dates) {
    const struct {
        time_t t;
        const char *want;
    } cases[] = {{0, "19700101T000000Z"},
                 {951782400, "20000229T000000Z"},
                 {1709251199, "20240229T235959Z"},
                 {4102444800, "21000101T000000Z"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sigv4_header hs[] = {{"Host", HOST}};
        sigv4_request r = {.method = "GET",
                           .headers = hs,
                           .n_headers = 1,
                           .access_key = AKID,
                           .secret_key = SECRET,
                           .region = "us-east-1",
                           .service = "service",
                           .time = cases[i].t};
        char auth[512], date[17], err[128];
        cr_assert_eq(sigv4_sign(NULL, &r, auth, sizeof(auth), date, err, sizeof(err)), 0);
        cr_expect_str_eq(date, cases[i].want);
    }
}

Test(sigv4, refusals) {
    sigv4_header hs[] = {{"Host", HOST}, {"X-Amz-Date", "x"}};
    sigv4_request r = {.method = "GET",
                       .headers = hs,
                       .n_headers = 1,
                       .access_key = AKID,
                       .secret_key = SECRET,
                       .region = "us-east-1",
                       .service = "service",
                       .time = SUITE_TIME};
    char auth[512], date[17], err[128];
    cr_expect_eq(sigv4_sign(NULL, &r, auth, 100, date, err, sizeof(err)), -7, "too small");
    cr_expect_eq(sigv4_sign(NULL, &r, auth, sizeof(auth), date, err, sizeof(err)), 0);
    r.n_headers = 2; /* x-amz-date is the signer's */
    cr_expect_eq(sigv4_sign(NULL, &r, auth, sizeof(auth), date, err, sizeof(err)), -22);
    r.headers = hs + 1;
    r.n_headers = 0; /* no host */
    cr_expect_eq(sigv4_sign(NULL, &r, auth, sizeof(auth), date, err, sizeof(err)), -22);
    cr_expect(strstr(err, "host") != NULL, "%s", err);
    r.headers = hs;
    r.n_headers = 1;
    r.secret_key = "";
    cr_expect_eq(sigv4_sign(NULL, &r, auth, sizeof(auth), date, err, sizeof(err)), -22);
    r.secret_key = SECRET;
    r.region = "eu/west";
    cr_expect_eq(sigv4_sign(NULL, &r, auth, sizeof(auth), date, err, sizeof(err)), -22);
    r.region = "us-east-1";
    r.session_token = "a\r\nb";
    cr_expect_eq(sigv4_sign(NULL, &r, auth, sizeof(auth), date, err, sizeof(err)), -22);
    cr_expect(strstr(err, "a\r\nb") == NULL);
}

/* ----------------------------------------------------- micro-benchmark */
static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

Test(sigv4, benchmark) {
    /* A BatchWriteItem of 25 records of about 300 bytes. */
    size_t blen = 25 * 300;
    char *body = malloc(blen);
    cr_assert_not_null(body);
    for (size_t i = 0; i < blen; i++)
        body[i] = (char)('a' + i % 26);
    sigv4_header hs[] = {{"Host", "dynamodb.eu-west-1.amazonaws.com"},
                         {"Content-Type", "application/x-amz-json-1.0"},
                         {"X-Amz-Target", "DynamoDB_20120810.BatchWriteItem"}};
    sigv4_request r = {.method = "POST",
                       .path = "/",
                       .headers = hs,
                       .n_headers = 3,
                       .payload = body,
                       .payload_len = blen,
                       .access_key = AKID,
                       .secret_key = SECRET,
                       .session_token = STS_TOKEN,
                       .region = "eu-west-1",
                       .service = "dynamodb",
                       .time = SUITE_TIME};
    sigv4_key_cache *c = sigv4_key_cache_new();
    char auth[512], date[17], err[128];
    const int n = 2000;
    double res[4];
    for (int mode = 1; mode >= 0; mode--) {
        int shani = sigv4_sha256_accelerated(mode);
        if (mode == 0 && !shani) break;
        for (int round = 0; round < 2; round++) {
            r.payload_len = round ? blen : 2; /* tiny body, then 7.5 KB */
            double t0 = now_us();
            for (int i = 0; i < n; i++)
                sigv4_sign(c, &r, auth, sizeof(auth), date, err, sizeof(err));
            double t1 = now_us();
            for (int i = 0; i < n; i++) {
                sigv4_key_cache_clear(c);
                sigv4_sign(c, &r, auth, sizeof(auth), date, err, sizeof(err));
            }
            double t2 = now_us();
            res[2 * round] = (t1 - t0) / n;
            res[2 * round + 1] = (t2 - t1) / n;
        }
        fprintf(stderr,
                "sigv4 benchmark (us per signature, %s SHA-256, not asserted): 2-byte body: warm "
                "%.2f, cold %.2f; 7500-byte body: warm %.2f, cold %.2f\n",
                shani ? "SHA-NI" : "portable", res[0], res[1], res[2], res[3]);
    }
    sigv4_sha256_accelerated(0);
    sigv4_key_cache_free(c);
    free(body);
}
