# make        builds sharedhash and esharedhash
# make test   builds and runs every test; ends with "N passed, N failed"
CC ?= cc
CFLAGS ?= -O2 -g -Wall -Wextra
PTHREAD = -pthread

PROGRAMS = sharedhash esharedhash
TESTS = tests/test_umem tests/test_fuzz_corpus tests/faults.so

all: $(PROGRAMS)

%: %.c umem.h blocksig.h
	$(CC) $(CFLAGS) $(PTHREAD) -o $@ $< $(LDFLAGS)

tests/test_%: tests/test_%.c tests/check.h umem.h
	$(CC) $(CFLAGS) $(PTHREAD) -o $@ $< $(LDFLAGS)

tests/test_fuzz_corpus: tests/fuzz_umem.c umem.h
	$(CC) $(CFLAGS) $(PTHREAD) -DFUZZ_STANDALONE -o $@ $< $(LDFLAGS)

tests/faults.so: tests/faults.c
	$(CC) $(CFLAGS) -shared -fPIC -o $@ $< -ldl

test: all $(TESTS)
	tests/run.sh

# Sanitizers, valgrind, helgrind and DRD, and a short libFuzzer run.
check: all $(TESTS)
	tests/check.sh

clean:
	rm -rf $(PROGRAMS) $(TESTS) build

.PHONY: all test check clean

# Not part of make test: timings on a shared machine are for reading side
# by side, never for passing or failing.
bench: all
	bench/run.sh

.PHONY: bench
