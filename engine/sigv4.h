/*
 * AWS Signature Version 4 (AWS4-HMAC-SHA256, header form) without libcurl's
 * signer and without a crypto library: SHA-256 and HMAC-SHA256 are built in
 * (FIPS 180-4, RFC 2104), and the signing key
 *   kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" secret, date), region), service),
 *                   "aws4_request")
 * is derived once per (secret, UTC day, region, service) and kept in a
 * sigv4_key_cache as HMAC's precomputed inner and outer states, so a warm
 * signature costs the canonical request's hash plus two HMAC blocks.
 *
 * The canonical request follows AWS's rules rather than libcurl 7.88's:
 *  - path: as it goes on the wire (percent-encoded or not).  For every
 *    service but "s3" it is normalised (empty, "." and ".." segments
 *    removed, a trailing "/" kept) and every byte but A-Z a-z 0-9 - . _ ~ /
 *    is percent-encoded once more, so "%" becomes "%25" (the "encode twice"
 *    rule: API Gateway's "/@connections/abc%3D" signs as
 *    "/%40connections/abc%253D").  For "s3" it is not normalised and only
 *    bytes outside that set and outside "%XX" escapes are encoded.
 *  - query: "k=v" pairs split on "&"; each name and value is %XX-decoded
 *    ("+" stays a literal "+"), encoded again (unreserved kept, "%XX"
 *    upper case), and the pairs sorted by name, then value; "k" signs as
 *    "k=".
 *  - headers: names lower-cased and sorted, values trimmed with inner runs
 *    of white space folded to one space, values of one name joined with ","
 *    in the order given; "host" must be among them.  The signer adds
 *    x-amz-date, x-amz-security-token (when session_token is non-empty) and
 *    x-amz-content-sha256 (when content_sha256 is set); the caller sends
 *    those with the values the signer used (sigv4_sign's amz_date, the
 *    token, the payload hash).
 *
 * Nothing here is thread-safe: one cache per user (per loop, per sink).
 */
#ifndef CONNECTD_SIGV4_H
#define CONNECTD_SIGV4_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define SIGV4_AMZ_DATE_LEN 16 /* "YYYYMMDDTHHMMSSZ"; buffers need 17 */
#define SIGV4_HASH_HEX_LEN 64 /* buffers need 65 */
#define SIGV4_MAX_HEADERS  64 /* including the ones the signer adds */
#define SIGV4_MAX_PARAMS   128

typedef struct sigv4_header {
    const char *name;  /* any case; no ':', no white space */
    const char *value; /* no CR or LF */
} sigv4_header;

typedef struct sigv4_request {
    const char *method;          /* "GET", "POST", ... */
    const char *path;            /* as on the wire; NULL or "": "/" */
    const char *query;           /* without "?"; NULL or "": none */
    const sigv4_header *headers; /* must include host; not authorization, x-amz-date */
    size_t n_headers;
    const void *payload; /* hashed with SHA-256 unless payload_hash is set */
    size_t payload_len;
    const char *payload_hash; /* NULL, or the hex hash (or "UNSIGNED-PAYLOAD") to sign */
    int content_sha256;       /* also sign x-amz-content-sha256: <payload hash> (S3) */
    const char *access_key;
    const char *secret_key;
    const char *session_token; /* NULL or "": none */
    const char *region;
    const char *service;
    time_t time; /* when the request is signed (UTC); x-amz-date is made from it */
} sigv4_request;

typedef struct sigv4_key_cache sigv4_key_cache;

/* A cache with no key yet; NULL when out of memory. */
sigv4_key_cache *sigv4_key_cache_new(void);

/* Wipes the key material (and the copy of the secret) and frees; NULL is
 * ignored. */
void sigv4_key_cache_free(sigv4_key_cache *c);

/* Forgets the key (wiped); the next signature derives it again. */
void sigv4_key_cache_clear(sigv4_key_cache *c);

/* How many times this cache derived a signing key (for tests and metrics). */
uint64_t sigv4_key_cache_derivations(const sigv4_key_cache *c);

/*
 * Signs req.  On success returns 0 and writes the Authorization header's
 * value ("AWS4-HMAC-SHA256 Credential=AKID/YYYYMMDD/region/service/
 * aws4_request, SignedHeaders=a;b, Signature=<64 hex>") to authorization
 * and X-Amz-Date's value to amz_date (17 bytes).  The key comes from c when
 * c holds it for req's secret, UTC day, region and service, and is derived
 * (and cached) otherwise; c may be NULL (derive every time).  Returns
 * -22 (CD_ERR_INVALID) with errbuf for a bad request, -12 (CD_ERR_NOMEM),
 * or -7 (E2BIG) when authorization is too small.  Never writes secrets to
 * errbuf.
 */
int sigv4_sign(sigv4_key_cache *c, const sigv4_request *req, char *authorization, size_t alen,
               char *amz_date, char *errbuf, size_t errlen);

/* Writes the canonical request sigv4_sign would hash for req (its
 * x-amz-date from req->time) to out, NUL-terminated.  For tests and
 * debugging 403s.  Returns its length, or negative as sigv4_sign. */
long sigv4_canonical_request(const sigv4_request *req, char *out, size_t outlen, char *errbuf,
                             size_t errlen);

/* SHA-256 of data as 64 lower-case hex digits + NUL (e.g. for
 * x-amz-content-sha256 and payload_hash). */
void sigv4_sha256_hex(const void *data, size_t len, char out[SIGV4_HASH_HEX_LEN + 1]);

/* Raw SHA-256 and HMAC-SHA256 (exposed for their test vectors). */
void sigv4_sha256(const void *data, size_t len, uint8_t out[32]);
void sigv4_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                       uint8_t out[32]);

/* Selects SHA-256's compression for the whole process: the CPU's SHA
 * extensions when it has them and portable is 0 (the default), the portable
 * C otherwise.  Returns 1 when the extensions are now in use.  A test hook;
 * call it before signing starts on other threads. */
int sigv4_sha256_accelerated(int portable);

#endif
