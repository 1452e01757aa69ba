/*
 * plugins/common/jwt_verify.c: the JWT check source-http and sink-websocket
 * share.  Good tokens come from libjwt's encoder and keys from OpenSSL, so
 * the verifier is checked against an encoder it shares no code with; the
 * malformed ones (bad base64url, JSON that is not an object, duplicate
 * keys, an alg of our choosing) are put together here from raw header and
 * claims text and signed with HMAC-SHA256 by OpenSSL directly.
 */
#include <criterion/criterion.h>

#include "jwt_verify.h"

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WHY_MAX 256

/* ---------------------------------------------------------------- keys */

static char *pem_of(EVP_PKEY *key, int private_part) {
    BIO *bio = BIO_new(BIO_s_mem());
    cr_assert_not_null(bio);
    if (private_part)
        cr_assert(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL));
    else
        cr_assert(PEM_write_bio_PUBKEY(bio, key));
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *out = strndup(data, (size_t)n);
    BIO_free(bio);
    return out;
}

typedef struct rsa_pair {
    char *priv, *pub;
} rsa_pair;

static rsa_pair rsa_new(void) {
    EVP_PKEY *key = EVP_RSA_gen(2048);
    cr_assert_not_null(key);
    rsa_pair p = {pem_of(key, 1), pem_of(key, 0)};
    EVP_PKEY_free(key);
    return p;
}

static void rsa_free(rsa_pair *p) {
    free(p->priv);
    free(p->pub);
}

/* -------------------------------------------------------------- tokens */

/* A token signed by libjwt with alg and key; sub NULL and exp 0 leave the
 * claim out. */
static char *lib_token(jwt_alg_t alg, const char *key, const char *sub, long exp) {
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

static void b64url_append(char *out, size_t cap, const unsigned char *in, size_t n) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = strlen(out);
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n) v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        size_t chars = i + 2 < n ? 4 : i + 1 < n ? 3 : 2;
        for (size_t c = 0; c < chars; c++) {
            cr_assert_lt(o + 1, cap);
            out[o++] = abc[(v >> (18 - 6 * c)) & 63];
        }
    }
    out[o] = '\0';
}

/* "b64(header).b64(claims).b64(HMAC-SHA256(secret))" from raw texts; a
 * NULL secret leaves the signature segment empty.  Caller frees. */
static char *raw_token(const char *header, const char *claims, const char *secret) {
    size_t cap = 2 * (strlen(header) + strlen(claims)) + 128;
    char *t = calloc(1, cap);
    cr_assert_not_null(t);
    b64url_append(t, cap, (const unsigned char *)header, strlen(header));
    strcat(t, ".");
    b64url_append(t, cap, (const unsigned char *)claims, strlen(claims));
    size_t signed_len = strlen(t);
    strcat(t, ".");
    if (secret) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int maclen = 0;
        cr_assert_not_null(HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)t,
                                signed_len, mac, &maclen));
        b64url_append(t, cap, mac, maclen);
    }
    return t;
}

#define HS "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

/* ----------------------------------------------------------- checking */

static jwt_verify_result check(const jwt_verifier *v, const char *tok, const jwt_rules *rules,
                               jwt_claims *claims, char *why) {
    return jwt_verify(v, tok, strlen(tok), rules, time(NULL), claims, why, WHY_MAX);
}

/* Refused with exactly the reason `reason`, and nothing handed out. */
#define EXPECT_REFUSED(v, tok, rules, reason)                                                      \
    do {                                                                                           \
        jwt_claims c_ = {.sub = (char *)"untouched"};                                              \
        char why_[WHY_MAX] = "";                                                                   \
        cr_assert_eq(check(v, tok, rules, &c_, why_), JWT_VERIFY_INVALID, "accepted: %s", tok);    \
        cr_assert_null(c_.sub);                                                                    \
        cr_assert_str_eq(why_, reason);                                                            \
    } while (0)

static const jwt_rules ws_rules = {
    .require_exp = 1, .require_sub = 1, .sub_hint = "the customerId", .sub_max = 8};

