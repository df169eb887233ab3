/* The log chain: does a log file continue this stream of this database (log.h has the order of
 * the checks and why). The one place that judges a generation against what a caller expects;
 * the callers keep only what they do about the answer. */
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "engine/log.h"

void eng_chain_of_db(eng_chain_want *w, const eng_dbhdr *h, const char *sig_from, uint32_t gen)
{
    memset(w, 0, sizeof *w);
    w->gen = gen;
    w->named = 1;
    w->check_db = w->check_stream = 1;
    w->db_sig = h->db_sig;
    w->log_sig = h->log_sig;
    w->sig_from = sig_from;
}

int eng_chain_of_stream(eng_chain_want *w, const eng_stream *st)
{
    memset(w, 0, sizeof *w);
    w->sig_from = "the newest generation in the folder";
    char p[4200];
    eng_loghdr h;
    for (uint32_t i = st->n + 1; i-- > 0;) {
        if (i == st->n && !st->cur_gen) continue;
        eng_stream_path(st, i == st->n ? st->cur_gen : st->gens[i], p, sizeof p);
        if (eng_loghdr_read(st->vfs, p, &h) == 0) {
            w->check_db = w->check_stream = 1;
            w->db_sig = h.db_sig;
            w->log_sig = h.log_sig;
            return 1;
        }
    }
    om_err_clear();
    return 0;
}

void eng_chain_follow(eng_chain_want *w, const char *path, const eng_genread *g)
{
    w->gen = g->hdr.gen + 1;
    w->have_prev = 1;
    w->prev_created = g->hdr.created;
    w->prev_len = g->len;
    snprintf(w->prev_path, sizeof w->prev_path, "%s", path);
}

void eng_chain_forget_prev(eng_chain_want *w)
{
    w->have_prev = 0;
    w->prev_created = 0;
    w->prev_len = 0;
    w->prev_path[0] = 0;
}

static int answer(eng_chain_cause *why, eng_chain_cause c, int rc)
{
    if (why) *why = rc ? c : ENG_CHAIN_OK;
    return rc;
}

static const char *from(const eng_chain_want *w)
{
    return w->sig_from ? w->sig_from : "the stream it is read with";
}

int eng_loghdr_continues(const eng_chain_want *w, const char *path, const eng_loghdr *h,
                         eng_chain_cause *why)
{
    if (w->check_db && !eng_sig_eq(&h->db_sig, &w->db_sig))
        return answer(why, ENG_CHAIN_OTHER_DB,
                      om_errf(OM_E_DatabaseLogSetMismatch,
                              "%s was written for another database than %s", path, from(w)));
    if (w->check_stream && !eng_sig_eq(&h->log_sig, &w->log_sig))
        return answer(why, ENG_CHAIN_OTHER_STREAM,
                      om_errf(OM_E_BadLogSignature,
                              "%s belongs to another log stream than %s (logs from before a "
                              "restore?)",
                              path, from(w)));
    if (h->gen != w->gen && w->named)
        return answer(why, ENG_CHAIN_NAME,
                      om_errf(OM_E_LogGenerationMismatch,
                              "%s holds generation %u, its name says %u", path, h->gen, w->gen));
    if (h->gen != w->gen)
        return answer(why, ENG_CHAIN_SEQUENCE,
                      om_errf(OM_E_InvalidLogSequence,
                              "%s holds generation %u where generation %u comes next", path, h->gen,
                              w->gen));
    if (w->have_prev && h->prev_created != w->prev_created)
        return answer(why, ENG_CHAIN_SEQUENCE,
                      om_errf(OM_E_InvalidLogSequence,
                              "%s does not follow generation %u (its chain points to another "
                              "generation)",
                              path, w->gen - 1));
    /* A generation followed by another holds everything the next one says it did: a shorter
     * stream is damage that only looked like the end of the log. */
    if (w->have_prev && h->prev_end > w->prev_len)
        return answer(why, ENG_CHAIN_PREV_CUT,
                      om_errf(OM_E_LogFileCorrupt,
                              "%s: its records end at byte %u, but generation %u (%s) says it "
                              "ended at %u: the file is damaged",
                              w->prev_path[0] ? w->prev_path : "the previous generation",
                              w->prev_len, h->gen, path, h->prev_end));
    return answer(why, ENG_CHAIN_OK, 0);
}

int eng_gen_continues(om_vfs *v, const char *path, const eng_chain_want *w, eng_genread *g,
                      eng_chain_cause *why)
{
    return eng_gen_continues_into(v, path, w, g, why, NULL);
}

int eng_gen_continues_into(om_vfs *v, const char *path, const eng_chain_want *w, eng_genread *g,
                           eng_chain_cause *why, uint8_t *buf)
{
    int rc = eng_gen_read_into(v, path, g, buf);
    if (rc == OM_E_FileNotFound)
        return answer(
            why, ENG_CHAIN_MISSING,
            om_errf(OM_E_MissingLogFile, "log generation %u (%s) is missing", w->gen, path));
    if (rc == OM_E_LogFileSizeMismatch) return answer(why, ENG_CHAIN_SIZE, rc);
    /* Damage inside the data leaves the header read (damaged_slot is a segment's slot, never
     * the header's 0); a damaged header leaves nothing to compare. */
    int damaged = rc == OM_E_LogFileCorrupt && g->damaged_slot;
    if (rc == OM_E_LogFileCorrupt || rc == OM_E_BadLogVersion) {
        if (!damaged) return answer(why, ENG_CHAIN_HEADER, rc);
    } else if (rc)
        return answer(why, ENG_CHAIN_UNREADABLE, rc);
    eng_chain_cause c;
    int id = eng_loghdr_continues(w, path, &g->hdr, &c);
    if (id) return answer(why, c, id);
    if (damaged)
        return answer(why, ENG_CHAIN_DAMAGED,
                      om_errf(OM_E_LogFileCorrupt,
                              "%s: generation %u: segment in slot %u is damaged", path, g->hdr.gen,
                              g->damaged_slot));
    return answer(why, ENG_CHAIN_OK, 0);
}

int eng_chain_check_ahead(om_vfs *v, const eng_chain_want *w, const char *next_path, int next_named)
{
    eng_chain_want ahead = *w;
    ahead.named = next_named;
    eng_loghdr nh;
    eng_chain_cause why = ENG_CHAIN_OK;
    int rc = eng_loghdr_read(v, next_path, &nh);
    if (!rc) rc = eng_loghdr_continues(&ahead, next_path, &nh, &why);
    if (rc && why == ENG_CHAIN_PREV_CUT) return rc;
    om_err_clear();
    return 0;
}

const char *eng_chain_cause_name(eng_chain_cause c)
{
    static const char *names[] = {
        [ENG_CHAIN_OK] = "continues the stream",
        [ENG_CHAIN_MISSING] = "missing",
        [ENG_CHAIN_UNREADABLE] = "unreadable",
        [ENG_CHAIN_SIZE] = "of the wrong size",
        [ENG_CHAIN_HEADER] = "damaged header",
        [ENG_CHAIN_OTHER_DB] = "another database",
        [ENG_CHAIN_OTHER_STREAM] = "another log stream",
        [ENG_CHAIN_NAME] = "another generation than its name",
        [ENG_CHAIN_SEQUENCE] = "out of sequence",
        [ENG_CHAIN_PREV_CUT] = "the previous generation cut short",
        [ENG_CHAIN_DAMAGED] = "damaged data",
    };
    return (unsigned)c < sizeof names / sizeof *names ? names[c] : "?";
}
