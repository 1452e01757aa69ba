/*
 * JWT verification shared by source-http and sink-websocket (see
 * jwt_verify.h for the order of the checks and the reasons).
 */
#include "jwt_verify.h"

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------- keys */

static int jwt_public_key_ok(const char *pem, size_t len) {
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *key = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    int ok = key != NULL && EVP_PKEY_base_id(key) == EVP_PKEY_RSA;
    EVP_PKEY_free(key);
    BIO_free(bio);
    return ok;
}

int jwt_verifier_init(jwt_verifier *v, const char *secret, const char *public_key,
                      jwt_keys_rule rule, char *errbuf, size_t errlen) {
    *v = (jwt_verifier){0};
    int has_secret = secret && *secret, has_key = public_key && *public_key;
    if (rule == JWT_KEYS_EXACTLY_ONE && has_secret == has_key) {
        snprintf(errbuf, errlen,
                 "jwt_secret / jwt_public_key: set exactly one (HS256 secret or RS256 PEM public "
                 "key)");
        return CD_ERR_INVALID;
    }
    if (has_key) {
        size_t len = strlen(public_key);
        if (len > INT32_MAX || !jwt_public_key_ok(public_key, len)) {
            snprintf(errbuf, errlen,
                     "jwt_public_key: not a PEM RSA public key (\"-----BEGIN PUBLIC KEY-----\" "
                     "...; ${file:PATH} reads one from a file)");
            return CD_ERR_INVALID;
        }
        v->public_key = strdup(public_key);
        v->public_key_len = len;
        if (v->public_key == NULL) goto oom;
    }
    if (has_secret) {
        v->secret_len = strlen(secret);
        v->secret = v->secret_len <= INT32_MAX ? strdup(secret) : NULL;
        if (v->secret == NULL) goto oom;
    }
    return 0;
oom:
    jwt_verifier_free(v);
    snprintf(errbuf, errlen, "out of memory");
    return CD_ERR_NOMEM;
}

int jwt_verifier_enabled(const jwt_verifier *v) {
    return v->secret != NULL || v->public_key != NULL;
}

static int jwt_bytes_same(const char *a, size_t alen, const char *b, size_t blen) {
    if (a == NULL || b == NULL) return a == b;
    return alen == blen && CRYPTO_memcmp(a, b, alen) == 0;
}

int jwt_verifier_same(const jwt_verifier *a, const jwt_verifier *b) {
    return jwt_bytes_same(a->secret, a->secret_len, b->secret, b->secret_len) &&
           jwt_bytes_same(a->public_key, a->public_key_len, b->public_key, b->public_key_len);
}

void jwt_verifier_free(jwt_verifier *v) {
    if (v->secret) OPENSSL_cleanse(v->secret, v->secret_len);
    free(v->secret);
    free(v->public_key);
    *v = (jwt_verifier){0};
}

void jwt_claims_free(jwt_claims *claims) {
    free(claims->sub);
    *claims = (jwt_claims){0};
}

/* ----------------------------------------------------------- tokens */

const char *jwt_bearer(const char *authorization, size_t *len) {
    *len = 0;
    if (authorization == NULL) return NULL;
    const char *s = authorization;
    while (*s == ' ' || *s == '\t')
        s++;
    if (strncasecmp(s, "Bearer", 6) != 0 || (s[6] != ' ' && s[6] != '\t')) return NULL;
    s += 7;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n == 0) return NULL;
    *len = n;
    return s;
}

/* Decodes base64url s[0..len) (padding tolerated at the end) into out,
 * which holds at least len * 3 / 4 + 1 bytes, and NUL-terminates it.
 * Returns the decoded length, or -1 on a character outside the alphabet. */
static long jwt_b64url_decode(const char *s, size_t len, unsigned char *out) {
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        int d;
        if (c >= 'A' && c <= 'Z')
            d = c - 'A';
        else if (c >= 'a' && c <= 'z')
            d = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            d = c - '0' + 52;
        else if (c == '-')
            d = 62;
        else if (c == '_')
            d = 63;
        else if (c == '=' && i + 2 >= len)
            break;
        else
            return -1;
        acc = (acc << 6) | (unsigned)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)((acc >> bits) & 0xFF);
        }
    }
    out[n] = '\0';
    return (long)n;
}

/* The JSON object in a token's segment, or NULL (bad base64url, not JSON,
 * duplicate keys, not an object).  buf: JWT_VERIFY_MAX bytes of scratch. */
static json_t *jwt_segment(const char *seg, size_t len, unsigned char *buf) {
    long n = jwt_b64url_decode(seg, len, buf);
    if (n < 0) return NULL;
    json_t *obj = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    if (obj && !json_is_object(obj)) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* HMAC-SHA256 of "header.payload" against the decoded signature, compared
 * in constant time. */
static int jwt_hs256_ok(const jwt_verifier *v, const char *signed_part, size_t signed_len,
                        const char *sig, size_t siglen, unsigned char *buf) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (HMAC(EVP_sha256(), v->secret, (int)v->secret_len, (const unsigned char *)signed_part,
             signed_len, mac, &maclen) == NULL)
        return 0;
    long n = jwt_b64url_decode(sig, siglen, buf);
    return n >= 0 && (size_t)n == maclen && CRYPTO_memcmp(buf, mac, maclen) == 0;
}

