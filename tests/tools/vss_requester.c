/* A requester process for the shadow copy system tests: one backup session through the
 * requester SDK (src/vss/requester.h), with pauses and aborts where the test asks.
 *
 *   vss_requester [--socket PATH] --type full|copy|incremental|differential
 *                 --component INSTANCE:FULLNAME... [--provider auto|held|reflink|btrfs|copy]
 *                 [--path DIR...] [--persistent] [--pause-at STEP] [--abort-at STEP]
 *                 [--fail-component INSTANCE:FULLNAME]...
 *
 * Steps, in order:
 *   gather    gather_metadata
 *   prepare   set_backup_state, add_component for each --component, prepare_backup
 *   snapshot  start_snapshot_set, add_path for each --path (default: the `paths` of the
 *             selected components and their subcomponents, from the metadata), do_snapshot_set
 *   complete  set_backup_succeeded (false for each --fail-component, else true),
 *             backup_complete, set_backup_stored for the succeeded components
 *   release   release
 * It reads nothing from the shadow copies: the test inspects them.
 *
 * Restore mode (--restore FILE) restores every component of a backup run's output in one
 * session. --restore-options may come once per component, in the order of the run's components
 * document (the last one given applies to the components after it). With --say-laid, once the
 * files are laid (after the post pause) it holds every target's progress file (vss/laid.h) and
 * says what stdin tells it while PostRestore runs: lines `say NAME GEN` (NAME: the target's
 * database name in PreRestore's answer); the holds go after PostRestore and EOF on stdin.
 *
 * --pause-at STEP prints `paused STEP <JSON of the last result>` (begin: {"session"}; gather:
 * {"writers"}; prepare: {"components"}; snapshot: the do_snapshot_set reply; complete:
 * {"components_document"}) and waits for a line on stdin (or EOF) before doing STEP.
 * --abort-at STEP calls abort instead of STEP, then release.
 *
 * At the end it prints one JSON object:
 *   {"ok":bool, "error":null|"<detail> (<num> <Name>)", "error_number":0|num,
 *    "aborted":null|STEP, "session", "set", "paths":[{"path","provider"}], "shadows":[...],
 *    "freeze_ms", "snapshot_ms", "components_document"}
 * ok is true when every step asked for succeeded (an abort asked for with --abort-at counts as
 * success). Exit 0 when ok; else 1, with one stderr line `vss_requester: <detail> (<num>
 * <Name>)`; 2 on a usage error. */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/logging.h"
#include "base/proto.h"
#include "base/vfs.h"
#include "vss/laid.h"
#include "vss/requester.h"

#define MAX_COMPONENTS 64
#define MAX_PATHS      64

typedef struct comp {
    char instance[64];
    const char *name;
} comp;

static const char *const steps[] = {"gather", "prepare", "snapshot", "complete", "release"};
enum { ST_GATHER, ST_PREPARE, ST_SNAPSHOT, ST_COMPLETE, ST_RELEASE, NSTEPS };

static struct {
    const char *socket, *type, *provider;
    comp comps[MAX_COMPONENTS], failed[MAX_COMPONENTS];
    int ncomps, nfailed;
    const char *paths[MAX_PATHS];
    int npaths, persistent, pause_at, abort_at;
    const char *restore; /* --restore FILE: a backup run's output */
    int additional, say_laid;
    const char *restore_options[MAX_COMPONENTS], *new_target; /* JSON */
    int nropts;
} o = {.provider = "auto", .pause_at = -1, .abort_at = -1};

static void usage(void)
{
    fprintf(stderr, "usage: vss_requester [--socket PATH] --type full|copy|incremental|"
                    "differential --component INSTANCE:FULLNAME... "
                    "[--provider auto|held|reflink|btrfs|copy] [--path DIR...] [--persistent] "
                    "[--pause-at STEP] [--abort-at STEP] [--fail-component INSTANCE:FULLNAME]\n"
                    "       vss_requester [--socket PATH] --restore FILE [--additional] "
                    "[--restore-options JSON]... [--new-target JSON] [--pause-at post] "
                    "[--say-laid]\n"
                    "steps: gather prepare snapshot complete release\n"
                    "FILE: the JSON a backup run printed (its metadata and components "
                    "document); every component of it is restored\n");
    exit(2);
}

