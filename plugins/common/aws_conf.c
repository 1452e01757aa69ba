/*
 * The region and endpoint options of the AWS sinks (see aws_conf.h).
 */
#include "aws_conf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int aws_conf_endpoint(const cd_host *host, const cd_config *cfg, const char *service,
                      const char *default_region, const char *default_from, char **region,
                      char **url, char *errbuf, size_t errlen) {
    *region = *url = NULL;
    const char *r = host->cfg_string(cfg, "region");
    if (r == NULL || r[0] == '\0') r = default_region ? default_region : "";
    if (r[0] == '\0') {
        snprintf(errbuf, errlen, "region: %s names none; set region", default_from);
        return CD_ERR_INVALID;
    }
    const char *endpoint = host->cfg_string(cfg, "endpoint");
    char buf[512];
    if (endpoint != NULL && endpoint[0] != '\0') {
        if (strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0) {
            snprintf(errbuf, errlen, "endpoint: must start with http:// or https://");
            return CD_ERR_INVALID;
        }
        snprintf(buf, sizeof(buf), "%s", endpoint);
    } else {
        snprintf(buf, sizeof(buf), "https://%s.%s.amazonaws.com/", service, r);
    }
    *region = strdup(r);
    *url = strdup(buf);
    if (*region == NULL || *url == NULL) {
        free(*region);
        free(*url);
        *region = *url = NULL;
        snprintf(errbuf, errlen, "region/endpoint: out of memory");
        return CD_ERR_NOMEM;
    }
    return 0;
}
