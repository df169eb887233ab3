/* vfsfile: whole-file helpers the engine tests share. */
#include "vfsfile.h"

#include <stdlib.h>

int tst_copy_file(om_vfs *v, const char *from, const char *to)
{
    uint8_t *data = NULL;
    size_t n = 0;
    int rc = om_read_file(v, from, &data, &n);
    if (!rc) rc = om_write_file_durable(v, to, data, n);
    free(data);
    return rc;
}