static int step_of(const char *s)
{
    if (!strcmp(s, "post")) return ST_SNAPSHOT; /* restore mode: before post_restore */
    for (int i = 0; i < NSTEPS; i++)
        if (!strcmp(steps[i], s)) return i;
    usage();
    return -1;
}

static void parse_comp(comp *c, const char *arg)
{
    const char *colon = strchr(arg, ':');
    if (!colon || colon == arg || !colon[1] || (size_t)(colon - arg) >= sizeof c->instance) usage();
    memcpy(c->instance, arg, (size_t)(colon - arg));
    c->instance[colon - arg] = 0;
    c->name = colon + 1;
}

static void parse(int argc, char **argv)
{
    static const struct option opts[] = {{"socket", required_argument, 0, 'S'},
                                         {"type", required_argument, 0, 't'},
                                         {"component", required_argument, 0, 'c'},
                                         {"provider", required_argument, 0, 'p'},
                                         {"path", required_argument, 0, 'P'},
                                         {"persistent", no_argument, 0, 'k'},
                                         {"pause-at", required_argument, 0, 'z'},
                                         {"abort-at", required_argument, 0, 'a'},
                                         {"fail-component", required_argument, 0, 'f'},
                                         {"restore", required_argument, 0, 'r'},
                                         {"additional", no_argument, 0, 'A'},
                                         {"restore-options", required_argument, 0, 'O'},
                                         {"new-target", required_argument, 0, 'T'},
                                         {"say-laid", no_argument, 0, 'L'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'S':
            o.socket = optarg;
            break;
        case 't':
            o.type = optarg;
            break;
        case 'c':
            if (o.ncomps >= MAX_COMPONENTS) usage();
            parse_comp(&o.comps[o.ncomps++], optarg);
            break;
        case 'p':
            o.provider = optarg;
            break;
        case 'P':
            if (o.npaths >= MAX_PATHS) usage();
            o.paths[o.npaths++] = optarg;
            break;
        case 'k':
            o.persistent = 1;
            break;
        case 'z':
            o.pause_at = step_of(optarg);
            break;
        case 'a':
            o.abort_at = step_of(optarg);
            break;
        case 'r':
            o.restore = optarg;
            break;
        case 'A':
            o.additional = 1;
            break;
        case 'O':
            if (o.nropts >= MAX_COMPONENTS) usage();
            o.restore_options[o.nropts++] = optarg;
            break;
        case 'L':
            o.say_laid = 1;
            break;
        case 'T':
            o.new_target = optarg;
            break;
        case 'f':
            if (o.nfailed >= MAX_COMPONENTS) usage();
            parse_comp(&o.failed[o.nfailed++], optarg);
            break;
        default:
            usage();
        }
    }
    if (optind != argc || (!o.restore && (!o.type || !o.ncomps))) usage();
}

/* "logical_path\name", or name alone at the top. */
static void full_name(json_t *c, char *out, size_t n)
{
    const char *lp = om_json_str_or(c, "logical_path", "");
    const char *name = om_json_str_or(c, "name", "");
    snprintf(out, n, "%s%s%s", lp, *lp ? "\\" : "", name);
}

/* a is b or a directory above it. */
static int covers(const char *a, const char *b)
{
    size_t l = strlen(a);
    return !strncmp(a, b, l) && (b[l] == 0 || b[l] == '/' || (l == 1 && a[0] == '/'));
}

/* Adds a path unless one already there covers it; drops those it covers (a shadow copy of a
 * directory holds everything under it, and the coordinator refuses overlapping paths). */
static void add_unique(json_t *arr, json_t *s)
{
    const char *p = json_string_value(s);
    for (size_t i = json_array_size(arr); i-- > 0;) {
        const char *q = json_string_value(json_array_get(arr, i));
        if (covers(q, p)) return;
        if (covers(p, q)) json_array_remove(arr, i);
    }
    json_array_append(arr, s);
}

