/* The restore's laying pattern, alone (docs/design.md, "The end state without its logs,
 * measured"): SRC (a file, read through the page cache) copied to a new file in DIR in 8 MiB
 * chunks handed out in order to THREADS workers, each chunk `pread` into the worker's buffer and
 * written with one O_DIRECT `pwrite`, then `fdatasync`. MODE says what else is done:
 *
 *   write  the writes alone (the buffers are not read into: the device's own rate, from huge
 *          pages)
 *   read   the pread, then the write
 *   turn   the pread, the write, then the SHA-256 in chunk order, each worker in its turn (as
 *          the restore hashes a file today)
 *   lag    the pread and the write; the SHA-256 on a thread of its own behind them, from a ring of
 *          RING buffers, and the fdatasync started when the last write returns, so the hash's
 *          tail runs inside the flush
 *
 *     bench_laying MODE THREADS SRC DIR
 *
 * Environment: BENCH_LAYING_RING=N (lag's ring, 1-256 buffers; default 64), BENCH_LAYING_COLD=1
 * (lag's ring not touched before the clock starts: its page faults counted, as a restore's
 * first use of new memory would be), BENCH_LAYING_SMALL=1 (the buffers in 4 KiB pages instead of
 * huge pages: on this project's VMs a direct write from them is several times slower).
 *
 * Prints one line: seconds of the writes, of the fdatasync, when the hash ended, and in all. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/mem.h"

#define CHUNK       (8u << 20)
#define MAX_RING    256
#define MAX_THREADS 16

enum { M_WRITE, M_READ, M_TURN, M_LAG };

static int mode, src, out;
static size_t nchunks, next_chunk, turn, hashed;
static unsigned char *ring[MAX_RING];
static size_t nring = 64;
static unsigned char *written; /* lag: chunk i is written */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static EVP_MD_CTX *sha;
static double t_hash_end;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_laying: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* A chunk buffer in huge pages, as the restore's (base/mem.h); BENCH_LAYING_SMALL=1: in 4 KiB
 * pages (aligned_alloc), as the restore's were before 2026-12-07 and as this tool's were when
 * docs/design.md's earlier figures were taken. */
static unsigned char *buffer(void)
{
    const char *small = getenv("BENCH_LAYING_SMALL");
    if (small && !strcmp(small, "1")) return aligned_alloc(4096, CHUNK);
    return om_huge_reserve(CHUNK);
}

static void *worker(void *arg)
{
    unsigned char *own = arg;
    for (;;) {
        pthread_mutex_lock(&mu);
        size_t i = next_chunk++;
        while (mode == M_LAG && i < nchunks && i >= hashed + nring)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
        if (i >= nchunks) break;
        unsigned char *b = mode == M_LAG ? ring[i % nring] : own;
        if (mode != M_WRITE && pread(src, b, CHUNK, (off_t)i * CHUNK) != (ssize_t)CHUNK)
            die("reading the source");
        if (pwrite(out, b, CHUNK, (off_t)i * CHUNK) != (ssize_t)CHUNK) die("writing");
        pthread_mutex_lock(&mu);
        if (mode == M_TURN) {
            while (turn != i)
                pthread_cond_wait(&cv, &mu);
            pthread_mutex_unlock(&mu);
            EVP_DigestUpdate(sha, b, CHUNK);
            pthread_mutex_lock(&mu);
            turn++;
        }
        if (mode == M_LAG) written[i] = 1;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static void *hasher(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < nchunks; i++) {
        pthread_mutex_lock(&mu);
        while (!written[i])
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
        EVP_DigestUpdate(sha, ring[i % nring], CHUNK);
        pthread_mutex_lock(&mu);
        hashed = i + 1;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
    t_hash_end = now();
    return NULL;
}

int main(int argc, char **argv)
{
    const char *names[] = {"write", "read", "turn", "lag"};
    mode = -1;
    for (int m = 0; argc == 5 && m < 4; m++)
        if (!strcmp(argv[1], names[m])) mode = m;
    int threads = argc == 5 ? atoi(argv[2]) : 0;
    if (mode < 0 || threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "usage: bench_laying write|read|turn|lag THREADS(1-%d) SRC DIR\n",
                MAX_THREADS);
        return 2;
    }
    struct stat st;
    char path[4096];
    if ((src = open(argv[3], O_RDONLY | O_CLOEXEC)) < 0 || fstat(src, &st) != 0) die(argv[3]);
    nchunks = (size_t)st.st_size / CHUNK;
    if (!nchunks) {
        fprintf(stderr, "bench_laying: %s: smaller than one chunk of %u bytes\n", argv[3], CHUNK);
        return 2;
    }
    snprintf(path, sizeof path, "%s/bench_laying.%d.out", argv[4], (int)getpid());
    if ((out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0600)) < 0) die(path);
    unlink(path); /* gone when closed */
    if (!(sha = EVP_MD_CTX_new()) || EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1 ||
        !(written = calloc(nchunks, 1)))
        die("setting up");
    unsigned char *own[MAX_THREADS] = {0};
    const char *rn = getenv("BENCH_LAYING_RING"), *cold = getenv("BENCH_LAYING_COLD");
    if (rn) nring = (size_t)atoi(rn);
    if (nring < 1 || nring > MAX_RING) {
        fprintf(stderr, "bench_laying: BENCH_LAYING_RING=%s: not 1 to %d\n", rn, MAX_RING);
        return 2;
    }
    for (size_t i = 0; i < nring && mode == M_LAG; i++) {
        if (!(ring[i] = buffer())) die("allocating");
        if (!cold || strcmp(cold, "1")) memset(ring[i], 0x5a, CHUNK);
    }
    for (int i = 0; i < threads; i++) {
        if (!(own[i] = buffer())) die("allocating");
        memset(own[i], 0x5a, CHUNK);
    }
    pthread_t t[MAX_THREADS], h;
    double t0 = now();
    if (mode == M_LAG && pthread_create(&h, NULL, hasher, NULL)) die("starting the hasher");
    for (int i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, worker, own[i])) die("starting a worker");
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    double t1 = now();
    if (fdatasync(out) != 0) die("fdatasync");
    double t2 = now();
    if (mode == M_LAG) pthread_join(h, NULL);
    double t3 = now();
    if (mode == M_TURN) t_hash_end = t1;
    printf("%s, %d threads, ring %zu%s, %.0f MB: writes %.2f s, fdatasync %.2f s, hash done at "
           "%s%.2f s, "
           "in all %.2f s\n",
           names[mode], threads, mode == M_LAG ? nring : 0,
           mode == M_LAG && cold && !strcmp(cold, "1") ? " cold" : "",
           (double)nchunks * CHUNK / 1e6, t1 - t0, t2 - t1, mode >= M_TURN ? "" : "(none) ",
           mode >= M_TURN ? t_hash_end - t0 : 0.0, t3 - t0);
    close(out);
    close(src);
    return 0;
}
