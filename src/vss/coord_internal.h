/* What the files of ombra-vssd share: coordinator.c (connections, admin) on top, session.c
 * (requester sessions) below it, coord_writers.c (the writer registry, events) and
 * coord_catalog.c (the shadow copy catalog) below both. One mutex (coord.mu) guards the writer
 * registry, the sessions list, the component owners and the catalog; an event to a writer waits
 * on its own condition with that mutex, so a slow writer holds nobody else up. */
#ifndef OM_VSS_COORD_INTERNAL_H
#define OM_VSS_COORD_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#include "vss/coordinator.h"
#include "vss/provider/provider.h"

#define VSS_MAX_WRITERS  256
#define VSS_MAX_SHADOWS  1024
#define VSS_MAX_COMPS    256 /* the store mounts up to 100 databases, a DAG server more copies */
#define VSS_MAX_PATHS    256 /* a database and its log folder each */
#define VSS_MAX_INVOLVED 32

typedef struct session session;

/* An event sent to a writer and waiting for its answer. */
typedef struct pending {
    uint64_t id;
    json_t *answer; /* set by the writer's connection thread */
    int done;       /* answered, or the writer went away */
    pthread_cond_t cond;
    struct pending *next;
} pending;

/* A registered writer. Entries live as long as the daemon; a writer that registers again with
 * the same instance id reuses its entry with a new conn_gen, so a session that involved the old
 * connection can tell it is gone. */
typedef struct wconn {
    char class_id[40], instance_id[40], name[128];
    int can_hold;
    int pid;
    int fd; /* -1 when disconnected */
    uint32_t conn_gen;
    pthread_mutex_t send_mu;
    uint64_t next_id;
    pending *calls;
    char state[64];   /* "stable", "waiting_for_freeze", ..., "failed_at_Freeze" */
    char failure[32]; /* the last failure kind, "" when none */
    char last_error[600];
    session *snap_owner; /* between PrepareBackup and PostSnapshot */
    pthread_cond_t snap_cond;
} wconn;

/* A shadow copy in the catalog. */
typedef struct shadow_ent {
    vss_shadow s;
    char session[40];
    int persistent;
    int valid;   /* 0 once its writer's hold ended */
    int exposed; /* committed and exposed: listed to requesters */
} shadow_ent;

typedef struct coord {
    vss_coord_opts o;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    wconn *w[VSS_MAX_WRITERS];
    int nw;
    session *sessions; /* linked through session.next */
    shadow_ent *shadows[VSS_MAX_SHADOWS];
    int nshadows;
    char shadow_root[4096], catalog[4200];
    uint32_t freeze_limit_ms, commit_limit_ms, event_limit_ms, restore_limit_ms;
    int stopping;
    /* The last snapshot set made (status reports it; ombra metrics shows the writes-held
     * time): under mu; last_ns 0 until one was made. */
    uint64_t last_ns;
    double last_freeze_ms, last_snapshot_ms;
    char last_set[40];
} coord;

/* ---- coord_writers.c: the writer registry and its events ---- */

/* Sends event to writer w (conn_gen gen) and waits for the answer within the event limit.
 * Returns 0 and *result (a new reference, may be NULL) or the writer's failure as an error
 * (WriterError*, WriterNotResponding), with the detail naming the writer and the event. Called
 * without coord.mu held. */
int vss_coord_call(coord *c, wconn *w, uint32_t gen, const char *sid, const char *event,
                   json_t *args, json_t **result);
/* An answer from the writer (msg has "answer": the event's id): hands it to the call waiting
 * for it. Takes msg's reference: the waiting call's thread holds the only one from then on (so
 * the last decref and the reads before it are on one thread), or it is dropped when no call
 * waits for that id any more. Takes coord.mu. */
void vss_coord_deliver(coord *c, wconn *w, json_t *msg);
/* Registers (or re-registers) the writer that sent req on fd: *out, or an error (a writer with
 * that instance id still connected, ids too long, too many writers). Under coord.mu. */
int vss_coord_register_writer(coord *c, int fd, json_t *req, wconn **out);
/* Sets a writer's state (and on failure its failure kind and last error). Takes coord.mu. */
void vss_coord_writer_state(coord *c, wconn *w, const char *state, int err);
/* The registered, connected writer with that instance id; NULL when none. Under coord.mu. */
wconn *vss_coord_find_writer(coord *c, const char *instance_id);
json_t *vss_coord_writer_json(const wconn *w);

/* ---- coord_catalog.c: the shadow copy catalog (every call under coord.mu unless it says) ---- */

/* Adds a shadow copy to the catalog and saves it; the entry (NULL on failure). Under coord.mu.
 * The entry stays at its address until its session drops it. */
shadow_ent *vss_coord_add_shadow(coord *c, const shadow_ent *e);
/* Copies what a provider filled in (working on a copy, outside the lock) into the catalog
 * entry and, when save, saves the catalog (a durable write: not during a freeze). Takes
 * coord.mu. */
void vss_coord_update_shadow(coord *c, shadow_ent *e, const vss_shadow *s, int save);
/* Deletes (provider remove) and drops every shadow copy of a session; persistent ones are kept
 * when keep_persistent. Takes coord.mu. */
void vss_coord_drop_shadows(coord *c, const char *sid, int keep_persistent);
/* Marks the session's shadow copies exposed (listed). Takes coord.mu. */
void vss_coord_expose_shadows(coord *c, const char *sid);
/* Deletes catalog entry i (provider remove) and drops it, without saving. Under coord.mu. */
void vss_coord_remove_shadow(coord *c, int i);
/* Writes the catalog to its file, durably; an error is logged and returned. Under coord.mu. */
int vss_coord_save_catalog(coord *c);
/* A catalog entry as JSON: the provider's record and the coordinator's fields. */
json_t *vss_coord_shadow_json(const shadow_ent *e);
/* At start: what a dead coordinator left. Persistent copies stay; the rest are deleted. */
void vss_coord_load_catalog(coord *c);

/* ---- session.c, for coordinator.c ---- */

/* Serves a requester connection whose first request is req (session.begin) until release or
 * disconnect. */
void vss_session_serve(coord *c, int fd, json_t *req);
/* A writer's connection ended: fails the sessions it is in. Under coord.mu. */
void vss_session_writer_gone(coord *c, wconn *w);
/* Sessions open now. Under coord.mu. */
int vss_session_count(coord *c);

#endif
