/* Fencing of a store's replicated databases (docs/design.md "Fencing and handoff in the store").
 *
 * A database of a DAG with more than one copy may be mounted on this server only while the DAG
 * names it active here; when this server loses the DAG (a partition, a paused process), another
 * copy is mounted elsewhere once this server's etcd lease expires. So that never two servers
 * acknowledge commits of one database at once, the store acknowledges a commit of a replicated
 * database only when it became durable before a deadline T ("may commit until T", one per
 * server, CLOCK_MONOTONIC) that this server's ombra-repld renews (store_fence_renew, the op
 * dag.lease) after each etcd keepalive, always to a moment before etcd can expire the lease. The
 * store cannot tell a partition from its own slowness: it assumes the worst. Each renewal also
 * says which databases ombra-repld confirms (active/<id> names them here at their epoch and a
 * failover has not marked them deposing): the others take no commit until it confirms them.
 *
 * Armed. Fencing applies once the store is armed: from the start with always (Exchange's DAC
 * mode: a store that starts acknowledges nothing before the DAG spoke), else at the first
 * renewal (a store whose ombra-repld never sends dag.lease behaves as before fencing existed).
 * Armed, a database that mounts takes no commit before the next renewal after its mount (the
 * renewal's reply tells ombra-repld it is taking commits, so that it keeps activelease/<id>).
 *
 * A commit:
 *   store_fence_enter   before the transaction: a fenced database whose deadline passed (or
 *                       not renewed since its mount) waits up to wait_ms for a renewal, then
 *                       ActiveLeaseLapsed (retryable); one being handed off (store_fence_stop)
 *                       waits, then DatabaseMoving (retryable). Counts the commit in flight.
 *   store_fence_ack     after it is durable (and on its synchronous copies): 0 when the deadline
 *                       did not pass since store_fence_enter (no lapse between, and now < T):
 *                       it may be acknowledged, *acked_ns the moment (CLOCK_REALTIME). Else
 *                       ActiveLeaseLapsed saying the commit is durable here but not
 *                       acknowledged. Ends the commit in flight either way.
 *   store_fence_leave   instead of ack, when the commit failed.
 *
 * The store logs one line when a database starts taking commits at an epoch and one when it
 * stops ("database db1: taking commits at epoch 3 on server b", "database db1: stopped taking
 * commits at epoch 3: <why>"), at the moment it happens (a thread wakes at the deadline): the
 * nemesis test reads them to show that no two servers took commits of a database at once.
 *
 * Databases are tracked by name from their mount to their dismount. Thread-safe; lock order:
 * the registry's mu, then the fence's own (the fence calls nothing of the registry). */
#ifndef OM_STORE_FENCE_H
#define OM_STORE_FENCE_H

#include <stddef.h>
#include <stdint.h>

typedef struct store_fence store_fence;

typedef struct store_fence_opts {
    const char *server; /* this server's name, for the log */
    int always;         /* armed from the start (DAC); 0: armed at the first renewal */
    uint32_t wait_ms;   /* how long a commit waits for a renewal or a handoff (0: 5000) */
} store_fence_opts;

int store_fence_new(const store_fence_opts *o, store_fence **out);
void store_fence_free(store_fence *f);

/* dag.lease: commits may be acknowledged until valid_ms from now (a deadline never moves back);
 * arms the fence; every database tracked is seen by the DAG from now on. A renewal after the
 * deadline passed ends a lapse: a commit that entered before it is not acknowledged. */
void store_fence_renew(store_fence *f, uint32_t valid_ms);
/* The same, confirming only the databases named (all: every one, as store_fence_renew): one
 * left out takes no commit until a renewal confirms it again, and a commit that entered before
 * is not acknowledged (ombra-repld confirms those active/<id> names active here at their epoch
 * and not being deposed, read from etcd after the keepalive: a failover's first step deposes
 * the active, and no renewal after that lets it acknowledge). */
void store_fence_renew_some(store_fence *f, uint32_t valid_ms, const char *const *names, size_t n,
                            int all);
int store_fence_armed(store_fence *f);

/* A database mounted (epoch: of active/<id> it mounted under, 0 on the file backend;
 * replicated: its DAG record lists more than one copy). */
int store_fence_track(store_fence *f, const char *name, int64_t epoch, int replicated);
/* The DAG names it active here at another epoch (an aborted switchover), or its copies
 * changed: logged as a stop and a start when taking commits. */
void store_fence_update(store_fence *f, const char *name, int64_t epoch, int replicated);
/* Being dismounted (why: for the log): commits waiting in store_fence_enter get
 * DatabaseMoving at once, commits in flight are not acknowledged when fenced. */
void store_fence_untrack(store_fence *f, const char *name, const char *why);
/* Whether it takes commits now; *epoch (may be NULL): its epoch. 0 when not tracked. */
int store_fence_taking(store_fence *f, const char *name, int64_t *epoch);

typedef struct store_fence_ticket {
    char name[72];
    uint64_t lapses;  /* the lapses seen when it entered */
    uint64_t dlapses; /* its database's losses of confirmation seen when it entered */
    int fenced;
    int64_t epoch;
} store_fence_ticket;

/* replicated: as the DAG's record says now (updates the tracked database's). */
int store_fence_enter(store_fence *f, const char *name, int replicated, store_fence_ticket *t);
int store_fence_ack(store_fence *f, store_fence_ticket *t, uint64_t *acked_ns, int64_t *epoch);
void store_fence_leave(store_fence *f, store_fence_ticket *t);

/* Handoff: no new commit enters (they wait, then DatabaseMoving); returns once the commits in
 * flight have left, or DatabaseMoving after timeout_ms (the stop stays: store_fence_resume).
 * *stopped_ns: when the first commit was refused entry (CLOCK_REALTIME, the stop's moment). */
int store_fence_stop(store_fence *f, const char *name, uint32_t timeout_ms, uint64_t *stopped_ns);
/* The handoff did not happen: commits enter again. */
void store_fence_resume(store_fence *f, const char *name);

#endif