static void init_ok(jwt_verifier *v, const char *secret, const char *pub, jwt_keys_rule rule) {
    char err[256] = "";
    cr_assert_eq(jwt_verifier_init(v, secret, pub, rule, err, sizeof(err)), 0, "%s", err);
}

/* ------------------------------------------------------------- tests */

Test(jwt_verify, a_good_hs256_token_gives_its_claims) {
    jwt_verifier v;
    init_ok(&v, "s3cret", NULL, JWT_KEYS_EXACTLY_ONE);
    long exp = (long)time(NULL) + 60;
    char *t = lib_token(JWT_ALG_HS256, "s3cret", "c-1001", exp);
    jwt_claims c;
    char why[WHY_MAX] = "";
    cr_assert_eq(check(&v, t, &ws_rules, &c, why), JWT_VERIFY_OK, "%s", why);
    cr_assert_str_eq(c.sub, "c-1001");
    cr_assert_eq(c.has_exp, 1);
    cr_assert_eq((long)c.exp, exp);
    cr_assert_eq(c.has_nbf, 0);
    jwt_claims_free(&c);
    cr_assert_null(c.sub);
    /* No claims wanted: only the answer. */
    cr_assert_eq(jwt_verify(&v, t, strlen(t), NULL, time(NULL), NULL, why, sizeof(why)),
                 JWT_VERIFY_OK, "%s", why);
    free(t);
    jwt_verifier_free(&v);
}

Test(jwt_verify, a_good_rs256_token_verifies_with_the_public_key) {
    rsa_pair k = rsa_new();
    jwt_verifier v;
    init_ok(&v, NULL, k.pub, JWT_KEYS_EXACTLY_ONE);
    char *t = lib_token(JWT_ALG_RS256, k.priv, "c-rs", time(NULL) + 60);
    jwt_claims c;
    char why[WHY_MAX] = "";
    cr_assert_eq(check(&v, t, &ws_rules, &c, why), JWT_VERIFY_OK, "%s", why);
    cr_assert_str_eq(c.sub, "c-rs");
    jwt_claims_free(&c);
    free(t);
    jwt_verifier_free(&v);
    rsa_free(&k);
}

Test(jwt_verify, with_both_keys_either_alg_is_accepted) {
    rsa_pair k = rsa_new();
    jwt_verifier v;
    init_ok(&v, "s3cret", k.pub, JWT_KEYS_ANY);
    char why[WHY_MAX] = "";
    char *hs = lib_token(JWT_ALG_HS256, "s3cret", "a", 0);
    char *rs = lib_token(JWT_ALG_RS256, k.priv, "b", 0);
    cr_assert_eq(check(&v, hs, NULL, NULL, why), JWT_VERIFY_OK, "%s", why);
    cr_assert_eq(check(&v, rs, NULL, NULL, why), JWT_VERIFY_OK, "%s", why);
    /* The public key as an HMAC secret still does not pass for the secret. */
    char *confused = lib_token(JWT_ALG_HS256, k.pub, "a", 0);
    EXPECT_REFUSED(&v, confused, NULL, "JWT signature does not verify");
    char *none = raw_token("{\"alg\":\"none\"}", "{\"sub\":\"a\"}", NULL);
    EXPECT_REFUSED(&v, none, NULL, "JWT alg none is not accepted (only HS256 or RS256)");
    free(none);
    free(confused);
    free(hs);
    free(rs);
    jwt_verifier_free(&v);
    rsa_free(&k);
}

