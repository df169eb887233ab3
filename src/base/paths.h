/* Where Ombra keeps its sockets and data (ARCHITECTURE.md, Processes):
 * runtime: $OMBRA_RUNTIME_DIR, else the configuration's [ombra] runtime-dir, else /run/ombra
 *          for root, else $XDG_RUNTIME_DIR/ombra (else /tmp/ombra-UID);
 * data:    $OMBRA_HOME, else [ombra] data-dir, else /var/lib/ombra for root, else
 *          ~/.local/share/ombra. */
#ifndef OM_BASE_PATHS_H
#define OM_BASE_PATHS_H

#include <stddef.h>
#include <sys/types.h>

int om_runtime_dir(char *out, size_t len);
/* What a daemon does with its runtime directory before listening in it: creates it (missing
 * parents with om_mkdirs) with mode 0700, or 0750 and group `group` when that is not the
 * daemon's own group; an existing one must be a directory (or a link to one) owned by the
 * daemon's user and not writable by group or others, else FileAccessDenied naming the owner or
 * mode, with a HINT: another user who could write there could replace the daemon's socket
 * (/tmp/ombra-UID is anybody's to create first). An existing directory's mode is left as is. */
int om_runtime_dir_make(const char *dir, gid_t group);
int om_data_dir(char *out, size_t len);
/* Creates dir and its missing parents (mode 0750): a configured path, so links on the way
 * (and at dir itself) are followed; what it makes it makes by name in the folder above. */
int om_mkdirs(const char *dir);

#endif
