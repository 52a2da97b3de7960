# make            builds sharedhash, esharedhash and libumem.so
# make test       builds and runs every test; ends with "N passed, N failed"
# make check      sanitizers, valgrind and fuzzing (a few minutes)
# make install    PREFIX=/usr/local, DESTDIR for staging; make uninstall
#                 (pkg-config files umem.pc and libumem.pc in $(LIBDIR)/pkgconfig)
# make bench      the benchmark (never part of the tests)
# make mutants    mutation testing: do the tests catch small bugs planted in
#                 the allocator? (tests/mutants.sh; never part of make test)
CC ?= cc
CFLAGS ?= -O2 -g -Wall -Wextra
PTHREAD = -pthread
PREFIX ?= /usr/local
BINDIR = $(PREFIX)/bin
LIBDIR = $(PREFIX)/lib
INCLUDEDIR = $(PREFIX)/include
MANDIR = $(PREFIX)/share/man
PKGCONFIGDIR = $(LIBDIR)/pkgconfig
VERSION = $(shell sed -n '/define VERSION /s/[^"]*"\([^"]*\)".*/\1/p' blocksig.h)

PROGRAMS = sharedhash esharedhash
# blocksig.h and the parts it includes
BLOCKSIG = blocksig.h signature.h cmdline.h inout.h workers.h run.h
# umem.h and the parts it includes
UMEM_PARTS = platform layout internal tree lock heap regions large locate pages pools calls debug guard \
	exit api check hooks
UMEM = umem.h $(UMEM_PARTS:%=umem/%.h)
TESTS = tests/test_umem tests/test_umem_regions tests/test_umem_files tests/test_fuzz_corpus \
	tests/faults.so tests/libumem_prog tests/libumem_boot.so tests/forks tests/debug_bugs \
	tests/libumem_info tests/test_umem_trim tests/test_policies \
	tests/guard_prog

# libumem.so exports the malloc family only; none of it is a builtin here,
# so that malloc + memset can never become a call to calloc.
LIBUMEM_FLAGS = -shared -fPIC -fvisibility=hidden -ftls-model=initial-exec \
	-fno-builtin-malloc -fno-builtin-calloc -fno-builtin-realloc -fno-builtin-free

all: $(PROGRAMS) libumem.so

libumem.so: libumem.c $(UMEM)
	$(CC) $(CFLAGS) $(LIBUMEM_FLAGS) $(PTHREAD) -o $@ libumem.c $(LDFLAGS)

%: %.c $(UMEM) $(BLOCKSIG)
	$(CC) $(CFLAGS) $(PTHREAD) -o $@ $< $(LDFLAGS)

tests/test_%: tests/test_%.c tests/check.h $(UMEM)
	$(CC) $(CFLAGS) $(PTHREAD) -o $@ $< $(LDFLAGS)

tests/test_umem_regions: tests/test_umem_regions.c tests/test_umem.c tests/check.h $(UMEM)
	$(CC) $(CFLAGS) $(PTHREAD) -o $@ tests/test_umem_regions.c $(LDFLAGS)

tests/test_umem_files: tests/test_umem_files.c tests/umem_other_file.c tests/check.h $(UMEM)
	$(CC) $(CFLAGS) $(PTHREAD) -o $@ tests/test_umem_files.c tests/umem_other_file.c $(LDFLAGS)

tests/test_fuzz_corpus: tests/fuzz_umem.c $(UMEM)
	$(CC) $(CFLAGS) $(PTHREAD) -DFUZZ_STANDALONE -o $@ $< $(LDFLAGS)

tests/faults.so: tests/faults.c
	$(CC) $(CFLAGS) -shared -fPIC -o $@ $< -ldl

# -fno-builtin: every call the test makes reaches the allocator (a compiler
# may otherwise assume that malloc leaves errno alone, or leave out an
# allocation whose only use is a test against NULL).
tests/libumem_prog: tests/libumem_prog.c tests/check.h
	$(CC) $(CFLAGS) -fno-builtin $(PTHREAD) -o $@ $< $(LDFLAGS)

tests/libumem_info: tests/libumem_info.c tests/check.h
	$(CC) $(CFLAGS) -fno-builtin $(PTHREAD) -o $@ $< $(LDFLAGS)

