#include "base/error.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char detail[OM_ERR_DETAIL_MAX];

const char *om_err_name(int err)
{
    switch (err) {
#define OM_ERR(name, num, msg)                                                                     \
    case num:                                                                                      \
        return #name;
#include "base/errors.def"
#undef OM_ERR
    }
    return "Unknown";
}

const char *om_err_msg(int err)
{
    switch (err) {
#define OM_ERR(name, num, msg)                                                                     \
    case num:                                                                                      \
        return msg;
#include "base/errors.def"
#undef OM_ERR
    }
    return "unknown error";
}

int om_errf(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return err;
}

int om_err_ctx(int err, const char *fmt, ...)
{
    char prev[sizeof detail], ctx[512];
    snprintf(prev, sizeof prev, "%s", detail[0] ? detail : om_err_msg(err));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    snprintf(detail, sizeof detail, "%.500s: %.500s", ctx, prev);
    return err;
}

const char *om_err_detail(void)
{
    return detail;
}

void om_err_clear(void)
{
    detail[0] = 0;
}

int om_err_from_errno(int e)
{
    switch (e) {
    case ENOSPC:
    case EDQUOT:
        return OM_E_DiskFull;
    case ENOENT:
        return OM_E_FileNotFound;
    case EEXIST:
        return OM_E_FileAlreadyExists;
    case EACCES:
    case EPERM:
        return OM_E_FileAccessDenied;
    case ENOMEM:
        return OM_E_OutOfMemory;
    case EROFS:
        return OM_E_DatabaseFileReadOnly;
    case ENAMETOOLONG:
    case ENOTDIR:
    case EISDIR:
        return OM_E_InvalidPath;
    default:
        return OM_E_DiskIO;
    }
}

int om_err_save(om_err_saved *s, int err)
{
    s->code = err;
    memcpy(s->detail, detail, sizeof detail);
    return err;
}

int om_err_restore(const om_err_saved *s)
{
    memcpy(detail, s->detail, sizeof detail);
    detail[sizeof detail - 1] = 0;
    return s->code;
}

const char *om_err_format(int err, char *buf, unsigned len)
{
    const char *d = detail[0] ? detail : om_err_msg(err);
    snprintf(buf, len, "%d %s: %s", err, om_err_name(err), d);
    return buf;
}
