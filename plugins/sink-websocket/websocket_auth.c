/*
 * sink-websocket — who may open /ws: a JWT whose sub is the customerId.
 *
 * Checked in this order: the header's alg must be the one configured
 * (HS256 with jwt_secret, RS256 with jwt_public_key) — read here, before
 * any verifier sees the token, so "none" and the HS256-with-the-public-key
 * confusion never get that far; then the signature, by libjwt (for HS256
 * also compared in constant time here: older libjwt compares HMACs with
 * strcmp, CVE-2024-25189); then exp (required), nbf and sub.
 */
#include "websocket.h"

#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int ws_auth_init(ws_auth *a, const char *secret, const char *public_key, char *errbuf,
                 size_t errlen) {
    *a = (ws_auth){0};
    int has_secret = secret && *secret, has_key = public_key && *public_key;
    if (has_secret == has_key) {
        snprintf(errbuf, errlen,
                 "jwt_secret / jwt_public_key: set exactly one (HS256 secret or RS256 PEM public "
                 "key)");
        return CD_ERR_INVALID;
    }
    if (has_key) {
        size_t len = strlen(public_key);
        BIO *bio = BIO_new_mem_buf(public_key, (int)len);
        EVP_PKEY *key = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
        int ok = key != NULL && EVP_PKEY_base_id(key) == EVP_PKEY_RSA;
        EVP_PKEY_free(key);
        BIO_free(bio);
        if (!ok) {
            snprintf(errbuf, errlen,
                     "jwt_public_key: not a PEM RSA public key (\"-----BEGIN PUBLIC KEY-----\" "
                     "...; ${file:PATH} reads one from a file)");
            return CD_ERR_INVALID;
        }
        a->public_key = strdup(public_key);
        a->public_key_len = len;
        if (a->public_key == NULL) goto oom;
    } else {
        a->secret = strdup(secret);
        a->secret_len = strlen(secret);
        if (a->secret == NULL) goto oom;
    }
    return 0;
oom:
    snprintf(errbuf, errlen, "out of memory");
    return CD_ERR_NOMEM;
}

static int ws_auth_bytes_same(const char *a, size_t alen, const char *b, size_t blen) {
    if (a == NULL || b == NULL) return a == b;
    return alen == blen && memcmp(a, b, alen) == 0;
}

int ws_auth_same(const ws_auth *a, const ws_auth *b) {
    return ws_auth_bytes_same(a->secret, a->secret_len, b->secret, b->secret_len) &&
           ws_auth_bytes_same(a->public_key, a->public_key_len, b->public_key, b->public_key_len);
}

void ws_auth_free(ws_auth *a) {
    if (a->secret) OPENSSL_cleanse(a->secret, a->secret_len);
    free(a->secret);
    free(a->public_key);
    *a = (ws_auth){0};
}

const char *ws_auth_token(const char *authorization, const char *query_token, char *scratch,
                          size_t scratch_len) {
    if (authorization) {
        const char *s = authorization;
        while (*s == ' ' || *s == '\t')
            s++;
        if (strncasecmp(s, "Bearer", 6) == 0 && (s[6] == ' ' || s[6] == '\t')) {
            s += 7;
            while (*s == ' ' || *s == '\t')
                s++;
            size_t n = strlen(s);
            while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
                n--;
            if (n && n < scratch_len) {
                memcpy(scratch, s, n);
                scratch[n] = '\0';
                return scratch;
            }
        }
    }
    if (query_token && *query_token) return query_token;
    return NULL;
}

/* base64url (padding tolerated) into a NUL-terminated malloc'ed buffer. */
static char *ws_b64url_decode(const char *s, size_t len, size_t *outlen) {
    char *out = malloc(len * 3 / 4 + 4);
    if (out == NULL) return NULL;
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        int v;
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '-')
            v = 62;
        else if (c == '_')
            v = 63;
        else if (c == '=' && i + 2 >= len)
            break;
        else {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (char)((acc >> bits) & 0xFF);
        }
    }
    out[n] = '\0';
    *outlen = n;
    return out;
}

