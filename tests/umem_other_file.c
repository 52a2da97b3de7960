/* The second file of tests/test_umem_files: the same heaps, used from
 * another translation unit. */
#include "../umem.h"

void *other_alloc(umem_t *h, size_t n);
void other_free(umem_t *h, void *p);
void other_destroy(umem_t *h);

void *other_alloc(umem_t *h, size_t n)
{
    return umem_alloc(h, n);
}

void other_free(umem_t *h, void *p)
{
    umem_free(h, p);
}

void other_destroy(umem_t *h)
{
    umem_destroy(h);
}