Test(jwt_verify, expiry_is_checked_against_now) {
    jwt_verifier v;
    init_ok(&v, "s3cret", NULL, JWT_KEYS_EXACTLY_ONE);
    time_t now = time(NULL);
    char *t = lib_token(JWT_ALG_HS256, "s3cret", "c1", (long)now - 1);
    EXPECT_REFUSED(&v, t, &ws_rules, "JWT expired");
    EXPECT_REFUSED(&v, t, NULL, "JWT expired");
    free(t);
    /* exp == now has expired; exp == now + 1 has not. */
    t = lib_token(JWT_ALG_HS256, "s3cret", "c1", 1000);
    char why[WHY_MAX] = "";
    cr_assert_eq(jwt_verify(&v, t, strlen(t), NULL, 1000, NULL, why, sizeof(why)),
                 JWT_VERIFY_INVALID);
    cr_assert_str_eq(why, "JWT expired");
    cr_assert_eq(jwt_verify(&v, t, strlen(t), NULL, 999, NULL, why, sizeof(why)), JWT_VERIFY_OK,
                 "%s", why);
    free(t);
    /* exp required by the rules, optional without; not a number either way. */
    t = lib_token(JWT_ALG_HS256, "s3cret", "c1", 0);
    EXPECT_REFUSED(&v, t, &ws_rules, "JWT has no exp");
    jwt_claims c;
    cr_assert_eq(check(&v, t, NULL, &c, why), JWT_VERIFY_OK, "%s", why);
    cr_assert_eq(c.has_exp, 0);
    jwt_claims_free(&c);
    free(t);
    t = raw_token(HS, "{\"sub\":\"c1\",\"exp\":\"tomorrow\"}", "s3cret");
    EXPECT_REFUSED(&v, t, NULL, "JWT exp is not a number");
    free(t);
    jwt_verifier_free(&v);
}

Test(jwt_verify, nbf_in_the_future_is_refused) {
    jwt_verifier v;
    init_ok(&v, "s3cret", NULL, JWT_KEYS_EXACTLY_ONE);
    char claims[128];
    long now = (long)time(NULL);
    snprintf(claims, sizeof(claims), "{\"sub\":\"c1\",\"exp\":%ld,\"nbf\":%ld}", now + 600,
             now + 300);
    char *t = raw_token(HS, claims, "s3cret");
    EXPECT_REFUSED(&v, t, &ws_rules, "JWT not valid yet (nbf)");
    free(t);
    snprintf(claims, sizeof(claims), "{\"sub\":\"c1\",\"exp\":%ld,\"nbf\":\"soon\"}", now + 600);
    t = raw_token(HS, claims, "s3cret");
    EXPECT_REFUSED(&v, t, &ws_rules, "JWT not valid yet (nbf)");
    free(t);
    snprintf(claims, sizeof(claims), "{\"sub\":\"c1\",\"exp\":%ld,\"nbf\":%ld}", now + 600,
             now - 5);
    t = raw_token(HS, claims, "s3cret");
    jwt_claims c;
    char why[WHY_MAX] = "";
    cr_assert_eq(check(&v, t, &ws_rules, &c, why), JWT_VERIFY_OK, "%s", why);
    cr_assert_eq(c.has_nbf, 1);
    cr_assert_eq((long)c.nbf, now - 5);
    jwt_claims_free(&c);
    free(t);
    jwt_verifier_free(&v);
}

Test(jwt_verify, a_wrong_key_or_tampered_claims_do_not_verify) {
    rsa_pair k = rsa_new(), other = rsa_new();
    jwt_verifier hs, rs;
    init_ok(&hs, "s3cret", NULL, JWT_KEYS_EXACTLY_ONE);
    init_ok(&rs, NULL, k.pub, JWT_KEYS_EXACTLY_ONE);
    long later = (long)time(NULL) + 60;
    char *t = lib_token(JWT_ALG_HS256, "another secret", "c1", later);
    EXPECT_REFUSED(&hs, t, &ws_rules, "JWT signature does not verify");
    free(t);
    t = lib_token(JWT_ALG_RS256, other.priv, "c1", later);
    EXPECT_REFUSED(&rs, t, &ws_rules, "JWT signature does not verify");
    free(t);
    /* The claims of one token under the signature of another. */
    t = lib_token(JWT_ALG_HS256, "s3cret", "c1", later);
    char *forged = lib_token(JWT_ALG_HS256, "x", "c2", later);
    char *dot1 = strchr(t, '.'), *dot2 = strchr(dot1 + 1, '.');
    char *fdot1 = strchr(forged, '.'), *fdot2 = strchr(fdot1 + 1, '.');
    char mixed[2048];
    snprintf(mixed, sizeof(mixed), "%.*s%.*s%s", (int)(dot1 - t), t, (int)(fdot2 - fdot1), fdot1,
             dot2);
    EXPECT_REFUSED(&hs, mixed, &ws_rules, "JWT signature does not verify");
    /* A signature cut short, one byte changed, or not base64url. */
    t[strlen(t) - 2] = '\0';
    EXPECT_REFUSED(&hs, t, &ws_rules, "JWT signature does not verify");
    t[dot2 - t + 1] = t[dot2 - t + 1] == 'A' ? 'B' : 'A';
    EXPECT_REFUSED(&hs, t, &ws_rules, "JWT signature does not verify");
    t[dot2 - t + 1] = '*';
    EXPECT_REFUSED(&hs, t, &ws_rules, "JWT signature does not verify");
    free(forged);
    free(t);
    jwt_verifier_free(&hs);
    jwt_verifier_free(&rs);
    rsa_free(&k);
    rsa_free(&other);
}

