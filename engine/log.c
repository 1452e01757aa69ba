/*
 * Logging room: formats one line per message to stderr.  Lines are written
 * with a single write(2) so concurrent writers (librdkafka's threads log
 * through the same function) do not interleave within a line.
 */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static cd_log_level log_level = CD_LOG_INFO;

void log_set_level(cd_log_level level) {
    log_level = level;
}
cd_log_level log_get_level(void) {
    return log_level;
}

int log_level_parse(const char *s, cd_log_level *out) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (cd_log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_vmsg(cd_log_level level, const char *prefix, const char *fmt, va_list ap) {
    static const char *tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    if (level > log_level) return;
    char line[4096];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, tags[level]);
    if (prefix && *prefix && n < (int)sizeof(line))
        n += snprintf(line + n, sizeof(line) - (size_t)n, "[%s] ", prefix);
    if (n < (int)sizeof(line)) n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    if (n >= (int)sizeof(line) - 1) n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void log_msg(cd_log_level level, const char *prefix, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, prefix, fmt, ap);
    va_end(ap);
}
