# make            builds sharedhash and esharedhash
# make test       builds and runs every test; ends with "N passed, N failed"
# make check      sanitizers, valgrind and fuzzing (a few minutes)
# make install    PREFIX=/usr/local, DESTDIR for staging; make uninstall
# make bench      the benchmark (never part of the tests)
CC ?= cc
CFLAGS ?= -O2 -g -Wall -Wextra
PTHREAD = -pthread
PREFIX ?= /usr/local
BINDIR = $(PREFIX)/bin
INCLUDEDIR = $(PREFIX)/include
MANDIR = $(PREFIX)/share/man

PROGRAMS = sharedhash esharedhash
# blocksig.h and the parts it includes
BLOCKSIG = blocksig.h signature.h cmdline.h inout.h workers.h run.h
TESTS = tests/test_umem tests/test_fuzz_corpus tests/faults.so

all: $(PROGRAMS)

%: %.c umem.h $(BLOCKSIG)
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

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(INCLUDEDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3
	install -m 755 $(PROGRAMS) $(DESTDIR)$(BINDIR)/
	install -m 644 umem.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 man/sharedhash.1 man/esharedhash.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 man/umem.3 $(DESTDIR)$(MANDIR)/man3/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/sharedhash $(DESTDIR)$(BINDIR)/esharedhash \
		$(DESTDIR)$(INCLUDEDIR)/umem.h \
		$(DESTDIR)$(MANDIR)/man1/sharedhash.1 $(DESTDIR)$(MANDIR)/man1/esharedhash.1 \
		$(DESTDIR)$(MANDIR)/man3/umem.3

clean:
	rm -rf $(PROGRAMS) $(TESTS) build

.PHONY: all test check install uninstall clean

# Not part of make test: timings on a shared machine are for reading side
# by side, never for passing or failing.
bench: all
	bench/run.sh

.PHONY: bench
