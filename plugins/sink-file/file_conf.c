/*
 * sink-file — configuration: options in, context out.
 *
 * This file turns a validated option set into a file_ctx and back into
 * nothing.  It runs inside init(), which must not do I/O: nothing here opens
 * a file or creates a directory; it only reads options, parses the `path`
 * template and allocates.
 *
 * By the time we run, the engine has checked the pipeline's sink object
 * against our option table (file.c): types, bounds, the fsync enum and the
 * required `path` are already right, and defaults are filled in.  The checks
 * below that repeat some of that are there because a test host hands us
 * values without an engine in front, and a clear errbuf costs little.  The
 * one check only we can make is the template's variables.
 */
#include "file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Matches `${name}` at tpl[i] (i points at '$').  Returns the segment type
 * and sets *end to the index just past '}'.  Returns -1 for an unknown
 * variable and -2 for a missing '}', with errbuf filled. */
static int file_conf_parse_var(const char *tpl, size_t i, size_t *end, char *errbuf,
                               size_t errlen) {
    const char *name = tpl + i + 2;
    const char *close = strchr(name, '}');
    if (close == NULL) {
        snprintf(errbuf, errlen, "path: unterminated '${' at offset %zu in \"%s\"", i, tpl);
        return -2;
    }
    size_t len = (size_t)(close - name);
    *end = (size_t)(close - tpl) + 1;
    if (len == 5 && memcmp(name, "topic", 5) == 0) return FILE_SEG_TOPIC;
    if (len == 9 && memcmp(name, "partition", 9) == 0) return FILE_SEG_PARTITION;
    /* Anything else is a typo we would otherwise write into file names
     * forever; refuse it now, naming the option and the variable. */
    snprintf(errbuf, errlen,
             "path: unknown variable '${%.*s}' (only ${topic} and ${partition} are supported)",
             (int)len, name);
    return -1;
}

/* Splits ctx->path_template into literal and variable segments. */
static int file_conf_parse_path(file_ctx *ctx, char *errbuf, size_t errlen) {
    const char *tpl = ctx->path_template;
    size_t n = strlen(tpl);

    /* Each "${" adds at most one variable and one literal: size the array
     * for the worst case once instead of growing it. */
    size_t max = 1;
    for (const char *p = strstr(tpl, "${"); p != NULL; p = strstr(p + 2, "${"))
        max += 2;
    ctx->segs = calloc(max, sizeof(*ctx->segs));
    if (ctx->segs == NULL) {
        snprintf(errbuf, errlen, "path: out of memory");
        return CD_ERR_NOMEM;
    }

    size_t lit = 0; /* start of the current literal run */
    size_t i = 0;
    while (i < n) {
        if (tpl[i] != '$' || tpl[i + 1] != '{') {
            i++;
            continue;
        }
        size_t end = 0;
        int type = file_conf_parse_var(tpl, i, &end, errbuf, errlen);
        if (type < 0) return CD_ERR_INVALID;
        if (i > lit) ctx->segs[ctx->nsegs++] = (file_seg){FILE_SEG_LITERAL, tpl + lit, i - lit};
        ctx->segs[ctx->nsegs++] = (file_seg){(file_seg_type)type, NULL, 0};
        i = lit = end;
    }
    if (n > lit) ctx->segs[ctx->nsegs++] = (file_seg){FILE_SEG_LITERAL, tpl + lit, n - lit};
    return 0;
}

int file_conf_create(const cd_host *host, cd_instance *inst, const cd_config *cfg, file_ctx **out,
                     char *errbuf, size_t errlen) {
    const char *path = host->cfg_string(cfg, "path");
    if (path == NULL) {
        snprintf(errbuf, errlen, "path: required option missing");
        return CD_ERR_INVALID;
    }
    if (path[0] == '\0') {
        snprintf(errbuf, errlen, "path: must not be empty");
        return CD_ERR_INVALID;
    }

    /* fsync is an enum the engine already checked; NULL only with a host
     * that applies no defaults, and then the default is "never". */
    const char *fsync_mode = host->cfg_string(cfg, "fsync");
    int fsync_batch = 0;
    if (fsync_mode != NULL && strcmp(fsync_mode, "batch") == 0) {
        fsync_batch = 1;
    } else if (fsync_mode != NULL && strcmp(fsync_mode, "never") != 0) {
        snprintf(errbuf, errlen, "fsync: must be one of never|batch, got \"%s\"", fsync_mode);
        return CD_ERR_INVALID;
    }

    int64_t mode = host->cfg_int(cfg, "file_mode");
    if (mode < 0 || mode > 0777) {
        snprintf(errbuf, errlen, "file_mode: %lld is out of range 0..511", (long long)mode);
        return CD_ERR_INVALID;
    }

    file_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return CD_ERR_NOMEM;
    }
    ctx->host = host;
    ctx->inst = inst;
    ctx->fsync_batch = fsync_batch;
    ctx->mkdirs = host->cfg_bool(cfg, "mkdirs") != 0;
    ctx->file_mode = (int)mode;

    /* Copy the template: our segments point into it, and we do not want to
     * depend on how long the engine keeps the config's strings. */
    ctx->path_template = strdup(path);
    if (ctx->path_template == NULL) {
        snprintf(errbuf, errlen, "path: out of memory");
        file_conf_destroy(ctx);
        return CD_ERR_NOMEM;
    }
    int rc = file_conf_parse_path(ctx, errbuf, errlen);
    if (rc < 0) {
        file_conf_destroy(ctx);
        return rc;
    }

    *out = ctx;
    return 0;
}

void file_conf_destroy(file_ctx *ctx) {
    if (ctx == NULL) return;
    free(ctx->path_buf.data);
    free(ctx->segs);
    free(ctx->path_template);
    free(ctx);
}
