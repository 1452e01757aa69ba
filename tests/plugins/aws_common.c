/*
 * plugins/common, the code the AWS sinks share, linked in as the plugins
 * link it: the AWS error classifier (the code-based core, its JSON and XML
 * front ends and the pick between them) and the region/endpoint options.  The stop protocol
 * (inflight.c) runs in the plugin tests (tests/plugins/sns.c) and the
 * integration tests of both sinks.
 */
#include <criterion/criterion.h>
#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws_conf.h"
#include "aws_error.h"
#include "buf.h"

static cd_outcome json_err(int status, const char *body, const char *retry_after, aws_error *e) {
    cd_http_result res = {
        .status = status, .body = body, .body_len = strlen(body), .retry_after = retry_after};
    return aws_error_classify_json(&res, e);
}

static cd_outcome xml_err(int status, const char *body, const char *retry_after, aws_error *e) {
    cd_http_result res = {
        .status = status, .body = body, .body_len = strlen(body), .retry_after = retry_after};
    return aws_error_classify_xml(&res, e);
}

/* A body of n copies of s between head and tail (malloc'd). */
static char *repeat(const char *head, const char *s, size_t n, const char *tail) {
    size_t hl = strlen(head), sl = strlen(s), tl = strlen(tail);
    char *b = malloc(hl + sl * n + tl + 1);
    cr_assert_not_null(b);
    memcpy(b, head, hl);
    for (size_t i = 0; i < n; i++)
        memcpy(b + hl + i * sl, s, sl);
    memcpy(b + hl + sl * n, tail, tl + 1);
    return b;
}

/* ------------------------------------------------------------ the core */

Test(aws_error_code, a_known_code_decides_and_names_the_reason) {
    aws_error e;
    cr_assert_eq(aws_error_classify_code(400, "ValidationException", "bad key", NULL, &e),
                 CD_RECORD_FATAL);
    cr_assert_str_eq(e.reason, "ValidationException: bad key");
    cr_assert_eq(e.status, 400);
    cr_assert(aws_error_is(&e, "ValidationException"));
    cr_assert_not(aws_error_is(&e, "Validation"));
    cr_assert_eq(aws_error_classify_code(400, "Throttling", "Rate exceeded", "3", &e),
                 CD_RECORD_RETRY);
    cr_assert_eq(e.retry_after_ms, 3000);
    cr_assert_eq(aws_error_classify_code(404, "NotFound", NULL, NULL, &e), CD_RECORD_FATAL);
    cr_assert_str_eq(e.reason, "NotFound: ");
    cr_assert_eq(e.retry_after_ms, 0);
}

Test(aws_error_code, without_a_code_the_status_stands_in) {
    aws_error e;
    cr_assert_eq(aws_error_classify_code(500, NULL, "x", NULL, &e), CD_RECORD_RETRY);
    cr_assert_str_eq(e.type, "HTTP 500");
    cr_assert_str_eq(e.reason, "HTTP 500: x");
    cr_assert_eq(aws_error_classify_code(403, "", "", NULL, &e), CD_RECORD_FATAL);
    cr_assert_str_eq(e.type, "HTTP 403");
    cr_assert_eq(aws_error_classify_code(408, NULL, NULL, NULL, &e), CD_RECORD_RETRY);
    cr_assert_eq(aws_error_classify_code(429, NULL, NULL, NULL, &e), CD_RECORD_RETRY);
    cr_assert_eq(aws_error_classify_code(204, NULL, NULL, NULL, &e), CD_RECORD_OK);
    cr_assert_str_eq(e.reason, "");
}

