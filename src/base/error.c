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

/* The length of the valid UTF-8 sequence at s (1 to 4), or 0 (RFC 3629: no overlong form, no
 * surrogate, nothing past U+10FFFF). */
static int utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int n = c >= 0xC2 && c <= 0xDF   ? 2
            : c >= 0xE0 && c <= 0xEF ? 3
            : c >= 0xF0 && c <= 0xF4 ? 4
                                     : 0;
    unsigned lo = c == 0xE0   ? 0xA0
                  : c == 0xF0 ? 0x90
                              : 0x80,
             hi = c == 0xED   ? 0x9F
                  : c == 0xF4 ? 0x8F
                              : 0xBF;
    for (int i = 1; i < n; i++) {
        unsigned t = s[i];
        if (t < (i == 1 ? lo : 0x80) || t > (i == 1 ? hi : 0xBF)) return 0;
    }
    return n;
}

/* Every byte of s that begins no valid UTF-8 sequence made '?': a detail is valid UTF-8 even
 * when %.Ns cut a character of a name from a file in half, or the name was never text (a JSON
 * document that carries it would not be made). */
static void utf8_mend(char *s)
{
    for (unsigned char *p = (unsigned char *)s; *p;) {
        int n = utf8_len(p);
        if (n)
            p += n;
        else
            *p++ = '?';
    }
}

int om_errf(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    utf8_mend(detail);
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
    utf8_mend(detail);
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
