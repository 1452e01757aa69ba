/*
 * AWS error classification (see aws_error.h): the core, which takes an
 * error code already read, and the JSON front end.  Free of any one
 * service's details: every AWS sink compiles it as it is.
 */
#include "aws_error.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Codes every AWS service (or AWS's front end, or KMS behind it) uses for
 * "slow down" and "try later": retried even when they come with a 400. */
static const char *const aws_transient_codes[] = {
    "Throttling",
    "Throttled",
    "ThrottlingException",
    "ThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "TransactionInProgressException",
    "TransactionConflictException", /* another writer's transaction holds the item */
    "ReplicatedWriteConflictException",
    "KMSThrottling",
    "KMSThrottlingException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    NULL,
};

int aws_error_code_is_transient(const char *code) {
    for (size_t i = 0; aws_transient_codes[i] != NULL; i++)
        if (strcmp(code, aws_transient_codes[i]) == 0) return 1;
    return 0;
}

int aws_error_is(const aws_error *e, const char *type) {
    return strcmp(e->type, type) == 0;
}

static int64_t aws_retry_after_ms(const char *v) {
    if (v == NULL) return 0;
    char *end;
    long s = strtol(v, &end, 10);
    if (end == v || s <= 0 || s > 3600) return 0; /* an HTTP date: let the engine back off */
    return (int64_t)s * 1000;
}

cd_outcome aws_error_classify_code(int status, const char *code, const char *message,
                                   const char *retry_after, aws_error *out) {
    memset(out, 0, sizeof(*out));
    out->status = status;
    if (status >= 200 && status < 300) {
        out->outcome = CD_RECORD_OK;
        return out->outcome;
    }
    if (code != NULL && code[0] != '\0')
        snprintf(out->type, sizeof(out->type), "%s", code);
    else
        snprintf(out->type, sizeof(out->type), "HTTP %d", status);
    if (message != NULL) snprintf(out->message, sizeof(out->message), "%s", message);
    if (aws_error_code_is_transient(out->type) || status == 408 || status == 429 || status >= 500)
        out->outcome = CD_RECORD_RETRY;
    else
        out->outcome = CD_RECORD_FATAL;
    out->retry_after_ms = aws_retry_after_ms(retry_after);
    snprintf(out->reason, sizeof(out->reason), "%s: %s", out->type, out->message);
    return out->outcome;
}

int aws__error_transport(const cd_http_result *res, aws_error *out) {
    if (res->error != 0 || res->status == 0) {
        memset(out, 0, sizeof(*out));
        out->status = res->status;
        snprintf(out->type, sizeof(out->type), "connection");
        snprintf(out->message, sizeof(out->message), "%s",
                 res->error_message ? res->error_message : "no response");
        /* Connection errors and timeouts are retriable; anything else the
         * client refused (a bad URL) would fail again the same way. */
        out->outcome = res->retriable ? CD_RECORD_RETRY : CD_RECORD_FATAL;
        snprintf(out->reason, sizeof(out->reason), "%s: %s", out->type, out->message);
        return 1;
    }
    if (res->status >= 200 && res->status < 300) {
        aws_error_classify_code(res->status, NULL, NULL, NULL, out);
        return 1;
    }
    return 0;
}

cd_outcome aws__error_from_body(const cd_http_result *res, const char *code, const char *message,
                                aws_error *out) {
    char head[201];
    if (message == NULL || message[0] == '\0') {
        snprintf(head, sizeof(head), "%.*s", (int)(res->body_len > 200 ? 200 : res->body_len),
                 res->body);
        message = head;
    }
    return aws_error_classify_code(res->status, code, message, res->retry_after, out);
}

cd_outcome aws_error_classify_json(const cd_http_result *res, aws_error *out) {
    if (aws__error_transport(res, out)) return out->outcome;
    json_t *j = res->body_len ? json_loadb(res->body, res->body_len, 0, NULL) : NULL;
    const char *code = NULL, *msg = NULL;
    if (json_is_object(j)) {
        code = json_string_value(json_object_get(j, "__type"));
        if (code == NULL) code = json_string_value(json_object_get(j, "code"));
        msg = json_string_value(json_object_get(j, "message"));
        if (msg == NULL) msg = json_string_value(json_object_get(j, "Message"));
        /* "com.amazonaws.dynamodb.v20120810#ValidationException" */
        const char *hash = code ? strrchr(code, '#') : NULL;
        if (hash != NULL) code = hash + 1;
    }
    aws__error_from_body(res, code, msg, out);
    json_decref(j);
    return out->outcome;
}