Test(aws_error_code, throttling_and_transient_codes_retry_even_with_a_400) {
    const char *retry[] = {"ThrottlingException",
                           "Throttling",
                           "Throttled",
                           "ProvisionedThroughputExceededException",
                           "RequestLimitExceeded",
                           "TooManyRequestsException",
                           "SlowDown",
                           "TransactionInProgressException",
                           "TransactionConflictException",
                           "ReplicatedWriteConflictException",
                           "KMSThrottlingException",
                           "InternalError",
                           "ServiceUnavailable",
                           "RequestTimeout"};
    const char *fatal[] = {"ValidationException",   "ResourceNotFoundException",
                           "AccessDeniedException", "ConditionalCheckFailedException",
                           "InvalidParameter",      "KMSDisabled",
                           "throttlingexception",   "Throttling "};
    aws_error e;
    for (size_t i = 0; i < sizeof(retry) / sizeof(retry[0]); i++) {
        cr_assert(aws_error_code_is_transient(retry[i]), "%s", retry[i]);
        cr_assert_eq(aws_error_classify_code(400, retry[i], "m", NULL, &e), CD_RECORD_RETRY, "%s",
                     retry[i]);
    }
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++) {
        cr_assert_not(aws_error_code_is_transient(fatal[i]), "%s", fatal[i]);
        cr_assert_eq(aws_error_classify_code(400, fatal[i], "m", NULL, &e), CD_RECORD_FATAL, "%s",
                     fatal[i]);
    }
    /* Any 5xx is retried, whatever its code says. */
    cr_assert_eq(aws_error_classify_code(500, "ValidationException", "m", NULL, &e),
                 CD_RECORD_RETRY);
}

