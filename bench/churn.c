/*
 * bench/churn.c - a long-lived cache's memory, phase by phase (run by
 * bench/churn.sh under each allocator).
 *
 *     churn [VALUES]
 *
 * Models a server that caches values: it loads VALUES values (default
 * 300000) of 64 B to 4 KiB, deletes 70% of them at random, loads VALUES / 3
 * values of 256 B to 16 KiB (sizes the freed memory was not cut for),
 * then frees everything.  Sizes are log-uniform (small values are the
 * common ones), and each value's bytes are written, as a cache's are.
 * After each phase it prints one line:
 *
 *     PHASE held BYTES rss BYTES
 *
 * BYTES held: the sum of the sizes asked for and not freed; rss: the
 * process's resident memory (/proc/self/statm).  The random numbers come
 * from a fixed seed, so every allocator sees the same requests.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t seed = 0x9E3779B97F4A7C15u;

static uint64_t next(void)
{
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return seed;
}

/* A size from lo to hi bytes, log-uniform. */
static size_t size_between(double lo, double hi)
{
    double u = (double)(next() >> 11) / 9007199254740992.0;
    return (size_t)(lo * pow(hi / lo, u));
}

static long rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = -1;
    if (f)
        fclose(f);
    return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

static void report(const char *phase, size_t held)
{
    printf("%s held %zu rss %ld\n", phase, held, rss_bytes());
    fflush(stdout);
}

struct value {
    char *p;
    size_t n;
};

static size_t load(struct value *v, size_t from, size_t to, double lo, double hi)
{
    size_t held = 0;
    for (size_t i = from; i < to; i++) {
        v[i].n = size_between(lo, hi);
        v[i].p = malloc(v[i].n);
        if (!v[i].p) {
            fprintf(stderr, "churn: out of memory\n");
            exit(1);
        }
        memset(v[i].p, (int)(i & 0xff), v[i].n);
        held += v[i].n;
    }
    return held;
}

int main(int argc, char **argv)
{
    size_t values = argc > 1 ? strtoul(argv[1], NULL, 10) : 300000;
    if (values < 3) {
        fprintf(stderr, "usage: churn [VALUES] (at least 3)\n");
        return 2;
    }
    size_t total = values + values / 3;
    struct value *v = calloc(total, sizeof *v);
    if (!v) {
        fprintf(stderr, "churn: out of memory\n");
        return 1;
    }
    size_t held = load(v, 0, values, 64, 4096);
    report("load", held);
    for (size_t i = 0; i < values; i++) {
        if (next() % 10 < 7) {
            held -= v[i].n;
            free(v[i].p);
            v[i].p = NULL;
        }
    }
    report("delete", held);
    held += load(v, values, total, 256, 16384);
    report("reload", held);
    for (size_t i = 0; i < total; i++)
        free(v[i].p);
    report("free", 0);
    free(v);
    return 0;
}
