/*
 * The options every AWS sink has for where its requests go: `region`
 * (signing, and the default endpoint's host) and `endpoint` (a URL that
 * overrides https://<service>.<region>.amazonaws.com/, e.g. moto or a VPC
 * endpoint).  Read in init, no I/O.
 */
#ifndef CONNECTD_AWS_CONF_H
#define CONNECTD_AWS_CONF_H

#include <connectd/plugin.h>

#include <stddef.h>

/* Reads options "region" and "endpoint" of cfg.  An unset or empty region
 * is default_region; when that is empty too the error is "region:
 * <default_from> names none; set region".  An endpoint must start with
 * http:// or https://.  On success *region and *url are malloc'd (the
 * caller frees them) and 0 is returned; else negative with errbuf, and
 * both are NULL. */
int aws_conf_endpoint(const cd_host *host, const cd_config *cfg, const char *service,
                      const char *default_region, const char *default_from, char **region,
                      char **url, char *errbuf, size_t errlen);

#endif /* CONNECTD_AWS_CONF_H */
