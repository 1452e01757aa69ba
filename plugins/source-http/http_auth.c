/*
 * source-http — who may post: API keys (stored as hashes) and JWTs.
 *
 * API keys never appear in the configuration: only their SHA-256, as
 * "sha256:<hex>", so a leaked pipeline file does not leak a key.  A
 * presented key is hashed and compared with every configured hash using
 * CRYPTO_memcmp and no early exit, so the time taken says nothing about
 * which hash, or how much of one, matched.
 *
 * JWTs are checked in this order: the header's alg must be one we hold a
 * key for (HS256 with jwt_secret, RS256 with jwt_public_key) — read by us,
 * before any verifier sees the token, so "none" and the HS256-with-a-public-
 * key confusion never get that far; then the signature (HS256 here, with a
 * constant-time compare; RS256 by libjwt); then exp and nbf, when present,
 * against the clock.
 */
#include "http.h"

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
#include <time.h>

/* A token longer than this is refused unread (the server bounds headers at
 * 16 KiB anyway). */
#define HTTP_JWT_MAX 8192

int http_auth_enabled(const http_auth *a) {
    return a->nkeys > 0 || a->jwt_secret != NULL || a->jwt_public_key != NULL;
}

static int http_hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int http_auth_parse_hash(const char *text, unsigned char out[32]) {
    if (strncasecmp(text, "sha256:", 7) != 0 || strlen(text + 7) != 64) return CD_ERR_INVALID;
    const char *h = text + 7;
    for (size_t i = 0; i < 32; i++) {
        int hi = http_hex(h[2 * i]), lo = http_hex(h[2 * i + 1]);
        if (hi < 0 || lo < 0) return CD_ERR_INVALID;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

int http_auth_check_public_key(const char *pem, size_t len, char *errbuf, size_t errlen) {
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *key = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    int ok = key != NULL && EVP_PKEY_base_id(key) == EVP_PKEY_RSA;
    EVP_PKEY_free(key);
    BIO_free(bio);
    if (!ok) {
        snprintf(errbuf, errlen,
                 "jwt_public_key: not a PEM RSA public key (\"-----BEGIN PUBLIC KEY-----\" ...)");
        return CD_ERR_INVALID;
    }
    return 0;
}

void http_auth_free(http_auth *a) {
    free(a->key_hashes);
    if (a->jwt_secret) OPENSSL_cleanse(a->jwt_secret, a->jwt_secret_len);
    free(a->jwt_secret);
    free(a->jwt_public_key);
    *a = (http_auth){0};
}

/* ------------------------------------------------------------- API keys */

static int http_auth_key_matches(const http_auth *a, const char *key) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(key, strlen(key), md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) return 0;
    int match = 0;
    for (size_t i = 0; i < a->nkeys; i++)
        match |= CRYPTO_memcmp(md, a->key_hashes[i], 32) == 0;
    return match;
}

/* ----------------------------------------------------------------- JWTs */

/* Decodes base64url (no padding needed) into a NUL-terminated malloc'ed
 * buffer.  Returns NULL on a bad character or no memory. */
static char *http_b64url_decode(const char *s, size_t len, size_t *outlen) {
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

/* The JSON object in a token's segment, or NULL. */
static json_t *http_jwt_segment(const char *seg, size_t len) {
    size_t n = 0;
    char *text = http_b64url_decode(seg, len, &n);
    if (text == NULL) return NULL;
    json_t *obj = json_loadb(text, n, JSON_REJECT_DUPLICATES, NULL);
    free(text);
    if (obj && !json_is_object(obj)) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* HS256 is checked here rather than by libjwt: HMAC-SHA256 of
 * "header.payload" compared with the decoded signature by CRYPTO_memcmp, so
 * the comparison is constant-time whichever libjwt is installed (older ones
 * compare signatures with strcmp, CVE-2024-25189). */
static int http_jwt_hs256_ok(const http_auth *a, const char *signed_part, size_t signed_len,
                             const char *sig, size_t siglen) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (HMAC(EVP_sha256(), a->jwt_secret, (int)a->jwt_secret_len,
             (const unsigned char *)signed_part, signed_len, mac, &maclen) == NULL)
        return 0;
    size_t n = 0;
    char *got = http_b64url_decode(sig, siglen, &n);
    int ok = got != NULL && n == maclen && CRYPTO_memcmp(got, mac, maclen) == 0;
    free(got);
    return ok;
}

static http_auth_result http_auth_jwt(const http_auth *a, const char *token, char **sub, char *why,
                                      size_t whylen) {
    size_t len = strlen(token);
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (len > HTTP_JWT_MAX || dot1 == NULL || dot2 == NULL ||
        memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL) {
        snprintf(why, whylen, "not a JWT");
        return HTTP_AUTH_INVALID;
    }

    /* The algorithm decides the key; only ours are acceptable. */
    json_t *header = http_jwt_segment(token, (size_t)(dot1 - token));
    const char *alg = header ? json_string_value(json_object_get(header, "alg")) : NULL;
    const unsigned char *key = NULL;
    size_t keylen = 0;
    jwt_alg_t want = JWT_ALG_NONE;
    if (alg && strcmp(alg, "HS256") == 0 && a->jwt_secret) {
        key = (const unsigned char *)a->jwt_secret;
        keylen = a->jwt_secret_len;
        want = JWT_ALG_HS256;
    } else if (alg && strcmp(alg, "RS256") == 0 && a->jwt_public_key) {
        key = (const unsigned char *)a->jwt_public_key;
        keylen = a->jwt_public_key_len;
        want = JWT_ALG_RS256;
    }
    if (key == NULL) {
        snprintf(why, whylen, "JWT alg %s is not accepted", alg ? alg : "(missing)");
        json_decref(header);
        return HTTP_AUTH_INVALID;
    }
    json_decref(header);

    int verified;
    if (want == JWT_ALG_HS256) {
        verified = http_jwt_hs256_ok(a, token, (size_t)(dot2 - token), dot2 + 1,
                                     len - (size_t)(dot2 + 1 - token));
    } else {
        jwt_t *jwt = NULL;
        verified = jwt_decode(&jwt, token, key, (int)keylen) == 0 && jwt != NULL &&
                   jwt_get_alg(jwt) == want;
        jwt_free(jwt);
    }
    if (!verified) {
        snprintf(why, whylen, "JWT signature does not verify");
        return HTTP_AUTH_INVALID;
    }

    /* Signed by a key we trust: now its time claims. */
    json_t *claims = http_jwt_segment(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (claims == NULL) {
        snprintf(why, whylen, "JWT claims are not a JSON object");
        return HTTP_AUTH_INVALID;
    }
    double now = (double)time(NULL);
    const json_t *exp = json_object_get(claims, "exp");
    const json_t *nbf = json_object_get(claims, "nbf");
    http_auth_result r = HTTP_AUTH_OK;
    if (exp && !json_is_number(exp)) {
        snprintf(why, whylen, "JWT exp is not a number");
        r = HTTP_AUTH_INVALID;
    } else if (exp && now >= json_number_value(exp)) {
        snprintf(why, whylen, "JWT expired");
        r = HTTP_AUTH_INVALID;
    } else if (nbf && (!json_is_number(nbf) || now < json_number_value(nbf))) {
        snprintf(why, whylen, "JWT not valid yet (nbf)");
        r = HTTP_AUTH_INVALID;
    }
    if (r == HTTP_AUTH_OK && sub) {
        const char *subject = json_string_value(json_object_get(claims, "sub"));
        /* No string sub: "", which names no customer. */
        *sub = strdup(subject ? subject : "");
        if (*sub == NULL) {
            snprintf(why, whylen, "out of memory");
            r = HTTP_AUTH_INVALID;
        }
    }
    json_decref(claims);
    return r;
}

/* ------------------------------------------------------------ the check */

http_auth_result http_auth_check(const http_auth *a, const char *api_key, const char *authorization,
                                 char *why, size_t whylen) {
    return http_auth_check_sub(a, api_key, authorization, NULL, why, whylen);
}

http_auth_result http_auth_check_sub(const http_auth *a, const char *api_key,
                                     const char *authorization, char **sub, char *why,
                                     size_t whylen) {
    if (sub) *sub = NULL;
    const char *bearer = NULL;
    if (authorization) {
        const char *s = authorization;
        while (*s == ' ' || *s == '\t')
            s++;
        if (strncasecmp(s, "Bearer", 6) == 0 && (s[6] == ' ' || s[6] == '\t')) {
            s += 7;
            while (*s == ' ' || *s == '\t')
                s++;
            if (*s) bearer = s;
        }
    }
    if ((api_key == NULL || *api_key == '\0') && bearer == NULL) {
        snprintf(why, whylen, "%s",
                 authorization ? "Authorization is not Bearer" : "no credential");
        return authorization ? HTTP_AUTH_INVALID : HTTP_AUTH_MISSING;
    }
    if (a->nkeys) {
        if (api_key && *api_key && http_auth_key_matches(a, api_key)) return HTTP_AUTH_OK;
        if (bearer && http_auth_key_matches(a, bearer)) return HTTP_AUTH_OK;
    }
    if (bearer && (a->jwt_secret || a->jwt_public_key)) {
        /* A trailing blank would make the signature segment wrong. */
        size_t n = strlen(bearer);
        while (n && (bearer[n - 1] == ' ' || bearer[n - 1] == '\t'))
            n--;
        if (n == strlen(bearer)) return http_auth_jwt(a, bearer, sub, why, whylen);
        char *copy = strndup(bearer, n);
        if (copy == NULL) {
            snprintf(why, whylen, "out of memory");
            return HTTP_AUTH_INVALID;
        }
        http_auth_result r = http_auth_jwt(a, copy, sub, why, whylen);
        free(copy);
        return r;
    }
    snprintf(why, whylen, "API key not accepted");
    return HTTP_AUTH_INVALID;
}
