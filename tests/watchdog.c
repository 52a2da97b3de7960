/* Tests that hang on purpose, for tests/test_watchdog.sh: check.h must
 * end each within its limits, name it, and leave no process behind. */
#define CHECK_CHILD_SECONDS 1
#define CHECK_GRACE         2
#include "check.h"

static void block_everything(void)
{
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
}

/* A child that blocks every signal, its own alarm included, and waits. */
static void child_blocks_every_signal(void)
{
    pid_t pid = check_fork();
    if (pid == 0) {
        block_everything();
        for (;;)
            pause();
    }
    int status = 0;
    check_wait(pid, &status);
    CHECK_EXITED_0(status);
}

/* A child that forks again, every signal blocked, and waits for ever on a
 * grandchild that holds the test's output open. */
static void grandchild_holds_the_output(void)
{
    pid_t pid = check_fork();
    if (pid == 0) {
        block_everything();
        pid_t grandchild = fork();
        if (grandchild == 0)
            for (;;)
                pause();
        waitpid(grandchild, NULL, 0);
        _exit(0);
    }
    int status = 0;
    check_wait(pid, &status);
    CHECK_EXITED_0(status);
}

/* A child whose grandchild outlives it, every signal blocked. */
static void grandchild_left_behind(void)
{
    pid_t pid = check_fork();
    if (pid == 0) {
        if (fork() == 0) {
            block_everything();
            for (;;)
                pause();
        }
        _exit(0);
    }
    int status = 0;
    check_wait(pid, &status);
    CHECK_EXITED_0(status);
}

int main(void)
{
    RUN(child_blocks_every_signal);
    RUN(grandchild_holds_the_output);
    RUN(grandchild_left_behind);
    return CHECK_EXIT_STATUS();
}
