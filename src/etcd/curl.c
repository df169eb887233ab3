/* libcurl, loaded at the first etcd_open rather than linked (docs/design.md, "libcurl on
 * demand"): only a server or a command that talks to a DAG's etcd maps it and the two dozen
 * libraries it pulls in; every other run of ombra, ombra-store and ombra-repld starts without.
 *
 * The library is opened once, by name (its soname), and never closed: the table etcd_curl is
 * written under load_mu before the first etcd_open returns and only read afterwards, by
 * threads that got an etcd handle from that etcd_open. A failed load leaves the table empty
 * and is tried again by the next etcd_open. */
#include "etcd/etcd_internal.h"

#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

#include "base/error.h"

/* What the code is written against: CURLOPT_PROTOCOLS_STR came with 7.85.0, and an older
 * library would ignore it (setopt fails, unchecked) and let a redirect reach other schemes. */
#define CURL_MIN_VERSION      0x075500
#define CURL_MIN_VERSION_TEXT "7.85.0"

etcd_curl_api etcd_curl;

static pthread_mutex_t load_mu = PTHREAD_MUTEX_INITIALIZER;
static int loaded;
static const char *soname = ETCD_CURL_SONAME;

static const struct {
    const char *name;
    size_t off;
} fns[] = {
#define ETCD_CURL_SYM(n) {"curl_" #n, offsetof(etcd_curl_api, n)},
    ETCD_CURL_FNS(ETCD_CURL_SYM)
#undef ETCD_CURL_SYM
};

/* dlsym returns an object pointer; POSIX guarantees it converts to the function's pointer. */
_Static_assert(sizeof(void *) == sizeof(void (*)(void)), "function pointers of another size");

static int load(void)
{
    void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return om_errf(OM_E_FileNotFound,
                       "the etcd client cannot load %s (%s). HINT: install the libcurl4 package "
                       "(apt-get install libcurl4)",
                       soname, dlerror());
    etcd_curl_api api;
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        void *f = dlsym(h, fns[i].name);
        if (!f) {
            dlclose(h);
            return om_errf(OM_E_FileNotFound,
                           "the etcd client loaded %s, and it has no %s: it is older than "
                           "libcurl " CURL_MIN_VERSION_TEXT ". HINT: upgrade the libcurl4 package",
                           soname, fns[i].name);
        }
        memcpy((char *)&api + fns[i].off, &f, sizeof f);
    }
    const curl_version_info_data *v = api.version_info(CURLVERSION_NOW);
    if (!v || v->version_num < CURL_MIN_VERSION) {
        int rc = om_errf(OM_E_FileNotFound,
                         "the etcd client loaded %s, libcurl %s, and needs " CURL_MIN_VERSION_TEXT
                         " or newer. HINT: upgrade the libcurl4 package",
                         soname, v ? v->version : "of an unknown version");
        dlclose(h);
        return rc;
    }
    /* Not thread-safe in libcurl before 7.84: here under load_mu, once per process. */
    CURLcode cr = api.global_init(CURL_GLOBAL_DEFAULT);
    if (cr != CURLE_OK) /* left mapped: the next etcd_open tries again */
        return om_errf(OM_E_Internal, "the etcd client: curl_global_init failed: %s",
                       api.easy_strerror(cr));
    etcd_curl = api;
    return 0;
}

int etcd_curl_load(void)
{
    pthread_mutex_lock(&load_mu);
    int rc = loaded ? 0 : load();
    if (!rc) loaded = 1;
    pthread_mutex_unlock(&load_mu);
    return rc;
}

void etcd_curl_test_soname(const char *name)
{
    pthread_mutex_lock(&load_mu);
    soname = name ? name : ETCD_CURL_SONAME;
    pthread_mutex_unlock(&load_mu);
}
