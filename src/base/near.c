/* "Did you mean" (near.h): one distance and one bound for every name a person may mistype. */
#include "base/near.h"

#include <ctype.h>
#include <string.h>

#define NEAR_MAX 64 /* longer words are not compared: no name of ours is that long */

/* Optimal string alignment distance (Damerau-Levenshtein without repeated edits of a
 * substring): insertions, deletions, substitutions and swaps of two neighbours cost 1 each;
 * letters compared without case ("Mail1" is one typo from nothing). */
static int osa_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    int d[NEAR_MAX + 1][NEAR_MAX + 1];
    for (size_t i = 0; i <= n; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            int cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            int v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v) v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 &&
                tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == tolower((unsigned char)b[j - 1]) &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[n][m];
}

void om_near_init(om_near *n, const char *word)
{
    n->word = word;
    n->best = NULL;
    n->dist = 0;
}

void om_near_try(om_near *n, const char *cand)
{
    size_t wl = strlen(n->word), cl = strlen(cand);
    if (!wl || !cl || wl > NEAR_MAX || cl > NEAR_MAX) return;
    /* A third of the word, at least one and at most three edits: "backpu" finds "backup", "db"
     * does not find "dag". And never more edits than the candidate has letters. */
    int bound = (int)(wl / 3);
    if (bound < 1) bound = 1;
    if (bound > 3) bound = 3;
    int d = osa_distance(n->word, cand);
    if (d == 0 || d > bound || d >= (int)cl) return;
    if (!n->best || d < n->dist) { /* the first of equals wins: the tables' order */
        n->best = cand;
        n->dist = d;
    }
}

const char *om_near_best(const om_near *n)
{
    return n->best;
}