static json_t *ws_jwt_segment(const char *seg, size_t len) {
    size_t n = 0;
    char *text = ws_b64url_decode(seg, len, &n);
    if (text == NULL) return NULL;
    json_t *obj = json_loadb(text, n, JSON_REJECT_DUPLICATES, NULL);
    free(text);
    if (obj && !json_is_object(obj)) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

static int ws_hs256_ok(const ws_auth *a, const char *signed_part, size_t signed_len,
                       const char *sig, size_t siglen) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (HMAC(EVP_sha256(), a->secret, (int)a->secret_len, (const unsigned char *)signed_part,
             signed_len, mac, &maclen) == NULL)
        return 0;
    size_t n = 0;
    char *got = ws_b64url_decode(sig, siglen, &n);
    int ok = got != NULL && n == maclen && CRYPTO_memcmp(got, mac, maclen) == 0;
    free(got);
    return ok;
}

/* A numeric claim of a verified token: 1 and *v, 0 when absent, -1 when not
 * a number. */
static int ws_jwt_number(jwt_t *jwt, const char *name, double *v) {
    char *text = jwt_get_grants_json(jwt, name);
    if (text == NULL) return 0;
    json_t *j = json_loads(text, JSON_DECODE_ANY, NULL);
    free(text);
    int r = -1;
    if (j && json_is_number(j)) {
        *v = json_number_value(j);
        r = 1;
    }
    json_decref(j);
    return r;
}

ws_auth_result ws_auth_verify(const ws_auth *a, const char *token, time_t now, char **sub,
                              char *why, size_t whylen) {
    *sub = NULL;
    if (token == NULL || *token == '\0') {
        snprintf(why, whylen, "no token (Authorization: Bearer or ?token=)");
        return WS_AUTH_MISSING;
    }
    size_t len = strlen(token);
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (len > WS_JWT_MAX || dot1 == NULL || dot2 == NULL ||
        memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL) {
        snprintf(why, whylen, "not a JWT");
        return WS_AUTH_INVALID;
    }

    /* The algorithm decides the key; only the configured one is accepted. */
    json_t *header = ws_jwt_segment(token, (size_t)(dot1 - token));
    const char *alg = header ? json_string_value(json_object_get(header, "alg")) : NULL;
    const char *want_name = a->secret ? "HS256" : "RS256";
    jwt_alg_t want = a->secret ? JWT_ALG_HS256 : JWT_ALG_RS256;
    if (alg == NULL || strcmp(alg, want_name) != 0) {
        snprintf(why, whylen, "JWT alg %.32s is not accepted (only %s)", alg ? alg : "(missing)",
                 want_name);
        json_decref(header);
        return WS_AUTH_INVALID;
    }
    json_decref(header);

    if (a->secret && !ws_hs256_ok(a, token, (size_t)(dot2 - token), dot2 + 1,
                                  len - (size_t)(dot2 + 1 - token))) {
        snprintf(why, whylen, "JWT signature does not verify");
        return WS_AUTH_INVALID;
    }
    const unsigned char *key = (const unsigned char *)(a->secret ? a->secret : a->public_key);
    int keylen = (int)(a->secret ? a->secret_len : a->public_key_len);
    jwt_t *jwt = NULL;
    if (jwt_decode(&jwt, token, key, keylen) != 0 || jwt == NULL || jwt_get_alg(jwt) != want) {
        jwt_free(jwt);
        snprintf(why, whylen, "JWT signature does not verify");
        return WS_AUTH_INVALID;
    }

    /* Signed by a key we trust: now its claims. */
    ws_auth_result r = WS_AUTH_INVALID;
    double exp = 0, nbf = 0;
    int has_exp = ws_jwt_number(jwt, "exp", &exp);
    int has_nbf = ws_jwt_number(jwt, "nbf", &nbf);
    errno = 0;
    const char *subject = jwt_get_grant(jwt, "sub");
    if (has_exp == 0) {
        snprintf(why, whylen, "JWT has no exp");
    } else if (has_exp < 0) {
        snprintf(why, whylen, "JWT exp is not a number");
    } else if ((double)now >= exp) {
        snprintf(why, whylen, "JWT expired");
    } else if (has_nbf < 0 || (has_nbf > 0 && (double)now < nbf)) {
        snprintf(why, whylen, "JWT not valid yet (nbf)");
    } else if (subject == NULL || *subject == '\0') {
        snprintf(why, whylen, "JWT has no sub (the customerId)");
    } else if (strlen(subject) > WS_ID_MAX) {
        snprintf(why, whylen, "JWT sub is longer than %d bytes", WS_ID_MAX);
    } else {
        *sub = strdup(subject);
        if (*sub == NULL)
            snprintf(why, whylen, "out of memory");
        else
            r = WS_AUTH_OK;
    }
    jwt_free(jwt);
    return r;
}
