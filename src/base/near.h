/* "Did you mean": the closest of some candidates to a mistyped word, by edit distance (optimal
 * string alignment: insertions, deletions, substitutions and a swap of two neighbours cost 1;
 * case ignored) within a third of the word's length (1 to 3 edits), never as many edits as the
 * candidate has letters; NULL when none is that close; the first of equals wins. One rule for
 * the command line's groups, commands, options and databases (src/cli/cli_suggest.c, ombra.c)
 * and the configuration file's keys (config.c), so a typo is forgiven the same way everywhere.
 *   om_near n; om_near_init(&n, typed); for (...) om_near_try(&n, name); om_near_best(&n)
 * word and the candidates are borrowed until the end. */
#ifndef OM_BASE_NEAR_H
#define OM_BASE_NEAR_H

typedef struct om_near {
    const char *word, *best;
    int dist;
} om_near;

void om_near_init(om_near *n, const char *word);
void om_near_try(om_near *n, const char *cand);
const char *om_near_best(const om_near *n);

#endif
