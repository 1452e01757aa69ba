/*
 * JWT verification for the plugins that let clients in by token
 * (source-http's POSTs, sink-websocket's /ws): the keys from the options
 * `jwt_secret` (HS256) and `jwt_public_key` (RS256, a PEM RSA public key),
 * and the check of one token against them.
 *
 * A token is checked in this order, and the first failure is the reason:
 *   - its shape: at most JWT_VERIFY_MAX bytes, three dot-separated segments
 *     ("not a JWT");
 *   - the header's alg, read here before any verifier sees the token: it
 *     must be one we hold a key for (HS256 with the secret, RS256 with the
 *     public key), so "none" and the HS256-signed-with-the-public-key
 *     confusion never get further ("JWT alg X is not accepted (only ...)");
 *   - the signature: HS256 here (HMAC-SHA256 compared with CRYPTO_memcmp,
 *     whichever libjwt is installed: older ones compare with strcmp,
 *     CVE-2024-25189), RS256 by libjwt ("JWT signature does not verify");
 *   - the claims, a JSON object: exp (required when the caller says so)
 *     and nbf against the clock, then sub (required, and bounded, when the
 *     caller says so).
 * The segments are decoded into stack buffers (a token is bounded); only
 * the JSON parser, libjwt (RS256) and an accepted token's sub allocate.
 */
#ifndef CONNECTD_JWT_VERIFY_H
#define CONNECTD_JWT_VERIFY_H

#include <connectd/plugin.h>

#include <stddef.h>
#include <time.h>

/* A token longer than this (bytes) is refused unread (the HTTP server
 * bounds heads at 16 KiB anyway). */
#define JWT_VERIFY_MAX 8192

/* The keys a token may be signed with; either may be NULL. */
typedef struct jwt_verifier {
    char *secret; /* HS256 (owned) */
    size_t secret_len;
    char *public_key; /* RS256, PEM text (owned) */
    size_t public_key_len;
} jwt_verifier;

/* Which of the two keys the options must set. */
typedef enum jwt_keys_rule {
    JWT_KEYS_ANY = 0,         /* none, either or both */
    JWT_KEYS_EXACTLY_ONE = 1, /* one of the two, not both */
} jwt_keys_rule;

/* Fills v from the option values secret and public_key (NULL or "" means
 * unset) under rule; a public key must be a PEM RSA public key.  Returns 0,
 * or CD_ERR_INVALID / CD_ERR_NOMEM with errbuf naming the option; v is then
 * empty (jwt_verifier_free is still safe). */
int jwt_verifier_init(jwt_verifier *v, const char *secret, const char *public_key,
                      jwt_keys_rule rule, char *errbuf, size_t errlen);
/* 1 when v holds a key. */
int jwt_verifier_enabled(const jwt_verifier *v);
/* 1 when both hold the same keys. */
int jwt_verifier_same(const jwt_verifier *a, const jwt_verifier *b);
/* Wipes the secret and frees the keys; v is left empty. */
void jwt_verifier_free(jwt_verifier *v);

/* The credential of "Authorization: Bearer <credential>" (the scheme in
 * any case, blanks around the credential skipped): a pointer into
 * authorization and its length in *len, or NULL when authorization is NULL,
 * not Bearer, or has nothing after the scheme. */
const char *jwt_bearer(const char *authorization, size_t *len);

/* What a caller requires of the claims beyond a good signature and, when
 * present, an exp after now and an nbf not after now. */
typedef struct jwt_rules {
    int require_exp;      /* no exp: "JWT has no exp" */
    int require_sub;      /* no or empty string sub: "JWT has no sub" */
    const char *sub_hint; /* what sub names, in that reason: "JWT has no sub (HINT)" */
    size_t sub_max;       /* longest sub in bytes; 0: no bound */
} jwt_rules;

/* The claims of an accepted token. */
typedef struct jwt_claims {
    char *sub; /* malloc'ed; "" when the token has no string sub */
    int has_exp, has_nbf;
    double exp, nbf;
} jwt_claims;

typedef enum jwt_verify_result {
    JWT_VERIFY_OK = 0,
    JWT_VERIFY_INVALID = 2, /* refused; why says why */
} jwt_verify_result;

/* Verifies token[0..len) (it need not be NUL-terminated there) against v's
 * keys and rules (NULL: none beyond the defaults) at time now.  On
 * JWT_VERIFY_OK fills *claims when claims is not NULL (release with
 * jwt_claims_free); else leaves claims empty and writes the reason to why
 * (for a log or a 401 body: it never quotes the token or a key). */
jwt_verify_result jwt_verify(const jwt_verifier *v, const char *token, size_t len,
                             const jwt_rules *rules, time_t now, jwt_claims *claims, char *why,
                             size_t whylen);
void jwt_claims_free(jwt_claims *claims);

#endif /* CONNECTD_JWT_VERIFY_H */