Test(jwt_verify, alg_none_and_other_algs_are_refused_before_any_signature_check) {
    rsa_pair k = rsa_new();
    jwt_verifier hs, rs;
    init_ok(&hs, "s3cret", NULL, JWT_KEYS_EXACTLY_ONE);
    init_ok(&rs, NULL, k.pub, JWT_KEYS_EXACTLY_ONE);
    long later = (long)time(NULL) + 60;
    char *t = lib_token(JWT_ALG_NONE, NULL, "c1", later);
    EXPECT_REFUSED(&hs, t, &ws_rules, "JWT alg none is not accepted (only HS256)");
    EXPECT_REFUSED(&rs, t, &ws_rules, "JWT alg none is not accepted (only RS256)");
    free(t);
    /* "None" and "none" signed anyway: the alg decides, not the signature. */
    t = raw_token("{\"alg\":\"None\"}", "{\"sub\":\"c1\"}", "s3cret");
    EXPECT_REFUSED(&hs, t, NULL, "JWT alg None is not accepted (only HS256)");
    free(t);
    t = lib_token(JWT_ALG_HS512, "s3cret", "c1", later);
    EXPECT_REFUSED(&hs, t, &ws_rules, "JWT alg HS512 is not accepted (only HS256)");
    free(t);
    t = raw_token("{\"typ\":\"JWT\"}", "{\"sub\":\"c1\"}", "s3cret");
    EXPECT_REFUSED(&hs, t, NULL, "JWT alg (missing) is not accepted (only HS256)");
    free(t);
    t = raw_token("{\"alg\":256}", "{\"sub\":\"c1\"}", "s3cret");
    EXPECT_REFUSED(&hs, t, NULL, "JWT alg (missing) is not accepted (only HS256)");
    free(t);
    /* A long alg is cut in the reason. */
    t = raw_token("{\"alg\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}", "{}", "s3cret");
    EXPECT_REFUSED(&hs, t, NULL,
                   "JWT alg AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA is not accepted (only HS256)");
    free(t);
    jwt_verifier_free(&hs);
    jwt_verifier_free(&rs);
    rsa_free(&k);
}

Test(jwt_verify, alg_mismatch_with_the_configured_key_is_refused) {
    rsa_pair k = rsa_new();
    jwt_verifier hs, rs;
    init_ok(&hs, "s3cret", NULL, JWT_KEYS_EXACTLY_ONE);
    init_ok(&rs, NULL, k.pub, JWT_KEYS_EXACTLY_ONE);
    long later = (long)time(NULL) + 60;
    /* RS256 where HS256 is configured. */
    char *t = lib_token(JWT_ALG_RS256, k.priv, "c1", later);
    EXPECT_REFUSED(&hs, t, &ws_rules, "JWT alg RS256 is not accepted (only HS256)");
    cr_assert_eq(check(&rs, t, &ws_rules, NULL, (char[WHY_MAX]){0}), JWT_VERIFY_OK);
    free(t);
    /* HS256 where RS256 is configured, with a secret ... */
    t = lib_token(JWT_ALG_HS256, "s3cret", "c1", later);
    EXPECT_REFUSED(&rs, t, &ws_rules, "JWT alg HS256 is not accepted (only RS256)");
    free(t);
    /* ... and signed with the public key's PEM as the HMAC secret (the
     * classic confusion: a verifier that lets the token pick the alg would
     * accept it). */
    t = lib_token(JWT_ALG_HS256, k.pub, "c1", later);
    EXPECT_REFUSED(&rs, t, &ws_rules, "JWT alg HS256 is not accepted (only RS256)");
    free(t);
    jwt_verifier_free(&hs);
    jwt_verifier_free(&rs);
    rsa_free(&k);
}

