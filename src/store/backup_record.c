/* What a backup leaves in a database (backup_record.h). */
#include "store/backup_record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/logging.h"

int store_backup_type_ok(const char *type)
{
    return type && (!strcmp(type, "full") || !strcmp(type, "copy") ||
                    !strcmp(type, "incremental") || !strcmp(type, "differential"));
}

int store_backup_type_error(const char *type)
{
    return om_errf(OM_E_InvalidParameter,
                   "backup type '%s': full, copy, incremental or differential", type);
}

enum eng_bkslot_id store_backup_slot(const char *type)
{
    return !strcmp(type, "full")          ? ENG_BK_PREV_FULL
           : !strcmp(type, "incremental") ? ENG_BK_PREV_INCREMENTAL
           : !strcmp(type, "copy")        ? ENG_BK_PREV_COPY
                                          : ENG_BK_PREV_DIFFERENTIAL;
}

enum eng_bk_kind store_backup_kind(const char *type)
{
    return !strcmp(type, "full")          ? ENG_BK_FULL
           : !strcmp(type, "incremental") ? ENG_BK_INCREMENTAL
           : !strcmp(type, "copy")        ? ENG_BK_COPY
                                          : ENG_BK_DIFFERENTIAL;
}

int store_backup_allowed(const char *name, int circular, const eng_info *in, const char *type)
{
    int incr = !strcmp(type, "incremental") || !strcmp(type, "differential");
    if (incr && circular)
        return om_errf(OM_E_InvalidBackup,
                       "database '%s' uses circular logging: %s backups need every log. HINT: "
                       "ombra db set %s --circular-logging off, then take a full backup",
                       name, type, name);
    if (incr && in->slots[ENG_BK_PREV_FULL].mark_time == 0)
        return om_errf(OM_E_MissingFullBackup,
                       "database '%s' has no full backup: an %s backup needs one. HINT: take a "
                       "full backup first",
                       name, type);
    const eng_bkslot *full = &in->slots[ENG_BK_PREV_FULL],
                     *inc = &in->slots[ENG_BK_PREV_INCREMENTAL];
    if (!strcmp(type, "differential") && inc->mark_time > full->mark_time)
        return om_errf(OM_E_InvalidBackupSequence,
                       "database '%s': an incremental backup since the last full one truncated "
                       "the logs a differential backup needs (generations from %u). HINT: take a "
                       "full backup, then differential ones",
                       name, full->last_gen + 1);
    return 0;
}

int store_backup_record(eng_db *db, const char *name, const char *type, const eng_bkslot *s,
                        const char *by)
{
    /* A backup overtaken by a newer one of its type (another copy's, or the active's own, taken
     * while this one ran) would put the header's slot back in time: the next incremental would
     * begin after the older one, at generations the newer one's truncation let go. */
    eng_info in;
    int rc = eng_db_info(db, &in);
    if (rc) return rc;
    const eng_bkslot *cur = &in.slots[store_backup_slot(type)];
    if (cur->mark_time > s->mark_time)
        return om_errf(OM_E_InvalidBackupSequence,
                       "the %s backup of '%s'%s%s was overtaken: a newer %s backup (generations "
                       "%u-%u) was recorded while it ran, so this one does not count. HINT: the "
                       "newer one is the one to keep",
                       type, name, by && *by ? " from " : "", by ? by : "", type, cur->first_gen,
                       cur->last_gen);
    rc = eng_record_backup(db, store_backup_slot(type), s);
    if (rc) return rc;
    om_log_with(OM_INFO, OM_FIELDS({"DATABASE", name}),
                "%s backup of %s recorded (generations %u-%u)%s%s", type, name, s->first_gen,
                s->last_gen, by && *by ? ", taken from " : "", by ? by : "");
    return 0;
}

uint32_t store_backup_truncates_below(const char *type, uint32_t ckpt, uint32_t last)
{
    if (strcmp(type, "full") && strcmp(type, "incremental")) return 0;
    return ckpt < last ? ckpt : last;
}

json_t *store_backup_changemap(eng_db *db)
{
    eng_change_epoch ep[8];
    uint32_t n = 0;
    char why[400] = "", id[17];
    eng_db_change_epochs(db, ep, 8, &n, why, sizeof why);
    if (!n) return json_pack("{s:s}", "untrusted", why[0] ? why : "the change map knows no epoch");
    json_t *since = json_object(), *o = NULL;
    for (uint32_t i = 0; since && i + 1 < n; i++) {
        uint32_t *runs = NULL, nr = 0;
        if (eng_db_changed_pages(db, ep[i].id, &runs, &nr)) {
            om_err_clear();
            continue;
        }
        size_t cap = (size_t)nr * 24 + 1, len = 0;
        char *s = malloc(cap);
        for (uint32_t r = 0; s && r < nr; r++)
            len += (size_t)snprintf(s + len, cap - len, "%s%u:%u", r ? "," : "", runs[2 * r],
                                    runs[2 * r + 1]);
        if (s) s[len] = 0;
        snprintf(id, sizeof id, "%016llx", (unsigned long long)ep[i].id);
        if (s) json_object_set_new(since, id, json_string(s));
        free(s);
        free(runs);
    }
    snprintf(id, sizeof id, "%016llx", (unsigned long long)ep[n - 1].id);
    if (since) o = json_pack("{s:s, s:o}", "epoch", id, "since", since);
    /* Why the map was started again at this mount, when it was: earlier fulls it cannot know. */
    if (o && why[0]) json_object_set_new(o, "started_again", json_string(why));
    return o;
}