Test(aws_error_code, retry_after_is_whole_seconds_up_to_an_hour) {
    aws_error e;
    struct {
        const char *v;
        int64_t ms;
    } cases[] = {{"1", 1000}, {"120", 120000}, {"3600", 3600000},
                 {"3601", 0}, {"0", 0},        {"-5", 0},
                 {"soon", 0}, {"", 0},         {"Wed, 21 Oct 2015 07:28:00 GMT", 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_eq(aws_error_classify_code(503, NULL, NULL, cases[i].v, &e), CD_RECORD_RETRY);
        cr_assert_eq(e.retry_after_ms, cases[i].ms, "\"%s\": %lld", cases[i].v,
                     (long long)e.retry_after_ms);
    }
}

Test(aws_error_code, long_codes_and_messages_are_cut_not_overrun) {
    char *code = repeat("", "C", 1000, "");
    char *msg = repeat("", "m", 5000, "");
    aws_error e;
    cr_assert_eq(aws_error_classify_code(400, code, msg, NULL, &e), CD_RECORD_FATAL);
    cr_assert_eq(strlen(e.type), sizeof(e.type) - 1);
    cr_assert_eq(strlen(e.message), sizeof(e.message) - 1);
    cr_assert_eq(strlen(e.reason), strlen(e.type) + 2 + strlen(e.message));
    free(code);
    free(msg);
}

/* ------------------------------------------------------ transport errors */

Test(aws_error_transport, connection_errors_retry_when_retriable_only) {
    aws_error e;
    cd_http_result refused = {
        .error = -111, .error_message = "Connection refused", .body = "", .retriable = 1};
    cr_assert_eq(aws_error_classify_json(&refused, &e), CD_RECORD_RETRY);
    cr_assert_str_eq(e.reason, "connection: Connection refused");
    cr_assert_eq(aws_error_classify_xml(&refused, &e), CD_RECORD_RETRY);
    cr_assert_str_eq(e.type, "connection");
    cd_http_result bad_url = {.error = -22, .error_message = "URL rejected", .body = ""};
    cr_assert_eq(aws_error_classify_json(&bad_url, &e), CD_RECORD_FATAL);
    cr_assert_eq(aws_error_classify_xml(&bad_url, &e), CD_RECORD_FATAL);
    cr_assert_str_eq(e.reason, "connection: URL rejected");
    cd_http_result none = {.status = 0, .body = "", .retriable = 1};
    cr_assert_eq(aws_error_classify_json(&none, &e), CD_RECORD_RETRY);
    cr_assert_str_eq(e.reason, "connection: no response");
}

/* ------------------------------------------------------------------ JSON */

Test(aws_error_json, dynamodb_type_loses_its_namespace) {
    aws_error e;
    cr_assert_eq(json_err(400,
                          "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ValidationException\","
                          "\"message\":\"One or more parameter values were invalid\"}",
                          NULL, &e),
                 CD_RECORD_FATAL);
    cr_assert_str_eq(e.type, "ValidationException");
    cr_assert_str_eq(e.reason, "ValidationException: One or more parameter values were invalid");
    cr_assert_eq(json_err(400,
                          "{\"__type\":\"com.amazonaws.dynamodb.v20120810#"
                          "ConditionalCheckFailedException\",\"Message\":\"The conditional "
                          "request failed\"}",
                          NULL, &e),
                 CD_RECORD_FATAL);
    cr_assert(aws_error_is(&e, "ConditionalCheckFailedException"));
    cr_assert_str_eq(e.message, "The conditional request failed");
    cr_assert_eq(json_err(400, "{\"code\":\"AccessDeniedException\",\"message\":\"no\"}", NULL, &e),
                 CD_RECORD_FATAL);
    cr_assert_str_eq(e.reason, "AccessDeniedException: no");
}

Test(aws_error_json, throttling_retries_with_retry_after) {
    aws_error e;
    cr_assert_eq(json_err(400,
                          "{\"__type\":\"com.amazonaws.dynamodb.v20120810#"
                          "ProvisionedThroughputExceededException\",\"message\":\"slow\"}",
                          "2", &e),
                 CD_RECORD_RETRY);
    cr_assert_eq(e.retry_after_ms, 2000);
    cr_assert_str_eq(e.type, "ProvisionedThroughputExceededException");
    cr_assert_eq(json_err(400, "{\"__type\":\"ThrottlingException\"}", NULL, &e), CD_RECORD_RETRY);
    cr_assert_eq(json_err(429, "{}", NULL, &e), CD_RECORD_RETRY);
    cr_assert_str_eq(e.reason, "HTTP 429: {}");
}

Test(aws_error_json, server_errors_retry) {
    aws_error e;
    cr_assert_eq(json_err(500,
                          "{\"__type\":\"com.amazon.coral.service#InternalFailure\","
                          "\"message\":\"We encountered an internal error\"}",
                          NULL, &e),
                 CD_RECORD_RETRY);
    cr_assert_str_eq(e.type, "InternalFailure");
    cr_assert_eq(json_err(503, "<html>Service Unavailable</html>", "Wed, 21 Oct 2015", &e),
                 CD_RECORD_RETRY);
    cr_assert_str_eq(e.reason, "HTTP 503: <html>Service Unavailable</html>");
    cr_assert_eq(e.retry_after_ms, 0);
}

Test(aws_error_json, malformed_bodies_fall_back_to_the_status_and_the_body) {
    const char *bodies[] = {
        "{\"__type\":\"ValidationExc",
        "[\"ValidationException\"]",
        "{\"__type\":7}",
        "null",
        "not json at all",
        "",
        "\"ValidationException\"",
    };
    aws_error e;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        cr_assert_eq(json_err(400, bodies[i], NULL, &e), CD_RECORD_FATAL, "%s", bodies[i]);
        cr_assert_str_eq(e.type, "HTTP 400", "%s", bodies[i]);
        char want[300];
        snprintf(want, sizeof(want), "HTTP 400: %s", bodies[i]);
        cr_assert_str_eq(e.reason, want);
    }
    /* A message-only body keeps its message. */
    cr_assert_eq(json_err(400, "{\"message\":\"m\"}", NULL, &e), CD_RECORD_FATAL);
    cr_assert_str_eq(e.reason, "HTTP 400: m");
    /* A long body: its first 200 bytes stand for the message. */
    char *big = repeat("", "x", 5000, "");
    cr_assert_eq(json_err(502, big, NULL, &e), CD_RECORD_RETRY);
    cr_assert_eq(strlen(e.message), 200);
    free(big);
    /* An XML answer is not read by the JSON front end. */
    cr_assert_eq(json_err(400, "<Error><Code>Throttling</Code></Error>", NULL, &e),
                 CD_RECORD_FATAL);
    cr_assert_str_eq(e.type, "HTTP 400");
}

Test(aws_error_json, success_is_ok_whatever_the_body) {
    aws_error e;
    cr_assert_eq(json_err(200, "{\"UnprocessedItems\":{}}", NULL, &e), CD_RECORD_OK);
    cr_assert_eq(json_err(200, "{\"__type\":\"ThrottlingException\"}", NULL, &e), CD_RECORD_OK);
    cr_assert_str_eq(e.reason, "");
}

