/* ombra vss: what the shadow copy service knows (vssadmin): writers with their state and last
 * failure, providers, shadow copies; and deleting persistent shadow copies. */
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "base/time.h"
#include "cli/cli.h"

static json_t *call(const char *op)
{
    json_t *rep = NULL;
    if (cli_vss_call(json_pack("{s:s}", "op", op), &rep) != CLI_OK) return NULL;
    return rep;
}

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* --json: {"<key>": [...]} (a document is an object, docs/cli.md). */
static int print_list(const char *key, json_t *list)
{
    json_t *o = json_pack("{s:O?}", key, list);
    int rc = cli_print_json(o);
    json_decref(o);
    return rc;
}

static int cmd_writers(const cli_args *a)
{
    json_t *rep = call("writers");
    if (!rep) return CLI_FAIL;
    json_t *ws = json_object_get(rep, "writers");
    int rc = CLI_OK;
    if (cli_flag(a, "json"))
        rc = print_list("writers", ws);
    else {
        size_t i;
        json_t *w;
        if (!json_array_size(ws)) printf("no writers registered\n");
        json_array_foreach(ws, i, w)
        {
            printf("writer name: '%s'\n", str(w, "name"));
            printf("   writer id: %s\n", str(w, "class_id"));
            printf("   writer instance id: %s\n", str(w, "instance_id"));
            printf("   pid: %d%s\n", (int)json_integer_value(json_object_get(w, "pid")),
                   json_is_true(json_object_get(w, "can_hold")) ? ", can hold its files" : "");
            printf("   state: %s\n", str(w, "state"));
            printf("   last error: %s%s%s%s\n",
                   *str(w, "last_error") ? str(w, "last_error") : "no error",
                   *str(w, "failure") ? " (" : "", str(w, "failure"),
                   *str(w, "failure") ? ")" : "");
        }
    }
    json_decref(rep);
    return rc;
}

static int cmd_providers(const cli_args *a)
{
    json_t *rep = call("providers");
    if (!rep) return CLI_FAIL;
    json_t *ps = json_object_get(rep, "providers");
    int rc = CLI_OK;
    if (cli_flag(a, "json"))
        rc = print_list("providers", ps);
    else {
        size_t i;
        json_t *p;
        json_array_foreach(ps, i, p) printf("%-8s %s\n", str(p, "name"),
                                            json_is_true(json_object_get(p, "supports_shadow_dir"))
                                                ? "usable for the shadow directory's filesystem"
                                                : str(p, "note"));
    }
    json_decref(rep);
    return rc;
}

static int cmd_shadows(const cli_args *a)
{
    json_t *rep = call("shadows");
    if (!rep) return CLI_FAIL;
    json_t *ss = json_object_get(rep, "shadows");
    int rc = CLI_OK;
    if (cli_flag(a, "json"))
        rc = print_list("shadows", ss);
    else {
        size_t i;
        json_t *s;
        if (!json_array_size(ss)) printf("no shadow copies\n");
        json_array_foreach(ss, i, s)
        {
            printf("shadow copy %s (set %s)\n", str(s, "id"), str(s, "set_id"));
            printf("   provider: %s%s%s\n", str(s, "provider"),
                   json_is_true(json_object_get(s, "persistent")) ? ", persistent" : "",
                   json_is_true(json_object_get(s, "valid"))
                       ? ""
                       : ", INVALID (its writer's hold ended)");
            char t[40];
            printf("   created:  %s (%lld files, %.1f MB)\n",
                   om_time_str((uint64_t)json_integer_value(json_object_get(s, "created_ns")), t,
                               sizeof t),
                   (long long)json_integer_value(json_object_get(s, "files")),
                   (double)json_integer_value(json_object_get(s, "bytes")) / 1e6);
            printf("   original: %s\n", str(s, "original"));
            printf("   exposed:  %s\n", str(s, "exposed"));
            printf("   session:  %s\n",
                   *str(s, "session") ? str(s, "session") : "(none: persistent)");
        }
    }
    json_decref(rep);
    return rc;
}

static int cmd_delete(const cli_args *a)
{
    const char *id = cli_val(a, "id"), *set = cli_val(a, "set");
    if (!!id == !!set) return cli_usage(a, "give either --id or --set");
    json_t *rep = NULL;
    if (cli_vss_call(
            json_pack("{s:s, s:s}", "op", "shadow.delete", id ? "id" : "set", id ? id : set),
            &rep) != CLI_OK)
        return CLI_FAIL;
    json_int_t n = json_integer_value(json_object_get(rep, "deleted"));
    json_decref(rep);
    if (cli_flag(a, "json")) { /* what was asked (the other null) and how many went */
        json_t *o = json_pack("{s:s?,s:s?,s:I}", "id", id, "set", set, "deleted", n);
        int rc = cli_print_json(o);
        json_decref(o);
        return rc;
    }
    printf("%d shadow cop%s deleted\n", (int)n, n == 1 ? "y" : "ies");
    return CLI_OK;
}

static const cli_opt json_only[] = {{"json", NULL, "print JSON", 0}, {0}};
static const cli_opt delete_opts[] = {
    {"id", "ID", "the shadow copy", 0},
    {"set", "SET", "every shadow copy of a set", 0},
    {"json", NULL, "print JSON: {\"id\", \"set\" (the one asked, the other null), \"deleted\"}", 0},
    {0}};

static const cli_cmd vss_cmds[] = {
    {"writers", "", json_only, "registered writers: state and last failure (vssadmin list writers)",
     NULL, cmd_writers},
    {"providers", "", json_only, "shadow copy providers (vssadmin list providers)", NULL,
     cmd_providers},
    {"shadows", "", json_only,
     "shadow copies: set, provider, original and exposed paths, session (vssadmin list shadows)",
     NULL, cmd_shadows},
    {"delete-shadows", "", delete_opts, "delete persistent shadow copies (vssadmin delete shadows)",
     "Shadow copies of a running session belong to it and are refused.", cmd_delete},
    {0},
};

const cli_group cli_vss_group = {
    "vss", "the shadow copy service: writers, providers, shadow copies", vss_cmds};
