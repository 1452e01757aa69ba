/*
 * source-http — who may post: API keys (stored as hashes) and JWTs.
 *
 * API keys never appear in the configuration: only their SHA-256, as
 * "sha256:<hex>", so a leaked pipeline file does not leak a key.  A
 * presented key is hashed and compared with every configured hash using
 * CRYPTO_memcmp and no early exit, so the time taken says nothing about
 * which hash, or how much of one, matched.
 *
 * JWTs are checked by plugins/common/jwt_verify.c: HS256 with jwt_secret,
 * RS256 with jwt_public_key, exp and nbf when present; exp and sub are
 * optional here.
 */
#include "http.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

int http_auth_enabled(const http_auth *a) {
    return a->nkeys > 0 || jwt_verifier_enabled(&a->jwt);
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

void http_auth_free(http_auth *a) {
    free(a->key_hashes);
    jwt_verifier_free(&a->jwt);
    *a = (http_auth){0};
}

/* ------------------------------------------------------------- API keys */

static int http_auth_key_matches(const http_auth *a, const char *key, size_t len) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(key, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) return 0;
    int match = 0;
    for (size_t i = 0; i < a->nkeys; i++)
        match |= CRYPTO_memcmp(md, a->key_hashes[i], 32) == 0;
    return match;
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
    size_t blen = 0;
    const char *bearer = jwt_bearer(authorization, &blen);
    if ((api_key == NULL || *api_key == '\0') && bearer == NULL) {
        snprintf(why, whylen, "%s",
                 authorization ? "Authorization is not Bearer" : "no credential");
        return authorization ? HTTP_AUTH_INVALID : HTTP_AUTH_MISSING;
    }
    if (a->nkeys) {
        if (api_key && *api_key && http_auth_key_matches(a, api_key, strlen(api_key)))
            return HTTP_AUTH_OK;
        if (bearer && http_auth_key_matches(a, bearer, blen)) return HTTP_AUTH_OK;
    }
    if (bearer && jwt_verifier_enabled(&a->jwt)) {
        jwt_claims claims;
        if (jwt_verify(&a->jwt, bearer, blen, NULL, time(NULL), sub ? &claims : NULL, why,
                       whylen) != JWT_VERIFY_OK)
            return HTTP_AUTH_INVALID;
        if (sub) *sub = claims.sub; /* "" when the JWT has no string sub */
        return HTTP_AUTH_OK;
    }
    snprintf(why, whylen, "API key not accepted");
    return HTTP_AUTH_INVALID;
}