/* ------------------------------------------------------------------- XML */

static const char sns_not_found[] =
    "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\n"
    "  <Error>\n    <Type>Sender</Type>\n    <Code>NotFound</Code>\n"
    "    <Message>Topic does not exist</Message>\n  </Error>\n"
    "  <RequestId>9dd01905-5012-5f99-8663-4b3ecd0dfaef</RequestId>\n</ErrorResponse>";

Test(aws_error_xml, error_response_gives_code_and_message) {
    aws_error e;
    cr_assert_eq(xml_err(404, sns_not_found, NULL, &e), CD_RECORD_FATAL);
    cr_assert_str_eq(e.type, "NotFound");
    cr_assert_str_eq(e.reason, "NotFound: Topic does not exist");
}

Test(aws_error_xml, the_errors_wrapper_of_aws_front_end_answers_is_read_too) {
    aws_error e;
    cr_assert_eq(xml_err(403,
                         "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ErrorResponse><Errors>"
                         "<Error><Code>AccessDenied</Code><Message>User: u is not "
                         "authorized</Message></Error></Errors><RequestId>r</RequestId>"
                         "</ErrorResponse>",
                         NULL, &e),
                 CD_RECORD_FATAL);
    cr_assert_str_eq(e.reason, "AccessDenied: User: u is not authorized");
}

Test(aws_error_xml, a_bare_error_element_s3_style_is_read) {
    aws_error e;
    cr_assert_eq(xml_err(503,
                         "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code>"
                         "<Message>Reduce your request rate.</Message></Error>",
                         "1", &e),
                 CD_RECORD_RETRY);
    cr_assert_str_eq(e.reason, "SlowDown: Reduce your request rate.");
    cr_assert_eq(e.retry_after_ms, 1000);
}

Test(aws_error_xml, a_code_element_elsewhere_is_not_taken_for_the_error_code) {
    /* A string search for <Code> would find the first one. */
    aws_error e;
    cr_assert_eq(xml_err(403,
                         "<ErrorResponse><Detail><Code>Throttling</Code></Detail>"
                         "<Error><Code>AuthorizationError</Code><Message>no</Message></Error>"
                         "</ErrorResponse>",
                         NULL, &e),
                 CD_RECORD_FATAL);
    cr_assert_str_eq(e.reason, "AuthorizationError: no");
    cr_assert_eq(xml_err(400,
                         "<ErrorResponse><Error><Detail><Code>Throttling</Code></Detail>"
                         "</Error></ErrorResponse>",
                         NULL, &e),
                 CD_RECORD_FATAL);
    cr_assert_str_eq(e.type, "HTTP 400");
}

Test(aws_error_xml, throttling_and_5xx_retry) {
    aws_error e;
    cr_assert_eq(xml_err(400,
                         "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
                         "<Message>Rate exceeded</Message></Error></ErrorResponse>",
                         "3", &e),
                 CD_RECORD_RETRY);
    cr_assert_eq(e.retry_after_ms, 3000);
    cr_assert_eq(xml_err(400,
                         "<ErrorResponse><Error><Code>KMSThrottling</Code></Error>"
                         "</ErrorResponse>",
                         NULL, &e),
                 CD_RECORD_RETRY);
    cr_assert_eq(xml_err(500,
                         "<ErrorResponse><Error><Type>Receiver</Type><Code>InternalError</Code>"
                         "</Error></ErrorResponse>",
                         NULL, &e),
                 CD_RECORD_RETRY);
    cr_assert_eq(xml_err(502, "<html><body>502 Bad Gateway</body></html>", NULL, &e),
                 CD_RECORD_RETRY);
    cr_assert_str_eq(e.reason, "HTTP 502: <html><body>502 Bad Gateway</body></html>");
}