/* The `paths` of the selected components and of their subcomponents. */
static json_t *default_paths(json_t *writers)
{
    json_t *paths = json_array();
    for (int k = 0; k < o.ncomps; k++) {
        const comp *sel = &o.comps[k];
        size_t len = strlen(sel->name), i, j, m;
        json_t *w, *c, *p;
        json_array_foreach(writers, i, w)
        {
            if (strcmp(om_json_str_or(w, "instance_id", ""), sel->instance)) continue;
            json_t *cs = json_object_get(json_object_get(w, "metadata"), "components");
            json_array_foreach(cs, j, c)
            {
                char fn[2048];
                full_name(c, fn, sizeof fn);
                const char *lp = om_json_str_or(c, "logical_path", "");
                int sub = !strncmp(lp, sel->name, len) && (lp[len] == 0 || lp[len] == '\\');
                if (strcmp(fn, sel->name) && !sub) continue;
                json_array_foreach(json_object_get(c, "paths"), m, p) add_unique(paths, p);
            }
        }
    }
    return paths;
}

static int failed_component(const comp *c)
{
    for (int i = 0; i < o.nfailed; i++)
        if (!strcmp(o.failed[i].instance, c->instance) && !strcmp(o.failed[i].name, c->name))
            return 1;
    return 0;
}

/* Before a step: the pause the test asked for. */
static void maybe_pause(int step, json_t *last)
{
    if (o.pause_at != step) return;
    char *s = json_dumps(last, JSON_COMPACT);
    printf("paused %s %s\n", steps[step], s ? s : "null");
    fflush(stdout);
    free(s);
    char line[256];
    if (!fgets(line, sizeof line, stdin)) clearerr(stdin);
}

/* --say-laid: the progress files held, by target name. */
typedef struct held_laid {
    char name[256];
    vss_laid *l;
} held_laid;

static held_laid laids[MAX_COMPONENTS];
static int nlaids;

/* Holds the progress file of every target of PreRestore's answer. */
static int hold_laids(json_t *targets, const char *session)
{
    const char *k;
    json_t *t;
    json_object_foreach(targets, k, t)
    {
        if (nlaids == MAX_COMPONENTS) break;
        held_laid *h = &laids[nlaids];
        snprintf(h->name, sizeof h->name, "%s", om_json_str_or(t, "name", ""));
        int rc = vss_laid_hold(om_vfs_posix(), om_json_str_or(t, "progress", ""), session, &h->l);
        if (rc) return rc;
        nlaids++;
    }
    return 0;
}

/* Reads `say NAME GEN` lines from stdin until EOF (while PostRestore runs). */
static void *say_from_stdin(void *arg)
{
    (void)arg;
    char line[512], name[256];
    unsigned gen;
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "say %255s %u", name, &gen) != 2) continue;
        int said = 0;
        for (int i = 0; i < nlaids; i++)
            if (!strcmp(laids[i].name, name)) said = !vss_laid_say(laids[i].l, gen);
        fprintf(stderr, "vss_requester: %s %s %u\n", said ? "said" : "could not say", name, gen);
    }
    return NULL;
}

/* The restore options of component i (--restore-options, the last one given for the rest). */
static json_t *restore_options_of(int i, json_error_t *je)
{
    if (!o.nropts) return json_pack("{s:s}", "from", o.restore);
    return json_loads(o.restore_options[i < o.nropts ? i : o.nropts - 1], 0, je);
}

/* A restore of every component of a backup run's output: load_documents, add_restore_component,
 * pre_restore, post_restore, release. */
