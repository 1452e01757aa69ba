/*
 * Admin HTTP API (default 127.0.0.1:8083, Kafka Connect's port):
 *   GET  /healthz                    the loop answers
 *   GET  /readyz                     every pipeline started (503 with the ones that are not)
 *   GET  /metrics                    Prometheus text
 *   GET  /pipelines                  every pipeline, described
 *   GET  /pipelines/{name}           one
 *   POST /pipelines/{name}/pause     stop fetching (PAUSED)
 *   POST /pipelines/{name}/resume    back to RUNNING
 */
#ifndef CONNECTD_ADMIN_H
#define CONNECTD_ADMIN_H

#include "engine.h"

/* Starts the admin server on e->conf->admin_listen ("off" or "" disables
 * it).  Returns 0, or negative with errbuf. */
int admin_start(engine *e, char *errbuf, size_t errlen);
/* Stops accepting; answers what is in flight; then closes. */
void admin_close(engine *e);

#endif
