/* Where Ombra keeps its sockets and data (ARCHITECTURE.md, Processes):
 * runtime: $OMBRA_RUNTIME_DIR, else /run/ombra for root, else $XDG_RUNTIME_DIR/ombra
 *          (else /tmp/ombra-UID);
 * data:    $OMBRA_HOME, else /var/lib/ombra for root, else ~/.local/share/ombra. */
#ifndef OM_BASE_PATHS_H
#define OM_BASE_PATHS_H

#include <stddef.h>

int om_runtime_dir(char *out, size_t len);
int om_data_dir(char *out, size_t len);
/* Creates dir and its missing parents (mode 0750): a configured path, so links on the way
 * (and at dir itself) are followed; what it makes it makes by name in the folder above. */
int om_mkdirs(const char *dir);

#endif
