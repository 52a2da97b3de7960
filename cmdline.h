/*
 * cmdline.h - the command line (a part of blocksig.h): the options, the
 * usage, and the one-line messages every error starts with.
 *
 * Options may come before or after the FILE operands ("--" ends them);
 * a usage error prints one line and the usage on stderr and exits 2.
 */
#ifndef BLOCKSIG_H
#error "cmdline.h is a part of blocksig.h: include blocksig.h instead"
#endif

enum progress_mode { PROGRESS_AUTO, PROGRESS_ON, PROGRESS_OFF };

struct options {
    char **paths; /* the FILE operands, in order */
    int npaths;
    enum run_mode mode;
    enum progress_mode progress;
    unsigned workers;
    int verbose, stats;
    size_t heap_bytes; /* 0: the default for the workers */
    size_t pool_bytes;
    /* -c: each FILE is a list of signatures to check, and how much the
     * check says (--quiet, --status), what it makes of a malformed line
     * (--strict, -w) */
    int check, quiet, status, strict, warn;
};

/* What the command line asks for besides a run. */
enum cmdline_action { CMDLINE_RUN, CMDLINE_HELP, CMDLINE_VERSION };

/* The command line's state: the main thread writes it before any worker
 * starts, and no one writes it after. */
static struct {
    const char *prog;   /* the program's name, for every message */
    struct options opt; /* as parse_options found them */
} cmdline = {.prog = "blocksig"};

static void usage(FILE *to)
{
    fprintf(
        to,
        "usage: %s [options] FILE...\n"
        "       %s -c [options] LIST...\n"
        "Prints the Huffman block signature of each FILE ('-' for standard input).\n"
        "With several files, each line ends with two spaces and the file's name.\n"
        "With -c, checks the signatures that each LIST holds, lines as printed\n"
        "for several files, and prints 'NAME: OK' or 'NAME: FAILED' for each.\n"
        "\n"
        "  -t            hash with a pool of worker threads\n"
        "  -m            hash with a pool of worker processes (shared heap)\n"
        "  -j N          number of workers for -t and -m, 1..%u (default: online CPUs)\n"
        "  -v            print every block's hash, in block order, before the result\n"
        "  --stats       print allocator and lock statistics on stderr after the run\n"
        "  --progress    show progress on stderr (default: only when it is a terminal)\n"
        "  --no-progress never show progress\n"
        "  --heap SIZE   size of the heap region (K, M, G suffixes; default: enough\n"
        "                for the workers, at least 64M)\n"
#ifdef BLOCKSIG_POOLS
        "  --pool SIZE   size of each worker's private pool (default 256K; 0: none)\n"
#endif
        "  -h, --help    print this help and exit\n"
        "  --version     print the version and exit\n"
        "\n"
        "  -c, --check   read signatures from each LIST and check them\n"
        "  --quiet       with -c: print only the files that failed\n"
        "  --status      with -c: print nothing, the exit status tells\n"
        "  --strict      with -c: a malformed line is an error\n"
        "  -w, --warn    with -c: warn about each malformed line\n"
        "\n"
        "Exit status: 0 success (with -c: every file matched), 1 an error (an\n"
        "input, the heap, a worker; with -c: a file that failed or could not be\n"
        "read, a list without a signature line, a malformed line under --strict),\n"
        "2 a usage error.\n",
        cmdline.prog, cmdline.prog, MAX_WORKERS);
}

/* "prog: message" on one line of stderr. */
static void complain(const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: ", cmdline.prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

static _Noreturn void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    complain(fmt, ap);
    va_end(ap);
    usage(stderr);
    exit(2);
}

