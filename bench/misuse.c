/*
 * misuse - one misuse of the malloc family, for bench/misuse.sh, which
 * runs each under several allocators and counts those caught:
 *
 *     misuse KIND SIZE
 *
 * Before the misuse it makes 64 requests and frees them, as a program
 * has before its bug.  After the misuse it frees what it holds, then
 * prints "unnoticed" and exits 0: a misuse is caught when the program
 * stops before it can say so.  `misuse list` prints the kinds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile char sink;
static char *volatile held; /* a second block, freed at the end */

/* Each misuse gets a block of n bytes and does its harm; it frees what
 * it should have freed (the harm may be in the free). */
typedef void misuse_fn(char *p, size_t n);

static void over1(char *p, size_t n)
{
    p[n] = 1;
    free(p);
}
static void over32(char *p, size_t n)
{
    for (size_t i = 0; i < n + 32; i++)
        p[i] = 1;
    free(p);
}
static void over1m(char *p, size_t n)
{
    p[n + ((size_t)1 << 20)] = 1;
    free(p);
}
static void memcpy1(char *p, size_t n)
{
    char *src = calloc(1, n + 1);
    memcpy(p, src, n + 1);
    free(src);
    free(p);
}
static void memcpy32(char *p, size_t n)
{
    char *src = calloc(1, n + 32);
    memcpy(p, src, n + 32);
    free(src);
    free(p);
}
static void under1(char *p, size_t n)
{
    (void)n;
    p[-1] = 1;
    free(p);
}
static void under32(char *p, size_t n)
{
    (void)n;
    for (int i = 1; i <= 32; i++)
        p[-i] = 1;
    free(p);
}
static void under1m(char *p, size_t n)
{
    (void)n;
    p[-((intptr_t)1 << 20)] = 1;
    free(p);
}
static void read_over1(char *p, size_t n)
{
    sink = p[n];
    free(p);
}
static void read_over32(char *p, size_t n)
{
    sink = p[n + 31];
    free(p);
}
static void read_under1(char *p, size_t n)
{
    (void)n;
    sink = p[-1];
    free(p);
}
static void write_freed(char *p, size_t n)
{
    free(p);
    p[n / 2] = 1;
}
static void read_freed(char *p, size_t n)
{
    free(p);
    sink = p[n / 2];
}
static void memset_freed(char *p, size_t n)
{
    free(p);
    memset(p, 1, n);
}
static void double_free(char *p, size_t n)
{
    (void)n;
    free(p);
    free(p);
}

static void double_free_later(char *p, size_t n)
{
    free(p);
    for (int i = 0; i < 100; i++)
        free(malloc(n));
    free(p);
}

static void double_free_between(char *p, size_t n)
{
    char *q = malloc(n);
    free(p);
    free(q);
    free(p);
}

static void free_stack(char *p, size_t n)
{
    char local[64];
    (void)n;
    free(p);
    free(local + (sink & 1));
}

static void free_unaligned(char *p, size_t n)
{
    (void)n;
    free(p + 1);
}
static void free_inside(char *p, size_t n)
{
    free(p + n / 2 + 16);
}
static void free_far(char *p, size_t n)
{
    (void)n;
    free(p + ((size_t)1 << 24));
}

static void zero_write(char *p, size_t n)
{
    (void)n;
    free(p);
    char *z = malloc(0);
    z[0] = 1;
    free(z);
}

static void zero_read(char *p, size_t n)
{
    (void)n;
    free(p);
    char *z = malloc(0);
    sink = z[0];
    free(z);
}

static void stale_realloc(char *p, size_t n)
{
    char *q = realloc(p, 4 * n);
    p[1] = 1;
    free(q);
}

/* The freed block handed out again: a write through the old pointer. */
static void reused(char *p, size_t n)
{
    free(p);
    held = malloc(n);
    p[n / 2] = 1;
}

static const struct {
    const char *name;
    misuse_fn *fn;
} kinds[] = {
    {"overflow-1", over1},
    {"overflow-32", over32},
    {"overflow-1M", over1m},
    {"memcpy-overflow-1", memcpy1},
    {"memcpy-overflow-32", memcpy32},
    {"underflow-1", under1},
    {"underflow-32", under32},
    {"underflow-1M", under1m},
    {"read-overflow-1", read_over1},
    {"read-overflow-32", read_over32},
    {"read-underflow-1", read_under1},
    {"write-after-free", write_freed},
    {"read-after-free", read_freed},
    {"memset-after-free", memset_freed},
    {"double-free", double_free},
    {"double-free-later", double_free_later},
    {"double-free-between", double_free_between},
    {"free-stack", free_stack},
    {"free-unaligned", free_unaligned},
    {"free-inside", free_inside},
    {"free-far", free_far},
    {"zero-write", zero_write},
    {"zero-read", zero_read},
    {"stale-realloc", stale_realloc},
    {"reuse-after-free", reused},
};

/* A program that misuses a block has usually made many requests before:
 * make 64, so that no allocator serves the misused block as it serves a
 * program's first few. */
static void warm_up(void)
{
    void *v[64];
    for (int i = 0; i < 64; i++)
        v[i] = malloc((size_t)16 << (i % 8));
    for (int i = 0; i < 64; i++)
        free(v[i]);
}

int main(int argc, char **argv)
{
    size_t count = sizeof kinds / sizeof kinds[0];
    if (argc == 2 && strcmp(argv[1], "list") == 0) {
        for (size_t i = 0; i < count; i++)
            puts(kinds[i].name);
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: misuse KIND SIZE | misuse list\n");
        return 2;
    }
    size_t n = strtoul(argv[2], NULL, 10);
    for (size_t i = 0; i < count; i++)
        if (strcmp(argv[1], kinds[i].name) == 0) {
            warm_up();
            char *p = malloc(n);
            memset(p, 0, n);
            kinds[i].fn(p, n);
            free(held);
            puts("unnoticed");
            return 0;
        }
    fprintf(stderr, "misuse: no kind %s\n", argv[1]);
    return 2;
}
