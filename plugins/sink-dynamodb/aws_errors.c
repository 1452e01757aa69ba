/*
 * AWS error classification (see aws_errors.h).  Kept free of any one
 * service's details so another AWS sink can compile it as it is.
 */
#include "aws_errors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Error types every AWS service uses for "slow down": retried even though
 * they come with a 400. */
static const char *const aws_throttling_types[] = {
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "TransactionInProgressException",
    NULL,
};

int aws_error_is(const aws_error *e, const char *type) {
    return strcmp(e->type, type) == 0;
}

/* Copies the text between <tag> and </tag> in body into out. */
static int aws_xml_field(const char *body, const char *tag, char *out, size_t outlen) {
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *a = strstr(body, open);
    if (a == NULL) return 0;
    a += strlen(open);
    const char *b = strstr(a, close);
    if (b == NULL) return 0;
    snprintf(out, outlen, "%.*s", (int)(b - a), a);
    return 1;
}

/* Reads the AWS error type and message from a JSON or XML body. */
static void aws_error_parse_body(const cd_http_result *res, aws_error *out) {
    json_t *j = res->body_len ? json_loadb(res->body, res->body_len, 0, NULL) : NULL;
    if (json_is_object(j)) {
        const char *type = json_string_value(json_object_get(j, "__type"));
        if (type == NULL) type = json_string_value(json_object_get(j, "code"));
        const char *msg = json_string_value(json_object_get(j, "message"));
        if (msg == NULL) msg = json_string_value(json_object_get(j, "Message"));
        if (type != NULL) {
            const char *hash = strrchr(type, '#'); /* "com.amazonaws.dynamodb.v20120810#X" */
            snprintf(out->type, sizeof(out->type), "%s", hash ? hash + 1 : type);
        }
        if (msg != NULL) snprintf(out->message, sizeof(out->message), "%s", msg);
    } else if (res->body_len) {
        aws_xml_field(res->body, "Code", out->type, sizeof(out->type));
        aws_xml_field(res->body, "Message", out->message, sizeof(out->message));
    }
    json_decref(j);
}

static int64_t aws_retry_after_ms(const char *v) {
    if (v == NULL) return 0;
    char *end;
    long s = strtol(v, &end, 10);
    if (end == v || s <= 0 || s > 3600) return 0; /* an HTTP date: let the engine back off */
    return (int64_t)s * 1000;
}

cd_outcome aws_error_classify(const cd_http_result *res, aws_error *out) {
    memset(out, 0, sizeof(*out));
    out->status = res->status;
    if (res->error != 0 || res->status == 0) {
        snprintf(out->type, sizeof(out->type), "connection");
        snprintf(out->message, sizeof(out->message), "%s",
                 res->error_message ? res->error_message : "no response");
        /* Connection errors and timeouts are retriable; anything else the
         * client refused (a bad URL) would fail again the same way. */
        out->outcome = res->retriable ? CD_RECORD_RETRY : CD_RECORD_FATAL;
    } else if (res->status >= 200 && res->status < 300) {
        out->outcome = CD_RECORD_OK;
        return out->outcome;
    } else {
        aws_error_parse_body(res, out);
        if (out->type[0] == '\0') snprintf(out->type, sizeof(out->type), "HTTP %d", res->status);
        if (out->message[0] == '\0')
            snprintf(out->message, sizeof(out->message), "%.*s",
                     (int)(res->body_len > 200 ? 200 : res->body_len), res->body);
        int throttled = 0;
        for (size_t i = 0; aws_throttling_types[i] != NULL; i++)
            if (aws_error_is(out, aws_throttling_types[i])) throttled = 1;
        if (throttled || res->status == 408 || res->status == 429 || res->status >= 500)
            out->outcome = CD_RECORD_RETRY;
        else
            out->outcome = CD_RECORD_FATAL;
        out->retry_after_ms = aws_retry_after_ms(res->retry_after);
    }
    snprintf(out->reason, sizeof(out->reason), "%s: %s", out->type, out->message);
    return out->outcome;
}
