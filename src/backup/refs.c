/* bk_file_refs (repo_internal.h): the stored blocks one file entry of a set document uses, in
 * either form of repo.h (a file's blocks, or a synthetic full's regions and their slices).
 * expire.c keeps what it names; stats.c counts it. */
#include <stdio.h>
#include <string.h>

#include "backup/repo_internal.h"

/* Each id in b: 64 hex digits each, one after another (a file's blocks), or each at the start of
 * a piece "id:off:len" (a region's slices). Text that is not an id is skipped: bk_verify and the
 * restore refuse such a set, and a caller that keeps or counts blocks loses nothing by it. */
static int walk(const char *b, size_t maxn, int pieces, bk_ref_fn fn, void *arg)
{
    size_t n = 0;
    for (size_t o = 0; b[o] && b[o + 1] && n < maxn; n++) {
        char hex[65];
        uint8_t id[BK_ID_LEN];
        snprintf(hex, sizeof hex, "%.64s", b + o);
        int rc = bk_unhex(hex, id, BK_ID_LEN) ? 0 : fn(arg, id);
        if (rc) return rc;
        if (!pieces) {
            if (strlen(hex) < 64) break;
            o += 64;
            continue;
        }
        const char *c = strchr(b + o, ',');
        if (!c) break;
        o = (size_t)(c - b) + 1;
    }
    return 0;
}

int bk_file_refs(json_t *file, bk_ref_fn fn, void *arg)
{
    const char *blocks = json_string_value(json_object_get(file, "blocks"));
    json_t *pieces = json_object_get(file, "pieces");
    if (!blocks) return 0;
    if (!json_is_object(pieces)) return walk(blocks, SIZE_MAX, 0, fn, arg);
    /* The regions form: region i is block i whole unless pieces has "i"; then blocks[i] is the
     * pieces' id (no stored block) and the slices' blocks are the ones used. */
    size_t len = strlen(blocks);
    for (size_t i = 0; i * 64 < len; i++) {
        char key[24];
        snprintf(key, sizeof key, "%zu", i);
        const char *pc = json_string_value(json_object_get(pieces, key));
        int rc = pc ? walk(pc, SIZE_MAX, 1, fn, arg) : walk(blocks + i * 64, 1, 0, fn, arg);
        if (rc) return rc;
    }
    return 0;
}
