/* vfsfile: whole-file helpers the engine tests share. */
#pragma once

#include "base/vfs.h"

/* Copies the file at from to to, durably (om_write_file_durable): the copier of the
 * replication service in miniature. No assertion, so the crash harness can run it; returns 0
 * or the error of the read or the write. */
int tst_copy_file(om_vfs *v, const char *from, const char *to);