/* A size with an optional K, M or G suffix (powers of 1024); -1 if bad. */
static int parse_size(const char *s, size_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    size_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        size_t d = (size_t)(*s - '0');
        if (v > (SIZE_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    unsigned shift = 0;
    switch (*s) {
    case 'k':
    case 'K':
        shift = 10;
        s++;
        break;
    case 'm':
    case 'M':
        shift = 20;
        s++;
        break;
    case 'g':
    case 'G':
        shift = 30;
        s++;
        break;
    default:
        break;
    }
    if (*s != '\0' || (shift && v > (SIZE_MAX >> shift)))
        return -1;
    *out = v << shift;
    return 0;
}

static unsigned online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > (long)MAX_WORKERS ? MAX_WORKERS : (unsigned)n;
}

/* Takes an option's value from "--opt=V", "--opt V", "-jV" or "-j V". */
static const char *option_value(int argc, char **argv, int *i, const char *inline_value)
{
    if (inline_value)
        return inline_value;
    if (*i + 1 >= argc)
        usage_error("option '%s' needs a value", argv[*i]);
    return argv[++*i];
}

/* An option that takes no value given one (--stats=no): a usage error. */
static int no_value(const char *name, const char *value)
{
    if (value)
        usage_error("option '%s' takes no value", name);
    return 1;
}

static void set_mode(struct options *o, enum run_mode mode)
{
    if (o->mode != MODE_SINGLE && o->mode != mode)
        usage_error("-t and -m exclude each other");
    o->mode = mode;
}

/* The options that take a value: -j, --heap and --pool. */
static void sized_option(struct options *o, const char *name, const char *v)
{
    size_t n;
    if (strcmp(name, "-j") == 0) {
        if (parse_size(v, &n) != 0 || strspn(v, "0123456789") != strlen(v) || n < 1 ||
            n > MAX_WORKERS)
            usage_error("-j wants a number of workers from 1 to %u, not '%s'",
                        MAX_WORKERS, v);
        o->workers = (unsigned)n;
    } else if (strcmp(name, "--heap") == 0) {
        if (parse_size(v, &o->heap_bytes) != 0 || o->heap_bytes == 0)
            usage_error("--heap wants a size such as 64M, not '%s'", v);
    } else if (parse_size(v, &o->pool_bytes) != 0 || o->pool_bytes > (1ul << 40)) {
        usage_error("--pool wants a size such as 256K, not '%s'", v);
    }
}

/* Whether the option a, whose name is name_len long, is the name of a
 * flag (IS), and then that it has no value (FLAG). */
#define IS(name)   (name_len == strlen(name) && strncmp(a, name, name_len) == 0)
#define FLAG(name) (IS(name) && no_value(name, inline_value))

/* The options of -c: returns 0 if a is none of them. */
static int check_option(struct options *o, const char *a, size_t name_len,
                        const char *inline_value)
{
    if (IS("-c") || FLAG("--check"))
        o->check = 1;
    else if (FLAG("--quiet"))
        o->quiet = 1;
    else if (FLAG("--status"))
        o->status = 1;
    else if (FLAG("--strict"))
        o->strict = 1;
    else if (IS("-w") || FLAG("--warn"))
        o->warn = 1;
    else
        return 0;
    return 1;
}

/* One option, argv[*i] (which may take the next as its value): returns
 * what to do besides a run, if anything. */
static enum cmdline_action parse_option(struct options *o, int argc, char **argv, int *i)
{
    char *a = argv[*i];
    const char *eq = strchr(a, '=');
    size_t name_len = a[1] == '-' && eq ? (size_t)(eq - a) : strlen(a);
    const char *inline_value = a[1] == '-' && eq ? eq + 1 : NULL;
    if (check_option(o, a, name_len, inline_value))
        return CMDLINE_RUN;
    if (IS("-t"))
        set_mode(o, MODE_THREADS);
    else if (IS("-m"))
        set_mode(o, MODE_PROCESSES);
    else if (IS("-v") || FLAG("--verbose"))
        o->verbose = 1;
    else if (FLAG("--stats"))
        o->stats = 1;
    else if (FLAG("--progress"))
        o->progress = PROGRESS_ON;
    else if (FLAG("--no-progress"))
        o->progress = PROGRESS_OFF;
    else if (IS("-h") || FLAG("--help"))
        return CMDLINE_HELP;
    else if (FLAG("--version"))
        return CMDLINE_VERSION;
    else if (strncmp(a, "-j", 2) == 0)
        sized_option(o, "-j", option_value(argc, argv, i, a[2] ? a + 2 : NULL));
    else if (IS("--heap"))
        sized_option(o, "--heap", option_value(argc, argv, i, inline_value));
#ifdef BLOCKSIG_POOLS
    else if (IS("--pool"))
        sized_option(o, "--pool", option_value(argc, argv, i, inline_value));
#endif
    else
        usage_error("unknown option '%s'", a);
    return CMDLINE_RUN;
}

#undef IS
#undef FLAG

/* The options of -c only with -c, as sha256sum wants them; -v prints
 * nothing a check could use. */
static void check_options_valid(const struct options *o)
{
    const char *only_check = o->quiet    ? "--quiet"
                             : o->status ? "--status"
                             : o->strict ? "--strict"
                             : o->warn   ? "--warn"
                                         : NULL;
    if (!o->check && only_check)
        usage_error("the %s option is meaningful only with -c", only_check);
    if (o->check && o->verbose)
        usage_error("-v and -c exclude each other");
}

/* Fills cmdline.opt from argv; returns at once for --help or --version.
 * private_memory: the policy's memory is not shared across fork(). */
static enum cmdline_action parse_options(int argc, char **argv, int private_memory)
{
    struct options *o = &cmdline.opt;
    o->workers = online_cpus();
#ifdef BLOCKSIG_POOLS
    o->pool_bytes = 256u << 10;
#endif
    /* Operands are gathered at the front of argv, in order. */
    o->paths = argv + 1;
    int only_operands = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_operands || a[0] != '-' || strcmp(a, "-") == 0) {
            o->paths[o->npaths++] = a;
        } else if (strcmp(a, "--") == 0) {
            only_operands = 1;
        } else {
            enum cmdline_action act = parse_option(o, argc, argv, &i);
            if (act != CMDLINE_RUN)
                return act;
        }
    }
    if (o->npaths == 0)
        usage_error(o->check ? "no LIST given" : "no input FILE given");
    check_options_valid(o);
    if (o->mode == MODE_PROCESSES && private_memory)
        usage_error("-m needs memory shared across processes, and this build's is not");
    return CMDLINE_RUN;
}
