/*
 * Secrets room: resolves ${secret:REF} in configuration strings from AWS
 * Secrets Manager while a configuration loads, so passwords and keys never
 * sit in a file.
 *
 *   ${secret:ARN}            the secret's SecretString
 *   ${secret:ARN#json_key}   SecretString parsed as a JSON object; that key's
 *                            value, which must be a string
 *
 * GetSecretValue is called synchronously (config loading happens before, or
 * outside, the engine's loop): a private uv loop with its own httpc and
 * aws_creds chain, bounded by SECRETS_TIMEOUT_MS.  The request is signed
 * with SigV4 for service "secretsmanager" in the ARN's region (its fourth
 * field), else AWS_REGION / AWS_DEFAULT_REGION; the endpoint is
 * AWS_ENDPOINT_URL_SECRETSMANAGER, else AWS_ENDPOINT_URL, else
 * https://secretsmanager.<region>.amazonaws.com.
 *
 * Each ARN is fetched once per installation (one load): a config naming it
 * several times, with or without different #keys, costs one request, and a
 * failure is remembered too.  Errors name the reference and the AWS error
 * type and message, never the value; values never reach a log line and are
 * wiped (explicit_bzero) when the cache is freed.
 *
 * Not thread-safe: install, load, uninstall on one thread.
 */
#ifndef CONNECTD_SECRETS_H
#define CONNECTD_SECRETS_H

#include <stddef.h>

#define SECRETS_TIMEOUT_MS 10000

/* Registers the resolver with expand_set_secret_resolver and starts an
 * empty cache.  Returns 0, or negative with errbuf.  Installing twice
 * keeps the first cache. */
int secrets_install(char *errbuf, size_t errlen);

/* Unregisters the resolver and wipes and frees the cache.  Safe when not
 * installed. */
void secrets_uninstall(void);

#endif