static int restore_main(void)
{
    json_error_t je;
    json_t *run = json_load_file(o.restore, 0, &je), *md = json_array(), *w;
    json_t *doc = json_object_get(run, "components_document");
    if (!run || !json_is_object(doc)) {
        fprintf(stderr, "vss_requester: %s: no components_document (%s)\n", o.restore, je.text);
        return 2;
    }
    size_t i;
    json_array_foreach(json_object_get(run, "writers"), i, w) if (json_object_get(w, "metadata"))
        json_array_append_new(md, json_pack("{s:O, s:O}", "instance_id",
                                            json_object_get(w, "instance_id"), "metadata",
                                            json_object_get(w, "metadata")));
    vss_req *r = NULL;
    int rc = vss_req_begin(o.socket, VSS_SESSION_RESTORE, &r);
    if (!rc) rc = vss_req_load_documents(r, md, doc);
    json_t *c;
    json_t *nt = o.new_target ? json_loads(o.new_target, 0, &je) : NULL;
    if (o.new_target && !nt) {
        fprintf(stderr, "vss_requester: bad JSON in --new-target: %s\n", je.text);
        return 2;
    }
    json_array_foreach(json_object_get(doc, "components"), i, c)
    {
        if (rc) break;
        json_t *opts = restore_options_of((int)i, &je);
        if (!opts) {
            fprintf(stderr, "vss_requester: bad JSON in --restore-options: %s\n", je.text);
            return 2;
        }
        rc = vss_req_add_restore_component(r, json_string_value(json_object_get(c, "instance_id")),
                                           json_string_value(json_object_get(c, "component")), opts,
                                           nt);
        json_decref(opts);
    }
    json_decref(nt);
    if (!rc && o.additional) rc = vss_req_set_additional_restores(r, 1);
    json_t *targets = NULL, *done = NULL;
    if (!rc) rc = vss_req_pre_restore(r, &targets);
    if (!rc && o.pause_at == ST_SNAPSHOT) { /* --pause-at post: the files are laid down now */
        char *t = json_dumps(targets, JSON_COMPACT);
        printf("paused post %s\n", t ? t : "null");
        fflush(stdout);
        free(t);
        char line[256];
        if (!fgets(line, sizeof line, stdin)) clearerr(stdin);
    }
    pthread_t sayer;
    int saying = 0;
    if (!rc && o.say_laid && !(rc = hold_laids(targets, vss_req_session(r))) &&
        !(saying = !pthread_create(&sayer, NULL, say_from_stdin, NULL)))
        rc = om_errf(OM_E_OutOfMemory, "no thread to read stdin");
    if (!rc) rc = vss_req_post_restore(r, &done);
    char detail[1024];
    snprintf(detail, sizeof detail, "%s", om_err_detail());
    if (saying) pthread_join(sayer, NULL);
    for (int k = 0; k < nlaids; k++)
        vss_laid_release(laids[k].l);
    if (r) vss_req_release(r);
    json_decref(md);
    json_decref(run);
    json_t *outj = json_pack("{s:b, s:O, s:O}", "ok", rc == 0, "pre",
                             targets ? targets : json_null(), "post", done ? done : json_null());
    char *os = json_dumps(outj, JSON_COMPACT);
    puts(os ? os : "{}");
    free(os);
    json_decref(outj);
    json_decref(targets);
    json_decref(done);
    if (rc) fprintf(stderr, "vss_requester: %s (%d %s)\n", detail, rc, om_err_name(rc));
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    om_log_init("vss_requester");
    parse(argc, argv);
    if (o.restore) return restore_main();
    json_t *out = json_pack("{s:b, s:n, s:i, s:n, s:n, s:n, s:[], s:[], s:n, s:n, s:n}", "ok", 0,
                            "error", "error_number", 0, "aborted", "session", "set", "paths",
                            "shadows", "freeze_ms", "snapshot_ms", "components_document");
    json_t *last = NULL, *writers = NULL, *res = NULL, *paths = NULL;
    vss_req *r = NULL;
    int rc = vss_req_begin(o.socket, VSS_SESSION_BACKUP, &r);
    int step = -1;
    if (rc) goto done;
    json_object_set_new(out, "session", json_string(vss_req_session(r)));
    last = json_pack("{s:s}", "session", vss_req_session(r));

    for (step = 0; step < NSTEPS; step++) {
        maybe_pause(step, last);
        if (o.abort_at == step) {
            rc = vss_req_abort(r);
            if (!rc) json_object_set_new(out, "aborted", json_string(steps[step]));
            break;
        }
        json_t *next = NULL;
        switch (step) {
        case ST_GATHER:
            rc = vss_req_gather_metadata(r, &writers);
            if (!rc) next = json_pack("{s:O}", "writers", writers);
            if (!rc) json_object_set(out, "writers", writers);
            break;
        case ST_PREPARE: {
            json_t *names = json_array();
            rc = vss_req_set_backup_state(r, o.type);
            for (int i = 0; !rc && i < o.ncomps; i++) {
                rc = vss_req_add_component(r, o.comps[i].instance, o.comps[i].name);
                json_array_append_new(names, json_string(o.comps[i].name));
            }
            if (!rc) rc = vss_req_prepare_backup(r);
            next = json_pack("{s:o}", "components", names);
            break;
        }
        case ST_SNAPSHOT: {
            char set[37];
            rc = vss_req_start_snapshot_set(r, o.persistent, set);
            if (rc) break;
            json_object_set_new(out, "set", json_string(set));
            if (o.npaths) {
                paths = json_array();
                for (int i = 0; i < o.npaths; i++)
                    json_array_append_new(paths, json_string(o.paths[i]));
            } else {
                paths = default_paths(writers);
            }
            size_t i;
            json_t *p;
            json_array_foreach(paths, i, p)
            {
                char chosen[64];
                rc = vss_req_add_path(r, json_string_value(p), o.provider, chosen, sizeof chosen);
                if (rc) break;
                json_array_append_new(json_object_get(out, "paths"),
                                      json_pack("{s:O, s:s}", "path", p, "provider", chosen));
            }
            if (!rc) rc = vss_req_do_snapshot_set(r, &res);
            if (!rc) {
                const char *keys[] = {"shadows", "freeze_ms", "snapshot_ms", "components_document"};
                for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
                    if (json_object_get(res, keys[k]))
                        json_object_set(out, keys[k], json_object_get(res, keys[k]));
                next = json_incref(res);
            }
            break;
        }
        case ST_COMPLETE: {
            for (int i = 0; !rc && i < o.ncomps; i++)
                rc = vss_req_set_backup_succeeded(r, o.comps[i].instance, o.comps[i].name,
                                                  !failed_component(&o.comps[i]));
            json_t *doc = NULL;
            if (!rc) rc = vss_req_backup_complete(r, &doc);
            /* The succeeded components count as stored: their writers may truncate. */
            for (int i = 0; !rc && i < o.ncomps; i++)
                if (!failed_component(&o.comps[i]))
                    rc = vss_req_set_backup_stored(r, o.comps[i].instance, o.comps[i].name);
            if (!rc) {
                json_object_set(out, "components_document", doc);
                next = json_pack("{s:o}", "components_document", doc);
            }
            break;
        }
        case ST_RELEASE:
            rc = vss_req_release(r);
            r = NULL;
            break;
        }
        if (next) {
            json_decref(last);
            last = next;
        }
        if (rc) break;
    }

done:;
    char detail[1024] = "";
    if (rc) snprintf(detail, sizeof detail, "%s", om_err_detail());
    if (r) { /* failed or aborted before the release step: close the session anyway */
        int rrc = vss_req_release(r);
        if (!rc && rrc) {
            rc = rrc;
            snprintf(detail, sizeof detail, "%s", om_err_detail());
        }
    }
    json_object_set_new(out, "ok", json_boolean(rc == 0));
    if (rc) {
        char e[1200];
        snprintf(e, sizeof e, "%s (%d %s)", detail, rc, om_err_name(rc));
        json_object_set_new(out, "error", json_string(e));
        json_object_set_new(out, "error_number", json_integer(rc));
        json_object_set_new(out, "failed_step",
                            json_string(step >= 0 && step < NSTEPS ? steps[step] : "begin"));
    }
    char *s = json_dumps(out, JSON_COMPACT);
    puts(s ? s : "{}");
    fflush(stdout);
    free(s);
    if (rc) fprintf(stderr, "vss_requester: %s (%d %s)\n", detail, rc, om_err_name(rc));
    json_decref(out);
    json_decref(last);
    json_decref(writers);
    json_decref(res);
    json_decref(paths);
    return rc ? 1 : 0;
}