Test(jwt_verify, sub_is_required_and_bounded_when_the_rules_say_so) {
    jwt_verifier v;
    init_ok(&v, "s3cret", NULL, JWT_KEYS_EXACTLY_ONE);
    long later = (long)time(NULL) + 60;
    char *t = lib_token(JWT_ALG_HS256, "s3cret", NULL, later);
    EXPECT_REFUSED(&v, t, &ws_rules, "JWT has no sub (the customerId)");
    jwt_rules plain = {.require_sub = 1};
    EXPECT_REFUSED(&v, t, &plain, "JWT has no sub");
    /* Optional: "" for the caller. */
    jwt_claims c;
    char why[WHY_MAX] = "";
    cr_assert_eq(check(&v, t, NULL, &c, why), JWT_VERIFY_OK, "%s", why);
    cr_assert_str_eq(c.sub, "");
    jwt_claims_free(&c);
    free(t);
    t = lib_token(JWT_ALG_HS256, "s3cret", "", later);
    EXPECT_REFUSED(&v, t, &ws_rules, "JWT has no sub (the customerId)");
    free(t);
    char claims[128];
    snprintf(claims, sizeof(claims), "{\"sub\":42,\"exp\":%ld}", later);
    t = raw_token(HS, claims, "s3cret");
    EXPECT_REFUSED(&v, t, &ws_rules, "JWT has no sub (the customerId)");
    free(t);
    t = lib_token(JWT_ALG_HS256, "s3cret", "123456789", later);
    EXPECT_REFUSED(&v, t, &ws_rules, "JWT sub is longer than 8 bytes");
    free(t);
    t = lib_token(JWT_ALG_HS256, "s3cret", "12345678", later);
    cr_assert_eq(check(&v, t, &ws_rules, &c, why), JWT_VERIFY_OK, "%s", why);
    cr_assert_str_eq(c.sub, "12345678");
    jwt_claims_free(&c);
    free(t);
    jwt_verifier_free(&v);
}

Test(jwt_verify, malformed_segments_base64_and_json_are_refused) {
    jwt_verifier v;
    init_ok(&v, "s3cret", NULL, JWT_KEYS_EXACTLY_ONE);
    /* Not three segments. */
    EXPECT_REFUSED(&v, "", NULL, "not a JWT");
    EXPECT_REFUSED(&v, "not-a-token", NULL, "not a JWT");
    EXPECT_REFUSED(&v, "a.b", NULL, "not a JWT");
    EXPECT_REFUSED(&v, "a.b.c.d", NULL, "not a JWT");
    EXPECT_REFUSED(&v, "..", NULL, "JWT alg (missing) is not accepted (only HS256)");
    char why[WHY_MAX] = "";
    cr_assert_eq(jwt_verify(&v, NULL, 0, NULL, time(NULL), NULL, why, sizeof(why)),
                 JWT_VERIFY_INVALID);
    cr_assert_str_eq(why, "not a JWT");
    /* A header that is not base64url, not JSON, not an object, or has a
     * duplicate key: no alg can be read from it. */
    char *t = raw_token(HS, "{\"sub\":\"c1\"}", "s3cret");
    char *bad = strdup(t);
    bad[3] = '!';
    EXPECT_REFUSED(&v, bad, NULL, "JWT alg (missing) is not accepted (only HS256)");
    free(bad);
    free(t);
    const char *headers[] = {"{\"alg\":\"HS256\"", "[\"HS256\"]", "\"HS256\"",
                             "{\"alg\":\"HS256\",\"alg\":\"HS256\"}"};
    for (size_t i = 0; i < sizeof(headers) / sizeof(*headers); i++) {
        t = raw_token(headers[i], "{\"sub\":\"c1\"}", "s3cret");
        EXPECT_REFUSED(&v, t, NULL, "JWT alg (missing) is not accepted (only HS256)");
        free(t);
    }
    /* Correctly signed claims that are not a JSON object. */
    const char *claims[] = {"{\"sub\":", "[1,2]", "42", "{\"sub\":\"a\",\"sub\":\"b\"}", ""};
    for (size_t i = 0; i < sizeof(claims) / sizeof(*claims); i++) {
        t = raw_token(HS, claims[i], "s3cret");
        EXPECT_REFUSED(&v, t, NULL, "JWT claims are not a JSON object");
        free(t);
    }
    /* Claims that are not base64url, signed as they stand. */
    {
        char header[64] = "";
        b64url_append(header, sizeof(header), (const unsigned char *)HS, strlen(HS));
        char text[256];
        snprintf(text, sizeof(text), "%s.e30*", header);
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int maclen = 0;
        cr_assert_not_null(HMAC(EVP_sha256(), "s3cret", 6, (const unsigned char *)text,
                                strlen(text), mac, &maclen));
        strcat(text, ".");
        b64url_append(text, sizeof(text), mac, maclen);
        EXPECT_REFUSED(&v, text, NULL, "JWT claims are not a JSON object");
    }
    jwt_verifier_free(&v);
}