tests/forks: tests/forks.c tests/check.h
	$(CC) $(CFLAGS) -fno-builtin $(PTHREAD) -o $@ $< $(LDFLAGS)

# -rdynamic: a leak report's backtrace names the allocating function; no
# sibling calls: each bug's own line stays on the stack the tools print.
tests/debug_bugs: tests/debug_bugs.c $(UMEM) esharedhash.c $(BLOCKSIG)
	$(CC) $(CFLAGS) -rdynamic -fno-optimize-sibling-calls $(PTHREAD) -o $@ $< $(LDFLAGS)

tests/guard_prog: tests/guard_prog.c $(UMEM)
	$(CC) $(CFLAGS) -rdynamic -fno-optimize-sibling-calls $(PTHREAD) -o $@ $< $(LDFLAGS)

tests/libumem_boot.so: tests/libumem_boot.c
	$(CC) $(CFLAGS) -shared -fPIC $(PTHREAD) -o $@ $< -ldl

test: all $(TESTS)
	tests/run.sh

# Sanitizers, valgrind, helgrind and DRD, and a short libFuzzer run.
check: all $(TESTS)
	tests/check.sh

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(INCLUDEDIR)/umem $(DESTDIR)$(LIBDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3
	install -m 755 $(PROGRAMS) umem-symbolize $(DESTDIR)$(BINDIR)/
	install -m 755 libumem.so $(DESTDIR)$(LIBDIR)/
	install -m 644 umem.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 $(UMEM_PARTS:%=umem/%.h) $(DESTDIR)$(INCLUDEDIR)/umem/
	install -m 644 man/sharedhash.1 man/esharedhash.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 man/umem.3 man/libumem.3 $(DESTDIR)$(MANDIR)/man3/
	install -d $(DESTDIR)$(PKGCONFIGDIR)
	printf '%s\n' 'prefix=$(PREFIX)' 'includedir=$(INCLUDEDIR)' '' 'Name: umem' \
		'Description: umem.h, a header-only first-fit heap allocator' \
		'Version: $(VERSION)' 'Cflags: -I$${includedir} -pthread' 'Libs: -pthread' \
		> $(DESTDIR)$(PKGCONFIGDIR)/umem.pc
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'preload=$${libdir}/libumem.so' '' \
		'Name: libumem' 'Description: umem as the malloc of a program (link, or LD_PRELOAD)' \
		'Version: $(VERSION)' 'Libs: -L$${libdir} -lumem' 'Libs.private: -pthread' \
		> $(DESTDIR)$(PKGCONFIGDIR)/libumem.pc

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/sharedhash $(DESTDIR)$(BINDIR)/esharedhash \
		$(DESTDIR)$(BINDIR)/umem-symbolize \
		$(DESTDIR)$(INCLUDEDIR)/umem.h $(DESTDIR)$(LIBDIR)/libumem.so \
		$(DESTDIR)$(MANDIR)/man1/sharedhash.1 $(DESTDIR)$(MANDIR)/man1/esharedhash.1 \
		$(DESTDIR)$(MANDIR)/man3/umem.3 $(DESTDIR)$(MANDIR)/man3/libumem.3 \
		$(UMEM_PARTS:%=$(DESTDIR)$(INCLUDEDIR)/umem/%.h) \
		$(DESTDIR)$(PKGCONFIGDIR)/umem.pc $(DESTDIR)$(PKGCONFIGDIR)/libumem.pc
	-rmdir $(DESTDIR)$(INCLUDEDIR)/umem 2> /dev/null
	-rmdir $(DESTDIR)$(PKGCONFIGDIR) 2> /dev/null

clean:
	rm -rf $(PROGRAMS) libumem.so $(TESTS) build

.PHONY: all test check install uninstall clean

# Not part of make test: timings on a shared machine are for reading side
# by side, never for passing or failing.
bench: all
	bench/run.sh

.PHONY: bench

# Each mutant of tests/mutants.txt in a copy of the tree of its own, built
# and tested there: nothing here is built or changed.
mutants:
	tests/mutants.sh

.PHONY: mutants
