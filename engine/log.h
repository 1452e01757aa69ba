/*
 * Engine logging: one line per event on stderr, with time, level and an
 * optional "[pipeline/sink]" prefix.  Level set once at start (log_level).
 */
#ifndef CONNECTD_LOG_H
#define CONNECTD_LOG_H

#include <connectd/plugin.h>
#include <stdarg.h>

void log_set_level(cd_log_level level);
cd_log_level log_get_level(void);
/* Parses "error|warn|info|debug"; returns 0 or -1. */
int log_level_parse(const char *s, cd_log_level *out);

void log_msg(cd_log_level level, const char *prefix, const char *fmt, ...) CD_PRINTF(3, 4);
void log_vmsg(cd_log_level level, const char *prefix, const char *fmt, va_list ap);

#define LOG_ERROR(...) log_msg(CD_LOG_ERROR, NULL, __VA_ARGS__)
#define LOG_WARN(...)  log_msg(CD_LOG_WARN, NULL, __VA_ARGS__)
#define LOG_INFO(...)  log_msg(CD_LOG_INFO, NULL, __VA_ARGS__)
#define LOG_DEBUG(...)                                                                             \
    do {                                                                                           \
        if (log_get_level() >= CD_LOG_DEBUG) log_msg(CD_LOG_DEBUG, NULL, __VA_ARGS__);             \
    } while (0)

#endif