Test(jwt_verify, the_token_is_bounded_and_need_not_end_at_len) {
    jwt_verifier v;
    init_ok(&v, "s3cret", NULL, JWT_KEYS_EXACTLY_ONE);
    char why[WHY_MAX] = "";
    /* Pad the claims until the token passes JWT_VERIFY_MAX: the last one
     * within the bound is accepted, the first one over it refused unread. */
    size_t claims_cap = JWT_VERIFY_MAX;
    char *claims = malloc(claims_cap);
    cr_assert_not_null(claims);
    size_t longest_ok = 0;
    int refused_over = 0;
    for (size_t pad = JWT_VERIFY_MAX * 3 / 4 - 120; pad < JWT_VERIFY_MAX * 3 / 4; pad++) {
        snprintf(claims, claims_cap, "{\"sub\":\"c1\",\"pad\":\"%*s\"}", (int)pad, "");
        char *t = raw_token(HS, claims, "s3cret");
        size_t len = strlen(t);
        jwt_verify_result r = jwt_verify(&v, t, len, NULL, time(NULL), NULL, why, sizeof(why));
        if (len <= JWT_VERIFY_MAX) {
            cr_assert_eq(r, JWT_VERIFY_OK, "%zu bytes: %s", len, why);
            longest_ok = len;
        } else {
            cr_assert_eq(r, JWT_VERIFY_INVALID, "%zu bytes accepted", len);
            cr_assert_str_eq(why, "not a JWT");
            refused_over = 1;
        }
        free(t);
        if (refused_over) break;
    }
    cr_assert(refused_over);
    cr_assert_geq(longest_ok, JWT_VERIFY_MAX - 3);
    free(claims);

    /* Only token[0..len) is read: trailing blanks, then junk, past len. */
    char *t = lib_token(JWT_ALG_HS256, "s3cret", "c1", 0);
    size_t len = strlen(t);
    char *longer = malloc(len + 8);
    memcpy(longer, t, len);
    memcpy(longer + len, " \t.x.y", 7);
    jwt_claims c;
    cr_assert_eq(jwt_verify(&v, longer, len, NULL, time(NULL), &c, why, sizeof(why)), JWT_VERIFY_OK,
                 "%s", why);
    cr_assert_str_eq(c.sub, "c1");
    jwt_claims_free(&c);
    free(longer);
    free(t);
    jwt_verifier_free(&v);

    /* RS256 too (libjwt reads a copy). */
    rsa_pair k = rsa_new();
    init_ok(&v, NULL, k.pub, JWT_KEYS_EXACTLY_ONE);
    t = lib_token(JWT_ALG_RS256, k.priv, "c1", 0);
    len = strlen(t);
    longer = malloc(len + 8);
    memcpy(longer, t, len);
    memcpy(longer + len, "AAAAAAA", 7);
    cr_assert_eq(jwt_verify(&v, longer, len, NULL, time(NULL), NULL, why, sizeof(why)),
                 JWT_VERIFY_OK, "%s", why);
    free(longer);
    free(t);
    jwt_verifier_free(&v);
    rsa_free(&k);
}

