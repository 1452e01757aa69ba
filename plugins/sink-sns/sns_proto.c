/*
 * sink-sns — the pure parts: the query protocol's form encoding, SNS's XML
 * answers (read with expat, element by element), a PublishBatch entry's
 * outcome, PublishBatch planning and durations.  Whole error answers are
 * plugins/common/aws_error_xml.c's.  No engine, no I/O: the plugin test
 * (tests/plugins/sns.c) compiles this file in and drives it directly.
 */
#include "sns.h"

#include <expat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------- form */

int sns_form_encode(pbuf *out, const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    /* Worst case every byte becomes %XX: reserve once. */
    if (pbuf_reserve(out, 3 * n) < 0) return CD_ERR_NOMEM;
    char *w = out->data + out->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            *w++ = (char)c;
        } else {
            *w++ = '%';
            *w++ = hex[c >> 4];
            *w++ = hex[c & 15];
        }
    }
    out->len = (size_t)(w - out->data);
    out->data[out->len] = '\0';
    return 0;
}

int sns_form_param(pbuf *out, const char *prefix, const char *name, const char *value,
                   size_t vlen) {
    if ((out->len && pbuf_append(out, "&", 1) < 0) || (prefix && pbuf_puts(out, prefix) < 0) ||
        sns_form_encode(out, name, strlen(name)) < 0 || pbuf_append(out, "=", 1) < 0 ||
        sns_form_encode(out, value, vlen) < 0)
        return CD_ERR_NOMEM;
    return 0;
}

int sns_base64(pbuf *out, const void *p, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *s = p;
    char q[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n) v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n) v |= s[i + 2];
        q[0] = tab[(v >> 18) & 63];
        q[1] = tab[(v >> 12) & 63];
        q[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? tab[v & 63] : '=';
        if (pbuf_append(out, q, 4) < 0) return CD_ERR_NOMEM;
    }
    return pbuf_append(out, "", 0);
}

/* -------------------------------------------------------------------- XML
 * A small state machine over expat's events: a stack of element names, the
 * text of the element being read, and the entry being filled. */

#define SNS_XML_DEPTH 12

typedef struct sns_xml {
    XML_Parser p;
    sns_response *out;
    char stack[SNS_XML_DEPTH][48];
    int depth; /* elements open (may exceed SNS_XML_DEPTH; those are not kept) */
    char text[1024];
    size_t tlen;
    sns_entry_result *entry; /* the member being read, or NULL */
    int skip_entry;          /* a member beyond SNS_XML_MAX_ENTRIES */
} sns_xml;

/* True when the open elements are exactly the n names given. */
static int sns_xml_at(const sns_xml *x, int n, const char *const *names) {
    if (x->depth != n) return 0;
    for (int i = 0; i < n; i++)
        if (strcmp(x->stack[i], names[i]) != 0) return 0;
    return 1;
}

static const char *const sns_path_publish_id[] = {"PublishResponse", "PublishResult", "MessageId"};
static const char *const sns_path_ok_member[] = {"PublishBatchResponse", "PublishBatchResult",
                                                 "Successful", "member"};
static const char *const sns_path_failed_member[] = {"PublishBatchResponse", "PublishBatchResult",
                                                     "Failed", "member"};

static void XMLCALL sns_xml_start(void *opaque, const XML_Char *name, const XML_Char **attrs) {
    sns_xml *x = opaque;
    (void)attrs;
    if (x->depth < SNS_XML_DEPTH) snprintf(x->stack[x->depth], sizeof(x->stack[0]), "%s", name);
    x->depth++;
    x->tlen = 0;
    x->text[0] = '\0';
    if (x->depth == 1) {
        if (strcmp(name, "PublishResponse") == 0)
            x->out->kind = SNS_XML_PUBLISH;
        else if (strcmp(name, "PublishBatchResponse") == 0)
            x->out->kind = SNS_XML_BATCH;
        else if (strcmp(name, "ErrorResponse") == 0)
            x->out->kind = SNS_XML_ERROR;
    }
    int ok = sns_xml_at(x, 4, sns_path_ok_member);
    if (ok || sns_xml_at(x, 4, sns_path_failed_member)) {
        if (x->out->nentries < SNS_XML_MAX_ENTRIES) {
            x->entry = &x->out->entries[x->out->nentries++];
            memset(x->entry, 0, sizeof(*x->entry));
            x->entry->ok = ok;
            x->skip_entry = 0;
        } else {
            x->out->extra_entries++;
            x->entry = NULL;
            x->skip_entry = 1;
        }
    }
}

static void XMLCALL sns_xml_text(void *opaque, const XML_Char *s, int len) {
    sns_xml *x = opaque;
    size_t room = sizeof(x->text) - 1 - x->tlen;
    size_t n = (size_t)len < room ? (size_t)len : room;
    memcpy(x->text + x->tlen, s, n);
    x->tlen += n;
    x->text[x->tlen] = '\0';
}

static void sns_xml_copy(char *dst, size_t cap, const char *text) {
    /* Element text may carry the document's indentation around it. */
    while (*text == ' ' || *text == '\n' || *text == '\r' || *text == '\t')
        text++;
    size_t n = strlen(text);
    while (n && (text[n - 1] == ' ' || text[n - 1] == '\n' || text[n - 1] == '\r' ||
                 text[n - 1] == '\t'))
        n--;
    snprintf(dst, cap, "%.*s", (int)n, text);
}

/* A member's child: depth 5 under Successful/member or Failed/member. */
static int sns_xml_in_member(const sns_xml *x) {
    if (x->depth != 5) return 0;
    for (int i = 0; i < 4; i++)
        if (strcmp(x->stack[i], sns_path_ok_member[i]) != 0 &&
            strcmp(x->stack[i], sns_path_failed_member[i]) != 0)
            return 0;
    return 1;
}

