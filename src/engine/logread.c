/* Reading a log generation back: header, segments, the end of the stream. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "engine/log.h"

void eng_gen_free(eng_genread *g)
{
    if (!g->lent) free(g->stream);
    g->stream = NULL;
}

int eng_gen_read(om_vfs *v, const char *path, eng_genread *g)
{
    return eng_gen_read_into(v, path, g, NULL);
}

/* The file is read whole into one buffer and the segments' payloads are moved down in place
 * into the record stream: the payload of slot s goes below s x ENG_SEG_PAYLOAD, which is below
 * the slot's own offset, so no slot is overwritten before it is decoded (and the slots past a
 * gap are never touched). One buffer, no second copy of the stream. */
int eng_gen_read_into(om_vfs *v, const char *path, eng_genread *g, uint8_t *buf)
{
    memset(g, 0, sizeof *g);
    uint8_t *file = buf ? buf : malloc(ENG_LOG_SIZE);
    uint32_t slot_off[ENG_LOG_SLOTS + 1] = {0};
    om_file *f = NULL;
    uint64_t size = 0;
    g->stream = file;
    g->lent = buf != NULL;
    int rc = om_open(v, path, OM_O_RDONLY, &f);
    if (rc) goto out;
    if (!file) {
        rc = om_errf(OM_E_OutOfMemory, "reading %s: out of memory", path);
        goto out;
    }
    rc = om_fsize(f, &size);
    if (rc) goto out;
    if (size != ENG_LOG_SIZE) {
        rc = om_errf(OM_E_LogFileSizeMismatch, "%s is %llu bytes; log files are %u", path,
                     (unsigned long long)size, ENG_LOG_SIZE);
        goto out;
    }
    rc = om_pread_full(f, file, ENG_LOG_SIZE, 0);
    if (rc) goto out;
    rc = eng_loghdr_decode(file, &g->hdr);
    if (rc) {
        rc = om_err_ctx(rc, "%s", path);
        goto out;
    }

    uint32_t expect = 0;
    uint16_t gap = 0;
    enum eng_seg_status gap_status = ENG_SEG_EMPTY;
    for (uint16_t s = 1; s < ENG_LOG_SLOTS; s++) {
        eng_seghdr h;
        const uint8_t *slot = file + (size_t)s * ENG_SLOT_SIZE;
        enum eng_seg_status st = eng_seg_decode(slot, g->hdr.gen, s, &h);
        if (st == ENG_SEG_OK && h.stream_off == expect) {
            slot_off[s] = expect;
            memmove(g->stream + expect, slot + ENG_SEG_HDR, h.data_len);
            expect += h.data_len;
            g->segments++;
            continue;
        }
        if (st == ENG_SEG_OK) {
            g->damaged_slot = s;
            g->len = expect;
            g->end_slot = s;
            rc = om_errf(OM_E_LogFileCorrupt,
                         "%s: segment in slot %u continues the stream at offset %u, expected %u",
                         path, s, h.stream_off, expect);
            goto out;
        }
        gap = s;
        gap_status = st;
        break;
    }
    g->len = expect;
    g->end_slot = gap ? gap : ENG_LOG_SLOTS;
    if (!gap) goto out;
    slot_off[gap] = expect;
    /* Past the gap: good segments of a later flush mean durable data is damaged (only the last
     * flush can be torn, and it was followed by another); good segments only of the flush
     * the gap is in mean that flush was torn by a crash, and it is dropped whole. */
    uint16_t torn_first = 0;
    for (uint16_t s = gap + 1; s < ENG_LOG_SLOTS; s++) {
        eng_seghdr h;
        if (eng_seg_decode(file + (size_t)s * ENG_SLOT_SIZE, g->hdr.gen, s, &h) != ENG_SEG_OK)
            continue;
        if (h.flush_first > gap) {
            g->damaged_slot = gap;
            rc = om_errf(OM_E_LogFileCorrupt,
                         "%s: slot %u is %s but slot %u after it holds data written later", path,
                         gap, gap_status == ENG_SEG_BAD ? "damaged" : "empty", s);
            goto out;
        }
        if (!torn_first) torn_first = h.flush_first;
    }
    if (torn_first) {
        g->torn_slot = torn_first;
        g->end_slot = torn_first;
        g->len = slot_off[torn_first];
        g->segments = (uint16_t)(torn_first - 1);
        goto out;
    }
    if (gap_status == ENG_SEG_BAD) g->torn_slot = gap;
out:
    om_close(f);
    if (rc && rc != OM_E_LogFileCorrupt) eng_gen_free(g);
    return rc;
}
