/*
 * sink-websocket — who may open /ws: a JWT whose sub is the customerId.
 *
 * The token comes from "Authorization: Bearer" or ?token= (browsers cannot
 * set headers on a WebSocket); plugins/common/jwt_verify.c checks it
 * (the configured alg only, the signature, nbf) under this sink's rules:
 * exp is required, and sub, the customerId, must be a non-empty string of
 * at most WS_ID_MAX bytes.
 */
#include "websocket.h"

#include <stdio.h>
#include <string.h>

const char *ws_auth_token(const char *authorization, const char *query_token, size_t *len) {
    const char *t = jwt_bearer(authorization, len);
    if (t) return t;
    *len = query_token ? strlen(query_token) : 0;
    return *len ? query_token : NULL;
}

ws_auth_result ws_auth_verify(const jwt_verifier *a, const char *token, size_t len, time_t now,
                              char **sub, char *why, size_t whylen) {
    static const jwt_rules rules = {
        .require_exp = 1, .require_sub = 1, .sub_hint = "the customerId", .sub_max = WS_ID_MAX};
    *sub = NULL;
    if (token == NULL || len == 0) {
        snprintf(why, whylen, "no token (Authorization: Bearer or ?token=)");
        return WS_AUTH_MISSING;
    }
    jwt_claims claims;
    if (jwt_verify(a, token, len, &rules, now, &claims, why, whylen) != JWT_VERIFY_OK)
        return WS_AUTH_INVALID;
    *sub = claims.sub;
    return WS_AUTH_OK;
}
