/* Retention: which backup sets a policy keeps, and why (bk_expire applies the plan; ombra expire
 * --dry-run prints it). A pure function of the set summaries: nothing is read or written here,
 * so the dry run and the real run decide with the same code on the same sets.
 *
 * The policy is applied to each database's sets separately (a set's database: its "database" id,
 * else its name; a set naming several databases belongs to each). Rules, any number at once; a
 * set is kept when any rule keeps it (restic's `forget`):
 *   last N      the N newest sets;
 *   daily N     for the last N days (UTC) that have one or more sets, the newest set of each
 *               day; weekly (ISO 8601 weeks, Monday first), monthly and yearly alike;
 *   within D    every set newer than the database's newest set minus D (D: bk_duration_parse);
 *   full N      the N newest full sets with every set committed after the oldest of them (the
 *               rule `ombra expire --keep-full` always had; copies never count as a full), and
 *               everything of a database that has N fulls or fewer.
 * "Newest" is by the set's time (its freeze, "mark_time_ns"; else its "time"; else its commit),
 * ties by commit order; "full N" counts in commit order, as it always did. Every type of set
 * counts for last/daily/.../within (an incremental may be a day's newest).
 *
 * Whole chains, always: a kept incremental or differential keeps its parent, and so on up to its
 * full ("chain of <id>"); a set no rule keeps and no kept set depends on goes. So a full goes
 * with its dependents only when none of them is kept, and no kept set ever loses a set of its
 * chain.
 *
 * Databases: with dbs (names or ids), the rules apply to those databases only; every set of
 * another database is kept ("database X not selected"). A set naming several databases is kept
 * when any of its databases keeps it (an unselected one always does). A set naming no database,
 * and a damaged set summary, are kept (their chain and database are unknown). */
#ifndef OM_BACKUP_RETENTION_H
#define OM_BACKUP_RETENTION_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* A duration as people write it: numbers with units, largest first or in any order, no spaces:
 * "7d", "36h", "2w", "1m" (a calendar month), "1y" (a calendar year), "1y6m", "2w3d12h".
 * Years and months are calendar steps back from an instant (UTC), weeks are 7 days, days 24
 * hours. */
typedef struct bk_duration {
    unsigned years, months, weeks, days, hours;
} bk_duration;

/* 0, or InvalidParameter with a detail naming the text and what is wrong (the units it takes). */
int bk_duration_parse(const char *text, bk_duration *d);
/* The instant d before t (ns since the epoch, UTC); 0 when that is before 1970. */
uint64_t bk_duration_before(uint64_t t_ns, const bk_duration *d);

typedef struct bk_policy {
    unsigned keep_full, keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly; /* 0: off */
    const char *keep_within; /* a duration (bk_duration_parse), NULL: off */
    const char *const *dbs;  /* the databases the policy applies to (names or ids) */
    size_t ndbs;             /* 0: every database */
} bk_policy;

/* 0, or InvalidParameter: no rule at all (deleting everything by accident is impossible), or a
 * bad duration. */
int bk_policy_check(const bk_policy *p);

/* The time retention reads from a set summary (ns): "mark_time_ns", else "time", else
 * "committed_ns"; 0 when none. */
uint64_t bk_set_time_ns(json_t *set);

/* sets: summaries (bk_sets) or whole documents, oldest commit first. *plan: {"kept": [...],
 * "removed": [...]}, each entry {"id", "type", "time" (ISO, UTC), "database" (the set's database
 * object, or its "databases"), "reasons": [text...]}, newest first; a removed set's reason is
 * "no rule keeps it". Errors: InvalidParameter (no rule at all; a bad duration),
 * SetNotFound (a database of dbs that no set names). */
int bk_retention_plan(json_t *sets, const bk_policy *p, json_t **plan);
/* The same with several policies (a default and per-database ones, as a configuration file
 * gives them): each database gets the first policy whose dbs name it, else the first policy
 * that names no database (the default), else it is not selected (every set kept). Each policy
 * is checked (bk_policy_check) and each database it names must have a set. np >= 1. */
int bk_retention_plan_n(json_t *sets, const bk_policy *ps, size_t np, json_t **plan);

#endif