Test(jwt_verify, keys_come_from_the_options) {
    jwt_verifier a, b;
    char err[256] = "";
    /* Any: none, either or both. */
    init_ok(&a, NULL, "", JWT_KEYS_ANY);
    cr_assert_not(jwt_verifier_enabled(&a));
    jwt_verifier_free(&a);
    rsa_pair k = rsa_new();
    init_ok(&a, "s", k.pub, JWT_KEYS_ANY);
    cr_assert(jwt_verifier_enabled(&a));
    jwt_verifier_free(&a);
    /* Exactly one. */
    cr_assert_eq(jwt_verifier_init(&a, NULL, NULL, JWT_KEYS_EXACTLY_ONE, err, sizeof(err)),
                 CD_ERR_INVALID);
    cr_assert_str_eq(err, "jwt_secret / jwt_public_key: set exactly one (HS256 secret or RS256 "
                          "PEM public key)");
    cr_assert_eq(jwt_verifier_init(&a, "s", k.pub, JWT_KEYS_EXACTLY_ONE, err, sizeof(err)),
                 CD_ERR_INVALID);
    cr_assert_not(jwt_verifier_enabled(&a));
    /* A public key must be a PEM RSA public key: not text, not a private
     * key, not an EC key. */
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    cr_assert_not_null(ec);
    char *ec_pub = pem_of(ec, 0);
    EVP_PKEY_free(ec);
    const char *bad[] = {"not a key", "-----BEGIN PUBLIC KEY-----", k.priv, ec_pub};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        cr_assert_eq(jwt_verifier_init(&a, NULL, bad[i], JWT_KEYS_ANY, err, sizeof(err)),
                     CD_ERR_INVALID, "accepted key %zu", i);
        cr_assert_str_eq(err, "jwt_public_key: not a PEM RSA public key (\"-----BEGIN PUBLIC "
                              "KEY-----\" ...; ${file:PATH} reads one from a file)");
        cr_assert_null(a.public_key);
    }
    free(ec_pub);
    /* Same keys, same verifier. */
    init_ok(&a, "s1", NULL, JWT_KEYS_EXACTLY_ONE);
    init_ok(&b, "s2", NULL, JWT_KEYS_EXACTLY_ONE);
    cr_assert_not(jwt_verifier_same(&a, &b));
    jwt_verifier_free(&b);
    init_ok(&b, "s1", NULL, JWT_KEYS_EXACTLY_ONE);
    cr_assert(jwt_verifier_same(&a, &b));
    jwt_verifier_free(&b);
    init_ok(&b, NULL, k.pub, JWT_KEYS_EXACTLY_ONE);
    cr_assert_not(jwt_verifier_same(&a, &b));
    jwt_verifier_free(&b);
    jwt_verifier_free(&a);
    cr_assert_null(a.secret);
    rsa_free(&k);
}

Test(jwt_verify, the_bearer_credential_is_cut_out_of_authorization) {
    size_t n = 99;
    const char *t = jwt_bearer("Bearer abc.def.ghi", &n);
    cr_assert_not_null(t);
    cr_assert_eq(n, 11);
    cr_assert_eq(strncmp(t, "abc.def.ghi", n), 0);
    t = jwt_bearer(" \tbEaReR \t abc \t", &n);
    cr_assert_not_null(t);
    cr_assert_eq(n, 3);
    cr_assert_eq(strncmp(t, "abc", n), 0);
    const char *none[] = {"Basic abc", "Bearer", "Bearer  \t ", "Bearerabc", "", "Bear abc"};
    for (size_t i = 0; i < sizeof(none) / sizeof(*none); i++) {
        n = 99;
        cr_assert_null(jwt_bearer(none[i], &n), "%s", none[i]);
        cr_assert_eq(n, 0);
    }
    cr_assert_null(jwt_bearer(NULL, &n));
}
