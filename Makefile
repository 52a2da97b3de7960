# make        builds sharedhash and esharedhash
# make test   builds and runs every test; ends with "N passed, N failed"
CC ?= cc
CFLAGS ?= -O2 -g -Wall -Wextra
PTHREAD = -pthread

PROGRAMS = sharedhash esharedhash
TESTS = tests/test_umem

all: $(PROGRAMS)

%: %.c umem.h blocksig.h
	$(CC) $(CFLAGS) $(PTHREAD) -o $@ $< $(LDFLAGS)

tests/test_%: tests/test_%.c tests/check.h umem.h
	$(CC) $(CFLAGS) $(PTHREAD) -o $@ $< $(LDFLAGS)

test: all $(TESTS)
	tests/run.sh

clean:
	rm -f $(PROGRAMS) $(TESTS)

.PHONY: all test clean

# Not part of make test: timings on a shared machine are for reading side
# by side, never for passing or failing.
bench: all
	bench/run.sh

.PHONY: bench
