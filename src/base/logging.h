/* Diagnostics to stderr: "ombra-store: warning: ...". Daemons and tools set the program name
 * once; OMBRA_DEBUG=1 turns on debug lines. */
#ifndef OM_BASE_LOG_H
#define OM_BASE_LOG_H

enum om_level { OM_DEBUG, OM_INFO, OM_WARN, OM_ERROR };

void om_log_init(const char *prog);
/* Lines below lvl are not printed (tests that make errors on purpose silence them). */
void om_log_min_level(enum om_level lvl);
void om_log(enum om_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define om_debug(...) om_log(OM_DEBUG, __VA_ARGS__)
#define om_info(...)  om_log(OM_INFO, __VA_ARGS__)
#define om_warn(...)  om_log(OM_WARN, __VA_ARGS__)
#define om_error(...) om_log(OM_ERROR, __VA_ARGS__)

#endif