Test(aws_error_xml, malformed_bodies_fall_back_to_the_status_and_the_body) {
    const char *bodies[] = {
        "",
        "<<<>>>",
        "{\"__type\":\"Throttling\"}",
        "<ErrorResponse><Error><Code>Throttling</Error></Code></ErrorResponse>",
        "<ErrorResponse><Error><Code>Throttling",
        "Service Unavailable",
    };
    aws_error e;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        cr_assert_eq(xml_err(400, bodies[i], NULL, &e), CD_RECORD_FATAL, "%s", bodies[i]);
        cr_assert_str_eq(e.type, "HTTP 400", "%s", bodies[i]);
        char want[300];
        snprintf(want, sizeof(want), "HTTP 400: %s", bodies[i]);
        cr_assert_str_eq(e.reason, want);
    }
    /* Broken off after the Error: what was read counts. */
    cr_assert_eq(xml_err(400,
                         "<ErrorResponse><Error><Code>Throttling</Code><Message>slow</Message>"
                         "</Error><RequestId>x",
                         NULL, &e),
                 CD_RECORD_RETRY);
    cr_assert_str_eq(e.reason, "Throttling: slow");
}

Test(aws_error_xml, entities_deep_nesting_and_huge_texts_are_read_safely) {
    aws_error e;
    /* A DTD is refused before its entities expand. */
    const char *laughs = "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"Throttling\">"
                         "<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]>"
                         "<ErrorResponse><Error><Code>&a;</Code></Error></ErrorResponse>";
    cr_assert_eq(xml_err(400, laughs, NULL, &e), CD_RECORD_FATAL);
    cr_assert_str_eq(e.type, "HTTP 400");
    char *deep = repeat("", "<a>", 5000, "");
    cr_assert_eq(xml_err(400, deep, NULL, &e), CD_RECORD_FATAL);
    cr_assert_str_eq(e.type, "HTTP 400");
    free(deep);
    char *big = repeat("<ErrorResponse><Error><Code>", "Z", 100000,
                       "</Code><Message>m</Message></Error></ErrorResponse>");
    cr_assert_eq(xml_err(400, big, NULL, &e), CD_RECORD_FATAL);
    cr_assert_eq(strlen(e.type), sizeof(e.type) - 1);
    cr_assert_str_eq(e.message, "m");
    free(big);
}

Test(aws_error_xml, success_is_ok_whatever_the_body) {
    aws_error e;
    cr_assert_eq(xml_err(200, "<PublishResponse/>", NULL, &e), CD_RECORD_OK);
    cr_assert_eq(xml_err(200, "", NULL, &e), CD_RECORD_OK);
}

/* ---------------------------------------------- either, by the body */

static cd_outcome body_err(int status, const char *body, aws_error *e) {
    cd_http_result res = {.status = status, .body = body, .body_len = strlen(body)};
    return aws_error_classify_body(&res, e);
}

Test(aws_error_body, a_json_service_reads_xml_answers_of_its_front_end_too) {
    aws_error e;
    /* moto's signature check answers a DynamoDB request like this. */
    cr_assert_eq(body_err(403,
                          "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ErrorResponse><Errors>"
                          "<Error><Code>SignatureDoesNotMatch</Code><Message>The request "
                          "signature we calculated does not match</Message></Error></Errors>"
                          "</ErrorResponse>",
                          &e),
                 CD_RECORD_FATAL);
    cr_assert_str_eq(e.reason,
                     "SignatureDoesNotMatch: The request signature we calculated does not match");
    cr_assert_eq(body_err(400, " \n<Error><Code>Throttling</Code></Error>", &e), CD_RECORD_RETRY);
    cr_assert_eq(body_err(400,
                          "{\"__type\":\"com.amazonaws.dynamodb.v20120810#"
                          "ResourceNotFoundException\",\"message\":\"Requested resource not "
                          "found\"}",
                          &e),
                 CD_RECORD_FATAL);
    cr_assert_str_eq(e.reason, "ResourceNotFoundException: Requested resource not found");
    cr_assert_eq(body_err(502, "<html><body>Bad Gateway</body></html>", &e), CD_RECORD_RETRY);
    cr_assert_str_eq(e.reason, "HTTP 502: <html><body>Bad Gateway</body></html>");
    cr_assert_eq(body_err(400, "   ", &e), CD_RECORD_FATAL);
    cr_assert_str_eq(e.reason, "HTTP 400:    ");
    cr_assert_eq(body_err(200, "<x/>", &e), CD_RECORD_OK);
}

/* ----------------------------------------------------- region / endpoint */

/* A config of the two options, as the test host's getter reads it. */
typedef struct fake_cfg {
    const char *region, *endpoint;
} fake_cfg;

