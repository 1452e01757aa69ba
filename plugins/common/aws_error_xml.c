/*
 * AWS error classification, the XML front end (see aws_error.h): the
 * query protocol's error answers, read with expat element by element, so
 * a <Code> anywhere but in the Error element is not taken for the code.
 * Kept apart from aws_error.c so a JSON-only plugin does not link expat;
 * aws_error_classify_body, which picks the front end by the body, is here
 * for the same reason.
 */
#include "aws_error.h"

#include <expat.h>
#include <stdio.h>
#include <string.h>

/* The names of the open elements are kept down to the Error element's
 * children (ErrorResponse/Errors/Error/Code is the deepest read). */
#define AWS_XML_DEPTH 4

typedef struct aws_xml {
    XML_Parser p;
    char stack[AWS_XML_DEPTH][24];
    int depth; /* elements open (may exceed AWS_XML_DEPTH; those are not kept) */
    char text[600];
    size_t tlen;
    char code[128];
    char message[512];
} aws_xml;

/* True when the element just closing is a child of the error element:
 * ErrorResponse/Error/x (SNS, SQS ...), ErrorResponse/Errors/Error/x
 * (AWS's front end: signatures, IAM), Error/x (S3 style). */
static int aws_xml_in_error(const aws_xml *x) {
    const char(*s)[24] = x->stack;
    if (x->depth == 2) return strcmp(s[0], "Error") == 0;
    if (x->depth == 3) return strcmp(s[0], "ErrorResponse") == 0 && strcmp(s[1], "Error") == 0;
    if (x->depth == 4)
        return strcmp(s[0], "ErrorResponse") == 0 && strcmp(s[1], "Errors") == 0 &&
               strcmp(s[2], "Error") == 0;
    return 0;
}

static void XMLCALL aws_xml_start(void *opaque, const XML_Char *name, const XML_Char **attrs) {
    aws_xml *x = opaque;
    (void)attrs;
    if (x->depth < AWS_XML_DEPTH) snprintf(x->stack[x->depth], sizeof(x->stack[0]), "%s", name);
    x->depth++;
    x->tlen = 0;
}

static void XMLCALL aws_xml_text(void *opaque, const XML_Char *s, int len) {
    aws_xml *x = opaque;
    size_t room = sizeof(x->text) - 1 - x->tlen;
    size_t n = (size_t)len < room ? (size_t)len : room;
    memcpy(x->text + x->tlen, s, n);
    x->tlen += n;
}

/* Copies the element's text without the document's indentation around it;
 * the first Error's fields win. */
static void aws_xml_take(aws_xml *x, char *dst, size_t cap) {
    if (dst[0] != '\0') return;
    const char *t = x->text;
    size_t n = x->tlen;
    while (n && (*t == ' ' || *t == '\n' || *t == '\r' || *t == '\t')) {
        t++;
        n--;
    }
    while (n && (t[n - 1] == ' ' || t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == '\t'))
        n--;
    snprintf(dst, cap, "%.*s", (int)n, t);
}

static void XMLCALL aws_xml_end(void *opaque, const XML_Char *name) {
    aws_xml *x = opaque;
    if (aws_xml_in_error(x)) {
        if (strcmp(name, "Code") == 0)
            aws_xml_take(x, x->code, sizeof(x->code));
        else if (strcmp(name, "Message") == 0)
            aws_xml_take(x, x->message, sizeof(x->message));
    }
    x->depth--;
    x->tlen = 0;
}

/* An error answer has no DTD: one is refused before it can declare
 * entities that expand. */
static void XMLCALL aws_xml_doctype(void *opaque, const XML_Char *name, const XML_Char *sysid,
                                    const XML_Char *pubid, int has_internal_subset) {
    aws_xml *x = opaque;
    (void)name;
    (void)sysid;
    (void)pubid;
    (void)has_internal_subset;
    XML_StopParser(x->p, XML_FALSE);
}

cd_outcome aws_error_classify_xml(const cd_http_result *res, aws_error *out) {
    if (aws__error_transport(res, out)) return out->outcome;
    aws_xml x;
    memset(&x, 0, sizeof(x));
    if (res->body_len > 0 && res->body_len <= (size_t)0x7fffffff &&
        (x.p = XML_ParserCreate("UTF-8")) != NULL) {
        XML_SetUserData(x.p, &x);
        XML_SetElementHandler(x.p, aws_xml_start, aws_xml_end);
        XML_SetCharacterDataHandler(x.p, aws_xml_text);
        XML_SetStartDoctypeDeclHandler(x.p, aws_xml_doctype);
        /* A body that is not XML, or breaks off, keeps what was read. */
        (void)XML_Parse(x.p, res->body, (int)res->body_len, 1);
        XML_ParserFree(x.p);
    }
    return aws__error_from_body(res, x.code, x.message, out);
}

cd_outcome aws_error_classify_body(const cd_http_result *res, aws_error *out) {
    size_t i = 0;
    while (i < res->body_len && (res->body[i] == ' ' || res->body[i] == '\n' ||
                                 res->body[i] == '\r' || res->body[i] == '\t'))
        i++;
    if (i < res->body_len && res->body[i] == '<') return aws_error_classify_xml(res, out);
    return aws_error_classify_json(res, out);
}
