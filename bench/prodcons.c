/*
 * prodcons - producers allocate and fill messages, consumers check and
 * free them: every free is of a block another thread allocated.
 *
 *   prodcons THREADS [MESSAGES]
 *
 * THREADS producers and as many consumers, in pairs joined by a bounded
 * queue of QUEUE_SLOTS messages.  MESSAGES (default 10,000,000) is the
 * total, split evenly across the producers.  A message is 16 to 512
 * bytes (one in 256 up to 16 KiB): a header, then 8-byte words that follow
 * from the header, each checked by the consumer.  Producers hand messages over
 * in batches of BATCH, so the queue's lock is taken once per batch and
 * the allocator, not the queue, sets the pace.  Only malloc and free are
 * called, so any allocator can be preloaded.  stdout gets one line: a
 * checksum of every message, the same under every allocator for the same
 * arguments.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench.h"

enum { QUEUE_SLOTS = 1024, BATCH = 32, MAX_THREADS = 256 };

struct message {
    uint64_t seq;
    uint32_t size; /* of the whole message, header included */
    uint32_t producer;
    uint64_t body[];
};

/* A ring of message pointers shared by one producer and one consumer;
 * every field is read and written under lock.  A NULL message ends it. */
struct queue {
    pthread_mutex_t lock;
    pthread_cond_t not_empty;
    pthread_cond_t not_full;
    size_t head, count;
    struct message *slot[QUEUE_SLOTS];
};

struct pair {
    pthread_t producer, consumer;
    unsigned index;
    unsigned long messages;
    struct queue queue;
    uint64_t checksum; /* written by the consumer */
    uint64_t received; /* written by the consumer */
};

static void fail(const char *what)
{
    fprintf(stderr, "prodcons: %s\n", what);
    exit(1);
}

static uint64_t body_word(const struct message *m, size_t i)
{
    return m->seq * 0x100000001B3ULL + m->producer * 7919 + i;
}

static size_t body_words(const struct message *m)
{
    return (m->size - sizeof *m) / sizeof m->body[0];
}

static void queue_put(struct queue *q, struct message **batch, size_t n)
{
    pthread_mutex_lock(&q->lock);
    for (size_t i = 0; i < n; i++) {
        while (q->count == QUEUE_SLOTS)
            pthread_cond_wait(&q->not_full, &q->lock);
        q->slot[(q->head + q->count++) % QUEUE_SLOTS] = batch[i];
        if (q->count == 1)
            pthread_cond_signal(&q->not_empty);
    }
    pthread_mutex_unlock(&q->lock);
}

/* Takes every message waiting, up to max; waits while there is none. */
static size_t queue_take(struct queue *q, struct message **out, size_t max)
{
    pthread_mutex_lock(&q->lock);
    while (q->count == 0)
        pthread_cond_wait(&q->not_empty, &q->lock);
    size_t n = q->count < max ? q->count : max;
    for (size_t i = 0; i < n; i++) {
        out[i] = q->slot[q->head];
        q->head = (q->head + 1) % QUEUE_SLOTS;
    }
    if (q->count == QUEUE_SLOTS)
        pthread_cond_signal(&q->not_full);
    q->count -= n;
    pthread_mutex_unlock(&q->lock);
    return n;
}

static void *produce(void *arg)
{
    struct pair *p = arg;
    uint64_t rng = 0x9E3779B97F4A7C15ULL * (p->index + 1);
    struct message *batch[BATCH];
    size_t n = 0;
    for (unsigned long seq = 0; seq < p->messages; seq++) {
        uint64_t r = bench_rand(&rng);
        size_t size = r % 256 == 0 ? 512 + (r >> 16) % (16384 - 512)
                                   : 16 + (r >> 16) % (512 - 16 + 1);
        struct message *m = malloc(size);
        if (!m)
            fail("malloc failed");
        m->seq = seq;
        m->size = (uint32_t)size;
        m->producer = p->index;
        for (size_t i = 0; i < body_words(m); i++)
            m->body[i] = body_word(m, i);
        batch[n++] = m;
        if (n == BATCH) {
            queue_put(&p->queue, batch, n);
            n = 0;
        }
    }
    batch[n++] = NULL;
    queue_put(&p->queue, batch, n);
    return NULL;
}

static void *consume(void *arg)
{
    struct pair *p = arg;
    struct message *batch[QUEUE_SLOTS];
    for (;;) {
        size_t n = queue_take(&p->queue, batch, QUEUE_SLOTS);
        for (size_t k = 0; k < n; k++) {
            struct message *m = batch[k];
            if (!m)
                return NULL;
            if (m->seq != p->received || m->producer != p->index)
                fail("a message arrived out of order or in the wrong queue");
            uint64_t sum = m->seq * 1000003 + m->size;
            for (size_t i = 0; i < body_words(m); i++) {
                if (m->body[i] != body_word(m, i))
                    fail("a message was overwritten in flight");
                sum += m->body[i];
            }
            p->checksum = p->checksum * 31 + sum;
            p->received++;
            free(m);
        }
    }
}

int main(int argc, char **argv)
{
    unsigned long threads, messages = 10000000;
    if (argc < 2 || argc > 3 || bench_parse(argv[1], 1, MAX_THREADS, &threads) ||
        (argc > 2 && bench_parse(argv[2], 1, 1UL << 40, &messages))) {
        fprintf(stderr, "usage: prodcons THREADS(1-%d) [MESSAGES]\n", MAX_THREADS);
        return 2;
    }
    struct pair *pairs = calloc(threads, sizeof *pairs);
    if (!pairs)
        fail("out of memory");
    for (unsigned i = 0; i < threads; i++) {
        struct pair *p = &pairs[i];
        p->index = i;
        p->messages = messages / threads;
        pthread_mutex_init(&p->queue.lock, NULL);
        pthread_cond_init(&p->queue.not_empty, NULL);
        pthread_cond_init(&p->queue.not_full, NULL);
        if (pthread_create(&p->consumer, NULL, consume, p) ||
            pthread_create(&p->producer, NULL, produce, p))
            fail("pthread_create failed");
    }
    uint64_t checksum = 0, received = 0;
    for (unsigned i = 0; i < threads; i++) {
        pthread_join(pairs[i].producer, NULL);
        pthread_join(pairs[i].consumer, NULL);
        checksum = checksum * 1000003 + pairs[i].checksum;
        received += pairs[i].received;
    }
    printf("prodcons: %lu producers, %lu consumers, %" PRIu64
           " messages, checksum %016" PRIx64 "\n",
           threads, threads, received, checksum);
    free(pairs);
    return 0;
}