static const char *fake_cfg_string(const cd_config *cfg, const char *name) {
    const fake_cfg *c = (const fake_cfg *)cfg;
    if (strcmp(name, "region") == 0) return c->region;
    if (strcmp(name, "endpoint") == 0) return c->endpoint;
    return NULL;
}

static int endpoint(const char *region, const char *ep, const char *default_region, char **r,
                    char **url, char *err, size_t errlen) {
    cd_host host = {.cfg_string = fake_cfg_string};
    fake_cfg cfg = {region, ep};
    return aws_conf_endpoint(&host, (const cd_config *)&cfg, "sns", default_region, "the topic ARN",
                             r, url, err, errlen);
}

Test(aws_conf, region_defaults_and_the_default_endpoint_follows_it) {
    char *r, *url, err[200] = "";
    cr_assert_eq(endpoint(NULL, NULL, "us-east-2", &r, &url, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(r, "us-east-2");
    cr_assert_str_eq(url, "https://sns.us-east-2.amazonaws.com/");
    free(r);
    free(url);
    cr_assert_eq(endpoint("", "", "us-east-2", &r, &url, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(url, "https://sns.us-east-2.amazonaws.com/");
    free(r);
    free(url);
    cr_assert_eq(endpoint("eu-central-1", NULL, "us-east-2", &r, &url, err, sizeof(err)), 0);
    cr_assert_str_eq(r, "eu-central-1");
    cr_assert_str_eq(url, "https://sns.eu-central-1.amazonaws.com/");
    free(r);
    free(url);
}

Test(aws_conf, an_endpoint_overrides_the_url_but_not_the_region) {
    char *r, *url, err[200] = "";
    cr_assert_eq(endpoint(NULL, "http://127.0.0.1:29500", "eu-west-1", &r, &url, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_str_eq(r, "eu-west-1");
    cr_assert_str_eq(url, "http://127.0.0.1:29500");
    free(r);
    free(url);
}

Test(aws_conf, bad_endpoints_and_missing_regions_are_refused_naming_the_option) {
    char *r = (char *)1, *url = (char *)1, err[200] = "";
    cr_assert_eq(endpoint(NULL, "ftp://x", "eu-west-1", &r, &url, err, sizeof(err)),
                 CD_ERR_INVALID);
    cr_assert_str_eq(err, "endpoint: must start with http:// or https://");
    cr_assert_null(r);
    cr_assert_null(url);
    cr_assert_eq(endpoint(NULL, "127.0.0.1:29500", "eu-west-1", &r, &url, err, sizeof(err)),
                 CD_ERR_INVALID);
    cr_assert_eq(endpoint(NULL, NULL, "", &r, &url, err, sizeof(err)), CD_ERR_INVALID);
    cr_assert_str_eq(err, "region: the topic ARN names none; set region");
    cr_assert_eq(endpoint("", NULL, NULL, &r, &url, err, sizeof(err)), CD_ERR_INVALID);
}

/* ------------------------------------------------------------------ pbuf */

Test(pbuf, grows_keeps_a_nul_and_writes_json_strings_as_jansson_does) {
    pbuf b = {0};
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(pbuf_puts(&b, "0123456789"), 0);
    cr_assert_eq(b.len, 10000);
    cr_assert_eq(b.data[b.len], '\0');
    cr_assert_gt(b.cap, b.len);
    b.len = 0;
    static const char raw[] = "a\"b\\c\x01\x1f\n/\xc3\xa9";
    cr_assert_eq(pbuf_json_string(&b, raw, sizeof(raw) - 1), 0);
    cr_assert_str_eq(b.data, "\"a\\\"b\\\\c\\u0001\\u001f\\u000a/\xc3\xa9\"");
    json_t *j = json_loads(b.data, JSON_DECODE_ANY, NULL);
    cr_assert_not_null(j, "%s", b.data);
    cr_assert_str_eq(json_string_value(j), raw);
    json_decref(j);
    cr_assert_eq(pbuf_append(&b, NULL, 0), 0);
    pbuf_free(&b);
    cr_assert_null(b.data);
    cr_assert_eq(b.len, 0);
}