static void XMLCALL sns_xml_end(void *opaque, const XML_Char *name) {
    sns_xml *x = opaque;
    sns_response *o = x->out;
    if (sns_xml_at(x, 3, sns_path_publish_id)) {
        sns_xml_copy(o->message_id, sizeof(o->message_id), x->text);
    } else if (sns_xml_in_member(x) && x->entry != NULL && !x->skip_entry) {
        sns_entry_result *e = x->entry;
        if (strcmp(name, "Id") == 0)
            sns_xml_copy(e->id, sizeof(e->id), x->text);
        else if (strcmp(name, "MessageId") == 0)
            sns_xml_copy(e->message_id, sizeof(e->message_id), x->text);
        else if (strcmp(name, "Code") == 0)
            sns_xml_copy(e->code, sizeof(e->code), x->text);
        else if (strcmp(name, "Message") == 0)
            sns_xml_copy(e->message, sizeof(e->message), x->text);
        else if (strcmp(name, "SenderFault") == 0) {
            char v[16];
            sns_xml_copy(v, sizeof(v), x->text);
            e->sender_fault = strcasecmp(v, "true") == 0;
        }
    }
    if (x->depth == 4 &&
        (sns_xml_at(x, 4, sns_path_ok_member) || sns_xml_at(x, 4, sns_path_failed_member))) {
        x->entry = NULL;
        x->skip_entry = 0;
    }
    x->depth--;
    x->tlen = 0;
    x->text[0] = '\0';
}

int sns_xml_parse(const char *body, size_t len, sns_response *out, char *err, size_t errlen) {
    memset(out, 0, sizeof(*out));
    sns_xml x;
    memset(&x, 0, sizeof(x));
    x.out = out;
    x.p = XML_ParserCreate("UTF-8");
    if (x.p == NULL) {
        snprintf(err, errlen, "XML: out of memory");
        return CD_ERR_NOMEM;
    }
    XML_SetUserData(x.p, &x);
    XML_SetElementHandler(x.p, sns_xml_start, sns_xml_end);
    XML_SetCharacterDataHandler(x.p, sns_xml_text);
    int rc = 0;
    if (len > (size_t)0x7fffffff || XML_Parse(x.p, body, (int)len, 1) != XML_STATUS_OK) {
        snprintf(err, errlen, "XML: line %lu: %s", (unsigned long)XML_GetCurrentLineNumber(x.p),
                 len > (size_t)0x7fffffff ? "too large" : XML_ErrorString(XML_GetErrorCode(x.p)));
        rc = CD_ERR_INVALID;
    } else if (out->kind == SNS_XML_UNKNOWN) {
        snprintf(err, errlen, "XML: not an SNS answer");
        rc = CD_ERR_INVALID;
    }
    XML_ParserFree(x.p);
    return rc;
}

/* --------------------------------------------------------- classification */

cd_outcome sns_classify_entry(const sns_entry_result *e, aws_error *out) {
    memset(out, 0, sizeof(*out));
    if (e->ok) {
        out->outcome = CD_RECORD_OK;
        return out->outcome;
    }
    snprintf(out->type, sizeof(out->type), "%s", e->code[0] ? e->code : "UnknownError");
    snprintf(out->message, sizeof(out->message), "%s", e->message[0] ? e->message : "(no message)");
    snprintf(out->reason, sizeof(out->reason), "%s: %s", out->type, out->message);
    /* SenderFault false: SNS's side failed, the same entry may pass later. */
    out->outcome = aws_error_code_is_transient(out->type) || !e->sender_fault ? CD_RECORD_RETRY
                                                                              : CD_RECORD_FATAL;
    return out->outcome;
}

/* --------------------------------------------------------------- planning */

size_t sns_plan_next(const size_t *sizes, size_t n, size_t max_entries, size_t max_bytes) {
    if (n == 0) return 0;
    size_t k = 0, total = 0;
    while (k < n && k < max_entries) {
        if (k > 0 && total + sizes[k] > max_bytes) break;
        total += sizes[k];
        k++;
    }
    return k;
}

int sns_parse_duration(const char *json, int64_t *ms, char *err, size_t errlen) {
    *ms = 0;
    if (json == NULL) return 0;
    while (*json == ' ')
        json++;
    char *end;
    if (json[0] != '"') {
        long long v = strtoll(json, &end, 10);
        if (end == json || *end != '\0' || v < 0) {
            snprintf(err, errlen,
                     "must be a duration (\"24h\", \"90m\", \"30s\", \"500ms\", "
                     "\"off\") or milliseconds >= 0");
            return CD_ERR_INVALID;
        }
        *ms = v;
        return 0;
    }
    char s[64];
    size_t n = strlen(json);
    if (n < 2 || json[n - 1] != '"' || n - 2 >= sizeof(s)) goto bad;
    memcpy(s, json + 1, n - 2);
    s[n - 2] = '\0';
    if (strcmp(s, "off") == 0) return 0;
    if (s[0] < '0' || s[0] > '9') goto bad;
    long long v = strtoll(s, &end, 10);
    long long mul;
    if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "m") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else if (strcmp(end, "d") == 0)
        mul = 86400000;
    else if (*end == '\0')
        mul = 1;
    else
        goto bad;
    if (v > 365LL * 86400000 / mul) {
        snprintf(err, errlen, "\"%s\" is longer than a year", s);
        return CD_ERR_INVALID;
    }
    *ms = v * mul;
    return 0;
bad:
    snprintf(err, errlen,
             "%s: not a duration (\"24h\", \"90m\", \"30s\", \"500ms\", \"off\", or milliseconds)",
             json);
    return CD_ERR_INVALID;
}
