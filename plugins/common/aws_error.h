/*
 * AWS error classification shared by the AWS sinks (sink-dynamodb,
 * sink-sns).  It turns one HTTP answer into the engine's per-record
 * outcome:
 *   RETRY  throttling codes (ThrottlingException, Throttling,
 *          ProvisionedThroughputExceededException, RequestLimitExceeded,
 *          KMSThrottlingException, ...), transient codes (InternalError,
 *          ServiceUnavailable, RequestTimeout, ...), HTTP 408, 429, 5xx,
 *          timeouts and connection errors, with Retry-After as the hint;
 *   FATAL  every other 4xx (ValidationException, NotFound,
 *          AccessDeniedException, ...), with the reason "<Code>: <message>".
 *
 * The core takes an error code that was already read (aws_error_classify_
 * code); two front ends read it from an answer's body first: JSON
 * ({"__type": "...#Type", "message": ...}: DynamoDB and the other JSON
 * protocols) and XML (<ErrorResponse><Error><Code>..: the query protocol,
 * SNS, and moto's signature errors; read with expat, in aws_error_xml.c,
 * so a plugin that only ever gets JSON does not link expat).
 */
#ifndef CONNECTD_AWS_ERROR_H
#define CONNECTD_AWS_ERROR_H

#include <connectd/plugin.h>

#include <stdint.h>

typedef struct aws_error {
    cd_outcome outcome;     /* CD_RECORD_OK for a 2xx */
    int64_t retry_after_ms; /* >0: Retry-After, for RETRY */
    int status;             /* HTTP status, 0 for a transport error */
    char type[128];         /* "ValidationException", "HTTP 503", "connection" ... */
    char message[512];
    char reason[700]; /* "<type>: <message>" */
} aws_error;

/* Classifies an AWS error whose code is known: status is the HTTP status
 * (2xx: OK); code the AWS error code, NULL or "" for none ("HTTP <status>"
 * stands in); message its text (NULL: none); retry_after the Retry-After
 * header or NULL.  Fills *out, returns out->outcome. */
cd_outcome aws_error_classify_code(int status, const char *code, const char *message,
                                   const char *retry_after, aws_error *out);

/* Classifies an answer whose error body is JSON (a body that is not
 * JSON gives "HTTP <status>: <the body's first 200 bytes>").  Transport
 * errors: "connection", RETRY when res->retriable, else FATAL. */
cd_outcome aws_error_classify_json(const cd_http_result *res, aws_error *out);

/* The same for an XML error body (aws_error_xml.c; links expat): the
 * Code and Message of ErrorResponse/Error, ErrorResponse/Errors/Error or
 * a bare Error element. */
cd_outcome aws_error_classify_xml(const cd_http_result *res, aws_error *out);

/* For a service that answers JSON but whose front end (or a stand-in such
 * as moto, for signature errors) may answer XML: the XML front end when
 * the body starts with '<' (after white space), else the JSON one
 * (aws_error_xml.c; links expat). */
cd_outcome aws_error_classify_body(const cd_http_result *res, aws_error *out);

/* True for the codes that mean "slow down" or "try later" on any AWS
 * service (retried even when they come with a 400). */
int aws_error_code_is_transient(const char *code);

/* True when the error's type is `type` ("ConditionalCheckFailedException"). */
int aws_error_is(const aws_error *e, const char *type);

/* For the front ends: a transport error or a 2xx fills *out completely and
 * returns 1; anything else returns 0. */
int aws__error_transport(const cd_http_result *res, aws_error *out);

/* For the front ends: classifies res with the code and message read from
 * its body; without a message, the body's first 200 bytes stand in. */
cd_outcome aws__error_from_body(const cd_http_result *res, const char *code, const char *message,
                                aws_error *out);

#endif /* CONNECTD_AWS_ERROR_H */