/* RS256 by libjwt (which wants a NUL-terminated token); the alg it saw
 * must be RS256 too. */
static int jwt_rs256_ok(const jwt_verifier *v, const char *token, size_t len) {
    char copy[JWT_VERIFY_MAX + 1];
    memcpy(copy, token, len);
    copy[len] = '\0';
    jwt_t *jwt = NULL;
    int ok =
        jwt_decode(&jwt, copy, (const unsigned char *)v->public_key, (int)v->public_key_len) == 0 &&
        jwt != NULL && jwt_get_alg(jwt) == JWT_ALG_RS256;
    jwt_free(jwt);
    return ok;
}

/* A numeric claim: 1 and *out, 0 when absent, -1 when not a number. */
static int jwt_number(const json_t *claims, const char *name, double *out) {
    const json_t *j = json_object_get(claims, name);
    if (j == NULL) return 0;
    if (!json_is_number(j)) return -1;
    *out = json_number_value(j);
    return 1;
}

/* Checks the verified claims against the clock and rules; fills c. */
static jwt_verify_result jwt_check_claims(const json_t *obj, const jwt_rules *rules, time_t now,
                                          jwt_claims *c, char *why, size_t whylen) {
    c->has_exp = jwt_number(obj, "exp", &c->exp);
    c->has_nbf = jwt_number(obj, "nbf", &c->nbf);
    const char *sub = json_string_value(json_object_get(obj, "sub"));
    if (c->has_exp == 0 && rules->require_exp) {
        snprintf(why, whylen, "JWT has no exp");
    } else if (c->has_exp < 0) {
        snprintf(why, whylen, "JWT exp is not a number");
    } else if (c->has_exp > 0 && (double)now >= c->exp) {
        snprintf(why, whylen, "JWT expired");
    } else if (c->has_nbf < 0 || (c->has_nbf > 0 && (double)now < c->nbf)) {
        snprintf(why, whylen, "JWT not valid yet (nbf)");
    } else if (rules->require_sub && (sub == NULL || *sub == '\0')) {
        if (rules->sub_hint)
            snprintf(why, whylen, "JWT has no sub (%s)", rules->sub_hint);
        else
            snprintf(why, whylen, "JWT has no sub");
    } else if (rules->sub_max && sub && strlen(sub) > rules->sub_max) {
        snprintf(why, whylen, "JWT sub is longer than %zu bytes", rules->sub_max);
    } else {
        return JWT_VERIFY_OK;
    }
    return JWT_VERIFY_INVALID;
}

jwt_verify_result jwt_verify(const jwt_verifier *v, const char *token, size_t len,
                             const jwt_rules *rules, time_t now, jwt_claims *claims, char *why,
                             size_t whylen) {
    static const jwt_rules no_rules = {0};
    if (rules == NULL) rules = &no_rules;
    if (claims) *claims = (jwt_claims){0};
    const char *dot1 = token && len <= JWT_VERIFY_MAX ? memchr(token, '.', len) : NULL;
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL) {
        snprintf(why, whylen, "not a JWT");
        return JWT_VERIFY_INVALID;
    }
    unsigned char buf[JWT_VERIFY_MAX];

    /* The algorithm decides the key; only ours are acceptable. */
    json_t *header = jwt_segment(token, (size_t)(dot1 - token), buf);
    const char *alg = header ? json_string_value(json_object_get(header, "alg")) : NULL;
    int hs256 = alg && strcmp(alg, "HS256") == 0 && v->secret;
    int rs256 = alg && strcmp(alg, "RS256") == 0 && v->public_key;
    if (!hs256 && !rs256) {
        snprintf(why, whylen, "JWT alg %.32s is not accepted (only %s)", alg ? alg : "(missing)",
                 v->secret && v->public_key ? "HS256 or RS256"
                 : v->secret                ? "HS256"
                 : v->public_key            ? "RS256"
                                            : "none: no JWT key is configured");
        json_decref(header);
        return JWT_VERIFY_INVALID;
    }
    json_decref(header);

    int verified = hs256 ? jwt_hs256_ok(v, token, (size_t)(dot2 - token), dot2 + 1,
                                        len - (size_t)(dot2 + 1 - token), buf)
                         : jwt_rs256_ok(v, token, len);
    if (!verified) {
        snprintf(why, whylen, "JWT signature does not verify");
        return JWT_VERIFY_INVALID;
    }

    /* Signed by a key we trust: now its claims. */
    json_t *obj = jwt_segment(dot1 + 1, (size_t)(dot2 - dot1 - 1), buf);
    if (obj == NULL) {
        snprintf(why, whylen, "JWT claims are not a JSON object");
        return JWT_VERIFY_INVALID;
    }
    jwt_claims c = {0};
    jwt_verify_result r = jwt_check_claims(obj, rules, now, &c, why, whylen);
    if (r == JWT_VERIFY_OK && claims) {
        const char *sub = json_string_value(json_object_get(obj, "sub"));
        c.sub = strdup(sub ? sub : "");
        if (c.sub == NULL) {
            snprintf(why, whylen, "out of memory");
            r = JWT_VERIFY_INVALID;
        } else {
            *claims = c;
        }
    }
    json_decref(obj);
    return r;
}
