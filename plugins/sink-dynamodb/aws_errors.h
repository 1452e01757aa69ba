/*
 * AWS error classification shared by the AWS sinks (sink-dynamodb now;
 * sink-sns can compile the same file).  It turns one HTTP result into the
 * engine's per-record outcome:
 *   RETRY  throttling (ThrottlingException, ProvisionedThroughputExceeded-
 *          Exception, RequestLimitExceeded, ... or HTTP 429), 408, 5xx,
 *          timeouts and connection errors, with Retry-After as the hint;
 *   FATAL  ValidationException, ResourceNotFoundException,
 *          AccessDeniedException and every other 4xx, with the reason
 *          "<AwsErrorType>: <message>".
 * It reads both JSON error bodies ({"__type": "...#Type", "message": ...})
 * and XML ones (<Code>..</Code><Message>..</Message>).
 */
#ifndef CONNECTD_AWS_ERRORS_H
#define CONNECTD_AWS_ERRORS_H

#include <connectd/plugin.h>

typedef struct aws_error {
    cd_outcome outcome;     /* CD_RECORD_OK for a 2xx */
    int64_t retry_after_ms; /* >0: Retry-After, for RETRY */
    int status;             /* HTTP status, 0 for a transport error */
    char type[128];         /* "ValidationException", "HTTP 503", "connection" ... */
    char message[512];
    char reason[700]; /* "<type>: <message>" */
} aws_error;

/* Classifies res into *out; returns out->outcome. */
cd_outcome aws_error_classify(const cd_http_result *res, aws_error *out);

/* True when the error's type is `type` ("ConditionalCheckFailedException"). */
int aws_error_is(const aws_error *e, const char *type);

#endif /* CONNECTD_AWS_ERRORS_H */
